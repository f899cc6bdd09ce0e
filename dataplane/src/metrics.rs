//! The data plane's metrics: atomics written by the pipeline threads once per batch and
//! read by the admin server, which renders them in the Prometheus text format.
//!
//! Every counter has a single writer thread. Writers count into plain locals while they
//! work through a batch and add the totals once at its end, so the hot path takes no
//! lock and touches no shared cache line per event.
//!
//! This is what `prometheus::local` offers (`LocalIntCounter`, `LocalHistogram`), written
//! here on purpose. For counters the two are the same thing, a `u64` added into an
//! atomic at the flush, so the crate's types would only bring its registry and encoder
//! in place of [`Metrics::render`]. For the latency histograms the crate's
//! `LocalHistogram` is the slower: it has no weighted observation, while the publisher
//! observes once per run of updates from one record (they share the record's times),
//! and it finds a bucket with a linear scan of `f64` bounds.
//! `cargo bench -p gameshard-dataplane --bench histogram` (release build, pinned,
//! batches of 1,024 updates, each flushed once) measured, per update, on the 2-core
//! development machine under a load average of 5 to 6 (other builds running):
//!
//! | updates per run | hand-written | `prometheus::local::LocalHistogram` |
//! | --- | --- | --- |
//! | 1 | 7.0 ns | 14.5 ns |
//! | 16 | 0.61 ns | 14.8 ns |
//! | 64 | 0.21 ns | 13.5 ns |
//!
//! Twice the cost for records of one event, 24 to 65 times for the records of 16 to 256
//! events that gateways send.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering::Relaxed};

/// Upper bounds of the latency buckets, in seconds: fine from 50 µs to 2 ms, where
/// targets sit, then coarser up to 1 s.
pub const LATENCY_BUCKETS: [f64; 32] = [
    0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_4, 0.000_5, 0.000_75, 0.001,
    0.001_25, 0.001_5, 0.001_75, 0.002, 0.002_5, 0.003, 0.004, 0.005, 0.007_5, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
];

/// Upper bounds of the handoff-duration buckets, in seconds: a handoff pauses one
/// partition for tens to hundreds of milliseconds, or for the handoff timeout when the
/// former owner is gone.
pub const HANDOFF_BUCKETS: [f64; 14] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

/// A fixed-bucket histogram of durations.
pub struct Histogram {
    /// Upper bounds in seconds, for rendering.
    bounds: &'static [f64],
    /// The same in nanoseconds, for comparisons without floating point.
    bounds_ns: Box<[u64]>,
    /// Per-bucket (not cumulative) counts; the last bucket is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(&LATENCY_BUCKETS)
    }
}

/// A thread's private histogram, added into a shared [`Histogram`] once per batch: the
/// counterpart of `prometheus::local::LocalHistogram`, with a weighted observation
/// ([`LocalHistogram::observe_n`]) and an integer bucket search (the module's
/// documentation has the measurement).
#[derive(Clone)]
pub struct LocalHistogram {
    bounds_ns: Box<[u64]>,
    buckets: Box<[u64]>,
    sum_ns: u64,
}

impl LocalHistogram {
    /// Records one duration.
    #[inline]
    pub fn observe_ns(&mut self, ns: u64) {
        self.observe_n(ns, 1);
    }

    /// Records `n` observations of the same duration.
    #[inline]
    pub fn observe_n(&mut self, ns: u64, n: u64) {
        let bucket = self.bounds_ns.partition_point(|&bound| bound < ns);
        self.buckets[bucket] += n;
        self.sum_ns = self.sum_ns.wrapping_add(ns.wrapping_mul(n));
    }

    /// Adds everything recorded into `shared` (made with the same bounds) and starts
    /// over.
    pub fn flush_into(&mut self, shared: &Histogram) {
        for (local, shared) in self.buckets.iter_mut().zip(&shared.buckets) {
            if *local != 0 {
                shared.fetch_add(*local, Relaxed);
                *local = 0;
            }
        }
        shared.sum_ns.fetch_add(self.sum_ns, Relaxed);
        self.sum_ns = 0;
    }
}

impl Histogram {
    /// An empty histogram with these upper bounds, in seconds, ascending.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            bounds_ns: bounds.iter().map(|s| (s * 1e9 + 0.5) as u64).collect(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// A thread-local histogram with the same bounds, to flush into this one.
    pub fn local(&self) -> LocalHistogram {
        LocalHistogram {
            bounds_ns: self.bounds_ns.clone(),
            buckets: vec![0; self.buckets.len()].into_boxed_slice(),
            sum_ns: 0,
        }
    }

    /// Records one duration directly, for rare events.
    pub fn observe_ns(&self, ns: u64) {
        let bucket = self.bounds_ns.partition_point(|&bound| bound < ns);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The upper bound (seconds) of the bucket holding quantile `q`, or `None` without
    /// observations. Coarse by design, for `/status` and logs: the operator and
    /// Prometheus interpolate within the buckets, over a window.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// Where a partition stands on this data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum PartitionState {
    /// Not this data plane's.
    Unowned = 0,
    /// Being taken: waiting for the former owner's release, or restoring its snapshot.
    Restoring = 1,
    /// Served.
    Owned = 2,
    /// Being given up: its last snapshot and commit are on their way.
    Releasing = 3,
}

impl PartitionState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Restoring,
            2 => Self::Owned,
            3 => Self::Releasing,
            _ => Self::Unowned,
        }
    }
}

/// Offsets and timings of one input partition.
pub struct PartitionStats {
    /// A [`PartitionState`].
    state: AtomicU8,
    /// The assignment epoch of the state.
    epoch: AtomicU64,
    /// Input records found deleted (by retention) before they were processed.
    pub gap_records: AtomicU64,
    /// Next offset to process (one past the last processed record); -1 when unknown.
    pub processed: AtomicI64,
    /// Next offset committed to the consumer group; -1 when unknown.
    pub committed: AtomicI64,
    /// Next offset the latest snapshot reflects; -1 when there is none.
    pub snapshot: AtomicI64,
    /// High watermark (next offset to be written) last seen; -1 when unknown.
    pub high_watermark: AtomicI64,
    /// Unix time (ms) of the latest snapshot, or of taking the partition before any.
    pub snapshot_unix_ms: AtomicI64,
}

impl Default for PartitionStats {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(PartitionState::Unowned as u8),
            epoch: AtomicU64::new(0),
            gap_records: AtomicU64::new(0),
            processed: AtomicI64::new(-1),
            committed: AtomicI64::new(-1),
            snapshot: AtomicI64::new(-1),
            high_watermark: AtomicI64::new(-1),
            snapshot_unix_ms: AtomicI64::new(0),
        }
    }
}

impl PartitionStats {
    /// Where the partition stands, and under which epoch.
    pub fn state(&self) -> (PartitionState, u64) {
        (PartitionState::from_u8(self.state.load(Relaxed)), self.epoch.load(Relaxed))
    }

    /// Moves the partition to `state` under `epoch`.
    pub fn set_state(&self, state: PartitionState, epoch: u64) {
        self.epoch.store(epoch, Relaxed);
        self.state.store(state as u8, Relaxed);
    }

    /// Whether the data plane holds the partition in any way.
    pub fn held(&self) -> bool {
        self.state().0 != PartitionState::Unowned
    }

    /// Records not yet processed, when both ends are known.
    pub fn lag(&self) -> Option<i64> {
        let (high, done) = (self.high_watermark.load(Relaxed), self.processed.load(Relaxed));
        (high >= 0 && done >= 0).then(|| (high - done).max(0))
    }

    /// Records processed since the latest restorable snapshot.
    pub fn since_snapshot(&self) -> Option<i64> {
        let (done, snapshot) = (self.processed.load(Relaxed), self.snapshot.load(Relaxed));
        (done >= 0).then(|| (done - snapshot.max(0)).max(0))
    }

    /// Records processed whose offsets are not committed yet: their updates are still
    /// waiting for the brokers' acknowledgement.
    pub fn uncommitted(&self) -> Option<i64> {
        let (done, committed) = (self.processed.load(Relaxed), self.committed.load(Relaxed));
        (done >= 0 && committed >= 0).then(|| (done - committed).max(0))
    }
}

/// Everything the admin server exposes for one shard.
pub struct Metrics {
    shard: String,
    reject_reasons: &'static [&'static str],
    /// Events applied (written by the state-machine thread).
    pub applied: AtomicU64,
    /// Events rejected, per reason index (state-machine thread).
    pub rejected: Vec<AtomicU64>,
    /// Malformed events (state-machine thread).
    pub malformed: AtomicU64,
    /// Input records read (IO thread).
    pub records: AtomicU64,
    /// Updates handed to the producer (publisher thread).
    pub updates: AtomicU64,
    /// Dead letters handed to the producer (publisher thread).
    pub dead_letters: AtomicU64,
    /// Record timestamp to update handed to the producer (publisher thread).
    pub latency: Histogram,
    /// Record read by the IO thread to update handed to the producer (publisher thread).
    pub pipeline_latency: Histogram,
    /// A partition's release on its former owner to its first record processed here.
    pub handoff_duration: Histogram,
    /// Batches in the IO to state-machine queue.
    pub queue_depth: AtomicU64,
    /// Per input partition, indexed by partition number.
    pub partitions: Vec<PartitionStats>,
    /// The shard's p99 latency target, in seconds.
    latency_target: Option<f64>,
    /// Updates handed to the producer within the latency target (publisher thread).
    pub within_target: AtomicU64,
}

impl Metrics {
    /// Metrics for shard `shard` over an input topic of `partitions` partitions, whose
    /// world rejects events for `reject_reasons`.
    pub fn new(shard: &str, partitions: u32, reject_reasons: &'static [&'static str]) -> Self {
        Self {
            shard: shard.to_owned(),
            reject_reasons,
            applied: AtomicU64::new(0),
            rejected: reject_reasons.iter().map(|_| AtomicU64::new(0)).collect(),
            malformed: AtomicU64::new(0),
            records: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            latency: Histogram::default(),
            pipeline_latency: Histogram::default(),
            handoff_duration: Histogram::new(&HANDOFF_BUCKETS),
            queue_depth: AtomicU64::new(0),
            partitions: (0..partitions).map(|_| PartitionStats::default()).collect(),
            latency_target: None,
            within_target: AtomicU64::new(0),
        }
    }

    /// Sets the shard's p99 latency target: it is exported, and the publisher counts
    /// the updates that meet it, so that alerts read the share of late updates exactly
    /// rather than from histogram buckets.
    #[must_use]
    pub fn with_latency_target(mut self, seconds: Option<f64>) -> Self {
        self.latency_target = seconds;
        self
    }

    /// The latency target in nanoseconds.
    pub fn latency_target_ns(&self) -> Option<u64> {
        self.latency_target.map(|s| (s * 1e9) as u64)
    }

    /// The shard these metrics describe.
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// Stats of partition `p`, if the topic has it.
    pub fn partition(&self, p: u32) -> Option<&PartitionStats> {
        self.partitions.get(p as usize)
    }

    /// Number of partitions served now.
    pub fn owned_partitions(&self) -> usize {
        self.partitions.iter().filter(|p| p.state().0 == PartitionState::Owned).count()
    }

    /// Events of every outcome so far.
    pub fn events(&self) -> u64 {
        self.applied.load(Relaxed)
            + self.malformed.load(Relaxed)
            + self.rejected.iter().map(|r| r.load(Relaxed)).sum::<u64>()
    }

    /// Renders every metric in the Prometheus text exposition format, with `now_unix_ms`
    /// as the reference for ages.
    #[allow(clippy::too_many_lines)] // one block per metric family, in page order
    pub fn render(&self, now_unix_ms: i64) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let shard = escape_label(&self.shard);
        let w = &mut out;

        family(w, "gameshard_events_total", "counter", "Events by outcome.");
        let rejected: u64 = self.rejected.iter().map(|r| r.load(Relaxed)).sum();
        for (outcome, v) in [
            ("applied", self.applied.load(Relaxed)),
            ("rejected", rejected),
            ("malformed", self.malformed.load(Relaxed)),
        ] {
            let _ = writeln!(
                w,
                "gameshard_events_total{{shard=\"{shard}\",outcome=\"{outcome}\"}} {v}"
            );
        }

        family(w, "gameshard_events_rejected_total", "counter", "Rejected events by reason.");
        for (reason, v) in self.reject_reasons.iter().zip(&self.rejected) {
            let reason = escape_label(reason);
            let v = v.load(Relaxed);
            let _ = writeln!(
                w,
                "gameshard_events_rejected_total{{shard=\"{shard}\",reason=\"{reason}\"}} {v}"
            );
        }

        histogram(
            w,
            "gameshard_event_latency_seconds",
            "Record timestamp to update handed to the producer.",
            &shard,
            &self.latency,
        );
        histogram(
            w,
            "gameshard_pipeline_latency_seconds",
            "Record read from the broker to update handed to the producer.",
            &shard,
            &self.pipeline_latency,
        );
        histogram(
            w,
            "gameshard_handoff_duration_seconds",
            "A partition's release on its former owner to its first record processed on this one.",
            &shard,
            &self.handoff_duration,
        );

        self.gaps(w, &shard);
        thread_cpu(w, &shard);

        for (name, help, v) in [
            ("gameshard_records_total", "Input records read.", &self.records),
            ("gameshard_updates_total", "Updates handed to the producer.", &self.updates),
            (
                "gameshard_dead_letters_total",
                "Dead letters handed to the producer.",
                &self.dead_letters,
            ),
        ] {
            family(w, name, "counter", help);
            let _ = writeln!(w, "{name}{{shard=\"{shard}\"}} {}", v.load(Relaxed));
        }

        family(w, "gameshard_owned_partitions", "gauge", "Input partitions owned now.");
        let _ = writeln!(
            w,
            "gameshard_owned_partitions{{shard=\"{shard}\"}} {}",
            self.owned_partitions()
        );

        family(w, "gameshard_queue_depth", "gauge", "Batches in the IO to state-machine queue.");
        let _ = writeln!(
            w,
            "gameshard_queue_depth{{shard=\"{shard}\"}} {}",
            self.queue_depth.load(Relaxed)
        );

        self.partition_gauge(
            w,
            "gameshard_partition_lag_records",
            "Records behind the high watermark, per owned partition.",
            &shard,
            |stats| stats.lag().map(|v| v as f64),
        );
        self.partition_gauge(
            w,
            "gameshard_uncommitted_records",
            "Records processed whose updates the brokers have not acknowledged yet, per owned partition.",
            &shard,
            |stats| stats.uncommitted().map(|v| v as f64),
        );
        self.partition_gauge(
            w,
            "gameshard_records_since_snapshot",
            "Records processed since the latest restorable snapshot, per owned partition.",
            &shard,
            |stats| stats.since_snapshot().map(|v| v as f64),
        );
        self.latency_target(w, &shard);
        self.partition_gauge(
            w,
            "gameshard_snapshot_age_seconds",
            "Seconds since the latest snapshot, per owned partition.",
            &shard,
            |stats| {
                Some((now_unix_ms - stats.snapshot_unix_ms.load(Relaxed)).max(0) as f64 / 1000.0)
            },
        );
        out
    }

    /// The partitions the data plane holds in any way.
    pub fn held(&self) -> impl Iterator<Item = (usize, &PartitionStats)> {
        self.partitions.iter().enumerate().filter(|(_, s)| s.held())
    }

    /// Input records lost to retention, per partition held or that lost some.
    fn gaps(&self, w: &mut String, shard: &str) {
        family(
            w,
            "gameshard_input_gap_records_total",
            "counter",
            "Input records deleted (by retention) before this data plane processed them: state is missing their events.",
        );
        for (p, stats) in self.partitions.iter().enumerate() {
            let gap = stats.gap_records.load(Relaxed);
            if gap > 0 || stats.held() {
                let _ = writeln!(
                    w,
                    "gameshard_input_gap_records_total{{shard=\"{shard}\",partition=\"{p}\"}} {gap}"
                );
            }
        }
    }

    /// The latency target and the updates that met it, when the shard has a target.
    fn latency_target(&self, w: &mut String, shard: &str) {
        let Some(target) = self.latency_target else { return };
        family(w, "gameshard_latency_target_seconds", "gauge", "The shard's p99 latency target.");
        let _ = writeln!(w, "gameshard_latency_target_seconds{{shard=\"{shard}\"}} {target}");
        family(
            w,
            "gameshard_updates_within_target_total",
            "counter",
            "Updates handed to the producer within the latency target (the same updates gameshard_event_latency_seconds_count counts).",
        );
        let within = self.within_target.load(Relaxed);
        let _ = writeln!(w, "gameshard_updates_within_target_total{{shard=\"{shard}\"}} {within}");
    }

    /// A gauge per owned partition, for the partitions where `value` is known.
    fn partition_gauge(
        &self,
        w: &mut String,
        name: &str,
        help: &str,
        shard: &str,
        value: impl Fn(&PartitionStats) -> Option<f64>,
    ) {
        family(w, name, "gauge", help);
        for (p, stats) in self.held() {
            if let Some(v) = value(stats) {
                let _ = writeln!(w, "{name}{{shard=\"{shard}\",partition=\"{p}\"}} {v}");
            }
        }
    }
}

/// The pipeline threads, by the names they are spawned with, and their metric labels.
const THREADS: [(&str, &str); 3] =
    [("gs-io", "io"), ("gs-state", "state"), ("gs-publish", "publisher")];

/// CPU time of each pipeline thread, read from the kernel at scrape time (nothing on
/// the hot path): the autoscaler's measure of how busy a pod is. A thread near one
/// second per second is the pod's limit.
fn thread_cpu(w: &mut String, shard: &str) {
    family(
        w,
        "gameshard_thread_cpu_seconds_total",
        "counter",
        "CPU time of each pipeline thread (io, state, publisher).",
    );
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
    let mut seconds = [None; THREADS.len()];
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        let Some(i) = THREADS.iter().position(|(name, _)| *name == comm.trim_end()) else {
            continue;
        };
        // The first field of schedstat is the time on a CPU, in nanoseconds.
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(ns) = ns {
            *seconds[i].get_or_insert(0.0) += ns as f64 / 1e9;
        }
    }
    for ((_, label), seconds) in THREADS.iter().zip(seconds) {
        if let Some(seconds) = seconds {
            let _ = writeln!(
                w,
                "gameshard_thread_cpu_seconds_total{{shard=\"{shard}\",thread=\"{label}\"}} {seconds}"
            );
        }
    }
}

fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(w: &mut String, name: &str, help: &str, shard: &str, h: &Histogram) {
    family(w, name, "histogram", help);
    let mut cumulative = 0;
    for (i, bucket) in h.buckets.iter().enumerate() {
        cumulative += bucket.load(Relaxed);
        match h.bounds.get(i) {
            Some(le) => {
                let _ = writeln!(w, "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(w, "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let sum = h.sum_ns.load(Relaxed) as f64 / 1e9;
    let _ = writeln!(w, "{name}_sum{{shard=\"{shard}\"}} {sum}");
    let _ = writeln!(w, "{name}_count{{shard=\"{shard}\"}} {cumulative}");
}

/// Escapes a label value as the text format requires.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let shared = Histogram::default();
        let mut local = shared.local();
        for ns in [1, 50_000, 50_001, 1_000_000, 2_000_000, 5_000_000_000] {
            local.observe_ns(ns);
        }
        local.flush_into(&shared);
        let b = |i: usize| shared.buckets[i].load(Relaxed);
        assert_eq!(b(0), 2, "1 ns and exactly 50 µs are <= 50 µs");
        assert_eq!(b(1), 1, "50.001 µs is in the 75 µs bucket");
        assert_eq!(b(LATENCY_BUCKETS.iter().position(|&x| x == 0.001).unwrap()), 1);
        assert_eq!(b(LATENCY_BUCKETS.iter().position(|&x| x == 0.002).unwrap()), 1);
        assert_eq!(b(LATENCY_BUCKETS.len()), 1, "5 s is above every bound");
        assert_eq!(shared.count(), 6);
        // Flushing twice adds nothing the second time.
        local.flush_into(&shared);
        assert_eq!(shared.count(), 6);
    }

    #[test]
    fn buckets_tell_a_p99_of_one_millisecond_from_two() {
        let between: Vec<f64> =
            LATENCY_BUCKETS.iter().copied().filter(|&b| b > 0.001 && b < 0.002).collect();
        assert!(between.len() >= 2, "{between:?}");
        assert_eq!(LATENCY_BUCKETS[0], 0.000_05);
        assert_eq!(*LATENCY_BUCKETS.last().unwrap(), 1.0);
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn quantile_bound_reads_the_bucket_of_the_rank() {
        let shared = Histogram::default();
        assert_eq!(shared.quantile_upper_bound(0.99), None);
        let mut local = shared.local();
        for _ in 0..99 {
            local.observe_ns(100_000);
        }
        local.observe_ns(1_900_000);
        local.flush_into(&shared);
        assert_eq!(shared.quantile_upper_bound(0.5), Some(0.000_1));
        assert_eq!(shared.quantile_upper_bound(0.99), Some(0.000_1));
        assert_eq!(shared.quantile_upper_bound(1.0), Some(0.002));
    }

    #[test]
    fn a_pipeline_threads_cpu_time_is_exported_under_its_label() {
        let spin = std::thread::Builder::new()
            .name("gs-state".into())
            .spawn(|| {
                // Busy until this thread has had 50 ms on a CPU, however loaded the
                // machine is.
                let on_cpu = || -> u64 {
                    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
                    stat.split_whitespace().next().unwrap().parse().unwrap()
                };
                let mut x = 0u64;
                while on_cpu() < 50_000_000 {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                let page = Metrics::new("z", 1, &[]).render(0);
                (x, page)
            })
            .unwrap();
        let (_, page) = spin.join().unwrap();
        let line = page
            .lines()
            .find(|l| {
                l.starts_with(r#"gameshard_thread_cpu_seconds_total{shard="z",thread="state"}"#)
            })
            .unwrap_or_else(|| panic!("the state thread's CPU time: {page}"));
        let seconds: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((0.05..5.0).contains(&seconds), "at least its 50 ms on a CPU: {seconds}");
        assert!(!page.contains(r#"thread="io""#), "no IO thread runs here");
    }

    #[test]
    fn rendering_names_every_specified_metric_with_its_labels() {
        let m =
            Metrics::new("zone\"1", 4, &["stale_seq", "dead"]).with_latency_target(Some(0.0019));
        m.applied.fetch_add(5, Relaxed);
        m.rejected[1].fetch_add(2, Relaxed);
        m.partitions[2].set_state(PartitionState::Owned, 1);
        m.partitions[2].high_watermark.store(100, Relaxed);
        m.partitions[2].processed.store(40, Relaxed);
        m.partitions[2].snapshot_unix_ms.store(1_000, Relaxed);
        m.partitions[2].committed.store(30, Relaxed);
        let text = m.render(3_500);
        for line in [
            r#"gameshard_events_total{shard="zone\"1",outcome="applied"} 5"#,
            r#"gameshard_events_total{shard="zone\"1",outcome="rejected"} 2"#,
            r#"gameshard_events_rejected_total{shard="zone\"1",reason="dead"} 2"#,
            r#"gameshard_event_latency_seconds_bucket{shard="zone\"1",le="+Inf"} 0"#,
            r#"gameshard_event_latency_seconds_bucket{shard="zone\"1",le="0.00005"} 0"#,
            r#"gameshard_owned_partitions{shard="zone\"1"} 1"#,
            r#"gameshard_queue_depth{shard="zone\"1"} 0"#,
            r#"gameshard_partition_lag_records{shard="zone\"1",partition="2"} 60"#,
            r#"gameshard_snapshot_age_seconds{shard="zone\"1",partition="2"} 2.5"#,
            r#"gameshard_uncommitted_records{shard="zone\"1",partition="2"} 10"#,
            r#"gameshard_records_since_snapshot{shard="zone\"1",partition="2"} 40"#,
            r#"gameshard_latency_target_seconds{shard="zone\"1"} 0.0019"#,
            r#"gameshard_updates_within_target_total{shard="zone\"1"} 0"#,
            r#"gameshard_event_latency_seconds_bucket{shard="zone\"1",le="0.002"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("partition=\"1\""), "unowned partitions are not reported");
    }
}
