//! The data plane on a real broker: events in, updates out, exactly as the reference
//! model says; malformed units on the dead-letter topic exactly once; SIGTERM drains.

use std::time::Duration;

use gameshard_e2e::harness::zone::{DeadLetters, Zone};
use gameshard_e2e::verify;

#[test]
fn events_in_updates_out_as_the_model_says_and_each_malformed_unit_dead_lettered_once() {
    let Some(zone) = Zone::start("path", 4).expect("zone starts") else { return };
    zone.produce(&verify::stream(7, 300, 4, 400, 16)).expect("produce");
    let mut dp = zone.dataplane(&[]).expect("data plane starts");
    dp.wait_ready(Duration::from_secs(30)).expect("ready");
    // Records arriving while it runs are processed too.
    zone.produce(&verify::stream(8, 300, 4, 100, 16)).expect("produce");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    zone.check(DeadLetters::ExactlyOnce).expect("published what the model says");

    let (code, metrics) = dp.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    for line in [
        "gameshard_events_total{shard=\"zone-a\",outcome=\"applied\"}",
        "gameshard_events_total{shard=\"zone-a\",outcome=\"malformed\"}",
        "gameshard_event_latency_seconds_bucket{shard=\"zone-a\",le=\"0.001\"}",
        "gameshard_partition_lag_records{shard=\"zone-a\",partition=\"3\"}",
        "gameshard_snapshot_age_seconds{shard=\"zone-a\",partition=\"0\"}",
        "gameshard_owned_partitions{shard=\"zone-a\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let status = dp.terminate(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "SIGTERM exits 0: {status}\n{}", dp.log_text());
}
