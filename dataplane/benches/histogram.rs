//! What the publisher thread pays per update to record latencies: the data plane's own
//! thread-local histogram ([`gameshard_dataplane::metrics::LocalHistogram`]) against the
//! `prometheus` crate's (`prometheus::local::LocalHistogram`), on the same buckets.
//!
//! The publisher observes once per run of updates from one record (they share the
//! record's times), weighted by the run's length, and adds its local counts into the
//! shared histogram once per batch. `prometheus`'s local histogram has no weighted
//! observation, so it observes every update of a run. Both flush once per batch.
//!
//! `cargo bench -p gameshard-dataplane --bench histogram` (release build, pinned to the
//! last allowed CPU). Throughput is in updates.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gameshard_dataplane::affinity;
use gameshard_dataplane::metrics::{Histogram, LATENCY_BUCKETS, LocalHistogram};
use prometheus::HistogramOpts;

/// Updates in one batch the publisher handles.
const BATCH: usize = 1024;

/// Latencies (ns) of `BATCH / run` runs, spread over the buckets from 30 µs to 5 ms.
fn latencies(run: usize) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BATCH / run)
        .map(|_| {
            // xorshift: the same sequence on every run of the benchmark.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            30_000 + x % 5_000_000
        })
        .collect()
}

fn observe(c: &mut Criterion) {
    if let Ok(cpus) = affinity::allowed_cpus()
        && let Some(&last) = cpus.last()
    {
        let _ = affinity::pin_current_thread(&[last]);
    }
    let mut group = c.benchmark_group("latency_histogram");
    group.throughput(Throughput::Elements(BATCH as u64));
    // 1: one event per record; 16 and 64: the records of 16 to 256 events gateways send,
    // after coalescing.
    for run in [1, 16, 64] {
        let lat = latencies(run);
        let n = run as u64;

        let shared = Histogram::new(&LATENCY_BUCKETS);
        let mut local: LocalHistogram = shared.local();
        group.bench_with_input(BenchmarkId::new("hand_written", run), &lat, |b, lat| {
            b.iter(|| {
                for &ns in lat {
                    local.observe_n(black_box(ns), n);
                }
                local.flush_into(&shared);
            });
        });
        black_box(shared.count());

        let opts =
            HistogramOpts::new("latency_seconds", "latency").buckets(LATENCY_BUCKETS.to_vec());
        let histogram = prometheus::Histogram::with_opts(opts).expect("valid histogram");
        let local = histogram.local();
        group.bench_with_input(BenchmarkId::new("prometheus_local", run), &lat, |b, lat| {
            b.iter(|| {
                for &ns in lat {
                    let seconds = black_box(ns) as f64 / 1e9;
                    for _ in 0..n {
                        local.observe(seconds);
                    }
                }
                local.flush();
            });
        });
        black_box(histogram.get_sample_count());
    }
    group.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
