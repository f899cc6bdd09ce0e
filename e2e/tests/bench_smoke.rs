//! The benchmark binary runs end to end and reports every figure it promises, the
//! broker benchmarks on Apache Kafka. Speed is not judged here (this is a debug build);
//! the release numbers come from running it.

use std::process::Command;

use gameshard_e2e::harness::broker;

/// Runs `gameshard-bench` with `args` and returns its one JSON line.
fn report(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_gameshard-bench"))
        .args(args)
        .output()
        .expect("gameshard-bench runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(&stdout).expect("JSON report")
}

#[test]
fn the_pipeline_benchmark_prints_one_json_report_with_every_field() {
    let report = report(&[
        "pipeline",
        "--json",
        "--players",
        "2000",
        "--partitions",
        "2",
        "--records",
        "64",
        "--events",
        "40000",
        "--latency-events",
        "20000",
        "--rate",
        "50000",
        "--baseline-events",
        "20000",
        "--jitter-secs",
        "0.1",
    ]);
    for field in [
        "events",
        "events_per_sec",
        "baseline_events_per_sec",
        "speedup",
        "p50_us",
        "p99_us",
        "p999_us",
        "allocs_per_event",
        "max_rss_mb",
    ] {
        assert!(report[field].is_number(), "{field} missing or not a number in {report}");
    }
    assert!(report["events"].as_u64().is_some_and(|e| e >= 40_000));
    assert!(report["latency_updates"].as_u64().is_some_and(|u| u > 0), "latencies were recorded");
    let (p50, p99, p999) =
        (report["p50_us"].as_f64(), report["p99_us"].as_f64(), report["p999_us"].as_f64());
    assert!(p50 <= p99 && p99 <= p999, "{report}");
    assert!(report["jitter"].as_array().is_some_and(|j| !j.is_empty()));
}

#[test]
fn the_broker_benchmarks_run_on_apache_kafka_and_report_their_figures() {
    // The benchmarks start their own broker.
    if !broker::installed() {
        return;
    }
    let e2e = report(&[
        "e2e",
        "--json",
        "--players",
        "1000",
        "--partitions",
        "2",
        "--events",
        "20000",
        "--latency-secs",
        "1",
    ]);
    assert_eq!(e2e["kafka_version"], broker::kafka_version(), "{e2e}");
    for field in ["events_per_sec", "passthrough_events_per_sec", "p99_ms", "broker_hop_p50_ms"] {
        assert!(e2e[field].as_f64().is_some_and(|v| v > 0.0), "{field} in {e2e}");
    }
    // Both framings' output was checked against the model, and each published updates:
    // at least one, and no more than two per event.
    assert_eq!(e2e["matches_model"], true, "{e2e}");
    let events = e2e["events"].as_u64().unwrap_or_else(|| panic!("events in {e2e}"));
    for field in ["updates", "entity_updates"] {
        let updates = e2e[field].as_u64().unwrap_or_else(|| panic!("{field} in {e2e}"));
        assert!(updates > 0 && updates <= 2 * events, "{field} in {e2e}");
    }
    // The data plane's own share of the latency run, from its metrics, is part of it.
    let part = |field: &str| e2e[field].as_f64().unwrap_or_else(|| panic!("{field} in {e2e}"));
    assert!(part("dataplane_pipeline_p50_ms") > 0.0, "{e2e}");
    assert!(part("dataplane_pipeline_p99_ms") >= part("dataplane_pipeline_p50_ms"), "{e2e}");
    assert!(part("dataplane_event_p99_ms") >= part("dataplane_pipeline_p50_ms"), "{e2e}");
    assert!(e2e["latency_updates"].as_u64().is_some_and(|u| u > 0), "latencies were recorded");
    // So is the load generator's: its records' time from their due time to the broker's
    // acknowledgement.
    assert!(part("input_acked_p50_ms") > 0.0, "{e2e}");
    assert!(part("input_acked_p99_ms") >= part("input_acked_p50_ms"), "{e2e}");
    assert!(part("input_acked_p999_ms") >= part("input_acked_p99_ms"), "{e2e}");
    // No more than 1% of any second's updates are over that second's p99, so neither
    // are 1% of the run's: the run's p99 is at most the worst second's (each rounded
    // to 0.1 ms).
    let seconds = e2e["p99_ms_by_second"].as_array().unwrap_or_else(|| panic!("{e2e}"));
    let worst = seconds.iter().filter_map(serde_json::Value::as_f64).fold(0.0, f64::max);
    assert!(worst > 0.0 && part("p99_ms") <= worst + 0.05, "{e2e}");

    let restore = report(&["restore", "--json", "--players", "2000"]);
    assert!(restore["entities"].as_f64().is_some_and(|e| e >= 2000.0), "{restore}");
    assert!(restore["restore_ms"].as_f64().is_some(), "{restore}");
}

#[test]
fn the_instructions_benchmark_counts_every_stage_under_callgrind() {
    let Some(valgrind) =
        gameshard_e2e::harness::tools::require("valgrind", "Debian package `valgrind`")
    else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_gameshard-bench"))
        .arg("instructions")
        .arg("--valgrind")
        .arg(valgrind)
        .args(["--json", "--players", "400", "--partitions", "2", "--records", "8"])
        .output()
        .expect("gameshard-bench runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["events"], 8 * 64, "{report}");
    let per_event = |stage: &str| {
        report[format!("{stage}_instructions_per_event")]
            .as_f64()
            .unwrap_or_else(|| panic!("{stage} missing in {report}"))
    };
    let stages = per_event("parse") + per_event("apply") + per_event("encode");
    for stage in ["parse", "apply", "encode"] {
        assert!(per_event(stage) > 10.0, "{stage} counted: {report}");
    }
    // The three stages alone add up to all three in turn, within what the batching
    // between them costs.
    let pipeline = per_event("pipeline");
    assert!((stages - pipeline).abs() < 0.05 * pipeline, "{report}");
}

#[test]
fn the_handoff_benchmark_moves_a_partition_between_running_data_planes_and_keeps_the_state_exact() {
    if !broker::installed() {
        gameshard_e2e::harness::tools::missing("Apache Kafka", broker::KAFKA_INSTALL);
        return;
    }
    let r = report(&[
        "handoff",
        "--json",
        "--players",
        "2000",
        "--partitions",
        "3",
        "--rate",
        "3000",
        "--moves",
        "2",
        "--quiet-secs",
        "2",
        "--settle-secs",
        "0.5",
    ]);
    assert_eq!(r["kafka_version"], broker::kafka_version(), "{r}");
    assert_eq!(r["state_exact"], true, "nothing lost or applied twice across the moves: {r}");
    assert_eq!((r["players"].as_u64(), r["moves"].as_u64()), (Some(2000), Some(2)), "{r}");
    assert_eq!(r["moves_measured"], 2, "each move's pause was seen at the consumer: {r}");
    let number = |field: &str| {
        r[field].as_f64().unwrap_or_else(|| panic!("{field} missing or not a number in {r}"))
    };
    let (p50, p99, max) = (number("pause_ms_p50"), number("pause_ms_p99"), number("pause_ms_max"));
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r}");
    // A pause ends after the old owner's release and the new owner's acquisition.
    assert!(number("release_ms_p50") >= 0.0 && number("acquire_ms_p50") >= 0.0, "{r}");
    assert!(number("handoff_metric_ms_max") > 0.0, "the new owner measured the handoff: {r}");
    assert!(number("snapshot_bytes") > 2000.0, "the release snapshot holds the players: {r}");
    for window in ["quiet", "moving"] {
        let (p99, p999) = (
            number(&format!("others_p99_ms_{window}")),
            number(&format!("others_p999_ms_{window}")),
        );
        assert!(0.0 < p99 && p99 <= p999, "{window}: {r}");
        assert!(r[format!("others_updates_{window}")].as_u64().is_some_and(|n| n > 0), "{r}");
    }
    for field in ["others_p99_ms_quiet1", "others_p999_ms_quiet2", "noise_p999_ms"] {
        number(field);
    }
    assert!(r["others_p999_within_noise"].is_boolean(), "{r}");
    assert_eq!(r["per_move"].as_array().map(Vec::len), Some(2), "{r}");
}
