//! The engine agrees with the independent reference model on random streams: the same
//! outcome counts per reason, and the same final players and items.

use std::collections::BTreeMap;

use gameshard_e2e::model::{ModelWorld, Verdict, split_record};
use gameshard_engine::spec::{Reject, SpecParser, SpecWorld};
use gameshard_engine::{EventBatch, Outcome, Parser, RecordMeta, World};
use proptest::prelude::*;

fn event() -> impl Strategy<Value = String> {
    let player = prop::sample::select(vec!["a", "b", "c", "d"]);
    let seq = 0i64..10;
    prop_oneof![
        3 => (player.clone(), seq.clone(), -3i32..3).prop_map(|(p, s, x)| format!(r#"{{"type":"spawn","player":"{p}","seq":{s},"x":{x},"z":0.5}}"#)),
        4 => (player.clone(), seq.clone(), -9.5f64..9.5).prop_map(|(p, s, x)| format!(r#"{{"type":"move","player":"{p}","seq":{s},"x":{x},"y":-1,"z":2e1}}"#)),
        2 => (player.clone(), seq.clone(), -1000i32..1000, -200i32..200).prop_map(|(p, s, y, t)| format!(r#"{{"type":"rotate","player":"{p}","seq":{s},"yaw":{y}.25,"pitch":{t}}}"#)),
        4 => (player.clone(), seq.clone(), player.clone(), 1u8..=100).prop_map(|(p, s, t, d)| format!(r#"{{"type":"shoot","player":"{p}","seq":{s},"target":"{t}","damage":{d}}}"#)),
        2 => (player.clone(), seq.clone(), prop::sample::select(vec!["gem", "key"])).prop_map(|(p, s, i)| format!(r#"{{"type":"loot","player":"{p}","seq":{s},"item":"{i}"}}"#)),
        1 => prop::sample::select(vec![
            r#"{"type":"move","player":"a","seq":9}"#,
            r#"{"type":"shoot","player":"a","seq":9,"target":"b","damage":0}"#,
            r#"{"type":"shoot","player":"a","seq":9,"target":"b","damage":2.5}"#,
            r#"{"type":"spawn","player":"","seq":1}"#,
            r#"{"type":"spawn","player":"a","seq":-1}"#,
            r#"{"type":"fly","player":"a","seq":1}"#,
            r#"{"player":"a","seq":1}"#,
            r#"{"type":"loot","player":"a","seq":9,"item":7}"#,
            "[1]",
            "42",
        ]).prop_map(str::to_owned),
    ]
}

fn record() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(event(), 1..6), 0u8..4).prop_map(|(events, framing)| match framing {
        0 => format!("[{}]", events.join(",")).into_bytes(),
        1 => format!("{}\n\n", events.join("\n")).into_bytes(),
        2 if events.len() > 1 => format!("{}\n{{broken", events.join("\n")).into_bytes(),
        _ => events.join("\n").into_bytes(),
    })
}

#[derive(Debug, Default, PartialEq)]
struct Counts {
    applied: u64,
    rejected: BTreeMap<&'static str, u64>,
    malformed: u64,
}

type Players = BTreeMap<String, (f64, f64, f64, f64, f64, i64, bool, i64, i64, i64)>;

fn engine(records: &[Vec<u8>]) -> (Counts, Players, BTreeMap<String, String>) {
    let (mut parser, mut world, mut counts) =
        (SpecParser::new(), SpecWorld::new(), Counts::default());
    for (offset, bytes) in records.iter().enumerate() {
        let mut batch = EventBatch::default();
        let meta =
            RecordMeta { partition: 0, offset: offset as i64, timestamp_ms: 0, arrival_ns: 0 };
        let r = batch.push_record(meta);
        parser.parse(bytes, r, &mut batch);
        counts.malformed += batch.malformed.iter().map(|m| u64::from(m.events)).sum::<u64>();
        for e in &batch.events {
            match world.apply(&e.event, &batch.bytes, &meta) {
                Outcome::Applied => counts.applied += 1,
                Outcome::Rejected(i) => {
                    *counts
                        .rejected
                        .entry(Reject::from_index(i).expect("known reason").label())
                        .or_default() += 1;
                }
            }
        }
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("ids are UTF-8");
    let players = world
        .players()
        .map(|(id, p)| {
            let (hp, score, loot, seq) =
                (i64::from(p.hp), p.score as i64, p.loot as i64, p.seq as i64);
            (text(id), (p.x, p.y, p.z, p.yaw, p.pitch, hp, p.alive, score, loot, seq))
        })
        .collect();
    let items = world.items().map(|(id, by)| (text(id), text(by))).collect();
    (counts, players, items)
}

fn model(records: &[Vec<u8>]) -> (Counts, Players, BTreeMap<String, String>) {
    let (mut world, mut counts) = (ModelWorld::default(), Counts::default());
    for bytes in records {
        let Some(events) = split_record(bytes) else {
            counts.malformed += 1;
            continue;
        };
        for e in events {
            match world.apply(&e).0 {
                Verdict::Applied => counts.applied += 1,
                Verdict::Rejected(reason) => *counts.rejected.entry(reason).or_default() += 1,
                Verdict::Malformed => counts.malformed += 1,
            }
        }
    }
    let players = world
        .players
        .iter()
        .map(|(id, p)| {
            (id.clone(), (p.x, p.y, p.z, p.yaw, p.pitch, p.hp, p.alive, p.score, p.loot, p.seq))
        })
        .collect();
    let items = world.items.clone().into_iter().collect();
    (counts, players, items)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn engine_and_reference_model_agree(records in prop::collection::vec(record(), 1..40)) {
        let (engine_counts, engine_players, engine_items) = engine(&records);
        let (model_counts, model_players, model_items) = model(&records);
        prop_assert_eq!(engine_counts, model_counts);
        prop_assert_eq!(engine_players, model_players);
        prop_assert_eq!(engine_items, model_items);
    }
}
