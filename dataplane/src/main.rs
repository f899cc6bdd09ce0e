//! `gameshard-dataplane`: wires the command line, the Kafka clients, the admin server and
//! the pipeline together. Every decision lives in the library.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use gameshard_dataplane::admin::{Admin, Health};
use gameshard_dataplane::affinity;
use gameshard_dataplane::cli::{self, Args};
use gameshard_dataplane::kafka::sink::{KafkaSink, Topics};
use gameshard_dataplane::kafka::source::{self, KafkaSource};
use gameshard_dataplane::kafka::{ClientHealth, control, setup};
use gameshard_dataplane::metrics::Metrics;
use gameshard_dataplane::pipeline::{self, Config, SnapshotPolicy};
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

    let Some((partitions, _watcher)) = owned_partitions(args, &health, &stop)? else {
        return Ok(ExitCode::SUCCESS);
    };
    health.set_not_ready("restoring partitions");

    let started = Instant::now();
    let restored = source::restore(
        &SpecGame,
        &setup::reader(args),
        args.snapshot_topic.as_deref(),
        &partitions,
        &metrics,
    )?;
    tracing::info!(
        partitions = restored.len(),
        ms = started.elapsed().as_millis() as u64,
        "partitions restored"
    );
    if stop.load(Relaxed) {
        return Ok(ExitCode::SUCCESS);
    }

    let running = Arc::new(AtomicBool::new(false));
    let client = |input: Option<&str>| {
        ClientHealth::new(
            Arc::clone(&health),
            Arc::clone(&metrics),
            input.map(str::to_owned),
            Arc::clone(&running),
        )
    };
    let topics = Topics {
        input: args.input_topic.clone(),
        output: args.output_topic.clone(),
        dead_letters: args.dlq_topic.clone(),
        snapshots: args.snapshot_topic.clone(),
        chunk_bytes: args.snapshot_chunk_kb as usize * 1024,
        framing: args.output_framing,
    };
    let drain_timeout = Duration::from_secs(args.drain_timeout_secs);
    let sink = KafkaSink::new(
        &setup::producer(args),
        &setup::committer(args),
        client(None),
        topics,
        Arc::clone(&metrics),
        Arc::clone(&health),
        Arc::clone(&stop),
        drain_timeout,
    )
    .context("creating the producer")?;
    let epoch = Instant::now();
    let source = KafkaSource::<SpecWorld>::new(
        &setup::consumer(args),
        client(Some(&args.input_topic)),
        &args.input_topic,
        restored,
        epoch,
        &metrics,
    )
    .context("assigning the input partitions")?;

    let config = Config {
        max_batch_events: args.max_batch_events as usize,
        spin: Duration::from_micros(args.spin_us),
        epoch,
        snapshots: SnapshotPolicy {
            every_records: args.snapshot_every_records,
            every: args.snapshot_every(),
            ..SnapshotPolicy::default()
        },
        stop: Arc::clone(&stop),
        ..Config::default()
    }
    .pinned(core)?;
    let pipeline = pipeline::spawn(&SpecGame, source, sink, config, &metrics)?;
    running.store(true, Relaxed);
    health.set_ready();
    tracing::info!(shard = %args.shard, ?partitions, core, "consuming");

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

/// Owned partitions, and the thread watching for a new assignment if there is one.
type Ownership = (Vec<u32>, Option<std::thread::JoinHandle<()>>);

/// The partitions this data plane owns: the `--partitions` list, or what the operator's
/// assignment gives `--pod-id` (then with the thread that watches for a new one). `None`
/// when a signal came while waiting for an assignment.
fn owned_partitions(
    args: &Args,
    health: &Health,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Option<Ownership>> {
    Ok(Some(match (&args.partitions, &args.control_topic, &args.pod_id) {
        (Some(list), _, _) => (list.0.clone(), None),
        (None, Some(topic), Some(pod)) => {
            health.set_not_ready("reading the partition assignment");
            let Some((assignment, next)) =
                control::wait(&setup::reader(args), topic, &args.shard, health, stop)?
            else {
                return Ok(None);
            };
            health.epoch.store(u64::try_from(assignment.epoch).unwrap_or(0), Relaxed);
            let mine = assignment.partitions_of(pod);
            tracing::info!(epoch = assignment.epoch, partitions = ?mine, "following the operator's assignment");
            let watcher = control::watch(
                &setup::reader(args),
                topic,
                args.shard.clone(),
                pod.clone(),
                (assignment, next),
                Arc::clone(stop),
            )?;
            (mine, Some(watcher))
        }
        _ => {
            bail!("--partitions: one of --partitions or --control-topic with --pod-id is required")
        }
    }))
}
