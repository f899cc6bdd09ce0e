//! The operator's Kafka operations against a real broker: partition counts, topic
//! creation (idempotent), the control topic read from its start and appended to, and
//! a deleted shard's messages cleared with tombstones.

use gameshard_control::{Assignment, Message, PodPartitions};
use gameshard_e2e::harness::broker::{Broker, Storage};
use gameshard_e2e::harness::kafka;
use gameshard_e2e::harness::zone::TempDir;
use gameshard_operator::topics::{Cluster, Kafka, KafkaError, RdKafka, TopicSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_counted_created_once_and_the_control_topic_reads_back_and_clears() {
    let dir = TempDir::new("operator-kafka").expect("temp dir");
    let Some(broker) = Broker::start(Storage::Sqlite(dir.0.join("tansu.db"))).expect("broker")
    else {
        return;
    };
    let cluster =
        Cluster { bootstrap: broker.bootstrap(), settings: std::collections::BTreeMap::new() };
    kafka::create_topics(&broker.bootstrap(), &[("in", 6)]).expect("input topic");

    let names = vec!["in".to_owned(), "out".to_owned(), "ctl".to_owned()];
    let rdkafka = RdKafka::default();
    assert_eq!(rdkafka.partitions(&cluster, &names).await, Ok(vec![Some(6), None, None]));
    let wanted = [
        TopicSpec { name: "out".into(), partitions: 6, config: vec![] },
        TopicSpec {
            name: "ctl".into(),
            partitions: 1,
            config: vec![("cleanup.policy", "compact")],
        },
    ];
    rdkafka.create(&cluster, &wanted).await.expect("created");
    rdkafka.create(&cluster, &wanted).await.expect("creating existing topics is not an error");
    assert_eq!(rdkafka.partitions(&cluster, &names).await, Ok(vec![Some(6), Some(6), Some(1)]));

    let assignment = Message::Assignment(Assignment {
        shard: "zone".into(),
        epoch: 7,
        partitions: 6,
        pods: vec![PodPartitions { pod: "zone-0".into(), partitions: (0..6).collect() }],
        moves: Vec::new(),
    });
    let open = rdkafka.control(&cluster, "ctl");
    let link = open().await.expect("the control topic opens");
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

    rdkafka.tombstones(&cluster, "ctl", &["assignment/zone".to_owned()]).await.expect("cleared");
    let records = kafka::read_all(&broker.bootstrap(), "ctl", 1).expect("read back");
    assert_eq!(records.len(), 2);
    assert!(records[1].value.is_empty(), "a tombstone has no value");

    let nowhere =
        Cluster { bootstrap: "127.0.0.1:9".into(), settings: std::collections::BTreeMap::new() };
    assert!(matches!(
        RdKafka::default().partitions(&nowhere, &names).await,
        Err(KafkaError::Unreachable(_))
    ));
}
