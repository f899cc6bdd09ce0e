//! `gameshard-bench handoff`: the pause of a partition that moves between running data
//! planes, and what its moves do to the tail latency of the partitions that stay.
//!
//! Two `gameshard-dataplane` processes follow one control topic on an Apache Kafka
//! broker on loopback, each pinned to a core of its own. Every partition holds the same
//! number of players, and the load generator offers a constant rate spread evenly over
//! them. A consumer of the output topic measures each update's latency from its source
//! record's timestamp (as `gameshard-bench e2e` does), split by partition and by phase:
//! a window without moves, the moves of partition 0 back and forth between the two
//! processes (each written to the control topic with the `gameshard-control` messages,
//! as the operator writes them, and waited for until the new owner's acquisition and
//! its first update), then a second window without moves, whose difference from the
//! first is the machine's noise. At the end the load stops and the output topic is
//! checked against the reference model of everything produced: nothing lost, nothing
//! applied twice.
//!
//! A move's pause runs from the assignment that asks the old owner to release the
//! partition to the first update of the partition from the new owner (an update whose
//! source offset is at or past the release's `next_offset`, which only the new owner
//! processes), as a consumer of the output topic sees it. It splits at the release
//! (the old owner's clock in its release message), the acquisition (the new owner's)
//! and the first update.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gameshard_control::{Assignment, Message as Control, Move, PodPartitions, ShardLog};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::endtoend;
use crate::harness::broker::{self, Broker};
use crate::harness::dataplane::Dataplane;
use crate::harness::kafka::{self, Outgoing};
use crate::harness::zone::{DeadLetters, EVENTS, Framing, UPDATES, Zone};
use crate::loadgen::{self, Load};
use crate::workload::{self, Workload};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Players in each partition, the moving one included.
    pub players: u32,
    /// Input partitions (at least 3, so that each data plane keeps one of its own while
    /// the moving one is away).
    pub partitions: u32,
    /// Events per record.
    pub events_per_record: u32,
    /// Offered load over all partitions, in events per second.
    pub rate: f64,
    /// Moves of the moving partition (alternately to the other data plane and back).
    pub moves: u32,
    /// Seconds of each of the two windows without moves.
    pub quiet_secs: f64,
    /// Seconds between one move's end and the next one's start.
    pub settle_secs: f64,
    /// The data planes' output framing.
    pub framing: Framing,
}

/// The partition that moves.
const MOVING: u32 = 0;
/// The two data planes' pod ids.
const PODS: [&str; 2] = ["handoff-a", "handoff-b"];
/// The control topic's suffix.
const CONTROL: &str = "control";
/// Longest wait for a move to complete.
const MOVE_TIMEOUT: Duration = Duration::from_mins(1);

/// The phase an update arrives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Setting up or winding down: not measured.
    Idle = 0,
    /// The first window without moves.
    Quiet1 = 1,
    /// The moves.
    Moving = 2,
    /// The second window without moves.
    Quiet2 = 3,
}

/// One update of the moving partition as the output consumer saw it.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Arrival at the consumer, Unix µs.
    arrival_us: i64,
    /// The update's source offset.
    src_offset: i64,
    /// Source record timestamp to arrival, µs.
    latency_us: i64,
}

/// What the output consumer measured.
struct Measured {
    /// The other partitions' latencies (µs) per measured phase: quiet 1, moving, quiet 2.
    others: [Histogram<u64>; 3],
    /// Every update of the moving partition, in arrival order.
    moving: Vec<Sample>,
}

/// One move as the control topic and the new owner saw it.
#[derive(Clone, Debug)]
struct MoveRecord {
    from: &'static str,
    to: &'static str,
    epoch: u64,
    /// When the assignment asking for the release was written, Unix µs.
    requested_us: i64,
    /// The old owner's release time, Unix ms.
    released_ms: i64,
    /// The new owner's acquisition time, Unix ms.
    acquired_ms: i64,
    /// Where the new owner resumed.
    next_offset: i64,
    /// The new owner's `gameshard_handoff_duration_seconds` for this move.
    handoff_metric_s: Option<f64>,
}

/// Runs the handoff benchmark and returns its report.
pub fn run(o: &Options) -> anyhow::Result<Value> {
    ensure!(
        o.partitions >= 3,
        "--partitions must be at least 3, so that each data plane keeps a partition of \
         its own while partition {MOVING} is away"
    );
    ensure!(o.rate > 0.0, "--rate must be positive");
    let Some(broker) = Broker::start()? else {
        bail!("Apache Kafka is required: {}", broker::KAFKA_INSTALL);
    };
    let zone = Zone::on(&broker, "handoff", o.partitions as i32)?.with_framing(o.framing);
    let b = zone.bootstrap();
    kafka::create_topics(&b, &[(&zone.topic(CONTROL), 1)])?;
    let config = workload::Config {
        players: o.players * o.partitions,
        partitions: o.partitions,
        events_per_record: o.events_per_record,
        ..workload::Config::default()
    };
    let mut workload = Workload::generate(&config);
    let warmup =
        Load { brokers: b.clone(), topic: zone.topic(EVENTS), rate: None, events: 0, warmup: true };
    loadgen::produce(&mut workload, &warmup, 1, &AtomicBool::new(false))?;

    // Partition 0 and the first half of the others on a, the rest on b.
    let half = o.partitions.div_ceil(2);
    let mut shard = Shard {
        owners: [(0..half).collect(), (half..o.partitions).collect()],
        epoch: 1,
        pods: Vec::new(),
    };
    shard.publish(&zone, o.partitions, None)?;
    let cpus = gameshard_dataplane::affinity::allowed_cpus()?;
    for (i, pod) in PODS.iter().enumerate() {
        shard.pods.push(start_pod(&zone, pod, cpus[i % cpus.len()])?);
    }
    shard.wait_committed(&zone, Duration::from_mins(10)).context("the warm-up")?;

    // The output consumer from here on, then the constant load.
    let phase = Arc::new(AtomicU8::new(Phase::Idle as u8));
    let stop_reader = Arc::new(AtomicBool::new(false));
    let moving_offset = Arc::new(AtomicI64::new(-1));
    let reader = {
        let (b, topic, partitions) = (b.clone(), zone.topic(UPDATES), o.partitions as i32);
        let (phase, stop, seen) =
            (Arc::clone(&phase), Arc::clone(&stop_reader), Arc::clone(&moving_offset));
        std::thread::spawn(move || read_updates(&b, &topic, partitions, &phase, &stop, &seen))
    };
    std::thread::sleep(Duration::from_millis(500));
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = Load { rate: Some(o.rate), events: u64::MAX, warmup: false, ..warmup };
    let loader = {
        let stop = Arc::clone(&stop_load);
        std::thread::spawn(move || loadgen::produce(&mut workload, &load, 1, &stop))
    };
    let moves = shard.phases(o, &zone, &phase, &moving_offset);
    stop_load.store(true, Relaxed);
    let offered = loader.join().map_err(|_| anyhow::anyhow!("the load generator panicked"))?;
    let (moves, offered) = (moves?, offered?);

    // Everything processed and on the brokers, then the state against the model.
    shard.wait_committed(&zone, Duration::from_mins(5))?;
    std::thread::sleep(Duration::from_millis(500));
    stop_reader.store(true, Relaxed);
    let measured = reader.join().map_err(|_| anyhow::anyhow!("the output consumer panicked"))??;
    let state = zone.check(DeadLetters::ExactlyOnce);
    let restores = restores(&shard.pods);
    for dp in &mut shard.pods {
        let status = dp.terminate(Duration::from_mins(1))?;
        ensure!(status.success(), "a data plane exited with {status} on SIGTERM:\n{}", dp.report());
    }
    Ok(report(o, &moves, &measured, &restores, offered.events, state.as_ref().err()))
}

/// The two data planes and the assignment they follow.
struct Shard {
    /// The partitions of a and of b.
    owners: [Vec<u32>; 2],
    /// The latest assignment's epoch.
    epoch: u64,
    /// a and b.
    pods: Vec<Dataplane>,
}

impl Shard {
    /// Writes the assignment at the current epoch, with the move in flight, and waits
    /// for its acknowledgement.
    fn publish(&self, zone: &Zone, partitions: u32, m: Option<Move>) -> anyhow::Result<()> {
        let a = Control::Assignment(Assignment {
            shard: zone.name().into(),
            epoch: self.epoch,
            partitions,
            pods: PODS
                .iter()
                .zip(&self.owners)
                .map(|(pod, ps)| PodPartitions { pod: (*pod).into(), partitions: ps.clone() })
                .collect(),
            moves: m.into_iter().collect(),
        });
        let (key, value) = (a.key(), a.value());
        let w = kafka::Writer::new(&zone.bootstrap())?;
        w.send(
            &zone.topic(CONTROL),
            &[Outgoing { key: Some(key.as_bytes()), ..Outgoing::value(0, &value) }],
        )?;
        w.flush()
    }

    /// Waits until each data plane has committed its partitions up to the input's end.
    fn wait_committed(&mut self, zone: &Zone, timeout: Duration) -> anyhow::Result<()> {
        let ends = zone.ends()?;
        for (dp, mine) in self.pods.iter_mut().zip(&self.owners) {
            dp.wait_ready(timeout)?;
            let targets: Vec<(u32, i64)> =
                ends.iter().copied().filter(|(p, _)| mine.contains(p)).collect();
            dp.wait_committed(&targets, timeout)?;
        }
        Ok(())
    }

    /// The measured phases under load: a window without moves, the moves, another
    /// window without moves.
    fn phases(
        &mut self,
        o: &Options,
        zone: &Zone,
        phase: &AtomicU8,
        moving_offset: &AtomicI64,
    ) -> anyhow::Result<Vec<MoveRecord>> {
        // The load settles before anything is measured.
        std::thread::sleep(Duration::from_secs(3));
        let quiet = Duration::from_secs_f64(o.quiet_secs);
        phase.store(Phase::Quiet1 as u8, Relaxed);
        std::thread::sleep(quiet);
        phase.store(Phase::Moving as u8, Relaxed);
        let mut follower = Follower::new(&zone.bootstrap(), &zone.topic(CONTROL), zone.name())?;
        let mut moves = Vec::new();
        for i in 0..o.moves {
            let (from, to) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
            self.epoch += 1;
            self.owners[from].retain(|&p| p != MOVING);
            self.owners[to].push(MOVING);
            self.owners[to].sort_unstable();
            let epoch = self.epoch;
            let m = Move { partition: MOVING, from: PODS[from].into(), to: PODS[to].into(), epoch };
            let before = handoff_metric(&self.pods[to]);
            let requested_us = kafka::now_us();
            self.publish(zone, o.partitions, Some(m.clone()))?;
            let (released_ms, acquired_ms, next_offset) =
                follower.wait_completed(&m, &mut self.pods, MOVE_TIMEOUT)?;
            wait_until(MOVE_TIMEOUT, "the new owner's first update", || {
                moving_offset.load(Relaxed) >= next_offset
            })?;
            let handoff_metric_s = wait_metric(&self.pods[to], before);
            moves.push(MoveRecord {
                from: PODS[from],
                to: PODS[to],
                epoch,
                requested_us,
                released_ms,
                acquired_ms,
                next_offset,
                handoff_metric_s,
            });
            std::thread::sleep(Duration::from_secs_f64(o.settle_secs));
        }
        phase.store(Phase::Quiet2 as u8, Relaxed);
        std::thread::sleep(quiet);
        phase.store(Phase::Idle as u8, Relaxed);
        Ok(moves)
    }
}

/// A data plane following the control topic as pod `pod`, pinned to `core`.
fn start_pod(zone: &Zone, pod: &str, core: usize) -> anyhow::Result<Dataplane> {
    let mut args = zone.args(&["--pin-core", &core.to_string()]);
    let at = args.iter().position(|a| a == "--partitions").context("the standalone flag")?;
    args.splice(
        at..at + 2,
        ["--control-topic".to_owned(), zone.topic(CONTROL), "--pod-id".to_owned(), pod.to_owned()],
    );
    zone.start_dataplane(&args)
}

/// Follows the control topic, folding it into the shard's log as the data planes do.
struct Follower {
    consumer: BaseConsumer,
    shard: String,
    log: ShardLog,
}

impl Follower {
    fn new(brokers: &str, topic: &str, shard: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = kafka::config(brokers)
            .set("group.id", "handoff-bench-control")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        Ok(Self { consumer, shard: shard.to_owned(), log: ShardLog::default() })
    }

    /// Waits until the new owner acquired `m`; returns the release time, the
    /// acquisition time (Unix ms) and the offset the new owner resumed at.
    fn wait_completed(
        &mut self,
        m: &Move,
        pods: &mut [Dataplane],
        timeout: Duration,
    ) -> anyhow::Result<(i64, i64, i64)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let (Some(release), true) = (self.log.release_of(m), self.log.completed(m)) {
                let acquired = &self.log.acquired[&m.partition];
                ensure!(
                    acquired.next_offset == release.next_offset,
                    "the new owner resumed at {} where the old one stopped at {}",
                    acquired.next_offset,
                    release.next_offset
                );
                return Ok((release.released_ms, acquired.acquired_ms, release.next_offset));
            }
            for dp in pods.iter_mut() {
                if let Some(status) = dp.exited()? {
                    bail!("a data plane exited ({status}) during a move:\n{}", dp.report());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "move {m:?} did not complete within {timeout:?}; control log: {:?}",
                    self.log
                );
            }
            if let Some(message) = self.consumer.poll(Duration::from_millis(10)) {
                let r = message?;
                if let Ok(Some(c)) =
                    Control::decode(r.key().unwrap_or_default(), r.payload().unwrap_or_default())
                {
                    self.log.apply(&self.shard, c);
                }
            }
        }
    }
}

/// Polls `done` every 10 ms until it holds, for at most `timeout`.
fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what} did not come within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The sum and count of `gameshard_handoff_duration_seconds` on `dp`.
fn handoff_metric(dp: &Dataplane) -> (f64, f64) {
    let Ok((_, page)) = dp.get("/metrics") else { return (0.0, 0.0) };
    let sample = |name: &str| {
        page.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (
        sample("gameshard_handoff_duration_seconds_sum"),
        sample("gameshard_handoff_duration_seconds_count"),
    )
}

/// The handoff duration the new owner measured for one move, once its count grew past
/// `before` (within a few seconds: the publisher observes it with the first record).
fn wait_metric(dp: &Dataplane, before: (f64, f64)) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = handoff_metric(dp);
        if now.1 > before.1 {
            return Some((now.0 - before.0) / (now.1 - before.1));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The restores of the moving partition from a release snapshot, in both data planes'
/// logs: (bytes, ms).
fn restores(pods: &[Dataplane]) -> Vec<(f64, f64)> {
    let partition = format!("partition={MOVING}");
    let mut out = Vec::new();
    for dp in pods {
        for line in dp.log_text().lines() {
            if !line.contains("partition restored from its snapshot") {
                continue;
            }
            let field = |name: &str| -> Option<f64> {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
            };
            let ours = line.split_whitespace().any(|w| w == partition);
            if ours
                && field("snapshot_epoch").is_some_and(|e| e >= 2.0)
                && let (Some(bytes), Some(ms)) = (field("bytes"), field("ms"))
            {
                out.push((bytes, ms));
            }
        }
    }
    out
}

/// Reads the output topic from its end now until `stop`, recording every update's
/// latency by partition and phase; keeps `seen` at the greatest source offset of the
/// moving partition's updates.
fn read_updates(
    brokers: &str,
    topic: &str,
    partitions: i32,
    phase: &AtomicU8,
    stop: &AtomicBool,
    seen: &AtomicI64,
) -> anyhow::Result<Measured> {
    let args = endtoend::dataplane_settings(brokers, "handoff-latency")?;
    let consumer: BaseConsumer = gameshard_dataplane::kafka::setup::consumer(&args)
        .set("statistics.interval.ms", "0")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    let histogram = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
    let mut measured =
        Measured { others: [histogram()?, histogram()?, histogram()?], moving: Vec::new() };
    while !stop.load(Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = message?;
        let now_us = kafka::now_us();
        let payload = m.payload().unwrap_or_default();
        if m.partition() == MOVING as i32 {
            for line in payload.split(|&b| b == b'\n') {
                let (Some(src_offset), Some(ts)) =
                    (integer_field(line, b"\"src_offset\":"), integer_field(line, b"\"src_ts\":"))
                else {
                    continue;
                };
                seen.fetch_max(src_offset, Relaxed);
                let latency_us = now_us.saturating_sub(ts * 1000).max(1);
                measured.moving.push(Sample { arrival_us: now_us, src_offset, latency_us });
            }
            continue;
        }
        let slot = match phase.load(Relaxed) {
            p if p == Phase::Quiet1 as u8 => 0,
            p if p == Phase::Moving as u8 => 1,
            p if p == Phase::Quiet2 as u8 => 2,
            _ => continue,
        };
        for ts in endtoend::src_timestamps(payload) {
            measured.others[slot].saturating_record(now_us.saturating_sub(ts * 1000).max(1) as u64);
        }
    }
    Ok(measured)
}

/// The integer after the first `field` (a JSON key with its quotes and colon) in `line`.
fn integer_field(line: &[u8], field: &[u8]) -> Option<i64> {
    let at = line.windows(field.len()).position(|w| w == field)? + field.len();
    let rest = &line[at..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// One move's figures in milliseconds, from the consumer's samples of the moving
/// partition.
#[derive(Clone, Copy, Debug)]
struct MoveTimes {
    /// Release request to the new owner's first update at the consumer.
    pause: f64,
    /// The longest silence of the partition's update stream around the move.
    gap: f64,
    /// The greatest latency of the partition's updates in the second after it resumed.
    max_latency: f64,
    /// Release request to the old owner's release.
    release: f64,
    /// Release to the new owner's acquisition.
    acquire: f64,
    /// Acquisition to the first update at the consumer.
    resume: f64,
}

fn pause(m: &MoveRecord, samples: &[Sample]) -> Option<MoveTimes> {
    let first = samples
        .iter()
        .position(|s| s.arrival_us >= m.requested_us && s.src_offset >= m.next_offset)?;
    let first_us = samples[first].arrival_us;
    let before = samples[..first].iter().map(|s| s.arrival_us).max();
    let gap_us = before.map_or(first_us - m.requested_us, |b| first_us - b.min(first_us));
    let max_latency_us = samples[first..]
        .iter()
        .take_while(|s| s.arrival_us <= first_us + 1_000_000)
        .map(|s| s.latency_us)
        .max()
        .unwrap_or(0);
    let ms = |us: i64| us as f64 / 1000.0;
    Some(MoveTimes {
        pause: ms(first_us - m.requested_us),
        gap: ms(gap_us),
        max_latency: ms(max_latency_us),
        release: ms(m.released_ms * 1000 - m.requested_us),
        acquire: (m.acquired_ms - m.released_ms) as f64,
        resume: ms(first_us - m.acquired_ms * 1000),
    })
}

/// The nearest-rank quantile `q` of `values`.
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

fn report(
    o: &Options,
    moves: &[MoveRecord],
    measured: &Measured,
    restores: &[(f64, f64)],
    offered_events: u64,
    state_error: Option<&anyhow::Error>,
) -> Value {
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let pauses: Vec<MoveTimes> = moves.iter().filter_map(|m| pause(m, &measured.moving)).collect();
    let of = |f: fn(&MoveTimes) -> f64| pauses.iter().map(f).collect::<Vec<f64>>();
    let q = |values: &[f64], p: f64| quantile(values, p).map(round);
    let pause_ms = of(|p| p.pause);
    let metric_ms: Vec<f64> =
        moves.iter().filter_map(|m| m.handoff_metric_s).map(|s| s * 1000.0).collect();
    let ms = |h: &Histogram<u64>, p: f64| round(h.value_at_quantile(p) as f64 / 1000.0);
    let [quiet1, moving, quiet2] = &measured.others;
    let mut quiet = quiet1.clone();
    let _ = quiet.add(quiet2);
    let noise_p99 = (ms(quiet1, 0.99) - ms(quiet2, 0.99)).abs();
    let noise_p999 = (ms(quiet1, 0.999) - ms(quiet2, 0.999)).abs();
    let change_p999 = ms(moving, 0.999) - ms(&quiet, 0.999);
    let per_move: Vec<Value> = moves
        .iter()
        .zip(moves.iter().map(|m| pause(m, &measured.moving)))
        .map(|(m, p)| {
            json!({
                "epoch": m.epoch,
                "from": m.from,
                "to": m.to,
                "next_offset": m.next_offset,
                "pause_ms": p.map(|p| round(p.pause)),
                "gap_ms": p.map(|p| round(p.gap)),
                "max_latency_ms": p.map(|p| round(p.max_latency)),
                "release_ms": p.map(|p| round(p.release)),
                "acquire_ms": p.map(|p| round(p.acquire)),
                "resume_ms": p.map(|p| round(p.resume)),
                "handoff_metric_ms": m.handoff_metric_s.map(|s| round(s * 1000.0)),
            })
        })
        .collect();
    json!({
        "bench": "handoff",
        "broker": format!("Apache Kafka {} (KRaft, one node on loopback)", broker::kafka_version()),
        "kafka_version": broker::kafka_version(),
        "players": o.players,
        "partitions": o.partitions,
        "rate": o.rate,
        "events_per_record": o.events_per_record,
        "framing": o.framing.flag(),
        "moves": moves.len(),
        "moves_measured": pauses.len(),
        "pause_ms_p50": q(&pause_ms, 0.5),
        "pause_ms_p99": q(&pause_ms, 0.99),
        "pause_ms_max": q(&pause_ms, 1.0),
        "gap_ms_max": q(&of(|p| p.gap), 1.0),
        "moving_max_latency_ms": q(&of(|p| p.max_latency), 1.0),
        "release_ms_p50": q(&of(|p| p.release), 0.5),
        "acquire_ms_p50": q(&of(|p| p.acquire), 0.5),
        "resume_ms_p50": q(&of(|p| p.resume), 0.5),
        "handoff_metric_ms_p50": q(&metric_ms, 0.5),
        "handoff_metric_ms_max": q(&metric_ms, 1.0),
        "snapshot_bytes": quantile(&restores.iter().map(|r| r.0).collect::<Vec<_>>(), 1.0),
        "restore_ms_p50": q(&restores.iter().map(|r| r.1).collect::<Vec<_>>(), 0.5),
        "others_p99_ms_quiet": ms(&quiet, 0.99),
        "others_p999_ms_quiet": ms(&quiet, 0.999),
        "others_p99_ms_moving": ms(moving, 0.99),
        "others_p999_ms_moving": ms(moving, 0.999),
        "others_p99_ms_quiet1": ms(quiet1, 0.99),
        "others_p999_ms_quiet1": ms(quiet1, 0.999),
        "others_p99_ms_quiet2": ms(quiet2, 0.99),
        "others_p999_ms_quiet2": ms(quiet2, 0.999),
        "others_updates_quiet": quiet.len(),
        "others_updates_moving": moving.len(),
        "noise_p99_ms": round(noise_p99),
        "noise_p999_ms": round(noise_p999),
        "others_p999_change_ms": round(change_p999),
        "others_p999_within_noise": change_p999 <= noise_p999,
        "offered_events": offered_events,
        "state_exact": state_error.is_none(),
        "state_error": state_error.map(|e| format!("{e:#}")),
        "per_move": per_move,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(arrival_ms: i64, src_offset: i64) -> Sample {
        Sample { arrival_us: arrival_ms * 1000, src_offset, latency_us: 1000 }
    }

    #[test]
    fn a_pause_ends_at_the_first_update_from_past_the_release_offset() {
        let m = MoveRecord {
            from: PODS[0],
            to: PODS[1],
            epoch: 2,
            requested_us: 1_000_000,
            released_ms: 1_100,
            acquired_ms: 1_250,
            next_offset: 50,
            handoff_metric_s: None,
        };
        // The old owner's last updates, then silence, then the new owner.
        let samples = [sample(990, 48), sample(1_020, 49), sample(1_310, 50), sample(1_320, 51)];
        let p = pause(&m, &samples).expect("resumed");
        assert_eq!(p.pause, 310.0, "request to the first update at offset 50");
        assert_eq!(p.gap, 290.0, "the old owner's last update to the new owner's first");
        assert_eq!((p.release, p.acquire, p.resume), (100.0, 150.0, 60.0));
        assert!(pause(&m, &samples[..2]).is_none(), "no update from the new owner yet");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(5.0));
        assert_eq!(quantile(&v, 0.99), Some(10.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn integer_fields_are_read_from_an_update_line() {
        let line =
            br#"{"kind":"player","id":"p1","src_partition":0,"src_offset":1234,"src_ts":17}"#;
        assert_eq!(integer_field(line, b"\"src_offset\":"), Some(1234));
        assert_eq!(integer_field(line, b"\"src_ts\":"), Some(17));
        assert_eq!(integer_field(line, b"\"seq\":"), None);
    }
}
