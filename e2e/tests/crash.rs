//! `kill -9` at random points, then a restart: the final state of every entity is the
//! one the model gives for the whole input, with no event lost and none applied twice.
//! Snapshots are frequent and written in small chunks, so kills land before, during and
//! after snapshots, and restarts restore snapshots taken after earlier crashes.

use std::time::Duration;

use gameshard_e2e::harness::kafka;
use gameshard_e2e::harness::zone::{DeadLetters, SNAPSHOTS, Zone};
use gameshard_e2e::rng::Rng;
use gameshard_e2e::verify;

const FREQUENT_SNAPSHOTS: [&str; 4] =
    ["--snapshot-every-records", "15", "--snapshot-chunk-kb", "2"];

fn crash_and_recover(seed: u64) -> (usize, usize) {
    let Some(zone) = Zone::start(&format!("crash{seed}"), 4).expect("zone starts") else {
        return (0, 0);
    };
    let stream = verify::stream(seed, 400, 4, 800, 16);
    let slices: Vec<&[(i32, Vec<u8>)]> = stream.chunks(stream.len() / 5 + 1).collect();
    let mut rng = Rng::new(seed);
    let mut restored = 0;
    zone.produce(slices[0]).expect("produce");
    let mut dp = zone.dataplane(&FREQUENT_SNAPSHOTS).expect("data plane starts");
    for slice in &slices[1..] {
        dp.wait_ready(Duration::from_mins(1)).expect("ready");
        zone.produce(slice).expect("produce");
        std::thread::sleep(Duration::from_millis(50 + rng.below(1500)));
        dp.kill9();
        restored += usize::from(dp.log_text().contains("restored from its snapshot"));
        dp = zone.dataplane(&FREQUENT_SNAPSHOTS).expect("data plane restarts");
    }
    dp.wait_ready(Duration::from_mins(1)).expect("ready");
    restored += usize::from(dp.log_text().contains("restored from its snapshot"));
    zone.wait_caught_up(&mut dp, Duration::from_mins(2)).expect("caught up");
    zone.check(DeadLetters::AtLeastOnce)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", dp.log_text()));
    (restored, interrupted_snapshots(&zone))
}

/// Snapshots whose chunks reached the broker but whose manifest never did: a kill landed
/// while they were being written.
fn interrupted_snapshots(zone: &Zone) -> usize {
    let records =
        kafka::read_all(&zone.bootstrap(), SNAPSHOTS, zone.partitions).expect("read snapshots");
    let mut chunked = std::collections::BTreeSet::new();
    let mut declared = std::collections::BTreeSet::new();
    for r in records {
        if r.key == b"chunk" {
            chunked.insert(r.headers.get("gameshard-snapshot").cloned().unwrap_or_default());
        } else if let Ok(m) = serde_json::from_slice::<serde_json::Value>(&r.value) {
            declared.insert(m["id"].as_u64().unwrap_or_default().to_string().into_bytes());
        }
    }
    chunked.difference(&declared).count()
}

#[test]
fn kill_9_at_random_points_then_restart_gives_the_exact_final_state() {
    let (mut restored, mut interrupted) = (0, 0);
    for seed in [11, 12, 13] {
        let (r, i) = crash_and_recover(seed);
        restored += r;
        interrupted += i;
    }
    if gameshard_e2e::harness::tools::find("tansu").is_none() {
        return;
    }
    println!(
        "restarts restored from a snapshot: {restored}; snapshots interrupted by a kill: {interrupted}"
    );
    assert!(restored > 0, "some restart restored a snapshot");
}
