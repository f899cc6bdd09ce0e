//! The admin server: `GET /metrics` (Prometheus text format), `GET /healthz`,
//! `GET /readyz` and `GET /status` (JSON), served by [`gameshard_admin`] on a thread of
//! its own, off the pipeline's cores' hot paths.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use gameshard_admin::{Config, Reply, Routes, Server, StatusCode};
use serde::Serialize;

use crate::clock;
use crate::metrics::{Metrics, PartitionState};

/// What the probes and `/status` report beyond the metrics.
#[derive(Default)]
pub struct Health {
    /// `/readyz` answers 200 only while this is set.
    ready: AtomicBool,
    /// Why the data plane is not ready, for `/readyz` and logs.
    reason: Mutex<String>,
    /// `/healthz` answers 500 once this is set: the process is wedged and should be
    /// restarted.
    broken: AtomicBool,
    /// Assignment epoch the data plane follows (0 in standalone mode).
    pub epoch: AtomicU64,
}

impl Health {
    /// Marks the data plane ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Relaxed);
        self.reason.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Marks the data plane not ready, for `reason`.
    pub fn set_not_ready(&self, reason: &str) {
        self.ready.store(false, Relaxed);
        let mut r = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        r.clear();
        r.push_str(reason);
    }

    /// Marks the process as needing a restart.
    pub fn set_broken(&self, reason: &str) {
        self.broken.store(true, Relaxed);
        self.set_not_ready(reason);
    }

    /// Whether the data plane is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    fn reason(&self) -> String {
        self.reason.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The admin server, serving until it is dropped.
pub struct Admin {
    server: Server,
}

impl Admin {
    /// Binds `addr` and serves from a thread named `gs-admin`.
    pub fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> std::io::Result<Self> {
        let config = Config { thread_name: "gs-admin".to_owned(), ..Config::default() };
        let server = Server::start(addr, routes(metrics, health), config)?;
        Ok(Self { server })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }
}

/// The data plane's routes, answered from its metrics and health.
fn routes(metrics: Arc<Metrics>, health: Arc<Health>) -> Routes {
    let page = Arc::clone(&metrics);
    let (live, ready, status_health) = (Arc::clone(&health), Arc::clone(&health), health);
    Routes::new()
        .get("/metrics", move || Reply::metrics(page.render(clock::unix_ms())))
        .get("/healthz", move || {
            if live.broken.load(Relaxed) {
                let body = format!("broken: {}\n", live.reason());
                Reply::text(StatusCode::INTERNAL_SERVER_ERROR, body)
            } else {
                Reply::text(StatusCode::OK, "ok\n")
            }
        })
        .get("/readyz", move || {
            if ready.is_ready() {
                Reply::text(StatusCode::OK, "ready\n")
            } else {
                let body = format!("not ready: {}\n", ready.reason());
                Reply::text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        })
        .get("/status", move || Reply::json(status(&metrics, &status_health)))
}

#[derive(Serialize)]
struct Status<'a> {
    shard: &'a str,
    ready: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    not_ready_reason: String,
    epoch: u64,
    events: u64,
    /// Upper bound of the histogram bucket holding the p99 latency, in seconds.
    latency_p99_le_seconds: Option<f64>,
    partitions: Vec<PartitionStatus>,
}

#[derive(Serialize)]
struct PartitionStatus {
    partition: usize,
    state: PartitionState,
    epoch: u64,
    processed: Option<i64>,
    committed: Option<i64>,
    snapshot: Option<i64>,
    lag: Option<i64>,
}

fn status(metrics: &Metrics, health: &Health) -> String {
    let known = |v: i64| (v >= 0).then_some(v);
    let partitions = metrics
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.held())
        .map(|(partition, p)| PartitionStatus {
            partition,
            state: p.state().0,
            epoch: p.state().1,
            processed: known(p.processed.load(Relaxed)),
            committed: known(p.committed.load(Relaxed)),
            snapshot: known(p.snapshot.load(Relaxed)),
            lag: p.lag(),
        })
        .collect();
    let status = Status {
        shard: metrics.shard(),
        ready: health.is_ready(),
        not_ready_reason: health.reason(),
        epoch: health.epoch.load(Relaxed),
        events: metrics.events(),
        latency_p99_le_seconds: metrics
            .latency
            .quantile_upper_bound(0.99)
            .filter(|v| v.is_finite()),
        partitions,
    };
    serde_json::to_string_pretty(&status).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        + "\n"
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use super::*;

    /// The status line and body of `GET path`.
    fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let (head, body) = get_with_head(addr, path);
        (head.lines().next().unwrap().to_owned(), body)
    }

    fn get_with_head(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    }

    #[test]
    fn endpoints_answer_with_metrics_probes_and_status() {
        let metrics = Arc::new(Metrics::new("zone-1", 4, &["stale_seq"]));
        metrics.partitions[1].set_state(PartitionState::Owned, 3);
        metrics.partitions[1].processed.store(42, Relaxed);
        metrics.applied.fetch_add(3, Relaxed);
        let health = Arc::new(Health::default());
        let admin =
            Admin::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics), Arc::clone(&health))
                .unwrap();
        let addr = admin.addr();

        let (head, body) = get_with_head(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
        assert!(
            body.contains(r#"gameshard_events_total{shard="zone-1",outcome="applied"} 3"#),
            "{body}"
        );

        assert_eq!(get(addr, "/healthz").0, "HTTP/1.1 200 OK");
        health.set_not_ready("restoring partition 1");
        let (line, body) = get(addr, "/readyz");
        assert_eq!(line, "HTTP/1.1 503 Service Unavailable");
        assert!(body.contains("restoring partition 1"));
        health.set_ready();
        assert_eq!(get(addr, "/readyz").0, "HTTP/1.1 200 OK");

        let (head, body) = get_with_head(addr, "/status?pretty");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["shard"], "zone-1");
        assert_eq!(status["events"], 3);
        assert_eq!(status["partitions"][0]["partition"], 1);
        assert_eq!(status["partitions"][0]["processed"], 42);
        assert_eq!(status["partitions"][0]["state"], "owned");
        assert_eq!(status["partitions"][0]["epoch"], 3);
        assert!(status["partitions"][0]["committed"].is_null());

        assert_eq!(get(addr, "/nope").0, "HTTP/1.1 404 Not Found");
        health.set_broken("producer fenced");
        assert_eq!(get(addr, "/healthz").0, "HTTP/1.1 500 Internal Server Error");
    }

    #[test]
    fn a_silent_or_trickling_client_does_not_delay_healthz() {
        let metrics = Arc::new(Metrics::new("s", 1, &[]));
        let admin =
            Admin::start("127.0.0.1:0".parse().unwrap(), metrics, Arc::new(Health::default()))
                .unwrap();
        let _silent = TcpStream::connect(admin.addr()).unwrap();
        let mut trickling = TcpStream::connect(admin.addr()).unwrap();
        trickling.write_all(b"GET /metr").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(get(admin.addr(), "/healthz").0, "HTTP/1.1 200 OK");
        // The slow clients hold their connections for the header timeout (2 s); the probe
        // does not wait for them.
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "/healthz took {took:?}");
    }
}
