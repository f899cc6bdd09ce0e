//! The pipeline threads end to end from memory: ownership, snapshots by policy, drain.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gameshard_dataplane::metrics::Metrics;
use gameshard_dataplane::pipeline::{self, Config, SnapshotPolicy};
use gameshard_dataplane::sink::{Progress, Sink};
use gameshard_dataplane::source::{Polled, Record, Source};
use gameshard_engine::spec::{SpecGame, SpecWorld};
use gameshard_engine::{RecordMeta, World};

enum Item {
    Assign(u32, SpecWorld),
    /// A partition restored from a snapshot: next offset, and when the snapshot was taken.
    Restored(u32, i64, i64),
    Record(u32, i64, Vec<u8>),
    Revoke(u32),
    /// No record until then.
    IdleUntil(Instant),
}

struct ListSource(VecDeque<Item>, Vec<u8>);

impl Source<SpecWorld> for ListSource {
    fn poll(&mut self, wait: Duration) -> Polled<'_, SpecWorld> {
        match self.0.pop_front() {
            None => Polled::End,
            Some(Item::Assign(partition, world)) => {
                Polled::Assign { partition, next_offset: 0, world, snapshot_ms: None }
            }
            Some(Item::Restored(partition, next_offset, snapshot_ms)) => Polled::Assign {
                partition,
                next_offset,
                world: SpecWorld::new(),
                snapshot_ms: Some(snapshot_ms),
            },
            Some(Item::IdleUntil(deadline)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return self.poll(wait);
                }
                std::thread::sleep(left.min(wait));
                self.0.push_front(Item::IdleUntil(deadline));
                Polled::Idle
            }
            Some(Item::Revoke(partition)) => Polled::Revoke { partition },
            Some(Item::Record(partition, offset, bytes)) => {
                self.1 = bytes;
                let meta = RecordMeta { partition, offset, timestamp_ms: 1, arrival_ns: 0 };
                Polled::Record(Record { meta, payload: &self.1 })
            }
        }
    }
}

#[derive(Default)]
struct Recording {
    updates: usize,
    snapshots: Vec<(u32, i64, Vec<u8>)>,
    released: Vec<u32>,
    progress: Vec<Progress>,
    finished: bool,
}

impl Sink for Recording {
    fn update(&mut self, _src: &RecordMeta, _key: &[u8], _value: &[u8]) {
        self.updates += 1;
    }
    fn dead_letter(&mut self, _src: &RecordMeta, _reason: &'static str, _payload: &[u8]) {}
    fn snapshot(&mut self, partition: u32, next_offset: i64, state: &[u8]) {
        self.snapshots.push((partition, next_offset, state.to_vec()));
    }
    fn released(&mut self, partition: u32) {
        self.released.push(partition);
    }
    fn end_batch(&mut self, progress: &[Progress], _now_ns: u64) {
        self.progress.extend_from_slice(progress);
    }
    fn finish(&mut self) {
        self.finished = true;
    }
}

fn record(player: u32, seq: u64) -> Vec<u8> {
    format!(r#"{{"type":"spawn","player":"p{player}","seq":{seq}}}"#).into_bytes()
}

fn run(items: Vec<Item>, policy: SnapshotPolicy, max_batch_events: usize) -> Recording {
    let metrics = Arc::new(Metrics::new("test", 2, SpecWorld::REJECT_REASONS));
    let config = Config { snapshots: policy, max_batch_events, ..Config::default() };
    let source = ListSource(items.into(), Vec::new());
    let running =
        pipeline::spawn(&SpecGame, source, Recording::default(), config, &metrics).expect("starts");
    running.join().expect("drains").1
}

#[test]
fn snapshots_follow_the_record_count_policy_and_the_drain() {
    let mut items = vec![Item::Assign(0, SpecWorld::new()), Item::Assign(1, SpecWorld::new())];
    items.extend((0..100).map(|i| Item::Record(0, i, record(i as u32, 1))));
    items.extend((0..5).map(|i| Item::Record(1, i, record(i as u32, 1))));
    let policy = SnapshotPolicy {
        every_records: 10,
        every: Duration::from_hours(1),
        refresh: Duration::from_hours(1),
        on_drain: true,
    };
    // One record per batch, so that the policy is checked after each.
    let sink = run(items, policy, 1);
    let of = |p: u32| sink.snapshots.iter().filter(|s| s.0 == p).map(|s| s.1).collect::<Vec<_>>();
    assert_eq!(of(0), (1..=10).map(|n| n * 10).collect::<Vec<i64>>(), "every 10 records");
    assert_eq!(of(1), [5], "partition 1 is only snapshotted on drain");
    assert!(sink.finished);
    // The last snapshot restores to the world after every record.
    let (_, _, bytes) = sink.snapshots.iter().rev().find(|s| s.0 == 0).expect("snapshot");
    let mut world = SpecWorld::new();
    world.restore(bytes).expect("restores");
    assert_eq!(world.entities(), 100);
}

#[test]
fn an_idle_partition_is_snapshotted_again_once_its_snapshot_is_older_than_the_refresh() {
    let now_ms = gameshard_dataplane::clock::unix_ms();
    let hour_ms = 3_600_000;
    let items = vec![
        // Restored from snapshots two hours and one minute old; neither reads a record.
        Item::Restored(0, 40, now_ms - 2 * hour_ms),
        Item::Restored(1, 7, now_ms - 60_000),
        // Long enough for the IO thread to tell the time a few times.
        Item::IdleUntil(Instant::now() + Duration::from_millis(800)),
    ];
    let policy = SnapshotPolicy {
        every_records: 10,
        every: Duration::from_secs(1),
        refresh: Duration::from_hours(1),
        on_drain: true,
    };
    let sink = run(items, policy, 1024);
    let taken: Vec<(u32, i64)> = sink.snapshots.iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(taken, [(0, 40)], "only the partition whose snapshot is older than an hour");
}

#[test]
fn a_revoked_partition_is_snapshotted_released_and_its_later_records_dropped() {
    let mut items = vec![Item::Assign(0, SpecWorld::new())];
    items.extend((0..3).map(|i| Item::Record(0, i, record(i as u32, 1))));
    items.push(Item::Revoke(0));
    items.push(Item::Record(0, 3, record(9, 1)));
    let sink = run(items, SnapshotPolicy::NEVER, 1024);
    assert_eq!(sink.released, [0]);
    assert_eq!(sink.snapshots.len(), 1);
    assert_eq!(sink.snapshots[0].1, 3, "the final snapshot covers the records before the revoke");
    assert_eq!(sink.updates, 3, "the record after the revoke is not applied");
}

#[test]
fn updates_within_the_latency_target_are_counted_exactly() {
    use std::sync::atomic::Ordering::Relaxed;
    let now_ms = gameshard_dataplane::clock::unix_ms();
    for (target, within_all) in [(3600.0, true), (1e-9, false)] {
        let metrics = Arc::new(
            Metrics::new("test", 1, SpecWorld::REJECT_REASONS).with_latency_target(Some(target)),
        );
        let config = Config { snapshots: SnapshotPolicy::NEVER, ..Config::default() };
        let mut items = vec![Item::Assign(0, SpecWorld::new())];
        items.extend((0..20).map(|i| Item::Record(0, i, record(i as u32, 1))));
        let source = StampedSource(ListSource(items.into(), Vec::new()), now_ms);
        let running = pipeline::spawn(&SpecGame, source, Recording::default(), config, &metrics)
            .expect("starts");
        let sink = running.join().expect("drains").1;
        assert_eq!(sink.updates, 20);
        let within = metrics.within_target.load(Relaxed);
        assert_eq!(within, if within_all { 20 } else { 0 }, "target {target} s");
        assert_eq!(metrics.latency.count(), 20, "the histogram counts the same updates");
    }
}

/// A [`ListSource`] whose records carry `timestamp_ms`.
struct StampedSource(ListSource, i64);

impl Source<SpecWorld> for StampedSource {
    fn poll(&mut self, wait: Duration) -> Polled<'_, SpecWorld> {
        let ts = self.1;
        match self.0.poll(wait) {
            Polled::Record(mut r) => {
                r.meta.timestamp_ms = ts;
                Polled::Record(r)
            }
            other => other,
        }
    }
}
