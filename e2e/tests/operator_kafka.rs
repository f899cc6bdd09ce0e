//! The operator's Kafka operations against a real broker: partition counts, topic
//! creation (idempotent), and the assignment a data plane reads back, on the PLAINTEXT
//! listener and through `SASL_SSL` with the settings a credentials Secret gives; refused
//! credentials and an untrusted CA named at once, not as an unreachable cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gameshard_crds::PodAssignment;
use gameshard_crds::control::{ASSIGNMENT_KEY, Assignment};
use gameshard_e2e::harness::broker::Broker;
use gameshard_e2e::harness::zone::TempDir;
use gameshard_e2e::harness::{kafka, tls};
use gameshard_operator::topics::{Cluster, Kafka, KafkaError, RdKafka, TopicSpec};

/// Counts, creates and publishes on `cluster`, with topics named after `prefix`.
async fn administer(broker: &Broker, cluster: &Cluster, prefix: &str) {
    let [input, output, control] = ["in", "out", "ctl"].map(|t| format!("{prefix}.{t}"));
    kafka::create_topics(&broker.bootstrap(), &[(&input, 6)]).expect("input topic");

    let names = vec![input.clone(), output.clone(), control.clone()];
    assert_eq!(RdKafka.partitions(cluster, &names).await, Ok(vec![Some(6), None, None]));
    let wanted = [
        TopicSpec { name: output, partitions: 6, config: vec![] },
        TopicSpec {
            name: control.clone(),
            partitions: 1,
            config: vec![("cleanup.policy", "compact")],
        },
    ];
    RdKafka.create(cluster, &wanted).await.expect("created");
    RdKafka.create(cluster, &wanted).await.expect("creating existing topics is not an error");
    assert_eq!(RdKafka.partitions(cluster, &names).await, Ok(vec![Some(6), Some(6), Some(1)]));

    let assignment = Assignment {
        epoch: 7,
        shard: "zone".into(),
        partitions: 6,
        pods: vec![PodAssignment { pod: "zone-0".into(), partitions: (0..6).collect() }],
    };
    RdKafka
        .publish(cluster, &control, ASSIGNMENT_KEY, &serde_json::to_vec(&assignment).unwrap())
        .await
        .expect("published");
    let records = kafka::read_all(&broker.bootstrap(), &control, 1).expect("read back");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, ASSIGNMENT_KEY);
    assert_eq!(serde_json::from_slice::<Assignment>(&records[0].value).unwrap(), assignment);
}

fn secure(broker: &Broker, change: &[(&str, &str)]) -> Cluster {
    let mut settings: BTreeMap<String, String> = broker.sasl_settings().into_iter().collect();
    for (k, v) in change {
        settings.insert((*k).to_owned(), (*v).to_owned());
    }
    Cluster { bootstrap: broker.sasl_bootstrap(), settings }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_counted_created_once_and_the_assignment_lands_on_the_control_topic() {
    let Some(broker) = Broker::shared().expect("broker starts") else { return };
    let cluster = Cluster { bootstrap: broker.bootstrap(), settings: BTreeMap::new() };
    administer(broker, &cluster, "plain").await;

    let nowhere = Cluster { bootstrap: "127.0.0.1:9".into(), settings: BTreeMap::new() };
    let names = vec!["plain.in".to_owned()];
    assert!(matches!(RdKafka.partitions(&nowhere, &names).await, Err(KafkaError::Unreachable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_administration_works_through_sasl_ssl_with_the_secrets_settings() {
    let Some(broker) = Broker::shared().expect("broker starts") else { return };
    administer(broker, &secure(broker, &[]), "secure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_and_an_untrusted_ca_are_named_at_once() {
    let Some(broker) = Broker::shared().expect("broker starts") else { return };
    let dir = TempDir::new("operator-other-ca").expect("temp dir");
    let other = std::fs::read_to_string(tls::ca(&dir.0, "another-ca").expect("CA")).expect("CA");
    let names = vec!["anything".to_owned()];
    for (change, setting) in [
        (("sasl.password", "not-the-password"), "sasl.password"),
        (("ssl.ca.pem", other.as_str()), "ssl.ca.pem"),
    ] {
        let started = Instant::now();
        let result = RdKafka.partitions(&secure(broker, &[change]), &names).await;
        let took = started.elapsed();
        match result {
            Err(KafkaError::Security { setting: named, message }) => {
                assert_eq!(named, setting, "{message}");
            }
            other => panic!("{setting}: expected a security error, got {other:?}"),
        }
        assert!(took < Duration::from_secs(5), "{setting}: named in {took:?}, not after a timeout");
    }
}
