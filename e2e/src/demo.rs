//! `gameshard-demo`: local mode's autoscaler at work on this machine.
//!
//! A real Kafka broker on loopback, local mode (the operator's topics, assignment,
//! handoffs and autoscaler, driving `gameshard-dataplane` processes) for a GameShard
//! file, and a load generator running a scenario (calm, a raid, calm again; or a
//! steady load). It shows once a second the events per second, the p99 against the
//! target, the replicas, the partition map, the handoffs in flight and the
//! autoscaler's decisions; at the end it sums up what scaled when and what the p99
//! did in each phase, and checks every update against the SPEC model of everything
//! sent.
//!
//! The p99 figures are the data planes' own: deltas of the
//! `gameshard_event_latency_seconds` histogram (record timestamp to update handed to
//! the producer) summed over the processes, as the autoscaler reads them. The load
//! generator stamps each record with the time it was due, so a backlog shows.

pub mod check;
pub mod display;
pub mod monitor;
pub mod scenario;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use gameshard_control::{Message, ShardLog};
use gameshard_crds::GameShard;
use gameshard_operator::cpu_limit::CpuLimits;
use gameshard_operator::local::{self, Local, Scale, Status};
use gameshard_operator::signals::Histogram;
use gameshard_operator::topics::RdKafka;
use kube::ResourceExt;
use serde::Serialize;

use crate::harness::kafka;
use crate::workload::{self, Workload};
use monitor::{Decided, Sample};
use scenario::{Phase, Progress};

/// The example GameShard the demo runs by default (`examples/demo.yaml`).
pub const EXAMPLE: &str = include_str!("../../examples/demo.yaml");

/// How long the pipeline may take to catch up after the warm-up or the load.
const DRAIN: Duration = Duration::from_secs(90);
/// The lead-in: load rising to the first phase's rate before it, not measured, so
/// that the autoscaler's samples that cover the warm-up (a spawn for every player,
/// sent at once) end before the first phase begins, and the first phase starts at its
/// rate on a pipeline already carrying it rather than on an idle one.
const LEAD_IN: Duration = Duration::from_secs(6);
/// Seconds in a row under the target that count as the p99 back under it after the
/// raid.
const RECOVERED: usize = 5;
/// The longest the broker is warmed before local mode starts ([`kafka::warm_up`]).
const BROKER_WARM_UP: Duration = Duration::from_secs(45);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The GameShard file's text; it is copied to `work_dir/gameshard.yaml`, the file
    /// to edit while the demo runs.
    pub shard: String,
    /// Input partitions (the file's `spec.partitions` is set to it).
    pub partitions: u32,
    /// Players in the world.
    pub players: u32,
    /// Events per input record.
    pub events_per_record: u32,
    /// The load's phases.
    pub phases: Vec<Phase>,
    /// The `gameshard-dataplane` binary.
    pub dataplane: PathBuf,
    /// Extra data-plane arguments.
    pub dataplane_args: Vec<String>,
    /// Replicas to start with (through local mode's `Scale`), instead of the file's.
    pub start_replicas: Option<i32>,
    /// Folder of the copied file, the logs and the data planes' logs.
    pub work_dir: PathBuf,
    /// Check every update against the model at the end.
    pub check: bool,
    /// Cores each data-plane process may use, enforced with a cgroup CPU quota as a
    /// pod's `limits.cpu` is on a node; unlimited when `None`.
    pub pod_cpu: Option<f64>,
}

/// A phase's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseSummary {
    /// Its name.
    pub name: String,
    /// Events per second offered.
    pub rate: f64,
    /// Seconds since the first phase began, at its start and end.
    pub start_s: f64,
    /// See `start_s`.
    pub end_s: f64,
    /// The p99 over the whole phase (histogram deltas of every process), ms.
    pub p99_ms: Option<f64>,
    /// The largest one-second p99 in it, ms.
    pub max_p99_ms_1s: Option<f64>,
    /// Replicas at its end.
    pub replicas_at_end: i32,
}

/// What the demo measured; `--json` prints it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Events produced, warm-up included.
    pub events: u64,
    /// Steps up the autoscaler took.
    pub scale_ups: usize,
    /// Steps down.
    pub scale_downs: usize,
    /// Breaches the autoscaler held because the pods kept up with their records (the
    /// time was spent before them), each counted once, when it began.
    pub breaches_held: usize,
    /// Every scale decision: seconds since the first phase began, reason, note.
    pub decisions: Vec<(f64, String, String)>,
    /// Most replicas asked for.
    pub max_replicas: i32,
    /// Replicas at the end.
    pub final_replicas: i32,
    /// Partition moves begun on the control topic.
    pub handoffs: usize,
    /// Most moves in flight at once, from the control topic's assignments.
    pub max_handoffs_in_flight: usize,
    /// The p99 target, ms.
    pub target_p99_ms: f64,
    /// The p99 of the first phase, ms.
    pub p99_ms_calm: Option<f64>,
    /// The p99 of the phase with the highest rate, ms.
    pub p99_ms_peak: Option<f64>,
    /// The p99 of the last phase, ms.
    pub p99_ms_after: Option<f64>,
    /// How the p99 figures were measured.
    pub p99_source: &'static str,
    /// From the start of the breach of the target that the first step up ended, to that
    /// step, in seconds: the breach begins with a second whose p99 is over the target
    /// and goes on through dips under it shorter than the autoscaler's interval.
    pub first_decision_after_breach_s: Option<f64>,
    /// From the raid's end to the one-second p99 back under the target for
    /// [`RECOVERED`] seconds in a row (or the rest of the run), in seconds; 0 when it
    /// was not above it at the raid's end.
    pub p99_recovery_s: Option<f64>,
    /// The largest one-second p99 after that recovery, ms: a step down's handoffs
    /// show here.
    pub max_p99_ms_1s_after_recovery: Option<f64>,
    /// What `p99_recovery_s` is timed from.
    pub p99_recovery_from: &'static str,
    /// Each phase.
    pub phases: Vec<PhaseSummary>,
    /// Updates read back and checked.
    pub updates: u64,
    /// Updates whose state is not the model's after their source record.
    pub wrong_updates: u64,
    /// Whether the final state equals the model's exactly (`None`: not checked).
    pub final_state_exact: Option<bool>,
    /// The first difference the check found.
    pub check_problem: Option<String>,
    /// When local mode first served every partition with ready pods, seconds since
    /// the first phase began (negative: before it).
    pub served_s: f64,
    /// The GameShard file that was watched.
    pub file: String,
    /// Seconds the broker was warmed before local mode started, and whether its hop
    /// was fast by then ([`kafka::warm_up`]).
    pub broker_warm_up_s: f64,
    /// See `broker_warm_up_s`.
    pub broker_warm: bool,
    /// Seconds the run took, from the broker's start to the check's end.
    pub wall_s: f64,
    /// Cores each data-plane process was limited to, if it was.
    pub pod_cpu: Option<f64>,
}

/// A sample's `t` at `now`: seconds since the first phase began. Before it, whose start
/// is not known yet, the lead-in counts up to 0, and the warm-up's backlog before the
/// lead-in shows as the lead-in's start.
fn clock(now: Instant, lead_in: Option<Instant>, first_phase: Option<Instant>) -> f64 {
    if let Some(at) = first_phase {
        return now.saturating_duration_since(at).as_secs_f64();
    }
    let into = lead_in.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
    into.min(LEAD_IN).as_secs_f64() - LEAD_IN.as_secs_f64()
}

/// The two scenarios.
pub fn spike(
    calm: Duration,
    raid: Duration,
    after: Duration,
    calm_rate: f64,
    raid_rate: f64,
) -> Vec<Phase> {
    vec![
        Phase { name: "calm", rate: calm_rate, duration: calm, ramp: false },
        Phase { name: "raid", rate: raid_rate, duration: raid, ramp: false },
        Phase { name: "after", rate: calm_rate, duration: after, ramp: false },
    ]
}

/// A constant load.
pub fn steady(duration: Duration, rate: f64) -> Vec<Phase> {
    vec![Phase { name: "steady", rate, duration, ramp: false }]
}

/// Runs the demo on the broker at `bootstrap`; `show` gets each second's sample and
/// the latest decisions, for a display.
pub fn run(
    options: &Options,
    bootstrap: &str,
    mut show: impl FnMut(&Sample, &[Decided], &Status),
) -> anyhow::Result<Summary> {
    let began = Instant::now();
    std::fs::create_dir_all(&options.work_dir)?;
    let file = options.work_dir.join("gameshard.yaml");
    let text = with_partitions(&options.shard, options.partitions);
    std::fs::write(&file, &text)?;
    // A file that is not a GameShard is said at once, not after the warm-up.
    let shard = local::read(&file, Some(bootstrap)).map_err(anyhow::Error::msg)?;
    let warm = kafka::warm_up(bootstrap, options.partitions as i32, BROKER_WARM_UP)?;
    let input = shard.spec.kafka.input_topic.clone();
    let output = shard.spec.kafka.output_topic.clone();
    let control = shard.control_topic();
    let partitions = options.partitions as i32;
    kafka::create_topics(bootstrap, &[(&input, partitions)])?;

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let status: Arc<Mutex<Status>> = Arc::default();
    let scale: Arc<Scale> = Arc::default();
    if let Some(n) = options.start_replicas {
        scale.set(n);
    }
    let cpu_limits = options
        .pod_cpu
        .map(|cores| CpuLimits::new(cores).map(Arc::new))
        .transpose()
        .map_err(|e| anyhow::anyhow!("pod CPU limit: {e}"))?;
    let local = Local::new(
        local::Options {
            file: file.clone(),
            dataplane: options.dataplane.clone(),
            bootstrap: Some(bootstrap.to_owned()),
            logs: options.work_dir.join("pods"),
            extra_args: options.dataplane_args.clone(),
            cpu_limits,
        },
        RdKafka::default(),
        Arc::clone(&status),
        Arc::clone(&scale),
    );
    let (stop_local, stopped) = tokio::sync::watch::channel(false);
    let local_task = runtime.spawn(local.run(stopped));

    let result = drive(options, bootstrap, &shard, &status, &mut show);
    let _ = stop_local.send(true);
    let stopped =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(60), local_task).await });
    match stopped {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("local mode failed: {e:#}"),
        Ok(Err(e)) => bail!("local mode panicked: {e}"),
        Err(_) => bail!("the data planes did not stop within 60 s"),
    }
    let mut summary = result?;
    summary.file = file.display().to_string();
    summary.broker_warm_up_s = round1(warm.elapsed.as_secs_f64());
    summary.broker_warm = warm.warm;

    let (handoffs, max_in_flight) = handoffs(bootstrap, &control, &shard.name_any())?;
    summary.handoffs = handoffs;
    summary.max_handoffs_in_flight = max_in_flight;
    if options.check {
        // The two topics are read back at once, each by a consumer of its own.
        let (sent, updates) = std::thread::scope(|s| {
            let sent = s.spawn(|| kafka::read_all(bootstrap, &input, partitions));
            let updates = kafka::read_all(bootstrap, &output, partitions);
            (sent.join(), updates)
        });
        let sent = sent.map_err(|_| anyhow::anyhow!("reading the input back panicked"))??;
        let updates = updates?;
        let checked = check::check(&sent, &updates)?;
        summary.updates = checked.updates;
        summary.wrong_updates = checked.wrong_updates;
        summary.final_state_exact = Some(checked.final_state_exact && checked.wrong_updates == 0);
        summary.check_problem = checked.first_problem;
    }
    summary.wall_s = began.elapsed().as_secs_f64();
    Ok(summary)
}

/// Waits for the shard to be served, runs the load while sampling, and waits for the
/// pipeline to catch up.
fn drive(
    options: &Options,
    bootstrap: &str,
    shard: &GameShard,
    status: &Arc<Mutex<Status>>,
    show: &mut impl FnMut(&Sample, &[Decided], &Status),
) -> anyhow::Result<Summary> {
    let partitions = options.partitions;
    served(partitions, status)?;
    let served = Instant::now();

    let config = workload::Config {
        players: options.players.max(partitions),
        partitions,
        events_per_record: options.events_per_record,
        records: 4096,
        items: options.players.max(partitions) * 4,
        seed: 7,
        ..workload::Config::default()
    };
    let mut workload = Workload::generate(&config);
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (progress, stop) = (Arc::clone(&progress), Arc::clone(&stop));
        let status = Arc::clone(status);
        let lead_in =
            Phase { name: "lead-in", rate: options.phases[0].rate, duration: LEAD_IN, ramp: true };
        let phases: Vec<Phase> =
            std::iter::once(lead_in).chain(options.phases.iter().cloned()).collect();
        let (brokers, topic) = (bootstrap.to_owned(), shard.spec.kafka.input_topic.clone());
        std::thread::Builder::new().name("demo-load".into()).spawn(move || {
            let settle = || {
                // The warm-up's backlog is not part of any phase: the lead-in begins
                // once it is processed.
                let deadline = Instant::now() + DRAIN;
                while !caught_up(&brokers, &topic, partitions, &status) && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
            };
            scenario::produce(&mut workload, &brokers, &topic, &phases, settle, &progress, &stop)
        })?
    };

    let since = SystemTime::now();
    let mut scraper = monitor::Scraper::default();
    let mut samples: Vec<Sample> = Vec::new();
    // When each sample was taken: the ones before the first phase get their `t` once it
    // has begun.
    let mut taken: Vec<Instant> = Vec::new();
    let mut per_phase: BTreeMap<usize, Histogram> = BTreeMap::new();
    let mut next = Instant::now() + Duration::from_secs(1);
    let mut offered_before = 0;
    let mut drained_at: Option<Instant> = None;
    let (mut started, mut wall_origin) = (Instant::now(), SystemTime::now());
    loop {
        next = monitor::tick(next);
        let now = Instant::now();
        let (processed, histogram) = scraper.scrape(&monitor::ports(status));
        let mut sample = monitor::look(status);
        // Phase 0 of the producer is the lead-in.
        let begun = progress.phase.load(Relaxed).saturating_sub(1);
        let (lead_in, origin) = {
            let starts = progress.started.lock().unwrap_or_else(PoisonError::into_inner);
            (starts.first().copied(), starts.get(1).copied())
        };
        if let Some(first) = origin {
            (started, wall_origin) = first;
        }
        sample.t = clock(now, lead_in.map(|s| s.0), origin.map(|s| s.0));
        let phase = (1..=options.phases.len()).contains(&begun).then(|| begun - 1);
        sample.phase = phase.map(|i| options.phases[i].name);
        let offered = progress.events.load(Relaxed);
        if progress.warmed_up.load(Relaxed) {
            sample.offered = (offered - offered_before) as f64;
        }
        offered_before = offered;
        sample.processed = processed;
        sample.p99_ms = histogram.quantile(0.99).map(|s| s * 1000.0);
        if let Some(i) = phase {
            per_phase.entry(i).or_default().add(&histogram);
        }
        let decided = if origin.is_some() {
            monitor::decisions(status, since, wall_origin)
        } else {
            Vec::new()
        };
        {
            let s = status.lock().unwrap_or_else(PoisonError::into_inner).clone();
            show(&sample, &decided, &s);
        }
        samples.push(sample);
        taken.push(now);
        if producer.is_finished() {
            // The load is done: wait until every partition's records are processed.
            let at = *drained_at.get_or_insert_with(Instant::now);
            if caught_up(bootstrap, &shard.spec.kafka.input_topic, partitions, status)
                || at.elapsed() > DRAIN
            {
                break;
            }
        }
    }
    let events = producer.join().map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
    for (sample, at) in samples.iter_mut().zip(&taken).filter(|(_, at)| **at < started) {
        sample.t = -started.duration_since(*at).as_secs_f64();
    }
    let decided = monitor::decisions(status, since, wall_origin);
    let mut summary = summarize(options, shard, events, &samples, &per_phase, &decided);
    summary.served_s = -round1(started.saturating_duration_since(served).as_secs_f64());
    Ok(summary)
}

/// Waits until every partition is assigned to ready pods and none is moving.
fn served(partitions: u32, status: &Arc<Mutex<Status>>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let sample = monitor::look(status);
        let served = sample.owners.len() == partitions as usize
            && sample.in_flight.is_empty()
            && sample.pods.iter().all(|(_, ready)| *ready)
            && !sample.pods.is_empty();
        if served {
            return Ok(());
        }
        if Instant::now() > deadline {
            let s = status.lock().unwrap_or_else(PoisonError::into_inner).clone();
            bail!(
                "local mode did not serve the shard within 90 s: problem {:?}, file {:?}, pods {:?}",
                s.problem,
                s.file_error,
                s.pods
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether every input partition is processed up to its end by some process.
fn caught_up(bootstrap: &str, topic: &str, partitions: u32, status: &Arc<Mutex<Status>>) -> bool {
    let Ok(ends) = kafka::high_watermarks(bootstrap, topic, partitions as i32) else {
        return false;
    };
    let mut processed = vec![-1i64; partitions as usize];
    for (_, port) in monitor::ports(status) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let Ok((200, body)) = crate::harness::dataplane::get(addr, "/status") else { continue };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
        for p in json["partitions"].as_array().into_iter().flatten() {
            if let (Some(i), Some(o)) = (p["partition"].as_u64(), p["processed"].as_i64())
                && let Some(slot) = processed.get_mut(i as usize)
            {
                *slot = (*slot).max(o);
            }
        }
    }
    processed.iter().zip(&ends).all(|(p, e)| p >= e)
}

/// Counts the steps and the held breaches among the autoscaler's notices, and lists the
/// steps and recommendations.
fn count(summary: &mut Summary, decided: &[Decided]) {
    for d in decided {
        match d.reason.as_str() {
            "ScaledUp" => summary.scale_ups += 1,
            "ScaledDown" => summary.scale_downs += 1,
            "PodsNotLoaded" => summary.breaches_held += 1,
            _ => {}
        }
        if d.reason.starts_with("Scaled") || d.reason.starts_with("Recommend") {
            summary.decisions.push((round1(d.t), d.reason.clone(), d.note.clone()));
        }
    }
}

fn summarize(
    options: &Options,
    shard: &GameShard,
    events: u64,
    samples: &[Sample],
    per_phase: &BTreeMap<usize, Histogram>,
    decided: &[Decided],
) -> Summary {
    let target = shard.spec.latency.p99_target_ms;
    let mut summary = Summary {
        events,
        target_p99_ms: target,
        p99_source: "data planes' gameshard_event_latency_seconds histogram deltas, summed over the processes (record timestamp, the time the record was due, to update handed to the producer)",
        p99_recovery_from: "the raid's end",
        pod_cpu: options.pod_cpu,
        ..Summary::default()
    };
    let mut start = 0.0;
    for (i, phase) in options.phases.iter().enumerate() {
        let end = start + phase.duration.as_secs_f64();
        let within = || {
            samples
                .iter()
                .filter(|s| s.phase == Some(phase.name) && s.t > start && s.t <= end + 1.0)
        };
        summary.phases.push(PhaseSummary {
            name: phase.name.to_owned(),
            rate: phase.rate,
            start_s: start,
            end_s: end,
            p99_ms: per_phase.get(&i).and_then(|h| h.quantile(0.99)).map(|s| s * 1000.0),
            max_p99_ms_1s: within().filter_map(|s| s.p99_ms).reduce(f64::max),
            replicas_at_end: within().next_back().map_or(0, |s| s.replicas),
        });
        start = end;
    }
    let p99 = |i: usize| summary.phases.get(i).and_then(|p| p.p99_ms);
    summary.p99_ms_calm = p99(0);
    let peak = options
        .phases
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.rate.total_cmp(&b.1.rate))
        .map_or(0, |(i, _)| i);
    summary.p99_ms_peak = p99(peak);
    summary.p99_ms_after = p99(options.phases.len().saturating_sub(1));
    count(&mut summary, decided);
    summary.max_replicas = samples.iter().map(|s| s.replicas).max().unwrap_or(0);
    summary.final_replicas = samples.last().map_or(0, |s| s.replicas);
    // The breach that led to the first step up.
    if let Some(up) = decided.iter().find(|d| d.reason == "ScaledUp") {
        let interval = shard.spec.autoscaling.interval_seconds.max(1) as usize;
        summary.first_decision_after_breach_s =
            breach_start(samples, up.t, target, interval).map(|b| round1(up.t - b));
    }
    if options.phases.len() > 1 {
        let raid_end: f64 = options.phases[..=peak].iter().map(|p| p.duration.as_secs_f64()).sum();
        (summary.p99_recovery_s, summary.max_p99_ms_1s_after_recovery) =
            recovery(samples, raid_end, target);
    }
    summary
}

/// When the breach that a step up at `at` ended began: going back from the step, the
/// start of the earliest second over the target before `interval` seconds in a row
/// under it. The autoscaler reads its p99 over its interval, so a shorter dip does not
/// end a breach for it.
fn breach_start(samples: &[Sample], at: f64, target: f64, interval: usize) -> Option<f64> {
    let mut start = None;
    let mut under = 0;
    for s in samples.iter().rev().filter(|s| s.t <= at) {
        if s.p99_ms.is_some_and(|p| p > target) {
            start = Some(s.t - 1.0);
            under = 0;
        } else {
            under += 1;
            if under >= interval {
                break;
            }
        }
    }
    start
}

/// From `raid_end` to the one-second p99 back under `target` for [`RECOVERED`]
/// seconds in a row, and the largest one-second p99 after that. A second without an
/// update counts as under the target only when no load was offered in it: otherwise the
/// shard is stalled, not recovered.
fn recovery(samples: &[Sample], raid_end: f64, target: f64) -> (Option<f64>, Option<f64>) {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t > raid_end).collect();
    let under = |s: &&Sample| match s.p99_ms {
        Some(p) => p <= target,
        None => s.offered <= 0.0,
    };
    let back = after.windows(RECOVERED).position(|w| w.iter().all(under));
    let recovered = match back {
        Some(0) => Some(0.0),
        // The end of the last second above it.
        Some(i) => Some(round1((after[i - 1].t - raid_end).max(0.0))),
        // No second after the raid, or above the target at the last one.
        None => None,
    };
    let worst = back.and_then(|i| after[i..].iter().filter_map(|s| s.p99_ms).reduce(f64::max));
    (recovered, worst)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The partition moves begun on the control topic, and the most in flight at once:
/// each assignment is folded in order, and its moves not yet acknowledged counted.
fn handoffs(bootstrap: &str, topic: &str, shard: &str) -> anyhow::Result<(usize, usize)> {
    let records = kafka::read_all(bootstrap, topic, 1).context("reading the control topic")?;
    let mut log = ShardLog::default();
    let mut moves = BTreeSet::new();
    let mut most = 0;
    for r in records {
        let Ok(Some(message)) = Message::decode(&r.key, &r.value) else { continue };
        if !log.apply(shard, message) {
            continue;
        }
        if let Some(a) = &log.assignment {
            let open: Vec<_> = a.moves.iter().filter(|m| !log.completed(m)).collect();
            most = most.max(open.len());
            moves.extend(a.moves.iter().map(|m| (m.partition, m.epoch, m.to.clone())));
        }
    }
    Ok((moves.len(), most))
}

/// The file's text with `spec.partitions` set to `partitions` (added when absent), and
/// comments kept, since it is the file people edit.
fn with_partitions(text: &str, partitions: u32) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len() + 32);
    let mut set = false;
    for line in text.lines() {
        if line.starts_with("  partitions:") {
            let _ = writeln!(out, "  partitions: {partitions}");
            set = true;
        } else {
            out.push_str(line);
            out.push('\n');
            if line == "spec:" && !text.contains("\n  partitions:") {
                let _ = writeln!(out, "  partitions: {partitions}");
                set = true;
            }
        }
    }
    debug_assert!(set, "a GameShard file has a spec");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_counts_up_through_the_lead_in_to_the_first_phase() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Before the lead-in (the warm-up's backlog): its start.
        assert_eq!(clock(at(500), None, None), -6.0);
        assert_eq!(clock(at(1_500), Some(at(1_000)), None), -5.5);
        // A lead-in that runs over its 6 s before the first phase is seen stays at 0.
        assert_eq!(clock(at(7_500), Some(at(1_000)), None), 0.0);
        assert_eq!(clock(at(8_250), Some(at(1_000)), Some(at(7_750))), 0.5);
    }

    #[test]
    fn steps_and_held_breaches_are_counted_and_only_steps_listed() {
        let notice = |t: f64, reason: &str| Decided {
            t,
            reason: reason.to_owned(),
            note: format!("{reason} at {t}"),
        };
        let decided = [
            notice(3.0, "PodsNotLoaded"),
            notice(9.5, "MetricsMissing"),
            notice(20.04, "ScaledUp"),
            notice(31.0, "PodsNotLoaded"),
            notice(56.8, "ScaledDown"),
        ];
        let mut summary = Summary::default();
        count(&mut summary, &decided);
        assert_eq!((summary.scale_ups, summary.scale_downs, summary.breaches_held), (1, 1, 2));
        let listed: Vec<(f64, &str)> =
            summary.decisions.iter().map(|(t, r, _)| (*t, r.as_str())).collect();
        assert_eq!(listed, [(20.0, "ScaledUp"), (56.8, "ScaledDown")]);
    }

    #[test]
    fn the_steady_example_is_the_demo_with_the_autoscalers_default_timing_and_load_check() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let demo = local::read(&dir.join("demo.yaml"), None).expect("examples/demo.yaml");
        let steady =
            local::read(&dir.join("demo-steady.yaml"), None).expect("examples/demo-steady.yaml");
        let defaults: gameshard_crds::AutoscalingSpec =
            serde_json::from_str("{}").expect("every autoscaling field has a default");
        let mut expected = demo.spec.clone();
        let a = &mut expected.autoscaling;
        a.scale_up_window_seconds = defaults.scale_up_window_seconds;
        a.scale_down_window_seconds = defaults.scale_down_window_seconds;
        a.interval_seconds = defaults.interval_seconds;
        a.cooldown_seconds = defaults.cooldown_seconds;
        a.max_step = defaults.max_step;
        a.scale_up_only_when_loaded = defaults.scale_up_only_when_loaded;
        assert_eq!(steady.spec, expected, "the demo's spec with the default timing and load check");
    }

    fn seconds(p99s: &[(f64, f64)]) -> Vec<Sample> {
        p99s.iter().map(|&(t, p99)| Sample { t, p99_ms: Some(p99), ..Sample::default() }).collect()
    }

    #[test]
    fn the_p99_is_back_once_it_stays_under_the_target_for_five_seconds() {
        // A blip under the target at 36.8 s, above again, then under from 38.8 s; a
        // step down's handoff shows at 46.8 s.
        let samples = seconds(&[
            (34.8, 300.0),
            (35.8, 150.0),
            (36.8, 20.0),
            (37.8, 90.0),
            (38.8, 7.0),
            (39.8, 6.0),
            (40.8, 5.0),
            (41.8, 8.0),
            (42.8, 6.0),
            (46.8, 79.0),
            (47.8, 6.0),
        ]);
        let (back, worst) = recovery(&samples, 35.0, 50.0);
        assert_eq!(back, Some(2.8), "the end of the last second above it, 37.8 s");
        assert_eq!(worst, Some(79.0));
    }

    #[test]
    fn a_breach_begins_at_its_first_second_over_the_target_and_a_dip_shorter_than_the_interval_does_not_end_it()
     {
        // The seconds of a run before its step up at 22.8 s: one second under the target
        // (21.9 s) inside the breach, two before it.
        let samples = seconds(&[
            (16.9, 49.0),
            (17.9, 29.5),
            (18.9, 99.0),
            (19.9, 96.4),
            (20.9, 92.5),
            (21.9, 29.8),
            (22.9, 73.3),
        ]);
        assert_eq!(breach_start(&samples, 22.8, 50.0, 2), Some(17.9));
        // With a one-second interval the dip ends it, and no second over the target is
        // left before the step.
        assert_eq!(breach_start(&samples, 22.8, 50.0, 1), None);
        assert_eq!(breach_start(&samples, 21.0, 50.0, 1), Some(17.9));
        assert_eq!(breach_start(&samples[..2], 22.8, 50.0, 2), None);
    }

    #[test]
    fn a_p99_under_the_target_from_the_raids_end_is_back_at_once_and_one_above_at_the_end_never_is()
    {
        let under = [(35.8, 9.0), (36.8, 8.0), (37.8, 7.0), (38.8, 9.5), (39.8, 8.0)];
        assert_eq!(recovery(&seconds(&under), 35.0, 50.0), (Some(0.0), Some(9.5)));
        let mut above_last = under.to_vec();
        above_last.push((40.8, 80.0));
        // Back at once; the later second over the target is the worst after that.
        assert_eq!(recovery(&seconds(&above_last), 35.0, 50.0), (Some(0.0), Some(80.0)));
        assert_eq!(recovery(&seconds(&[(35.8, 9.0), (36.8, 80.0)]), 35.0, 50.0).0, None);
        assert_eq!(recovery(&[], 35.0, 50.0), (None, None));
    }

    #[test]
    fn fewer_seconds_under_the_target_than_a_recovery_needs_at_the_end_of_the_run_are_not_one() {
        let samples = seconds(&[(35.8, 300.0), (36.8, 9.0), (37.8, 8.0), (38.8, 7.0), (39.8, 6.0)]);
        assert_eq!(recovery(&samples, 35.0, 50.0), (None, None));
    }

    #[test]
    fn a_second_without_updates_is_under_the_target_only_when_no_load_was_offered() {
        let mut stalled = seconds(&[(35.8, 300.0)]);
        stalled.extend((1..=5).map(|i| Sample {
            t: 35.8 + f64::from(i),
            offered: 1_000.0,
            ..Sample::default()
        }));
        assert_eq!(recovery(&stalled, 35.0, 50.0).0, None, "offered load, no update: stalled");
        let mut idle = seconds(&[(35.8, 300.0)]);
        idle.extend((1..=5).map(|i| Sample { t: 35.8 + f64::from(i), ..Sample::default() }));
        assert_eq!(recovery(&idle, 35.0, 50.0).0, Some(0.8), "no load offered: nothing late");
    }
}
