//! Stopping and failing cleanly: SIGTERM under load, the broker killed with `kill -9`
//! and restarted under a running data plane, restores that must skip snapshots a
//! crash left unfinished or damaged, restores that find input records deleted behind
//! their snapshot, and restores that must not replay a record their snapshot holds.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gameshard_e2e::harness::broker::Broker;
use gameshard_e2e::harness::dataplane::Dataplane;
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

/// The log lines of `dp` that hold `message`.
fn log_lines(dp: &Dataplane, message: &str) -> Vec<String> {
    dp.log_text().lines().filter(|l| l.contains(message)).map(str::to_owned).collect()
}

/// The sample of `family` on `dp`'s page for the zone's shard with `labels` after it.
fn sample(dp: &Dataplane, zone: &Zone, family: &str, labels: &str) -> f64 {
    let series = format!("{family}{{shard=\"{}\",{labels}", zone.name());
    dp.metric(&series).unwrap_or_else(|e| panic!("{series}: {e:#}\n{}", dp.report()))
}

#[test]
fn records_deleted_behind_a_snapshot_are_counted_and_logged_and_the_survivors_applied_exactly() {
    const LOST: i64 = 12;
    let Some(zone) = Zone::start("gap", 2).expect("zone starts") else { return };
    zone.produce(&verify::stream(51, 200, 2, 160, 16)).expect("produce");
    let mut dp = zone.dataplane(&[]).expect("data plane starts");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    // The drain snapshots every partition at the offset it commits.
    assert!(dp.terminate(Duration::from_secs(15)).expect("exits").success(), "{}", dp.report());
    let snapshot = zone.ends().expect("ends")[1].1;

    // More records arrive while no data plane runs, and some of them are deleted before
    // any data plane read them: partition 1's log now starts `LOST` records past its
    // snapshot. Partition 0 loses nothing.
    zone.produce(&verify::stream(52, 200, 2, 160, 16)).expect("produce more");
    let mut input = zone.read(EVENTS).expect("input");
    let before = input.len();
    input.retain(|r| !(r.partition == 1 && (snapshot..snapshot + LOST).contains(&r.offset)));
    assert_eq!(before - input.len(), LOST as usize, "the second stream reaches past the gap");
    kafka::delete_records(&zone.bootstrap(), &zone.topic(EVENTS), 1, snapshot + LOST)
        .expect("records deleted");

    let mut dp = zone.dataplane(&[]).expect("data plane restarts");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    let restored = log_lines(&dp, "restored from its snapshot");
    assert!(
        restored
            .iter()
            .any(|l| l.contains("partition=1") && l.contains(&format!("next_offset={snapshot} "))),
        "partition 1 restored its snapshot at {snapshot}: {restored:#?}"
    );
    let gap = "gameshard_input_gap_records_total";
    assert_eq!(sample(&dp, &zone, gap, "partition=\"1\""), LOST as f64, "{}", dp.report());
    assert_eq!(sample(&dp, &zone, gap, "partition=\"0\""), 0.0, "{}", dp.report());
    let logged = log_lines(&dp, "input records were deleted by retention");
    assert_eq!(logged.len(), 1, "one gap, logged once: {logged:#?}");
    let to = snapshot + LOST;
    for field in ["partition=1 ".to_owned(), format!("from={snapshot} "), format!("to={to} ")] {
        assert!(logged[0].contains(&field), "the gap's log line names {field}: {}", logged[0]);
    }
    zone.check_input(&input, DeadLetters::ExactlyOnce).expect("the survivors' exact state");
}

/// `n` NDJSON lines as one record of partition 0.
fn record(lines: &[&str]) -> (i32, Vec<u8>) {
    (0, lines.join("\n").into_bytes())
}

#[test]
fn a_restart_after_kill_9_applies_no_record_its_snapshot_already_holds() {
    let Some(zone) = Zone::start("no-replay", 1).expect("zone starts") else { return };
    // Before the snapshot: events rejected `unknown_player` whose player spawns later in
    // the same record. Replayed over the restored world, which holds the player, each
    // would apply (SPEC section 3): ghost would move and take seq 5, late would shoot a
    // down to 50 hp. The last record before the snapshot's offset is one of them, so
    // a replay that starts even one record early changes the final state.
    let before = [
        record(&[r#"{"type":"spawn","player":"a","seq":1,"x":0,"y":0,"z":0}"#]),
        record(&[
            r#"{"type":"move","player":"ghost","seq":5,"x":9,"y":9,"z":9}"#,
            r#"{"type":"spawn","player":"ghost","seq":1,"x":1,"y":1,"z":1}"#,
        ]),
        record(&["this is not an event"]),
        record(&[
            r#"{"type":"shoot","player":"late","seq":3,"target":"a","damage":50}"#,
            r#"{"type":"spawn","player":"late","seq":1}"#,
        ]),
    ];
    zone.produce(&before).expect("produce");
    let snapshot = before.len() as i64;
    let mut dp = zone.dataplane(&["--snapshot-every-secs", "1"]).expect("data plane starts");
    dp.wait_committed(&[(0, snapshot)], Duration::from_mins(1)).expect("committed");
    let deadline = Instant::now() + Duration::from_mins(1);
    while dp.status().ok().and_then(|s| s["partitions"][0]["snapshot"].as_i64()) != Some(snapshot) {
        assert!(Instant::now() < deadline, "no snapshot at {snapshot}: {}", dp.report());
        std::thread::sleep(Duration::from_millis(50));
    }
    dp.kill9();

    // After the snapshot: one event applied, one rejected `unknown_player`, one
    // malformed line.
    let after = [
        record(&[r#"{"type":"move","player":"a","seq":2,"x":3,"y":3,"z":3}"#]),
        record(&[r#"{"type":"move","player":"nobody","seq":1,"x":1,"y":1,"z":1}"#]),
        record(&[r#"{"type":"move","player":"a"}"#]),
    ];
    zone.produce(&after).expect("produce after the kill");
    let mut dp = zone.dataplane(&[]).expect("data plane restarts");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    let restored = log_lines(&dp, "restored from its snapshot");
    assert!(
        restored.iter().any(|l| l.contains(&format!("next_offset={snapshot} "))),
        "restored the snapshot at {snapshot}: {}",
        dp.report()
    );
    // The restarted process read the records after the snapshot's offset and no other,
    // and counted each of their outcomes once.
    let records = dp.metric("gameshard_records_total").expect("metrics");
    assert_eq!(records, after.len() as f64, "records read after the restart\n{}", dp.report());
    let outcome =
        |o: &str| sample(&dp, &zone, "gameshard_events_total", &format!("outcome=\"{o}\""));
    assert_eq!([outcome("applied"), outcome("rejected"), outcome("malformed")], [1.0, 1.0, 1.0]);
    let unknown =
        sample(&dp, &zone, "gameshard_events_rejected_total", "reason=\"unknown_player\"");
    assert_eq!(unknown, 1.0);
    assert_eq!(dp.metric("gameshard_dead_letters_total").expect("metrics"), 1.0);
    // The whole input's exact state, and each malformed unit on the dead-letter topic
    // once across both processes.
    zone.check(DeadLetters::ExactlyOnce).expect("exact");
}
