//! What the operator needs from a shard's Kafka cluster: partition counts, topic
//! creation, and publishing the assignment on the control topic.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

/// How long a metadata request may take before the cluster counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka cluster and the client settings to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// librdkafka settings (the shard's config and credentials).
    pub settings: BTreeMap<String, String>,
}

impl Cluster {
    fn config(&self) -> ClientConfig {
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
    /// A security setting of the shard (its credentials Secret or `spec.kafka.config`)
    /// keeps the operator from connecting: the brokers refused the SASL login, or the
    /// broker's certificate is not trusted.
    #[error("{setting}: {message}")]
    Security {
        /// The librdkafka setting to fix.
        setting: String,
        /// What went wrong, with librdkafka's error.
        message: String,
    },
}

impl KafkaError {
    /// The [`KafkaError::Security`] that librdkafka's error `code` with `reason` means
    /// for a client with `settings`, if a security setting causes it.
    pub fn security(
        code: RDKafkaErrorCode,
        reason: &str,
        settings: &BTreeMap<String, String>,
    ) -> Option<Self> {
        let (setting, problem) = match code {
            RDKafkaErrorCode::Authentication if reason.contains("supported mechanisms") => {
                ("sasl.mechanism", "the brokers do not offer this SASL mechanism".to_owned())
            }
            RDKafkaErrorCode::Authentication => (
                "sasl.password",
                format!(
                    "SASL authentication failed for sasl.username {:?} (check sasl.username and sasl.password)",
                    settings.get("sasl.username").map_or("", String::as_str)
                ),
            ),
            RDKafkaErrorCode::SSL => (
                if settings.contains_key("ssl.ca.pem") { "ssl.ca.pem" } else { "ssl.ca.location" },
                if reason.contains("certificate verify failed") {
                    "the broker's certificate is not signed by a CA this setting trusts".to_owned()
                } else {
                    "the TLS handshake with the broker failed".to_owned()
                },
            ),
            _ => return None,
        };
        Some(Self::Security {
            setting: setting.to_owned(),
            message: format!("{problem}: {reason}"),
        })
    }
}

/// A metadata client's context: keeps the first error a security setting causes, so
/// that a refused login is reported as such at once rather than as an unreachable
/// cluster after the timeout.
struct SecurityErrors {
    settings: BTreeMap<String, String>,
    first: Mutex<Option<KafkaError>>,
}

impl ClientContext for SecurityErrors {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let Some(code) = error.rdkafka_error_code() else { return };
        if let Some(e) = KafkaError::security(code, reason, &self.settings) {
            self.first.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
        }
    }
}

impl ConsumerContext for SecurityErrors {}

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

    /// Writes one record to partition 0 of `topic` and waits for its acknowledgement.
    fn publish(
        &self,
        cluster: &Cluster,
        topic: &str,
        key: &[u8],
        value: &[u8],
    ) -> impl Future<Output = Result<(), KafkaError>> + Send;
}

/// [`Kafka`] through librdkafka.
#[derive(Clone, Copy, Debug, Default)]
pub struct RdKafka;

impl Kafka for RdKafka {
    async fn partitions(
        &self,
        cluster: &Cluster,
        topics: &[String],
    ) -> Result<Vec<Option<i32>>, KafkaError> {
        let (cluster, topics) = (cluster.clone(), topics.to_vec());
        blocking(move || {
            let context =
                SecurityErrors { settings: cluster.settings.clone(), first: Mutex::new(None) };
            let client: BaseConsumer<SecurityErrors> = cluster
                .config()
                .create_with_context(context)
                .map_err(|e| KafkaError::Refused(e.to_string()))?;
            let deadline = Instant::now() + TIMEOUT;
            let metadata = loop {
                let attempt = client.fetch_metadata(None, Duration::from_millis(500));
                // Serve the error events queued meanwhile: they reach the context.
                for _ in 0..64 {
                    if client.poll(Duration::ZERO).is_none() {
                        break;
                    }
                }
                if let Some(e) =
                    client.context().first.lock().unwrap_or_else(PoisonError::into_inner).take()
                {
                    return Err(e);
                }
                match attempt {
                    Ok(metadata) => break metadata,
                    Err(_) if Instant::now() >= deadline => {
                        return Err(KafkaError::Unreachable(cluster.bootstrap.clone()));
                    }
                    Err(_) => {}
                }
            };
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
        let admin: AdminClient<DefaultClientContext> =
            cluster.config().create().map_err(|e| KafkaError::Refused(e.to_string()))?;
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

    async fn publish(
        &self,
        cluster: &Cluster,
        topic: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), KafkaError> {
        let producer: FutureProducer = cluster
            .config()
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .create()
            .map_err(|e| KafkaError::Refused(e.to_string()))?;
        producer
            .send(FutureRecord::to(topic).partition(0).key(key).payload(value), TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::MessageTimedOut) => {
                    KafkaError::Unreachable(cluster.bootstrap.clone())
                }
                _ => KafkaError::Refused(e.to_string()),
            })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KafkaError::Refused(format!("Kafka task failed: {e}")))?
}
