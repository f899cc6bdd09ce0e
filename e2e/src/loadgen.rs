//! Load generation: the workload's records produced to a topic at a fixed offered rate
//! (open loop), or as fast as the broker takes them.
//!
//! At a fixed rate record `i` is due at `start + i × events_per_record / rate`, and its
//! timestamp is that due time even when it is sent late: end-to-end latency measured
//! from the record timestamp then includes any delay in offering the load, instead of
//! hiding it. The time from that due time to the broker's acknowledgement is measured
//! too: the part of an end-to-end latency spent before any consumer can read the record.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::message::{DeliveryResult, Message, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use crate::harness::kafka::{self, Deliveries};
use crate::workload::Workload;

/// What to produce.
#[derive(Clone, Debug)]
pub struct Load {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topic.
    pub topic: String,
    /// Events per second; `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Events to produce after the warm-up (rounded up to whole records).
    pub events: u64,
    /// Whether to produce the warm-up (one spawn per player) first, unthrottled.
    pub warmup: bool,
}

/// What was produced.
#[derive(Clone, Copy, Debug, Default)]
pub struct Produced {
    /// Records produced, warm-up included.
    pub records: u64,
    /// Events produced, warm-up included.
    pub events: u64,
    /// Time from the first record after the warm-up to the last acknowledgement.
    pub elapsed: Duration,
    /// At a fixed rate: how long after its due time each record after the warm-up was
    /// acknowledged by the broker.
    pub acked: Option<Acked>,
}

/// Quantiles of the records' time from their due time to the broker's acknowledgement,
/// in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Acked {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// The load producer's settings, which the benchmarks' bare broker hop uses too.
///
/// Five requests in flight, the Java client's default, instead of librdkafka's million.
/// librdkafka puts one partition's batch in each produce request, and the broker serves
/// one request of a connection at a time. With a million allowed, at 580,000 events/s
/// about 86 of the load generator's requests waited for their response at any time, and
/// the median round trip of each second was 61 to 125 ms. With five, the records wait
/// in the client's own queue instead: at 550,000 events/s the round trip was 2.1 to
/// 7.4 ms, and a record's time to its acknowledgement fell from 86 to 11 ms at the
/// median.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = kafka::config(brokers);
    config
        .set("linger.ms", "1")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5");
    config
}

/// The load producer's delivery reports: failures, checked once every record is
/// acknowledged, and each acknowledged record's time since its timestamp.
struct LoadReports {
    deliveries: Deliveries,
    acked: Mutex<Histogram<u64>>,
}

impl rdkafka::ClientContext for LoadReports {}

impl ProducerContext for LoadReports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        self.deliveries.delivery(result, ());
        if let Ok(m) = result
            && let Timestamp::CreateTime(ms) = m.timestamp()
        {
            let us = kafka::now_us().saturating_sub(ms * 1000).max(1) as u64;
            lock(&self.acked).saturating_record(us);
        }
    }
}

/// Produces `load` from `workload`, passes continuing from `first_pass`, until done or
/// `stop` is set. Waits for every record to be acknowledged.
pub fn produce(
    workload: &mut Workload,
    load: &Load,
    first_pass: u64,
    stop: &AtomicBool,
) -> anyhow::Result<Produced> {
    let reports = LoadReports {
        deliveries: Deliveries::default(),
        acked: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
    };
    let producer: BaseProducer<LoadReports> = producer_config(&load.brokers)
        .set("queue.buffering.max.kbytes", "65536")
        .create_with_context(reports)
        .context("creating the load producer")?;
    let mut produced = Produced::default();
    let send = |partition: u32, bytes: &[u8], timestamp_ms: i64| -> anyhow::Result<()> {
        let record = BaseRecord::<[u8], [u8]>::to(&load.topic)
            .partition(partition as i32)
            .payload(bytes)
            .timestamp(timestamp_ms);
        kafka::send_waiting(&producer, record).context("producing load")
    };
    if load.warmup {
        let mut bytes = Vec::new();
        for i in 0..workload.warmup_records() {
            let partition = workload.warmup_record(i, &mut bytes);
            send(partition, &bytes, now_ms())?;
            produced.records += 1;
        }
        produced.events += workload.warmup_events();
        // The warm-up's acknowledgements, served here, are not the paced load's.
        producer
            .flush(Duration::from_mins(1))
            .context("waiting for the warm-up to be acknowledged")?;
        lock(&producer.context().acked).reset();
    }
    let start = Instant::now();
    let start_ms = now_ms();
    let mut released = 0u64;
    let mut pass = first_pass;
    'passes: loop {
        for record in &mut workload.records {
            if released >= load.events || stop.load(Relaxed) {
                break 'passes;
            }
            let due = load.rate.map(|rate| Duration::from_secs_f64(released as f64 / rate));
            if let Some(due) = due {
                while start.elapsed() < due {
                    producer.poll(Duration::ZERO);
                    let left = due.saturating_sub(start.elapsed());
                    std::thread::sleep(left.min(Duration::from_millis(1)));
                }
            }
            let timestamp_ms = due.map_or_else(now_ms, |d| start_ms + d.as_millis() as i64);
            record.set_pass(pass);
            send(record.partition, &record.bytes, timestamp_ms)?;
            released += u64::from(record.events);
            produced.records += 1;
        }
        pass += 1;
    }
    producer.flush(Duration::from_mins(1)).context("waiting for the load to be acknowledged")?;
    producer.context().deliveries.check().context("producing load")?;
    produced.events += released;
    produced.elapsed = start.elapsed();
    let acked = lock(&producer.context().acked);
    produced.acked = (load.rate.is_some() && !acked.is_empty()).then(|| {
        let ms = |q| acked.value_at_quantile(q) as f64 / 1000.0;
        Acked { p50_ms: ms(0.5), p99_ms: ms(0.99), p999_ms: ms(0.999) }
    });
    Ok(produced)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    gameshard_dataplane::clock::unix_ms()
}
