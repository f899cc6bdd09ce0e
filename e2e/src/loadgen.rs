//! Load generation: the workload's records produced to a topic at a fixed offered rate
//! (open loop), or as fast as the broker takes them.
//!
//! At a fixed rate record `i` is due at `start + i × events_per_record / rate`, and its
//! timestamp is that due time even when it is sent late: end-to-end latency measured
//! from the record timestamp then includes any delay in offering the load, instead of
//! hiding it.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

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
}

/// Produces `load` from `workload`, passes continuing from `first_pass`, until done or
/// `stop` is set. Waits for every record to be acknowledged.
pub fn produce(
    workload: &mut Workload,
    load: &Load,
    first_pass: u64,
    stop: &AtomicBool,
) -> anyhow::Result<Produced> {
    let producer: BaseProducer<Deliveries> = kafka::config(&load.brokers)
        .set("linger.ms", "1")
        .set("acks", "all")
        .set("queue.buffering.max.kbytes", "65536")
        .create_with_context(Deliveries::default())
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
    produced.events += released;
    produced.elapsed = start.elapsed();
    Ok(produced)
}

fn now_ms() -> i64 {
    gameshard_dataplane::clock::unix_ms()
}
