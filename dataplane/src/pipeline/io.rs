//! The IO thread: polls the source, parses records into batches, and sends a batch when
//! it is full or when no record is waiting.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use gameshard_engine::Parser;
use smol::future::block_on;

use super::batch::Work;
use super::{Config, Queues};
use crate::clock;
use crate::metrics::Metrics;
use crate::source::{Polled, Source};

/// How often the IO thread tells the state machine the time. Ticks also reach the
/// publisher, even when no record flows, so that its sink can act on acknowledgements
/// (commit offsets, declare snapshots) while the input is idle.
const TICK: Duration = Duration::from_millis(250);

pub(super) fn read<P: Parser, S: Source<W>, W, U>(
    mut source: S,
    mut parser: P,
    queues: &Queues<P::Event, W, U>,
    stop: &AtomicBool,
    config: &Config,
    metrics: &Metrics,
) -> S {
    let send = |work: Work<P::Event, W>| {
        if let Work::Batch(batch) = &work {
            metrics.records.fetch_add(batch.records.len() as u64, Relaxed);
        }
        let sent = block_on(queues.work.send(work)).is_ok();
        metrics.queue_depth.store(queues.work.len() as u64, Relaxed);
        sent
    };
    let Some(mut batch) = block_on(queues.free_events.recv()) else {
        return source;
    };
    let mut last_tick = Instant::now();
    while !stop.load(Relaxed) {
        let wait = if batch.is_empty() { config.idle_wait } else { Duration::ZERO };
        let mut control = None;
        let full = match source.poll(wait) {
            Polled::Record(record) => {
                let index = batch.push_record(record.meta);
                parser.parse(record.payload, index, &mut batch);
                batch.events.len() >= config.max_batch_events
                    || batch.records.len() >= config.max_batch_events
                    || batch.bytes.len() >= config.max_batch_bytes
            }
            Polled::Assign(acquisition) => {
                control = Some(Work::Assign(acquisition));
                !batch.is_empty()
            }
            Polled::Revoke { partition, epoch, fenced } => {
                control = Some(Work::Revoke { partition, epoch, fenced });
                !batch.is_empty()
            }
            Polled::Idle => !batch.is_empty(),
            Polled::End => break,
        };
        if full {
            // Records read before a partition change are applied before it.
            if !send(Work::Batch(batch)) {
                return source;
            }
            let Some(next) = block_on(queues.free_events.recv()) else {
                return source;
            };
            batch = next;
        }
        if let Some(control) = control
            && !send(control)
        {
            return source;
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            if !send(Work::Tick(clock::unix_ms())) {
                return source;
            }
        }
    }
    if !batch.is_empty() {
        send(Work::Batch(batch));
    }
    send(Work::Drain);
    queues.work.close();
    source
}
