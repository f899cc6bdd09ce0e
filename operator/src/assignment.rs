//! Which pod owns which partitions: a balanced assignment that moves the fewest
//! partitions from the one before.
//!
//! With `n` pods and `p` partitions every pod owns `p / n` or `p / n + 1` partitions.
//! The pods that owned the most before get the larger shares, and each keeps as many of
//! its partitions as its share allows: a partition moves only when its owner is gone or
//! over its share, so going from `n` to `n + 1` pods moves at most `ceil(p / (n + 1))`
//! partitions, where contiguous ranges would move nearly all of them.

use std::collections::{BTreeMap, BTreeSet};

/// Every pod's partitions, ascending, for each pod in `pods` (possibly none).
pub type Owners = BTreeMap<String, Vec<u32>>;

/// The balanced assignment of partitions `0..partitions` to `pods` that keeps the most
/// of `previous` (partitions owned by pods not in `pods`, or out of range, move).
/// Deterministic: the same inputs give the same assignment. Empty without pods.
pub fn balance(partitions: u32, pods: &[String], previous: &Owners) -> Owners {
    let mut out: Owners = pods.iter().map(|p| (p.clone(), Vec::new())).collect();
    if pods.is_empty() {
        return out;
    }
    let n = pods.len() as u32;
    let (share, larger) = (partitions / n, (partitions % n) as usize);

    // What each pod may keep: its previous partitions, each counted once.
    let mut seen = BTreeSet::new();
    let kept: Vec<Vec<u32>> = pods
        .iter()
        .map(|pod| {
            let mut mine: Vec<u32> = previous
                .get(pod)
                .into_iter()
                .flatten()
                .copied()
                .filter(|&p| p < partitions && seen.insert(p))
                .collect();
            mine.sort_unstable();
            mine
        })
        .collect();

    // The larger shares go to the pods that held the most, ties in pod order.
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(kept[i].len()), i));
    let mut quota = vec![share as usize; pods.len()];
    for &i in order.iter().take(larger) {
        quota[i] += 1;
    }

    let mut free: BTreeSet<u32> = (0..partitions).collect();
    for (i, pod) in pods.iter().enumerate() {
        let keep: Vec<u32> = kept[i].iter().copied().take(quota[i]).collect();
        for p in &keep {
            free.remove(p);
        }
        out.insert(pod.clone(), keep);
    }
    for (i, pod) in pods.iter().enumerate() {
        let mine = out.get_mut(pod).expect("every pod has an entry");
        while mine.len() < quota[i] {
            let Some(p) = free.pop_first() else { break };
            mine.push(p);
        }
        mine.sort_unstable();
    }
    out
}

/// Partitions whose owner differs between `a` and `b` (or that only one assigns).
pub fn moved(a: &Owners, b: &Owners) -> Vec<u32> {
    let owner = |o: &Owners| -> BTreeMap<u32, String> {
        o.iter().flat_map(|(pod, ps)| ps.iter().map(move |&p| (p, pod.clone()))).collect()
    };
    let (oa, ob) = (owner(a), owner(b));
    let all: BTreeSet<u32> = oa.keys().chain(ob.keys()).copied().collect();
    all.into_iter().filter(|p| oa.get(p) != ob.get(p)).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pods(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("zone-{i}")).collect()
    }

    fn owners(pairs: &[(&str, &[u32])]) -> Owners {
        pairs.iter().map(|(pod, ps)| ((*pod).to_owned(), ps.to_vec())).collect()
    }

    #[test]
    fn a_first_assignment_gives_each_pod_its_share_in_order() {
        let a = balance(8, &pods(3), &Owners::new());
        assert_eq!(
            a,
            owners(&[("zone-0", &[0, 1, 2]), ("zone-1", &[3, 4, 5]), ("zone-2", &[6, 7])])
        );
    }

    #[test]
    fn a_new_pod_takes_one_partition_from_each_of_the_others() {
        let before = balance(64, &pods(8), &Owners::new());
        let after = balance(64, &pods(9), &before);
        let moved = moved(&before, &after);
        assert_eq!(moved.len(), 7, "64/9: the new pod gets 7, one from seven pods");
        assert_eq!(after["zone-8"].len(), 7);
        assert!(after.values().all(|ps| ps.len() == 7 || ps.len() == 8));
    }

    #[test]
    fn a_removed_pods_partitions_spread_over_the_rest_and_nothing_else_moves() {
        let before = balance(12, &pods(4), &Owners::new());
        let after = balance(12, &pods(3), &before);
        assert_eq!(moved(&before, &after), before["zone-3"]);
        assert!(after.values().all(|ps| ps.len() == 4));
    }

    #[test]
    fn without_pods_nothing_is_assigned() {
        assert!(balance(4, &[], &Owners::new()).is_empty());
    }

    /// The fewest moves any balanced assignment can make from `previous`: the larger
    /// shares on the pods that held the most, each keeping what its share allows.
    fn fewest_moves(partitions: u32, pods: &[String], previous: &Owners) -> usize {
        let n = pods.len() as u32;
        let mut held: Vec<usize> = pods
            .iter()
            .map(|p| previous.get(p).map_or(0, |ps| ps.iter().filter(|&&x| x < partitions).count()))
            .collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        let larger = (partitions % n) as usize;
        let kept: usize = held
            .iter()
            .enumerate()
            .map(|(i, &h)| h.min((partitions / n) as usize + usize::from(i < larger)))
            .sum();
        partitions as usize - kept
    }

    fn previous() -> impl Strategy<Value = (u32, usize, Owners)> {
        (1u32..40, 1usize..10).prop_flat_map(|(partitions, n)| {
            // Each partition owned by one of n + 2 pods (two of them maybe gone), or by none.
            prop::collection::vec(0..n + 3, partitions as usize).prop_map(move |who| {
                let mut o = Owners::new();
                for (p, w) in who.into_iter().enumerate() {
                    if w < n + 2 {
                        o.entry(format!("zone-{w}")).or_default().push(p as u32);
                    }
                }
                (partitions, n, o)
            })
        })
    }

    proptest! {
        #[test]
        fn every_partition_once_balanced_and_fewest_moves((partitions, n, previous) in previous()) {
            let pods = pods(n);
            let a = balance(partitions, &pods, &previous);
            let mut all: Vec<u32> = a.values().flatten().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..partitions).collect::<Vec<_>>());
            let (lo, hi) = (partitions / n as u32, partitions.div_ceil(n as u32));
            prop_assert!(a.values().all(|ps| (lo..=hi).contains(&(ps.len() as u32))));
            prop_assert_eq!(a.keys().cloned().collect::<Vec<_>>(), {
                let mut p = pods.clone();
                p.sort();
                p
            });
            let previous_valid: Owners = previous
                .iter()
                .map(|(pod, ps)| (pod.clone(), ps.iter().copied().filter(|&p| p < partitions).collect()))
                .collect();
            // Partitions that change hands, unowned ones included.
            prop_assert_eq!(moved(&previous_valid, &a).len(), fewest_moves(partitions, &pods, &previous));
            prop_assert_eq!(balance(partitions, &pods, &previous), a, "deterministic");
        }

        #[test]
        fn scaling_from_n_to_n_plus_1_moves_at_most_a_share((partitions, n) in (1u32..200, 1usize..40)) {
            let n = n.min(partitions as usize);
            let before = balance(partitions, &pods(n), &Owners::new());
            let after = balance(partitions, &pods(n + 1), &before);
            let bound = partitions.div_ceil(n as u32 + 1) as usize;
            prop_assert!(moved(&before, &after).len() <= bound);
            // And back: from n + 1 to n moves only what the removed pod held.
            let back = balance(partitions, &pods(n), &after);
            prop_assert_eq!(moved(&after, &back), after[&format!("zone-{n}")].clone());
        }
    }
}
