//! The autoscaler's loop: one task per shard that, every `intervalSeconds`, lists the
//! shard's pods, reads its signals, evaluates the policy and acts on the decision.
//!
//! It knows no Kubernetes: the pods come from an [`Endpoints`] and decisions go out
//! through an [`Actuator`], so the same loop drives a StatefulSet's shard (the Pod
//! list, the scale subresource, Events) and data-plane processes on one machine. It
//! never touches pods or partitions: it writes a replica count, and whatever follows
//! the count (reconcile, or local mode) moves the partitions.
//!
//! Each evaluation leaves a [`Report`]: what the status shows (the p99, the desired
//! replicas, the last decision, the `ScalingLimited` and `SLOBreached` conditions).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use gameshard_crds::{AutoscalingMode, AutoscalingSpec, GameShard, LatencySpec};
use kube::ResourceExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::autoscaler::{
    self, Act, Autoscaler, ConditionState, Decision, Direction, Gap, Missing, Policy, Reason,
    Signal,
};
use crate::metrics::Metrics;
use crate::signals::{Endpoint, Fetch, Signals, Source, SourceSpec};

/// What the loop of one shard runs on; reconcile (or local mode) sends a new one when
/// the spec changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `Auto`, `Recommend` or `Off`.
    pub mode: AutoscalingMode,
    /// The shard is paused: nothing is acted on.
    pub paused: bool,
    /// The policy's settings.
    pub policy: Policy,
    /// The replicas the shard is set to (the scale subresource's `spec.replicas`).
    pub replicas: i32,
    /// Where the signals come from.
    pub source: SourceSpec,
}

impl Config {
    /// The configuration of shard `shard` (its name, the pods' `shard` label) with
    /// these specs, set to `replicas` pods over `partitions` partitions.
    pub fn new(
        shard: &str,
        latency: &LatencySpec,
        autoscaling: &AutoscalingSpec,
        paused: bool,
        replicas: i32,
        partitions: i32,
    ) -> Self {
        let policy = Policy::new(latency, autoscaling, partitions);
        let source = SourceSpec::new(shard, autoscaling.prometheus.as_ref(), policy.interval);
        Self { mode: autoscaling.mode, paused, policy, replicas, source }
    }

    /// The configuration of `shard` from its spec, set to `replicas` pods over
    /// `partitions` partitions.
    pub fn of(shard: &GameShard, replicas: i32, partitions: i32) -> Self {
        let spec = &shard.spec;
        let name = shard.name_any();
        Self::new(&name, &spec.latency, &spec.autoscaling, spec.paused, replicas, partitions)
    }
}

/// The shard's running pods, to read.
pub trait Endpoints: Send + Sync + 'static {
    /// The pods running now.
    fn list(&self) -> impl Future<Output = Result<Vec<Endpoint>, String>> + Send;
}

/// Where decisions go.
pub trait Actuator: Send + Sync + 'static {
    /// Sets the shard's replicas (`Auto` mode).
    fn scale(&self, replicas: i32) -> impl Future<Output = Result<(), String>> + Send;
    /// Tells people about a decision, or that the autoscaler froze.
    fn notify(&self, notice: &Notice) -> impl Future<Output = ()> + Send;
    /// The report changed in a way its reader shows (desired replicas, last decision,
    /// conditions): for example, time to write the status again.
    fn reported(&self, report: &Report);
}

/// A decision or a freeze, for people: a Kubernetes Event, or a line in local mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// A warning rather than a normal event.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What the autoscaler did: `Scale`, `Recommend`, `Freeze`.
    pub action: &'static str,
    /// What it saw and did.
    pub note: String,
}

/// What the latest evaluation leaves for the status.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The mode it ran in.
    pub mode: AutoscalingMode,
    /// The latest decision.
    pub decision: Decision,
    /// The replicas wanted: after the step in `Auto`, the recommendation in
    /// `Recommend`; none in `Off` or while paused.
    pub desired: Option<i32>,
    /// When the autoscaler last scaled the shard.
    pub last_scale: Option<SystemTime>,
    /// The last step or recommendation, for people.
    pub last_decision: Option<String>,
    /// The `ScalingLimited` condition.
    pub scaling_limited: ConditionState,
    /// The `SLOBreached` condition.
    pub slo_breached: ConditionState,
}

impl Report {
    /// The observed p99 in seconds, if the latest evaluation had one.
    pub fn p99(&self) -> Option<f64> {
        self.decision.p99
    }

    /// Whether `other` shows differently in status (p99 figures aside, which change
    /// every interval and are written with the next status anyway).
    fn shows_differently(&self, other: &Report) -> bool {
        let key = |c: &ConditionState| (c.status, c.reason);
        self.desired != other.desired
            || self.last_decision != other.last_decision
            || key(&self.scaling_limited) != key(&other.scaling_limited)
            || key(&self.slo_breached) != key(&other.slo_breached)
    }
}

/// How the loop is paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// Every `intervalSeconds` of the policy, on the runtime's clock.
    Interval,
    /// Only when [`Handle::tick`] says so, at the time it gives: for tests.
    Manual,
}

/// What a loop runs with.
pub struct Shard<E, A, F> {
    /// The shard's namespace (`shard_namespace` of the metrics; anything in local mode).
    pub namespace: String,
    /// The shard's name.
    pub name: String,
    /// Its pods.
    pub endpoints: E,
    /// Where decisions go.
    pub actuator: A,
    /// How pages and queries are fetched.
    pub fetch: F,
    /// The operator's metrics.
    pub metrics: Metrics,
}

type Tick = (Duration, oneshot::Sender<Report>);

/// A running loop; dropping it stops it.
pub struct Handle {
    config: watch::Sender<Config>,
    report: Arc<Mutex<Option<Report>>>,
    ticks: Option<mpsc::Sender<Tick>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Handle {
    /// Sends a new configuration; the next evaluation uses it.
    pub fn update(&self, config: Config) {
        self.config.send_if_modified(|c| {
            let changed = *c != config;
            *c = config;
            changed
        });
    }

    /// The latest report, once the loop has evaluated.
    pub fn report(&self) -> Option<Report> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// With [`Pacing::Manual`], evaluates once at `at` and returns the report; `None`
    /// for a loop paced by its interval or stopped.
    pub async fn tick(&self, at: Duration) -> Option<Report> {
        let ticks = self.ticks.as_ref()?;
        let (reply, report) = oneshot::channel();
        ticks.send((at, reply)).await.ok()?;
        report.await.ok()
    }
}

/// Starts the loop of `shard` with `config`.
pub fn spawn<E: Endpoints, A: Actuator, F: Fetch>(
    shard: Shard<E, A, F>,
    config: Config,
    pacing: Pacing,
) -> Handle {
    let (config_tx, config_rx) = watch::channel(config);
    let report = Arc::new(Mutex::new(None));
    let (ticks, ticks_rx) = match pacing {
        Pacing::Interval => (None, None),
        Pacing::Manual => {
            // One tick at a time: the caller waits for its report before the next.
            let (tx, rx) = mpsc::channel(1);
            (Some(tx), Some(rx))
        }
    };
    let task = tokio::spawn(run(shard, config_rx, Arc::clone(&report), ticks_rx));
    Handle { config: config_tx, report, ticks, task }
}

/// What the loop remembers between evaluations besides the policy's own history.
#[derive(Default)]
struct Memory {
    last_scale: Option<SystemTime>,
    last_decision: Option<String>,
    recommended: Option<i32>,
    /// The action of the hold announced last (`Freeze`, `Hold`), while it lasts.
    held: Option<&'static str>,
    report: Option<Report>,
}

async fn run<E: Endpoints, A: Actuator, F: Fetch>(
    shard: Shard<E, A, F>,
    mut configs: watch::Receiver<Config>,
    shared: Arc<Mutex<Option<Report>>>,
    mut ticks: Option<mpsc::Receiver<Tick>>,
) {
    let start = tokio::time::Instant::now();
    let mut config = configs.borrow_and_update().clone();
    let mut source = Signals::new(&config.source, shard.fetch.clone());
    let mut autoscaler = Autoscaler::new(config.policy.clone());
    let mut replicas = config.replicas;
    let mut memory = Memory::default();
    let mut interval = pace(config.policy.interval);
    loop {
        let (now, reply) = if let Some(ticks) = &mut ticks {
            let Some((at, reply)) = ticks.recv().await else { return };
            (at, Some(reply))
        } else {
            interval.tick().await;
            (start.elapsed(), None)
        };
        if configs.has_changed().unwrap_or(false) {
            let new = configs.borrow_and_update().clone();
            if new.source != config.source {
                source = Signals::new(&new.source, shard.fetch.clone());
            }
            if new.policy != config.policy {
                if new.policy.interval != config.policy.interval {
                    interval = pace(new.policy.interval);
                }
                autoscaler.set_policy(new.policy.clone());
            }
            // Only a change of the configured count moves it: a configuration sent before
            // the loop's own step was seen must not undo that step.
            if new.replicas != config.replicas {
                replicas = new.replicas;
            }
            config = new;
        }
        let signal = match shard.endpoints.list().await {
            Ok(pods) => source.read(&pods, now).await,
            Err(message) => Signal::Missing(Missing {
                gap: Gap::Unavailable,
                message: format!("listing the pods: {message}"),
            }),
        };
        let decision = autoscaler.evaluate(now, replicas, &signal);
        let report =
            act_on(&shard, &config, &mut autoscaler, &mut replicas, &mut memory, now, decision)
                .await;
        *shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
        if memory.report.as_ref().is_none_or(|r| r.shows_differently(&report)) {
            shard.actuator.reported(&report);
        }
        memory.report = Some(report.clone());
        if let Some(reply) = reply {
            let _ = reply.send(report);
        }
    }
}

fn pace(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Carries out `decision` as the mode says, reports it, and returns the report.
async fn act_on<E: Endpoints, A: Actuator, F: Fetch>(
    shard: &Shard<E, A, F>,
    config: &Config,
    autoscaler: &mut Autoscaler,
    replicas: &mut i32,
    memory: &mut Memory,
    now: Duration,
    decision: Decision,
) -> Report {
    let (ns, name) = (shard.namespace.as_str(), shard.name.as_str());
    if let Some(p99) = decision.p99 {
        shard.metrics.observed_p99(ns, name, p99);
    }
    let acting = !config.paused && config.mode != AutoscalingMode::Off;
    // A freeze on missing signals, and a breach that is not the pods' (nothing is scaled,
    // so no decision's Event tells people why the p99 stays above the target), are each
    // said once, when they begin.
    let held = match decision.reason {
        _ if !acting => None,
        Reason::AwaitingSamples => None,
        r if r.is_freeze() => Some("Freeze"),
        Reason::PodsNotLoaded => Some("Hold"),
        _ => None,
    };
    if let Some(action) = held
        && memory.held != held
    {
        tracing::warn!(shard = name, reason = decision.reason.label(), action, message = %decision.message, "autoscaler holding");
        shard
            .actuator
            .notify(&Notice {
                warning: true,
                reason: decision.reason.label(),
                action,
                note: decision.message.clone(),
            })
            .await;
    }
    memory.held = held;

    let desired = match autoscaler::act(config.mode, config.paused, &decision) {
        Act::Scale(n) => match shard.actuator.scale(n).await {
            Ok(()) => {
                let direction = decision.direction().expect("a step has a direction");
                autoscaler.scaled(now, n);
                *replicas = n;
                memory.last_scale = Some(SystemTime::now());
                memory.last_decision = Some(decision.message.clone());
                decided(shard, direction, &decision, "Scale").await;
                Some(n)
            }
            Err(error) => {
                tracing::warn!(shard = name, %error, replicas = n, "cannot scale the shard");
                shard
                    .actuator
                    .notify(&Notice {
                        warning: true,
                        reason: "ScaleFailed",
                        action: "Scale",
                        note: format!("to {n} pods: {error}"),
                    })
                    .await;
                Some(*replicas)
            }
        },
        Act::Recommend(n) => {
            if let Some(direction) = decision.direction()
                && memory.recommended != Some(n)
            {
                memory.last_decision = Some(decision.message.clone());
                decided(shard, direction, &decision, "Recommend").await;
            }
            memory.recommended = Some(n);
            Some(n)
        }
        Act::Nothing if acting => Some(*replicas),
        Act::Nothing => None,
    };
    shard.metrics.desired_replicas(ns, name, desired.unwrap_or(*replicas));
    let scaling_limited = if config.paused {
        ConditionState {
            status: Some(false),
            reason: "Paused",
            message: "spec.paused is set: the autoscaler acts on nothing".to_owned(),
        }
    } else if config.mode == AutoscalingMode::Off {
        ConditionState {
            status: Some(false),
            reason: "AutoscalingOff",
            message:
                "autoscaling.mode is Off: spec.replicas is left to people or another autoscaler"
                    .to_owned(),
        }
    } else {
        decision.scaling_limited()
    };
    Report {
        mode: config.mode,
        slo_breached: decision.slo_breached(config.policy.target),
        desired,
        last_scale: memory.last_scale,
        last_decision: memory.last_decision.clone(),
        scaling_limited,
        decision,
    }
}

/// Counts and announces a step or a recommendation.
async fn decided<E: Endpoints, A: Actuator, F: Fetch>(
    shard: &Shard<E, A, F>,
    direction: Direction,
    decision: &Decision,
    action: &'static str,
) {
    let (ns, name) = (shard.namespace.as_str(), shard.name.as_str());
    shard.metrics.scale_decision(ns, name, direction, decision.reason);
    tracing::info!(
        shard = name,
        action,
        direction = direction.label(),
        reason = decision.reason.label(),
        from = decision.replicas,
        to = decision.desired,
        message = %decision.message,
        "autoscaler decision"
    );
    let reason = match (action, direction) {
        ("Scale", Direction::Up) => "ScaledUp",
        ("Scale", Direction::Down) => "ScaledDown",
        (_, Direction::Up) => "RecommendScaleUp",
        (_, Direction::Down) => "RecommendScaleDown",
    };
    let note = format!("{} ({})", decision.message, decision.reason.label());
    shard.actuator.notify(&Notice { warning: false, reason, action, note }).await;
}

/// The loop of every shard, keyed by (namespace, name).
pub struct Scalers {
    pacing: Pacing,
    running: Mutex<HashMap<(String, String), Handle>>,
}

impl Default for Scalers {
    fn default() -> Self {
        Self::new(Pacing::Interval)
    }
}

impl Scalers {
    /// No loops yet; each starts paced as `pacing` says.
    pub fn new(pacing: Pacing) -> Self {
        Self { pacing, running: Mutex::new(HashMap::new()) }
    }

    /// Sends `config` to the shard's loop, starting it with what `start` gives first if
    /// it does not run.
    pub fn ensure<E: Endpoints, A: Actuator, F: Fetch>(
        &self,
        namespace: &str,
        name: &str,
        config: Config,
        start: impl FnOnce() -> Shard<E, A, F>,
    ) {
        let mut running = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        match running.get(&key) {
            Some(handle) => handle.update(config),
            None => {
                running.insert(key, spawn(start(), config, self.pacing));
            }
        }
    }

    /// The shard's latest report.
    pub fn report(&self, namespace: &str, name: &str) -> Option<Report> {
        self.lock().get(&(namespace.to_owned(), name.to_owned())).and_then(Handle::report)
    }

    /// Evaluates the shard's loop once at `at` ([`Pacing::Manual`] only).
    pub async fn tick(&self, namespace: &str, name: &str, at: Duration) -> Option<Report> {
        let ticks = {
            let running = self.lock();
            running.get(&(namespace.to_owned(), name.to_owned()))?.ticks.clone()?
        };
        let (reply, report) = oneshot::channel();
        ticks.send((at, reply)).await.ok()?;
        report.await.ok()
    }

    /// Stops the loop of a deleted shard.
    pub fn stop(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Handle>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::signals::FetchError;

    /// Pages per URL: the same page until the test changes it.
    #[derive(Clone, Default)]
    struct Pages(Arc<Mutex<BTreeMap<String, String>>>);

    impl Fetch for Pages {
        async fn get(&self, url: &str) -> Result<String, FetchError> {
            self.0
                .lock()
                .unwrap()
                .get(url)
                .cloned()
                .ok_or_else(|| FetchError::Failed(url.to_owned(), "refused".to_owned()))
        }
    }

    struct Pods(Vec<Endpoint>);

    impl Endpoints for Pods {
        async fn list(&self) -> Result<Vec<Endpoint>, String> {
            Ok(self.0.clone())
        }
    }

    /// Records what the loop asks for.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Actuator for Recorder {
        async fn scale(&self, replicas: i32) -> Result<(), String> {
            self.0.lock().unwrap().push(format!("scale {replicas}"));
            Ok(())
        }
        async fn notify(&self, notice: &Notice) {
            self.0.lock().unwrap().push(format!("notice {}", notice.reason));
        }
        fn reported(&self, _: &Report) {}
    }

    /// A data-plane page whose histogram has `fast` updates within 1 ms and `slow`
    /// within 5 ms, cumulative.
    fn page(fast: u64, slow: u64) -> String {
        let h = "gameshard_event_latency_seconds";
        format!(
            "# TYPE {h} histogram\n{h}_bucket{{le=\"0.001\"}} {fast}\n{h}_bucket{{le=\"0.005\"}} {}\n{h}_bucket{{le=\"+Inf\"}} {}\n\
             # TYPE gameshard_updates_total counter\ngameshard_updates_total {}\n\
             # TYPE gameshard_thread_cpu_seconds_total counter\ngameshard_thread_cpu_seconds_total{{thread=\"state\"}} 0\n",
            fast + slow,
            fast + slow,
            fast + slow
        )
    }

    fn config(mode: AutoscalingMode) -> Config {
        configured(mode, 2.0, 8)
    }

    /// A shard of 2 pods over 8 partitions in `mode`, with the target `p99_target_ms`
    /// and at most `max` pods.
    fn configured(mode: AutoscalingMode, p99_target_ms: f64, max: i32) -> Config {
        let spec = AutoscalingSpec {
            mode,
            scale_up_window_seconds: 10,
            cooldown_seconds: 0,
            max_replicas: Some(max),
            ..AutoscalingSpec::default()
        };
        Config::new("zone", &LatencySpec { p99_target_ms }, &spec, false, 2, 8)
    }

    fn start(mode: AutoscalingMode) -> (Handle, Pages, Recorder) {
        let pages = Pages::default();
        let recorder = Recorder::default();
        let pods = Pods(vec![Endpoint { pod: "zone-0".into(), addr: ([127, 0, 0, 1], 1).into() }]);
        let shard = Shard {
            namespace: "game".into(),
            name: "zone".into(),
            endpoints: pods,
            actuator: recorder.clone(),
            fetch: pages.clone(),
            metrics: Metrics::new(),
        };
        (spawn(shard, config(mode), Pacing::Manual), pages, recorder)
    }

    const URL: &str = "http://127.0.0.1:1/metrics";

    fn set(pages: &Pages, page: String) {
        pages.0.lock().unwrap().insert(URL.to_owned(), page);
    }

    #[tokio::test]
    async fn auto_writes_the_step_and_announces_it() {
        let (handle, pages, recorder) = start(AutoscalingMode::Auto);
        set(&pages, page(0, 0));
        let first = handle.tick(Duration::from_secs(15)).await.unwrap();
        assert_eq!(first.decision.reason, Reason::AwaitingSamples);
        // 50 of 100 updates slow: the p99 is in 1-5 ms, above the target.
        set(&pages, page(50, 50));
        let r = handle.tick(Duration::from_secs(30)).await.unwrap();
        assert_eq!((r.decision.reason, r.desired), (Reason::LatencyAboveTarget, Some(4)));
        assert_eq!(r.slo_breached.status, Some(true));
        assert!(r.last_scale.is_some() && r.last_decision.is_some());
        assert_eq!(*recorder.0.lock().unwrap(), ["scale 4", "notice ScaledUp"]);
        // The loop goes on from 4 pods (before the configuration says so).
        set(&pages, page(150, 50));
        let r = handle.tick(Duration::from_secs(45)).await.unwrap();
        assert_eq!((r.decision.replicas, r.desired), (4, Some(4)));
        assert_eq!(handle.report(), Some(r));
    }

    #[tokio::test]
    async fn recommend_only_reports_and_off_only_observes() {
        let (handle, pages, recorder) = start(AutoscalingMode::Recommend);
        set(&pages, page(0, 0));
        handle.tick(Duration::from_secs(15)).await.unwrap();
        set(&pages, page(50, 50));
        let r = handle.tick(Duration::from_secs(30)).await.unwrap();
        assert_eq!(r.desired, Some(4));
        set(&pages, page(100, 100));
        let r = handle.tick(Duration::from_secs(45)).await.unwrap();
        assert_eq!((r.decision.replicas, r.desired), (2, Some(4)), "nothing was scaled");
        assert_eq!(*recorder.0.lock().unwrap(), ["notice RecommendScaleUp"], "announced once");

        handle.update(config(AutoscalingMode::Off));
        set(&pages, page(150, 150));
        let r = handle.tick(Duration::from_secs(60)).await.unwrap();
        assert_eq!(r.desired, None);
        assert_eq!(r.scaling_limited.reason, "AutoscalingOff");
        assert_eq!(r.slo_breached.status, Some(true), "Off still observes");
        assert_eq!(recorder.0.lock().unwrap().len(), 1, "and does nothing");
    }

    #[tokio::test]
    async fn a_new_target_and_new_bounds_take_effect_at_the_next_evaluation() {
        let (handle, pages, recorder) = start(AutoscalingMode::Auto);
        set(&pages, page(0, 0));
        handle.tick(Duration::from_secs(15)).await.unwrap();
        // Half the updates in 1 to 5 ms: a p99 of about 4.9 ms, over the 2 ms target but
        // under a new one of 8 ms (and not under half of it).
        handle.update(configured(AutoscalingMode::Auto, 8.0, 8));
        set(&pages, page(50, 50));
        let r = handle.tick(Duration::from_secs(30)).await.unwrap();
        assert_eq!((r.decision.reason, r.desired), (Reason::WithinTarget, Some(2)));
        // Back to 2 ms with at most 3 pods: the step (2 to 4) stops at the new bound.
        handle.update(configured(AutoscalingMode::Auto, 2.0, 3));
        set(&pages, page(100, 100));
        let r = handle.tick(Duration::from_secs(45)).await.unwrap();
        assert_eq!((r.decision.reason, r.desired), (Reason::LatencyAboveTarget, Some(3)));
        assert!(r.decision.bounded, "the step was cut by the new bound: {:?}", r.decision);
        assert_eq!(*recorder.0.lock().unwrap(), ["scale 3", "notice ScaledUp"]);
    }

    /// `page(fast, slow)` with the state thread's CPU time and partition 0's lag.
    fn loaded_page(fast: u64, slow: u64, cpu_seconds: f64, lag: u64) -> String {
        page(fast, slow).replace(
            "{thread=\"state\"} 0\n",
            &format!(
                "{{thread=\"state\"}} {cpu_seconds}\n\
                 # TYPE gameshard_partition_lag_records gauge\n\
                 gameshard_partition_lag_records{{partition=\"0\"}} {lag}\n"
            ),
        )
    }

    #[tokio::test]
    async fn a_breach_the_pods_keep_up_with_is_announced_once_and_scales_nothing() {
        let (handle, pages, recorder) = start(AutoscalingMode::Auto);
        set(&pages, loaded_page(0, 0, 0.0, 0));
        handle.tick(Duration::from_secs(15)).await.unwrap();
        // Half the updates slow, the state thread idle, nothing behind: three times.
        for k in 2..5 {
            set(&pages, loaded_page(50 * (k - 1), 50 * (k - 1), 0.0, 0));
            let r = handle.tick(Duration::from_secs(15 * k)).await.unwrap();
            assert_eq!((r.decision.reason, r.desired), (Reason::PodsNotLoaded, Some(2)));
            assert_eq!(r.slo_breached.status, Some(true));
            assert_eq!(r.scaling_limited.reason, "PodsNotLoaded");
        }
        assert_eq!(*recorder.0.lock().unwrap(), ["notice PodsNotLoaded"]);
        // The same breach with the state thread busy for 12 of the 15 s: the pods' own,
        // and one sample fills the 10 s up window.
        set(&pages, loaded_page(200, 200, 12.0, 0));
        let r = handle.tick(Duration::from_secs(75)).await.unwrap();
        assert_eq!((r.decision.reason, r.desired), (Reason::LatencyAboveTarget, Some(4)));
        assert_eq!(
            *recorder.0.lock().unwrap(),
            ["notice PodsNotLoaded", "scale 4", "notice ScaledUp"]
        );
    }

    #[tokio::test]
    async fn a_freeze_is_announced_once_when_it_begins() {
        let (handle, pages, recorder) = start(AutoscalingMode::Auto);
        set(&pages, page(0, 0));
        handle.tick(Duration::from_secs(15)).await.unwrap();
        pages.0.lock().unwrap().clear();
        for k in 2..5 {
            let r = handle.tick(Duration::from_secs(15 * k)).await.unwrap();
            assert_eq!(r.decision.reason, Reason::MetricsMissing);
            assert_eq!(r.scaling_limited.status, Some(true));
            assert_eq!(r.slo_breached.status, None);
        }
        assert_eq!(*recorder.0.lock().unwrap(), ["notice MetricsMissing"]);
    }
}
