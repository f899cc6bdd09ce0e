//! Small Kafka client helpers for tests and benchmarks: topics, producing records,
//! reading a topic back.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// A client configuration for the broker at `bootstrap`, tuned for latency on loopback.
pub fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        // Kafka answers a fetch as soon as data is there: the wait only bounds how long
        // an idle fetch is held, so a short one would only poll the broker busily.
        .set("fetch.wait.max.ms", "100")
        .set("fetch.queue.backoff.ms", "1")
        .set("socket.nagle.disable", "true")
        .set("log_level", "3");
    c
}

/// Creates `topics` (name, partitions), waiting until each is visible in metadata.
pub fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, n)| NewTopic::new(name, *n, TopicReplication::Fixed(1)))
        .collect();
    let results = smol::future::block_on(admin.create_topics(&new, &AdminOptions::new()))?;
    for result in results {
        if let Err((topic, code)) = result {
            bail!("creating topic {topic}: {code}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, n) in topics {
        loop {
            let md = admin.inner().fetch_metadata(Some(name), Duration::from_secs(5))?;
            if md.topics().first().is_some_and(|t| t.partitions().len() == *n as usize) {
                break;
            }
            if Instant::now() > deadline {
                bail!("topic {name} did not appear with {n} partitions");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// A record to produce.
#[derive(Clone, Debug)]
pub struct Outgoing<'a> {
    /// Target partition.
    pub partition: i32,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: &'a [u8],
    /// Timestamp in ms, if not now.
    pub timestamp_ms: Option<i64>,
    /// Headers.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl<'a> Outgoing<'a> {
    /// A record with just a partition and a value.
    pub fn value(partition: i32, value: &'a [u8]) -> Self {
        Self { partition, key: None, value, timestamp_ms: None, headers: &[] }
    }
}

/// Counts failed deliveries.
#[derive(Default)]
pub struct Deliveries {
    failed: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Deliveries {
    /// Fails if a delivery failed since the last check.
    pub fn check(&self) -> anyhow::Result<()> {
        let failed = self.failed.swap(0, std::sync::atomic::Ordering::Relaxed);
        if failed > 0 {
            let last =
                self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            bail!("{failed} records were not delivered; last error: {}", last.unwrap_or_default());
        }
        Ok(())
    }
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, (): ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(e.to_string());
        }
    }
}

/// A producer that waits for every record to be acknowledged.
pub struct Writer {
    producer: BaseProducer<Deliveries>,
}

impl Writer {
    /// A producer for the broker at `bootstrap`.
    pub fn new(bootstrap: &str) -> anyhow::Result<Self> {
        Self::with(bootstrap, &[])
    }

    /// A producer for the broker at `bootstrap`, with extra client settings.
    pub fn with(bootstrap: &str, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut config = config(bootstrap);
        config.set("linger.ms", "1").set("acks", "all").set("message.timeout.ms", "30000");
        for (k, v) in settings {
            config.set(*k, *v);
        }
        let producer = config.create_with_context(Deliveries::default())?;
        Ok(Self { producer })
    }

    /// Sends `records` to `topic`, retrying while the local queue is full.
    pub fn send(&self, topic: &str, records: &[Outgoing<'_>]) -> anyhow::Result<()> {
        for r in records {
            let mut record =
                BaseRecord::<[u8], [u8]>::to(topic).partition(r.partition).payload(r.value);
            if let Some(key) = r.key {
                record = record.key(key);
            }
            if let Some(ts) = r.timestamp_ms {
                record = record.timestamp(ts);
            }
            if !r.headers.is_empty() {
                record = record.headers(headers(r.headers));
            }
            send_waiting(&self.producer, record).context("producing")?;
        }
        Ok(())
    }

    /// Waits until everything sent is acknowledged; fails if anything was refused.
    pub fn flush(&self) -> anyhow::Result<()> {
        // Served here in steps of a millisecond: rdkafka's flush polls in steps of
        // 100 ms, which would make every flush take at least that.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                bail!(
                    "{} records were not acknowledged within 30 s",
                    self.producer.in_flight_count()
                );
            }
            self.producer.poll(Duration::from_millis(1));
        }
        self.producer.context().check()
    }
}

/// Sends `record`, serving delivery reports while the producer's local queue is full,
/// then serves those already due.
pub fn send_waiting<C: ProducerContext>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) -> KafkaResult<()> {
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                record = r;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
    producer.poll(Duration::ZERO);
    Ok(())
}

/// A record read back.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: HashMap<String, Vec<u8>>,
    /// Timestamp in ms.
    pub timestamp_ms: i64,
}

/// The high watermark of every partition of `topic`.
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let consumer: BaseConsumer = config(bootstrap).create()?;
    (0..partitions)
        .map(|p| Ok(consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?.1))
        .collect()
}

/// Deletes the records of `topic`'s `partition` before offset `before` with the admin
/// API's `DeleteRecords`, as retention would: the partition's log then starts there.
pub fn delete_records(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    before: i64,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(before))?;
    let deleted = smol::future::block_on(admin.delete_records(&tpl, &AdminOptions::new()))
        .with_context(|| format!("deleting records of {topic} partition {partition}"))?;
    for e in deleted.elements() {
        if let Err(error) = e.error() {
            bail!("deleting records of {topic} partition {}: {error}", e.partition());
        }
    }
    Ok(())
}

/// Reads every partition of `topic` from the start up to its high watermark now.
pub fn read_all(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<Incoming>> {
    let ends = high_watermarks(bootstrap, topic, partitions)?;
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", "gameshard-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut next: Vec<i64> = vec![0; partitions as usize];
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_mins(1);
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        if Instant::now() > deadline {
            bail!("reading {topic} timed out at {next:?} of {ends:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = message?;
        next[m.partition() as usize] = m.offset() + 1;
        if m.offset() >= ends[m.partition() as usize] {
            continue;
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect()
            })
            .unwrap_or_default();
        out.push(Incoming {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
        });
    }
    Ok(out)
}

/// Headers from (name, value) pairs.
pub fn headers(pairs: &[(&str, &[u8])]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(*v) }))
}

/// Writes `settings` into `dir` the way a mounted Kubernetes Secret gives them to the
/// data plane's `--kafka-config-dir`: one file per librdkafka setting, named for it.
pub fn write_settings_dir(dir: &Path, settings: &[(String, String)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (key, value) in settings {
        std::fs::write(dir.join(key), value)?;
    }
    Ok(())
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// What [`warm_up`] did.
#[derive(Clone, Copy, Debug)]
pub struct WarmUp {
    /// How long it took.
    pub elapsed: Duration,
    /// The hop's p99 over its last second, ms.
    pub p99_ms: f64,
    /// Whether the hop got fast before the limit.
    pub warm: bool,
}

/// Offers a broker that just started a load shaped like a shard's input (records
/// produced and consumed back on a topic of its own, [`WARM_UP_TOPIC`], with
/// `partitions` partitions) until a record's hop through it is fast, or `limit` passes.
///
/// A freshly started broker's JVM answers slowly until its compiler has caught up with
/// the traffic, and a light load does not get it there. On the 2-core machine:
/// - a hop at 1,000 records/s on one partition had a p99 under 20 ms from its third
///   second, yet a data plane started next processed 5,000 to 22,000 events/s of the
///   60,000 offered in its first seconds, with a one-second p99 of 300 ms to over 1 s
///   for the next minute;
/// - a hop at 15,000 records/s over four partitions had a p99 of 0.35 to 1.6 s in each
///   of its first eight seconds and under 20 ms from the fourteenth on, while the JIT
///   compiler thread took a third of a core; the data plane started next kept up with
///   the same 60,000 events/s from its first second.
///
/// A broker in service has long been past that, so a run that measures latency on a
/// new one warms it first. Warm means the hop's p99 under 20 ms in three seconds in a
/// row.
pub fn warm_up(bootstrap: &str, partitions: i32, limit: Duration) -> anyhow::Result<WarmUp> {
    const RATE: u64 = 15_000;
    const WARM_P99_US: u64 = 20_000;
    const WARM_SECONDS: u32 = 3;
    create_topics(bootstrap, &[(WARM_UP_TOPIC, partitions)])?;
    let consumer: BaseConsumer =
        config(bootstrap).set("group.id", WARM_UP_TOPIC).set("fetch.wait.max.ms", "5").create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(WARM_UP_TOPIC, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    let producer: BaseProducer =
        config(bootstrap).set("linger.ms", "1").set("acks", "all").create()?;
    let mut second = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 2)?;
    let start = Instant::now();
    let (mut sent, mut seconds, mut fast_in_a_row) = (0u64, 1u32, 0);
    let mut p99_ms = f64::NAN;
    let mut payload = Vec::with_capacity(256);
    while start.elapsed() < limit {
        while sent * 1_000_000 / RATE <= start.elapsed().as_micros() as u64 {
            payload.clear();
            payload.extend_from_slice(now_us().to_string().as_bytes());
            payload.resize(200, b' ');
            let partition = (sent % partitions.max(1) as u64) as i32;
            let record =
                BaseRecord::<[u8], [u8]>::to(WARM_UP_TOPIC).partition(partition).payload(&payload);
            send_waiting(&producer, record)?;
            sent += 1;
        }
        // Everything already fetched, then back to producing.
        let mut wait = Duration::from_micros(200);
        while let Some(m) = consumer.poll(wait) {
            let m = m?;
            let text = std::str::from_utf8(m.payload().unwrap_or_default())?;
            let sent_us: i64 = text.trim_end().parse().context("a warm-up record")?;
            second.saturating_record((now_us() - sent_us).max(1) as u64);
            wait = Duration::ZERO;
        }
        if start.elapsed() >= Duration::from_secs(u64::from(seconds)) {
            seconds += 1;
            let p99 = second.value_at_quantile(0.99);
            p99_ms = p99 as f64 / 1000.0;
            fast_in_a_row =
                if !second.is_empty() && p99 < WARM_P99_US { fast_in_a_row + 1 } else { 0 };
            second.reset();
            if fast_in_a_row == WARM_SECONDS {
                return Ok(WarmUp { elapsed: start.elapsed(), p99_ms, warm: true });
            }
        }
    }
    Ok(WarmUp { elapsed: start.elapsed(), p99_ms, warm: false })
}

/// The topic [`warm_up`] produces to and consumes from.
pub const WARM_UP_TOPIC: &str = "gameshard.warm-up";
