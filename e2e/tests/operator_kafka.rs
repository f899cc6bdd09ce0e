//! The operator's Kafka operations against a real broker: partition counts, topic
//! creation (idempotent), and the assignment a data plane reads back.

use gameshard_crds::PodAssignment;
use gameshard_crds::control::{ASSIGNMENT_KEY, Assignment};
use gameshard_e2e::harness::broker::{Broker, Storage};
use gameshard_e2e::harness::kafka;
use gameshard_e2e::harness::zone::TempDir;
use gameshard_operator::topics::{Cluster, Kafka, KafkaError, RdKafka, TopicSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_counted_created_once_and_the_assignment_lands_on_the_control_topic() {
    let dir = TempDir::new("operator-kafka").expect("temp dir");
    let Some(broker) = Broker::start(Storage::Sqlite(dir.0.join("tansu.db"))).expect("broker")
    else {
        return;
    };
    let cluster =
        Cluster { bootstrap: broker.bootstrap(), settings: std::collections::BTreeMap::new() };
    kafka::create_topics(&broker.bootstrap(), &[("in", 6)]).expect("input topic");

    let names = vec!["in".to_owned(), "out".to_owned(), "ctl".to_owned()];
    assert_eq!(RdKafka.partitions(&cluster, &names).await, Ok(vec![Some(6), None, None]));
    let wanted = [
        TopicSpec { name: "out".into(), partitions: 6, config: vec![] },
        TopicSpec {
            name: "ctl".into(),
            partitions: 1,
            config: vec![("cleanup.policy", "compact")],
        },
    ];
    RdKafka.create(&cluster, &wanted).await.expect("created");
    RdKafka.create(&cluster, &wanted).await.expect("creating existing topics is not an error");
    assert_eq!(RdKafka.partitions(&cluster, &names).await, Ok(vec![Some(6), Some(6), Some(1)]));

    let assignment = Assignment {
        epoch: 7,
        shard: "zone".into(),
        partitions: 6,
        pods: vec![PodAssignment { pod: "zone-0".into(), partitions: (0..6).collect() }],
    };
    RdKafka
        .publish(&cluster, "ctl", ASSIGNMENT_KEY, &serde_json::to_vec(&assignment).unwrap())
        .await
        .expect("published");
    let records = kafka::read_all(&broker.bootstrap(), "ctl", 1).expect("read back");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, ASSIGNMENT_KEY);
    assert_eq!(serde_json::from_slice::<Assignment>(&records[0].value).unwrap(), assignment);

    let nowhere =
        Cluster { bootstrap: "127.0.0.1:9".into(), settings: std::collections::BTreeMap::new() };
    assert!(matches!(RdKafka.partitions(&nowhere, &names).await, Err(KafkaError::Unreachable(_))));
}
