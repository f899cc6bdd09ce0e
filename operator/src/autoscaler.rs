//! The autoscaling policy: from the shard's latency, lag and load signals, how many
//! data-plane pods it should run.
//!
//! Pure: time comes in as a [`Duration`] since an arbitrary start, and nothing here
//! reads a clock, talks to a pod or knows Kubernetes. [`Autoscaler::evaluate`] is called
//! once per interval with the current replicas and the [`Signal`] read for that
//! interval; [`Autoscaler::scaled`] tells it that a decision was carried out.
//!
//! The rules:
//! - **Up**: the p99 above the target (or a partition's lag above `maxLagRecords`, the
//!   leading signal) in every sample of the up window. The step grows with the breach:
//!   `ceil(replicas × (p99 / target − 1))`, at least 1, at most `maxStep`.
//! - **Only when the pods are the cause** (`scaleUpOnlyWhenLoaded`, the default): a p99
//!   above the target counts as a breach in a sample whose pods are loaded: a pod's
//!   busiest thread at `targetUtilization` or more, or a partition [`BEHIND`] records or
//!   more behind (or either not known). Otherwise the time is spent before the shard (in
//!   the producers or the brokers: the records reach the pods late, and the pods keep up
//!   with them), and more pods would not lower it: the autoscaler holds, says so, and
//!   the `SLOBreached` condition still reports the breach.
//! - **Down**, by one: the p99 under `scaleDownBelow × target` (or no update at all,
//!   with every pod read) in every sample of the longer down window, and the pods left
//!   can carry the measured load: the busiest thread's CPU share averaged over the pods,
//!   times `n / (n − 1)`, at most `targetUtilization`.
//! - Never above `maxReplicas` or the partition count, never below `minReplicas`; at
//!   least `cooldownSeconds` between two steps.
//! - **Freeze** while a signal is missing, stale (older than two intervals) or partial
//!   (fewer pods read than run): no step either way, and the windows start again, since a
//!   window must be observed whole.
//!
//! A window is covered by samples: each sample accounts for the time since the sample
//! before it, as far back as its own span reaches (a first sample, at most one
//! evaluation interval), and a window is full once the samples in a row cover it. A
//! sample that comes late (a slow scrape or tick) but spans the time since the last one
//! continues the run; one whose span leaves a gap starts it again. A breach that begins
//! at time `B` is therefore acted on by `B + up window + one interval`: the first sample
//! that shows it ends at most one interval after `B`.

use std::time::Duration;

use gameshard_crds::{AutoscalingMode, AutoscalingSpec, LatencySpec};

/// Records a partition must lag behind for its pod to count as loaded when the p99
/// breaches: a pod that keeps up is at most a fetch or two behind at any moment, and an
/// overloaded one falls further behind with every record.
pub const BEHIND: f64 = 100.0;

/// The policy's settings, from a shard's spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Target p99, seconds.
    pub target: f64,
    /// How long a breach must last before scaling up.
    pub up_window: Duration,
    /// How long the p99 must stay well under the target before scaling down.
    pub down_window: Duration,
    /// "Well under": this share of the target.
    pub scale_down_below: f64,
    /// Most projected CPU share of the busiest thread on the pods left after a step down.
    pub target_utilization: f64,
    /// A p99 breach counts only while the pods are loaded.
    pub only_when_loaded: bool,
    /// Lag, in records, above which a partition counts as a breach.
    pub max_lag: f64,
    /// Most pods added or removed in one step.
    pub max_step: i32,
    /// Least time between two steps.
    pub cooldown: Duration,
    /// Time between two evaluations.
    pub interval: Duration,
    /// Fewest pods.
    pub min: i32,
    /// Most pods (never more than the partitions).
    pub max: i32,
}

impl Policy {
    /// The policy of a shard with these specs and `partitions` input partitions.
    pub fn new(latency: &LatencySpec, a: &AutoscalingSpec, partitions: i32) -> Self {
        let secs = |s: i64| Duration::from_secs(s.max(0) as u64);
        let (min, max) = bounds(a, partitions);
        Self {
            target: latency.p99_target_ms / 1000.0,
            up_window: secs(a.scale_up_window_seconds),
            down_window: secs(a.scale_down_window_seconds),
            scale_down_below: a.scale_down_below,
            target_utilization: a.target_utilization,
            only_when_loaded: a.scale_up_only_when_loaded,
            max_lag: a.max_lag_records as f64,
            max_step: a.max_step.max(1),
            cooldown: secs(a.cooldown_seconds),
            interval: secs(a.interval_seconds.max(1)),
            min,
            max,
        }
    }
}

/// The replica bounds of a shard with `partitions` partitions: `minReplicas` and
/// `maxReplicas`, the latter by default and at most the partition count (a pod without
/// a partition serves nothing), the former at most the latter.
pub fn bounds(a: &AutoscalingSpec, partitions: i32) -> (i32, i32) {
    let partitions = partitions.max(1);
    let max = a.max_replicas.unwrap_or(partitions).clamp(1, partitions);
    (a.min_replicas.clamp(1, max), max)
}

/// What the signals said about one interval.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// The figures were read.
    Observed(Observation),
    /// They could not be read.
    Missing(Missing),
}

/// The shard's figures over one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// When the oldest figure of the observation was sampled.
    pub at: Duration,
    /// The span the rates and the p99 cover, ending at `at`.
    pub window: Duration,
    /// p99 event latency over the window, seconds, from the histogram deltas summed
    /// over the pods; `None` when no update was published in it.
    pub p99: Option<f64>,
    /// Updates published in the window, over the pods read.
    pub updates: f64,
    /// The largest partition lag, in records; `None` when no pod reports one.
    pub max_lag: Option<f64>,
    /// Per pod read, its busiest pipeline thread's CPU seconds per second over the
    /// window (pods that report no thread CPU are left out).
    pub busiest_cpu: Vec<f64>,
    /// Pods whose figures are in the observation.
    pub pods_read: usize,
    /// Pods seen for the first time (one sample, no window yet): not read, not failed.
    pub pods_new: usize,
    /// Pods running.
    pub pods_running: usize,
}

/// Why there are no figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// What kind of gap.
    pub gap: Gap,
    /// What failed, for people.
    pub message: String,
}

/// Kinds of missing signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gap {
    /// The first sample: a window needs two.
    FirstSample,
    /// No data-plane pod runs.
    NoPods,
    /// The source failed or has no series.
    Unavailable,
}

/// Why the autoscaler decided what it did: a CamelCase code, the `reason` of the
/// decision metric, of Events and of the conditions ([`Reason::label`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Up: the p99 stayed above the target for the up window.
    LatencyAboveTarget,
    /// Up: a partition's lag stayed above `maxLagRecords` for the up window.
    LagAboveThreshold,
    /// Down: the p99 stayed well under the target for the down window.
    LatencyWellUnderTarget,
    /// Down: no update was published for the down window.
    Idle,
    /// Up to `minReplicas`: the shard ran fewer.
    BelowMinReplicas,
    /// Down to `maxReplicas`: the shard ran more.
    AboveMaxReplicas,
    /// Held: the breach has not lasted the up window yet.
    BreachNotSustained,
    /// Held: the p99 has not been well under the target for the down window yet.
    CalmNotSustained,
    /// Held: neither above the target nor well under it.
    WithinTarget,
    /// Held: the p99 is above the target, but no pod is busy and no partition is behind:
    /// the time is spent before the shard, and more pods would not lower it.
    PodsNotLoaded,
    /// Held: more pods are wanted but the shard is at `maxReplicas`.
    AtMaxReplicas,
    /// Held: fewer pods would do but the shard is at `minReplicas`.
    AtMinReplicas,
    /// Held: the pods left after a step down would be busier than `targetUtilization`.
    RemainingPodsTooBusy,
    /// Held: the pods' CPU time is not known, so a step down cannot be checked.
    LoadUnknown,
    /// Held: too soon after the last step.
    Cooldown,
    /// Frozen: the signals could not be read.
    MetricsMissing,
    /// Frozen: the latest figures are older than two intervals.
    MetricsStale,
    /// Frozen: fewer pods were read than run.
    MetricsPartial,
    /// Frozen, briefly: a window needs a second sample of every pod.
    AwaitingSamples,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 19] = [
        Reason::LatencyAboveTarget,
        Reason::LagAboveThreshold,
        Reason::LatencyWellUnderTarget,
        Reason::Idle,
        Reason::BelowMinReplicas,
        Reason::AboveMaxReplicas,
        Reason::BreachNotSustained,
        Reason::CalmNotSustained,
        Reason::WithinTarget,
        Reason::PodsNotLoaded,
        Reason::AtMaxReplicas,
        Reason::AtMinReplicas,
        Reason::RemainingPodsTooBusy,
        Reason::LoadUnknown,
        Reason::Cooldown,
        Reason::MetricsMissing,
        Reason::MetricsStale,
        Reason::MetricsPartial,
        Reason::AwaitingSamples,
    ];

    /// The CamelCase code: the metric label, the Event and condition reason.
    pub fn label(self) -> &'static str {
        match self {
            Reason::LatencyAboveTarget => "LatencyAboveTarget",
            Reason::LagAboveThreshold => "LagAboveThreshold",
            Reason::LatencyWellUnderTarget => "LatencyWellUnderTarget",
            Reason::Idle => "Idle",
            Reason::BelowMinReplicas => "BelowMinReplicas",
            Reason::AboveMaxReplicas => "AboveMaxReplicas",
            Reason::BreachNotSustained => "BreachNotSustained",
            Reason::CalmNotSustained => "CalmNotSustained",
            Reason::WithinTarget => "WithinTarget",
            Reason::PodsNotLoaded => "PodsNotLoaded",
            Reason::AtMaxReplicas => "AtMaxReplicas",
            Reason::AtMinReplicas => "AtMinReplicas",
            Reason::RemainingPodsTooBusy => "RemainingPodsTooBusy",
            Reason::LoadUnknown => "LoadUnknown",
            Reason::Cooldown => "Cooldown",
            Reason::MetricsMissing => "MetricsMissing",
            Reason::MetricsStale => "MetricsStale",
            Reason::MetricsPartial => "MetricsPartial",
            Reason::AwaitingSamples => "AwaitingSamples",
        }
    }

    /// Whether the decision was a freeze on missing, stale or partial signals.
    pub fn is_freeze(self) -> bool {
        matches!(
            self,
            Reason::MetricsMissing
                | Reason::MetricsStale
                | Reason::MetricsPartial
                | Reason::AwaitingSamples
        )
    }
}

/// Which way a step goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// More pods.
    Up,
    /// Fewer pods.
    Down,
}

impl Direction {
    /// The `direction` label of the decision metric.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// The outcome of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Pods the shard runs.
    pub replicas: i32,
    /// Pods it should run: `replicas` unless this is a step.
    pub desired: i32,
    /// Why.
    pub reason: Reason,
    /// The bounds stopped the autoscaler from going where the signals point.
    pub bounded: bool,
    /// The p99 the decision was made on, seconds.
    pub p99: Option<f64>,
    /// Whether the p99 is above the target; `None` without figures.
    pub slo_breached: Option<bool>,
    /// What the autoscaler saw and did, for people.
    pub message: String,
}

impl Decision {
    /// The step's direction; `None` when the replicas stay.
    pub fn direction(&self) -> Option<Direction> {
        match self.desired.cmp(&self.replicas) {
            std::cmp::Ordering::Greater => Some(Direction::Up),
            std::cmp::Ordering::Less => Some(Direction::Down),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// The `ScalingLimited` condition: true while the bounds clamp the decision, the
    /// signals are missing, or a breach is not the pods' to fix.
    pub fn scaling_limited(&self) -> ConditionState {
        let limited =
            self.reason.is_freeze() || self.bounded || self.reason == Reason::PodsNotLoaded;
        let (status, reason) =
            if limited { (Some(true), self.reason.label()) } else { (Some(false), "WithinBounds") };
        ConditionState { status, reason, message: self.message.clone() }
    }

    /// The `SLOBreached` condition: the latest p99 against the target; unknown without
    /// figures.
    pub fn slo_breached(&self, target: f64) -> ConditionState {
        let (status, reason, message) = match (self.slo_breached, self.p99) {
            (Some(true), Some(p99)) => (
                Some(true),
                "LatencyAboveTarget",
                format!("p99 {} above the target {}", ms(p99), ms(target)),
            ),
            (Some(false), Some(p99)) => (
                Some(false),
                "LatencyWithinTarget",
                format!("p99 {} within the target {}", ms(p99), ms(target)),
            ),
            (Some(_), None) => {
                (Some(false), "NoUpdates", "no update was published in the window".to_owned())
            }
            (None, _) => (None, self.reason.label(), self.message.clone()),
        };
        ConditionState { status, reason, message }
    }
}

/// A condition's state, without the Kubernetes type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    /// True, false, or unknown (`None`).
    pub status: Option<bool>,
    /// CamelCase reason.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// What the mode makes of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Write the replicas (`Auto`).
    Scale(i32),
    /// Only report the desired replicas (`Recommend`).
    Recommend(i32),
    /// Nothing: `Off`, a paused shard, or no step.
    Nothing,
}

/// What `mode` does with `decision`: `Auto` writes a step, `Recommend` reports the
/// desired replicas, `Off` and a paused shard do nothing.
pub fn act(mode: AutoscalingMode, paused: bool, decision: &Decision) -> Act {
    if paused {
        return Act::Nothing;
    }
    match mode {
        AutoscalingMode::Auto if decision.direction().is_some() => Act::Scale(decision.desired),
        AutoscalingMode::Recommend => Act::Recommend(decision.desired),
        AutoscalingMode::Auto | AutoscalingMode::Off => Act::Nothing,
    }
}

/// The policy's memory between evaluations: the runs of breaching and calm samples,
/// the last step and the replicas last seen.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    policy: Policy,
    /// Start of the run of breaching samples.
    above_since: Option<Duration>,
    /// Start of the run of calm samples.
    below_since: Option<Duration>,
    /// When the last sample was evaluated, to tell a gap.
    last_at: Option<Duration>,
    /// When the replicas last changed.
    last_scale: Option<Duration>,
    /// Replicas at the last evaluation.
    last_replicas: Option<i32>,
}

impl Autoscaler {
    /// A policy with no history.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            above_since: None,
            below_since: None,
            last_at: None,
            last_scale: None,
            last_replicas: None,
        }
    }

    /// The settings.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// New settings (the spec changed); the history stays.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The decision carried out at `now`: the shard runs `replicas` from now on. The
    /// cooldown starts, and the windows start again on the new size.
    pub fn scaled(&mut self, now: Duration, replicas: i32) {
        self.last_scale = Some(now);
        self.last_replicas = Some(replicas);
        self.reset();
    }

    fn reset(&mut self) {
        self.above_since = None;
        self.below_since = None;
        self.last_at = None;
    }

    /// Evaluates `signal` at `now` for a shard running `replicas` pods.
    #[allow(clippy::too_many_lines)] // one rule after the other, in the order they apply
    pub fn evaluate(&mut self, now: Duration, replicas: i32, signal: &Signal) -> Decision {
        let p = self.policy.clone();
        if self.last_replicas.is_some_and(|r| r != replicas) {
            // Someone else scaled (a person, an HPA): a step like ours.
            self.last_scale = Some(now);
            self.reset();
        }
        self.last_replicas = Some(replicas);
        let hold = |reason: Reason, message: String| Decision {
            replicas,
            desired: replicas,
            reason,
            bounded: false,
            p99: None,
            slo_breached: None,
            message,
        };

        let o = match signal {
            Signal::Missing(m) => {
                self.reset();
                let reason = match m.gap {
                    Gap::FirstSample => Reason::AwaitingSamples,
                    Gap::NoPods | Gap::Unavailable => Reason::MetricsMissing,
                };
                return hold(reason, format!("holding {replicas} pods: {}", m.message));
            }
            Signal::Observed(o) => o,
        };
        let age = now.saturating_sub(o.at);
        if age > 2 * p.interval {
            self.reset();
            return hold(
                Reason::MetricsStale,
                format!(
                    "holding {replicas} pods: the latest figures are {}s old, more than two intervals",
                    age.as_secs()
                ),
            );
        }
        if o.pods_running == 0 {
            self.reset();
            return hold(
                Reason::MetricsMissing,
                format!("holding {replicas} pods: no data-plane pod runs"),
            );
        }
        if o.pods_read < o.pods_running {
            self.reset();
            let (reason, what) = if o.pods_read + o.pods_new >= o.pods_running {
                (Reason::AwaitingSamples, "new pods need a second sample")
            } else {
                (Reason::MetricsPartial, "the others could not be read")
            };
            return hold(
                reason,
                format!(
                    "holding {replicas} pods: {} of {} pods read; {what}",
                    o.pods_read, o.pods_running
                ),
            );
        }
        if o.p99.is_none() && o.updates > 0.0 {
            self.reset();
            return hold(
                Reason::MetricsMissing,
                format!(
                    "holding {replicas} pods: updates were published but no latency histogram was read"
                ),
            );
        }

        let lag_breach = o.max_lag.is_some_and(|lag| lag > p.max_lag);
        let latency_breach = o.p99.is_some_and(|p99| p99 > p.target);
        let busiest = o.busiest_cpu.iter().copied().fold(0.0, f64::max);
        // Without the CPU time of every pod read, or without any lag, the pods may be
        // loaded: a breach is then theirs, as it is without this rule (and a step down
        // cannot be checked).
        let load_known = !o.busiest_cpu.is_empty() && o.busiest_cpu.len() >= o.pods_read;
        let loaded = !p.only_when_loaded
            || !load_known
            || busiest >= p.target_utilization
            || o.max_lag.is_none_or(|lag| lag >= BEHIND);
        // A breach the pods neither cause nor can fix breaks the run, as a sample within
        // the target does: a step up needs the whole window to be the pods'.
        let breach = lag_breach || (latency_breach && loaded);
        let not_loaded = latency_breach && !breach;
        let calm = !lag_breach
            && !latency_breach
            && o.p99.map_or(o.updates <= 0.0, |p99| p99 < p.scale_down_below * p.target);
        // Each sample covers the window it ends. One that reaches back to the last sample
        // continues the runs, however late it came (a slow tick, a slow scrape); one that
        // leaves a gap since the last breaks them. A first sample counts for at most one
        // interval, whatever its window.
        let from = now.saturating_sub(o.window);
        let start = match self.last_at {
            Some(last) if from <= last + p.interval / 2 => last.max(from),
            last => {
                if last.is_some() {
                    self.above_since = None;
                    self.below_since = None;
                }
                now.saturating_sub(o.window.min(p.interval))
            }
        };
        self.last_at = Some(now);
        self.above_since = if breach { Some(self.above_since.unwrap_or(start)) } else { None };
        self.below_since = if calm { Some(self.below_since.unwrap_or(start)) } else { None };
        // Timer jitter: a window covered to within a twentieth of an interval is full.
        let slack = p.interval / 20;
        let covered = |since: Option<Duration>, window: Duration| {
            since.is_some_and(|s| now.saturating_sub(s) + slack >= window)
        };

        let seen = describe(o, &p);
        let mut d = Decision {
            replicas,
            desired: replicas,
            reason: Reason::WithinTarget,
            bounded: false,
            p99: o.p99,
            slo_breached: Some(latency_breach),
            message: String::new(),
        };
        if replicas < p.min {
            d.desired = p.min;
            d.reason = Reason::BelowMinReplicas;
            d.message = format!("{} pods, fewer than minReplicas {}", replicas, p.min);
        } else if replicas > p.max {
            d.desired = p.max;
            d.reason = Reason::AboveMaxReplicas;
            d.message = format!("{} pods, more than the most allowed, {}", replicas, p.max);
        } else if breach {
            let sustained = covered(self.above_since, p.up_window);
            d.reason =
                if latency_breach { Reason::LatencyAboveTarget } else { Reason::LagAboveThreshold };
            let lasted = now.saturating_sub(self.above_since.unwrap_or(now)).as_secs();
            if sustained {
                let step = match o.p99.filter(|_| latency_breach) {
                    Some(p99) => (f64::from(replicas) * (p99 / p.target - 1.0)).ceil() as i32,
                    None => 1,
                }
                .clamp(1, p.max_step);
                let wanted = replicas + step;
                d.desired = wanted.min(p.max);
                d.bounded = wanted > p.max;
                if d.desired == replicas {
                    d.reason = Reason::AtMaxReplicas;
                    d.message = format!(
                        "{seen} for {lasted}s: more pods wanted, but {replicas} is the most allowed"
                    );
                } else {
                    d.message = format!("{seen} for {lasted}s: {replicas} to {} pods", d.desired);
                }
            } else {
                d.reason = Reason::BreachNotSustained;
                d.message = format!(
                    "{seen}: above the threshold for {lasted}s of the {}s up window",
                    p.up_window.as_secs()
                );
            }
        } else if not_loaded {
            d.reason = Reason::PodsNotLoaded;
            d.message = format!(
                "{seen}, but the pods keep up (busiest thread {:.0}%, under the {:.0}% target; \
                 no partition {BEHIND:.0} records behind): the time is spent before the shard, \
                 and more pods would not lower it; holding {replicas} pods",
                busiest * 100.0,
                p.target_utilization * 100.0
            );
        } else if calm {
            let sustained = covered(self.below_since, p.down_window);
            let lasted = now.saturating_sub(self.below_since.unwrap_or(now)).as_secs();
            if !sustained {
                d.reason = Reason::CalmNotSustained;
                d.message = format!(
                    "{seen}: well under the target for {lasted}s of the {}s down window",
                    p.down_window.as_secs()
                );
            } else if replicas <= p.min {
                d.reason = Reason::AtMinReplicas;
                d.bounded = true;
                d.message = format!(
                    "{seen} for {lasted}s: fewer pods would do, but {replicas} is the fewest allowed"
                );
            } else if !load_known {
                d.reason = Reason::LoadUnknown;
                d.message = format!(
                    "{seen}: the pods' CPU time is not known, so a step down cannot be checked"
                );
            } else {
                let n = f64::from(replicas);
                let average = o.busiest_cpu.iter().sum::<f64>() / o.busiest_cpu.len() as f64;
                let projected = average * n / (n - 1.0);
                if projected > p.target_utilization {
                    d.reason = Reason::RemainingPodsTooBusy;
                    d.message = format!(
                        "{seen}: {} pods would be {:.0}% busy, above the {:.0}% target",
                        replicas - 1,
                        projected * 100.0,
                        p.target_utilization * 100.0
                    );
                } else {
                    d.desired = replicas - 1;
                    d.reason =
                        if o.p99.is_some() { Reason::LatencyWellUnderTarget } else { Reason::Idle };
                    d.message = format!(
                        "{seen} for {lasted}s: {replicas} to {} pods, {:.0}% busy",
                        d.desired,
                        projected * 100.0
                    );
                }
            }
        } else {
            d.message = format!("{seen}: holding {replicas} pods");
        }
        if d.direction().is_some()
            && let Some(last) = self.last_scale
            && now.saturating_sub(last) < p.cooldown
        {
            d.message = format!(
                "{}; held for the cooldown, {}s of {}s since the last step",
                d.message,
                now.saturating_sub(last).as_secs(),
                p.cooldown.as_secs()
            );
            d.desired = replicas;
            d.reason = Reason::Cooldown;
        }
        d
    }
}

/// The figures of `o` against `p`, for people.
fn describe(o: &Observation, p: &Policy) -> String {
    let latency = match o.p99 {
        Some(p99) => format!("p99 {} (target {})", ms(p99), ms(p.target)),
        None => "no update published".to_owned(),
    };
    match o.max_lag {
        Some(lag) if lag > p.max_lag => {
            format!("{latency}, lag {lag:.0} records (most {:.0})", p.max_lag)
        }
        _ => latency,
    }
}

/// Seconds as milliseconds, two significant digits: `0.42ms`, `1.8ms`, `12ms`.
pub fn ms(seconds: f64) -> String {
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

    const I: Duration = Duration::from_secs(15);

    fn policy() -> Policy {
        Policy {
            target: 0.002,
            up_window: Duration::from_secs(60),
            down_window: Duration::from_secs(300),
            scale_down_below: 0.5,
            target_utilization: 0.6,
            only_when_loaded: true,
            max_lag: 10_000.0,
            max_step: 3,
            cooldown: Duration::from_secs(120),
            interval: I,
            min: 2,
            max: 10,
        }
    }

    /// An observation of `pods` pods, all read, ending at `at` after one interval: 10
    /// records behind, their busiest thread 20% busy, or 70% with a p99 above the 2 ms
    /// target (a breach of their own).
    fn seen(at: Duration, p99_ms: Option<f64>, pods: usize) -> Signal {
        let busy = if p99_ms.is_some_and(|ms| ms > 2.0) { 0.7 } else { 0.2 };
        Signal::Observed(Observation {
            at,
            window: I,
            p99: p99_ms.map(|ms| ms / 1000.0),
            updates: if p99_ms.is_some() { 1000.0 } else { 0.0 },
            max_lag: Some(10.0),
            busiest_cpu: vec![busy; pods],
            pods_read: pods,
            pods_new: 0,
            pods_running: pods,
        })
    }

    fn with(signal: Signal, f: impl FnOnce(&mut Observation)) -> Signal {
        let Signal::Observed(mut o) = signal else { panic!("an observation") };
        f(&mut o);
        Signal::Observed(o)
    }

    fn t(intervals: u32) -> Duration {
        I * intervals
    }

    /// Evaluates every interval from `from` to `to` (inclusive) with `signal(at)`,
    /// returning the first step, if any.
    fn run(
        a: &mut Autoscaler,
        replicas: i32,
        ticks: std::ops::RangeInclusive<u32>,
        signal: impl Fn(Duration) -> Signal,
    ) -> Option<(Duration, Decision)> {
        for k in ticks {
            let d = a.evaluate(t(k), replicas, &signal(t(k)));
            if d.direction().is_some() {
                return Some((t(k), d));
            }
        }
        None
    }

    #[test]
    fn a_breach_scales_up_after_the_up_window_and_at_most_one_interval_more() {
        // The breach begins at various points within an interval. The sample that ends
        // the first interval it touches shows it when enough of that interval breached
        // (here: more than a third of it).
        for offset_s in [0, 1, 5, 7, 14] {
            let begins = t(4) + Duration::from_secs(offset_s);
            let mut a = Autoscaler::new(policy());
            let shows = |at: Duration| at.checked_sub(begins).is_some_and(|d| d > I / 3);
            let (at, d) =
                run(&mut a, 4, 1..=40, |at| seen(at, Some(if shows(at) { 2.4 } else { 1.5 }), 4))
                    .expect("a step up");
            assert_eq!(d.reason, Reason::LatencyAboveTarget);
            assert!(
                at.saturating_sub(begins) <= policy().up_window + I,
                "offset {offset_s}: {at:?}"
            );
            // The samples that showed the breach cover the whole up window.
            let first_shown = (1..40).map(t).find(|&x| shows(x)).unwrap();
            assert!(
                (at + I).saturating_sub(first_shown) >= policy().up_window,
                "offset {offset_s}"
            );
        }
    }

    #[test]
    fn a_breach_shorter_than_the_up_window_does_not_scale() {
        let mut a = Autoscaler::new(policy());
        // Three breaching intervals (45 s of a 60 s window), then within target.
        let step = run(&mut a, 4, 1..=20, |at| {
            seen(at, Some(if (t(2)..=t(4)).contains(&at) { 3.0 } else { 1.5 }), 4)
        });
        assert_eq!(step, None);
        let d = a.evaluate(t(21), 4, &seen(t(21), Some(3.0), 4));
        assert_eq!(d.reason, Reason::BreachNotSustained);
        assert_eq!(d.slo_breached, Some(true));
    }

    #[test]
    fn the_step_grows_with_the_breach_up_to_max_step() {
        // (p99 ms against a 2 ms target, replicas) -> pods added.
        for (p99, replicas, added) in
            [(2.1, 4, 1), (2.6, 4, 2), (2.9, 4, 2), (3.0, 6, 3), (8.0, 4, 3)]
        {
            let mut a = Autoscaler::new(policy());
            let (_, d) = run(&mut a, replicas, 1..=10, |at| seen(at, Some(p99), replicas as usize))
                .expect("a step");
            assert_eq!(d.desired - replicas, added, "p99 {p99} ms on {replicas} pods");
        }
    }

    #[test]
    fn a_breach_the_pods_keep_up_with_holds_and_says_why() {
        // The records reach the pods late: 20% busy and 10 records behind.
        let late = |at| with(seen(at, Some(3.0), 4), |o| o.busiest_cpu = vec![0.2; 4]);
        let mut a = Autoscaler::new(policy());
        assert_eq!(run(&mut a, 4, 1..=40, late), None);
        let d = a.evaluate(t(41), 4, &late(t(41)));
        assert_eq!((d.reason, d.desired), (Reason::PodsNotLoaded, 4));
        assert_eq!(d.slo_breached(0.002).status, Some(true), "the breach is still reported");
        assert_eq!(d.scaling_limited().status, Some(true));
        assert_eq!(d.scaling_limited().reason, "PodsNotLoaded");
        assert!(d.message.contains("busiest thread 20%"), "{}", d.message);
    }

    #[test]
    fn a_breach_counts_for_a_pod_at_the_target_utilization_or_a_partition_behind() {
        let cases: [(&str, f64, f64); 3] = [
            ("busy", 0.6, 10.0),
            ("behind, on a core it shares", 0.3, BEHIND),
            ("both", 0.9, 5_000.0),
        ];
        for (name, busiest, lag) in cases {
            let loaded = |at| {
                with(seen(at, Some(3.0), 4), |o| {
                    o.busiest_cpu = vec![0.1, 0.1, busiest, 0.1];
                    o.max_lag = Some(lag);
                })
            };
            let mut a = Autoscaler::new(policy());
            let (at, d) = run(&mut a, 4, 1..=10, loaded).expect(name);
            assert_eq!((at, d.reason, d.desired), (t(4), Reason::LatencyAboveTarget, 6), "{name}");
        }
    }

    #[test]
    fn with_the_load_check_off_a_breach_the_pods_keep_up_with_scales() {
        let late = |at| with(seen(at, Some(3.0), 4), |o| o.busiest_cpu = vec![0.2; 4]);
        let mut a = Autoscaler::new(Policy { only_when_loaded: false, ..policy() });
        let (at, d) = run(&mut a, 4, 1..=10, late).expect("a step");
        assert_eq!((at, d.reason, d.desired), (t(4), Reason::LatencyAboveTarget, 6));
    }

    #[test]
    fn without_the_load_known_a_breach_counts() {
        for (name, cpu, lag) in
            [("no CPU time", vec![], Some(10.0)), ("one pod's CPU time", vec![0.1], Some(10.0))]
                .into_iter()
                .chain([("no lag", vec![0.1; 4], None)])
        {
            let blind = |at| {
                with(seen(at, Some(3.0), 4), |o| {
                    o.busiest_cpu.clone_from(&cpu);
                    o.max_lag = lag;
                })
            };
            let mut a = Autoscaler::new(policy());
            let (_, d) = run(&mut a, 4, 1..=10, blind).expect(name);
            assert_eq!(d.reason, Reason::LatencyAboveTarget, "{name}");
        }
    }

    #[test]
    fn a_sample_the_pods_keep_up_with_starts_the_up_window_again() {
        let mut a = Autoscaler::new(policy());
        let sample = |k: u32| {
            let s = seen(t(k), Some(3.0), 4);
            if k == 3 { with(s, |o| o.busiest_cpu = vec![0.2; 4]) } else { s }
        };
        let decisions: Vec<Reason> =
            (1..=7).map(|k| a.evaluate(t(k), 4, &sample(k)).reason).collect();
        assert_eq!(
            decisions,
            [
                Reason::BreachNotSustained,
                Reason::BreachNotSustained,
                Reason::PodsNotLoaded,
                Reason::BreachNotSustained,
                Reason::BreachNotSustained,
                Reason::BreachNotSustained,
                Reason::LatencyAboveTarget,
            ]
        );
    }

    #[test]
    fn lag_alone_is_a_breach_and_scales_up_by_one() {
        let mut a = Autoscaler::new(policy());
        let (_, d) = run(&mut a, 4, 1..=10, |at| {
            with(seen(at, Some(1.0), 4), |o| o.max_lag = Some(50_000.0))
        })
        .expect("a step");
        assert_eq!((d.desired, d.reason), (5, Reason::LagAboveThreshold));
        assert_eq!(d.slo_breached, Some(false), "the p99 itself is within the target");
    }

    #[test]
    fn the_up_window_counts_whole_samples_in_a_row() {
        let mut a = Autoscaler::new(policy());
        for k in 1..=3 {
            assert_eq!(
                a.evaluate(t(k), 4, &seen(t(k), Some(2.9), 4)).reason,
                Reason::BreachNotSustained
            );
        }
        // The fourth breaching sample completes 60 s.
        let d = a.evaluate(t(4), 4, &seen(t(4), Some(2.9), 4));
        assert_eq!((d.reason, d.desired), (Reason::LatencyAboveTarget, 6));
    }

    #[test]
    fn calm_for_the_down_window_scales_down_by_one() {
        let mut a = Autoscaler::new(policy());
        let (at, d) = run(&mut a, 5, 1..=40, |at| seen(at, Some(0.5), 5)).expect("a step down");
        assert_eq!((d.desired, d.reason), (4, Reason::LatencyWellUnderTarget));
        assert_eq!(at, policy().down_window, "20 samples of 15 s");
        assert_eq!(d.direction(), Some(Direction::Down));
    }

    #[test]
    fn a_p99_under_the_target_but_not_well_under_holds() {
        let mut a = Autoscaler::new(policy());
        assert_eq!(run(&mut a, 5, 1..=40, |at| seen(at, Some(1.2), 5)), None);
        assert_eq!(a.evaluate(t(41), 5, &seen(t(41), Some(1.2), 5)).reason, Reason::WithinTarget);
    }

    #[test]
    fn an_idle_shard_read_whole_counts_as_calm() {
        let mut a = Autoscaler::new(policy());
        let (_, d) = run(&mut a, 5, 1..=40, |at| seen(at, None, 5)).expect("a step down");
        assert_eq!((d.desired, d.reason), (4, Reason::Idle));
        assert_eq!(d.scaling_limited().status, Some(false));
        assert_eq!(d.slo_breached(0.002).reason, "NoUpdates");
    }

    #[test]
    fn the_load_check_blocks_a_step_down_the_remaining_pods_cannot_carry() {
        // 4 pods at 50% each would be 67% on 3: above the 60% target.
        let busy = |at| with(seen(at, Some(0.5), 4), |o| o.busiest_cpu = vec![0.4, 0.5, 0.6, 0.5]);
        let mut a = Autoscaler::new(policy());
        assert_eq!(run(&mut a, 4, 1..=40, busy), None);
        let d = a.evaluate(t(41), 4, &busy(t(41)));
        assert_eq!(d.reason, Reason::RemainingPodsTooBusy);
        // At 40% each, 53% on 3: it goes.
        let lighter = |at| with(seen(at, Some(0.5), 4), |o| o.busiest_cpu = vec![0.4; 4]);
        let d = a.evaluate(t(42), 4, &lighter(t(42)));
        assert_eq!((d.desired, d.reason), (3, Reason::LatencyWellUnderTarget));
    }

    #[test]
    fn without_the_pods_cpu_time_there_is_no_step_down() {
        let mut a = Autoscaler::new(policy());
        let blind = |at| with(seen(at, Some(0.5), 4), |o| o.busiest_cpu = vec![0.1, 0.1]);
        assert_eq!(run(&mut a, 4, 1..=40, blind), None);
        assert_eq!(a.evaluate(t(41), 4, &blind(t(41))).reason, Reason::LoadUnknown);
    }

    #[test]
    fn never_above_max_replicas_nor_below_min_replicas() {
        let mut a = Autoscaler::new(Policy { max: 5, ..policy() });
        let (_, d) = run(&mut a, 4, 1..=10, |at| seen(at, Some(8.0), 4)).expect("a step");
        assert_eq!(d.desired, 5, "three wanted, one allowed");
        assert!(d.bounded);
        assert_eq!(d.scaling_limited().status, Some(true));
        a.scaled(t(10), 5);
        let d = a.evaluate(t(40), 5, &seen(t(40), Some(8.0), 5));
        assert_eq!(run(&mut a, 5, 41..=60, |at| seen(at, Some(8.0), 5)), None);
        assert_eq!(d.direction(), None);
        let d = a.evaluate(t(61), 5, &seen(t(61), Some(8.0), 5));
        assert_eq!((d.reason, d.desired), (Reason::AtMaxReplicas, 5));
        assert_eq!(
            d.scaling_limited(),
            ConditionState {
                status: Some(true),
                reason: "AtMaxReplicas",
                message: d.message.clone()
            }
        );

        let mut a = Autoscaler::new(policy());
        assert_eq!(run(&mut a, 2, 1..=40, |at| seen(at, Some(0.1), 2)), None);
        let d = a.evaluate(t(41), 2, &seen(t(41), Some(0.1), 2));
        assert_eq!((d.reason, d.desired), (Reason::AtMinReplicas, 2));
        assert_eq!(d.scaling_limited().status, Some(true));
    }

    #[test]
    fn replicas_outside_the_bounds_are_brought_back_within_them() {
        let mut a = Autoscaler::new(policy());
        let d = a.evaluate(t(1), 1, &seen(t(1), Some(1.5), 1));
        assert_eq!((d.desired, d.reason), (2, Reason::BelowMinReplicas));
        let mut a = Autoscaler::new(policy());
        let d = a.evaluate(t(1), 12, &seen(t(1), Some(1.5), 12));
        assert_eq!((d.desired, d.reason), (10, Reason::AboveMaxReplicas));
    }

    #[test]
    fn the_bounds_never_exceed_the_partitions() {
        let spec = AutoscalingSpec {
            min_replicas: 40,
            max_replicas: Some(64),
            ..AutoscalingSpec::default()
        };
        assert_eq!(bounds(&spec, 16), (16, 16));
        assert_eq!(bounds(&AutoscalingSpec::default(), 16), (1, 16));
        let p = Policy::new(&LatencySpec { p99_target_ms: 2.0 }, &AutoscalingSpec::default(), 16);
        assert_eq!((p.target, p.max, p.interval), (0.002, 16, Duration::from_secs(15)));
    }

    #[test]
    fn the_cooldown_holds_a_step_that_comes_too_soon_after_the_last() {
        let mut a = Autoscaler::new(Policy { up_window: I, ..policy() });
        let d = a.evaluate(t(1), 4, &seen(t(1), Some(2.9), 4));
        assert_eq!(d.desired, 6);
        a.scaled(t(1), 6);
        // Still breaching: the windows are full again after one sample, but 120 s of
        // cooldown run from the step.
        for k in 2..=8 {
            let d = a.evaluate(t(k), 6, &seen(t(k), Some(2.9), 6));
            assert_eq!((d.reason, d.desired), (Reason::Cooldown, 6), "at {k}");
        }
        let d = a.evaluate(t(9), 6, &seen(t(9), Some(2.9), 6));
        assert_eq!((d.reason, d.desired), (Reason::LatencyAboveTarget, 9));
    }

    #[test]
    fn someone_else_scaling_starts_the_cooldown_and_the_windows_again() {
        let mut a = Autoscaler::new(Policy { up_window: t(2), ..policy() });
        assert_eq!(
            a.evaluate(t(1), 4, &seen(t(1), Some(3.0), 4)).reason,
            Reason::BreachNotSustained
        );
        // A person scaled to 5 meanwhile.
        let d = a.evaluate(t(2), 5, &seen(t(2), Some(3.0), 5));
        assert_eq!(d.reason, Reason::BreachNotSustained, "the window starts again");
        assert_eq!(a.evaluate(t(3), 5, &seen(t(3), Some(3.0), 5)).reason, Reason::Cooldown);
    }

    #[test]
    fn missing_data_freezes_and_breaks_the_window() {
        let mut a = Autoscaler::new(policy());
        let missing = Signal::Missing(Missing {
            gap: Gap::Unavailable,
            message: "connection refused".into(),
        });
        for k in 1..=3 {
            a.evaluate(t(k), 4, &seen(t(k), Some(3.0), 4));
        }
        let d = a.evaluate(t(4), 4, &missing);
        assert_eq!((d.reason, d.desired, d.slo_breached), (Reason::MetricsMissing, 4, None));
        assert_eq!(d.scaling_limited().status, Some(true));
        assert_eq!(d.scaling_limited().reason, "MetricsMissing");
        assert_eq!(d.slo_breached(0.002).status, None);
        assert!(d.message.contains("connection refused"), "{}", d.message);
        // The window starts again: four more breaching samples before a step.
        for k in 5..=7 {
            assert_eq!(
                a.evaluate(t(k), 4, &seen(t(k), Some(3.0), 4)).reason,
                Reason::BreachNotSustained
            );
        }
        assert_eq!(a.evaluate(t(8), 4, &seen(t(8), Some(3.0), 4)).direction(), Some(Direction::Up));
    }

    #[test]
    fn missing_stale_or_partial_data_never_scales_down() {
        let missing =
            |_at| Signal::Missing(Missing { gap: Gap::Unavailable, message: "timeout".into() });
        let stale = |at: Duration| seen(at.saturating_sub(3 * I), Some(0.1), 5);
        let partial = |at| with(seen(at, Some(0.1), 5), |o| o.pods_read = 4);
        let idle_partial = |at| with(seen(at, None, 5), |o| o.pods_read = 3);
        let gap = |at: Duration| {
            if (at.as_secs() / 15) % 10 == 9 { missing(at) } else { seen(at, Some(0.1), 5) }
        };
        for (name, signal, reason) in [
            ("missing", &missing as &dyn Fn(Duration) -> Signal, Reason::MetricsMissing),
            ("stale", &stale as &dyn Fn(Duration) -> Signal, Reason::MetricsStale),
            ("partial", &partial as &dyn Fn(Duration) -> Signal, Reason::MetricsPartial),
            (
                "idle but partly read",
                &idle_partial as &dyn Fn(Duration) -> Signal,
                Reason::MetricsPartial,
            ),
        ] {
            let mut a = Autoscaler::new(policy());
            assert_eq!(run(&mut a, 5, 1..=100, signal), None, "{name}");
            assert_eq!(a.evaluate(t(101), 5, &signal(t(101))).reason, reason, "{name}");
        }
        // A gap every ten samples: a 300 s window never fills.
        let mut a = Autoscaler::new(policy());
        assert_eq!(run(&mut a, 5, 1..=100, gap), None);
    }

    #[test]
    fn a_gap_in_time_between_samples_breaks_the_window() {
        let mut a = Autoscaler::new(policy());
        for k in [1, 2, 3, 6] {
            assert_eq!(a.evaluate(t(k), 4, &seen(t(k), Some(3.0), 4)).direction(), None, "at {k}");
        }
    }

    #[test]
    fn a_late_sample_whose_window_reaches_the_last_one_continues_the_window() {
        // The up window is 3 intervals. Samples at 1 and 2, then one at 5 that covers
        // everything since 2: the breach began at 0 and has lasted 5 intervals.
        let mut a = Autoscaler::new(policy());
        for k in [1, 2] {
            assert_eq!(a.evaluate(t(k), 4, &seen(t(k), Some(3.0), 4)).direction(), None, "at {k}");
        }
        let late = with(seen(t(5), Some(3.0), 4), |o| o.window = t(3));
        assert_eq!(a.evaluate(t(5), 4, &late).direction(), Some(Direction::Up));
    }

    #[test]
    fn new_pods_wait_for_their_second_sample_without_counting_as_failed() {
        let mut a = Autoscaler::new(policy());
        let d = a.evaluate(
            t(1),
            4,
            &with(seen(t(1), Some(1.0), 4), |o| {
                o.pods_read = 3;
                o.pods_new = 1;
            }),
        );
        assert_eq!(d.reason, Reason::AwaitingSamples);
        let d = a.evaluate(
            t(2),
            4,
            &Signal::Missing(Missing { gap: Gap::FirstSample, message: "first".into() }),
        );
        assert_eq!(d.reason, Reason::AwaitingSamples);
        assert!(d.reason.is_freeze());
    }

    #[test]
    fn recommend_reports_auto_scales_off_and_paused_do_nothing() {
        let mut a = Autoscaler::new(Policy { up_window: Duration::ZERO, ..policy() });
        let up = a.evaluate(t(1), 4, &seen(t(1), Some(2.9), 4));
        let hold = a.evaluate(t(2), 4, &seen(t(2), Some(1.5), 4));
        assert_eq!(act(AutoscalingMode::Auto, false, &up), Act::Scale(6));
        assert_eq!(act(AutoscalingMode::Auto, false, &hold), Act::Nothing);
        assert_eq!(act(AutoscalingMode::Recommend, false, &up), Act::Recommend(6));
        assert_eq!(act(AutoscalingMode::Recommend, false, &hold), Act::Recommend(4));
        assert_eq!(act(AutoscalingMode::Off, false, &up), Act::Nothing);
        assert_eq!(act(AutoscalingMode::Auto, true, &up), Act::Nothing);
    }

    #[test]
    fn a_recommendation_stands_while_its_signals_do() {
        // Nothing is scaled in Recommend mode: no cooldown starts, and the same
        // replicas keep the same recommendation.
        let mut a = Autoscaler::new(Policy { up_window: t(2), ..policy() });
        let desired: Vec<i32> =
            (1..=6).map(|k| a.evaluate(t(k), 4, &seen(t(k), Some(2.9), 4)).desired).collect();
        assert_eq!(desired, [4, 6, 6, 6, 6, 6]);
    }

    #[test]
    fn every_reason_has_a_camel_case_label() {
        for r in Reason::ALL {
            let label = r.label();
            assert!(
                label.chars().next().unwrap().is_ascii_uppercase()
                    && label.chars().all(|c| c.is_ascii_alphanumeric())
            );
            assert_eq!(format!("{r:?}"), label);
        }
        assert_eq!((Direction::Up.label(), Direction::Down.label()), ("up", "down"));
    }

    #[test]
    fn milliseconds_keep_two_significant_digits() {
        assert_eq!(ms(0.000_42), "0.42ms");
        assert_eq!(ms(0.001_84), "1.8ms");
        assert_eq!(ms(0.012_3), "12ms");
    }
}
