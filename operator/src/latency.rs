//! The shard's observed p99: the data-plane pods' event-latency histograms, scraped
//! from their admin servers, merged, and read over the time since the previous scrape.
//!
//! Each pod's histogram is cumulative since the pod started. The operator keeps the
//! previous scrape of every pod and takes the p99 of the difference, summed over the
//! pods, as Prometheus's `histogram_quantile` would over the same window: a pod that
//! restarted (its count went down) counts from zero.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The histogram the data plane exports (seconds from record timestamp to update).
pub const HISTOGRAM: &str = "gameshard_event_latency_seconds";

/// The shortest window a p99 is read over; a reconcile sooner than this after the
/// previous scrape keeps the previous figure.
pub const MIN_WINDOW: Duration = Duration::from_secs(30);

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest scrape accepted, in bytes.
const MAX_SCRAPE: u64 = 4 * 1024 * 1024;

/// Reads a pod's metrics page.
pub trait Scrape: Send + Sync + 'static {
    /// The body of `GET /metrics` on `host:port`.
    fn metrics(&self, host: &str, port: u16)
    -> impl Future<Output = Result<String, String>> + Send;
}

/// Scrapes over plain HTTP/1.1, one connection per scrape.
#[derive(Clone, Copy, Debug, Default)]
pub struct Http;

impl Scrape for Http {
    async fn metrics(&self, host: &str, port: u16) -> Result<String, String> {
        tokio::time::timeout(SCRAPE_TIMEOUT, get(host, port, "/metrics"))
            .await
            .map_err(|_| format!("{host}:{port} did not answer within {SCRAPE_TIMEOUT:?}"))?
    }
}

async fn get(host: &str, port: u16, path: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect((host, port)).await.map_err(|e| format!("{host}:{port}: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("{host}:{port}: {e}"))?;
    let mut response = Vec::new();
    stream
        .take(MAX_SCRAPE)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let text = String::from_utf8(response).map_err(|_| format!("{host}:{port}: not UTF-8"))?;
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| format!("{host}:{port}: no HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{host}:{port}{path}: {status}"));
    }
    Ok(body.to_owned())
}

/// A cumulative latency histogram: upper bounds in seconds (ascending, the last one
/// `+Inf`) and the count of observations at most each.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// `le` of each bucket.
    pub bounds: Vec<f64>,
    /// Cumulative count of each bucket.
    pub counts: Vec<f64>,
}

impl Histogram {
    /// The [`HISTOGRAM`] buckets in a Prometheus text page, summed over every series;
    /// `None` when the page has none.
    pub fn parse(page: &str) -> Option<Self> {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let prefix = format!("{HISTOGRAM}_bucket{{");
        for line in page.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else { continue };
            let Some((labels, value)) = rest.rsplit_once('}') else { continue };
            let Some(le) = label(labels, "le") else { continue };
            let Ok(bound) = le.parse::<f64>() else { continue };
            // A sample may carry a timestamp after its value.
            let Some(Ok(count)) = value.split_whitespace().next().map(str::parse::<f64>) else {
                continue;
            };
            match buckets.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, c)) => *c += count,
                None => buckets.push((bound, count)),
            }
        }
        if buckets.is_empty() {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (bounds, counts) = buckets.into_iter().unzip();
        Some(Self { bounds, counts })
    }

    /// Observations in the histogram.
    pub fn count(&self) -> f64 {
        self.counts.last().copied().unwrap_or(0.0)
    }

    /// `self` minus `earlier` (the same pod's previous scrape), or `self` when the pod
    /// restarted or changed its buckets since.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        if earlier.bounds != self.bounds || earlier.count() > self.count() {
            return self.clone();
        }
        let counts = self.counts.iter().zip(&earlier.counts).map(|(a, b)| a - b).collect();
        Self { bounds: self.bounds.clone(), counts }
    }

    /// Adds `other` (same buckets) to `self`; a histogram with other buckets is skipped.
    fn add(&mut self, other: &Self) {
        if self.counts.is_empty() {
            *self = other.clone();
        } else if self.bounds == other.bounds {
            self.counts.iter_mut().zip(&other.counts).for_each(|(a, b)| *a += b);
        }
    }

    /// The `q` quantile in seconds, interpolated within its bucket as Prometheus's
    /// `histogram_quantile` does (the largest finite bound when it falls in `+Inf`);
    /// `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let i = self.counts.iter().position(|&c| c >= rank)?;
        let upper = self.bounds[i];
        if upper.is_infinite() {
            return self.bounds.iter().rev().copied().find(|b| b.is_finite());
        }
        let (lower, below) =
            if i == 0 { (0.0, 0.0) } else { (self.bounds[i - 1], self.counts[i - 1]) };
        let within = self.counts[i] - below;
        if within <= 0.0 {
            return Some(upper);
        }
        Some(lower + (upper - lower) * (rank - below) / within)
    }
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

/// The previous scrape of each shard's pods, and the p99 last read from them.
#[derive(Default)]
pub struct Windows {
    shards: Mutex<HashMap<(String, String), Window>>,
}

struct Window {
    at: Instant,
    pods: HashMap<String, Histogram>,
    p99: Option<f64>,
}

impl Windows {
    /// Scrapes `pods` (host names) on `port` unless the shard's previous scrape is less
    /// than [`MIN_WINDOW`] old, and returns the shard's p99 in seconds over the window
    /// since that scrape: `None` before a second scrape, or when no update was
    /// published in the window.
    pub async fn p99<S: Scrape>(
        &self,
        scrape: &S,
        shard: (&str, &str),
        pods: &[String],
        port: u16,
    ) -> Option<f64> {
        let key = (shard.0.to_owned(), shard.1.to_owned());
        let now = Instant::now();
        if let Some(w) = self.lock().get(&key)
            && now.duration_since(w.at) < MIN_WINDOW
        {
            return w.p99;
        }
        let pages =
            futures::future::join_all(pods.iter().map(|pod| scrape.metrics(pod, port))).await;
        let mut scraped = HashMap::new();
        for (pod, page) in pods.iter().zip(pages) {
            match page.map(|p| Histogram::parse(&p)) {
                Ok(Some(h)) => {
                    scraped.insert(pod.clone(), h);
                }
                Ok(None) => tracing::debug!(pod, "no latency histogram on the metrics page"),
                Err(error) => tracing::debug!(pod, %error, "cannot scrape a data-plane pod"),
            }
        }
        let mut shards = self.lock();
        let p99 = shards.get(&key).and_then(|previous| {
            let mut window = Histogram { bounds: Vec::new(), counts: Vec::new() };
            // A pod first seen counts from its next scrape: what it has counted so far
            // may be from long before the window.
            for (pod, now) in &scraped {
                if let Some(before) = previous.pods.get(pod) {
                    window.add(&now.since(before));
                }
            }
            window.quantile(0.99)
        });
        shards.insert(key, Window { at: now, pods: scraped, p99 });
        p99
    }

    /// Forgets a deleted shard.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Window>> {
        self.shards.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A p99 in seconds as `kubectl get` shows it: `0.42ms`, `1.8ms`, `12ms`.
pub fn display(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 1.0 {
        format!("{ms:.2}ms")
    } else if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(counts: &[(&str, u64)]) -> String {
        use std::fmt::Write as _;
        let mut s = format!("# TYPE {HISTOGRAM} histogram\n");
        for (le, c) in counts {
            writeln!(s, "{HISTOGRAM}_bucket{{shard=\"z\",le=\"{le}\"}} {c}").unwrap();
        }
        writeln!(s, "{HISTOGRAM}_count{{shard=\"z\"}} {}", counts.last().unwrap().1).unwrap();
        s
    }

    #[test]
    fn parses_and_interpolates_like_histogram_quantile() {
        let h = Histogram::parse(&page(&[("0.001", 90), ("0.002", 100), ("+Inf", 100)]))
            .expect("a histogram");
        assert_eq!(h.bounds, [0.001, 0.002, f64::INFINITY]);
        assert_eq!(h.count(), 100.0);
        // rank 99 is the 9th of the 10 observations between 1 and 2 ms.
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 - 0.0019).abs() < 1e-12, "{p99}");
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.0005 * 50.0 / 45.0).abs() < 1e-12, "{p50}");
    }

    #[test]
    fn a_quantile_in_the_overflow_bucket_is_the_largest_finite_bound() {
        let h = Histogram::parse(&page(&[("0.001", 10), ("0.5", 20), ("+Inf", 100)])).unwrap();
        assert_eq!(h.quantile(0.99), Some(0.5));
    }

    #[test]
    fn no_observations_no_quantile_and_other_metrics_are_ignored() {
        let h = Histogram::parse(&page(&[("0.001", 0), ("+Inf", 0)])).unwrap();
        assert_eq!(h.quantile(0.99), None);
        assert_eq!(Histogram::parse("gameshard_events_total 5\n"), None);
    }

    #[test]
    fn series_of_one_page_are_summed_and_timestamps_ignored() {
        let text = format!(
            "{HISTOGRAM}_bucket{{partition=\"0\",le=\"0.001\"}} 3 1700000000000\n\
             {HISTOGRAM}_bucket{{partition=\"1\",le=\"0.001\"}} 4\n\
             {HISTOGRAM}_bucket{{le=\"+Inf\",partition=\"0\"}} 5\n\
             {HISTOGRAM}_bucket{{le=\"+Inf\",partition=\"1\"}} 4\n"
        );
        let h = Histogram::parse(&text).unwrap();
        assert_eq!(h.counts, [7.0, 9.0]);
    }

    #[test]
    fn the_window_subtracts_the_previous_scrape_unless_the_pod_restarted() {
        let before = Histogram::parse(&page(&[("0.001", 100), ("+Inf", 100)])).unwrap();
        let after = Histogram::parse(&page(&[("0.001", 100), ("+Inf", 150)])).unwrap();
        let window = after.since(&before);
        assert_eq!(window.counts, [0.0, 50.0], "the 50 new observations were all slow");
        let restarted = Histogram::parse(&page(&[("0.001", 5), ("+Inf", 6)])).unwrap();
        assert_eq!(restarted.since(&before), restarted);
    }

    #[test]
    fn display_keeps_two_significant_digits() {
        assert_eq!(display(0.000_42), "0.42ms");
        assert_eq!(display(0.001_84), "1.8ms");
        assert_eq!(display(0.012_3), "12ms");
    }

    /// Pages to hand out, per pod, in order.
    struct Pages(Mutex<HashMap<String, Vec<Result<String, String>>>>);

    impl Scrape for Pages {
        async fn metrics(&self, host: &str, port: u16) -> Result<String, String> {
            assert_eq!(port, 9100);
            let mut pages = self.0.lock().unwrap();
            let queue = pages.get_mut(host).expect("a known pod");
            queue.remove(0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn windows_merge_pods_and_wait_for_a_second_scrape() {
        let pods = vec!["zone-0".to_owned(), "zone-1".to_owned()];
        let pages = Pages(Mutex::new(HashMap::from([
            (
                "zone-0".to_owned(),
                vec![
                    Ok(page(&[("0.001", 1000), ("0.002", 1000), ("+Inf", 1000)])),
                    Ok(page(&[("0.001", 1980), ("0.002", 2000), ("+Inf", 2000)])),
                ],
            ),
            (
                "zone-1".to_owned(),
                vec![
                    Err("connection refused".to_owned()),
                    Ok(page(&[("0.001", 5), ("0.002", 5), ("+Inf", 5)])),
                ],
            ),
        ])));
        let windows = Windows::default();
        let shard = ("game", "zone");
        assert_eq!(windows.p99(&pages, shard, &pods, 9100).await, None, "one scrape: no window");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(windows.p99(&pages, shard, &pods, 9100).await, None, "too soon to scrape");
        tokio::time::advance(MIN_WINDOW).await;
        // zone-0: 1000 new, 980 within 1 ms and 20 within 2 ms; zone-1 is first seen.
        let p99 = windows.p99(&pages, shard, &pods, 9100).await.expect("a window");
        assert!((p99 - 0.0015).abs() < 1e-12, "{p99}");
    }

    #[tokio::test]
    async fn http_scrape_reads_a_real_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = page(&[("0.001", 1), ("+Inf", 1)]);
        let served = body.clone();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let n = socket.read(&mut request).await.unwrap();
            assert!(request[..n].starts_with(b"GET /metrics HTTP/1.1\r\n"));
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{served}",
                served.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
        });
        assert_eq!(Http.metrics("127.0.0.1", port).await, Ok(body));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(Http.metrics("127.0.0.1", port).await.is_err());
    }
}
