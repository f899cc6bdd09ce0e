//! A workload played through the data-plane pipeline from memory, in runs separated by
//! drain barriers, with what each run measured: time, allocations and latencies.
//!
//! The source releases a run's records either as fast as the pipeline takes them or at a
//! fixed offered rate (open loop: record `i` is due at `start + i / rate` and is stamped
//! as arriving then, even when it is taken late, so queueing delay is measured rather
//! than hidden). After a run's last record it holds back until the sink has seen every
//! record published, so runs never overlap and each one starts from a drained pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use gameshard_dataplane::clock;
use gameshard_dataplane::sink::{Progress, Sink};
use gameshard_dataplane::source::{Acquisition, Polled, Record as SourceRecord, Source};
use gameshard_engine::RecordMeta;
use hdrhistogram::Histogram;

use crate::workload::Workload;

/// One run of a scenario.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Events to release (rounded up to whole records).
    pub events: u64,
    /// Offered rate in events per second; `None` releases as fast as taken.
    pub rate: Option<f64>,
    /// Whether the sink records per-update latencies during this run.
    pub latency: bool,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Events released.
    pub events: u64,
    /// Records released.
    pub records: u64,
    /// From the first record released to the last batch published.
    pub elapsed: Duration,
    /// Allocations over the same span.
    pub allocations: u64,
}

/// State shared by the source, the sink and the caller.
pub struct Gate {
    /// Next offset published, per partition.
    progress: Vec<AtomicI64>,
    /// Whether the run being released records latencies.
    recording: AtomicBool,
    /// Monotonic time (ns since the epoch) and allocation count at the last batch.
    last_batch_ns: AtomicU64,
    last_batch_allocations: AtomicU64,
    allocations: fn() -> u64,
}

impl Gate {
    fn drained(&self, ends: &[i64]) -> bool {
        ends.iter().zip(&self.progress).all(|(&end, p)| p.load(Relaxed) >= end)
    }
}

/// A source that hands the pipeline `worlds`, then plays `workload`'s warm-up and each
/// of `runs`, and the sink to pair it with. `allocations` reads the process's allocation counter (or returns 0
/// when there is none). Latencies are recorded into the sink's histogram.
pub fn scenario<W>(
    workload: Workload,
    worlds: Vec<(u32, W)>,
    runs: Vec<Run>,
    epoch: Instant,
    allocations: fn() -> u64,
) -> (ScenarioSource<W>, ScenarioSink) {
    let partitions = worlds.len() as u32;
    let gate = Arc::new(Gate {
        progress: (0..partitions).map(|_| AtomicI64::new(0)).collect(),
        recording: AtomicBool::new(false),
        last_batch_ns: AtomicU64::new(0),
        last_batch_allocations: AtomicU64::new(0),
        allocations,
    });
    let reports = runs.iter().map(|_| RunReport::default()).collect();
    let source = ScenarioSource {
        worlds,
        workload,
        warmup: Vec::new(),
        runs,
        reports,
        gate: Arc::clone(&gate),
        offsets: vec![0; partitions as usize],
        epoch,
        epoch_unix_ms: clock::unix_ms() - epoch.elapsed().as_millis() as i64,
        step: Step::Warmup { next: 0 },
        next: 0,
        pass: 1,
        start_ns: 0,
        start_allocations: 0,
        timer_slack_set: false,
    };
    let sink = ScenarioSink {
        gate,
        latencies: Histogram::new_with_bounds(1, 60_000_000_000, 3)
            .expect("valid histogram bounds"),
        pending: Vec::with_capacity(8192),
        updates: 0,
        dead_letters: 0,
        bytes: 0,
    };
    (source, sink)
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Warmup {
        next: usize,
    },
    /// Waiting for the pipeline to publish everything released so far, then `run`.
    Drain {
        run: usize,
    },
    Release {
        run: usize,
        released: u64,
    },
    Done,
}

/// The source side of a scenario.
pub struct ScenarioSource<W> {
    /// Worlds to hand the pipeline before the first record.
    worlds: Vec<(u32, W)>,
    workload: Workload,
    /// The warm-up record being released.
    warmup: Vec<u8>,
    runs: Vec<Run>,
    reports: Vec<RunReport>,
    gate: Arc<Gate>,
    offsets: Vec<i64>,
    epoch: Instant,
    epoch_unix_ms: i64,
    step: Step,
    /// The next record of the pass, and the pass.
    next: usize,
    pass: u64,
    start_ns: u64,
    start_allocations: u64,
    timer_slack_set: bool,
}

impl<W> ScenarioSource<W> {
    /// What each run measured; complete once the pipeline has stopped.
    pub fn reports(&self) -> &[RunReport] {
        &self.reports
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn emit(&mut self, partition: u32, arrival_ns: u64) -> RecordMeta {
        let offset = &mut self.offsets[partition as usize];
        let meta = RecordMeta {
            partition,
            offset: *offset,
            timestamp_ms: self.epoch_unix_ms + (arrival_ns / 1_000_000) as i64,
            arrival_ns,
        };
        *offset += 1;
        meta
    }

    /// Closes the report of run `run` once everything it released is published.
    fn finish(&mut self, run: usize) {
        let end_ns = self.gate.last_batch_ns.load(Relaxed);
        let report = &mut self.reports[run];
        report.elapsed = Duration::from_nanos(end_ns.saturating_sub(self.start_ns));
        report.allocations =
            self.gate.last_batch_allocations.load(Relaxed).saturating_sub(self.start_allocations);
    }
}

impl<W: Send + 'static> Source<W> for ScenarioSource<W> {
    fn poll(&mut self, wait: Duration) -> Polled<'_, W> {
        if let Some((partition, world)) = self.worlds.pop() {
            return Polled::Assign(Acquisition::new(partition, 0, world));
        }
        if !self.timer_slack_set {
            // Sleeps of the IO thread end when asked, not up to 50 µs later.
            self.timer_slack_set = true;
            let _ = nix::sys::prctl::set_timerslack(1);
        }
        loop {
            match self.step {
                Step::Warmup { next } => {
                    if next < self.workload.warmup_records() {
                        self.step = Step::Warmup { next: next + 1 };
                        let partition = self.workload.warmup_record(next, &mut self.warmup);
                        let meta = self.emit(partition, self.now_ns());
                        return Polled::Record(SourceRecord { meta, payload: &self.warmup });
                    }
                    self.step = Step::Drain { run: 0 };
                }
                Step::Drain { run } => {
                    if !self.gate.drained(&self.offsets) {
                        // Check often: the end of a run is timed by its last batch, not
                        // by this poll, but the next run should not wait long.
                        let deadline = Instant::now() + wait;
                        while !self.gate.drained(&self.offsets) {
                            if Instant::now() >= deadline {
                                return Polled::Idle;
                            }
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    }
                    if run > 0 {
                        self.finish(run - 1);
                    }
                    if run == self.runs.len() {
                        self.step = Step::Done;
                        continue;
                    }
                    self.gate.recording.store(self.runs[run].latency, Relaxed);
                    self.start_ns = self.now_ns();
                    self.start_allocations = (self.gate.allocations)();
                    self.step = Step::Release { run, released: 0 };
                }
                Step::Release { run, released } => {
                    let spec = self.runs[run];
                    if released >= spec.events {
                        self.step = Step::Drain { run: run + 1 };
                        continue;
                    }
                    let arrival_ns = match spec.rate {
                        None => self.now_ns(),
                        Some(rate) => {
                            let due = self.start_ns + (released as f64 * 1e9 / rate) as u64;
                            let now = self.now_ns();
                            if due > now {
                                let until = Duration::from_nanos(due - now);
                                if until > wait {
                                    std::thread::sleep(wait);
                                    return Polled::Idle;
                                }
                                wait_until(self.epoch, due);
                            }
                            due
                        }
                    };
                    let (next, pass) = (self.next, self.pass);
                    let events = u64::from(self.workload.records[next].events);
                    // Passes continue across runs, so every record released carries
                    // sequence numbers above those of its previous release.
                    (self.next, self.pass) = if next + 1 == self.workload.records.len() {
                        (0, pass + 1)
                    } else {
                        (next + 1, pass)
                    };
                    self.step = Step::Release { run, released: released + events };
                    let report = &mut self.reports[run];
                    report.events += events;
                    report.records += 1;
                    self.workload.records[next].set_pass(pass);
                    let partition = self.workload.records[next].partition;
                    let meta = self.emit(partition, arrival_ns);
                    return Polled::Record(SourceRecord {
                        meta,
                        payload: &self.workload.records[next].bytes,
                    });
                }
                Step::Done => return Polled::End,
            }
        }
    }
}

/// Waits until `epoch + due_ns`: sleeps while the deadline is far, then yields the CPU
/// until it passes, which is far more precise than a sleep and leaves the core to the
/// threads sharing it.
fn wait_until(epoch: Instant, due_ns: u64) {
    // More than a timer wake-up takes here (about 30 µs at the 1 ns timer slack the
    // source sets), less than a record interval at the default rate (64 µs).
    const SLEEP_SLACK_NS: u64 = 50_000;
    loop {
        let now = epoch.elapsed().as_nanos() as u64;
        if now >= due_ns {
            return;
        }
        if due_ns - now > SLEEP_SLACK_NS {
            std::thread::sleep(Duration::from_nanos(due_ns - now - SLEEP_SLACK_NS));
        } else {
            std::thread::yield_now();
        }
    }
}

/// The sink side of a scenario.
pub struct ScenarioSink {
    gate: Arc<Gate>,
    /// Arrival times of the current batch's updates, during a latency run.
    pending: Vec<u64>,
    /// Arrival to encoded update, in nanoseconds, over the latency runs.
    pub latencies: Histogram<u64>,
    /// Updates received.
    pub updates: u64,
    /// Dead letters received.
    pub dead_letters: u64,
    /// Bytes of keys, values and dead letters received.
    pub bytes: u64,
}

impl Sink for ScenarioSink {
    fn update(&mut self, src: &RecordMeta, key: &[u8], value: &[u8]) {
        self.updates += 1;
        self.bytes += (key.len() + value.len()) as u64;
        if self.gate.recording.load(Relaxed) && self.pending.len() < self.pending.capacity() {
            self.pending.push(src.arrival_ns);
        }
    }

    fn dead_letter(&mut self, _src: &RecordMeta, _reason: &'static str, payload: &[u8]) {
        self.dead_letters += 1;
        self.bytes += payload.len() as u64;
    }

    fn end_batch(&mut self, progress: &[Progress], now_ns: u64) {
        for &arrival in &self.pending {
            self.latencies.saturating_record(now_ns.saturating_sub(arrival));
        }
        self.pending.clear();
        for p in progress {
            if let Some(slot) = self.gate.progress.get(p.partition as usize) {
                slot.store(p.next_offset, Relaxed);
            }
        }
        self.gate.last_batch_allocations.store((self.gate.allocations)(), Relaxed);
        self.gate.last_batch_ns.store(now_ns, Relaxed);
    }
}
