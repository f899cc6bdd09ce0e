//! The end-to-end benchmarks: the data plane between a real broker's topics, against a
//! passthrough pipeline on the same broker and settings, and the time to restore a
//! partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::harness::broker::{self, Broker};
use crate::harness::dataplane::Dataplane;
use crate::harness::kafka::{self, Deliveries};
use crate::loadgen::{self, Load};
use crate::workload::{self, Workload};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Players in the world.
    pub players: u32,
    /// Input partitions.
    pub partitions: u32,
    /// Events per record.
    pub events_per_record: u32,
    /// Events for the maximum-rate runs (after the warm-up).
    pub events: u64,
    /// Seconds of load at half the maximum rate, for latency.
    pub latency_secs: f64,
    /// Offered rate of the latency run; default half the measured maximum.
    pub latency_rate: Option<f64>,
}

const INPUT: &str = "events";
const OUTPUT: &str = "updates";
const PASSTHROUGH: &str = "passthrough";

/// Runs the end-to-end benchmark and returns its report.
pub fn run(o: &Options) -> anyhow::Result<Value> {
    let Some(broker) = Broker::start()? else {
        bail!("Apache Kafka is required: {}", broker::KAFKA_INSTALL);
    };
    let b = broker.bootstrap();
    let n = o.partitions as i32;
    kafka::create_topics(
        &b,
        &[(INPUT, n), (OUTPUT, n), ("dead", n), ("snapshots", n), (PASSTHROUGH, n)],
    )?;
    let config = workload::Config {
        players: o.players,
        partitions: o.partitions,
        events_per_record: o.events_per_record,
        ..workload::Config::default()
    };
    let mut workload = Workload::generate(&config);
    let load = Load {
        brokers: b.clone(),
        topic: INPUT.into(),
        rate: None,
        events: o.events,
        warmup: true,
    };
    let preloaded = loadgen::produce(&mut workload, &load, 1, &AtomicBool::new(false))?;
    let passes = preloaded.events.div_ceil(workload.pass_events().max(1)) + 1;

    // The data plane through the preloaded backlog, as fast as it goes.
    let args = dataplane_args(&b, "bench", n);
    let mut dp = Dataplane::start(&args)?;
    dp.wait_ready(Duration::from_secs(60))?;
    let start = Instant::now();
    dp.wait_committed(&ends(&b, n)?, Duration::from_secs(900))?;
    let elapsed = start.elapsed();
    let events_per_sec = preloaded.events as f64 / elapsed.as_secs_f64();

    // The passthrough on the same backlog, broker and settings.
    let passthrough = passthrough(&b, n, preloaded.records)?;
    let passthrough_events_per_sec = preloaded.events as f64 / passthrough.as_secs_f64();

    // Latency at half the data plane's maximum rate, measured at a consumer of the
    // output topic from each update's source record timestamp.
    let rate = o.latency_rate.unwrap_or(events_per_sec / 2.0);
    let load = Load {
        brokers: b.clone(),
        topic: INPUT.into(),
        rate: Some(rate),
        events: (rate * o.latency_secs) as u64,
        warmup: false,
    };
    let (offered, histogram) = latency_run(&mut dp, &mut workload, &load, passes, n)?;
    let max_rss_mb = dp.max_rss_mb().context("reading the data plane's peak RSS")?;
    let status = dp.terminate(Duration::from_secs(30))?;
    if !status.success() {
        bail!("the data plane exited with {status} on SIGTERM");
    }
    let hop = broker_hop(&b)?;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let hop_ms = |q: f64| hop.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "bench": "e2e",
        "broker": format!("Apache Kafka {}", broker::kafka_version()),
        "kafka_version": broker::kafka_version(),
        "events": preloaded.events,
        "events_per_sec": events_per_sec.round(),
        "passthrough_events_per_sec": passthrough_events_per_sec.round(),
        "ratio": (events_per_sec / passthrough_events_per_sec * 1000.0).round() / 1000.0,
        "latency_rate": rate.round(),
        "latency_offered_events": offered.events,
        "latency_updates": histogram.len(),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_rss_mb": (max_rss_mb * 10.0).round() / 10.0,
        "broker_hop_p50_ms": hop_ms(0.5),
        "broker_hop_p99_ms": hop_ms(0.99),
        "players": o.players,
        "partitions": o.partitions,
        "events_per_record": o.events_per_record,
    }))
}

/// Offers `load` to the running data plane and records each update's latency at a
/// consumer of the output topic.
fn latency_run(
    dp: &mut Dataplane,
    workload: &mut Workload,
    load: &Load,
    first_pass: u64,
    partitions: i32,
) -> anyhow::Result<(loadgen::Produced, Histogram<u64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (b, stop) = (load.brokers.clone(), Arc::clone(&stop));
        std::thread::spawn(move || latencies(&b, partitions, &stop))
    };
    std::thread::sleep(Duration::from_millis(500));
    let offered = loadgen::produce(workload, load, first_pass, &AtomicBool::new(false))?;
    dp.wait_committed(&ends(&load.brokers, partitions)?, Duration::from_secs(600))?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    let histogram = reader.join().map_err(|_| anyhow::anyhow!("the latency reader panicked"))??;
    Ok((offered, histogram))
}

/// The input topic's high watermarks as (partition, offset) targets.
fn ends(brokers: &str, partitions: i32) -> anyhow::Result<Vec<(u32, i64)>> {
    Ok(kafka::high_watermarks(brokers, INPUT, partitions)?
        .into_iter()
        .enumerate()
        .map(|(p, o)| (p as u32, o))
        .collect())
}

/// The data plane's command line for the benchmark's topics.
fn dataplane_args(brokers: &str, shard: &str, partitions: i32) -> Vec<String> {
    [
        "--brokers",
        brokers,
        "--shard",
        shard,
        "--input-topic",
        INPUT,
        "--output-topic",
        OUTPUT,
        "--dlq-topic",
        "dead",
        "--snapshot-topic",
        "snapshots",
        "--partitions",
        &format!("0-{}", partitions - 1),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Consumes `records` records of the input topic and republishes each, unchanged, to
/// the passthrough topic; returns the time until the last one is acknowledged.
fn passthrough(brokers: &str, partitions: i32, records: u64) -> anyhow::Result<Duration> {
    let consumer: BaseConsumer = kafka::config(brokers)
        .set("group.id", "passthrough")
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "32768")
        .create()?;
    let producer: BaseProducer<Deliveries> = kafka::config(brokers)
        .set("linger.ms", "1")
        .set("acks", "all")
        .set("queue.buffering.max.kbytes", "65536")
        .create_with_context(Deliveries::default())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(INPUT, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let mut done = 0;
    while done < records {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = message?;
        let mut record = BaseRecord::<[u8], [u8]>::to(PASSTHROUGH)
            .partition(m.partition())
            .payload(m.payload().unwrap_or_default());
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        kafka::send_waiting(&producer, record)?;
        done += 1;
    }
    producer.flush(Duration::from_secs(600))?;
    Ok(start.elapsed())
}

/// One broker hop on its own: a record produced with the load generator's settings and
/// read with the data plane's consumer settings, a thousand times a second for three
/// seconds. An update crosses two such hops (into the data plane and out of it).
fn broker_hop(brokers: &str) -> anyhow::Result<Histogram<u64>> {
    kafka::create_topics(brokers, &[("hop", 1)])?;
    let consumer: BaseConsumer = kafka::config(brokers)
        .set("group.id", "hop")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("hop", 0, Offset::End)?;
    consumer.assign(&tpl)?;
    let producer: BaseProducer =
        kafka::config(brokers).set("linger.ms", "1").set("acks", "all").create()?;
    // Let the consumer settle at the end of the empty topic first.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(500) {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let start = Instant::now();
    let mut sent = 0u32;
    while start.elapsed() < Duration::from_secs(3) || histogram.len() < u64::from(sent) {
        if start.elapsed() < Duration::from_secs(3)
            && start.elapsed() >= Duration::from_millis(u64::from(sent))
        {
            let sent_us = crate::harness::kafka::now_us().to_string();
            let _ = producer
                .send(BaseRecord::<[u8], [u8]>::to("hop").partition(0).payload(sent_us.as_bytes()));
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        if let Some(Ok(m)) = consumer.poll(Duration::from_micros(200)) {
            let sent_us: i64 = std::str::from_utf8(m.payload().unwrap_or_default())?.parse()?;
            histogram.saturating_record((crate::harness::kafka::now_us() - sent_us).max(1) as u64);
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    Ok(histogram)
}

/// Reads updates arriving on the output topic from now on and records, for each, the
/// time since its source record's timestamp, in microseconds.
fn latencies(brokers: &str, partitions: i32, stop: &AtomicBool) -> anyhow::Result<Histogram<u64>> {
    let consumer: BaseConsumer = kafka::config(brokers)
        .set("group.id", "latency")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(OUTPUT, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    while !stop.load(Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = message?;
        let now_us = crate::harness::kafka::now_us();
        let value: Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
        if let Some(ts) = value["src_ts"].as_i64() {
            histogram.saturating_record(now_us.saturating_sub(ts * 1000).max(1) as u64);
        }
    }
    Ok(histogram)
}

/// Restores a partition of `players` players: runs the data plane over their spawns,
/// drains it (which snapshots), and restarts it. Returns the restore's report.
pub fn restore(players: u32) -> anyhow::Result<Value> {
    let Some(broker) = Broker::start()? else {
        bail!("Apache Kafka is required: {}", broker::KAFKA_INSTALL);
    };
    let b = broker.bootstrap();
    kafka::create_topics(&b, &[(INPUT, 1), (OUTPUT, 1), ("snapshots", 1)])?;
    let config =
        workload::Config { players, partitions: 1, records: 1, ..workload::Config::default() };
    let mut workload = Workload::generate(&config);
    let load =
        Load { brokers: b.clone(), topic: INPUT.into(), rate: None, events: 0, warmup: true };
    loadgen::produce(&mut workload, &load, 1, &AtomicBool::new(false))?;
    let args: Vec<String> = [
        "--brokers",
        &b,
        "--shard",
        "restore",
        "--input-topic",
        INPUT,
        "--output-topic",
        OUTPUT,
        "--snapshot-topic",
        "snapshots",
        "--partitions",
        "0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut dp = Dataplane::start(&args)?;
    let end = kafka::high_watermarks(&b, INPUT, 1)?[0];
    dp.wait_committed(&[(0, end)], Duration::from_secs(600))?;
    if !dp.terminate(Duration::from_secs(60))?.success() {
        bail!("the data plane did not drain cleanly");
    }
    let started = Instant::now();
    let mut dp = Dataplane::start(&args)?;
    dp.wait_ready(Duration::from_secs(120))?;
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    let log = dp.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("restored from its snapshot"))
        .context("the partition was not restored from a snapshot")?;
    let field = |name: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    };
    let _ = dp.terminate(Duration::from_secs(30));
    Ok(json!({
        "bench": "restore",
        "players": players,
        "entities": field("entities"),
        "snapshot_bytes": field("bytes"),
        "restore_ms": field("ms"),
        "process_start_to_ready_ms": ready_ms.round(),
    }))
}
