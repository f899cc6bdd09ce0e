//! The data plane on a real broker: events in, updates out, exactly as the reference
//! model says; malformed units on the dead-letter topic exactly once; SIGTERM drains.

use std::time::Duration;

use gameshard_e2e::harness::broker::{Broker, Storage};
use gameshard_e2e::harness::dataplane::Dataplane;
use gameshard_e2e::harness::kafka::{self, Outgoing};
use gameshard_e2e::verify;

const PARTITIONS: i32 = 4;

struct Setup {
    broker: Broker,
    _dir: TempDir,
}

/// A temporary folder removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(name: &str) -> Option<Setup> {
    let dir = std::env::temp_dir().join(format!("gameshard-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let broker = Broker::start(Storage::Sqlite(dir.join("tansu.db"))).expect("broker starts")?;
    kafka::create_topics(
        &broker.bootstrap(),
        &[
            ("events", PARTITIONS),
            ("updates", PARTITIONS),
            ("dead", PARTITIONS),
            ("snapshots", PARTITIONS),
        ],
    )
    .expect("topics");
    Some(Setup { broker, _dir: TempDir(dir) })
}

fn args(bootstrap: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--brokers",
        bootstrap,
        "--shard",
        "zone-a",
        "--input-topic",
        "events",
        "--output-topic",
        "updates",
        "--dlq-topic",
        "dead",
        "--snapshot-topic",
        "snapshots",
        "--partitions",
        "0-3",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

fn produce(bootstrap: &str, records: &[(i32, Vec<u8>)]) {
    let w = kafka::Writer::new(bootstrap).expect("producer");
    let out: Vec<Outgoing<'_>> = records
        .iter()
        .map(|(p, v)| Outgoing { partition: *p, key: None, value: v, timestamp_ms: None })
        .collect();
    w.send("events", &out).expect("produce");
    w.flush().expect("flush");
}

fn ends(bootstrap: &str) -> Vec<(u32, i64)> {
    let hw = kafka::high_watermarks(bootstrap, "events", PARTITIONS).expect("watermarks");
    hw.into_iter().enumerate().map(|(p, o)| (p as u32, o)).collect()
}

/// Checks the output and dead-letter topics against the input topic.
fn check_topics(bootstrap: &str, exactly_once_dead_letters: bool) {
    let input = kafka::read_all(bootstrap, "events", PARTITIONS).expect("read input");
    let updates = kafka::read_all(bootstrap, "updates", PARTITIONS).expect("read updates");
    let got = verify::fold(&updates).expect("valid updates");
    let want = verify::expected(&input);
    assert_eq!(got.len(), want.len(), "entity count");
    for (key, value) in &want {
        assert_eq!(got.get(key), Some(value), "entity {key:?}");
    }
    let dead = verify::dead_letters(
        &kafka::read_all(bootstrap, "dead", PARTITIONS).expect("read dead letters"),
    )
    .expect("valid dead letters");
    let mut want_dead = verify::expected_dead_letters(&input);
    assert!(!want_dead.is_empty(), "the stream has malformed units");
    if exactly_once_dead_letters {
        assert_eq!(dead, want_dead);
    } else {
        let mut unique = dead.clone();
        unique.dedup();
        want_dead.dedup();
        assert_eq!(unique, want_dead, "every malformed unit, none other");
    }
}

#[test]
fn events_in_updates_out_as_the_model_says_and_each_malformed_unit_dead_lettered_once() {
    let Some(s) = setup("path") else { return };
    let bootstrap = s.broker.bootstrap();
    produce(&bootstrap, &verify::stream(7, 300, PARTITIONS as u32, 400, 16));
    let mut dp = Dataplane::start(&args(&bootstrap, &[])).expect("data plane starts");
    dp.wait_ready(Duration::from_secs(30)).expect("ready");
    // Records arriving while it runs are processed too.
    produce(&bootstrap, &verify::stream(8, 300, PARTITIONS as u32, 100, 16));
    dp.wait_committed(&ends(&bootstrap), Duration::from_mins(1)).expect("everything committed");
    check_topics(&bootstrap, true);

    let (code, metrics) = dp.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "gameshard_events_total",
        "gameshard_event_latency_seconds_bucket",
        "gameshard_partition_lag_records",
        "gameshard_snapshot_age_seconds",
        "gameshard_owned_partitions{shard=\"zone-a\"} 4",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    let status = dp.terminate(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "SIGTERM exits 0: {status}\n{}", dp.log_text());
}
