//! The control topic: how the operator tells data-plane pods which input partitions each
//! one owns, and how pods hand a partition over to one another.
//!
//! Several shards may share one control topic, so every message names its shard, and
//! its record key names the shard (and the partition) too: compaction keeps the latest
//! message per key, so it never removes one shard's latest assignment, or the latest
//! handoff message of a partition, for another's.
//!
//! | key | value | written by |
//! | --- | --- | --- |
//! | `assignment/<shard>` | [`Assignment`]: every pod's partitions from an epoch on | the operator |
//! | `release/<shard>/<partition>` | [`Release`]: the old owner gave the partition up | the old owner |
//! | `acquired/<shard>/<partition>` | [`Acquired`]: the new owner serves the partition | the new owner |
//!
//! The assignment's epoch only grows: the operator recovers it from this topic (the
//! latest assignment of its shard), never from elsewhere. Moving partition `p` from pod
//! `A` to pod `B` starts with an assignment that lists `p` under `B` and names the move
//! in [`Assignment::moves`] with the epoch it began at. `A` stops reading `p`, publishes
//! what is in flight, snapshots `p` at a record boundary, commits, and writes a
//! [`Release`] naming that epoch and the snapshot; `B` restores `p` from it, resumes,
//! and writes an [`Acquired`]. An owner that learns of a newer owner's [`Acquired`]
//! before it released is fenced: it drops the partition without a snapshot.
//!
//! This crate is plain data (serde), shared by the operator and the data plane, so that
//! the data plane needs no Kubernetes crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Key of a shard's latest assignment.
pub fn assignment_key(shard: &str) -> String {
    format!("assignment/{shard}")
}

/// Key of the latest release of a partition.
pub fn release_key(shard: &str, partition: u32) -> String {
    format!("release/{shard}/{partition}")
}

/// Key of the latest acquisition of a partition.
pub fn acquired_key(shard: &str, partition: u32) -> String {
    format!("acquired/{shard}/{partition}")
}

/// Which pod owns which input partitions from `epoch` on. A pod owns exactly the
/// partitions listed for it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The shard's name.
    pub shard: String,
    /// Grows with every change of the assignment.
    pub epoch: u64,
    /// Partitions of the input topic.
    pub partitions: u32,
    /// The partitions of each pod.
    pub pods: Vec<PodPartitions>,
    /// Partitions on their way from one pod to another: moves begun at this epoch or
    /// earlier that the new owner has not acknowledged yet.
    #[serde(default)]
    pub moves: Vec<Move>,
}

/// The partitions one pod owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PodPartitions {
    /// The pod's name (its `--pod-id`).
    pub pod: String,
    /// Its partitions, ascending.
    pub partitions: Vec<u32>,
}

/// A partition moving from one pod to another.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The partition.
    pub partition: u32,
    /// The pod that owned it.
    pub from: String,
    /// The pod that owns it now.
    pub to: String,
    /// The epoch of the assignment that began the move.
    pub epoch: u64,
}

impl Assignment {
    /// The partitions `pod` owns, ascending.
    pub fn partitions_of(&self, pod: &str) -> Vec<u32> {
        let mut mine: Vec<u32> = self
            .pods
            .iter()
            .filter(|p| p.pod == pod)
            .flat_map(|p| p.partitions.iter().copied())
            .collect();
        mine.sort_unstable();
        mine.dedup();
        mine
    }

    /// The pod that owns `partition`, if any.
    pub fn owner_of(&self, partition: u32) -> Option<&str> {
        self.pods.iter().find(|p| p.partitions.contains(&partition)).map(|p| p.pod.as_str())
    }

    /// The move in flight of `partition`, if it is moving.
    pub fn move_of(&self, partition: u32) -> Option<&Move> {
        self.moves.iter().find(|m| m.partition == partition)
    }

    /// Every pod's partitions as a map, for comparisons.
    pub fn by_pod(&self) -> BTreeMap<&str, Vec<u32>> {
        self.pods.iter().map(|p| (p.pod.as_str(), self.partitions_of(&p.pod))).collect()
    }
}

/// The old owner gave a partition up: every update of every record before
/// `next_offset` is on the brokers, the offsets are committed, and (with a snapshot
/// topic) snapshot `snapshot` holds the partition's state at `next_offset`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The shard's name.
    pub shard: String,
    /// The partition.
    pub partition: u32,
    /// The epoch of the move this release belongs to.
    pub epoch: u64,
    /// The pod that released it.
    pub pod: String,
    /// One past the last record the old owner processed.
    pub next_offset: i64,
    /// Id of the snapshot at `next_offset`, when the shard has a snapshot topic.
    pub snapshot: Option<u64>,
    /// Unix time (ms) of the release, the start of the new owner's handoff clock.
    pub released_ms: i64,
}

/// The new owner serves a partition from `next_offset` on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The shard's name.
    pub shard: String,
    /// The partition.
    pub partition: u32,
    /// The epoch of the assignment under which the pod took it.
    pub epoch: u64,
    /// The pod that took it.
    pub pod: String,
    /// Offset of the first record it processes.
    pub next_offset: i64,
    /// Unix time (ms) it took the partition.
    pub acquired_ms: i64,
}

/// A message on the control topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// An assignment.
    Assignment(Assignment),
    /// A release.
    Release(Release),
    /// An acquisition.
    Acquired(Acquired),
}

/// Why a control-topic record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The key names no known message.
    #[error("unknown control-topic key {0:?}")]
    UnknownKey(String),
    /// The value does not match its key.
    #[error("control-topic record {key:?}: {source}")]
    Value {
        /// The record key.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The value names another shard or partition than its key.
    #[error("control-topic record {0:?} names another shard or partition than its key")]
    Mismatch(String),
}

impl Message {
    /// The record key the message is written under.
    pub fn key(&self) -> String {
        match self {
            Message::Assignment(a) => assignment_key(&a.shard),
            Message::Release(r) => release_key(&r.shard, r.partition),
            Message::Acquired(a) => acquired_key(&a.shard, a.partition),
        }
    }

    /// The shard the message belongs to.
    pub fn shard(&self) -> &str {
        match self {
            Message::Assignment(a) => &a.shard,
            Message::Release(r) => &r.shard,
            Message::Acquired(a) => &a.shard,
        }
    }

    /// The record value.
    pub fn value(&self) -> Vec<u8> {
        let value = match self {
            Message::Assignment(a) => serde_json::to_vec(a),
            Message::Release(r) => serde_json::to_vec(r),
            Message::Acquired(a) => serde_json::to_vec(a),
        };
        value.expect("control messages serialize")
    }

    /// Reads a record of the control topic. `Ok(None)` for a record of another kind of
    /// writer (an unknown key prefix is skipped by readers, so the topic can grow new
    /// messages).
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Option<Self>, DecodeError> {
        let key = String::from_utf8_lossy(key).into_owned();
        let (kind, rest) = key.split_once('/').unwrap_or((key.as_str(), ""));
        let json = |source| DecodeError::Value { key: key.clone(), source };
        let message = match kind {
            "assignment" => Message::Assignment(serde_json::from_slice(value).map_err(json)?),
            "release" => Message::Release(serde_json::from_slice(value).map_err(json)?),
            "acquired" => Message::Acquired(serde_json::from_slice(value).map_err(json)?),
            _ => return Ok(None),
        };
        // `assignment` alone is the key of an older operator, which wrote one shard
        // per topic; its value names the shard.
        if !rest.is_empty() && message.key() != key {
            return Err(DecodeError::Mismatch(key));
        }
        Ok(Some(message))
    }
}

/// What the control topic says about one shard, folded from its records in order: the
/// latest assignment and the latest release and acquisition of each partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardLog {
    /// The latest assignment (the one with the greatest epoch).
    pub assignment: Option<Assignment>,
    /// The latest release of each partition (greatest epoch).
    pub releases: BTreeMap<u32, Release>,
    /// The latest acquisition of each partition (greatest epoch).
    pub acquired: BTreeMap<u32, Acquired>,
}

impl ShardLog {
    /// Folds `message` in; messages of other shards and older epochs change nothing.
    /// Returns whether it changed anything.
    pub fn apply(&mut self, shard: &str, message: Message) -> bool {
        if message.shard() != shard {
            return false;
        }
        match message {
            Message::Assignment(a) => {
                if self.assignment.as_ref().is_some_and(|current| current.epoch >= a.epoch) {
                    return false;
                }
                self.assignment = Some(a);
            }
            Message::Release(r) => {
                if self.releases.get(&r.partition).is_some_and(|c| c.epoch > r.epoch) {
                    return false;
                }
                self.releases.insert(r.partition, r);
            }
            Message::Acquired(a) => {
                if self.acquired.get(&a.partition).is_some_and(|c| c.epoch > a.epoch) {
                    return false;
                }
                self.acquired.insert(a.partition, a);
            }
        }
        true
    }

    /// The epoch of the latest assignment, 0 before the first.
    pub fn epoch(&self) -> u64 {
        self.assignment.as_ref().map_or(0, |a| a.epoch)
    }

    /// The release that ends `m` on the old owner, once written.
    pub fn release_of(&self, m: &Move) -> Option<&Release> {
        self.releases.get(&m.partition).filter(|r| r.epoch >= m.epoch && r.pod == m.from)
    }

    /// Whether the new owner of `m` has acquired it.
    pub fn completed(&self, m: &Move) -> bool {
        self.acquired.get(&m.partition).is_some_and(|a| a.epoch >= m.epoch && a.pod == m.to)
    }

    /// Whether `pod`, which owns `partition` from before `epoch`, is fenced off it: a
    /// newer owner acquired it at `epoch` or later.
    pub fn fenced(&self, partition: u32, pod: &str, epoch: u64) -> bool {
        self.acquired.get(&partition).is_some_and(|a| a.pod != pod && a.epoch >= epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(epoch: u64, pods: &[(&str, &[u32])], moves: &[Move]) -> Assignment {
        Assignment {
            shard: "zone".into(),
            epoch,
            partitions: 4,
            pods: pods
                .iter()
                .map(|(pod, p)| PodPartitions { pod: (*pod).into(), partitions: p.to_vec() })
                .collect(),
            moves: moves.to_vec(),
        }
    }

    #[test]
    fn every_message_reads_back_from_its_key_and_value() {
        let messages = [
            Message::Assignment(assignment(3, &[("a", &[0, 1]), ("b", &[2, 3])], &[])),
            Message::Release(Release {
                shard: "zone".into(),
                partition: 2,
                epoch: 3,
                pod: "a".into(),
                next_offset: 77,
                snapshot: Some(9),
                released_ms: 1,
            }),
            Message::Acquired(Acquired {
                shard: "zone".into(),
                partition: 2,
                epoch: 3,
                pod: "b".into(),
                next_offset: 77,
                acquired_ms: 2,
            }),
        ];
        for m in messages {
            let back = Message::decode(m.key().as_bytes(), &m.value()).unwrap();
            assert_eq!(back, Some(m));
        }
    }

    #[test]
    fn keys_name_the_shard_so_compaction_keeps_each_shards_latest() {
        assert_eq!(assignment_key("zone-1"), "assignment/zone-1");
        assert_ne!(assignment_key("zone-1"), assignment_key("zone-2"));
        assert_eq!(release_key("zone-1", 7), "release/zone-1/7");
        assert_eq!(acquired_key("zone-1", 7), "acquired/zone-1/7");
    }

    #[test]
    fn a_value_under_another_shards_key_is_refused_and_unknown_keys_are_skipped() {
        let m = Message::Assignment(assignment(1, &[("a", &[0])], &[]));
        assert!(matches!(
            Message::decode(b"assignment/other", &m.value()),
            Err(DecodeError::Mismatch(_))
        ));
        assert!(Message::decode(b"heartbeat/zone", b"{}").unwrap().is_none());
        assert!(matches!(
            Message::decode(b"release/zone/1", b"not json"),
            Err(DecodeError::Value { .. })
        ));
        // An older operator's key, one shard per topic, still reads.
        assert_eq!(Message::decode(b"assignment", &m.value()).unwrap(), Some(m));
    }

    #[test]
    fn the_log_keeps_the_greatest_epoch_and_ignores_other_shards() {
        let mut log = ShardLog::default();
        assert!(log.apply("zone", Message::Assignment(assignment(2, &[("a", &[0])], &[]))));
        assert!(!log.apply("zone", Message::Assignment(assignment(1, &[("b", &[0])], &[]))));
        let mut other = assignment(9, &[("x", &[0])], &[]);
        other.shard = "elsewhere".into();
        assert!(!log.apply("zone", Message::Assignment(other)));
        assert_eq!(log.epoch(), 2);
        assert_eq!(log.assignment.as_ref().unwrap().owner_of(0), Some("a"));
    }

    #[test]
    fn a_move_completes_on_the_new_owners_acquisition_and_fences_the_old_one() {
        let m = Move { partition: 1, from: "a".into(), to: "b".into(), epoch: 5 };
        let mut log = ShardLog::default();
        log.apply(
            "zone",
            Message::Assignment(assignment(5, &[("b", &[0, 1])], std::slice::from_ref(&m))),
        );
        assert!(log.release_of(&m).is_none());
        assert!(!log.completed(&m));
        assert!(!log.fenced(1, "a", 5));
        log.apply(
            "zone",
            Message::Release(Release {
                shard: "zone".into(),
                partition: 1,
                epoch: 5,
                pod: "a".into(),
                next_offset: 10,
                snapshot: None,
                released_ms: 0,
            }),
        );
        assert_eq!(log.release_of(&m).map(|r| r.next_offset), Some(10));
        let acquired = |epoch| {
            Message::Acquired(Acquired {
                shard: "zone".into(),
                partition: 1,
                epoch,
                pod: "b".into(),
                next_offset: 10,
                acquired_ms: 0,
            })
        };
        log.apply("zone", acquired(4));
        assert!(!log.completed(&m), "an acquisition older than the move does not end it");
        log.apply("zone", acquired(5));
        assert!(log.completed(&m));
        assert!(log.fenced(1, "a", 5), "a, still holding partition 1 from epoch 5, is fenced");
        assert!(!log.fenced(1, "b", 5), "the new owner is not fenced by its own acquisition");
    }

    #[test]
    fn a_pods_partitions_are_sorted_and_moves_are_found_by_partition() {
        let m = Move { partition: 3, from: "a".into(), to: "b".into(), epoch: 2 };
        let a = assignment(2, &[("a", &[2, 0]), ("b", &[3, 1])], std::slice::from_ref(&m));
        assert_eq!(a.partitions_of("a"), [0, 2]);
        assert_eq!(a.partitions_of("nobody"), Vec::<u32>::new());
        assert_eq!(a.move_of(3), Some(&m));
        assert_eq!(a.move_of(0), None);
        assert_eq!(a.by_pod().get("b"), Some(&vec![1, 3]));
    }
}
