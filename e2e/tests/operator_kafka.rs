//! The operator's Kafka operations against a real broker: partition counts, topic
//! creation (idempotent), the control topic read from its start and appended to, and
//! a deleted shard's messages cleared with tombstones; on the PLAINTEXT listener and
//! through `SASL_SSL` with the settings a credentials Secret gives. Refused credentials
//! and an untrusted CA are named at once, not as an unreachable cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gameshard_control::{Assignment, Message, PodPartitions};
use gameshard_e2e::harness::broker::Broker;
use gameshard_e2e::harness::zone::TempDir;
use gameshard_e2e::harness::{kafka, tls};
use gameshard_operator::topics::{Cluster, Kafka, KafkaError, RdKafka, TopicSpec};

/// Counts, creates, publishes and clears on `cluster`, with topics named after `prefix`.
async fn administer(broker: &Broker, cluster: &Cluster, prefix: &str) {
    let [input, output, control] = ["in", "out", "ctl"].map(|t| format!("{prefix}.{t}"));
    kafka::create_topics(&broker.bootstrap(), &[(&input, 6)]).expect("input topic");

    let names = vec![input.clone(), output.clone(), control.clone()];
    let rdkafka = RdKafka::default();
    assert_eq!(rdkafka.partitions(cluster, &names).await, Ok(vec![Some(6), None, None]));
    let wanted = [
        TopicSpec { name: output, partitions: 6, config: vec![] },
        TopicSpec {
            name: control.clone(),
            partitions: 1,
            config: vec![("cleanup.policy", "compact")],
        },
    ];
    rdkafka.create(cluster, &wanted).await.expect("created");
    rdkafka.create(cluster, &wanted).await.expect("creating existing topics is not an error");
    // A created topic reaches the brokers' metadata a moment after CreateTopics returns
    // (on a loaded machine, seconds): the count is read until it shows, for a bounded time.
    let want = Ok(vec![Some(6), Some(6), Some(1)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counted = rdkafka.partitions(cluster, &names).await;
    while counted != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        counted = rdkafka.partitions(cluster, &names).await;
    }
    assert_eq!(counted, want);

    let assignment = Message::Assignment(Assignment {
        shard: "zone".into(),
        epoch: 7,
        partitions: 6,
        pods: vec![PodPartitions { pod: "zone-0".into(), partitions: (0..6).collect() }],
        moves: Vec::new(),
    });
    let open = rdkafka.control(cluster, &control);
    // A topic created a moment ago may not have its leader yet: the operator opens it
    // again after a failure, and so does this test, for a few seconds.
    let mut tries = 0;
    let link = loop {
        match open().await {
            Ok(link) => break link,
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("opening the control topic again after: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the control topic opens: {e}"),
        }
    };
    assert_eq!(link.end(), 0, "empty");
    link.publish(assignment.key(), assignment.value()).await.expect("published");
    let mut again = open().await.expect("opens again");
    assert_eq!(again.end(), 1, "the history is one record long");
    let record = again.next().await.expect("the record reads back from the start");
    assert_eq!(record.key, b"assignment/zone");
    assert_eq!(
        Message::decode(&record.key, record.value.as_deref().unwrap()).unwrap(),
        Some(assignment)
    );

    rdkafka.tombstones(cluster, &control, &["assignment/zone".to_owned()]).await.expect("cleared");
    let records = kafka::read_all(&broker.bootstrap(), &control, 1).expect("read back");
    assert_eq!(records.len(), 2);
    assert!(records[1].value.is_empty(), "a tombstone has no value");
}

fn secure(broker: &Broker, change: &[(&str, &str)]) -> Cluster {
    let mut settings: BTreeMap<String, String> = broker.sasl_settings().into_iter().collect();
    for (k, v) in change {
        settings.insert((*k).to_owned(), (*v).to_owned());
    }
    Cluster { bootstrap: broker.sasl_bootstrap(), settings }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_counted_created_once_and_the_control_topic_reads_back_and_clears() {
    let Some(broker) = Broker::shared().expect("broker starts") else { return };
    let cluster = Cluster { bootstrap: broker.bootstrap(), settings: BTreeMap::new() };
    administer(broker, &cluster, "plain").await;

    let nowhere = Cluster { bootstrap: "127.0.0.1:9".into(), settings: BTreeMap::new() };
    let names = vec!["plain.in".to_owned()];
    assert!(matches!(
        RdKafka::default().partitions(&nowhere, &names).await,
        Err(KafkaError::Unreachable(_))
    ));
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
        let result = RdKafka::default().partitions(&secure(broker, &[change]), &names).await;
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
