//! The end-to-end benchmarks on an Apache Kafka broker on loopback: the data plane
//! between the broker's topics with each output framing, against a passthrough on the
//! same broker and client settings and against the Kafka Streams peer over the same
//! backlog; latency at half the data plane's maximum rate and the bare broker hop; and
//! the time to restore a partition.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser as _;
use gameshard_operator::signals;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::harness::broker::{self, Broker};
use crate::harness::dataplane::Dataplane;
use crate::harness::kafka::{self, Deliveries, Incoming};
use crate::harness::kstreams::{self, Peer};
use crate::loadgen::{self, Load};
use crate::model::{ModelWorld, split_record};
use crate::procfs::{self, CpuClock};
use crate::verify;
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
    /// Offered rate of the latency run; default half the measured maximum (batch
    /// framing).
    pub latency_rate: Option<f64>,
}

const INPUT: &str = "events";
const ENTITY_OUTPUT: &str = "updates";
const BATCH_OUTPUT: &str = "updates-batch";
const DEAD: &str = "dead";
const PASSTHROUGH: &str = "passthrough";
const KSTREAMS_OUTPUT: &str = "kstreams-updates";
const KSTREAMS_DEAD: &str = "kstreams-dead";

/// One data-plane configuration of the run: its shard (consumer group), output topic,
/// snapshot topic and output framing.
struct Plane {
    shard: &'static str,
    output: &'static str,
    snapshots: &'static str,
    framing: &'static str,
}

const ENTITY: Plane = Plane {
    shard: "bench-entity",
    output: ENTITY_OUTPUT,
    snapshots: "snapshots",
    framing: "entity",
};
const BATCH: Plane = Plane {
    shard: "bench-batch",
    output: BATCH_OUTPUT,
    snapshots: "snapshots-batch",
    framing: "batch",
};

/// Runs the end-to-end benchmark and returns its report.
pub fn run(o: &Options) -> anyhow::Result<Value> {
    // The peer's jar first, so that no build overlaps a measurement.
    let jar = kstreams::jar()?.context(kstreams::KSTREAMS_INSTALL)?;
    let Some(broker) = Broker::start()? else {
        bail!("Apache Kafka is required: {}", broker::KAFKA_INSTALL);
    };
    let b = broker.bootstrap();
    let n = o.partitions as i32;
    let topics = [
        INPUT,
        ENTITY_OUTPUT,
        BATCH_OUTPUT,
        DEAD,
        ENTITY.snapshots,
        BATCH.snapshots,
        PASSTHROUGH,
        KSTREAMS_OUTPUT,
        KSTREAMS_DEAD,
    ];
    kafka::create_topics(&b, &topics.map(|t| (t, n)))?;
    let config = workload::Config {
        players: o.players,
        partitions: o.partitions,
        events_per_record: o.events_per_record,
        ..workload::Config::default()
    };
    let mut workload = Workload::generate(&config);
    let mut bench = Bench {
        brokers: b.clone(),
        partitions: n,
        cpu: CpuClock::new(procfs::child_named("kafka.Kafka")),
        cores: serde_json::Map::new(),
        max_rss_mb: 0.0,
        kstreams_rss_mb: None,
        model: verify::View::new(),
    };
    let load = Load { brokers: b, topic: INPUT.into(), rate: None, events: o.events, warmup: true };
    let preloaded = bench.preload(&mut workload, &load)?;
    let passes = preloaded.events.div_ceil(workload.pass_events().max(1)) + 1;
    let rate = |elapsed: Duration| preloaded.events as f64 / elapsed.as_secs_f64();

    // The passthrough, the data plane with each framing, and the Kafka Streams peer, each
    // through the same backlog as fast as it goes.
    let passthrough = bench.passthrough(preloaded.records)?;
    let entity = bench.maximum(&ENTITY)?;
    let batch = bench.maximum(&BATCH)?;
    let (kstreams, kstreams_updates) = bench.kstreams(&jar)?;

    // Latency at half the maximum rate (batch framing); the broker hop alone.
    let offered_rate = o.latency_rate.unwrap_or(rate(batch.committed) / 2.0);
    let load = Load {
        rate: Some(offered_rate),
        events: (offered_rate * o.latency_secs) as u64,
        warmup: false,
        ..load
    };
    let latency = bench.latency(&mut workload, &load, passes)?;
    let hop = broker_hop(&bench.brokers)?;

    let mut report = json!({
        "bench": "e2e",
        "broker": format!("Apache Kafka {} (KRaft, one node on loopback)", broker::kafka_version()),
        "kafka_version": broker::kafka_version(),
        "events": preloaded.events,
        "records": preloaded.records,
        "events_per_sec": rate(batch.committed).round(),
        "entity_events_per_sec": rate(entity.committed).round(),
        "applied_events_per_sec": rate(batch.processed).round(),
        "entity_applied_events_per_sec": rate(entity.processed).round(),
        "passthrough_events_per_sec": rate(passthrough).round(),
        "ratio": round(rate(batch.committed) / rate(passthrough), 3),
        "entity_ratio": round(rate(entity.committed) / rate(passthrough), 3),
        "updates": batch.updates,
        "entity_updates": entity.updates,
        "matches_model": true,
        "kstreams_events_per_sec": rate(kstreams).round(),
        "kstreams_updates": kstreams_updates,
        "kstreams_matches_model": true,
        "speedup_vs_kstreams": round(rate(entity.committed) / rate(kstreams), 2),
        "latency_rate": offered_rate.round(),
        "max_rss_mb": round(bench.max_rss_mb, 1),
        "kstreams_max_rss_mb": bench.kstreams_rss_mb.map(|m| round(m, 1)),
        "cpu_cores_used": bench.cores,
        "players": o.players,
        "partitions": o.partitions,
        "events_per_record": o.events_per_record,
    });
    if let Some(fields) = report.as_object_mut() {
        fields.extend(latency.report(&hop)?);
    }
    Ok(report)
}

/// The `q` quantile of `h`, recorded in microseconds, in milliseconds.
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `x` rounded to `places` decimal places.
fn round(x: f64, places: i32) -> f64 {
    (x * 10f64.powi(places)).round() / 10f64.powi(places)
}

/// The benchmark's broker, its input topic's partitions, and what the phases measured
/// besides their rates.
struct Bench {
    brokers: String,
    partitions: i32,
    cpu: CpuClock,
    /// Per phase, the cores the broker, the process under test and this process used.
    cores: serde_json::Map<String, Value>,
    /// The data plane's peak RSS over its runs.
    max_rss_mb: f64,
    /// The Kafka Streams peer's peak RSS.
    kstreams_rss_mb: Option<f64>,
    /// The reference model applied to the preloaded input, which every output of the
    /// throughput phases is checked against.
    model: verify::View,
}

impl Bench {
    /// Ends a phase of the CPU clock and keeps what it measured under `name`.
    fn phase(&mut self, name: &str) {
        let used = self.cpu.phase();
        self.cores.insert(name.to_owned(), used);
    }

    /// Produces the backlog under `load`, then the reference model of it.
    fn preload(
        &mut self,
        workload: &mut Workload,
        load: &Load,
    ) -> anyhow::Result<loadgen::Produced> {
        self.cpu.start(None);
        let preloaded = loadgen::produce(workload, load, 1, &AtomicBool::new(false))?;
        self.phase("preload");
        self.model = verify::expected(&kafka::read_all(&self.brokers, INPUT, self.partitions)?);
        Ok(preloaded)
    }

    /// The passthrough: the broker's and the client's limit for the backlog.
    fn passthrough(&mut self, records: u64) -> anyhow::Result<Duration> {
        self.cpu.start(None);
        let elapsed = passthrough(&self.brokers, self.partitions, records)?;
        self.phase("passthrough");
        Ok(elapsed)
    }

    /// The data plane through the whole backlog as fast as it goes, configured as
    /// `plane`, its output then checked against the reference model.
    fn maximum(&mut self, plane: &Plane) -> anyhow::Result<Maximum> {
        let ends = ends(&self.brokers, self.partitions)?;
        let mut dp = Dataplane::start(&dataplane_args(&self.brokers, plane, self.partitions))?;
        dp.wait_ready(Duration::from_secs(60))?;
        self.cpu.start(procfs::child_named("gameshard-dataplane"));
        let start = Instant::now();
        dp.wait_processed(&ends, Duration::from_secs(900))?;
        let processed = start.elapsed();
        dp.wait_committed(&ends, Duration::from_secs(900))?;
        let committed = start.elapsed();
        self.phase(plane.framing);
        let updates = dp.metric("gameshard_updates_total")?;
        ensure!(updates > 0.0, "the data plane applied the backlog and counted no updates");
        self.keep_rss(&dp)?;
        stop(&mut dp)?;
        self.check_output(plane.output, "the data plane")?;
        Ok(Maximum { processed, committed, updates: updates as u64 })
    }

    fn keep_rss(&mut self, dp: &Dataplane) -> anyhow::Result<()> {
        let rss = dp.max_rss_mb().context("reading the data plane's peak RSS")?;
        self.max_rss_mb = self.max_rss_mb.max(rss);
        Ok(())
    }

    /// Checks the output `who` published to `topic` (in either framing) against the
    /// reference model of the preloaded input, so that its rate is known to be for the
    /// same work.
    fn check_output(&self, topic: &str, who: &str) -> anyhow::Result<()> {
        let want = &self.model;
        let got = verify::fold(&kafka::read_all(&self.brokers, topic, self.partitions)?)?;
        for (key, value) in want {
            ensure!(
                got.get(key) == Some(value),
                "{who} published {:?} for {key:?}, the model {value}",
                got.get(key)
            );
        }
        ensure!(
            got.len() == want.len(),
            "{who} published {} entities, the model has {}",
            got.len(),
            want.len()
        );
        Ok(())
    }

    /// The Kafka Streams peer through the whole backlog, to the same output contract as
    /// the per-entity framing, checked against the reference model. Returns its time
    /// from running to its last update, and the number of updates.
    fn kstreams(&mut self, jar: &std::path::Path) -> anyhow::Result<(Duration, u64)> {
        let (b, n) = (self.brokers.clone(), self.partitions);
        let expected_updates = updates_per_record(&kafka::read_all(&b, INPUT, n)?);
        let topics = kstreams::Topics {
            brokers: b.clone(),
            application_id: "bench-kstreams".into(),
            input: INPUT.into(),
            output: KSTREAMS_OUTPUT.into(),
            dead_letters: Some(KSTREAMS_DEAD.into()),
            config: vec![format!("{}={}", COMPRESSION.0, COMPRESSION.1)],
        };
        let mut peer = Peer::start(jar, &topics)?;
        peer.wait_running(Duration::from_secs(120))?;
        self.cpu.start(peer.pid());
        let start = Instant::now();
        let timeout = Duration::from_secs(1800);
        wait_records(&b, KSTREAMS_OUTPUT, n, expected_updates, &mut peer, timeout)?;
        let elapsed = start.elapsed();
        self.phase("kstreams");
        self.kstreams_rss_mb = peer.pid().and_then(procfs::max_rss_mb);
        peer.terminate(Duration::from_secs(60))?;
        self.check_output(KSTREAMS_OUTPUT, "the Kafka Streams peer")?;
        Ok((elapsed, expected_updates))
    }

    /// Latency of the batch framing under `load`, with a data plane restarted on the
    /// batch run's snapshots.
    fn latency(
        &mut self,
        workload: &mut Workload,
        load: &Load,
        first_pass: u64,
    ) -> anyhow::Result<Latency> {
        let mut dp = Dataplane::start(&dataplane_args(&self.brokers, &BATCH, self.partitions))?;
        dp.wait_ready(Duration::from_secs(60))?;
        self.cpu.start(procfs::child_named("gameshard-dataplane"));
        let (offered, arrivals) =
            latency_run(&mut dp, workload, load, first_pass, self.partitions)?;
        self.phase("latency");
        let (_, page) = dp.get("/metrics")?;
        self.keep_rss(&dp)?;
        stop(&mut dp)?;
        Ok(Latency { offered, arrivals, in_process: InProcess::read(&page) })
    }
}

/// What a run of the data plane through the backlog measured.
struct Maximum {
    /// The time until it had applied every record.
    processed: Duration,
    /// The time until every input offset was committed: every update of every record
    /// acknowledged by the broker.
    committed: Duration,
    /// The updates it published: fewer than the peer's, since an entity's changes within
    /// one batch coalesce into one update (section 4 of the specification).
    updates: u64,
}

/// What the latency run measured.
struct Latency {
    offered: loadgen::Produced,
    /// Each update's latency at a consumer of the output topic.
    arrivals: Arrivals,
    /// The data plane's own latency histograms over the run.
    in_process: InProcess,
}

impl Latency {
    /// The latency run's figures for the report, with the bare broker hop `hop`'s.
    fn report(&self, hop: &Histogram<u64>) -> anyhow::Result<serde_json::Map<String, Value>> {
        let (arrivals, acked, in_process) = (&self.arrivals, self.offered.acked, &self.in_process);
        let histogram = arrivals.all()?;
        let by_second: Vec<_> = arrivals
            .seconds
            .iter()
            .map(|h| (!h.is_empty()).then(|| round(ms(h, 0.99), 1)))
            .collect();
        let fields = [
            ("latency_offered_events", json!(self.offered.events)),
            ("latency_updates", json!(histogram.len())),
            ("p50_ms", json!(ms(&histogram, 0.5))),
            ("p99_ms", json!(ms(&histogram, 0.99))),
            ("p999_ms", json!(ms(&histogram, 0.999))),
            ("p99_ms_by_second", json!(by_second)),
            ("input_acked_p50_ms", json!(acked.map(|a| a.p50_ms))),
            ("input_acked_p99_ms", json!(acked.map(|a| a.p99_ms))),
            ("input_acked_p999_ms", json!(acked.map(|a| a.p999_ms))),
            ("dataplane_event_p50_ms", json!(InProcess::ms(in_process.event.as_ref(), 0.5))),
            ("dataplane_event_p99_ms", json!(InProcess::ms(in_process.event.as_ref(), 0.99))),
            ("dataplane_pipeline_p50_ms", json!(InProcess::ms(in_process.pipeline.as_ref(), 0.5))),
            ("dataplane_pipeline_p99_ms", json!(InProcess::ms(in_process.pipeline.as_ref(), 0.99))),
            ("broker_hop_p50_ms", json!(ms(hop, 0.5))),
            ("broker_hop_p99_ms", json!(ms(hop, 0.99))),
        ];
        Ok(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

/// The data plane's own view of the latency run, from its `/metrics`: where an update's
/// time goes before it reaches the broker.
struct InProcess {
    /// `gameshard_event_latency_seconds`: from the input record's timestamp to the
    /// update handed to the producer (the load generator's produce, the input hop and
    /// the data plane).
    event: Option<signals::Histogram>,
    /// `gameshard_pipeline_latency_seconds`: from the record's arrival at the data
    /// plane's consumer to the update handed to the producer.
    pipeline: Option<signals::Histogram>,
}

impl InProcess {
    /// Both histograms from a data plane's metrics page, each summed over its series.
    fn read(page: &str) -> Self {
        let mut read = Self { event: None, pipeline: None };
        let lines = page.lines().map(|l| Ok(l.to_owned()));
        let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else { return read };
        for sample in &scrape.samples {
            let total = match sample.metric.as_str() {
                "gameshard_event_latency_seconds" => &mut read.event,
                "gameshard_pipeline_latency_seconds" => &mut read.pipeline,
                _ => continue,
            };
            if let prometheus_parse::Value::Histogram(buckets) = &sample.value {
                total
                    .get_or_insert_with(Default::default)
                    .add(&signals::Histogram::from_buckets(buckets));
            }
        }
        read
    }

    /// The `q` quantile of `h` in milliseconds, to the microsecond.
    fn ms(h: Option<&signals::Histogram>, q: f64) -> Option<f64> {
        h?.quantile(q).map(|s| (s * 1e6).round() / 1e3)
    }
}

/// Sends SIGTERM to a data plane and checks that it drained cleanly.
fn stop(dp: &mut Dataplane) -> anyhow::Result<()> {
    let status = dp.terminate(Duration::from_secs(60))?;
    if !status.success() {
        bail!("the data plane exited with {status} on SIGTERM; log:\n{}", dp.log_text());
    }
    Ok(())
}

/// How many update records the per-entity output contract has for `input`, with the
/// updates of one input record coalesced per entity (what the Kafka Streams peer
/// publishes): the reference model's changed entities, counted per record.
fn updates_per_record(input: &[Incoming]) -> u64 {
    let mut by_partition: BTreeMap<i32, Vec<&Incoming>> = BTreeMap::new();
    for r in input {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut total = 0;
    for mut records in by_partition.into_values() {
        records.sort_by_key(|r| r.offset);
        let mut world = ModelWorld::default();
        for r in records {
            let mut changed = HashSet::new();
            for event in split_record(&r.value).unwrap_or_default() {
                changed.extend(world.apply(&event).1);
            }
            total += changed.len() as u64;
        }
    }
    total
}

/// Waits until `topic` holds `count` records in all, polling its high watermarks.
fn wait_records(
    brokers: &str,
    topic: &str,
    partitions: i32,
    count: u64,
    peer: &mut Peer,
    timeout: Duration,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = kafka::config(brokers).create()?;
    let deadline = Instant::now() + timeout;
    loop {
        let mut total = 0;
        for p in 0..partitions {
            total += consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?.1;
        }
        if total as u64 >= count {
            return Ok(());
        }
        peer.check_alive()?;
        if Instant::now() > deadline {
            bail!("{topic} holds {total} of {count} records after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Offers `load` to the running data plane and records each update's latency at a
/// consumer of the output topic.
fn latency_run(
    dp: &mut Dataplane,
    workload: &mut Workload,
    load: &Load,
    first_pass: u64,
    partitions: i32,
) -> anyhow::Result<(loadgen::Produced, Arrivals)> {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (b, stop) = (load.brokers.clone(), Arc::clone(&stop));
        std::thread::spawn(move || latencies(&b, BATCH.output, partitions, &stop))
    };
    std::thread::sleep(Duration::from_millis(500));
    let offered = loadgen::produce(workload, load, first_pass, &AtomicBool::new(false))?;
    dp.wait_committed(&ends(&load.brokers, partitions)?, Duration::from_secs(600))?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    let arrivals = reader.join().map_err(|_| anyhow::anyhow!("the latency reader panicked"))??;
    Ok((offered, arrivals))
}

/// The input topic's high watermarks as (partition, offset) targets.
fn ends(brokers: &str, partitions: i32) -> anyhow::Result<Vec<(u32, i64)>> {
    Ok(kafka::high_watermarks(brokers, INPUT, partitions)?
        .into_iter()
        .enumerate()
        .map(|(p, o)| (p as u32, o))
        .collect())
}

/// The output compression of every producer in the run (the data plane's, the
/// passthrough's and the Kafka Streams peer's). The updates are JSON with the same keys
/// in every line, four to five times smaller in LZ4, and without it the broker's byte
/// path, not the processing, sets the data plane's maximum rate: an uncompressed run
/// writes about 3.5 times the input's bytes.
const COMPRESSION: (&str, &str) = ("compression.type", "lz4");

/// The data plane's command line for `plane` on the benchmark's topics.
fn dataplane_args(brokers: &str, plane: &Plane, partitions: i32) -> Vec<String> {
    let compression = format!("{}={}", COMPRESSION.0, COMPRESSION.1);
    [
        "--brokers",
        brokers,
        "--shard",
        plane.shard,
        "--input-topic",
        INPUT,
        "--output-topic",
        plane.output,
        "--dlq-topic",
        DEAD,
        "--snapshot-topic",
        plane.snapshots,
        "--output-framing",
        plane.framing,
        "--partitions",
        &format!("0-{}", partitions - 1),
        "--kafka",
        &compression,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The data plane's own client settings (its consumer and producer configuration, not a
/// copy of them) for a client of shard `shard`.
pub(crate) fn dataplane_settings(
    brokers: &str,
    shard: &str,
) -> anyhow::Result<gameshard_dataplane::cli::Args> {
    let args = gameshard_dataplane::cli::Args::try_parse_from([
        "gameshard-dataplane",
        "--brokers",
        brokers,
        "--shard",
        shard,
        "--input-topic",
        INPUT,
        "--output-topic",
        PASSTHROUGH,
        "--partitions",
        "0",
    ])?;
    Ok(args)
}

/// Consumes `records` records of the input topic and republishes each, unchanged, to
/// the passthrough topic, with the data plane's consumer and producer settings; returns
/// the time until the last one is acknowledged.
fn passthrough(brokers: &str, partitions: i32, records: u64) -> anyhow::Result<Duration> {
    let args = dataplane_settings(brokers, "passthrough")?;
    let consumer: BaseConsumer = gameshard_dataplane::kafka::setup::consumer(&args)
        .set("statistics.interval.ms", "0")
        .create()?;
    let producer: BaseProducer<Deliveries> = gameshard_dataplane::kafka::setup::producer(&args)
        .set("statistics.interval.ms", "0")
        .set(COMPRESSION.0, COMPRESSION.1)
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
    // Undeliverable records would fail the flush: the producer retries without a
    // timeout (`message.timeout.ms=0`), as the data plane's does.
    producer.flush(Duration::from_secs(600))?;
    Ok(start.elapsed())
}

/// One broker hop on its own: a record produced with the load generator's settings and
/// read with the data plane's consumer settings, a thousand times a second for three
/// seconds. An update crosses two such hops (into the data plane and out of it).
fn broker_hop(brokers: &str) -> anyhow::Result<Histogram<u64>> {
    kafka::create_topics(brokers, &[("hop", 1)])?;
    let args = dataplane_settings(brokers, "hop")?;
    let consumer: BaseConsumer = gameshard_dataplane::kafka::setup::consumer(&args)
        .set("statistics.interval.ms", "0")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("hop", 0, Offset::End)?;
    consumer.assign(&tpl)?;
    let producer: BaseProducer = loadgen::producer_config(brokers).create()?;
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
            let sent_us = kafka::now_us().to_string();
            let _ = producer
                .send(BaseRecord::<[u8], [u8]>::to("hop").partition(0).payload(sent_us.as_bytes()));
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        if let Some(Ok(m)) = consumer.poll(Duration::from_micros(200)) {
            let sent_us: i64 = std::str::from_utf8(m.payload().unwrap_or_default())?.parse()?;
            histogram.saturating_record((kafka::now_us() - sent_us).max(1) as u64);
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    Ok(histogram)
}

/// Each update's latency at a consumer of the output topic, in microseconds, over each
/// second of the run, so that a start-up transient and a steady backlog tell apart.
#[derive(Default)]
struct Arrivals {
    /// Second `i` holds the updates that arrived `i` to `i + 1` s after the first one.
    seconds: Vec<Histogram<u64>>,
}

impl Arrivals {
    /// An empty histogram of the range the run records.
    fn histogram() -> anyhow::Result<Histogram<u64>> {
        Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
    }

    /// Records latency `us` of an update that arrived `since_first` after the first one.
    fn record(&mut self, since_first: Duration, us: u64) -> anyhow::Result<()> {
        let second = since_first.as_secs() as usize;
        while self.seconds.len() <= second {
            self.seconds.push(Self::histogram()?);
        }
        self.seconds[second].saturating_record(us);
        Ok(())
    }

    /// The whole run: every second's histogram added up.
    fn all(&self) -> anyhow::Result<Histogram<u64>> {
        let mut all = Self::histogram()?;
        for second in &self.seconds {
            all.add(second)?;
        }
        Ok(all)
    }
}

/// Reads updates arriving on `topic` from now on and records, for each, the time since
/// its source record's timestamp. Both framings: every update, alone or a line of a
/// batch, carries one `"src_ts":` field, found without parsing the JSON, so that the
/// reader takes little of the CPU it measures.
fn latencies(
    brokers: &str,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
) -> anyhow::Result<Arrivals> {
    let args = dataplane_settings(brokers, "latency")?;
    let consumer: BaseConsumer = gameshard_dataplane::kafka::setup::consumer(&args)
        .set("statistics.interval.ms", "0")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    let mut arrivals = Arrivals::default();
    let mut first = None;
    while !stop.load(Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = message?;
        let now_us = kafka::now_us();
        let since_first = first.get_or_insert_with(Instant::now).elapsed();
        for ts in src_timestamps(m.payload().unwrap_or_default()) {
            arrivals.record(since_first, now_us.saturating_sub(ts * 1000).max(1) as u64)?;
        }
    }
    Ok(arrivals)
}

/// The values of every `"src_ts":` field in `bytes`.
pub(crate) fn src_timestamps(bytes: &[u8]) -> impl Iterator<Item = i64> + '_ {
    const FIELD: &[u8] = b"\"src_ts\":";
    let mut fields = memchr::memmem::find_iter(bytes, FIELD);
    std::iter::from_fn(move || {
        let rest = &bytes[fields.next()? + FIELD.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
    })
}

/// Restores a partition of `players` players: runs the data plane over their spawns,
/// drains it (which snapshots), and restarts it. Returns the restore's report.
pub fn restore(players: u32) -> anyhow::Result<Value> {
    let Some(broker) = Broker::start()? else {
        bail!("Apache Kafka is required: {}", broker::KAFKA_INSTALL);
    };
    let b = broker.bootstrap();
    kafka::create_topics(&b, &[(INPUT, 1), (ENTITY_OUTPUT, 1), ("snapshots", 1)])?;
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
        ENTITY_OUTPUT,
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
        "broker": format!("Apache Kafka {} (KRaft, one node on loopback)", broker::kafka_version()),
        "kafka_version": broker::kafka_version(),
        "players": players,
        "entities": field("entities"),
        "snapshot_bytes": field("bytes"),
        "restore_ms": field("ms"),
        "process_start_to_ready_ms": ready_ms.round(),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::{Arrivals, src_timestamps};

    #[test]
    fn source_timestamps_are_found_in_both_framings() {
        let entity = br#"{"kind":"item","id":"i","claimed_by":"p","src_partition":0,"src_offset":3,"src_ts":17}"#;
        assert_eq!(src_timestamps(entity).collect::<Vec<_>>(), [17]);
        let batch = [entity.as_slice(), b"\n", &entity[..entity.len() - 3], b"42}"].concat();
        assert_eq!(src_timestamps(&batch).collect::<Vec<_>>(), [17, 42]);
        assert_eq!(src_timestamps(b"{}").count(), 0);
    }

    #[test]
    fn arrivals_are_kept_per_second_of_the_run() {
        let mut arrivals = Arrivals::default();
        arrivals.record(Duration::from_millis(200), 1_000).unwrap();
        arrivals.record(Duration::from_millis(900), 3_000).unwrap();
        arrivals.record(Duration::from_millis(2_500), 500_000).unwrap();
        let all = arrivals.all().unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.max() > 499_000 && all.min() < 1_100, "{} {}", all.min(), all.max());
        let counts: Vec<u64> = arrivals.seconds.iter().map(Histogram::len).collect();
        assert_eq!(counts, [2, 0, 1]);
        assert!(arrivals.seconds[0].max() < 3_100, "{}", arrivals.seconds[0].max());
        assert!(arrivals.seconds[2].min() > 499_000, "{}", arrivals.seconds[2].min());
    }
}
