//! `gameshard-dataplane`: wires the command line, the Kafka clients, the admin server and
//! the pipeline together. Every decision lives in the library.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use gameshard_dataplane::admin::{Admin, Health};
use gameshard_dataplane::cli::{self, Args};
use gameshard_dataplane::kafka::ownership::{self, Controlled, Mode, Reporting};
use gameshard_dataplane::kafka::restore::Restorer;
use gameshard_dataplane::kafka::sink::{Clients, KafkaSink, Topics};
use gameshard_dataplane::kafka::source::KafkaSource;
use gameshard_dataplane::kafka::{ClientHealth, setup};
use gameshard_dataplane::metrics::Metrics;
use gameshard_dataplane::pipeline::{self, Config, SnapshotPolicy, SnapshotSizes};
use gameshard_dataplane::{affinity, clock};
use gameshard_engine::World;
use gameshard_engine::spec::{SpecGame, SpecWorld};

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args_os()) {
        Ok(args) => args,
        Err((text, 0)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err((line, code)) => {
            eprintln!("{line}");
            return ExitCode::from(code as u8);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only for people: collected logs get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

#[allow(clippy::too_many_lines)] // start-up wiring, read top to bottom
fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut args = args.clone();
    if let Some(dir) = &args.kafka_config_dir {
        let mut settings = cli::settings_dir(dir).map_err(anyhow::Error::msg)?;
        settings.extend(std::mem::take(&mut args.kafka));
        args.kafka = settings;
    }
    let args = &args;
    let core = affinity::choose_core(args.pin_core).map_err(|e| anyhow!("--pin-core: {e}"))?;
    let mode = match (&args.partitions, &args.control_topic, &args.pod_id) {
        (Some(list), _, _) => Mode::Standalone(list.0.clone()),
        (None, Some(topic), Some(pod)) => Mode::Controlled(Controlled {
            topic: topic.clone(),
            shard: args.shard.clone(),
            pod: pod.clone(),
            reader: setup::reader(args),
            producer: setup::control_producer(args),
            handoff_timeout: Duration::from_secs(args.handoff_timeout_secs),
        }),
        _ => {
            bail!("--partitions: one of --partitions or --control-topic with --pod-id is required")
        }
    };
    let input_partitions = setup::check(args)?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let metrics = Arc::new(
        Metrics::new(&args.shard, input_partitions as u32, SpecWorld::REJECT_REASONS)
            .with_latency_target(args.latency_target_ms.map(|ms| ms / 1000.0)),
    );
    let health = Arc::new(Health::default());
    let _admin = Admin::start(args.metrics_addr, Arc::clone(&metrics), Arc::clone(&health))
        .map_err(|e| anyhow!("--metrics-addr: cannot listen on {}: {e}", args.metrics_addr))?;
    health.set_not_ready("restoring partitions");

    // Set once the first partitions are held: readiness waits for it.
    let started = Arc::new(AtomicBool::new(false));
    let client = |input: Option<&str>| {
        ClientHealth::new(
            Arc::clone(&health),
            Arc::clone(&metrics),
            input.map(str::to_owned),
            Arc::clone(&started),
        )
    };
    let topics = Topics {
        input: args.input_topic.clone(),
        output: args.output_topic.clone(),
        dead_letters: args.dlq_topic.clone(),
        snapshots: args.snapshot_topic.clone(),
        control: args.control_topic.clone().zip(args.pod_id.clone()),
        shard: args.shard.clone(),
        framing: args.output_framing,
    };
    let clients = Clients {
        producer: &setup::producer(args),
        snapshots: &setup::snapshot_producer(args),
        committer: &setup::committer(args),
    };
    let drain_timeout = Duration::from_secs(args.drain_timeout_secs);
    let sink = KafkaSink::new(
        &clients,
        &client(None),
        topics,
        Arc::clone(&metrics),
        Arc::clone(&health),
        Arc::clone(&stop),
        drain_timeout,
    )
    .context("creating the producers")?;
    let (commands, received) = mpsc::channel();
    let epoch = Instant::now();
    let source = KafkaSource::<SpecWorld>::new(
        &setup::consumer(args),
        client(Some(&args.input_topic)),
        &args.input_topic,
        received,
        epoch,
        Arc::clone(&metrics),
    )
    .context("creating the consumer")?;

    let config = Config {
        max_batch_events: args.max_batch_events as usize,
        spin: Duration::from_micros(args.spin_us),
        epoch,
        snapshots: SnapshotPolicy {
            every_records: args.snapshot_every_records,
            every: args.snapshot_every(),
            ..SnapshotPolicy::default()
        },
        snapshot_sizes: SnapshotSizes {
            chunk_bytes: args.snapshot_chunk_kb as usize * 1024,
            ..SnapshotSizes::default()
        },
        // Above every id an earlier process of this shard gave.
        snapshot_ids_from: u64::try_from(clock::unix_ns() / 1000).unwrap_or(1),
        stop: Arc::clone(&stop),
        ..Config::default()
    }
    .pinned(core)?;
    let pipeline = pipeline::spawn(&SpecGame, source, sink, config, &metrics)?;
    let restorer = Restorer::new(
        SpecGame,
        &setup::reader(args),
        args.snapshot_topic.clone(),
        args.input_topic.clone(),
        Arc::clone(&metrics),
    )
    .context("creating the snapshot reader")?;
    let reporting = Reporting {
        metrics: Arc::clone(&metrics),
        health: Arc::clone(&health),
        started: Arc::clone(&started),
        stop: Arc::clone(&stop),
    };
    let _ownership = ownership::spawn(mode, restorer, commands, reporting)?;
    tracing::info!(shard = %args.shard, core, "consuming");

    let (_source, sink) = pipeline.join()?;
    if sink.failed() {
        tracing::error!(
            "stopped after an output record was lost; offsets past it were not committed"
        );
        return Ok(ExitCode::from(1));
    }
    tracing::info!("drained");
    Ok(ExitCode::SUCCESS)
}
