//! Conditions of a GameShard's status.

use gameshard_crds::condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::autoscaler::ConditionState;

/// Why a shard is not served as specified. Each is a Degraded reason, and the label of
/// the reconcile-failure metric when it comes from an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No Kafka broker answered.
    BrokerUnreachable,
    /// The brokers refused the shard's SASL credentials (or mechanism).
    KafkaAuthenticationFailed,
    /// The broker's TLS certificate is not signed by the CA the shard trusts.
    BrokerCertificateUntrusted,
    /// The input topic does not exist.
    InputTopicMissing,
    /// `spec.partitions` differs from the input topic.
    PartitionMismatch,
    /// Topics could not be created, or the assignment not published.
    KafkaRefused,
    /// The credentials Secret could not be read.
    CredentialsMissing,
    /// A topic the shard writes has fewer partitions than it needs.
    TopicTooSmall,
}

impl Problem {
    /// The CamelCase reason.
    pub fn reason(self) -> &'static str {
        match self {
            Problem::BrokerUnreachable => "BrokerUnreachable",
            Problem::KafkaAuthenticationFailed => "KafkaAuthenticationFailed",
            Problem::BrokerCertificateUntrusted => "BrokerCertificateUntrusted",
            Problem::InputTopicMissing => "InputTopicMissing",
            Problem::PartitionMismatch => "PartitionMismatch",
            Problem::KafkaRefused => "KafkaRefused",
            Problem::CredentialsMissing => "CredentialsMissing",
            Problem::TopicTooSmall => "TopicTooSmall",
        }
    }
}

/// The conditions for what the operator saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// Why the shard is not served as specified, with a message.
    pub problem: Option<(Problem, String)>,
    /// The spec is paused.
    pub paused: bool,
    /// Pods wanted and ready.
    pub replicas: i32,
    /// Ready pods.
    pub ready: i32,
    /// Pods running the current pod template.
    pub updated: i32,
    /// Partitions are moving between pods (this many waiting for their new owner), or
    /// pods are waiting to be removed once theirs have left.
    pub moving: Option<usize>,
    /// What the autoscaler reported last; `None` before its first evaluation.
    pub scaling: Option<Scaling>,
}

/// The autoscaler's conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scaling {
    /// `ScalingLimited`: the bounds clamp the decision, or the signals are missing.
    pub limited: ConditionState,
    /// `SLOBreached`: the latest p99 is above the target.
    pub breached: ConditionState,
}

/// Ready, Progressing, Degraded and, once the autoscaler has evaluated, `ScalingLimited`
/// and `SLOBreached` (`Unknown` until then) for `observed`, keeping each condition's
/// `lastTransitionTime` from `previous` when its status did not change.
pub fn conditions(
    observed: &Observed,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Vec<Condition> {
    let o = observed;
    let (ready, ready_reason, ready_message) = match &o.problem {
        Some((p, m)) => (false, p.reason(), m.clone()),
        None if o.replicas > 0 && o.ready >= o.replicas => {
            (true, "AllPodsReady", format!("{} of {} pods ready", o.ready, o.replicas))
        }
        None => (false, "PodsNotReady", format!("{} of {} pods ready", o.ready, o.replicas)),
    };
    let (progressing, progressing_reason, progressing_message) = if o.paused {
        (false, "Paused", "spec.paused is set: the operator changes nothing".to_owned())
    } else if o.problem.is_some() {
        (false, "Blocked", "waiting for the Degraded reason to clear".to_owned())
    } else if o.updated < o.replicas || o.ready < o.replicas {
        (
            true,
            "RollingOut",
            format!("{} of {} pods updated, {} ready", o.updated, o.replicas, o.ready),
        )
    } else if let Some(in_flight) = o.moving {
        (
            true,
            "Rebalancing",
            format!("moving partitions between pods, {in_flight} waiting for their new owner"),
        )
    } else {
        (false, "UpToDate", "every pod runs the current spec".to_owned())
    };
    let (degraded, degraded_reason, degraded_message) = match &o.problem {
        Some((p, m)) => (true, p.reason(), m.clone()),
        None => (false, "AsSpecified", "the shard is served as specified".to_owned()),
    };
    let waiting = || ConditionState {
        status: None,
        reason: "NotEvaluated",
        message: "the autoscaler has not evaluated the shard's signals yet".to_owned(),
    };
    let (limited, breached) = match &o.scaling {
        Some(s) => (s.limited.clone(), s.breached.clone()),
        None => (waiting(), waiting()),
    };
    [
        (condition::READY, Some(ready), ready_reason, ready_message),
        (condition::PROGRESSING, Some(progressing), progressing_reason, progressing_message),
        (condition::DEGRADED, Some(degraded), degraded_reason, degraded_message),
        (condition::SCALING_LIMITED, limited.status, limited.reason, limited.message),
        (condition::SLO_BREACHED, breached.status, breached.reason, breached.message),
    ]
    .into_iter()
    .map(|(type_, status, reason, message)| {
        let status = match status {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        }
        .to_owned();
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid time")
    }

    fn observed(ready: i32) -> Observed {
        Observed {
            problem: None,
            paused: false,
            replicas: 3,
            ready,
            updated: 3,
            moving: None,
            scaling: None,
        }
    }

    #[test]
    fn a_fully_ready_shard_is_ready_not_progressing_not_degraded() {
        let c = conditions(&observed(3), Some(4), &[], at(100));
        let by = |t: &str| c.iter().find(|c| c.type_ == t).expect("condition present").clone();
        assert_eq!(
            (by("Ready").status.as_str(), by("Ready").reason.as_str()),
            ("True", "AllPodsReady")
        );
        assert_eq!(by("Progressing").status, "False");
        assert_eq!(by("Degraded").status, "False");
        assert!(c.iter().all(|c| c.observed_generation == Some(4)));
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = conditions(&observed(1), Some(1), &[], at(100));
        let same = conditions(&observed(2), Some(1), &first, at(200));
        let ready =
            |c: &[Condition]| c.iter().find(|c| c.type_ == "Ready").expect("present").clone();
        assert_eq!(ready(&same).last_transition_time, Time(at(100)), "still not ready");
        let changed = conditions(&observed(3), Some(1), &same, at(300));
        assert_eq!(ready(&changed).last_transition_time, Time(at(300)));
    }

    #[test]
    fn a_problem_degrades_and_blocks() {
        let o = Observed {
            problem: Some((Problem::BrokerUnreachable, "no broker answered".into())),
            ..observed(3)
        };
        let c = conditions(&o, None, &[], at(1));
        let by = |t: &str| c.iter().find(|c| c.type_ == t).expect("present").clone();
        assert_eq!(
            (by("Degraded").status.as_str(), by("Degraded").reason.as_str()),
            ("True", "BrokerUnreachable")
        );
        assert_eq!(by("Ready").reason, "BrokerUnreachable");
        assert_eq!(by("Progressing").reason, "Blocked");
    }
}

#[cfg(test)]
mod scaling_tests {
    use super::*;

    fn by<'a>(c: &'a [Condition], t: &str) -> &'a Condition {
        c.iter().find(|c| c.type_ == t).expect("condition present")
    }

    #[test]
    fn the_autoscalers_conditions_are_unknown_until_it_reports_then_follow_it() {
        let o = Observed {
            problem: None,
            paused: false,
            replicas: 2,
            ready: 2,
            updated: 2,
            moving: None,
            scaling: None,
        };
        let at = |s| Timestamp::from_second(s).expect("valid time");
        let first = conditions(&o, Some(3), &[], at(10));
        assert_eq!(by(&first, "ScalingLimited").status, "Unknown");
        assert_eq!(by(&first, "SLOBreached").reason, "NotEvaluated");
        let state = |status, reason: &'static str| ConditionState {
            status,
            reason,
            message: format!("{reason} message"),
        };
        let o = Observed {
            scaling: Some(Scaling {
                limited: state(Some(true), "MetricsMissing"),
                breached: state(Some(true), "LatencyAboveTarget"),
            }),
            ..o
        };
        let second = conditions(&o, Some(3), &first, at(20));
        let limited = by(&second, "ScalingLimited");
        assert_eq!(
            (limited.status.as_str(), limited.reason.as_str(), limited.message.as_str()),
            ("True", "MetricsMissing", "MetricsMissing message")
        );
        assert_eq!(limited.observed_generation, Some(3));
        assert_eq!(limited.last_transition_time, Time(at(20)));
        assert_eq!(by(&second, "SLOBreached").status, "True");
        let third = conditions(&o, Some(4), &second, at(30));
        assert_eq!(by(&third, "SLOBreached").last_transition_time, Time(at(20)), "unchanged");
    }
}
