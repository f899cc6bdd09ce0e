//! A snapshot written in slices while events go on being applied holds exactly the
//! state at its start, byte for byte the snapshot taken all at once then.

use gameshard_engine::spec::{SpecParser, SpecWorld};
use gameshard_engine::{EventBatch, Parser, RecordMeta, World};
use proptest::prelude::*;

fn event_line() -> impl Strategy<Value = String> {
    let player = prop::sample::select(vec!["a", "b", "c", "d", "e", "f"]);
    let seq = 0u64..40;
    prop_oneof![
        3 => (player.clone(), seq.clone(), -5i32..5).prop_map(|(p, s, x)| format!(r#"{{"type":"spawn","player":"{p}","seq":{s},"x":{x}}}"#)),
        3 => (player.clone(), seq.clone(), -5.0f64..5.0).prop_map(|(p, s, x)| format!(r#"{{"type":"move","player":"{p}","seq":{s},"x":{x:?},"y":1,"z":-1.5}}"#)),
        2 => (player.clone(), seq.clone(), -800.0f64..800.0).prop_map(|(p, s, y)| format!(r#"{{"type":"rotate","player":"{p}","seq":{s},"yaw":{y:?},"pitch":3}}"#)),
        4 => (player.clone(), seq.clone(), player.clone(), 1u8..=100).prop_map(|(p, s, t, d)| format!(r#"{{"type":"shoot","player":"{p}","seq":{s},"target":"{t}","damage":{d}}}"#)),
        2 => (player.clone(), seq.clone(), prop::sample::select(vec!["gem", "key", "map", "axe", "orb"])).prop_map(|(p, s, i)| format!(r#"{{"type":"loot","player":"{p}","seq":{s},"item":"{i}"}}"#)),
    ]
}

fn records() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop::collection::vec(event_line(), 1..4).prop_map(|l| l.join("\n").into_bytes()),
        0..30,
    )
}

fn apply(world: &mut SpecWorld, parser: &mut SpecParser, record: &[u8], offset: i64) {
    let mut batch = EventBatch::default();
    let meta = RecordMeta { partition: 0, offset, timestamp_ms: offset, arrival_ns: 0 };
    let index = batch.push_record(meta);
    parser.parse(record, index, &mut batch);
    for e in &batch.events {
        world.apply(&e.event, &batch.bytes, &meta);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn slices_written_between_events_are_the_snapshot_at_their_start(
        before in records(),
        during in records(),
        budget in 1usize..120,
    ) {
        let (mut world, mut parser) = (SpecWorld::new(), SpecParser::new());
        for (i, r) in before.iter().enumerate() {
            apply(&mut world, &mut parser, r, i as i64);
        }
        let mut at_start = Vec::new();
        world.snapshot(&mut at_start);

        world.snapshot_begin();
        let mut sliced = Vec::new();
        let mut during = during.iter().enumerate();
        loop {
            let before_slice = sliced.len();
            let done = world.snapshot_continue(&mut sliced, budget);
            prop_assert!(
                sliced.len() - before_slice <= budget + 80,
                "a slice overshoots its budget by at most one entity"
            );
            if done {
                break;
            }
            // Events change the world between slices, players written and not yet.
            if let Some((i, r)) = during.next() {
                apply(&mut world, &mut parser, r, (before.len() + i) as i64);
            }
        }
        prop_assert_eq!(&sliced, &at_start);
        prop_assert!(world.snapshot_continue(&mut sliced, budget), "nothing is left");
        prop_assert_eq!(&sliced, &at_start, "a finished snapshot writes nothing more");

        let mut restored = SpecWorld::new();
        restored.restore(&sliced).expect("the sliced snapshot restores");
        let mut again = Vec::new();
        restored.snapshot(&mut again);
        prop_assert_eq!(again, at_start);
    }
}

#[test]
fn without_a_snapshot_begun_continue_writes_nothing() {
    let mut world = SpecWorld::new();
    let mut out = Vec::new();
    assert!(world.snapshot_continue(&mut out, 10));
    assert!(out.is_empty());
}
