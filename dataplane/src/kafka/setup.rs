//! Client settings, and the checks against the brokers made before anything is consumed.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;

use crate::cli::Args;

/// How long the start-up checks wait for the brokers.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the data plane cannot start with the given flags; each names the flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No broker answered.
    #[error("--brokers: no broker answered at {brokers} within {seconds} s ({detail})")]
    Unreachable {
        /// The bootstrap list.
        brokers: String,
        /// The wait.
        seconds: u64,
        /// librdkafka's error.
        detail: String,
    },
    /// A topic does not exist.
    #[error("{flag}: topic {topic:?} does not exist on the brokers")]
    MissingTopic {
        /// The flag naming the topic.
        flag: &'static str,
        /// The topic.
        topic: String,
    },
    /// A topic has too few partitions.
    #[error(
        "{flag}: topic {topic:?} has {has} partitions; it needs {needs} or more (as many as --input-topic)"
    )]
    TooFewPartitions {
        /// The flag naming the topic.
        flag: &'static str,
        /// The topic.
        topic: String,
        /// Its partitions.
        has: usize,
        /// Partitions of the input topic.
        needs: usize,
    },
    /// A listed partition is not in the input topic.
    #[error(
        "--partitions: partition {partition} is not in --input-topic {topic:?}, which has {partitions} partitions"
    )]
    NoSuchPartition {
        /// The partition.
        partition: u32,
        /// The input topic.
        topic: String,
        /// Its partitions.
        partitions: usize,
    },
    /// A `--kafka` setting is refused by librdkafka.
    #[error("--kafka: {0}")]
    Setting(String),
}

/// Settings every client shares: the brokers, then the user's `--kafka` settings, which
/// override the defaults set before them.
fn base(args: &Args, role: &str, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.brokers)
        .set("client.id", format!("gameshard-{}-{role}", args.shard))
        .set("socket.nagle.disable", "true")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "5000");
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &args.kafka {
        c.set(k, v);
    }
    c
}

/// The IO thread's consumer: explicit assignment, manual commits, and fetches tuned for
/// latency with a bounded prefetch queue.
pub fn consumer(args: &Args) -> ClientConfig {
    let mut c = base(
        args,
        "consumer",
        &[
            // Brokers that hold a fetch until it expires (tansu does) make this the
            // floor of every latency; Kafka answers as soon as data is there.
            ("fetch.wait.max.ms", "5"),
            ("fetch.queue.backoff.ms", "1"),
            ("fetch.error.backoff.ms", "100"),
            // Bounded prefetch: memory stays flat however far behind the consumer is.
            ("queued.max.messages.kbytes", "32768"),
            ("queued.min.messages", "10000"),
            // Records retention deleted before they were read are reported and counted
            // by the source, not skipped silently.
            ("auto.offset.reset", "error"),
            ("statistics.interval.ms", "1000"),
        ],
    );
    c.set("group.id", &args.shard)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    c
}

/// The publisher's producer: small linger for latency, a bounded local queue for
/// back-pressure, and no delivery timeout so that an unreachable broker stalls the
/// pipeline instead of losing updates.
pub fn producer(args: &Args) -> ClientConfig {
    base(
        args,
        "producer",
        &[
            ("linger.ms", "1"),
            ("acks", "all"),
            ("queue.buffering.max.kbytes", "65536"),
            ("queue.buffering.max.messages", "500000"),
            ("batch.num.messages", "10000"),
            // Few requests in flight: when the brokers are slow, records gather into
            // larger batches instead of many small requests.
            ("max.in.flight.requests.per.connection", "5"),
            ("message.timeout.ms", "0"),
            ("statistics.interval.ms", "1000"),
        ],
    )
}

/// The publisher's second producer, for snapshot chunks, manifests and release
/// messages: its own queue, so that a snapshot never waits in front of updates, and
/// larger batches, since a snapshot is bulk.
pub fn snapshot_producer(args: &Args) -> ClientConfig {
    base(
        args,
        "snapshots",
        &[
            ("linger.ms", "5"),
            ("acks", "all"),
            ("queue.buffering.max.kbytes", "65536"),
            ("message.timeout.ms", "0"),
            ("message.max.bytes", "1048576"),
        ],
    )
}

/// The ownership thread's producer of acquisition messages.
pub fn control_producer(args: &Args) -> ClientConfig {
    base(args, "control", &[("linger.ms", "0"), ("acks", "all"), ("message.timeout.ms", "30000")])
}

/// A consumer that only commits the input offsets, from the publisher thread.
pub fn committer(args: &Args) -> ClientConfig {
    let mut c = base(args, "committer", &[]);
    c.set("group.id", &args.shard).set("enable.auto.commit", "false");
    c
}

/// A consumer for reading the snapshot topic on restore: no commits, no group state.
pub fn reader(args: &Args) -> ClientConfig {
    let mut c =
        base(args, "restore", &[("fetch.wait.max.ms", "5"), ("fetch.queue.backoff.ms", "1")]);
    c.set("group.id", format!("{}.restore", args.shard))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    c
}

/// Checks the brokers, the topics and the partitions, and returns the input topic's
/// partition count.
pub fn check(args: &Args) -> Result<usize, SetupError> {
    let mut config = base(args, "check", &[]);
    // Connection failures come back as the error below; librdkafka's own log lines about
    // them would only repeat it.
    config.set("log_level", "0");
    let client: BaseConsumer = config.create().map_err(|e| SetupError::Setting(e.to_string()))?;
    let metadata =
        client.fetch_metadata(None, CHECK_TIMEOUT).map_err(|e| SetupError::Unreachable {
            brokers: args.brokers.clone(),
            seconds: CHECK_TIMEOUT.as_secs(),
            detail: e.to_string(),
        })?;
    let partitions = |flag, topic: &str| {
        partition_count(&metadata, topic)
            .ok_or(SetupError::MissingTopic { flag, topic: topic.to_owned() })
    };
    let input = partitions("--input-topic", &args.input_topic)?;
    let outputs = [
        Some(("--output-topic", &args.output_topic)),
        args.dlq_topic.as_ref().map(|t| ("--dlq-topic", t)),
        args.snapshot_topic.as_ref().map(|t| ("--snapshot-topic", t)),
    ];
    for (flag, topic) in outputs.into_iter().flatten() {
        let has = partitions(flag, topic)?;
        if has < input {
            return Err(SetupError::TooFewPartitions {
                flag,
                topic: topic.clone(),
                has,
                needs: input,
            });
        }
    }
    if let Some(list) = &args.partitions
        && let Some(&partition) = list.0.iter().find(|&&p| p as usize >= input)
    {
        return Err(SetupError::NoSuchPartition {
            partition,
            topic: args.input_topic.clone(),
            partitions: input,
        });
    }
    if let Some(control) = &args.control_topic {
        partitions("--control-topic", control)?;
    }
    Ok(input)
}

fn partition_count(metadata: &Metadata, topic: &str) -> Option<usize> {
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|&n| n > 0)
}
