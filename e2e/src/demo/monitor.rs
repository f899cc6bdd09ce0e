//! What the demo watches while it runs: once a second, every data-plane process's
//! `/metrics` (events processed, and the `gameshard_event_latency_seconds` histogram,
//! whose deltas summed over the processes give the p99 of that second, as the
//! autoscaler reads them), and local mode's status (replicas, the partition map, the
//! handoffs in flight, the autoscaler's decisions).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use gameshard_operator::local::Status;
use gameshard_operator::signals::{Histogram, Page};

use crate::harness::dataplane;

/// One second of the run.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since the first phase began (negative before).
    pub t: f64,
    /// The phase running, if any.
    pub phase: Option<&'static str>,
    /// Events per second the load generator offered.
    pub offered: f64,
    /// Events per second the data planes processed.
    pub processed: f64,
    /// The p99 of the updates handed to the producer in this second, ms.
    pub p99_ms: Option<f64>,
    /// The p99 the autoscaler last read (over its own interval), ms.
    pub autoscaler_p99_ms: Option<f64>,
    /// The replicas local mode runs towards.
    pub replicas: i32,
    /// The data-plane processes running, and whether each is ready.
    pub pods: Vec<(String, bool)>,
    /// Owner of each partition in the latest assignment.
    pub owners: BTreeMap<u32, String>,
    /// The assignment's epoch.
    pub epoch: u64,
    /// Moves in flight: partition, from, to.
    pub in_flight: Vec<(u32, String, String)>,
}

/// The per-process pages of the previous second, to take deltas.
#[derive(Default)]
pub struct Scraper {
    previous: HashMap<(String, u16), (Option<Histogram>, f64)>,
}

impl Scraper {
    /// Scrapes `pods` (name, port) and returns the events processed and the latency
    /// histogram since the previous call. A process first seen counts from its start.
    pub fn scrape(&mut self, pods: &[(String, u16)]) -> (f64, Histogram) {
        let mut total = Histogram::default();
        let mut events = 0.0;
        let mut current = HashMap::new();
        for (name, port) in pods {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            let Ok((200, text)) = dataplane::get(addr, "/metrics") else { continue };
            let page = Page::parse(&text);
            let processed = events_total(&text);
            let (before_h, before_e) =
                self.previous.remove(&(name.clone(), *port)).unwrap_or((None, 0.0));
            if let Some(h) = &page.latency {
                total.add(&before_h.as_ref().map_or_else(|| h.clone(), |b| h.since(b)));
            }
            events += if processed >= before_e { processed - before_e } else { processed };
            current.insert((name.clone(), *port), (page.latency, processed));
        }
        self.previous = current;
        (events, total)
    }
}

/// `gameshard_events_total` summed over its outcomes.
fn events_total(text: &str) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else { return 0.0 };
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "gameshard_events_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// The status figures of one look.
pub fn look(status: &Arc<Mutex<Status>>) -> Sample {
    let status = status.lock().unwrap_or_else(PoisonError::into_inner);
    let mut sample = Sample {
        replicas: status.replicas,
        pods: status
            .pods
            .iter()
            .filter(|p| p.running && !p.terminating)
            .map(|p| (p.name.clone(), p.ready))
            .collect(),
        autoscaler_p99_ms: status
            .report
            .as_ref()
            .and_then(gameshard_operator::scaler::Report::p99)
            .map(|s| s * 1000.0),
        in_flight: status
            .in_flight
            .iter()
            .map(|m| (m.partition, m.from.clone(), m.to.clone()))
            .collect(),
        ..Sample::default()
    };
    if let Some(a) = &status.seen.log.assignment {
        sample.epoch = a.epoch;
        for p in 0..a.partitions {
            if let Some(owner) = a.owner_of(p) {
                sample.owners.insert(p, owner.to_owned());
            }
        }
    }
    sample
}

/// The running processes' names and admin ports.
pub fn ports(status: &Arc<Mutex<Status>>) -> Vec<(String, u16)> {
    let status = status.lock().unwrap_or_else(PoisonError::into_inner);
    status.pods.iter().filter(|p| p.running).map(|p| (p.name.clone(), p.port)).collect()
}

/// A scale decision or freeze of the autoscaler, seconds after the first phase began.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    /// Seconds since the first phase began.
    pub t: f64,
    /// `ScaledUp`, `ScaledDown`, `RecommendScaleUp`, a freeze's reason...
    pub reason: String,
    /// What the autoscaler said.
    pub note: String,
}

/// The autoscaler's notices since `since`, timed from `origin` (the wall-clock time
/// of the first phase's start).
pub fn decisions(
    status: &Arc<Mutex<Status>>,
    since: SystemTime,
    origin: SystemTime,
) -> Vec<Decided> {
    let status = status.lock().unwrap_or_else(PoisonError::into_inner);
    let secs = |at: SystemTime| match at.duration_since(origin) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    status
        .decisions
        .iter()
        .filter(|n| n.at >= since)
        .map(|n| Decided {
            t: secs(n.at),
            reason: n.notice.reason.to_owned(),
            note: n.notice.note.clone(),
        })
        .collect()
}

/// Sleeps until `next`, then returns the next tick a second later.
pub fn tick(next: Instant) -> Instant {
    std::thread::sleep(next.saturating_duration_since(Instant::now()));
    next + Duration::from_secs(1)
}
