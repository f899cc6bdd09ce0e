//! `gameshard-loadgen`: produces the specification's events to a topic at a fixed
//! offered rate (open loop), in records of many events, after a warm-up that spawns
//! every player.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use gameshard_e2e::harness::kafka;
use gameshard_e2e::loadgen::{self, Load};
use gameshard_e2e::workload::{self, Workload};
use rdkafka::consumer::{BaseConsumer, Consumer};

#[derive(Parser)]
#[command(name = "gameshard-loadgen", version, about = "Produces game events at a fixed rate")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "GAMESHARD_BROKERS")]
    brokers: String,
    /// Topic to produce to.
    #[arg(long)]
    topic: String,
    /// Events per second (default: as fast as the broker takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// Events to produce after the warm-up.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Players in the world.
    #[arg(long, default_value_t = 100_000)]
    players: u32,
    /// Events per record.
    #[arg(long, default_value_t = 64)]
    events_per_record: u32,
    /// Record framing.
    #[arg(long, value_enum, default_value_t = Framing::Ndjson)]
    framing: Framing,
    /// Skip the warm-up that spawns every player.
    #[arg(long)]
    no_warmup: bool,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Framing {
    Ndjson,
    Array,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let probe: BaseConsumer = kafka::config(&args.brokers).create()?;
    let metadata = probe
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .context("--brokers: fetching metadata")?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len() as u32)
        .filter(|&n| n > 0)
        .with_context(|| format!("--topic: {} does not exist", args.topic))?;
    let config = workload::Config {
        players: args.players.max(partitions),
        partitions,
        events_per_record: args.events_per_record,
        framing: match args.framing {
            Framing::Ndjson => workload::Framing::Ndjson,
            Framing::Array => workload::Framing::Array,
        },
        seed: args.seed,
        ..workload::Config::default()
    };
    let mut workload = Workload::generate(&config);
    let load = Load {
        brokers: args.brokers,
        topic: args.topic,
        rate: args.rate,
        events: args.events,
        warmup: !args.no_warmup,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let produced = loadgen::produce(&mut workload, &load, 1, &stop)?;
    let rate = (produced.events - if load.warmup { workload.warmup_events() } else { 0 }) as f64
        / produced.elapsed.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"records": produced.records, "events": produced.events, "seconds": produced.elapsed.as_secs_f64(), "events_per_sec": rate.round()})
    );
    Ok(())
}
