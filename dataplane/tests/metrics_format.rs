//! The metrics page passes Prometheus's own linter.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;

use gameshard_dataplane::metrics::{Metrics, PartitionState};

/// Runs `promtool`, or explains why the check is skipped. The test command sets
/// `GAMESHARD_REQUIRE_TOOLS`, which turns a missing tool into a failure.
fn promtool() -> Option<Command> {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return Some(Command::new("promtool"));
    }
    assert!(
        std::env::var_os("GAMESHARD_REQUIRE_TOOLS").is_none(),
        "promtool is required (Debian package `prometheus`)"
    );
    eprintln!("skipped: promtool is not installed (Debian package `prometheus`)");
    None
}

#[test]
fn the_metrics_page_passes_promtool_check_metrics() {
    let Some(mut promtool) = promtool() else { return };
    let metrics = Metrics::new("zone-7", 4, &["stale_seq", "dead"]);
    metrics.applied.fetch_add(10, Relaxed);
    metrics.rejected[0].fetch_add(2, Relaxed);
    metrics.partitions[3].set_state(PartitionState::Owned, 1);
    metrics.partitions[3].high_watermark.store(50, Relaxed);
    metrics.partitions[3].processed.store(45, Relaxed);
    let mut h = metrics.latency.local();
    for ns in [40_000, 900_000, 1_500_000, 3_000_000_000] {
        h.observe_ns(ns);
    }
    h.flush_into(&metrics.latency);
    let page = metrics.render(1_000_000);

    let mut child = promtool
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child.stdin.take().expect("stdin is piped").write_all(page.as_bytes()).expect("page written");
    let out = child.wait_with_output().expect("promtool finishes");
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool refused the page:\n{report}\n{page}");
    // promtool also prints lint problems (names, units, help) while exiting 0 on some
    // versions: none is acceptable.
    assert!(report.trim().is_empty(), "promtool lint findings:\n{report}");
}
