//! What the engine benchmarks share: pinning to the data plane's default core, and a
//! deterministic workload of one partition in the benchmark's default mix.
//!
//! The generator is a small copy of `gameshard-e2e`'s workload rather than that crate
//! itself: the engine must build and benchmark alone, without the data plane, rdkafka
//! and the test harness that `gameshard-e2e` brings.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, SamplingMode};
use gameshard_engine::spec::{Event, SpecParser, SpecWorld, Update};
use gameshard_engine::{EventBatch, Parser, RecordMeta, Updates, World};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// Players in the benchmarked partition: the pipeline benchmark's 100,000 players over
/// 8 partitions.
pub const PLAYERS: u32 = 12_500;
/// Items loots draw from.
pub const ITEMS: u64 = 1_000_000;
/// Events per record, as gateways batch them.
pub const EVENTS_PER_RECORD: u32 = 64;
/// Records in one pipeline batch of 1,024 events.
pub const RECORDS_PER_BATCH: usize = 16;
/// Distinct records cycled through: 64 batches.
pub const RECORDS: usize = 64 * RECORDS_PER_BATCH;

/// Pins the calling thread to the first CPU it may run on, where the data plane pins its
/// state machine by default, and says so.
pub fn pin() {
    let allowed = sched_getaffinity(Pid::from_raw(0)).expect("the CPU affinity is readable");
    let first = (0..CpuSet::count())
        .find(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .expect("some CPU is allowed");
    let mut set = CpuSet::new();
    set.set(first).expect("the CPU exists");
    sched_setaffinity(Pid::from_raw(0), &set).expect("the thread can be pinned");
    eprintln!("pinned to CPU {first}");
}

/// Sets `group` up for iterations of milliseconds (a whole pass of [`RECORDS`] records):
/// the same number of iterations in every sample, rather than criterion's rising counts
/// meant for iterations of nanoseconds, which would take minutes here.
pub fn long_iterations(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sampling_mode(SamplingMode::Flat).sample_size(30);
}

/// `SplitMix64`, as the e2e workload uses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn coordinate(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.below(((hi - lo) * 100.0) as u64) as f64 / 100.0
    }
}

/// One record per line of `events`, as NDJSON, or as a JSON array with `array`.
fn frame(events: &[String], array: bool) -> Vec<u8> {
    if array { format!("[{}]", events.join(",")) } else { events.join("\n") }.into_bytes()
}

/// Records that spawn every player once.
pub fn warmup(array: bool) -> Vec<Vec<u8>> {
    let mut rng = Rng(7);
    let spawns: Vec<String> = (0..PLAYERS)
        .map(|k| {
            let (x, y, z) = (
                rng.coordinate(-1000.0, 1000.0),
                rng.coordinate(-1000.0, 1000.0),
                rng.coordinate(0.0, 50.0),
            );
            format!(
                r#"{{"type":"spawn","player":"p{k}","seq":1,"x":{x:.2},"y":{y:.2},"z":{z:.2}}}"#
            )
        })
        .collect();
    spawns.chunks(EVENTS_PER_RECORD as usize).map(|c| frame(c, array)).collect()
}

/// [`RECORDS`] records of [`EVENTS_PER_RECORD`] events: 10% spawn, 45% move, 20%
/// rotate, 15% shoot, 10% loot, each player's `seq` rising from 2.
pub fn records(array: bool) -> Vec<Vec<u8>> {
    let mut rng = Rng(1);
    let mut seq = vec![1u64; PLAYERS as usize];
    (0..RECORDS)
        .map(|_| {
            let events: Vec<String> = (0..EVENTS_PER_RECORD)
                .map(|_| {
                    let k = rng.below(u64::from(PLAYERS)) as usize;
                    seq[k] += 1;
                    let mut rest = String::new();
                    let kind = match rng.below(100) {
                        roll @ 0..55 => {
                            let (x, y, z) = (
                                rng.coordinate(-1000.0, 1000.0),
                                rng.coordinate(-1000.0, 1000.0),
                                rng.coordinate(0.0, 50.0),
                            );
                            let _ = write!(rest, r#","x":{x:.2},"y":{y:.2},"z":{z:.2}"#);
                            if roll < 10 { "spawn" } else { "move" }
                        }
                        55..75 => {
                            let (yaw, pitch) =
                                (rng.coordinate(-360.0, 720.0), rng.coordinate(-100.0, 100.0));
                            let _ = write!(rest, r#","yaw":{yaw:.2},"pitch":{pitch:.2}"#);
                            "rotate"
                        }
                        75..90 => {
                            let target = rng.below(u64::from(PLAYERS));
                            let damage = 1 + rng.below(40);
                            let _ = write!(rest, r#","target":"p{target}","damage":{damage}"#);
                            "shoot"
                        }
                        _ => {
                            let _ = write!(rest, r#","item":"item-{}""#, rng.below(ITEMS));
                            "loot"
                        }
                    };
                    format!(r#"{{"type":"{kind}","player":"p{k}","seq":{}{rest}}}"#, seq[k])
                })
                .collect();
            frame(&events, array)
        })
        .collect()
}

/// Parses `records` into batches of [`RECORDS_PER_BATCH`] records.
pub fn batches(records: &[Vec<u8>]) -> Vec<EventBatch<Event>> {
    let mut parser = SpecParser::new();
    records
        .chunks(RECORDS_PER_BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            let mut batch = EventBatch::default();
            for (i, bytes) in chunk.iter().enumerate() {
                let offset = (b * RECORDS_PER_BATCH + i) as i64;
                let index = batch.push_record(meta(offset));
                parser.parse(bytes, index, &mut batch);
            }
            batch
        })
        .collect()
}

/// Where a benchmark record comes from.
pub fn meta(offset: i64) -> RecordMeta {
    RecordMeta { partition: 0, offset, timestamp_ms: 1_732_760_000_123, arrival_ns: 0 }
}

/// A world in which every player has spawned.
pub fn spawned_world() -> SpecWorld {
    let mut world = SpecWorld::new();
    let mut updates = Updates::default();
    for batch in batches(&warmup(false)) {
        apply(&mut world, &batch, &mut updates);
        updates.clear();
    }
    world
}

/// Applies `batch` to `world` and flushes its updates into `out`, as the state machine
/// does once per batch.
pub fn apply(world: &mut SpecWorld, batch: &EventBatch<Event>, out: &mut Updates<Update>) {
    for parsed in &batch.events {
        world.apply(&parsed.event, &batch.bytes, &batch.records[parsed.record as usize]);
    }
    world.flush(out);
}

/// Raises the `seq` of every event in `batches` by `by`, so that applying them again
/// exercises the rules as the first time did instead of finding every event stale.
pub fn raise_seqs(batches: &mut [EventBatch<Event>], by: u64) {
    for batch in batches {
        for parsed in &mut batch.events {
            parsed.event.seq += by;
        }
    }
}
