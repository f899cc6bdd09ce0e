//! Invariants over random event streams: exact recovery by snapshot plus replay, what
//! replaying records a world has already seen does (exactly), coalescing that loses
//! nothing, and a parser and snapshot reader that never panic.
//!
//! Replaying an arbitrary suffix is not idempotent (specification, section 3): an event
//! rejected `unknown_player` leaves no trace and can apply when it is seen again after
//! its player spawned. The properties below say exactly what does hold.

use std::collections::BTreeMap;

use gameshard_engine::spec::{Event, PlayerState, Reject, SpecEncoder, SpecParser, SpecWorld};
use gameshard_engine::{Encoder, EventBatch, Outcome, Parser, RecordMeta, Updates, World};
use proptest::prelude::*;

/// A world's state in a comparable form.
#[derive(Debug, PartialEq)]
struct State {
    players: BTreeMap<Vec<u8>, PlayerState>,
    items: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn state(w: &SpecWorld) -> State {
    State {
        players: w.players().map(|(id, p)| (id.to_vec(), *p)).collect(),
        items: w.items().map(|(id, by)| (id.to_vec(), by.to_vec())).collect(),
    }
}

fn event_line() -> impl Strategy<Value = String> {
    let player = prop::sample::select(vec!["a", "b", "c", "d", "é"]);
    let seq = 0u64..12;
    prop_oneof![
        2 => (player.clone(), seq.clone(), -5i32..5).prop_map(|(p, s, x)| format!(r#"{{"type":"spawn","player":"{p}","seq":{s},"x":{x}}}"#)),
        3 => (player.clone(), seq.clone(), -5.0f64..5.0).prop_map(|(p, s, x)| format!(r#"{{"type":"move","player":"{p}","seq":{s},"x":{x:?},"y":1,"z":-1.5}}"#)),
        2 => (player.clone(), seq.clone(), -800.0f64..800.0, -120.0f64..120.0).prop_map(|(p, s, y, t)| format!(r#"{{"type":"rotate","player":"{p}","seq":{s},"yaw":{y:?},"pitch":{t:?}}}"#)),
        3 => (player.clone(), seq.clone(), player.clone(), 1u8..=100).prop_map(|(p, s, t, d)| format!(r#"{{"type":"shoot","player":"{p}","seq":{s},"target":"{t}","damage":{d}}}"#)),
        2 => (player.clone(), seq.clone(), prop::sample::select(vec!["gem", "key", "map", "axe"])).prop_map(|(p, s, i)| format!(r#"{{"type":"loot","player":"{p}","seq":{s},"item":"{i}"}}"#)),
        1 => Just(r#"{"type":"move","player":"a","seq":3}"#.to_string()),
        1 => Just("{not json".to_string()),
    ]
}

/// A record: 1 to 4 events, as NDJSON or as an array.
fn record() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(event_line(), 1..5), any::<bool>()).prop_map(|(lines, array)| {
        if array && !lines.iter().any(|l| l.starts_with("{not")) {
            format!("[{}]", lines.join(",")).into_bytes()
        } else {
            lines.join("\n").into_bytes()
        }
    })
}

fn stream() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(record(), 1..40)
}

/// Players the streams act for.
const PLAYERS: [&str; 5] = ["a", "b", "c", "d", "é"];

/// A stream whose first record spawns every player at `seq` 0, so that no event of it
/// finds its player missing.
fn spawned_stream() -> impl Strategy<Value = Vec<Vec<u8>>> {
    stream().prop_map(|mut records| {
        let spawns: Vec<String> = PLAYERS
            .iter()
            .map(|p| format!(r#"{{"type":"spawn","player":"{p}","seq":0}}"#))
            .collect();
        records.insert(0, spawns.join("\n").into_bytes());
        records
    })
}

fn meta(offset: usize) -> RecordMeta {
    RecordMeta {
        partition: 0,
        offset: offset as i64,
        timestamp_ms: 10_000 + offset as i64,
        arrival_ns: 0,
    }
}

/// An encoded update: key, source offset and value.
type Published = (Vec<u8>, i64, serde_json::Value);

/// Applies records `from..` of `records` to `world` in batches of `batch` records,
/// flushing after every batch (or after every event with `batch == 0`), and returns each
/// event's outcome and the encoded updates.
fn apply(
    world: &mut SpecWorld,
    records: &[Vec<u8>],
    from: usize,
    batch_size: usize,
) -> (Vec<Outcome>, Vec<Published>) {
    let mut parser = SpecParser::new();
    let mut outcomes = Vec::new();
    let mut updates = Updates::default();
    let mut published = Vec::new();
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut publish = |updates: &mut Updates<_>| {
        for (src, u) in &updates.items {
            SpecEncoder.encode(src, u, &updates.bytes, &mut key, &mut value);
            published.push((key.clone(), src.offset, serde_json::from_slice(&value).unwrap()));
        }
        updates.clear();
    };
    for chunk_start in (from..records.len()).step_by(batch_size.max(1)) {
        let chunk_end = (chunk_start + batch_size.max(1)).min(records.len());
        let mut batch = EventBatch::default();
        for (i, r) in records.iter().enumerate().take(chunk_end).skip(chunk_start) {
            let index = batch.push_record(meta(i));
            parser.parse(r, index, &mut batch);
        }
        for e in &batch.events {
            outcomes.push(world.apply(&e.event, &batch.bytes, &batch.records[e.record as usize]));
            if batch_size == 0 {
                world.flush(&mut updates);
                publish(&mut updates);
            }
        }
        world.flush(&mut updates);
        publish(&mut updates);
    }
    (outcomes, published)
}

/// Every record of `records` parsed into one batch, record `i` at offset `i`.
fn parse_all(records: &[Vec<u8>]) -> EventBatch<Event> {
    let mut parser = SpecParser::new();
    let mut batch = EventBatch::default();
    for (i, r) in records.iter().enumerate() {
        let index = batch.push_record(meta(i));
        parser.parse(r, index, &mut batch);
    }
    batch
}

/// Applies the events of `batch` at `indices`, in that order, flushing after each one,
/// and returns their outcomes and the encoded updates.
fn apply_events(
    world: &mut SpecWorld,
    batch: &EventBatch<Event>,
    indices: impl IntoIterator<Item = usize>,
) -> (Vec<Outcome>, Vec<Published>) {
    let mut outcomes = Vec::new();
    let mut published = Vec::new();
    let mut updates = Updates::default();
    let (mut key, mut value) = (Vec::new(), Vec::new());
    for i in indices {
        let e = &batch.events[i];
        outcomes.push(world.apply(&e.event, &batch.bytes, &batch.records[e.record as usize]));
        world.flush(&mut updates);
        for (src, u) in &updates.items {
            SpecEncoder.encode(src, u, &updates.bytes, &mut key, &mut value);
            published.push((key.clone(), src.offset, serde_json::from_slice(&value).unwrap()));
        }
        updates.clear();
    }
    (outcomes, published)
}

/// The index of the first event of record `record` or of a later one.
fn first_event_of(batch: &EventBatch<Event>, record: usize) -> usize {
    batch.events.iter().position(|e| e.record as usize >= record).unwrap_or(batch.events.len())
}

const STALE: Outcome = Outcome::Rejected(Reject::StaleSeq as u8);
const UNKNOWN_PLAYER: Outcome = Outcome::Rejected(Reject::UnknownPlayer as u8);

fn restored(world: &SpecWorld) -> SpecWorld {
    let mut bytes = Vec::new();
    world.snapshot(&mut bytes);
    let mut copy = SpecWorld::new();
    copy.restore(&bytes).expect("a snapshot restores");
    copy
}

/// Folds published updates the way a consumer does: per key, the greatest `src_offset`
/// wins, and among equal offsets the later one.
fn fold(updates: &[Published]) -> BTreeMap<Vec<u8>, serde_json::Value> {
    let mut latest: BTreeMap<Vec<u8>, (i64, serde_json::Value)> = BTreeMap::new();
    for (key, offset, value) in updates {
        if latest.get(key).is_none_or(|(o, _)| offset >= o) {
            latest.insert(key.clone(), (*offset, value.clone()));
        }
    }
    latest
        .into_iter()
        .map(|(k, (_, mut v))| {
            for f in ["src_offset", "src_ts", "src_partition"] {
                v.as_object_mut().unwrap().remove(f);
            }
            (k, v)
        })
        .collect()
}

/// The view a consumer should end with: every entity's current state, as an update
/// without its source fields.
fn expected_view(world: &SpecWorld) -> BTreeMap<Vec<u8>, serde_json::Value> {
    let mut view = BTreeMap::new();
    let copy = restored(world);
    for (id, p) in copy.players() {
        let mut key = b"player:".to_vec();
        key.extend_from_slice(id);
        view.insert(
            key,
            serde_json::json!({
                "kind": "player", "id": String::from_utf8(id.to_vec()).unwrap(),
                "x": p.x, "y": p.y, "z": p.z, "yaw": p.yaw, "pitch": p.pitch, "hp": p.hp,
                "alive": p.alive, "score": p.score, "loot": p.loot, "seq": p.seq,
            }),
        );
    }
    for (id, by) in copy.items() {
        let mut key = b"item:".to_vec();
        key.extend_from_slice(id);
        view.insert(
            key,
            serde_json::json!({
                "kind": "item", "id": String::from_utf8(id.to_vec()).unwrap(),
                "claimed_by": String::from_utf8(by.to_vec()).unwrap(),
            }),
        );
    }
    view
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn restoring_a_snapshot_and_replaying_the_rest_gives_the_exact_state(
        records in stream(), cut in any::<prop::sample::Index>(), batch in 1usize..6,
    ) {
        let mut whole = SpecWorld::new();
        let (_, whole_updates) = apply(&mut whole, &records, 0, batch);

        // The snapshot is taken at a record boundary and replay starts exactly after it.
        let cut = cut.index(records.len() + 1);
        let mut before = SpecWorld::new();
        let (_, mut updates) = apply(&mut before, &records[..cut], 0, batch);
        let mut recovered = restored(&before);
        updates.extend(apply(&mut recovered, &records, cut, batch).1);
        prop_assert_eq!(state(&recovered), state(&whole));
        // A consumer of the updates published before and after the restart ends with the
        // state of a consumer of the uninterrupted run.
        prop_assert_eq!(fold(&updates), fold(&whole_updates));
    }

    #[test]
    fn replaying_a_suffix_whose_events_all_found_their_player_changes_nothing(
        records in spawned_stream(), from in any::<prop::sample::Index>(),
    ) {
        let batch = parse_all(&records);
        let mut world = SpecWorld::new();
        let (first, _) = apply_events(&mut world, &batch, 0..batch.events.len());
        prop_assert!(!first.contains(&UNKNOWN_PLAYER), "every player spawned first");

        let start = first_event_of(&batch, from.index(records.len() + 1));
        let mut replayed = restored(&world);
        let (again, updates) = apply_events(&mut replayed, &batch, start..batch.events.len());
        // Each event was applied, rejected after advancing its player's seq, or stale:
        // seen again, every one is stale, and nothing changes or is published.
        prop_assert!(again.iter().all(|&o| o == STALE), "{:?}", again);
        prop_assert_eq!(state(&replayed), state(&world));
        prop_assert!(updates.is_empty(), "{:?}", updates);
    }

    #[test]
    fn replaying_any_suffix_does_exactly_what_its_unknown_player_events_do(
        records in stream(), from in any::<prop::sample::Index>(),
    ) {
        let batch = parse_all(&records);
        let mut world = SpecWorld::new();
        let (first, _) = apply_events(&mut world, &batch, 0..batch.events.len());

        let start = first_event_of(&batch, from.index(records.len() + 1));
        let mut replayed = restored(&world);
        let (again, updates) = apply_events(&mut replayed, &batch, start..batch.events.len());

        // Every other event of the suffix is stale when seen again, so the replay is the
        // same as applying the events that found no player the first time, alone.
        let unknown: Vec<usize> =
            (start..batch.events.len()).filter(|&i| first[i] == UNKNOWN_PLAYER).collect();
        let mut only_unknown = restored(&world);
        let (unknown_again, unknown_updates) =
            apply_events(&mut only_unknown, &batch, unknown.iter().copied());
        let mut unknown_outcomes = unknown_again.iter();
        for (i, outcome) in (start..).zip(&again) {
            if first[i] == UNKNOWN_PLAYER {
                prop_assert_eq!(Some(outcome), unknown_outcomes.next(), "event {}", i);
            } else {
                prop_assert_eq!(*outcome, STALE, "event {} was {:?} the first time", i, first[i]);
            }
        }
        prop_assert_eq!(state(&replayed), state(&only_unknown));
        prop_assert_eq!(updates, unknown_updates);
    }

    #[test]
    fn coalesced_and_uncoalesced_updates_yield_the_same_final_state(
        records in stream(), batch in 1usize..8,
    ) {
        let mut coalesced = SpecWorld::new();
        let (_, few) = apply(&mut coalesced, &records, 0, batch);
        let mut uncoalesced = SpecWorld::new();
        let (_, all) = apply(&mut uncoalesced, &records, 0, 0);
        prop_assert!(few.len() <= all.len());
        prop_assert_eq!(state(&coalesced), state(&uncoalesced));
        prop_assert_eq!(fold(&few), fold(&all));
        prop_assert_eq!(fold(&few), expected_view(&coalesced));
    }

    #[test]
    fn snapshots_round_trip_byte_for_byte(records in stream()) {
        let mut world = SpecWorld::new();
        apply(&mut world, &records, 0, 3);
        let mut first = Vec::new();
        world.snapshot(&mut first);
        let copy = restored(&world);
        let mut second = Vec::new();
        copy.snapshot(&mut second);
        prop_assert_eq!(first, second);
        prop_assert_eq!(state(&copy), state(&world));
    }

    #[test]
    fn a_damaged_snapshot_is_refused_without_panicking(
        records in stream(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let mut world = SpecWorld::new();
        apply(&mut world, &records, 0, 3);
        let mut bytes = Vec::new();
        world.snapshot(&mut bytes);
        let mut target = SpecWorld::new();
        let cut = cut.index(bytes.len());
        prop_assert!(target.restore(&bytes[..cut]).is_err());
        prop_assert_eq!(target.entities(), 0);
        let mut flipped = bytes.clone();
        let i = flip.0.index(flipped.len());
        flipped[i] ^= flip.1 | 1;
        // A flipped byte may still be a valid snapshot (a coordinate changed); it must
        // never panic, and a refusal leaves the world empty.
        if target.restore(&flipped).is_err() {
            prop_assert_eq!(target.entities(), 0);
        }
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut parser = SpecParser::new();
        let mut batch = EventBatch::default();
        let r = batch.push_record(meta(0));
        parser.parse(&bytes, r, &mut batch);
        prop_assert!(!batch.events.is_empty() || !batch.malformed.is_empty());
    }

    #[test]
    fn the_parser_never_panics_on_damaged_records(
        record in record(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = record;
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let mut parser = SpecParser::new();
        let mut batch = EventBatch::default();
        let r = batch.push_record(meta(0));
        parser.parse(&bytes, r, &mut batch);
        prop_assert!(!batch.events.is_empty() || !batch.malformed.is_empty());
    }
}

proptest! {
    #[test]
    fn coordinates_round_trip_exactly_from_input_to_update(x in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
        let mut world = SpecWorld::new();
        let line = format!(r#"{{"type":"spawn","player":"p","seq":1,"x":{x:?},"y":{x:e}}}"#);
        let (_, updates) = apply(&mut world, &[line.into_bytes()], 0, 1);
        let p = world.player(b"p").unwrap();
        prop_assert_eq!(p.x.to_bits(), x.to_bits());
        prop_assert_eq!(p.y.to_bits(), x.to_bits());
        prop_assert_eq!(updates[0].2["x"].as_f64().unwrap().to_bits(), x.to_bits());
    }
}

#[test]
fn replaying_a_record_the_snapshot_already_contains_can_change_the_state() {
    // The move finds no player and leaves no trace; the spawn after it creates the
    // player. Replayed from one record before the snapshot's boundary, the move applies.
    let records: Vec<Vec<u8>> = vec![
        br#"{"type":"move","player":"a","seq":5,"x":9,"y":9,"z":9}"#.to_vec(),
        br#"{"type":"spawn","player":"a","seq":1}"#.to_vec(),
    ];
    let mut world = SpecWorld::new();
    let (outcomes, _) = apply(&mut world, &records, 0, 1);
    assert_eq!(outcomes, [UNKNOWN_PLAYER, Outcome::Applied]);
    assert_eq!(world.player(b"a").map(|p| (p.x, p.seq)), Some((0.0, 1)));

    let mut exact = restored(&world);
    let (outcomes, updates) = apply(&mut exact, &records, records.len(), 1);
    assert!(outcomes.is_empty() && updates.is_empty(), "nothing after the boundary");
    assert_eq!(state(&exact), state(&world));

    let mut one_too_early = restored(&world);
    let (outcomes, updates) = apply(&mut one_too_early, &records, 0, 1);
    assert_eq!(outcomes, [Outcome::Applied, STALE]);
    assert_eq!(one_too_early.player(b"a").map(|p| (p.x, p.seq)), Some((9.0, 5)));
    assert_eq!(updates.len(), 1);
    assert_ne!(state(&one_too_early), state(&world));
}
