//! A Prometheus server (Debian's `prometheus`) on a free loopback port, scraping a
//! fixed list of targets with a generated configuration, into its own temporary
//! storage.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gameshard_operator::autoscaler::Signal;
use gameshard_operator::signals::{Endpoint, HttpClient, PrometheusSource, Source};

use super::broker::free_port;
use super::tools;

/// How to get the binary.
const INSTALL: &str = "apt-get install prometheus, or run scripts/setup";

/// A running Prometheus, killed (and its storage removed) when dropped.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `/metrics` of every target every `scrape_interval`
    /// (job `gameshard`), and waits until it is ready. `None`, after saying why, when
    /// the binary is not installed (a failure under `GAMESHARD_REQUIRE_TOOLS`).
    pub fn start(
        targets: &[SocketAddr],
        scrape_interval: Duration,
    ) -> anyhow::Result<Option<Self>> {
        let Some(binary) = tools::require("prometheus", INSTALL) else { return Ok(None) };
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = std::env::temp_dir().join(format!("gameshard-prometheus-{port}"));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, configuration(targets, scrape_interval))?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let mut prometheus = Self { child, addr, dir };
        prometheus.wait_ready(Duration::from_secs(30))?;
        Ok(Some(prometheus))
    }

    /// The base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Waits until its answers give a rate for every one of `pods` of shard `shard`
    /// over `window`, as the autoscaler's Prometheus source reads them.
    pub async fn wait_for_rates(&self, shard: &str, pods: &[Endpoint], window: Duration) {
        let matchers = BTreeMap::from([("shard".to_owned(), shard.to_owned())]);
        let mut probe = PrometheusSource::new(HttpClient::new(), &self.url(), &matchers, window);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Signal::Observed(o) = probe.read(pods, Duration::ZERO).await
                && o.pods_read == pods.len()
            {
                return;
            }
            assert!(Instant::now() < deadline, "no rates in Prometheus: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The folder of its configuration, log and storage.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("prometheus exited with {status}: {}", self.log_text());
            }
            if ready(self.addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready within {timeout:?}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The scrape configuration: one static job over `targets`.
fn configuration(targets: &[SocketAddr], interval: Duration) -> String {
    let ms = interval.as_millis().max(100);
    // A scrape may take at most its interval.
    let timeout = (ms * 4 / 5).max(50);
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {timeout}ms\n\
         scrape_configs:\n  - job_name: gameshard\n    metrics_path: /metrics\n    \
         static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
}

/// Whether `GET /-/ready` answers 200. HTTP/1.0, so the server closes the connection
/// after its answer: a readiness probe in a few lines, where the harness has no HTTP
/// client of its own (the operator's is what the tests exercise).
fn ready(addr: SocketAddr) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.ends_with(b" 200"))
    };
    probe().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_lists_every_target_with_its_interval() {
        let text = configuration(
            &["127.0.0.1:9100".parse().unwrap(), "127.0.0.1:9101".parse().unwrap()],
            Duration::from_millis(500),
        );
        assert!(text.contains("scrape_interval: 500ms"), "{text}");
        assert!(text.contains("scrape_timeout: 400ms"), "{text}");
        assert!(text.contains("targets: ['127.0.0.1:9100', '127.0.0.1:9101']"), "{text}");
    }
}
