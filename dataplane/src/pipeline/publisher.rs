//! The publisher thread: encodes updates into reused buffers and hands them, the dead
//! letters and the snapshot chunks to the sink.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gameshard_engine::Encoder;

use super::Queues;
use super::batch::{Out, UpdateBatch};
use crate::clock;
use crate::metrics::{LocalHistogram, Metrics};
use crate::sink::Sink;

/// How often a sink waiting for acknowledgements is given the chance to act on them
/// while nothing else comes: a commit waits for its batches' acknowledgements, a
/// handoff for its snapshot's.
const IDLE_POLL: Duration = Duration::from_millis(2);

pub(super) fn publish<E: Encoder, K: Sink, Ev, W>(
    mut encoder: E,
    mut sink: K,
    queues: &Queues<Ev, W, E::Update>,
    metrics: &Metrics,
    epoch: Instant,
) -> K {
    let mut publisher = Publisher {
        key: Vec::with_capacity(256),
        value: Vec::with_capacity(1024),
        latency: metrics.latency.local(),
        pipeline_latency: metrics.pipeline_latency.local(),
        target_ns: metrics.latency_target_ns(),
    };
    let waiter = queues.out.waiter();
    loop {
        let wait = sink.busy().then_some(IDLE_POLL);
        match queues.out.recv_blocking(&waiter, wait) {
            Ok(Some(Out::Batch(mut batch))) => {
                publisher.batch(&mut encoder, &mut sink, &batch, metrics, epoch);
                batch.clear();
                let _ = queues.free_updates.try_send(batch);
            }
            Ok(Some(Out::Chunk(mut chunk))) => {
                sink.snapshot_chunk(&chunk);
                chunk.bytes.clear();
                let _ = queues.free_chunks.try_send(chunk.bytes);
            }
            Ok(None) => sink.idle(),
            Err(()) => break,
        }
    }
    queues.free_updates.close();
    queues.free_chunks.close();
    sink.finish();
    sink
}

/// The publisher's reused buffers and thread-local metrics.
struct Publisher {
    key: Vec<u8>,
    value: Vec<u8>,
    latency: LocalHistogram,
    pipeline_latency: LocalHistogram,
    target_ns: Option<u64>,
}

impl Publisher {
    fn batch<E: Encoder, K: Sink>(
        &mut self,
        encoder: &mut E,
        sink: &mut K,
        batch: &UpdateBatch<E::Update>,
        metrics: &Metrics,
        epoch: Instant,
    ) {
        let bytes = &batch.updates.bytes;
        for (src, update) in &batch.updates.items {
            encoder.encode(src, update, bytes, &mut self.key, &mut self.value);
            sink.update(src, &self.key, &self.value);
        }
        for dl in &batch.dead_letters {
            sink.dead_letter(&dl.src, dl.reason, dl.payload.get(&batch.dead_letter_bytes));
        }
        for s in &batch.snapshots {
            sink.snapshot_started(s);
        }
        for r in &batch.released {
            sink.released(r);
        }
        let now_ns = epoch.elapsed().as_nanos() as u64;
        let now_unix_ns = clock::unix_ns();
        // Updates of one record share its times and mostly come in runs: observe each
        // run once, weighted by its length.
        let mut within = 0;
        for run in batch.updates.items.chunk_by(|(a, _), (b, _)| a == b) {
            let src = &run[0].0;
            let n = run.len() as u64;
            let since_ts = now_unix_ns.saturating_sub(src.timestamp_ms.max(0) as u128 * 1_000_000);
            let since_ts = u64::try_from(since_ts).unwrap_or(u64::MAX);
            self.latency.observe_n(since_ts, n);
            if self.target_ns.is_some_and(|t| since_ts <= t) {
                within += n;
            }
            self.pipeline_latency.observe_n(now_ns.saturating_sub(src.arrival_ns), n);
        }
        if !batch.handoffs.is_empty() {
            let now_ms = clock::unix_ms();
            for h in &batch.handoffs {
                let ms = (now_ms - h.released_ms).max(0) as u64;
                metrics.handoff_duration.observe_ns(ms * 1_000_000);
                tracing::info!(partition = h.partition, ms, "handoff done: first record processed");
            }
        }
        self.latency.flush_into(&metrics.latency);
        metrics.within_target.fetch_add(within, Relaxed);
        self.pipeline_latency.flush_into(&metrics.pipeline_latency);
        metrics.updates.fetch_add(batch.updates.len() as u64, Relaxed);
        metrics.dead_letters.fetch_add(batch.dead_letters.len() as u64, Relaxed);
        sink.end_batch(&batch.progress, now_ns);
    }
}
