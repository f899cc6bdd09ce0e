//! Data planes following the operator's assignment on the control topic: each owns the
//! partitions listed for its pod, and a partition moves between running pods without
//! either restarting: the old owner snapshots it and writes its release, the new one
//! restores it and writes its acquisition. A former owner that crashed is replaced
//! after the release timeout; one that was only stalled is fenced when it comes back.
//! The final state is exact throughout.

use std::time::{Duration, Instant};

use gameshard_control::{Acquired, Assignment, Message, Move, PodPartitions, Release};
use gameshard_e2e::harness::dataplane::Dataplane;
use gameshard_e2e::harness::kafka::{self, Outgoing};
use gameshard_e2e::harness::zone::{DeadLetters, Zone};
use gameshard_e2e::verify;

const SHARD: &str = "zone-a";

fn publish(zone: &Zone, epoch: u64, pods: &[(&str, &[u32])], moves: &[Move]) {
    let a = Message::Assignment(Assignment {
        shard: SHARD.into(),
        epoch,
        partitions: 4,
        pods: pods
            .iter()
            .map(|(p, parts)| PodPartitions { pod: (*p).into(), partitions: parts.to_vec() })
            .collect(),
        moves: moves.to_vec(),
    });
    let (key, value) = (a.key(), a.value());
    let w = kafka::Writer::new(&zone.bootstrap()).expect("producer");
    w.send("control", &[Outgoing { key: Some(key.as_bytes()), ..Outgoing::value(0, &value) }])
        .expect("sent");
    w.flush().expect("flushed");
}

fn pod(zone: &Zone, name: &str, extra: &[&str]) -> Dataplane {
    let mut args = zone.args(extra);
    let at = args.iter().position(|a| a == "--partitions").expect("standalone flag present");
    args.splice(
        at..at + 2,
        [
            "--control-topic".to_owned(),
            "control".to_owned(),
            "--pod-id".to_owned(),
            name.to_owned(),
        ],
    );
    Dataplane::start(&args).expect("data plane starts")
}

/// The partitions the data plane serves now.
fn owned(dp: &Dataplane) -> Vec<i64> {
    let status = dp.status().expect("status");
    status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| p["state"] == "owned")
        .filter_map(|p| p["partition"].as_i64())
        .collect()
}

fn wait_owned(dp: &mut Dataplane, want: &[i64], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while owned(dp) != want {
        assert!(
            dp.exited().expect("status").is_none(),
            "the data plane exited; log:\n{}",
            dp.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "owned {:?}, wanted {want:?}; log:\n{}",
            owned(dp),
            dp.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The handoff messages on the control topic.
fn handoffs(zone: &Zone) -> (Vec<Release>, Vec<Acquired>) {
    let records = kafka::read_all(&zone.bootstrap(), "control", 1).expect("control topic");
    let (mut releases, mut acquired) = (Vec::new(), Vec::new());
    for r in records {
        match Message::decode(&r.key, &r.value) {
            Ok(Some(Message::Release(m))) => releases.push(m),
            Ok(Some(Message::Acquired(m))) => acquired.push(m),
            _ => {}
        }
    }
    (releases, acquired)
}

/// A sample of a metric family on a data plane's page, summed over its series.
fn metric(dp: &Dataplane, name: &str) -> f64 {
    let (_, page) = dp.get("/metrics").expect("metrics");
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn start_two(zone: &Zone, extra: &[&str]) -> (Dataplane, Dataplane) {
    kafka::create_topics(&zone.bootstrap(), &[("control", 1)]).expect("control topic");
    zone.produce(&verify::stream(41, 200, 4, 80, 16)).expect("produce");
    let mut a = pod(zone, "zone-a-0", extra);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.get("/readyz").expect("readyz").0, 503, "not ready without an assignment");
    publish(zone, 1, &[("zone-a-0", &[0, 1]), ("zone-a-1", &[2, 3])], &[]);
    let mut b = pod(zone, "zone-a-1", extra);
    a.wait_ready(Duration::from_secs(30)).expect("a ready");
    b.wait_ready(Duration::from_secs(30)).expect("b ready");
    wait_owned(&mut a, &[0, 1], Duration::from_secs(30));
    wait_owned(&mut b, &[2, 3], Duration::from_secs(30));
    let ends = zone.ends().expect("ends");
    a.wait_committed(&ends[..2], Duration::from_secs(60)).expect("a caught up");
    b.wait_committed(&ends[2..], Duration::from_secs(60)).expect("b caught up");
    (a, b)
}

#[test]
fn a_partition_moves_between_running_pods_without_a_restart() {
    let Some(zone) = Zone::start("handoff", 4).expect("zone starts") else { return };
    let (mut a, mut b) = start_two(&zone, &[]);

    // Partition 1 moves to b: a gives it up, b takes it; neither restarts, and a's other
    // partition is served throughout.
    let m = Move { partition: 1, from: "zone-a-0".into(), to: "zone-a-1".into(), epoch: 2 };
    publish(&zone, 2, &[("zone-a-0", &[0]), ("zone-a-1", &[1, 2, 3])], &[m]);
    wait_owned(&mut b, &[1, 2, 3], Duration::from_secs(30));
    wait_owned(&mut a, &[0], Duration::from_secs(30));
    assert!(a.exited().expect("status").is_none() && b.exited().expect("status").is_none());
    let (releases, acquired) = handoffs(&zone);
    assert!(
        releases.iter().any(|r| r.partition == 1
            && r.epoch == 2
            && r.pod == "zone-a-0"
            && r.snapshot.is_some()),
        "a released partition 1 with its snapshot: {releases:?}"
    );
    let release = releases.iter().find(|r| r.partition == 1).expect("released");
    let took = acquired
        .iter()
        .find(|x| x.partition == 1 && x.pod == "zone-a-1")
        .expect("b acquired partition 1");
    assert_eq!(took.next_offset, release.next_offset, "b resumed exactly where a stopped");
    assert!(b.log_text().contains("snapshot_epoch=2"), "b restored a's release snapshot");

    zone.produce(&verify::stream(42, 200, 4, 40, 16)).expect("produce more");
    let ends = zone.ends().expect("ends");
    a.wait_committed(&ends[..1], Duration::from_secs(60)).expect("a caught up");
    b.wait_committed(&ends[1..], Duration::from_secs(60)).expect("b caught up");
    assert_eq!(
        metric(&b, "gameshard_handoff_duration_seconds_count"),
        1.0,
        "b measured the handoff from the release to its first record"
    );
    zone.check(DeadLetters::AtLeastOnce).expect("exact");
}

/// Moves partition 1 to b while a is `stalled` (SIGSTOP) or killed: b waits out the
/// release timeout, restores a's latest snapshot and replays.
fn former_owner_lost(killed: bool) {
    let name = if killed { "handoff-kill" } else { "handoff-stall" };
    let Some(zone) = Zone::start(name, 4).expect("zone starts") else { return };
    let extra = ["--handoff-timeout-secs", "2", "--snapshot-every-records", "10"];
    let (mut a, mut b) = start_two(&zone, &extra);
    if killed {
        a.kill9();
    } else {
        a.pause().expect("stopped");
    }
    // Records for partition 1 arrive while nobody has released it.
    zone.produce(&verify::stream(43, 200, 4, 60, 16)).expect("produce during the handoff");
    let m = Move { partition: 1, from: "zone-a-0".into(), to: "zone-a-1".into(), epoch: 2 };
    publish(&zone, 2, &[("zone-a-0", &[0]), ("zone-a-1", &[1, 2, 3])], &[m]);
    wait_owned(&mut b, &[1, 2, 3], Duration::from_secs(30));
    assert!(
        b.log_text().contains("did not release the partition in time"),
        "b took partition 1 after the timeout: {}",
        b.log_text()
    );
    let (releases, acquired) = handoffs(&zone);
    assert!(releases.iter().all(|r| r.partition != 1), "a never released partition 1");
    assert!(acquired.iter().any(|x| x.partition == 1 && x.pod == "zone-a-1" && x.epoch == 2));

    if killed {
        a = pod(&zone, "zone-a-0", &extra);
        wait_owned(&mut a, &[0], Duration::from_secs(30));
    } else {
        // The stalled owner comes back, learns of b's acquisition and is fenced: it
        // drops partition 1 without a snapshot, and keeps partition 0.
        a.resume().expect("resumed");
        wait_owned(&mut a, &[0], Duration::from_secs(30));
        assert!(a.log_text().contains("fenced=true"), "a was fenced: {}", a.log_text());
        let (releases, _) = handoffs(&zone);
        assert!(releases.iter().all(|r| r.partition != 1), "a fenced owner writes no release");
    }
    let ends = zone.ends().expect("ends");
    a.wait_committed(&ends[..1], Duration::from_secs(60)).expect("a caught up");
    b.wait_committed(&ends[1..], Duration::from_secs(60)).expect("b caught up");
    zone.check(DeadLetters::AtLeastOnce).expect("exact after the handoff");

    // b crashes too: its restart restores b's own snapshots of partition 1 (epoch 2),
    // passing over any a wrote before it was fenced.
    b.kill9();
    zone.produce(&verify::stream(44, 200, 4, 20, 16)).expect("produce");
    let mut b = pod(&zone, "zone-a-1", &extra);
    wait_owned(&mut b, &[1, 2, 3], Duration::from_secs(30));
    let restored = b
        .log_text()
        .lines()
        .find(|l| l.contains("restored from its snapshot") && l.contains("partition=1"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(restored.contains("snapshot_epoch=2"), "the new owner's snapshot won: {restored}");
    let ends = zone.ends().expect("ends");
    b.wait_committed(&ends[1..], Duration::from_secs(60)).expect("b caught up");
    a.wait_committed(&ends[..1], Duration::from_secs(60)).expect("a caught up");
    zone.check(DeadLetters::AtLeastOnce).expect("exact after the new owner's restart");
}

#[test]
fn a_former_owner_killed_in_the_middle_of_a_handoff_is_replaced_exactly() {
    former_owner_lost(true);
}

#[test]
fn a_stalled_former_owner_is_fenced_and_its_snapshots_lose() {
    former_owner_lost(false);
}
