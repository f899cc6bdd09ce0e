//! The autoscaler's two sources on real data-plane processes: two `gameshard-dataplane`
//! processes consume a zone on the real broker under a steady load while Debian's
//! `prometheus` scrapes their `/metrics`. At the same moments, the pods' own scrape and
//! the Prometheus queries are read and each fed to the same two policies: one whose
//! target every update passes (a breach, then steps up) and one that every update is
//! far under (calm, then a step down). The decisions from the two sources are the same
//! at every evaluation, and both policies reach their step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use gameshard_crds::{AutoscalingMode, AutoscalingSpec, LatencySpec};
use gameshard_e2e::harness::dataplane::Dataplane;
use gameshard_e2e::harness::kafka::{self, Outgoing};
use gameshard_e2e::harness::prometheus::Prometheus;
use gameshard_e2e::harness::zone::{self, Zone};
use gameshard_e2e::verify;
use gameshard_operator::autoscaler::{Autoscaler, Policy, Reason, Signal};
use gameshard_operator::signals::{Endpoint, HttpClient, PodScraper, PrometheusSource, Source};

/// Seconds between two evaluations, and the Prometheus `rate` window.
const INTERVAL: u64 = 3;
/// Evaluations compared.
const EVALUATIONS: usize = 8;

/// A policy for the zone's four partitions with the target `p99_target_ms`: windows of
/// two intervals, no cooldown, up to four pods, and the breach counted whether or not
/// the pods are loaded (the load check reads a lag that moves between two reads).
fn policy(p99_target_ms: f64) -> Policy {
    let autoscaling = AutoscalingSpec {
        mode: AutoscalingMode::Auto,
        min_replicas: 1,
        max_replicas: Some(4),
        scale_up_window_seconds: 2 * INTERVAL as i64,
        scale_down_window_seconds: 2 * INTERVAL as i64,
        cooldown_seconds: 0,
        interval_seconds: INTERVAL as i64,
        scale_up_only_when_loaded: false,
        ..AutoscalingSpec::default()
    };
    Policy::new(&LatencySpec { p99_target_ms }, &autoscaling, 4)
}

/// Starts a data plane on `partitions` of the zone.
fn dataplane(zone: &Zone, partitions: &str) -> Dataplane {
    let mut args = zone.args(&[]);
    let at = args.iter().position(|a| a == "--partitions").expect("the partitions flag");
    partitions.clone_into(&mut args[at + 1]);
    let mut dp = zone.start_dataplane(&args).expect("the data plane starts");
    dp.wait_ready(Duration::from_secs(30)).expect("the data plane is ready");
    dp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_the_pods_own_metrics_give_the_same_decisions_on_real_data_planes() {
    let Some(zone) = Zone::start("prom-dataplanes", 4).expect("zone starts") else { return };
    let (a, b) = (dataplane(&zone, "0-1"), dataplane(&zone, "2-3"));
    let pods = vec![
        Endpoint { pod: "zone-0".to_owned(), addr: a.admin() },
        Endpoint { pod: "zone-1".to_owned(), addr: b.admin() },
    ];
    let Some(prometheus) = Prometheus::start(&[a.admin(), b.admin()], Duration::from_millis(500))
        .expect("prometheus starts")
    else {
        return;
    };

    // A steady load on every partition for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let (bootstrap, topic) = (zone.bootstrap(), zone.topic(zone::EVENTS));
        std::thread::spawn(move || {
            let w = kafka::Writer::new(&bootstrap).expect("producer");
            let mut seed = 100;
            while !stop.load(Relaxed) {
                let records = verify::stream(seed, 2_000, 4, 40, 16);
                let out: Vec<Outgoing<'_>> =
                    records.iter().map(|(p, v)| Outgoing::value(*p, v)).collect();
                w.send(&topic, &out).expect("sent");
                w.flush().expect("flushed");
                seed += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let matchers = BTreeMap::from([("shard".to_owned(), zone.name().to_owned())]);
    let window = Duration::from_secs(INTERVAL);
    let mut queried =
        PrometheusSource::new(HttpClient::new(), &prometheus.url(), &matchers, window);
    let mut scraped = PodScraper::new(HttpClient::new());
    prometheus.wait_for_rates(zone.name(), &pods, window).await;
    let start = tokio::time::Instant::now();
    // The scrape's first read is its baseline.
    scraped.read(&pods, start.elapsed()).await;

    let (tight, loose) = (policy(0.05), policy(60_000.0));
    let mut scalers = [
        (Autoscaler::new(tight.clone()), Autoscaler::new(tight)),
        (Autoscaler::new(loose.clone()), Autoscaler::new(loose)),
    ];
    let mut seen: [Vec<Reason>; 2] = [Vec::new(), Vec::new()];
    for k in 0..EVALUATIONS {
        tokio::time::sleep(window).await;
        let now = start.elapsed();
        let (q, s) = tokio::join!(queried.read(&pods, now), scraped.read(&pods, now));
        for (signal, name) in [(&q, "Prometheus"), (&s, "the pods' scrape")] {
            let Signal::Observed(o) = signal else {
                panic!("{name} read nothing at {k}: {signal:?}")
            };
            assert_eq!(o.pods_read, 2, "{name} read both pods at {k}: {o:?}");
            assert!(o.p99.is_some() && o.updates > 0.0, "{name} saw updates at {k}: {o:?}");
        }
        for (i, (from_q, from_s)) in scalers.iter_mut().enumerate() {
            let (dq, ds) = (from_q.evaluate(now, 2, &q), from_s.evaluate(now, 2, &s));
            assert_eq!(
                (dq.reason, dq.desired),
                (ds.reason, ds.desired),
                "policy {i} at evaluation {k}: from Prometheus {dq:?}, from the pods {ds:?}\n\
                 Prometheus: {q:?}\npods: {s:?}"
            );
            eprintln!("policy {i} at {k}: {:?} to {} ({})", ds.reason, ds.desired, ds.message);
            seen[i].push(ds.reason);
        }
    }
    stop.store(true, Relaxed);
    load.join().expect("the load thread");
    assert!(
        seen[0].contains(&Reason::LatencyAboveTarget),
        "the tight policy stepped up: {:?}",
        seen[0]
    );
    assert!(
        seen[1].contains(&Reason::LatencyWellUnderTarget),
        "the loose policy stepped down: {:?}",
        seen[1]
    );
}
