//! The admin server: `GET /metrics` (Prometheus text format), `GET /healthz`,
//! `GET /readyz` and `GET /status` (JSON).
//!
//! It runs on a thread of its own with blocking sockets: it serves a scrape every few
//! seconds and a probe or two, so it needs no executor and stays off the pipeline's
//! cores' hot paths. Each connection gets one response and is closed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::clock;
use crate::metrics::{Metrics, PartitionState};

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest request head accepted, in bytes.
const MAX_HEAD: usize = 8 * 1024;

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

/// The admin server, serving until the process exits.
pub struct Admin {
    addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl Admin {
    /// Binds `addr` and serves from a thread named `gs-admin`.
    pub fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let thread = std::thread::Builder::new().name("gs-admin".into()).spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(error) = serve(stream, &metrics, &health) {
                            tracing::debug!(%error, "admin request failed");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "admin accept failed"),
                }
            }
        })?;
        Ok(Self { addr, _thread: thread })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn serve(stream: TcpStream, metrics: &Metrics, health: &Health) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.by_ref().take(MAX_HEAD as u64).read_line(&mut request_line)?;
    // The rest of the head is not needed, but is read so that the client sees a clean
    // close rather than a reset.
    let mut read = request_line.len();
    loop {
        let mut line = String::new();
        let n =
            reader.by_ref().take((MAX_HEAD - read.min(MAX_HEAD)) as u64).read_line(&mut line)?;
        read += n;
        if n == 0 || line == "\r\n" || line == "\n" || read >= MAX_HEAD {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = respond(method, path, metrics, health);
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

const TEXT: &str = "text/plain; charset=utf-8";

fn respond(
    method: &str,
    path: &str,
    metrics: &Metrics,
    health: &Health,
) -> (&'static str, &'static str, String) {
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET and HEAD are served\n".into());
    }
    match path {
        "/metrics" => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render(clock::unix_ms()))
        }
        "/healthz" if health.broken.load(Relaxed) => {
            ("500 Internal Server Error", TEXT, format!("broken: {}\n", health.reason()))
        }
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" if health.is_ready() => ("200 OK", TEXT, "ready\n".into()),
        "/readyz" => ("503 Service Unavailable", TEXT, format!("not ready: {}\n", health.reason())),
        "/status" => ("200 OK", "application/json", status(metrics, health)),
        _ => (
            "404 Not Found",
            TEXT,
            "not found; try /metrics, /healthz, /readyz or /status\n".into(),
        ),
    }
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
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
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

        let (line, body) = get(addr, "/metrics");
        assert_eq!(line, "HTTP/1.1 200 OK");
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

        let (line, body) = get(addr, "/status?pretty");
        assert_eq!(line, "HTTP/1.1 200 OK");
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
    fn a_silent_client_does_not_block_the_server() {
        let metrics = Arc::new(Metrics::new("s", 1, &[]));
        let admin =
            Admin::start("127.0.0.1:0".parse().unwrap(), metrics, Arc::new(Health::default()))
                .unwrap();
        let _silent = TcpStream::connect(admin.addr()).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(get(admin.addr(), "/healthz").0, "HTTP/1.1 200 OK");
        assert!(started.elapsed() < READ_TIMEOUT + Duration::from_secs(1));
    }
}
