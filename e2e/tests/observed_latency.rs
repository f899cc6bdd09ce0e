//! The operator's observed p99 read from a data plane's real admin server: the page the
//! data plane serves is the one the operator parses, and the figure falls where the
//! recorded latencies put it.

use std::sync::Arc;

use gameshard_dataplane::admin::Admin;
use gameshard_dataplane::metrics::Metrics;
use gameshard_engine::World;
use gameshard_engine::spec::SpecWorld;
use gameshard_operator::latency::{Histogram, Http, Scrape};

#[tokio::test]
async fn the_operator_reads_the_data_planes_latency_histogram() {
    let metrics = Arc::new(Metrics::new("zone", 4, SpecWorld::REJECT_REASONS));
    let admin = Admin::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics), Arc::default())
        .expect("admin server");
    let port = admin.addr().port();
    let scrape = || async { Histogram::parse(&Http.metrics("127.0.0.1", port).await.unwrap()) };

    let before = scrape().await.expect("the histogram is served before any update");
    assert_eq!(before.count(), 0.0);

    // 990 updates at 0.3 ms and 10 at 40 ms: the p99 is the last of the fast ones.
    let mut local = metrics.latency.local();
    local.observe_n(300_000, 990);
    local.observe_n(40_000_000, 10);
    local.flush_into(&metrics.latency);
    let after = scrape().await.expect("histogram");
    let window = after.since(&before);
    assert_eq!(window.count(), 1000.0);
    let p99 = window.quantile(0.99).expect("observations");
    assert!((0.000_2..=0.000_3).contains(&p99), "p99 {p99} s is in the 0.2-0.3 ms bucket");
    let p999 = window.quantile(0.999).expect("observations");
    assert!((0.03..=0.05).contains(&p999), "p99.9 {p999} s is in the 30-50 ms bucket");
}
