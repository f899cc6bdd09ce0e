//! `gameshard-demo`: a real Kafka broker on loopback, local mode's autoscaler scaling
//! `gameshard-dataplane` processes for a GameShard file, and a scenario of load (calm,
//! a raid, calm again), shown live; then what scaled when, what the p99 did, and the
//! model check of every update.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use gameshard_e2e::demo::{self, Options, display};
use gameshard_e2e::harness::broker::Broker;

#[derive(Parser)]
#[command(name = "gameshard-demo", version, about = "gameshard's p99 autoscaler on this machine")]
struct Args {
    /// The scenario: `spike` (calm, raid, calm) or `steady` (one constant rate).
    #[arg(long, value_enum, default_value_t = Scenario::Spike)]
    scenario: Scenario,
    /// Seconds of calm before the raid.
    #[arg(long, default_value_t = 15)]
    calm_secs: u64,
    /// Seconds of raid.
    #[arg(long, default_value_t = 20)]
    raid_secs: u64,
    /// Seconds of calm after the raid.
    #[arg(long, default_value_t = 30)]
    after_secs: u64,
    /// Events per second while calm.
    #[arg(long, default_value_t = 4_000.0)]
    calm_rate: f64,
    /// Events per second during the raid.
    #[arg(long, default_value_t = 250_000.0)]
    raid_rate: f64,
    /// Seconds of the steady scenario.
    #[arg(long, default_value_t = 600)]
    steady_secs: u64,
    /// Events per second of the steady scenario.
    #[arg(long, default_value_t = 8_000.0)]
    steady_rate: f64,
    /// Players in the world.
    #[arg(long, default_value_t = 20_000)]
    players: u32,
    /// Input partitions.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Events per input record.
    #[arg(long, default_value_t = 4)]
    events_per_record: u32,
    /// The GameShard file to start from (default: the built-in examples/demo.yaml). It
    /// is copied; edit the copy the demo names while it runs.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// The gameshard-dataplane binary (default: next to this one).
    #[arg(long)]
    dataplane: Option<PathBuf>,
    /// Cores each data-plane process may use, enforced with a cgroup CPU quota as a
    /// pod's `limits.cpu` is on a node (default: unlimited).
    #[arg(long, value_name = "CORES")]
    pod_cpu: Option<f64>,
    /// Skip the model check at the end (a long steady run's updates take memory).
    #[arg(long)]
    no_check: bool,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    Spike,
    Steady,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shard = match &args.file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("-f: reading {}", path.display()))?,
        None => demo::EXAMPLE.to_owned(),
    };
    let dataplane = match args.dataplane.clone() {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("gameshard-dataplane"))
            .filter(|p| p.is_file())
            .context("--dataplane: no gameshard-dataplane next to this binary; build it (scripts/demo does)")?,
    };
    let phases = match args.scenario {
        Scenario::Spike => demo::spike(
            Duration::from_secs(args.calm_secs),
            Duration::from_secs(args.raid_secs),
            Duration::from_secs(args.after_secs),
            args.calm_rate,
            args.raid_rate,
        ),
        Scenario::Steady => demo::steady(Duration::from_secs(args.steady_secs), args.steady_rate),
    };
    let work_dir = std::env::temp_dir().join(format!("gameshard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    logs(&work_dir)?;
    let options = Options {
        shard,
        partitions: args.partitions,
        players: args.players,
        events_per_record: args.events_per_record,
        phases,
        dataplane,
        // The processes share the machine's cores with each other, the broker and the
        // load generator: a state machine that spins for its next batch takes CPU
        // they need, so it parks at once instead.
        dataplane_args: vec!["--spin-us".to_owned(), "0".to_owned()],
        start_replicas: None,
        work_dir: work_dir.clone(),
        check: !args.no_check,
        pod_cpu: args.pod_cpu,
    };
    eprintln!("starting Apache Kafka on loopback...");
    let Some(broker) = Broker::start()? else {
        bail!("Apache Kafka is not installed: run scripts/setup first");
    };
    eprintln!("warming up the broker: a JVM that just started answers slowly for seconds...");
    let file = work_dir.join("gameshard.yaml");
    println!(
        "GameShard file: {} (edit it while the demo runs: target, bounds, mode)",
        file.display()
    );
    println!("logs: {}", work_dir.display());
    let mut live = display::Live::new(std::io::stdout().is_terminal(), file.display().to_string());
    let summary = demo::run(&options, &broker.bootstrap(), |sample, decided, status| {
        live.show(sample, decided, status);
    })?;
    drop(broker);
    print!("{}", display::summary(&summary));
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    if summary.final_state_exact == Some(false) {
        bail!("the final state differs from the model");
    }
    Ok(())
}

/// Local mode's and the autoscaler's logs go to a file: the terminal shows the figures.
fn logs(dir: &std::path::Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(dir.join("demo.log"))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}
