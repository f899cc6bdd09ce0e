//! `kill -9` at random points, then a restart: the final state of every entity is the
//! one the model gives for the whole input, with no event lost and none applied twice,
//! in each output framing.
//!
//! Input keeps arriving at a steady pace while the data plane is killed and restarted,
//! so kills find it busy: mid-batch, mid-commit, mid-snapshot. Snapshots are taken
//! every 10 records per partition in 1 KiB chunks, and the producer lingers 40 ms
//! before each send, which holds every snapshot's manifest back well after its chunks
//! reached the broker: most kills then leave a snapshot without its manifest, which
//! the next restart must pass over. The test asserts that this happened, and that
//! restarts restored snapshots taken after earlier crashes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gameshard_e2e::harness::dataplane::Dataplane;
use gameshard_e2e::harness::kafka::{self, Outgoing};
use gameshard_e2e::harness::zone::{DeadLetters, EVENTS, Framing, SNAPSHOTS, Zone};
use gameshard_e2e::rng::Rng;
use gameshard_e2e::verify;

const ARGS: [&str; 6] =
    ["--snapshot-every-records", "10", "--snapshot-chunk-kb", "1", "--kafka", "linger.ms=40"];

/// Kills per seed at least; more while the input is still arriving.
const MIN_KILLS: usize = 4;

#[derive(Debug, Default)]
struct Run {
    kills: usize,
    /// Restarts that restored some partition from a snapshot.
    restored: usize,
    /// Snapshots whose chunks reached the broker and whose manifest never did.
    interrupted: usize,
}

fn crash_and_recover(framing: Framing, seed: u64) -> Option<Run> {
    let zone = Zone::start(&format!("crash-{}-{seed}", framing.flag()), 4)
        .expect("zone starts")?
        .with_framing(framing);
    let stream = verify::stream(seed, 400, 4, 800, 16);
    let (first, rest) = stream.split_at(stream.len() / 5);
    zone.produce(first).expect("produce");
    let mut rng = Rng::new(seed);
    let mut run = Run::default();
    std::thread::scope(|s| {
        let producer = s.spawn(|| {
            let w = kafka::Writer::new(&zone.bootstrap()).expect("producer");
            for records in rest.chunks(8) {
                let out: Vec<Outgoing<'_>> =
                    records.iter().map(|(p, v)| Outgoing::value(*p, v)).collect();
                w.send(&zone.topic(EVENTS), &out).expect("produce");
                w.flush().expect("produced");
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        let mut dp = zone.dataplane(&ARGS).expect("data plane starts");
        while run.kills < MIN_KILLS || !producer.is_finished() {
            dp.wait_ready(Duration::from_mins(1)).expect("ready");
            // Ready comes before the first fetch answers: the random point is counted
            // from the first record this incarnation applies.
            wait_applying(&dp);
            std::thread::sleep(Duration::from_millis(rng.below(800)));
            dp.kill9();
            run.kills += 1;
            run.restored += usize::from(dp.log_text().contains("restored from its snapshot"));
            dp = zone.dataplane(&ARGS).expect("data plane restarts");
        }
        producer.join().expect("producer thread");
        dp.wait_ready(Duration::from_mins(1)).expect("ready");
        run.restored += usize::from(dp.log_text().contains("restored from its snapshot"));
        zone.wait_caught_up(&mut dp, Duration::from_mins(2)).expect("caught up");
        zone.check(DeadLetters::AtLeastOnce)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", dp.report()));
    });
    run.interrupted = interrupted_snapshots(&zone);
    Some(run)
}

/// Waits (up to two seconds: there may be nothing left to apply) until `dp` has applied
/// events.
fn wait_applying(dp: &Dataplane) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && dp.status().is_ok_and(|s| s["events"].as_u64().unwrap_or(0) == 0)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Snapshots whose chunks reached the broker but whose manifest never did: a kill landed
/// while they were being written.
fn interrupted_snapshots(zone: &Zone) -> usize {
    let mut chunked = BTreeSet::new();
    let mut declared = BTreeSet::new();
    for r in zone.read(SNAPSHOTS).expect("read snapshots") {
        if r.key == b"chunk" {
            chunked.insert(r.headers.get("gameshard-snapshot").cloned().unwrap_or_default());
        } else if let Ok(m) = serde_json::from_slice::<serde_json::Value>(&r.value) {
            declared.insert(m["id"].as_u64().unwrap_or_default().to_string().into_bytes());
        }
    }
    chunked.difference(&declared).count()
}

fn kill_9_at_random_points(framing: Framing, seeds: [u64; 3]) {
    let mut total = Run::default();
    for seed in seeds {
        let Some(run) = crash_and_recover(framing, seed) else { return };
        eprintln!("{framing:?} framing, seed {seed}: {run:?}");
        total.kills += run.kills;
        total.restored += run.restored;
        total.interrupted += run.interrupted;
    }
    assert!(total.restored > 0, "some restart restored a snapshot: {total:?}");
    assert!(total.interrupted > 0, "some kill interrupted a snapshot: {total:?}");
}

#[test]
fn kill_9_at_random_points_then_restart_gives_the_exact_final_state() {
    kill_9_at_random_points(Framing::Entity, [11, 12, 13]);
}

#[test]
fn kill_9_at_random_points_gives_the_exact_final_state_with_batch_framing() {
    kill_9_at_random_points(Framing::Batch, [14, 15, 16]);
}
