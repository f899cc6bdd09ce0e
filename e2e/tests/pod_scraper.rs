//! The autoscaler's pod scraper against real data-plane admin servers: the pages the
//! data plane serves are the ones the operator parses (with `prometheus-parse`, `+Inf`
//! buckets included), and the figures fall where the recorded latencies, lag and thread
//! CPU time put them. Its own test binary: the pipeline threads' CPU time is the test
//! process's, which no other test may add to.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use gameshard_dataplane::admin::Admin;
use gameshard_dataplane::metrics::{Metrics, PartitionState};
use gameshard_engine::World;
use gameshard_engine::spec::SpecWorld;
use gameshard_operator::autoscaler::{Gap, Observation, Signal};
use gameshard_operator::signals::{Endpoint, HttpClient, PodScraper, Source};

fn observe(metrics: &Metrics, ns: u64, n: u64) {
    let mut local = metrics.latency.local();
    local.observe_n(ns, n);
    local.flush_into(&metrics.latency);
    metrics.updates.fetch_add(n, Relaxed);
}

fn observed(signal: Signal) -> Observation {
    match signal {
        Signal::Observed(o) => o,
        Signal::Missing(m) => panic!("no observation: {m:?}"),
    }
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    stat.split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_scraper_reads_the_data_planes_latency_lag_and_cpu() {
    let pods: Vec<(Arc<Metrics>, Admin)> = (0..2)
        .map(|_| {
            let metrics = Arc::new(Metrics::new("zone", 4, SpecWorld::REJECT_REASONS));
            let admin =
                Admin::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics), Arc::default())
                    .expect("admin server");
            (metrics, admin)
        })
        .collect();
    let endpoints: Vec<Endpoint> = pods
        .iter()
        .enumerate()
        .map(|(i, (_, admin))| Endpoint { pod: format!("zone-{i}"), addr: admin.addr() })
        .collect();
    // A state-machine thread (by its name) that spins on command and reports its CPU.
    let (go, go_rx) = std::sync::mpsc::channel::<bool>();
    let (spun, spun_rx) = std::sync::mpsc::channel::<f64>();
    let spinner = std::thread::Builder::new()
        .name("gs-state".into())
        .spawn(move || {
            while let Ok(true) = go_rx.recv() {
                let start = thread_cpu();
                let mut x = 0u64;
                while thread_cpu() - start < 0.2 {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                spun.send(thread_cpu() - start).unwrap();
            }
        })
        .unwrap();

    let mut scraper = PodScraper::new(HttpClient::new());
    let clock = Instant::now();
    let first = scraper.read(&endpoints, clock.elapsed()).await;
    assert!(
        matches!(&first, Signal::Missing(m) if m.gap == Gap::FirstSample),
        "one page per pod is no window: {first:?}"
    );

    // zone-0: 990 updates at 0.3 ms and 10 at 40 ms; zone-1: 1,000 at 0.1 ms. Partition
    // 3 of zone-1 lags 250 records. The state thread spins 0.2 s.
    observe(&pods[0].0, 300_000, 990);
    observe(&pods[0].0, 40_000_000, 10);
    observe(&pods[1].0, 100_000, 1000);
    let lagging = &pods[1].0.partitions[3];
    lagging.set_state(PartitionState::Owned, 1);
    lagging.high_watermark.store(1250, Relaxed);
    lagging.processed.store(1000, Relaxed);
    let before = clock.elapsed();
    go.send(true).unwrap();
    let cpu = spun_rx.recv().unwrap();
    let now = clock.elapsed();
    let o = observed(scraper.read(&endpoints, now).await);
    assert_eq!((o.pods_read, o.pods_running, o.pods_new), (2, 2, 0));
    assert_eq!(o.updates, 2000.0);
    assert_eq!(o.max_lag, Some(250.0));
    // Rank 1,980 of 2,000: the 980th of zone-0's 990 in the 0.2-0.3 ms bucket.
    let p99 = o.p99.expect("a p99");
    assert!((p99 - (0.000_2 + 0.000_1 * 980.0 / 990.0)).abs() < 1e-9, "p99 {p99}");
    // Both pages report the process's one state thread; the window is the time since
    // the previous read, at least as long as the spin.
    assert_eq!(o.busiest_cpu.len(), 2);
    let window = now.as_secs_f64();
    for busiest in &o.busiest_cpu {
        assert!(
            *busiest >= cpu / window * 0.9
                && *busiest <= cpu / now.saturating_sub(before).as_secs_f64() * 1.1,
            "busiest thread {busiest} for {cpu} s of CPU over {window} s"
        );
    }

    // Then 50 of 1,000 updates slower than the last bound, 1 s: in the +Inf bucket, so
    // the p99 is the largest finite bound, as histogram_quantile says.
    observe(&pods[0].0, 300_000, 950);
    observe(&pods[0].0, 2_000_000_000, 50);
    let o = observed(scraper.read(&endpoints, clock.elapsed()).await);
    assert_eq!(o.updates, 1000.0, "zone-1 published nothing this time");
    assert_eq!(o.p99, Some(1.0));

    // A pod whose admin server is gone is not read.
    let mut pods = pods;
    drop(pods.pop());
    let o = observed(scraper.read(&endpoints, clock.elapsed()).await);
    assert_eq!((o.pods_read, o.pods_running, o.pods_new), (1, 2, 0));
    assert_eq!(o.p99, None, "nothing published in the window");

    go.send(false).unwrap();
    spinner.join().unwrap();
}
