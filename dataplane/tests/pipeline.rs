//! The pipeline threads end to end from memory: ownership, snapshots by policy and in
//! slices, handoffs, drain.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gameshard_dataplane::metrics::Metrics;
use gameshard_dataplane::pipeline::{
    self, Chunk, ChunkEnd, Config, Purpose, Released, SnapshotPolicy, SnapshotSizes, SnapshotStart,
};
use gameshard_dataplane::sink::{Progress, Sink};
use gameshard_dataplane::source::{Acquisition, Polled, Record, Source};
use gameshard_engine::spec::{SpecGame, SpecWorld};
use gameshard_engine::{RecordMeta, World};

enum Item {
    Assign(u32, SpecWorld),
    /// A partition taken with everything the ownership thread says about it.
    Take(Acquisition<SpecWorld>),
    Record(u32, i64, Vec<u8>),
    Revoke(u32, u64, bool),
    /// No record until then.
    IdleUntil(Instant),
}

struct ListSource(VecDeque<Item>, Vec<u8>);

impl Source<SpecWorld> for ListSource {
    fn poll(&mut self, wait: Duration) -> Polled<'_, SpecWorld> {
        match self.0.pop_front() {
            None => Polled::End,
            Some(Item::Assign(partition, world)) => {
                Polled::Assign(Acquisition::new(partition, 0, world))
            }
            Some(Item::Take(a)) => Polled::Assign(a),
            Some(Item::IdleUntil(deadline)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return self.poll(wait);
                }
                std::thread::sleep(left.min(wait));
                self.0.push_front(Item::IdleUntil(deadline));
                Polled::Idle
            }
            Some(Item::Revoke(partition, epoch, fenced)) => {
                Polled::Revoke { partition, epoch, fenced }
            }
            Some(Item::Record(partition, offset, bytes)) => {
                self.1 = bytes;
                let meta = RecordMeta { partition, offset, timestamp_ms: 1, arrival_ns: 0 };
                Polled::Record(Record { meta, payload: &self.1 })
            }
        }
    }
}

/// A partition restored from a snapshot taken at `snapshot_ms`, resuming at `next_offset`.
fn restored(partition: u32, next_offset: i64, snapshot_ms: i64) -> Item {
    Item::Take(Acquisition {
        snapshot_ms: Some(snapshot_ms),
        ..Acquisition::new(partition, next_offset, SpecWorld::new())
    })
}

#[derive(Default)]
struct Recording {
    updates: usize,
    started: Vec<SnapshotStart>,
    /// Chunks so far, by snapshot id, with the index each chunk had.
    chunks: BTreeMap<u64, (Vec<u32>, Vec<u8>)>,
    /// Complete snapshots, in the order they completed.
    snapshots: Vec<(SnapshotStart, Vec<u8>)>,
    abandoned: Vec<u64>,
    released: Vec<Released>,
    progress: Vec<Progress>,
    finished: bool,
}

impl Recording {
    /// (partition, next offset) of every complete snapshot.
    fn taken(&self) -> Vec<(u32, i64)> {
        self.snapshots.iter().map(|(s, _)| (s.partition, s.next_offset)).collect()
    }
}

impl Sink for Recording {
    fn update(&mut self, _src: &RecordMeta, _key: &[u8], _value: &[u8]) {
        self.updates += 1;
    }
    fn dead_letter(&mut self, _src: &RecordMeta, _reason: &'static str, _payload: &[u8]) {}
    fn snapshot_started(&mut self, start: &SnapshotStart) {
        self.started.push(*start);
    }
    fn snapshot_chunk(&mut self, chunk: &Chunk) {
        let start =
            *self.started.iter().find(|s| s.id == chunk.id).expect("a chunk follows its start");
        let (indexes, bytes) = self.chunks.entry(chunk.id).or_default();
        indexes.push(chunk.index);
        bytes.extend_from_slice(&chunk.bytes);
        match chunk.end {
            ChunkEnd::More => {}
            ChunkEnd::Last => {
                assert!(
                    indexes.iter().enumerate().all(|(i, &index)| index as usize == i),
                    "chunks come in order: {indexes:?}"
                );
                let (_, bytes) = self.chunks.remove(&chunk.id).expect("present");
                self.snapshots.push((start, bytes));
            }
            ChunkEnd::Abandoned => {
                self.chunks.remove(&chunk.id);
                self.abandoned.push(chunk.id);
            }
        }
    }
    fn released(&mut self, released: &Released) {
        self.released.push(*released);
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
    run_with(items, Config { snapshots: policy, max_batch_events, ..Config::default() }).0
}

fn run_with(items: Vec<Item>, config: Config) -> (Recording, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new("test", 2, SpecWorld::REJECT_REASONS));
    let source = ListSource(items.into(), Vec::new());
    let running =
        pipeline::spawn(&SpecGame, source, Recording::default(), config, &metrics).expect("starts");
    (running.join().expect("drains").1, metrics)
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
    let of =
        |p: u32| sink.taken().into_iter().filter(|s| s.0 == p).map(|s| s.1).collect::<Vec<_>>();
    assert_eq!(of(0), (1..=10).map(|n| n * 10).collect::<Vec<i64>>(), "every 10 records");
    assert_eq!(of(1), [5], "partition 1 is only snapshotted on drain");
    assert!(sink.finished);
    // Each snapshot restores to the world after exactly the records before its offset.
    for (start, bytes) in &sink.snapshots {
        let mut world = SpecWorld::new();
        world.restore(bytes).expect("restores");
        assert_eq!(world.entities() as i64, start.next_offset, "one spawn per record");
        assert_eq!(start.purpose, Purpose::Periodic);
    }
}

#[test]
fn a_snapshot_in_slices_holds_its_start_while_later_batches_are_applied() {
    // A world of 3000 players, snapshotted after its spawns, in slices of 1 KiB and
    // chunks of 4 KiB, while 500 more records move the same players.
    let mut items = vec![Item::Assign(0, SpecWorld::new())];
    items.extend((0..3000).map(|i| Item::Record(0, i, record(i as u32, 1))));
    items.extend((0..500).map(|i| {
        let line = format!(r#"{{"type":"move","player":"p{}","seq":2,"x":9,"y":9,"z":9}}"#, i * 6);
        Item::Record(0, 3000 + i, line.into_bytes())
    }));
    let policy = SnapshotPolicy {
        every_records: 3000,
        every: Duration::from_hours(1),
        refresh: Duration::from_hours(1),
        on_drain: false,
    };
    let config = Config {
        snapshots: policy,
        snapshot_sizes: SnapshotSizes { chunk_bytes: 4096, slice_bytes: 1024 },
        max_batch_events: 100,
        ..Config::default()
    };
    let (sink, _) = run_with(items, config);
    assert_eq!(sink.taken(), [(0, 3000)]);
    let (_, bytes) = &sink.snapshots[0];
    let chunks = bytes.len().div_ceil(4096);
    assert!(chunks > 10, "the snapshot went out in many chunks ({} bytes)", bytes.len());
    let mut world = SpecWorld::new();
    world.restore(bytes).expect("restores");
    assert_eq!(world.entities(), 3000);
    for i in (0..3000).step_by(6) {
        let p = world.player(format!("p{i}").as_bytes()).expect("spawned before the snapshot");
        assert_eq!((p.x, p.seq), (0.0, 1), "p{i} as it was at offset 3000, not moved");
    }
}

#[test]
fn an_idle_partition_is_snapshotted_again_once_its_snapshot_is_older_than_the_refresh() {
    let now_ms = gameshard_dataplane::clock::unix_ms();
    let hour_ms = 3_600_000;
    let items = vec![
        // Restored from snapshots two hours and one minute old; neither reads a record.
        restored(0, 40, now_ms - 2 * hour_ms),
        restored(1, 7, now_ms - 60_000),
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
    assert_eq!(sink.taken(), [(0, 40)], "only the partition whose snapshot is older than an hour");
}

#[test]
fn a_revoked_partition_is_snapshotted_released_and_its_later_records_left_alone() {
    let mut items = vec![Item::Assign(0, SpecWorld::new())];
    items.extend((0..3).map(|i| Item::Record(0, i, record(i as u32, 1))));
    items.push(Item::Revoke(0, 7, false));
    items.push(Item::Record(0, 3, record(9, 1)));
    let sink = run(items, SnapshotPolicy::NEVER, 1024);
    assert_eq!(sink.snapshots.len(), 1);
    let (start, _) = &sink.snapshots[0];
    assert_eq!(
        (start.next_offset, start.epoch, start.purpose),
        (3, 7, Purpose::Release),
        "the last snapshot covers the records before the revoke, under the move's epoch"
    );
    assert_eq!(
        sink.released,
        [Released {
            partition: 0,
            epoch: 7,
            next_offset: 3,
            snapshot: Some(start.id),
            fenced: false
        }]
    );
    assert_eq!(sink.updates, 3, "the record after the revoke is not applied");
}

#[test]
fn a_fenced_partition_is_dropped_without_a_snapshot() {
    let mut items = vec![Item::Assign(0, SpecWorld::new())];
    items.extend((0..3).map(|i| Item::Record(0, i, record(i as u32, 1))));
    items.push(Item::Revoke(0, 9, true));
    let sink = run(items, SnapshotPolicy::NEVER, 1024);
    assert!(sink.started.is_empty(), "no snapshot of a fenced partition");
    assert_eq!(
        sink.released,
        [Released { partition: 0, epoch: 9, next_offset: 3, snapshot: None, fenced: true }]
    );
}

#[test]
fn a_partition_given_up_during_its_periodic_snapshot_abandons_it_for_the_release() {
    let mut items = vec![Item::Assign(0, SpecWorld::new())];
    items.extend((0..2000).map(|i| Item::Record(0, i, record(i as u32, 1))));
    items.push(Item::Revoke(0, 4, false));
    let policy = SnapshotPolicy {
        every_records: 2000,
        every: Duration::from_hours(1),
        refresh: Duration::from_hours(1),
        on_drain: false,
    };
    let config = Config {
        snapshots: policy,
        // Slices so small that the periodic snapshot is still being written when the
        // revoke comes.
        snapshot_sizes: SnapshotSizes { chunk_bytes: 256, slice_bytes: 64 },
        max_batch_events: 2000,
        ..Config::default()
    };
    let (sink, _) = run_with(items, config);
    let release = sink.started.iter().find(|s| s.purpose == Purpose::Release).expect("release");
    assert_eq!(sink.taken(), [(0, 2000)], "only the release's snapshot completes");
    assert_eq!(sink.snapshots[0].0.id, release.id);
    assert_eq!(sink.abandoned.len(), 1, "the periodic one was abandoned");
}

#[test]
fn a_partition_taken_without_a_snapshot_of_its_epoch_is_snapshotted_at_once() {
    let items = vec![Item::Take(Acquisition {
        epoch: 5,
        snapshot_now: true,
        ..Acquisition::new(1, 12, SpecWorld::new())
    })];
    let sink = run(items, SnapshotPolicy::NEVER, 1024);
    assert_eq!(sink.taken(), [(1, 12)]);
    assert_eq!(sink.snapshots[0].0.epoch, 5);
}

#[test]
fn a_handoff_lasts_from_the_release_to_the_first_record_processed() {
    let released_ms = gameshard_dataplane::clock::unix_ms() - 300;
    let items = vec![
        Item::Take(Acquisition {
            released_ms: Some(released_ms),
            ..Acquisition::new(0, 0, SpecWorld::new())
        }),
        Item::Record(0, 0, record(1, 1)),
        Item::Record(0, 1, record(2, 1)),
    ];
    let config = Config { snapshots: SnapshotPolicy::NEVER, ..Config::default() };
    let (_, metrics) = run_with(items, config);
    assert_eq!(metrics.handoff_duration.count(), 1, "observed once, at the first record");
    let bound = metrics.handoff_duration.quantile_upper_bound(0.5).expect("observed");
    assert!((0.25..=1.0).contains(&bound), "about 300 ms: bucket bound {bound}");
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
