//! The autoscaler fed by a real Prometheus server makes the same decisions as when it
//! scrapes the pods itself, on the same histograms.
//!
//! Three data-plane admin servers (in process) serve latency histograms, lag and thread
//! CPU time that the test feeds step by step with known distributions; Debian's
//! `prometheus` scrapes them every 500 ms. Two autoscaler loops, one reading the pods
//! and one asking Prometheus, are ticked at the same moments, each a second and a half
//! after the step's figures were fed (so Prometheus holds a sample from before and from
//! after the feed in its 3 s `rate` window), through a breach with a backlog, a lag
//! spike, a calm shard too busy to shrink, a calm one that shrinks, an idle one, and a
//! breach that the pods keep up with.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gameshard_crds::{AutoscalingMode, AutoscalingSpec, LatencySpec, PrometheusSpec};
use gameshard_dataplane::admin::Admin;
use gameshard_dataplane::metrics::{Metrics, PartitionState};
use gameshard_e2e::harness::prometheus::Prometheus;
use gameshard_engine::World;
use gameshard_engine::spec::SpecWorld;
use gameshard_operator::autoscaler::{self, Reason};
use gameshard_operator::scaler::{
    self, Actuator, Config, Endpoints, Notice, Pacing, Report, Shard,
};
use gameshard_operator::signals::{Endpoint, HttpClient};

/// Seconds between two evaluations, and the `rate` window.
const INTERVAL: u64 = 3;

/// The pods, as a fixed list.
struct Pods(Vec<Endpoint>);

impl Endpoints for Pods {
    async fn list(&self) -> Result<Vec<Endpoint>, String> {
        Ok(self.0.clone())
    }
}

/// Takes every step it is asked for.
#[derive(Clone, Default)]
struct Steps(Arc<Mutex<Vec<i32>>>);

impl Actuator for Steps {
    async fn scale(&self, replicas: i32) -> Result<(), String> {
        self.0.lock().unwrap().push(replicas);
        Ok(())
    }
    async fn notify(&self, _: &Notice) {}
    fn reported(&self, _: &Report) {}
}

/// What the pods publish in one step.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Feed {
    /// Nothing at all.
    Idle,
    /// 3% of the updates at 3.5 ms, on two of the three pods: p99 3.7 ms.
    Breach,
    /// 3% at 1.6 ms on every pod: p99 1.7 ms, under the 2 ms target but not well under.
    Neutral,
    /// Every update at 0.2 ms.
    Calm,
}

fn observe(metrics: &Metrics, us: u64, n: u64) {
    let mut local = metrics.latency.local();
    local.observe_n(us * 1000, n);
    local.flush_into(&metrics.latency);
    metrics.updates.fetch_add(n, Relaxed);
}

fn feed(pods: &[Arc<Metrics>], feed: Feed) {
    for (i, m) in pods.iter().enumerate() {
        match feed {
            Feed::Idle => {}
            Feed::Breach => {
                let slow = [50, 0, 40][i];
                observe(m, 250, 1000 - slow);
                observe(m, 3500, slow);
            }
            Feed::Neutral => {
                observe(m, 250, 970);
                observe(m, 1600, 30);
            }
            Feed::Calm => observe(m, 200, 1000),
        }
    }
}

fn spec(prometheus: Option<PrometheusSpec>) -> Config {
    let autoscaling = AutoscalingSpec {
        mode: AutoscalingMode::Auto,
        min_replicas: 1,
        max_replicas: Some(8),
        scale_up_window_seconds: 2 * INTERVAL as i64,
        scale_down_window_seconds: 3 * INTERVAL as i64,
        cooldown_seconds: 0,
        interval_seconds: INTERVAL as i64,
        prometheus,
        ..AutoscalingSpec::default()
    };
    Config::new("zone", &LatencySpec { p99_target_ms: 2.0 }, &autoscaling, false, 3, 8)
}

/// What each step feeds, one interval apart.
const STEPS: [Feed; 17] = [
    Feed::Idle,
    Feed::Breach,
    Feed::Breach,
    Feed::Neutral,
    Feed::Neutral,
    Feed::Calm,
    Feed::Calm,
    Feed::Calm,
    Feed::Calm,
    Feed::Calm,
    Feed::Calm,
    Feed::Calm,
    Feed::Idle,
    Feed::Idle,
    Feed::Idle,
    Feed::Neutral,
    Feed::Breach,
];

/// Steps whose partition 0 of zone-0 lags 50,000 records.
const LAGGING: std::ops::Range<usize> = 3..5;

/// Steps whose partition 0 of zone-0 is behind by the autoscaler's `BEHIND` records:
/// the first breach is the pods', the last one, with no backlog, is not.
const BEHIND: std::ops::Range<usize> = 1..3;

/// Steps after which the state thread spins, so that the windows of the next steps
/// (5 to 7) see a busy pod.
const BUSY: std::ops::Range<usize> = 4..7;

/// The decision (reason, replicas, desired) the rules call for at steps 1 to 15 (step
/// 0 is the scraper's first sample).
const EXPECTED: [(Reason, i32, i32); 16] = [
    (Reason::BreachNotSustained, 3, 3),
    (Reason::LatencyAboveTarget, 3, 5),
    (Reason::BreachNotSustained, 5, 5),
    (Reason::LagAboveThreshold, 5, 6),
    (Reason::CalmNotSustained, 6, 6),
    (Reason::CalmNotSustained, 6, 6),
    (Reason::RemainingPodsTooBusy, 6, 6),
    (Reason::LatencyWellUnderTarget, 6, 5),
    (Reason::CalmNotSustained, 5, 5),
    (Reason::CalmNotSustained, 5, 5),
    (Reason::LatencyWellUnderTarget, 5, 4),
    (Reason::CalmNotSustained, 4, 4),
    (Reason::CalmNotSustained, 4, 4),
    (Reason::Idle, 4, 3),
    (Reason::WithinTarget, 3, 3),
    (Reason::PodsNotLoaded, 3, 3),
];

/// Three data-plane admin servers, each with its own metrics.
struct Fleet {
    metrics: Vec<Arc<Metrics>>,
    pods: Vec<Endpoint>,
    _admins: Vec<Admin>,
}

impl Fleet {
    fn start() -> Self {
        let metrics: Vec<Arc<Metrics>> =
            (0..3).map(|_| Arc::new(Metrics::new("zone", 8, SpecWorld::REJECT_REASONS))).collect();
        for m in &metrics {
            // Counts well above any step's, so that Prometheus's `rate` extrapolates every
            // bucket alike (a series starting at zero is extrapolated less), and a lag
            // series.
            observe(m, 40, 10_000);
            m.partitions[0].set_state(PartitionState::Owned, 1);
            m.partitions[0].high_watermark.store(10_000, Relaxed);
            m.partitions[0].processed.store(10_000, Relaxed);
        }
        let admins: Vec<Admin> = metrics
            .iter()
            .map(|m| {
                Admin::start("127.0.0.1:0".parse().unwrap(), Arc::clone(m), Arc::default())
                    .expect("admin server")
            })
            .collect();
        let pods = admins
            .iter()
            .enumerate()
            .map(|(i, a)| Endpoint { pod: format!("zone-{i}"), addr: a.addr() })
            .collect();
        Self { metrics, pods, _admins: admins }
    }

    /// Feeds step `k`.
    fn step(&self, k: usize) {
        feed(&self.metrics, STEPS[k]);
        let lag = if LAGGING.contains(&k) {
            50_000
        } else if BEHIND.contains(&k) {
            autoscaler::BEHIND as i64
        } else {
            0
        };
        let p = &self.metrics[0].partitions[0];
        p.processed.store(60_000 - lag, Relaxed);
        p.high_watermark.store(60_000, Relaxed);
    }
}

/// The pipeline's state thread, by its name: idle, or spinning while told to.
struct Spinner {
    busy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    spins: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Spinner {
    fn start() -> Self {
        let busy = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let spins = Arc::new(AtomicU64::new(0));
        let thread = {
            let (busy, stop, spins) = (Arc::clone(&busy), Arc::clone(&stop), Arc::clone(&spins));
            std::thread::Builder::new()
                .name("gs-state".into())
                .spawn(move || {
                    while !stop.load(Relaxed) {
                        if busy.load(Relaxed) {
                            spins.fetch_add(1, Relaxed);
                        } else {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                })
                .unwrap()
        };
        Self { busy, stop, spins, thread }
    }

    fn busy(&self, busy: bool) {
        self.busy.store(busy, Relaxed);
    }

    /// Stops the thread; how much it spun.
    fn finish(self) -> u64 {
        self.stop.store(true, Relaxed);
        self.thread.join().unwrap();
        self.spins.load(Relaxed)
    }
}

fn loop_for(fleet: &Fleet, steps: &Steps, config: Config) -> scaler::Handle {
    let shard = Shard {
        namespace: "game".to_owned(),
        name: "zone".to_owned(),
        endpoints: Pods(fleet.pods.clone()),
        actuator: steps.clone(),
        fetch: HttpClient::new(),
        metrics: gameshard_operator::metrics::Metrics::new(),
    };
    scaler::spawn(shard, config, Pacing::Manual)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_decides_the_same_from_prometheus_as_from_the_pods() {
    let fleet = Fleet::start();
    let addrs: Vec<_> = fleet.pods.iter().map(|p| p.addr).collect();
    let Some(prometheus) =
        Prometheus::start(&addrs, Duration::from_millis(500)).expect("prometheus starts")
    else {
        return;
    };
    let spinner = Spinner::start();
    prometheus.wait_for_rates("zone", &fleet.pods, Duration::from_secs(INTERVAL)).await;
    let (scraped_steps, queried_steps) = (Steps::default(), Steps::default());
    let scraping = loop_for(&fleet, &scraped_steps, spec(None));
    let from_prometheus = PrometheusSpec {
        url: prometheus.url(),
        matchers: BTreeMap::new(),
        rate_window_seconds: Some(INTERVAL as i64),
    };
    let querying = loop_for(&fleet, &queried_steps, spec(Some(from_prometheus)));

    let start = tokio::time::Instant::now();
    let mut reports = Vec::new();
    for k in 0..STEPS.len() {
        let fed = start + Duration::from_secs(INTERVAL * k as u64);
        tokio::time::sleep_until(fed).await;
        fleet.step(k);
        tokio::time::sleep_until(fed + Duration::from_millis(1500)).await;
        let at = Duration::from_secs(INTERVAL * k as u64);
        let (a, b) = tokio::join!(scraping.tick(at), querying.tick(at));
        spinner.busy(BUSY.contains(&k));
        reports.push((a.expect("a report"), b.expect("a report")));
    }
    assert!(spinner.finish() > 0, "the state thread spun");

    let summary = |r: &Report| (r.decision.reason, r.decision.replicas, r.decision.desired);
    for (k, (a, b)) in reports.iter().enumerate().skip(1) {
        assert_eq!(
            summary(a),
            summary(b),
            "step {k}: pods {:?} / Prometheus {:?}",
            a.decision,
            b.decision
        );
        match (a.decision.p99, b.decision.p99) {
            (Some(x), Some(y)) => assert!((x - y).abs() <= 0.05 * x, "step {k}: p99 {x} / {y}"),
            (x, y) => assert_eq!(x, y, "step {k}"),
        }
    }
    // And the decisions are the ones the rules call for.
    let scraped: Vec<_> = reports.iter().skip(1).map(|(a, _)| summary(a)).collect();
    let messages: Vec<_> = reports.iter().map(|(a, _)| &a.decision.message).collect();
    assert_eq!(scraped, EXPECTED, "{messages:#?}");
    assert_eq!(*scraped_steps.0.lock().unwrap(), [5, 6, 5, 4, 3]);
    assert_eq!(*queried_steps.0.lock().unwrap(), [5, 6, 5, 4, 3]);
}
