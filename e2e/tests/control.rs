//! Data planes following the operator's assignment on the control topic: each owns the
//! partitions listed for its pod; when the assignment moves a partition, its old owner
//! releases it and the new one takes it over while both keep running; the final state
//! is exact throughout.

use std::time::Duration;

use gameshard_crds::PodAssignment;
use gameshard_crds::control::{ASSIGNMENT_KEY, Assignment};
use gameshard_e2e::harness::dataplane::Dataplane;
use gameshard_e2e::harness::kafka::{self, Outgoing};
use gameshard_e2e::harness::zone::{DeadLetters, Zone};
use gameshard_e2e::verify;

/// The control topic's suffix.
const CONTROL: &str = "control";

fn publish(zone: &Zone, epoch: i64, pods: &[(&str, &[i32])]) {
    let a = Assignment {
        epoch,
        shard: zone.name().into(),
        partitions: 4,
        pods: pods
            .iter()
            .map(|(p, parts)| PodAssignment { pod: (*p).into(), partitions: parts.to_vec() })
            .collect(),
    };
    let value = serde_json::to_vec(&a).expect("serializes");
    let w = kafka::Writer::new(&zone.bootstrap()).expect("producer");
    w.send(
        &zone.topic(CONTROL),
        &[Outgoing { key: Some(ASSIGNMENT_KEY), ..Outgoing::value(0, &value) }],
    )
    .expect("sent");
    w.flush().expect("flushed");
}

fn pod(zone: &Zone, name: &str) -> Dataplane {
    let mut args = zone.args(&[]);
    let at = args.iter().position(|a| a == "--partitions").expect("standalone flag present");
    args.splice(
        at..at + 2,
        ["--control-topic".to_owned(), zone.topic(CONTROL), "--pod-id".to_owned(), name.to_owned()],
    );
    zone.start_dataplane(&args).expect("data plane starts")
}

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

/// Waits until `dp` owns exactly `partitions`.
fn wait_owning(dp: &mut Dataplane, partitions: &[i64]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while owned(dp) != partitions {
        assert!(dp.exited().expect("status").is_none(), "the pod exited: {}", dp.report());
        assert!(
            std::time::Instant::now() < deadline,
            "the pod owns {:?}, not {partitions:?}: {}",
            owned(dp),
            dp.report()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pods_own_what_the_assignment_says_and_hand_partitions_over_live_when_it_changes() {
    let Some(zone) = Zone::start("control", 4).expect("zone starts") else { return };
    kafka::create_topics(&zone.bootstrap(), &[(&zone.topic(CONTROL), 1)]).expect("control topic");
    zone.produce(&verify::stream(41, 200, 4, 80, 16)).expect("produce");

    let mut a = pod(&zone, "zone-0");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.get("/readyz").expect("readyz").0, 503, "not ready without an assignment");
    publish(&zone, 1, &[("zone-0", &[0, 1]), ("zone-1", &[2, 3])]);
    let mut b = pod(&zone, "zone-1");
    a.wait_ready(Duration::from_secs(30)).expect("a ready");
    b.wait_ready(Duration::from_secs(30)).expect("b ready");
    assert_eq!(owned(&a), [0, 1]);
    assert_eq!(owned(&b), [2, 3]);
    assert_eq!(a.status().expect("status")["epoch"], 1);
    let ends = zone.ends().expect("ends");
    a.wait_committed(&ends[..2], Duration::from_secs(60)).expect("a caught up");
    b.wait_committed(&ends[2..], Duration::from_secs(60)).expect("b caught up");

    // Partition 1 moves to b while records keep arriving: a releases it, b takes it,
    // and neither restarts.
    publish(&zone, 2, &[("zone-0", &[0]), ("zone-1", &[1, 2, 3])]);
    zone.produce(&verify::stream(42, 200, 4, 40, 16)).expect("produce more");
    wait_owning(&mut a, &[0]);
    wait_owning(&mut b, &[1, 2, 3]);
    assert_eq!(b.status().expect("status")["epoch"], 2);
    let ends = zone.ends().expect("ends");
    a.wait_committed(&ends[..1], Duration::from_secs(60)).expect("a caught up");
    b.wait_committed(&ends[1..], Duration::from_secs(60)).expect("b caught up");
    zone.check(DeadLetters::AtLeastOnce).expect("exact");
}
