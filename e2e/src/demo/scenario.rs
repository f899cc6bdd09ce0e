//! The demo's load: the workload's records offered open loop through a sequence of
//! phases, each at its own rate (calm, a raid, calm again), continuing through the
//! workload's passes across phase boundaries so that every record carries fresh
//! sequence numbers.
//!
//! As in [`crate::loadgen`], a record's timestamp is the time it was due, even when it
//! is sent late, so that latency measured from the timestamp includes any delay in
//! offering the load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::harness::kafka::{self, Deliveries};
use crate::workload::Workload;

/// One phase of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// Its name in the display and the summary: `calm`, `raid`, `after`, `steady`.
    pub name: &'static str,
    /// Events per second offered.
    pub rate: f64,
    /// How long it lasts.
    pub duration: Duration,
    /// Whether the rate rises linearly from zero to `rate` over the phase, instead of
    /// holding `rate` from its start.
    pub ramp: bool,
}

/// What the producer thread shows while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Events produced so far, warm-up included.
    pub events: AtomicU64,
    /// Phases begun: 0 before the first, `i + 1` while phase `i` runs, one more than
    /// the phases once done.
    pub phase: AtomicUsize,
    /// Set once the warm-up is acknowledged.
    pub warmed_up: AtomicBool,
    /// When each phase began.
    pub started: std::sync::Mutex<Vec<(Instant, std::time::SystemTime)>>,
}

/// Produces the warm-up (one spawn per player, unthrottled), waits for the pipeline
/// with `settle`, then each of `phases`. Waits for every record to be acknowledged
/// and returns the events produced.
pub fn produce(
    workload: &mut Workload,
    brokers: &str,
    topic: &str,
    phases: &[Phase],
    settle: impl FnOnce(),
    progress: &Arc<Progress>,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    // librdkafka's default of a million requests in flight, as a game server's producer
    // left at its defaults has, unlike the benchmarks' load generator
    // (`loadgen::producer_config`): under the raid its requests queue at the broker. In
    // one run with five in flight the raid stayed under the target on one process and
    // nothing scaled (README, "The demo").
    let producer: BaseProducer<Deliveries> = kafka::config(brokers)
        .set("linger.ms", "1")
        .set("acks", "all")
        .set("queue.buffering.max.kbytes", "65536")
        .create_with_context(Deliveries::default())
        .context("creating the load producer")?;
    let send = |partition: u32, bytes: &[u8], timestamp_ms: i64| -> anyhow::Result<()> {
        let record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition as i32)
            .payload(bytes)
            .timestamp(timestamp_ms);
        kafka::send_waiting(&producer, record).context("producing load")
    };
    let mut bytes = Vec::new();
    for i in 0..workload.warmup_records() {
        let partition = workload.warmup_record(i, &mut bytes);
        send(partition, &bytes, now_ms())?;
    }
    producer.flush(Duration::from_mins(1)).context("waiting for the warm-up")?;
    progress.events.fetch_add(workload.warmup_events(), Relaxed);
    progress.warmed_up.store(true, Relaxed);
    settle();

    let (mut next, mut pass) = (0usize, 1u64);
    workload.records[0].set_pass(pass);
    for (i, phase) in phases.iter().enumerate() {
        progress
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((Instant::now(), std::time::SystemTime::now()));
        progress.phase.store(i + 1, Relaxed);
        let start = Instant::now();
        let start_ms = now_ms();
        let mut released = 0u64;
        while !stop.load(Relaxed) {
            let rate = phase.rate.max(1e-3);
            let due = if phase.ramp {
                // By time t into the ramp, rate·t²/(2·duration) events are due.
                let d = phase.duration.as_secs_f64();
                Duration::from_secs_f64((2.0 * d * released as f64 / rate).sqrt())
            } else {
                Duration::from_secs_f64(released as f64 / rate)
            };
            if due >= phase.duration {
                break;
            }
            while start.elapsed() < due {
                producer.poll(Duration::ZERO);
                let left = due.saturating_sub(start.elapsed());
                std::thread::sleep(left.min(Duration::from_millis(1)));
            }
            let record = &workload.records[next];
            send(record.partition, &record.bytes, start_ms + due.as_millis() as i64)?;
            released += u64::from(record.events);
            progress.events.fetch_add(u64::from(record.events), Relaxed);
            next += 1;
            if next == workload.records.len() {
                next = 0;
                pass += 1;
            }
            // The next record is written for its pass before it is due.
            workload.records[next].set_pass(pass);
        }
        // Whatever the phase left undone (stopped early), its wall time is kept: the
        // phases' boundaries are those of the clock.
        let left = phase.duration.saturating_sub(start.elapsed());
        if !stop.load(Relaxed) && !left.is_zero() {
            std::thread::sleep(left);
        }
    }
    progress.phase.store(phases.len() + 1, Relaxed);
    producer.flush(Duration::from_mins(1)).context("waiting for the load to be acknowledged")?;
    Ok(progress.events.load(Relaxed))
}

fn now_ms() -> i64 {
    gameshard_dataplane::clock::unix_ms()
}
