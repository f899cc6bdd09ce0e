//! Moving partitions between running pods one at a time, through the control topic.
//!
//! [`next`] is the pure rule: from what the control topic says (the latest assignment,
//! and which moves the new owners acknowledged) and the pods that should share the
//! partitions, the next assignment to publish, if any. Each published assignment
//! begins at most one more move, and only while fewer than `max_in_flight` moves wait
//! for their new owner's acknowledgement, so a scale step never pauses more than the
//! partitions moving. [`Driver`] runs it for one shard: it follows the control topic and
//! publishes, on the operator's side (Kubernetes or local mode alike).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gameshard_control::{Assignment, Message, Move, PodPartitions, ShardLog};
use tokio::sync::watch;

use crate::assignment::{self, Owners};
use crate::topics::Opener;

/// The pods that should share a shard's partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The shard.
    pub shard: String,
    /// Partitions of its input topic.
    pub partitions: u32,
    /// The pods, in order; only pods that can take partitions now (running and ready),
    /// except for the first assignment, which goes to every pod there will be.
    pub pods: Vec<String>,
    /// Moves waiting for acknowledgement at once.
    pub max_in_flight: usize,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Publish this assignment.
    Publish(Assignment),
    /// Moves are in flight: wait for their new owners.
    Wait(Vec<Move>),
    /// The latest assignment is balanced over the target's pods.
    Done,
}

/// The moves of `assignment` whose new owner has not acknowledged them yet and is
/// still among `pods` (a move to a pod that is gone is moved again instead).
pub fn in_flight(log: &ShardLog, assignment: &Assignment, pods: &[String]) -> Vec<Move> {
    assignment.moves.iter().filter(|m| !log.completed(m) && pods.contains(&m.to)).cloned().collect()
}

/// Every pod's partitions in the latest assignment.
pub fn owners(log: &ShardLog) -> Owners {
    log.assignment.as_ref().map_or_else(Owners::new, |a| {
        a.pods.iter().map(|p| (p.pod.clone(), a.partitions_of(&p.pod))).collect()
    })
}

/// Where a rebalance towards `target` goes: the balanced assignment that moves the
/// fewest partitions from the latest one. Computed once per target and kept while the
/// moves are made, so that partitions never move twice as the shares shift on the way.
pub fn plan(log: &ShardLog, target: &Target) -> Owners {
    assignment::balance(target.partitions, &target.pods, &owners(log))
}

/// The next step from the latest assignment towards `plan` (made by [`plan`] for
/// `target`).
pub fn next(log: &ShardLog, target: &Target, plan: &Owners) -> Step {
    let epoch = log.epoch() + 1;
    let Some(current) = &log.assignment else {
        if target.pods.is_empty() {
            return Step::Done;
        }
        return Step::Publish(message(target, epoch, plan, Vec::new()));
    };
    let mut owners = owners(log);
    let balanced = plan;
    let changes = assignment::moved(&owners, balanced);
    if changes.is_empty() && current.partitions == target.partitions {
        return Step::Done;
    }
    let owner_in =
        |o: &Owners, p: u32| o.iter().find(|(_, ps)| ps.contains(&p)).map(|(k, _)| k.clone());
    let mut moves = in_flight(log, current, &target.pods);
    let moving: BTreeSet<u32> = moves.iter().map(|m| m.partition).collect();
    // Partitions without an owner (a new partition, or one whose pod is not in the
    // assignment) have nothing to hand over: they are assigned at once.
    let mut changed = false;
    for &p in &changes {
        if owner_in(&owners, p).is_none()
            && let Some(to) = owner_in(balanced, p)
        {
            owners.entry(to).or_default().push(p);
            changed = true;
        }
    }
    if moves.len() < target.max_in_flight.max(1)
        && let Some((p, from, to)) = changes.iter().find_map(|&p| {
            if moving.contains(&p) {
                return None;
            }
            Some((p, owner_in(&owners, p)?, owner_in(balanced, p)?))
        })
        && from != to
    {
        owners.get_mut(&from).expect("the owner has an entry").retain(|&q| q != p);
        owners.entry(to.clone()).or_default().push(p);
        moves.push(Move { partition: p, from, to, epoch });
        changed = true;
    }
    if !changed {
        return if moves.is_empty() { Step::Done } else { Step::Wait(moves) };
    }
    // A pod that gave up its last partition, and is not in the target, leaves the
    // assignment.
    owners.retain(|pod, ps| !ps.is_empty() || target.pods.contains(pod));
    Step::Publish(message(target, epoch, &owners, moves))
}

fn message(target: &Target, epoch: u64, owners: &Owners, moves: Vec<Move>) -> Assignment {
    Assignment {
        shard: target.shard.clone(),
        epoch,
        partitions: target.partitions,
        pods: owners
            .iter()
            .map(|(pod, ps)| {
                let mut partitions = ps.clone();
                partitions.sort_unstable();
                PodPartitions { pod: pod.clone(), partitions }
            })
            .collect(),
        moves,
    }
}

/// The pods that own partitions in the latest assignment, or give one up in a move in
/// flight: the pods that must keep running.
pub fn holders(log: &ShardLog, pods: &[String]) -> BTreeSet<String> {
    let Some(a) = &log.assignment else { return BTreeSet::new() };
    a.pods
        .iter()
        .filter(|p| !p.partitions.is_empty())
        .map(|p| p.pod.clone())
        .chain(in_flight(log, a, pods).into_iter().map(|m| m.from))
        .collect()
}

/// The pods of `names` (the pods the shard should have) that partitions go to, given
/// which are `ready`: before the first assignment, all of them (none is ready before it);
/// after it, the ready pods that hold partitions, and the new ones only once every new
/// one is ready. So a scale step waits for all its new pods and then moves each
/// partition once, instead of spreading over the first pod to start and moving again
/// when the next one is up.
pub fn serving(log: &ShardLog, names: &[String], ready: &BTreeSet<String>) -> Vec<String> {
    if log.assignment.is_none() {
        return names.to_vec();
    }
    let holders = holders(log, names);
    let new_ready = names.iter().filter(|p| !holders.contains(*p)).all(|p| ready.contains(p));
    names
        .iter()
        .filter(|p| ready.contains(*p) && (new_ready || holders.contains(*p)))
        .cloned()
        .collect()
}

/// What a driver has seen of the control topic.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The shard's log, folded from the control topic.
    pub log: ShardLog,
    /// Whether the driver has read the topic up to where it ended when it started.
    pub caught_up: bool,
    /// The last error reading or writing the topic, if the last attempt failed.
    pub error: Option<String>,
}

/// Follows one shard's control topic and publishes the assignments [`next`] asks for.
pub struct Driver {
    seen: Arc<Mutex<Seen>>,
    target: watch::Sender<Option<Target>>,
    task: tokio::task::JoinHandle<()>,
}

impl Driver {
    /// Starts a driver for `shard` on the control topic `open` opens.
    pub fn start(open: Opener, shard: String) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (target, targets) = watch::channel(None);
        let task = tokio::spawn(drive(open, shard, Arc::clone(&seen), targets));
        Self { seen, target, task }
    }

    /// Sets the pods that should share the partitions.
    pub fn set_target(&self, target: Target) {
        self.target.send_if_modified(|t| {
            let changed = t.as_ref() != Some(&target);
            *t = Some(target);
            changed
        });
    }

    /// What the driver has seen so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a failed control topic waits before it is opened again.
const REOPEN: Duration = Duration::from_secs(2);

async fn drive(
    open: Opener,
    shard: String,
    seen: Arc<Mutex<Seen>>,
    mut targets: watch::Receiver<Option<Target>>,
) {
    let set_error = |e: String| seen.lock().unwrap_or_else(PoisonError::into_inner).error = Some(e);
    'open: loop {
        let mut link = match open().await {
            Ok(link) => link,
            Err(e) => {
                tracing::warn!(%shard, error = %e, "cannot open the control topic; retrying");
                set_error(e.to_string());
                tokio::time::sleep(REOPEN).await;
                continue;
            }
        };
        // The whole history again: the log is rebuilt from the topic.
        {
            let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
            s.log = ShardLog::default();
            s.caught_up = link.end() == 0;
        }
        let end = link.end();
        // The epoch of the last assignment published, until it is read back.
        let mut awaiting: Option<u64> = None;
        // The target the rebalance under way aims at, and its plan.
        let mut planned: Option<(Target, Owners)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                received = link.next() => {
                    let record = match received {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(%shard, error = %e, "reading the control topic failed; opening it again");
                            set_error(e.to_string());
                            tokio::time::sleep(REOPEN).await;
                            continue 'open;
                        }
                    };
                    let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    s.caught_up |= record.offset + 1 >= end;
                    let Some(value) = record.value else { continue };
                    match Message::decode(&record.key, &value) {
                        Ok(Some(message)) => {
                            s.log.apply(&shard, message);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(%shard, error = %e, "skipping an unreadable control-topic record"),
                    }
                    s.error = None;
                    if awaiting.is_some_and(|e| s.log.epoch() >= e) {
                        awaiting = None;
                    }
                }
                changed = targets.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tick.tick() => {}
            }
            let step = {
                let s = seen.lock().unwrap_or_else(PoisonError::into_inner);
                let target = targets.borrow();
                match (&*target, s.caught_up && awaiting.is_none()) {
                    (Some(target), true) => {
                        if planned.as_ref().is_none_or(|(t, _)| t != target) {
                            planned = Some((target.clone(), plan(&s.log, target)));
                        }
                        let (_, owners) = planned.as_ref().expect("planned above");
                        next(&s.log, target, owners)
                    }
                    _ => continue,
                }
            };
            let Step::Publish(assignment) = step else { continue };
            let epoch = assignment.epoch;
            let moves =
                assignment.moves.iter().filter(|m| m.epoch == epoch).cloned().collect::<Vec<_>>();
            let message = Message::Assignment(assignment);
            match link.publish(message.key(), message.value()).await {
                Ok(()) => {
                    tracing::info!(%shard, epoch, ?moves, "assignment published");
                    awaiting = Some(epoch);
                }
                Err(e) => {
                    tracing::warn!(%shard, epoch, error = %e, "cannot publish the assignment; retrying");
                    set_error(format!("publishing the assignment: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use gameshard_control::Acquired;
    use proptest::prelude::*;

    use super::*;

    fn target(partitions: u32, pods: usize) -> Target {
        Target {
            shard: "zone".into(),
            partitions,
            pods: (0..pods).map(|i| format!("zone-{i}")).collect(),
            max_in_flight: 1,
        }
    }

    fn acquire(log: &mut ShardLog, m: &Move) {
        log.apply(
            "zone",
            Message::Acquired(Acquired {
                shard: "zone".into(),
                partition: m.partition,
                epoch: m.epoch,
                pod: m.to.clone(),
                next_offset: 0,
                acquired_ms: 0,
            }),
        );
    }

    #[test]
    fn new_pods_are_served_once_every_new_pod_is_ready() {
        let names = |n: usize| (0..n).map(|i| format!("zone-{i}")).collect::<Vec<_>>();
        let ready = |pods: &[&str]| pods.iter().map(|&p| p.to_owned()).collect::<BTreeSet<_>>();
        let mut log = ShardLog::default();
        assert_eq!(serving(&log, &names(2), &ready(&[])), names(2), "the first assignment");
        publish(&mut log, &target(4, 1));
        // Scaling from one pod to three: the second is up, the third is not yet.
        assert_eq!(serving(&log, &names(3), &ready(&["zone-0", "zone-1"])), ["zone-0"]);
        assert_eq!(serving(&log, &names(3), &ready(&["zone-0", "zone-1", "zone-2"])), names(3));
        // A pod holding partitions that is not ready is left out, as before.
        assert_eq!(serving(&log, &names(1), &ready(&[])), Vec::<String>::new());
    }

    fn publish(log: &mut ShardLog, t: &Target) -> Option<Assignment> {
        let owners = plan(log, t);
        match next(log, t, &owners) {
            Step::Publish(a) => {
                log.apply("zone", Message::Assignment(a.clone()));
                Some(a)
            }
            _ => None,
        }
    }

    #[test]
    fn the_first_assignment_goes_out_whole_without_moves() {
        let mut log = ShardLog::default();
        let a = publish(&mut log, &target(8, 2)).expect("published");
        assert_eq!((a.epoch, a.moves.len()), (1, 0));
        assert_eq!(a.partitions_of("zone-0"), [0, 1, 2, 3]);
        assert_eq!(next(&log, &target(8, 2), &plan(&log, &target(8, 2))), Step::Done);
    }

    #[test]
    fn a_new_pod_gets_its_partitions_one_move_at_a_time() {
        let mut log = ShardLog::default();
        publish(&mut log, &target(8, 2));
        let t = target(8, 3);
        let first = publish(&mut log, &t).expect("a move");
        assert_eq!(first.moves.len(), 1);
        let m = first.moves[0].clone();
        assert_eq!((m.to.as_str(), m.epoch), ("zone-2", 2));
        assert_eq!(first.owner_of(m.partition), Some("zone-2"));
        assert_eq!(
            next(&log, &t, &plan(&log, &t)),
            Step::Wait(vec![m.clone()]),
            "one in flight at a time"
        );
        acquire(&mut log, &m);
        let second = publish(&mut log, &t).expect("the next move");
        assert_eq!(second.moves.len(), 1, "the acknowledged move is dropped from the list");
        acquire(&mut log, &second.moves[0]);
        assert_eq!(next(&log, &t, &plan(&log, &t)), Step::Done, "8 over 3 pods: two moves");
        assert_eq!(log.assignment.unwrap().partitions_of("zone-2").len(), 2);
    }

    #[test]
    fn a_pod_leaving_gives_all_its_partitions_away_then_leaves_the_assignment() {
        let mut log = ShardLog::default();
        publish(&mut log, &target(6, 3));
        let t = target(6, 2);
        let mut moves = 0;
        while let Some(a) = publish(&mut log, &t) {
            assert!(a.moves.iter().all(|m| m.from == "zone-2"));
            for m in &a.moves {
                acquire(&mut log, m);
            }
            moves += 1;
            assert!(moves < 10);
        }
        assert_eq!(moves, 2);
        let last = log.assignment.clone().unwrap();
        assert!(last.pods.iter().all(|p| p.pod != "zone-2"), "the empty pod left: {last:?}");
        assert!(holders(&log, &t.pods).iter().all(|p| p != "zone-2"));
    }

    #[test]
    fn a_move_to_a_pod_that_went_away_is_moved_again() {
        let mut log = ShardLog::default();
        publish(&mut log, &target(4, 1));
        let up = publish(&mut log, &target(4, 2)).expect("a move to zone-1");
        let m = up.moves[0].clone();
        // zone-1 went away before it acquired the partition.
        let back = publish(&mut log, &target(4, 1)).expect("moved back");
        assert_eq!(back.owner_of(m.partition), Some("zone-0"));
        assert_eq!(back.moves.len(), 1);
        assert_eq!(back.moves[0].from, "zone-1");
    }

    #[test]
    fn more_moves_fly_at_once_when_allowed() {
        let mut log = ShardLog::default();
        publish(&mut log, &target(9, 1));
        let t = Target { max_in_flight: 3, ..target(9, 3) };
        let mut last = None;
        while let Some(a) = publish(&mut log, &t) {
            last = Some(a);
        }
        assert_eq!(last.expect("published").moves.len(), 3);
    }

    proptest! {
        #[test]
        fn steps_reach_the_balanced_assignment_with_the_fewest_moves(
            partitions in 1u32..30, from in 1usize..6, to in 1usize..6, in_flight in 1usize..4,
        ) {
            let mut log = ShardLog::default();
            publish(&mut log, &target(partitions, from));
            let before = log.assignment.clone().unwrap();
            let t = Target { max_in_flight: in_flight, ..target(partitions, to) };
            let planned = plan(&log, &t);
            let mut published = 0;
            let mut begun = 0;
            loop {
                match next(&log, &t, &planned) {
                    Step::Publish(a) => {
                        prop_assert!(a.moves.len() <= in_flight);
                        let new = a.moves.iter().filter(|m| m.epoch == a.epoch).count();
                        prop_assert!(new <= 1, "one move begins per assignment");
                        begun += new;
                        log.apply("zone", Message::Assignment(a));
                        published += 1;
                        prop_assert!(published <= partitions as usize + 1);
                    }
                    Step::Wait(moves) => {
                        for m in &moves {
                            acquire(&mut log, m);
                        }
                    }
                    Step::Done => break,
                }
            }
            let after = log.assignment.clone().unwrap();
            let owners = |a: &Assignment| -> Owners {
                a.pods
                    .iter()
                    .filter(|p| !p.partitions.is_empty())
                    .map(|p| (p.pod.clone(), p.partitions.clone()))
                    .collect()
            };
            let balanced: Owners = assignment::balance(partitions, &t.pods, &owners(&before))
                .into_iter()
                .filter(|(_, ps)| !ps.is_empty())
                .collect();
            prop_assert_eq!(&owners(&after), &balanced);
            prop_assert_eq!(begun, assignment::moved(&owners(&before), &balanced).len(), "each partition moved once");
        }
    }
}
