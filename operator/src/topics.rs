//! What the operator needs from a shard's Kafka cluster: partition counts, topic
//! creation, and the control topic (read from its start, appended to, and cleared of a
//! deleted shard's messages).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use gameshard_crds::GameShard;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::status::Problem;

/// How long a metadata request may take before the cluster counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka cluster and the client settings to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cluster {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// librdkafka settings (the shard's config and credentials).
    pub settings: BTreeMap<String, String>,
}

impl Cluster {
    /// Client settings for this cluster.
    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap).set("log_level", "3");
        for (k, v) in &self.settings {
            c.set(k, v);
        }
        c
    }
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Topic settings (`cleanup.policy`, `retention.ms`, ...).
    pub config: Vec<(&'static str, &'static str)>,
}

/// Why a Kafka request failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KafkaError {
    /// No broker answered.
    #[error("no broker of {0} answered")]
    Unreachable(String),
    /// The brokers refused the request.
    #[error("{0}")]
    Refused(String),
}

/// The operator's Kafka operations; [`RdKafka`] does them for real.
pub trait Kafka: Send + Sync + 'static {
    /// Partition counts of `topics`, `None` for a topic that does not exist.
    fn partitions(
        &self,
        cluster: &Cluster,
        topics: &[String],
    ) -> impl Future<Output = Result<Vec<Option<i32>>, KafkaError>> + Send;

    /// Creates `topics`; a topic that exists meanwhile is not an error.
    fn create(
        &self,
        cluster: &Cluster,
        topics: &[TopicSpec],
    ) -> impl Future<Output = Result<(), KafkaError>> + Send;

    /// Opens `topic` (a control topic, one partition) for reading from its start and
    /// appending; the returned opener opens it again after a failure.
    fn control(&self, cluster: &Cluster, topic: &str) -> Opener;

    /// Writes a tombstone for each of `keys` to partition 0 of `topic`, so that
    /// compaction removes their messages, and waits for the acknowledgements.
    fn tombstones(
        &self,
        cluster: &Cluster,
        topic: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<(), KafkaError>> + Send;
}

/// A record of the control topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlRecord {
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Vec<u8>,
    /// Its value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// A control topic, open for reading from its start and for appending.
pub trait ControlLink: Send {
    /// The offset the topic ended at when it was opened: reading up to it reads its
    /// whole history.
    fn end(&self) -> i64;
    /// The next record.
    fn next(&mut self) -> BoxFuture<'_, Result<ControlRecord, KafkaError>>;
    /// Appends a record and waits for its acknowledgement.
    fn publish(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, Result<(), KafkaError>>;
}

/// Opens a control topic, again after each failure.
pub type Opener =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Box<dyn ControlLink>, KafkaError>> + Send + Sync>;

/// [`Kafka`] through librdkafka, with one admin client and one metadata client per
/// cluster, kept from one reconcile to the next.
#[derive(Default)]
pub struct RdKafka {
    clients: Mutex<HashMap<Cluster, Clients>>,
}

#[derive(Clone)]
struct Clients {
    admin: Arc<AdminClient<DefaultClientContext>>,
    metadata: Arc<BaseConsumer>,
}

impl RdKafka {
    /// The cluster's clients, created the first time.
    fn clients(&self, cluster: &Cluster) -> Result<Clients, KafkaError> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(cluster) {
            return Ok(c.clone());
        }
        let refused = |e: rdkafka::error::KafkaError| KafkaError::Refused(e.to_string());
        let c = Clients {
            admin: Arc::new(cluster.config().create().map_err(refused)?),
            metadata: Arc::new(cluster.config().create().map_err(refused)?),
        };
        clients.insert(cluster.clone(), c.clone());
        Ok(c)
    }

    /// Drops the clients of a cluster no shard uses any more.
    pub fn forget(&self, cluster: &Cluster) {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner).remove(cluster);
    }
}

impl Kafka for RdKafka {
    async fn partitions(
        &self,
        cluster: &Cluster,
        topics: &[String],
    ) -> Result<Vec<Option<i32>>, KafkaError> {
        let client = self.clients(cluster)?.metadata;
        let (bootstrap, topics) = (cluster.bootstrap.clone(), topics.to_vec());
        blocking(move || {
            let metadata = client
                .fetch_metadata(None, TIMEOUT)
                .map_err(|_| KafkaError::Unreachable(bootstrap))?;
            Ok(topics
                .iter()
                .map(|name| {
                    metadata
                        .topics()
                        .iter()
                        .find(|t| {
                            t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                        })
                        .map(|t| t.partitions().len() as i32)
                })
                .collect())
        })
        .await
    }

    async fn create(&self, cluster: &Cluster, topics: &[TopicSpec]) -> Result<(), KafkaError> {
        if topics.is_empty() {
            return Ok(());
        }
        let admin = self.clients(cluster)?.admin;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                t.config.iter().fold(
                    NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(-1)),
                    |n, (k, v)| n.set(k, v),
                )
            })
            .collect();
        let results = admin
            .create_topics(&new, &AdminOptions::new().request_timeout(Some(TIMEOUT)))
            .await
            .map_err(|_| KafkaError::Unreachable(cluster.bootstrap.clone()))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::Refused(format!("creating topic {topic}: {code}")));
                }
            }
        }
        Ok(())
    }

    fn control(&self, cluster: &Cluster, topic: &str) -> Opener {
        let (config, topic) = (cluster.config(), topic.to_owned());
        Arc::new(move || {
            let (config, topic) = (config.clone(), topic.clone());
            Box::pin(async move {
                let link = RdKafkaControl::open(config, topic).await?;
                Ok(Box::new(link) as Box<dyn ControlLink>)
            })
        })
    }

    async fn tombstones(
        &self,
        cluster: &Cluster,
        topic: &str,
        keys: &[String],
    ) -> Result<(), KafkaError> {
        let producer = producer(&cluster.config())?;
        for key in keys {
            let record = FutureRecord::<String, [u8]>::to(topic).partition(0).key(key);
            producer.send(record, TIMEOUT).await.map_err(|(e, _)| delivery_error(cluster, &e))?;
        }
        Ok(())
    }
}

fn producer(config: &ClientConfig) -> Result<FutureProducer, KafkaError> {
    let mut config = config.clone();
    config.set("acks", "all").set("message.timeout.ms", "10000");
    config.create().map_err(|e| KafkaError::Refused(e.to_string()))
}

fn delivery_error(cluster: &Cluster, e: &rdkafka::error::KafkaError) -> KafkaError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) => {
            KafkaError::Unreachable(cluster.bootstrap.clone())
        }
        _ => KafkaError::Refused(e.to_string()),
    }
}

/// A control topic through librdkafka.
struct RdKafkaControl {
    consumer: StreamConsumer,
    producer: FutureProducer,
    topic: String,
    end: i64,
}

impl RdKafkaControl {
    async fn open(config: ClientConfig, topic: String) -> Result<Self, KafkaError> {
        let producer = producer(&config)?;
        let name = topic.clone();
        let (consumer, end) = blocking(move || {
            let mut reader = config;
            reader
                .set("group.id", "gameshard-operator")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .set("fetch.wait.max.ms", "10");
            let consumer: StreamConsumer =
                reader.create().map_err(|e| KafkaError::Refused(e.to_string()))?;
            let (low, high) = consumer
                .fetch_watermarks(&topic, 0, TIMEOUT)
                .map_err(|e| KafkaError::Refused(format!("control topic {topic}: {e}")))?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(low))
                .and_then(|()| consumer.assign(&tpl))
                .map_err(|e| KafkaError::Refused(e.to_string()))?;
            Ok((consumer, if high > low { high } else { 0 }))
        })
        .await?;
        Ok(Self { consumer, producer, topic: name, end })
    }
}

impl ControlLink for RdKafkaControl {
    fn end(&self) -> i64 {
        self.end
    }

    fn next(&mut self) -> BoxFuture<'_, Result<ControlRecord, KafkaError>> {
        Box::pin(async move {
            let m = self.consumer.recv().await.map_err(|e| KafkaError::Refused(e.to_string()))?;
            Ok(ControlRecord {
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().map(<[u8]>::to_vec),
            })
        })
    }

    fn publish(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, Result<(), KafkaError>> {
        Box::pin(async move {
            let record = FutureRecord::to(&self.topic).partition(0).key(&key).payload(&value);
            self.producer
                .send(record, TIMEOUT)
                .await
                .map(|_| ())
                .map_err(|(e, _)| KafkaError::Refused(e.to_string()))
        })
    }
}

/// Checks a shard's topics on `cluster` and creates the missing ones it writes: the
/// input topic's partition count and the names of the topics created; or the problem
/// that stops the shard (a missing input topic, a partition mismatch, a topic too
/// small, an unreachable or refusing cluster).
pub async fn ensure<K: Kafka>(
    kafka: &K,
    shard: &GameShard,
    cluster: &Cluster,
) -> Result<(i32, Vec<String>), (Problem, String)> {
    let spec = &shard.spec.kafka;
    let mut names = vec![
        spec.input_topic.clone(),
        spec.output_topic.clone(),
        shard.snapshot_topic(),
        shard.control_topic(),
    ];
    names.extend(spec.dead_letter_topic.clone());
    let counts =
        kafka.partitions(cluster, &names).await.map_err(|e| (problem(&e), e.to_string()))?;
    let Some(partitions) = counts[0] else {
        return Err((
            Problem::InputTopicMissing,
            format!("input topic {:?} does not exist", spec.input_topic),
        ));
    };
    if let Some(specified) = shard.spec.partitions.filter(|&p| p != partitions) {
        return Err((
            Problem::PartitionMismatch,
            format!(
                "spec.partitions is {specified} but input topic {:?} has {partitions}",
                spec.input_topic
            ),
        ));
    }
    let mut missing = Vec::new();
    for (i, (name, count)) in names.iter().zip(&counts).enumerate().skip(1) {
        let wanted = if i == 3 { 1 } else { partitions };
        match count {
            None => missing.push(TopicSpec {
                name: name.clone(),
                partitions: wanted,
                config: topic_config(i),
            }),
            Some(have) if *have < wanted => {
                return Err((
                    Problem::TopicTooSmall,
                    format!("topic {name:?} has {have} partitions; it needs {wanted}"),
                ));
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        kafka.create(cluster, &missing).await.map_err(|e| (problem(&e), e.to_string()))?;
    }
    Ok((partitions, missing.into_iter().map(|t| t.name).collect()))
}

/// Settings of the topics the operator creates, by their place in the topic list.
fn topic_config(index: usize) -> Vec<(&'static str, &'static str)> {
    match index {
        // Snapshots: a week, far longer than any snapshot interval; the data plane
        // snapshots every owned partition at least every six hours, idle or not.
        2 => vec![("cleanup.policy", "delete"), ("retention.ms", "604800000")],
        // Control: the latest assignment must stay.
        3 => vec![("cleanup.policy", "compact")],
        _ => Vec::new(),
    }
}

/// The Degraded reason of a failed Kafka request.
pub fn problem(e: &KafkaError) -> Problem {
    match e {
        KafkaError::Unreachable(_) => Problem::BrokerUnreachable,
        KafkaError::Refused(_) => Problem::KafkaRefused,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KafkaError::Refused(format!("Kafka task failed: {e}")))?
}
