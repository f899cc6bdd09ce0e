//! Data planes following the operator's assignment on the control topic: each owns the
//! partitions listed for its pod, and a partition moves between running pods without
//! either restarting: the old owner snapshots it and writes its release, the new one
//! restores it and writes its acquisition. A former owner that crashed is replaced
//! after the release timeout; one that was only stalled is fenced when it comes back.
//! The final state is exact throughout.

use std::time::{Duration, Instant};

use gameshard_control::{Acquired, Assignment, Message, Move, PodPartitions, Release};
use gameshard_dataplane::kafka::snapshots::{CHUNK_KEY, ID_HEADER, MANIFEST_KEY, Manifest};
use gameshard_e2e::harness::dataplane::Dataplane;
use gameshard_e2e::harness::kafka::{self, Outgoing};
use gameshard_e2e::harness::zone::{self, DeadLetters, Zone};
use gameshard_e2e::verify;

/// The control topic's suffix.
const CONTROL: &str = "control";

fn publish(zone: &Zone, epoch: u64, pods: &[(&str, &[u32])], moves: &[Move]) {
    let a = Message::Assignment(Assignment {
        shard: zone.name().into(),
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
    w.send(
        &zone.topic(CONTROL),
        &[Outgoing { key: Some(key.as_bytes()), ..Outgoing::value(0, &value) }],
    )
    .expect("sent");
    w.flush().expect("flushed");
}

fn pod(zone: &Zone, name: &str, extra: &[&str]) -> Dataplane {
    let mut args = zone.args(extra);
    let at = args.iter().position(|a| a == "--partitions").expect("standalone flag present");
    args.splice(
        at..at + 2,
        ["--control-topic".to_owned(), zone.topic(CONTROL), "--pod-id".to_owned(), name.to_owned()],
    );
    zone.start_dataplane(&args).expect("data plane starts")
}

/// The partitions the data plane serves now (none while its admin server is not up
/// yet, just after a start).
fn owned(dp: &Dataplane) -> Vec<i64> {
    let Ok(status) = dp.status() else { return Vec::new() };
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
            dp.report()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The handoff messages on the control topic.
fn handoffs(zone: &Zone) -> (Vec<Release>, Vec<Acquired>) {
    let records =
        kafka::read_all(&zone.bootstrap(), &zone.topic(CONTROL), 1).expect("control topic");
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

fn start_two(zone: &Zone, extra: &[&str]) -> (Dataplane, Dataplane) {
    kafka::create_topics(&zone.bootstrap(), &[(&zone.topic(CONTROL), 1)]).expect("control topic");
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
        b.metric("gameshard_handoff_duration_seconds_count").expect("metrics"),
        1.0,
        "b measured the handoff from the release to its first record"
    );
    zone.check(DeadLetters::AtLeastOnce).expect("exact");
}

/// How the former owner is lost while partition 1 moves from it to b.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// Killed with `kill -9` before the move is published.
    KilledBeforeTheMove,
    /// Killed with `kill -9` once it has begun to give partition 1 up (`/status` shows
    /// it releasing: its last snapshot, flush and commit are on their way).
    KilledWhileReleasing,
    /// Stopped with SIGSTOP before the move is published, and continued after b took
    /// the partition.
    Stalled,
}

/// The state of `partition` on `dp`'s `/status` (`None` if it does not list it), or
/// an error when `/status` does not answer.
fn state_of(dp: &Dataplane, partition: i64) -> anyhow::Result<Option<String>> {
    let status = dp.status()?;
    let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
    Ok(partitions
        .iter()
        .find(|p| p["partition"] == partition)
        .and_then(|p| p["state"].as_str().map(str::to_owned)))
}

/// Kills `a` as soon as its `/status` shows partition 1 releasing; fails if the
/// release was over before it was seen.
fn kill_while_releasing(a: &mut Dataplane) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match state_of(a, 1) {
            Ok(Some(state)) if state == "releasing" => {
                eprintln!("a is releasing partition 1: killed");
                break;
            }
            Ok(Some(state)) if state == "owned" => {}
            Ok(other) => panic!(
                "a gave partition 1 up ({other:?}) before it was seen releasing; log:\n{}",
                a.log_text()
            ),
            Err(_) => {} // busy: asked again
        }
        assert!(Instant::now() < deadline, "a never began to release partition 1");
        std::thread::sleep(Duration::from_millis(1));
    }
    a.kill9();
}

/// Moves partition 1 to b while a is lost as `lost` says: b waits out the release
/// timeout (or takes a release written just before the kill), restores a's latest
/// snapshot and replays.
fn former_owner_lost(lost: Lost) {
    let name = match lost {
        Lost::KilledBeforeTheMove => "handoff-kill",
        Lost::KilledWhileReleasing => "handoff-kill-releasing",
        Lost::Stalled => "handoff-stall",
    };
    let Some(zone) = Zone::start(name, 4).expect("zone starts") else { return };
    let extra = ["--handoff-timeout-secs", "2", "--snapshot-every-records", "10"];
    let (mut a, mut b) = start_two(&zone, &extra);
    match lost {
        Lost::KilledBeforeTheMove => a.kill9(),
        Lost::Stalled => a.pause().expect("stopped"),
        Lost::KilledWhileReleasing => {
            // A larger world and a backlog of updates in flight, so that the release
            // (its snapshot, the flush of its updates, its commit) lasts long enough
            // to be seen.
            zone.produce(&verify::stream(45, 40_000, 4, 2_000, 64))
                .expect("produce a larger world");
        }
    }
    // Records for partition 1 arrive while nobody has released it.
    zone.produce(&verify::stream(43, 200, 4, 60, 16)).expect("produce during the handoff");
    let m = Move { partition: 1, from: "zone-a-0".into(), to: "zone-a-1".into(), epoch: 2 };
    publish(&zone, 2, &[("zone-a-0", &[0]), ("zone-a-1", &[1, 2, 3])], &[m]);
    if lost == Lost::KilledWhileReleasing {
        kill_while_releasing(&mut a);
    }
    wait_owned(&mut b, &[1, 2, 3], Duration::from_secs(30));
    let (releases, acquired) = handoffs(&zone);
    let released = releases.iter().any(|r| r.partition == 1);
    eprintln!("{name}: a's release of partition 1 on the control topic: {released}");
    // Without a release, b took the partition only once the timeout was over. A kill
    // while releasing may come just after the release was written: b then takes that.
    if !released {
        assert!(
            b.log_text().contains("did not release the partition in time"),
            "b took partition 1 after the timeout: {}",
            b.log_text()
        );
    }
    if lost == Lost::Stalled {
        assert!(!released, "a stalled owner wrote no release: {releases:?}");
    }
    assert!(acquired.iter().any(|x| x.partition == 1 && x.pod == "zone-a-1" && x.epoch == 2));

    if lost == Lost::Stalled {
        // The stalled owner comes back, learns of b's acquisition and is fenced: it
        // drops partition 1 without a snapshot, and keeps partition 0.
        a.resume().expect("resumed");
        wait_owned(&mut a, &[0], Duration::from_secs(30));
        assert!(a.log_text().contains("fenced=true"), "a was fenced: {}", a.log_text());
        let (releases, _) = handoffs(&zone);
        assert!(releases.iter().all(|r| r.partition != 1), "a fenced owner writes no release");
    } else {
        a = pod(&zone, "zone-a-0", &extra);
        wait_owned(&mut a, &[0], Duration::from_secs(30));
    }
    let ends = zone.ends().expect("ends");
    a.wait_committed(&ends[..1], Duration::from_secs(60)).expect("a caught up");
    b.wait_committed(&ends[1..], Duration::from_secs(60)).expect("b caught up");
    zone.check(DeadLetters::AtLeastOnce).expect("exact after the handoff");

    // b crashes too, after a snapshot of a's epoch lands after b's own, as a former
    // owner that had not yet learnt of the move would write it: b's restart restores its
    // own snapshot of partition 1 (epoch 2) and passes over the later one of epoch 1.
    b.kill9();
    late_snapshot_of_epoch_1(&zone);
    zone.produce(&verify::stream(44, 200, 4, 20, 16)).expect("produce");
    let mut b = pod(&zone, "zone-a-1", &extra);
    wait_owned(&mut b, &[1, 2, 3], Duration::from_secs(30));
    let log = b.log_text();
    let restored = log
        .lines()
        .find(|l| l.contains("restored from its snapshot") && l.contains("partition=1"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(restored.contains("snapshot_epoch=2"), "the new owner's snapshot won: {restored}");
    assert!(
        log.lines().any(|l| l.contains("passing over a snapshot of a former owner's epoch")
            && l.contains("partition=1")),
        "b passed over the later snapshot of epoch 1: {log}"
    );
    let ends = zone.ends().expect("ends");
    b.wait_committed(&ends[1..], Duration::from_secs(60)).expect("b caught up");
    a.wait_committed(&ends[..1], Duration::from_secs(60)).expect("a caught up");
    zone.check(DeadLetters::AtLeastOnce).expect("exact after the new owner's restart");
}

/// Writes a's latest snapshot of partition 1 (epoch 1) again at the end of the
/// snapshot partition, chunks then manifest, as a former owner writes a snapshot that it
/// began before it learnt of the move: the latest complete snapshot there is then one
/// of the older epoch.
fn late_snapshot_of_epoch_1(zone: &Zone) {
    let topic = zone.topic(zone::SNAPSHOTS);
    let records = kafka::read_all(&zone.bootstrap(), &topic, 4).expect("snapshot topic");
    let part: Vec<_> = records.iter().filter(|r| r.partition == 1).collect();
    let (at, manifest) = part
        .iter()
        .filter(|r| r.key == MANIFEST_KEY)
        .filter_map(|r| Some((r.offset, serde_json::from_slice::<Manifest>(&r.value).ok()?)))
        .rfind(|(_, m)| m.epoch == 1)
        .expect("a wrote a snapshot of partition 1 in epoch 1");
    let id = manifest.id.to_string();
    let chunks: Vec<_> = part
        .iter()
        .filter(|r| r.offset >= manifest.first_offset && r.offset < at && r.key == CHUNK_KEY)
        .filter(|r| r.headers.get(ID_HEADER).map(Vec::as_slice) == Some(id.as_bytes()))
        .collect();
    assert_eq!(chunks.len(), manifest.chunks as usize, "its chunks");
    let end = kafka::high_watermarks(&zone.bootstrap(), &topic, 4).expect("ends")[1];
    let late = serde_json::to_vec(&Manifest { first_offset: end, ..manifest }).expect("manifest");
    let headers: Vec<Vec<(&str, &[u8])>> = chunks
        .iter()
        .map(|c| c.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect())
        .collect();
    let mut out: Vec<Outgoing<'_>> = chunks
        .iter()
        .zip(&headers)
        .map(|(c, h)| Outgoing { key: Some(CHUNK_KEY), headers: h, ..Outgoing::value(1, &c.value) })
        .collect();
    out.push(Outgoing { key: Some(MANIFEST_KEY), ..Outgoing::value(1, &late) });
    // In order: the manifest after its chunks.
    let w = kafka::Writer::with(&zone.bootstrap(), &[("enable.idempotence", "true")])
        .expect("producer");
    w.send(&topic, &out).expect("sent");
    w.flush().expect("flushed");
    let ends = kafka::high_watermarks(&zone.bootstrap(), &topic, 4).expect("ends");
    assert_eq!(
        ends[1],
        end + out.len() as i64,
        "nothing else was written to the partition meanwhile"
    );
}

#[test]
fn a_former_owner_killed_before_the_move_is_replaced_after_the_release_timeout_exactly() {
    former_owner_lost(Lost::KilledBeforeTheMove);
}

#[test]
fn a_former_owner_killed_while_it_releases_is_replaced_exactly() {
    former_owner_lost(Lost::KilledWhileReleasing);
}

#[test]
fn a_stalled_former_owner_is_fenced_and_its_snapshots_lose() {
    former_owner_lost(Lost::Stalled);
}
