//! The operator's admin server: `/metrics`, `/healthz` and `/readyz`, served by
//! [`gameshard_admin`] on a thread of its own, apart from the controller's runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use gameshard_admin::{Config, Reply, Routes, Server, StatusCode};

use crate::metrics::Metrics;

/// Serves `metrics` on `addr` until the returned server is dropped; `/readyz` answers
/// 200 once `ready` is set.
pub fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> std::io::Result<Server> {
    let routes = Routes::new()
        .get("/metrics", move || Reply::metrics(metrics.render()))
        .get("/healthz", || Reply::text(StatusCode::OK, "ok\n"))
        .get("/readyz", move || {
            if ready.load(Relaxed) {
                Reply::text(StatusCode::OK, "ready\n")
            } else {
                Reply::text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        });
    Server::start(addr, routes, Config::default())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use super::*;

    fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    #[test]
    fn metrics_and_probes_answer_and_readiness_follows_the_flag() {
        let metrics = Metrics::new();
        metrics.shard(
            "games",
            "zone-1",
            crate::metrics::ShardGauges { replicas: 3, ..Default::default() },
        );
        let ready = Arc::new(AtomicBool::new(false));
        let server = serve("127.0.0.1:0".parse().unwrap(), metrics, Arc::clone(&ready)).unwrap();
        let addr = server.addr();

        let (line, body) = get(addr, "/metrics");
        assert_eq!(line, "HTTP/1.1 200 OK");
        assert!(
            body.contains(
                r#"gameshard_operator_replicas{shard="zone-1",shard_namespace="games"} 3"#
            ),
            "{body}"
        );
        assert_eq!(get(addr, "/healthz"), ("HTTP/1.1 200 OK".to_owned(), "ok\n".to_owned()));
        assert_eq!(get(addr, "/readyz").0, "HTTP/1.1 503 Service Unavailable");
        ready.store(true, Relaxed);
        assert_eq!(get(addr, "/readyz").0, "HTTP/1.1 200 OK");
        assert_eq!(get(addr, "/status").0, "HTTP/1.1 404 Not Found");
    }

    #[test]
    fn a_trickling_client_does_not_delay_healthz() {
        let ready = Arc::new(AtomicBool::new(true));
        let server = serve("127.0.0.1:0".parse().unwrap(), Metrics::new(), ready).unwrap();
        let mut trickling = TcpStream::connect(server.addr()).unwrap();
        trickling.write_all(b"GET /metr").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(get(server.addr(), "/healthz").0, "HTTP/1.1 200 OK");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "/healthz took {took:?}");
    }
}
