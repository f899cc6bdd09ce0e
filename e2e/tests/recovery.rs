//! Stopping and failing cleanly: SIGTERM under load, the broker killed with `kill -9`
//! and restarted under a running data plane, and restores that must skip snapshots a
//! crash left unfinished or damaged.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gameshard_e2e::harness::broker::Broker;
use gameshard_e2e::harness::kafka::{self, Outgoing};
use gameshard_e2e::harness::zone::{DeadLetters, EVENTS, SNAPSHOTS, UPDATES, Zone};
use gameshard_e2e::loadgen::{self, Load};
use gameshard_e2e::verify;
use gameshard_e2e::workload::{self, Workload};

fn workload(partitions: u32, seed: u64) -> Workload {
    Workload::generate(&workload::Config {
        players: 500,
        partitions,
        events_per_record: 32,
        records: 256,
        items: 500,
        seed,
        ..workload::Config::default()
    })
}

#[test]
fn sigterm_under_load_drains_exits_0_and_loses_nothing() {
    let Some(zone) = Zone::start("drain", 4).expect("zone starts") else { return };
    let mut dp = zone.dataplane(&[]).expect("data plane starts");
    dp.wait_ready(Duration::from_secs(30)).expect("ready");
    let load = Load {
        brokers: zone.bootstrap(),
        topic: zone.topic(EVENTS),
        rate: Some(20_000.0),
        events: 60_000,
        warmup: true,
    };
    let producer = std::thread::spawn(move || {
        let mut w = workload(4, 3);
        loadgen::produce(&mut w, &load, 1, &AtomicBool::new(false)).expect("load produced")
    });
    std::thread::sleep(Duration::from_millis(1500));
    let asked = Instant::now();
    let status = dp.terminate(Duration::from_secs(15)).expect("exits");
    let took = asked.elapsed();
    assert!(status.success(), "exit 0 after SIGTERM: {status}\n{}", dp.report());
    assert!(took < Duration::from_secs(5), "drained in {took:?}");
    assert!(dp.log_text().contains("drained"));
    producer.join().expect("load thread");

    // The drain snapshotted every partition at the offsets it committed: the next
    // incarnation resumes there and republishes nothing.
    let mut dp = zone.dataplane(&[]).expect("data plane restarts");
    dp.wait_ready(Duration::from_secs(30)).expect("ready");
    assert_eq!(dp.log_text().matches("restored from its snapshot").count(), 4, "{}", dp.report());
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    zone.check(DeadLetters::ExactlyOnce).expect("exact");
    let updates = verify::updates(&zone.read(UPDATES).expect("updates")).expect("valid updates");
    let mut seen = std::collections::HashSet::new();
    for u in &updates {
        let id = (u.partition, u.key.clone(), u.src_offset, u.state["seq"].as_i64());
        assert!(seen.insert(id), "an update was published twice across a clean drain: {u:?}");
    }
}

#[test]
fn a_broker_killed_and_restarted_is_retried_and_reported_and_loses_nothing() {
    // Its own broker: the others of this binary share one that stays up.
    let Some(mut broker) = Broker::start().expect("broker starts") else { return };
    let zone = Zone::on(&broker, "broker-restart", 2).expect("zone");
    zone.produce(&verify::stream(21, 200, 2, 100, 16)).expect("produce");
    let mut dp = zone.dataplane(&[]).expect("data plane starts");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");

    broker.kill9();
    let deadline = Instant::now() + Duration::from_secs(15);
    while dp.get("/readyz").map_or(0, |r| r.0) != 503 {
        assert!(Instant::now() < deadline, "/readyz kept answering ready with the broker down");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        dp.get("/healthz").expect("healthz").0,
        200,
        "a lost broker is not a reason to restart"
    );
    assert!(dp.exited().expect("status").is_none(), "the data plane keeps running");
    broker.start_again().expect("broker restarts on the same log directory and ports");

    zone.produce(&verify::stream(22, 200, 2, 100, 16)).expect("produce after the restart");
    dp.wait_ready(Duration::from_secs(30)).expect("ready again");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    zone.check(DeadLetters::AtLeastOnce).expect("exact");
}

#[test]
fn restore_skips_unfinished_and_damaged_snapshots() {
    let Some(zone) = Zone::start("restore", 1).expect("zone starts") else { return };
    zone.produce(&verify::stream(31, 300, 1, 120, 16)).expect("produce");
    let mut dp = zone.dataplane(&[]).expect("data plane starts");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    assert!(dp.terminate(Duration::from_secs(15)).expect("exits").success());
    let good = zone.ends().expect("ends")[0].1;

    // What crashes leave behind after the good snapshot: chunks of a snapshot that never
    // got its manifest, a manifest whose chunk is damaged, and a manifest whose chunks
    // are gone.
    let snapshots = zone.topic(SNAPSHOTS);
    let w = kafka::Writer::new(&zone.bootstrap()).expect("producer");
    let junk = vec![7u8; 100];
    let chunk = |id: &'static str| {
        [("gameshard-snapshot", id.as_bytes()), ("gameshard-chunk", b"0/1".as_slice())]
    };
    let (h1, h2) = (chunk("9000001"), chunk("9000002"));
    let mut records = vec![
        Outgoing { key: Some(b"chunk"), headers: &h1, ..Outgoing::value(0, &junk) },
        Outgoing { key: Some(b"chunk"), headers: &h2, ..Outgoing::value(0, &junk) },
    ];
    let start = kafka::high_watermarks(&zone.bootstrap(), &snapshots, 1).expect("watermark")[0];
    let damaged = format!(
        r#"{{"id":9000002,"partition":0,"next_offset":{},"first_offset":{},"chunks":1,"bytes":100,"crc32":1,"created_ms":1}}"#,
        good + 5,
        start + 1
    );
    let missing = format!(
        r#"{{"id":9000003,"partition":0,"next_offset":{},"first_offset":{start},"chunks":2,"bytes":10,"crc32":1,"created_ms":1}}"#,
        good + 6
    );
    records.push(Outgoing { key: Some(b"manifest"), ..Outgoing::value(0, damaged.as_bytes()) });
    records.push(Outgoing { key: Some(b"manifest"), ..Outgoing::value(0, missing.as_bytes()) });
    w.send(&snapshots, &records).expect("forged");
    w.flush().expect("flushed");

    zone.produce(&verify::stream(32, 300, 1, 60, 16)).expect("produce more");
    let mut dp = zone.dataplane(&[]).expect("data plane restarts");
    dp.wait_ready(Duration::from_secs(30)).expect("ready");
    let log = dp.log_text();
    assert_eq!(
        log.matches("skipping a snapshot whose chunks are missing or damaged").count(),
        2,
        "{}",
        dp.report()
    );
    assert!(log.contains(&format!("next_offset={good}")), "restored the good snapshot: {log}");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    zone.check(DeadLetters::ExactlyOnce).expect("exact");
}
