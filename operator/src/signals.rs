//! The autoscaler's signals, read from one of two sources that compute the same
//! figures ([`Observation`]):
//!
//! - [`PodScraper`] reads the data-plane pods' metrics pages itself and keeps each
//!   pod's previous page, to take the histogram and counter deltas over the interval
//!   between two reads, summed over the pods, as Prometheus's `rate` does;
//! - [`PrometheusSource`] asks a Prometheus server that scrapes the pods, through its
//!   HTTP API: `histogram_quantile` over the summed bucket rates, and the same lag, CPU
//!   and update figures.
//!
//! Both take the pods to read as [`Endpoint`]s (in Kubernetes the pods' IPs and admin
//! port; in local mode the processes' loopback ports) and time as a [`Duration`] since
//! an arbitrary start, and fetch pages through [`Fetch`]: [`HttpClient`] (hyper-util's
//! client, the one kube-rs uses) or a test's stand-in.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gameshard_crds::PrometheusSpec;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::autoscaler::{Gap, Missing, Observation, Signal};

/// The latency histogram the data plane exports (seconds from record timestamp to
/// update handed to the producer).
pub const HISTOGRAM: &str = "gameshard_event_latency_seconds";
/// Updates handed to the producer.
pub const UPDATES: &str = "gameshard_updates_total";
/// Records a partition lags behind its high watermark.
pub const LAG: &str = "gameshard_partition_lag_records";
/// CPU time of each pipeline thread.
pub const THREAD_CPU: &str = "gameshard_thread_cpu_seconds_total";

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Largest response accepted, in bytes.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// What went wrong fetching a page.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL is not one.
    #[error("{0}: not a URL")]
    BadUrl(String),
    /// No answer in time.
    #[error("{0}: no answer within {TIMEOUT:?}")]
    Timeout(String),
    /// Connecting or reading failed.
    #[error("{0}: {1}")]
    Failed(String, String),
    /// The server answered with an error status.
    #[error("{0}: HTTP {1}: {2}")]
    Status(String, u16, String),
}

/// Gets the body of a URL.
pub trait Fetch: Clone + Send + Sync + 'static {
    /// The body of `GET url`, when the answer is 200.
    fn get(&self, url: &str) -> impl Future<Output = Result<String, FetchError>> + Send;
}

/// HTTP/1 over hyper-util's pooled client, `https://` with the system's roots.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client; without readable system roots it still speaks plain HTTP, and an
    /// `https://` URL fails with a certificate error.
    pub fn new() -> Self {
        let provider = || rustls::crypto::ring::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider()) {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(%error, "no system CA certificates: https URLs will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider().into())
                    .with_safe_default_protocol_versions()
                    .expect("the provider supports the default versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        Self { client: Client::builder(TokioExecutor::new()).build(connector) }
    }
}

impl Fetch for HttpClient {
    async fn get(&self, url: &str) -> Result<String, FetchError> {
        let uri: http::Uri = url.parse().map_err(|_| FetchError::BadUrl(url.to_owned()))?;
        let failed = |e: &dyn std::fmt::Display| FetchError::Failed(url.to_owned(), e.to_string());
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "text/plain, application/json")
            .body(Empty::new())
            .map_err(|e| failed(&e))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| failed(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| failed(&*e))?
                .to_bytes();
            let text = String::from_utf8_lossy(&body).into_owned();
            if status != http::StatusCode::OK {
                let excerpt: String = text.chars().take(200).collect();
                return Err(FetchError::Status(url.to_owned(), status.as_u16(), excerpt));
            }
            Ok(text)
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout(url.to_owned()))?
    }
}

/// A data-plane pod to read: its name and its admin server's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// The pod (or process) name.
    pub pod: String,
    /// Where its `/metrics` is served.
    pub addr: SocketAddr,
}

/// Reads the shard's figures for one interval.
pub trait Source: Send {
    /// The signal at `now` for the running `pods`.
    fn read(&mut self, pods: &[Endpoint], now: Duration) -> impl Future<Output = Signal> + Send;
}

/// Where a shard's signals come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The operator scrapes the pods itself.
    Pods,
    /// A Prometheus server that scrapes them.
    Prometheus {
        /// Base URL of its HTTP API.
        url: String,
        /// Label matchers of every query: `shard` and the spec's own.
        matchers: BTreeMap<String, String>,
        /// The range of the `rate` queries.
        window: Duration,
    },
}

impl SourceSpec {
    /// The source for shard `shard` (the data plane's `--shard`, its `shard` label)
    /// evaluated every `interval`: the GameShard's Prometheus when it names one.
    pub fn new(shard: &str, prometheus: Option<&PrometheusSpec>, interval: Duration) -> Self {
        let Some(p) = prometheus else { return SourceSpec::Pods };
        let mut matchers = p.matchers.clone();
        matchers.insert("shard".to_owned(), shard.to_owned());
        let window = p
            .rate_window_seconds
            .map_or(interval.max(DEFAULT_RATE_WINDOW), |s| Duration::from_secs(s.max(1) as u64));
        SourceSpec::Prometheus { url: p.url.trim_end_matches('/').to_owned(), matchers, window }
    }
}

/// The `rate` range when the spec sets none: four scrapes at the per-shard
/// ServiceMonitor's 15 s.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60);

/// Either source, as a shard's spec selects it.
pub enum Signals<F> {
    /// Scraping the pods.
    Pods(PodScraper<F>),
    /// Asking Prometheus.
    Prometheus(PrometheusSource<F>),
}

impl<F: Fetch> Signals<F> {
    /// The source `spec` names, fetching through `fetch`.
    pub fn new(spec: &SourceSpec, fetch: F) -> Self {
        match spec {
            SourceSpec::Pods => Signals::Pods(PodScraper::new(fetch)),
            SourceSpec::Prometheus { url, matchers, window } => {
                Signals::Prometheus(PrometheusSource::new(fetch, url, matchers, *window))
            }
        }
    }
}

impl<F: Fetch> Source for Signals<F> {
    async fn read(&mut self, pods: &[Endpoint], now: Duration) -> Signal {
        match self {
            Signals::Pods(s) => s.read(pods, now).await,
            Signals::Prometheus(s) => s.read(pods, now).await,
        }
    }
}

/// A cumulative latency histogram: upper bounds in seconds (ascending, the last one
/// `+Inf`) and the count of observations at most each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// `le` of each bucket.
    pub bounds: Vec<f64>,
    /// Cumulative count of each bucket.
    pub counts: Vec<f64>,
}

impl Histogram {
    /// One series' buckets as `prometheus-parse` reads them, in ascending order.
    pub fn from_buckets(buckets: &[prometheus_parse::HistogramCount]) -> Self {
        let mut pairs: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (bounds, counts) = pairs.into_iter().unzip();
        Self { bounds, counts }
    }

    /// Observations in the histogram.
    pub fn count(&self) -> f64 {
        self.counts.last().copied().unwrap_or(0.0)
    }

    /// `self` minus `earlier` (the same pod's previous page), or `self` when the pod
    /// restarted or changed its buckets since: as `rate` treats a counter reset.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        if earlier.bounds != self.bounds || earlier.count() > self.count() {
            return self.clone();
        }
        let counts = self.counts.iter().zip(&earlier.counts).map(|(a, b)| a - b).collect();
        Self { bounds: self.bounds.clone(), counts }
    }

    /// Adds `other` to `self`, bucket by bucket; a histogram with other buckets is
    /// skipped (every data plane of a build has the same ones).
    pub fn add(&mut self, other: &Self) {
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

/// The figures of one data-plane metrics page that the autoscaler uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// [`HISTOGRAM`], summed over its series.
    pub latency: Option<Histogram>,
    /// [`UPDATES`], summed over its series.
    pub updates: Option<f64>,
    /// The largest [`LAG`].
    pub max_lag: Option<f64>,
    /// [`THREAD_CPU`] by `thread` label.
    pub cpu: BTreeMap<String, f64>,
}

impl Page {
    /// Reads a page in the Prometheus text format with `prometheus-parse`.
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
            return Self::default();
        };
        let mut page = Self::default();
        for sample in &scrape.samples {
            match (sample.metric.as_str(), &sample.value) {
                (HISTOGRAM, prometheus_parse::Value::Histogram(buckets)) => {
                    page.latency
                        .get_or_insert_with(Histogram::default)
                        .add(&Histogram::from_buckets(buckets));
                }
                (
                    UPDATES,
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v),
                ) => {
                    *page.updates.get_or_insert(0.0) += v;
                }
                (LAG, prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v)) => {
                    page.max_lag = Some(page.max_lag.map_or(*v, |m| m.max(*v)));
                }
                (
                    THREAD_CPU,
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v),
                ) => {
                    let thread = sample.labels.get("thread").unwrap_or_default().to_owned();
                    *page.cpu.entry(thread).or_default() += v;
                }
                _ => {}
            }
        }
        page
    }
}

/// Scrapes the pods' `/metrics` and keeps each pod's previous page to take deltas.
pub struct PodScraper<F> {
    fetch: F,
    previous: HashMap<String, Scraped>,
}

struct Scraped {
    addr: SocketAddr,
    at: Duration,
    page: Page,
}

impl<F: Fetch> PodScraper<F> {
    /// A scraper with no history.
    pub fn new(fetch: F) -> Self {
        Self { fetch, previous: HashMap::new() }
    }
}

impl<F: Fetch> Source for PodScraper<F> {
    async fn read(&mut self, pods: &[Endpoint], now: Duration) -> Signal {
        if pods.is_empty() {
            self.previous.clear();
            return Signal::Missing(Missing {
                gap: Gap::NoPods,
                message: "no data-plane pod runs".to_owned(),
            });
        }
        let urls: Vec<String> = pods.iter().map(|e| format!("http://{}/metrics", e.addr)).collect();
        let pages = futures::future::join_all(urls.iter().map(|url| self.fetch.get(url))).await;
        let mut latency = Histogram::default();
        let (mut updates, mut read, mut new) = (0.0, 0, 0);
        let mut max_lag: Option<f64> = None;
        let mut busiest = Vec::new();
        let mut since: Option<Duration> = None;
        let mut errors = Vec::new();
        let mut current = HashMap::new();
        for (endpoint, page) in pods.iter().zip(pages) {
            let page = match page {
                Ok(text) => Page::parse(&text),
                Err(error) => {
                    tracing::debug!(pod = %endpoint.pod, %error, "cannot scrape a data-plane pod");
                    errors.push(format!("{}: {error}", endpoint.pod));
                    continue;
                }
            };
            if let Some(lag) = page.max_lag {
                max_lag = Some(max_lag.map_or(lag, |m| m.max(lag)));
            }
            match self.previous.get(&endpoint.pod).filter(|p| p.addr == endpoint.addr) {
                // A pod first seen (or at a new address: restarted) counts from its next
                // page: what it counted so far may be from long before the window.
                None => new += 1,
                Some(before) => {
                    read += 1;
                    since = Some(since.map_or(before.at, |s| s.min(before.at)));
                    let window = now.saturating_sub(before.at).as_secs_f64();
                    let delta = |now: Option<f64>, before: Option<f64>| match (now, before) {
                        (Some(n), Some(b)) if n >= b => n - b,
                        (Some(n), _) => n,
                        (None, _) => 0.0,
                    };
                    let histogram = page.latency.as_ref().map(|h| {
                        before.page.latency.as_ref().map_or_else(|| h.clone(), |b| h.since(b))
                    });
                    if let Some(h) = &histogram {
                        latency.add(h);
                    }
                    // The update counter; a page without one counts its histogram's.
                    updates += match page.updates {
                        Some(_) => delta(page.updates, before.page.updates),
                        None => histogram.as_ref().map_or(0.0, Histogram::count),
                    };
                    let threads: Vec<f64> = page
                        .cpu
                        .iter()
                        .filter_map(|(thread, &s)| {
                            let b = before.page.cpu.get(thread).copied();
                            (window > 0.0).then(|| delta(Some(s), b) / window)
                        })
                        .collect();
                    if let Some(max) = threads.into_iter().reduce(f64::max) {
                        busiest.push(max);
                    }
                }
            }
            current.insert(endpoint.pod.clone(), Scraped { addr: endpoint.addr, at: now, page });
        }
        self.previous = current;
        if read == 0 {
            return Signal::Missing(if errors.is_empty() {
                Missing {
                    gap: Gap::FirstSample,
                    message: "a window needs a second sample".to_owned(),
                }
            } else {
                Missing { gap: Gap::Unavailable, message: errors.join("; ") }
            });
        }
        Signal::Observed(Observation {
            at: now,
            window: now.saturating_sub(since.unwrap_or(now)),
            p99: latency.quantile(0.99),
            updates,
            max_lag,
            busiest_cpu: busiest,
            pods_read: read,
            pods_new: new,
            pods_running: pods.len(),
        })
    }
}

/// Asks a Prometheus server for the same figures, over its HTTP API (`/api/v1/query`).
pub struct PrometheusSource<F> {
    fetch: F,
    url: String,
    selector: String,
    window: Duration,
}

impl<F: Fetch> PrometheusSource<F> {
    /// Queries `url` for the series matching `matchers`, with `rate` over `window`.
    pub fn new(fetch: F, url: &str, matchers: &BTreeMap<String, String>, window: Duration) -> Self {
        let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let selector = matchers
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            fetch,
            url: url.trim_end_matches('/').to_owned(),
            selector: format!("{{{selector}}}"),
            window,
        }
    }

    /// The `PromQL` queries, in the order [`PrometheusSource::read`] asks them.
    pub fn queries(&self) -> [String; 6] {
        let (s, w) = (&self.selector, format!("{}s", self.window.as_secs().max(1)));
        [
            format!("histogram_quantile(0.99, sum by (le) (rate({HISTOGRAM}_bucket{s}[{w}])))"),
            format!("sum(increase({UPDATES}{s}[{w}]))"),
            format!("max({LAG}{s})"),
            format!("max by (instance) (rate({THREAD_CPU}{s}[{w}]))"),
            format!("rate({UPDATES}{s}[{w}])"),
            format!("timestamp({UPDATES}{s})"),
        ]
    }

    async fn query(&self, promql: &str) -> Result<Vec<Series>, String> {
        let query: String =
            form_urlencoded::Serializer::new(String::new()).append_pair("query", promql).finish();
        let body = self
            .fetch
            .get(&format!("{}/api/v1/query?{query}", self.url))
            .await
            .map_err(|e| e.to_string())?;
        let answer: Answer = serde_json::from_str(&body)
            .map_err(|e| format!("{}: not a query answer: {e}", self.url))?;
        match answer {
            Answer { status, data: Some(data), .. }
                if status == "success" && data.result_type == "vector" =>
            {
                Ok(data.result)
            }
            Answer { error, .. } => {
                Err(format!("{}: {promql}: {}", self.url, error.unwrap_or_default()))
            }
        }
    }
}

/// The answer of `/api/v1/query`.
#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    /// The sample's evaluation time (Unix seconds) and value, as the API gives them.
    value: (f64, String),
}

impl Series {
    fn value(&self) -> Option<f64> {
        self.value.1.parse::<f64>().ok().filter(|v| v.is_finite())
    }
}

impl<F: Fetch> Source for PrometheusSource<F> {
    async fn read(&mut self, pods: &[Endpoint], now: Duration) -> Signal {
        if pods.is_empty() {
            return Signal::Missing(Missing {
                gap: Gap::NoPods,
                message: "no data-plane pod runs".to_owned(),
            });
        }
        let queries = self.queries();
        let answers = futures::future::join_all(queries.iter().map(|q| self.query(q))).await;
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            match answer {
                Ok(series) => results.push(series),
                Err(message) => return Signal::Missing(Missing { gap: Gap::Unavailable, message }),
            }
        }
        let [p99, updates, lag, cpu, rated, seen] = <[Vec<Series>; 6]>::try_from(results)
            .unwrap_or_else(|_| unreachable!("six answers for six queries"));
        if seen.is_empty() {
            return Signal::Missing(Missing {
                gap: Gap::Unavailable,
                message: format!("{} has no {UPDATES}{} series", self.url, self.selector),
            });
        }
        // How old the oldest pod's latest sample is, on Prometheus's own clock.
        let age = seen
            .iter()
            .filter_map(|s| Some(s.value.0 - s.value()?))
            .fold(0.0_f64, f64::max)
            .max(0.0);
        let read = rated.len().min(pods.len());
        let first = |v: &[Series]| v.first().and_then(Series::value);
        Signal::Observed(Observation {
            at: now.saturating_sub(Duration::from_secs_f64(age)),
            window: self.window,
            p99: first(&p99),
            updates: first(&updates).unwrap_or(0.0),
            max_lag: first(&lag),
            busiest_cpu: cpu.iter().filter_map(Series::value).collect(),
            pods_read: read,
            pods_new: seen.len().saturating_sub(rated.len()).min(pods.len() - read),
            pods_running: pods.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn page(counts: &[(&str, u64)], updates: u64, cpu: f64) -> String {
        use std::fmt::Write as _;
        let mut s = format!("# HELP {HISTOGRAM} Latency.\n# TYPE {HISTOGRAM} histogram\n");
        for (le, c) in counts {
            writeln!(s, "{HISTOGRAM}_bucket{{shard=\"z\",le=\"{le}\"}} {c}").unwrap();
        }
        writeln!(s, "{HISTOGRAM}_sum{{shard=\"z\"}} 0.5").unwrap();
        writeln!(s, "{HISTOGRAM}_count{{shard=\"z\"}} {}", counts.last().unwrap().1).unwrap();
        writeln!(s, "# TYPE {UPDATES} counter\n{UPDATES}{{shard=\"z\"}} {updates}").unwrap();
        writeln!(s, "# TYPE {THREAD_CPU} counter").unwrap();
        writeln!(s, "{THREAD_CPU}{{shard=\"z\",thread=\"io\"}} {}", cpu / 2.0).unwrap();
        writeln!(s, "{THREAD_CPU}{{shard=\"z\",thread=\"state\"}} {cpu}").unwrap();
        writeln!(s, "# TYPE {LAG} gauge\n{LAG}{{shard=\"z\",partition=\"3\"}} 12").unwrap();
        s
    }

    #[test]
    fn a_page_is_read_with_its_inf_bucket_counters_and_gauges() {
        let p = Page::parse(&page(&[("0.001", 90), ("0.002", 100), ("+Inf", 100)], 100, 3.0));
        let h = p.latency.expect("the histogram");
        assert_eq!(h.bounds, [0.001, 0.002, f64::INFINITY]);
        assert_eq!(h.count(), 100.0);
        assert_eq!(p.updates, Some(100.0));
        assert_eq!(p.max_lag, Some(12.0));
        assert_eq!(p.cpu.get("state"), Some(&3.0));
        // rank 99 is the 9th of the 10 observations between 1 and 2 ms.
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 - 0.0019).abs() < 1e-12, "{p99}");
    }

    #[test]
    fn a_quantile_in_the_overflow_bucket_is_the_largest_finite_bound() {
        let h = Page::parse(&page(&[("0.001", 10), ("0.5", 20), ("+Inf", 100)], 0, 0.0))
            .latency
            .unwrap();
        assert_eq!(h.quantile(0.99), Some(0.5));
    }

    #[test]
    fn series_of_one_page_are_summed_and_timestamps_ignored() {
        let text = format!(
            "# TYPE {HISTOGRAM} histogram\n\
             {HISTOGRAM}_bucket{{partition=\"0\",le=\"0.001\"}} 3 1700000000000\n\
             {HISTOGRAM}_bucket{{partition=\"1\",le=\"0.001\"}} 4\n\
             {HISTOGRAM}_bucket{{le=\"+Inf\",partition=\"0\"}} 5\n\
             {HISTOGRAM}_bucket{{le=\"+Inf\",partition=\"1\"}} 4\n"
        );
        assert_eq!(Page::parse(&text).latency.unwrap().counts, [7.0, 9.0]);
        assert_eq!(Page::parse("gameshard_events_total 5\n"), Page::default());
    }

    #[test]
    fn the_window_subtracts_the_previous_page_unless_the_pod_restarted() {
        let h = |c: &[(&str, u64)]| Page::parse(&page(c, 0, 0.0)).latency.unwrap();
        let before = h(&[("0.001", 100), ("+Inf", 100)]);
        let after = h(&[("0.001", 100), ("+Inf", 150)]);
        assert_eq!(after.since(&before).counts, [0.0, 50.0], "the 50 new were all slow");
        let restarted = h(&[("0.001", 5), ("+Inf", 6)]);
        assert_eq!(restarted.since(&before), restarted);
    }

    /// Pages per URL, handed out in order; a URL with none left is refused.
    #[derive(Clone, Default)]
    struct Pages(Arc<Mutex<HashMap<String, Vec<String>>>>);

    impl Fetch for Pages {
        async fn get(&self, url: &str) -> Result<String, FetchError> {
            let mut pages = self.0.lock().unwrap();
            match pages.get_mut(url) {
                Some(q) if !q.is_empty() => Ok(q.remove(0)),
                _ => Err(FetchError::Failed(url.to_owned(), "connection refused".to_owned())),
            }
        }
    }

    fn pod(n: u8) -> Endpoint {
        Endpoint { pod: format!("zone-{n}"), addr: ([10, 0, 0, n], 9100).into() }
    }

    #[tokio::test]
    async fn the_scraper_merges_the_pods_deltas_over_its_interval() {
        let pages = Pages::default();
        pages.0.lock().unwrap().extend([
            (
                "http://10.0.0.1:9100/metrics".to_owned(),
                vec![
                    page(&[("0.001", 1000), ("0.002", 1000), ("+Inf", 1000)], 1000, 10.0),
                    page(&[("0.001", 1980), ("0.002", 2000), ("+Inf", 2000)], 2000, 17.5),
                ],
            ),
            (
                "http://10.0.0.2:9100/metrics".to_owned(),
                vec![
                    page(&[("0.001", 5), ("0.002", 5), ("+Inf", 5)], 5, 1.0),
                    page(&[("0.001", 5), ("0.002", 5), ("+Inf", 5)], 5, 1.0),
                ],
            ),
        ]);
        let mut scraper = PodScraper::new(pages);
        let pods = [pod(1), pod(2)];
        let first = scraper.read(&pods, Duration::from_secs(100)).await;
        assert!(
            matches!(first, Signal::Missing(Missing { gap: Gap::FirstSample, .. })),
            "{first:?}"
        );
        let Signal::Observed(o) = scraper.read(&pods, Duration::from_secs(115)).await else {
            panic!("an observation")
        };
        // zone-1: 1000 new, 980 within 1 ms and 20 within 2 ms; zone-2: none.
        let p99 = o.p99.expect("a p99");
        assert!((p99 - 0.0015).abs() < 1e-12, "{p99}");
        assert_eq!((o.updates, o.pods_read, o.pods_running, o.pods_new), (1000.0, 2, 2, 0));
        assert_eq!((o.at, o.window), (Duration::from_secs(115), Duration::from_secs(15)));
        assert_eq!(o.max_lag, Some(12.0));
        // zone-1's state thread ran 7.5 s in 15 s; zone-2's nothing.
        assert_eq!(o.busiest_cpu, [0.5, 0.0]);
        // Both pods are gone now: a third read has nothing.
        let third = scraper.read(&pods, Duration::from_secs(130)).await;
        let Signal::Missing(m) = third else { panic!("missing") };
        assert_eq!(m.gap, Gap::Unavailable);
        assert!(
            m.message.contains("zone-1") && m.message.contains("connection refused"),
            "{}",
            m.message
        );
    }

    #[tokio::test]
    async fn a_pod_that_fails_or_is_new_is_not_read_and_no_pods_is_missing() {
        let pages = Pages::default();
        let one = "http://10.0.0.1:9100/metrics".to_owned();
        pages
            .0
            .lock()
            .unwrap()
            .insert(one, (0..3).map(|_| page(&[("0.001", 1), ("+Inf", 1)], 1, 0.0)).collect());
        let mut scraper = PodScraper::new(pages.clone());
        scraper.read(&[pod(1)], Duration::from_secs(1)).await;
        let Signal::Observed(o) = scraper.read(&[pod(1), pod(2)], Duration::from_secs(2)).await
        else {
            panic!("an observation")
        };
        assert_eq!((o.pods_read, o.pods_new, o.pods_running), (1, 0, 2), "zone-2 failed");
        assert_eq!(o.p99, None, "no update in the window");
        pages
            .0
            .lock()
            .unwrap()
            .insert("http://10.0.0.2:9100/metrics".to_owned(), vec![page(&[("+Inf", 1)], 1, 0.0)]);
        let Signal::Observed(o) = scraper.read(&[pod(1), pod(2)], Duration::from_secs(3)).await
        else {
            panic!("an observation")
        };
        assert_eq!((o.pods_read, o.pods_new, o.pods_running), (1, 1, 2), "zone-2 is new");
        let none = scraper.read(&[], Duration::from_secs(4)).await;
        assert!(matches!(none, Signal::Missing(Missing { gap: Gap::NoPods, .. })));
    }

    #[test]
    fn prometheus_queries_select_the_shard_and_the_specs_matchers() {
        let spec = PrometheusSpec {
            url: "http://prom:9090/".into(),
            matchers: BTreeMap::from([("namespace".to_owned(), "game".to_owned())]),
            rate_window_seconds: None,
        };
        let SourceSpec::Prometheus { url, matchers, window } =
            SourceSpec::new("zone", Some(&spec), Duration::from_secs(15))
        else {
            panic!("a Prometheus source")
        };
        assert_eq!((url.as_str(), window), ("http://prom:9090", DEFAULT_RATE_WINDOW));
        let source =
            PrometheusSource::new(Pages::default(), &url, &matchers, Duration::from_secs(20));
        assert_eq!(
            source.queries()[0],
            "histogram_quantile(0.99, sum by (le) (rate(gameshard_event_latency_seconds_bucket{namespace=\"game\",shard=\"zone\"}[20s])))"
        );
        assert_eq!(
            source.queries()[2],
            "max(gameshard_partition_lag_records{namespace=\"game\",shard=\"zone\"})"
        );
        assert_eq!(SourceSpec::new("zone", None, Duration::from_secs(15)), SourceSpec::Pods);
    }

    #[tokio::test]
    async fn prometheus_answers_become_an_observation_and_errors_a_gap() {
        let pages = Pages::default();
        let source = PrometheusSource::new(
            pages.clone(),
            "http://prom:9090",
            &BTreeMap::from([("shard".to_owned(), "z".to_owned())]),
            Duration::from_secs(15),
        );
        let vector = |values: &[(f64, &str)]| {
            let result: Vec<serde_json::Value> = values
                .iter()
                .map(|(t, v)| serde_json::json!({"metric": {}, "value": [t, v]}))
                .collect();
            serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string()
        };
        let answers = [
            vector(&[(1000.0, "0.0025")]),
            vector(&[(1000.0, "4000")]),
            vector(&[(1000.0, "7")]),
            vector(&[(1000.0, "0.5"), (1000.0, "0.25")]),
            vector(&[(1000.0, "100"), (1000.0, "120")]),
            vector(&[(1000.0, "996"), (1000.0, "999")]),
        ];
        for (q, a) in source.queries().iter().zip(answers) {
            let url = format!(
                "http://prom:9090/api/v1/query?{}",
                form_urlencoded::Serializer::new(String::new()).append_pair("query", q).finish()
            );
            pages.0.lock().unwrap().insert(url, vec![a]);
        }
        let mut source = source;
        let Signal::Observed(o) = source.read(&[pod(1), pod(2)], Duration::from_secs(50)).await
        else {
            panic!("an observation")
        };
        assert_eq!(o.p99, Some(0.0025));
        assert_eq!(
            (o.updates, o.max_lag, o.busiest_cpu.clone()),
            (4000.0, Some(7.0), vec![0.5, 0.25])
        );
        assert_eq!((o.pods_read, o.pods_new, o.pods_running), (2, 0, 2));
        assert_eq!(o.at, Duration::from_secs(46), "the oldest sample is 4 s old");
        // Nothing answers any more.
        let Signal::Missing(m) = source.read(&[pod(1), pod(2)], Duration::from_secs(65)).await
        else {
            panic!("missing")
        };
        assert_eq!(m.gap, Gap::Unavailable);
        assert!(m.message.contains("connection refused"), "{}", m.message);
    }

    #[tokio::test]
    async fn the_http_client_reads_a_real_server_and_reports_refusals() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = vec![0; 1024];
                let n = socket.read(&mut request).await.unwrap();
                assert!(request[..n].starts_with(b"GET /metrics HTTP/1.1\r\n"));
                let body = "up 1\n";
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            }
        });
        let client = HttpClient::new();
        let url = format!("http://{addr}/metrics");
        assert_eq!(client.get(&url).await, Ok("up 1\n".to_owned()));
        assert!(matches!(client.get(&url).await, Err(FetchError::Status(_, 503, _))));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = client.get(&format!("http://127.0.0.1:{port}/metrics")).await;
        assert!(matches!(refused, Err(FetchError::Failed(..))), "{refused:?}");
    }
}
