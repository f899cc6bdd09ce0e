//! The data plane on a real broker: events in, updates out, exactly as the reference
//! model says, in each output framing; malformed units on the dead-letter topic exactly
//! once; SIGTERM drains; and the same through the broker's `SASL_SSL` listener with the
//! settings a credentials Secret gives.

use std::time::Duration;

use gameshard_dataplane::kafka::sink::MAX_BATCH_RECORD_BYTES;
use gameshard_e2e::harness::broker::Broker;
use gameshard_e2e::harness::kafka;
use gameshard_e2e::harness::zone::{DeadLetters, Framing, TempDir, UPDATES, Zone};
use gameshard_e2e::verify;

fn events_in_updates_out(framing: Framing) {
    let name = format!("path-{}", framing.flag());
    let Some(zone) = Zone::start(&name, 4).expect("zone starts") else { return };
    let zone = zone.with_framing(framing);
    zone.produce(&verify::stream(7, 300, 4, 400, 16)).expect("produce");
    let mut dp = zone.dataplane(&[]).expect("data plane starts");
    dp.wait_ready(Duration::from_secs(30)).expect("ready");
    // Records arriving while it runs are processed too.
    zone.produce(&verify::stream(8, 300, 4, 100, 16)).expect("produce");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    zone.check(DeadLetters::ExactlyOnce).expect("published what the model says");

    let (code, metrics) = dp.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    let shard = zone.name();
    for line in [
        format!("gameshard_events_total{{shard=\"{shard}\",outcome=\"applied\"}}"),
        format!("gameshard_events_total{{shard=\"{shard}\",outcome=\"malformed\"}}"),
        format!("gameshard_event_latency_seconds_bucket{{shard=\"{shard}\",le=\"0.001\"}}"),
        format!("gameshard_partition_lag_records{{shard=\"{shard}\",partition=\"3\"}}"),
        format!("gameshard_snapshot_age_seconds{{shard=\"{shard}\",partition=\"0\"}}"),
        format!("gameshard_owned_partitions{{shard=\"{shard}\"}} 4"),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    let status = dp.terminate(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "SIGTERM exits 0: {status}\n{}", dp.report());
}

#[test]
fn events_in_updates_out_as_the_model_says_and_each_malformed_unit_dead_lettered_once() {
    events_in_updates_out(Framing::Entity);
}

#[test]
fn batch_framed_updates_give_the_model_state_and_dead_letters_stay_exact() {
    events_in_updates_out(Framing::Batch);
}

#[test]
fn batch_framed_records_stay_within_the_brokers_record_limit_when_a_batch_holds_megabytes() {
    let Some(zone) = Zone::start("path-large", 1).expect("zone starts") else { return };
    let zone = zone.with_framing(Framing::Batch);
    // 40,000 players spawned once each, 500 to a record, read into batches of up to
    // 65,536 events: a batch's updates of the one partition are megabytes of NDJSON.
    let records: Vec<(i32, Vec<u8>)> = (0..80)
        .map(|r| {
            let lines: Vec<String> = (0..500)
                .map(|i| {
                    let p = r * 500 + i;
                    format!(r#"{{"type":"spawn","player":"p{p}","seq":1,"x":{i},"y":2,"z":3}}"#)
                })
                .collect();
            (0, lines.join("\n").into_bytes())
        })
        .collect();
    zone.produce(&records).expect("produce");
    let mut dp = zone.dataplane(&["--max-batch-events", "65536"]).expect("data plane starts");
    dp.wait_ready(Duration::from_secs(30)).expect("ready");
    zone.wait_caught_up(&mut dp, Duration::from_mins(2)).expect("caught up");
    zone.check(DeadLetters::ExactlyOnce).expect("published what the model says");
    let output = zone.read(UPDATES).expect("output read");
    let largest = output.iter().map(|r| r.value.len()).max().expect("output records");
    assert!(largest <= MAX_BATCH_RECORD_BYTES, "a record of {largest} bytes");
    assert!(
        largest > MAX_BATCH_RECORD_BYTES / 2,
        "the batches filled records well past half the limit: the largest has {largest} bytes"
    );
    let status = dp.terminate(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "SIGTERM exits 0: {status}\n{}", dp.report());
}

#[test]
fn the_data_plane_works_through_sasl_ssl_with_settings_from_a_secret_folder() {
    let Some(broker) = Broker::shared().expect("broker starts") else { return };
    let zone = Zone::on(broker, "path-sasl", 2).expect("zone");
    zone.produce(&verify::stream(9, 100, 2, 100, 16)).expect("produce");
    // The settings as a mounted credentials Secret gives them: one file per setting.
    let secret = TempDir::new("kafka-credentials").expect("temp dir");
    kafka::write_settings_dir(&secret.0, &broker.sasl_settings()).expect("settings written");
    let config_dir = secret.0.to_str().expect("UTF-8 path");
    // Only the SASL_SSL listener: a client that did not log in could not read a record.
    let args = zone.args_via(&broker.sasl_bootstrap(), &["--kafka-config-dir", config_dir]);
    let mut dp = zone.start_dataplane(&args).expect("data plane starts");
    zone.wait_caught_up(&mut dp, Duration::from_mins(1)).expect("caught up");
    zone.check(DeadLetters::ExactlyOnce).expect("published what the model says");
    assert!(dp.terminate(Duration::from_secs(20)).expect("exits").success(), "{}", dp.report());
}
