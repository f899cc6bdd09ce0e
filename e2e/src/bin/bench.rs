//! `gameshard-bench`: measures the data plane and prints what it measured.
//!
//! `gameshard-bench pipeline` plays a synthetic workload through the real pipeline
//! threads from memory (no broker): first as fast as the pipeline takes it, for
//! throughput and allocations, then at a fixed offered rate, for latency. In the same
//! run it measures the baseline (`gameshard-bench baseline`, in a child process so that
//! neither disturbs the other's memory or threads) and reports the ratio.
//!
//! `gameshard-bench handoff` moves a partition of 100,000 players back and forth between
//! two running data planes on an Apache Kafka broker under constant load, and measures
//! its pause and the other partitions' tail latency with and without moves.
//!
//! `gameshard-bench instructions` counts the instructions the engine spends per event,
//! in all three stages and in each one, under callgrind: a figure that, unlike time,
//! does not move with the machine's load. It runs `gameshard-bench stage` under
//! `valgrind --tool=callgrind` once per stage.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use gameshard_dataplane::affinity;
use gameshard_dataplane::metrics::Metrics;
use gameshard_dataplane::pipeline::{self, Config, SnapshotPolicy};
use gameshard_e2e::alloc::{self, Counting};
use gameshard_e2e::harness::zone;
use gameshard_e2e::scenario::{Run, scenario};
use gameshard_e2e::stages::{self, Stage};
use gameshard_e2e::workload::{self, Workload};
use gameshard_e2e::{baseline, endtoend, handoffbench, jitter};
use gameshard_engine::World;
use gameshard_engine::spec::{SpecGame, SpecWorld};
use serde_json::json;

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Parser)]
#[command(name = "gameshard-bench", version, about = "Measures the gameshard data plane")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The pipeline from memory, against the baseline in the same run.
    Pipeline(PipelineArgs),
    /// The baseline alone (the pipeline benchmark runs it as a child process).
    Baseline(BaselineArgs),
    /// Instructions per event, overall and per engine stage, under callgrind.
    Instructions(InstructionsArgs),
    /// One engine stage over a fixed workload in one thread (what `instructions` runs
    /// under callgrind).
    Stage(StageArgs),
    /// The data plane on an Apache Kafka broker on loopback, with each output framing,
    /// against a passthrough and the Kafka Streams peer on the same backlog.
    E2e(E2eArgs),
    /// Time to restore a partition from its snapshot.
    Restore(RestoreArgs),
    /// A partition moved between two running data planes on an Apache Kafka broker: its
    /// pause, and the other partitions' tail latency with and without moves.
    Handoff(HandoffArgs),
}

#[derive(Args)]
struct HandoffArgs {
    /// Players in each partition, the moving one included.
    #[arg(long, default_value_t = 100_000)]
    players: u32,
    /// Input partitions (at least 3).
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Events per record.
    #[arg(long, default_value_t = 64)]
    events_per_record: u32,
    /// Offered load over all partitions, in events per second.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Moves of the moving partition, alternately to the other data plane and back.
    #[arg(long, default_value_t = 10)]
    moves: u32,
    /// Seconds of each of the two windows without moves (before and after the moves).
    #[arg(long, default_value_t = 20.0)]
    quiet_secs: f64,
    /// Seconds between one move's end and the next one's start.
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
    /// The data planes' output framing.
    #[arg(long, value_enum, default_value_t = OutputFraming::Entity)]
    framing: OutputFraming,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFraming {
    Entity,
    Batch,
}

#[derive(Args)]
struct E2eArgs {
    /// Players in the world.
    #[arg(long, default_value_t = 100_000)]
    players: u32,
    /// Input partitions.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Events per record.
    #[arg(long, default_value_t = 64)]
    events_per_record: u32,
    /// Events for the maximum-rate runs (after the warm-up): enough that the data
    /// plane's run is not mostly its start and its last commit.
    #[arg(long, default_value_t = 4_000_000)]
    events: u64,
    /// Seconds of load at half the maximum rate, for latency.
    #[arg(long, default_value_t = 20.0)]
    latency_secs: f64,
    /// Offered rate of the latency run, in events per second (default: half the
    /// measured maximum with the batch framing).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RestoreArgs {
    /// Players in the partition.
    #[arg(long, default_value_t = 100_000)]
    players: u32,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct WorkloadArgs {
    /// Players in the world.
    #[arg(long, default_value_t = 100_000)]
    players: u32,
    /// Input partitions.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Events per record.
    #[arg(long, default_value_t = 64)]
    events_per_record: u32,
    /// Distinct records in one pass of the workload.
    #[arg(long, default_value_t = 4096)]
    records: usize,
    /// Distinct items per partition.
    #[arg(long, default_value_t = 1_000_000)]
    items: u32,
    /// Record framing.
    #[arg(long, value_enum, default_value_t = Framing::Ndjson)]
    framing: Framing,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum StageName {
    Pipeline,
    Parse,
    Apply,
    Encode,
}

impl From<StageName> for Stage {
    fn from(stage: StageName) -> Self {
        match stage {
            StageName::Pipeline => Stage::Pipeline,
            StageName::Parse => Stage::Parse,
            StageName::Apply => Stage::Apply,
            StageName::Encode => Stage::Encode,
        }
    }
}

#[derive(Args)]
struct InstructionsArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// The valgrind executable.
    #[arg(long, default_value = "valgrind")]
    valgrind: String,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StageArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// The stage whose second pass is counted.
    #[arg(long, value_enum)]
    stage: StageName,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Framing {
    Ndjson,
    Array,
}

impl WorkloadArgs {
    fn config(&self) -> workload::Config {
        workload::Config {
            players: self.players,
            partitions: self.partitions,
            events_per_record: self.events_per_record,
            records: self.records,
            items: self.items,
            framing: match self.framing {
                Framing::Ndjson => workload::Framing::Ndjson,
                Framing::Array => workload::Framing::Array,
            },
            seed: self.seed,
            ..workload::Config::default()
        }
    }

    fn to_args(&self) -> Vec<String> {
        let framing = match self.framing {
            Framing::Ndjson => "ndjson",
            Framing::Array => "array",
        };
        [
            ("--players", self.players.to_string()),
            ("--partitions", self.partitions.to_string()),
            ("--events-per-record", self.events_per_record.to_string()),
            ("--records", self.records.to_string()),
            ("--items", self.items.to_string()),
            ("--framing", framing.to_owned()),
            ("--seed", self.seed.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect()
    }
}

#[derive(Args)]
struct PipelineArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Events for the throughput run.
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Offered rate of the latency run, in events per second.
    #[arg(long, default_value_t = 1_000_000.0)]
    rate: f64,
    /// Events for the latency run.
    #[arg(long, default_value_t = 5_000_000)]
    latency_events: u64,
    /// Events for the baseline; 0 skips it.
    #[arg(long, default_value_t = 2_000_000)]
    baseline_events: u64,
    /// Core for the state-machine thread (default: the first allowed CPU, as the data
    /// plane's `--pin-core` default).
    #[arg(long)]
    pin_core: Option<usize>,
    /// Seconds spent measuring platform jitter on every CPU before the runs; 0 skips it.
    #[arg(long, default_value_t = 2.0)]
    jitter_secs: f64,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BaselineArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Events to measure after the warm-up.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Tokio worker threads (default: one per allowed CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Bench::Pipeline(args) => bench_pipeline(&args),
        Bench::Baseline(args) => bench_baseline(&args),
        Bench::Instructions(args) => bench_instructions(&args),
        Bench::Stage(args) => {
            let counted = stages::run(args.stage.into(), &args.workload.config());
            let report = json!({
                "bench": "stage",
                "stage": Stage::from(args.stage).name(),
                "records": counted.records,
                "bytes": counted.bytes,
                "events": counted.events,
                "updates": counted.updates,
                "encoded_bytes": counted.encoded_bytes,
            });
            print_report(&report, args.json);
            Ok(())
        }
        Bench::E2e(args) => {
            let options = endtoend::Options {
                players: args.players,
                partitions: args.partitions,
                events_per_record: args.events_per_record,
                events: args.events,
                latency_secs: args.latency_secs,
                latency_rate: args.latency_rate,
            };
            print_report(&endtoend::run(&options)?, args.json);
            Ok(())
        }
        Bench::Restore(args) => {
            print_report(&endtoend::restore(args.players)?, args.json);
            Ok(())
        }
        Bench::Handoff(args) => {
            let options = handoffbench::Options {
                players: args.players,
                partitions: args.partitions,
                events_per_record: args.events_per_record,
                rate: args.rate,
                moves: args.moves,
                quiet_secs: args.quiet_secs,
                settle_secs: args.settle_secs,
                framing: match args.framing {
                    OutputFraming::Entity => zone::Framing::Entity,
                    OutputFraming::Batch => zone::Framing::Batch,
                },
            };
            print_report(&handoffbench::run(&options)?, args.json);
            Ok(())
        }
    }
}

fn print_report(report: &serde_json::Value, json: bool) {
    if json {
        println!("{report}");
        return;
    }
    if let Some(fields) = report.as_object() {
        for (k, v) in fields {
            println!("{k:<28} {v}");
        }
    }
}

fn bench_pipeline(args: &PipelineArgs) -> anyhow::Result<()> {
    let config = args.workload.config();
    let workload = Workload::generate(&config);
    let allowed = affinity::allowed_cpus()?;
    // Placed as the data plane places itself by default.
    let core = affinity::choose_core(args.pin_core).context("--pin-core")?;
    let jitter = if args.jitter_secs > 0.0 {
        jitter::measure(&allowed, Duration::from_secs_f64(args.jitter_secs))
    } else {
        Vec::new()
    };
    let epoch = Instant::now();
    let runs = vec![
        Run { events: args.events, rate: None, latency: false },
        Run { events: args.latency_events, rate: Some(args.rate), latency: true },
    ];
    let partitions = config.partitions;
    let worlds = (0..partitions).map(|p| (p, SpecWorld::new())).collect();
    let (source, sink) = scenario(workload, worlds, runs, epoch, alloc::allocations);
    let metrics = Arc::new(Metrics::new("bench", partitions, SpecWorld::REJECT_REASONS));
    let pipeline_config =
        Config { epoch, snapshots: SnapshotPolicy::NEVER, ..Config::default() }.pinned(core)?;
    alloc::count(true);
    let running = pipeline::spawn(&SpecGame, source, sink, pipeline_config, &metrics)?;
    let (source, sink) = running.join()?;
    alloc::count(false);
    let max_rss_mb = max_rss_mb()?;

    let [throughput, latency] = source.reports() else { bail!("the scenario has two runs") };
    let events_per_sec = throughput.events as f64 / throughput.elapsed.as_secs_f64();
    let allocs_per_event = throughput.allocations as f64 / throughput.events as f64;
    let offered = latency.events as f64 / latency.elapsed.as_secs_f64();
    let us = |q: f64| sink.latencies.value_at_quantile(q) as f64 / 1000.0;
    if sink.latencies.len() != sink.latency_updates {
        bail!(
            "{} latency samples for {} updates in the latency run",
            sink.latencies.len(),
            sink.latency_updates
        );
    }

    let baseline = if args.baseline_events > 0 {
        Some(run_baseline_process(&args.workload, args.baseline_events)?)
    } else {
        None
    };
    let baseline_events_per_sec = baseline.as_ref().and_then(|b| b["events_per_sec"].as_f64());
    let speedup = baseline_events_per_sec.map(|b| events_per_sec / b);
    let report = json!({
        "bench": "pipeline",
        "events": throughput.events,
        "events_per_sec": events_per_sec.round(),
        "baseline_events_per_sec": baseline_events_per_sec.map(f64::round),
        "speedup": speedup.map(|s| (s * 100.0).round() / 100.0),
        "p50_us": us(0.5),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "latency_rate": args.rate,
        "latency_achieved_rate": offered.round(),
        "latency_updates": sink.latencies.len(),
        "allocs_per_event": allocs_per_event,
        "max_rss_mb": max_rss_mb,
        "baseline_max_rss_mb": baseline.as_ref().map(|b| b["max_rss_mb"].clone()),
        "players": config.players,
        "partitions": partitions,
        "events_per_record": config.events_per_record,
        "state_core": core,
        "cpus": allowed.len(),
        "jitter": jitter,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "throughput      {events_per_sec:>12.0} events/s over {} events",
            throughput.events
        );
        if let (Some(b), Some(s)) = (baseline_events_per_sec, speedup) {
            println!("baseline        {b:>12.0} events/s  (speedup {s:.2}x)");
        }
        println!(
            "latency @{:.0}/s  p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  ({} updates)",
            args.rate,
            us(0.5),
            us(0.99),
            us(0.999),
            sink.latencies.len()
        );
        println!("allocations     {allocs_per_event:.6} per event");
        println!("max RSS         {max_rss_mb:.1} MB");
        for j in &jitter {
            println!(
                "jitter cpu {}    {} stalls > 500 µs in {:.0} s, longest {:.0} µs",
                j.cpu, j.stalls_over_500us, j.seconds, j.max_stall_us
            );
        }
    }
    Ok(())
}

fn run_baseline_process(workload: &WorkloadArgs, events: u64) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe().context("locating gameshard-bench")?;
    let output = Command::new(exe)
        .arg("baseline")
        .args(workload.to_args())
        .args(["--events", &events.to_string(), "--json"])
        .output()
        .context("running the baseline")?;
    if !output.status.success() {
        bail!("the baseline failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).context("reading the baseline's report")
}

fn bench_baseline(args: &BaselineArgs) -> anyhow::Result<()> {
    let mut workload = Workload::generate(&args.workload.config());
    let workers = match args.workers {
        Some(n) => n,
        None => affinity::allowed_cpus()?.len(),
    };
    let options = baseline::Options { events: args.events, workers, keep_updates: false };
    let report = baseline::run(&mut workload, options)?;
    let events_per_sec = report.events as f64 / report.elapsed.as_secs_f64();
    let max_rss_mb = max_rss_mb()?;
    if args.json {
        println!(
            "{}",
            json!({
                "bench": "baseline",
                "events": report.events,
                "updates": report.updates,
                "events_per_sec": events_per_sec.round(),
                "workers": workers,
                "max_rss_mb": max_rss_mb,
            })
        );
    } else {
        println!(
            "baseline {events_per_sec:.0} events/s over {} events ({workers} workers)",
            report.events
        );
    }
    Ok(())
}

fn bench_instructions(args: &InstructionsArgs) -> anyhow::Result<()> {
    let version = Command::new(&args.valgrind)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .with_context(|| {
            format!(
                "cannot run {} (--valgrind): install valgrind (Debian package `valgrind`; \
                 scripts/instructions installs it)",
                args.valgrind
            )
        })?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let exe = std::env::current_exe().context("locating gameshard-bench")?;
    let dir = std::env::temp_dir().join(format!("gameshard-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut report = serde_json::Map::new();
    report.insert("bench".into(), "instructions".into());
    let mut instructions = serde_json::Map::new();
    let mut summary = Vec::new();
    for stage in Stage::ALL {
        let out_file = dir.join(format!("callgrind.out.{}", stage.name()));
        let output = Command::new(&args.valgrind)
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg("--collect-atstart=no")
            .arg(format!("--toggle-collect={}", stage.counted_function()))
            .arg(&exe)
            .args(["stage", "--stage", stage.name(), "--json"])
            .args(args.workload.to_args())
            .output()
            .with_context(|| format!("running the {} stage under callgrind", stage.name()))?;
        if !output.status.success() {
            bail!(
                "the {} stage failed under callgrind: {}",
                stage.name(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let counted: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("reading the stage's report")?;
        let total = callgrind_total(&out_file)?;
        let events = counted["events"].as_u64().filter(|&e| e > 0).context("no event counted")?;
        if total == 0 {
            bail!("callgrind counted nothing in {}", stage.counted_function());
        }
        let per_event = (total as f64 / events as f64 * 10.0).round() / 10.0;
        report.insert(format!("{}_instructions_per_event", stage.name()), per_event.into());
        if stage == Stage::Pipeline {
            for field in ["records", "bytes", "events", "updates", "encoded_bytes"] {
                report.insert(field.into(), counted[field].clone());
            }
        }
        if stage == Stage::Encode
            && let Some(updates) = counted["updates"].as_u64().filter(|&u| u > 0)
        {
            let per_update = (total as f64 / updates as f64 * 10.0).round() / 10.0;
            report.insert("encode_instructions_per_update".into(), per_update.into());
        }
        instructions.insert(stage.name().into(), total.into());
        summary.push((stage.name(), per_event, total));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let config = args.workload.config();
    report.insert("instructions".into(), instructions.into());
    report.insert("players".into(), config.players.into());
    report.insert("partitions".into(), config.partitions.into());
    report.insert("events_per_record".into(), config.events_per_record.into());
    report.insert("valgrind".into(), version.into());
    if args.json {
        println!("{}", serde_json::Value::Object(report));
    } else {
        for (stage, per_event, total) in summary {
            println!("{stage:<9} {per_event:>8.1} instructions per event ({total} in all)");
        }
    }
    Ok(())
}

/// The instructions a callgrind output file counted.
fn callgrind_total(path: &std::path::Path) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
    };
    line("totals:")
        .or_else(|| line("summary:"))
        .with_context(|| format!("no totals in {}", path.display()))
}

/// Peak resident set size of this process, in MB.
fn max_rss_mb() -> anyhow::Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok((kb / 1024.0 * 10.0).round() / 10.0)
}
