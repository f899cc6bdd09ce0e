//! The world's rules, in the order the specification checks them, and its updates.

use gameshard_engine::spec::{PlayerState, Reject, SpecEncoder, SpecParser, SpecWorld, Update};
use gameshard_engine::{Encoder, EventBatch, Outcome, Parser, RecordMeta, Updates, World};

/// Applies each line as its own record (offset = index) and returns the outcomes.
fn run(world: &mut SpecWorld, lines: &[&str]) -> Vec<&'static str> {
    let mut parser = SpecParser::new();
    let mut outcomes = Vec::new();
    for (offset, line) in lines.iter().enumerate() {
        let mut batch = EventBatch::default();
        let meta = RecordMeta {
            partition: 3,
            offset: offset as i64,
            timestamp_ms: 1_000 + offset as i64,
            arrival_ns: 0,
        };
        let r = batch.push_record(meta);
        parser.parse(line.as_bytes(), r, &mut batch);
        assert!(batch.malformed.is_empty(), "{line} is malformed: {:?}", batch.malformed);
        for e in &batch.events {
            outcomes.push(match world.apply(&e.event, &batch.bytes, &meta) {
                Outcome::Applied => "applied",
                Outcome::Rejected(i) => Reject::from_index(i).unwrap().label(),
            });
        }
    }
    outcomes
}

fn spawn(p: &str, seq: u64) -> String {
    format!(r#"{{"type":"spawn","player":"{p}","seq":{seq},"x":1,"y":2,"z":3}}"#)
}
fn mv(p: &str, seq: u64, x: f64) -> String {
    format!(r#"{{"type":"move","player":"{p}","seq":{seq},"x":{x:?},"y":0,"z":0}}"#)
}
fn rotate(p: &str, seq: u64, yaw: f64, pitch: f64) -> String {
    format!(r#"{{"type":"rotate","player":"{p}","seq":{seq},"yaw":{yaw:?},"pitch":{pitch:?}}}"#)
}
fn shoot(p: &str, seq: u64, t: &str, damage: u8) -> String {
    format!(r#"{{"type":"shoot","player":"{p}","seq":{seq},"target":"{t}","damage":{damage}}}"#)
}
fn loot(p: &str, seq: u64, item: &str) -> String {
    format!(r#"{{"type":"loot","player":"{p}","seq":{seq},"item":"{item}"}}"#)
}

fn player(world: &SpecWorld, id: &str) -> PlayerState {
    *world.player(id.as_bytes()).unwrap_or_else(|| panic!("no player {id}"))
}

fn lines(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn spawn_creates_a_player_with_full_health_at_the_given_position() {
    let mut w = SpecWorld::new();
    assert_eq!(run(&mut w, &[&spawn("p", 5)]), ["applied"]);
    let p = player(&w, "p");
    assert_eq!((p.x, p.y, p.z, p.yaw, p.pitch), (1.0, 2.0, 3.0, 0.0, 0.0));
    assert_eq!((p.hp, p.alive, p.score, p.loot, p.seq), (100, true, 0, 0, 5));
}

#[test]
fn spawn_with_stale_seq_is_rejected_and_changes_nothing() {
    let mut w = SpecWorld::new();
    let out = run(&mut w, &lines(&[spawn("p", 5), spawn("p", 5), spawn("p", 4)]));
    assert_eq!(out, ["applied", "stale_seq", "stale_seq"]);
    assert_eq!(player(&w, "p").seq, 5);
}

#[test]
fn respawn_restores_health_and_position_but_keeps_score_loot_and_orientation() {
    let mut w = SpecWorld::new();
    let out = run(
        &mut w,
        &lines(&[
            spawn("p", 1),
            spawn("q", 1),
            rotate("p", 2, 90.0, 10.0),
            loot("p", 3, "gem"),
            shoot("q", 2, "p", 100),
            shoot("p", 4, "q", 1),
            r#"{"type":"spawn","player":"p","seq":9,"x":-5}"#.to_string(),
        ]),
    );
    assert_eq!(out, ["applied", "applied", "applied", "applied", "applied", "dead", "applied"]);
    let p = player(&w, "p");
    assert_eq!((p.x, p.y, p.z), (-5.0, 0.0, 0.0));
    assert_eq!((p.hp, p.alive, p.seq), (100, true, 9));
    assert_eq!((p.yaw, p.pitch, p.loot), (90.0, 10.0, 1));
}

#[test]
fn events_of_an_unknown_player_are_rejected() {
    let mut w = SpecWorld::new();
    let out = run(
        &mut w,
        &lines(&[
            mv("ghost", 1, 1.0),
            rotate("ghost", 2, 0.0, 0.0),
            shoot("ghost", 3, "x", 1),
            loot("ghost", 4, "i"),
        ]),
    );
    assert_eq!(out, ["unknown_player"; 4]);
    assert!(w.player(b"ghost").is_none());
    assert_eq!(w.entities(), 0);
}

#[test]
fn stale_seq_is_checked_before_everything_else() {
    let mut w = SpecWorld::new();
    let out = run(
        &mut w,
        &lines(&[spawn("p", 10), mv("p", 10, 5.0), mv("p", 3, 5.0), shoot("p", 1, "nobody", 1)]),
    );
    assert_eq!(out, ["applied", "stale_seq", "stale_seq", "stale_seq"]);
    assert_eq!(player(&w, "p").x, 1.0);
}

#[test]
fn a_dead_player_cannot_act_but_its_seq_still_advances() {
    let mut w = SpecWorld::new();
    let out = run(
        &mut w,
        &lines(&[
            spawn("p", 1),
            spawn("k", 1),
            shoot("k", 2, "p", 100),
            mv("p", 7, 9.0),
            mv("p", 7, 9.0),
        ]),
    );
    assert_eq!(out, ["applied", "applied", "applied", "dead", "stale_seq"]);
    let p = player(&w, "p");
    assert_eq!((p.seq, p.x, p.alive, p.hp), (7, 1.0, false, 0));
}

#[test]
fn move_sets_the_position() {
    let mut w = SpecWorld::new();
    assert_eq!(run(&mut w, &lines(&[spawn("p", 1), mv("p", 2, -7.5)])), ["applied", "applied"]);
    let p = player(&w, "p");
    assert_eq!((p.x, p.y, p.z, p.seq), (-7.5, 0.0, 0.0, 2));
}

#[test]
fn rotate_wraps_yaw_and_clamps_pitch() {
    let cases = [
        (450.0, 100.0, 90.0, 90.0),
        (-90.0, -100.0, 270.0, -90.0),
        (360.0, 45.0, 0.0, 45.0),
        (-720.0, -0.5, 0.0, -0.5),
    ];
    for (yaw, pitch, want_yaw, want_pitch) in cases {
        let mut w = SpecWorld::new();
        run(&mut w, &lines(&[spawn("p", 1), rotate("p", 2, yaw, pitch)]));
        let p = player(&w, "p");
        assert_eq!((p.yaw, p.pitch), (want_yaw, want_pitch), "yaw {yaw} pitch {pitch}");
    }
}

#[test]
fn shoot_rules_table() {
    // (events after spawning p and q, outcome of the last one)
    let cases: &[(&[String], &str)] = &[
        (&[shoot("p", 2, "nobody", 10)], "unknown_target"),
        (&[shoot("p", 2, "p", 10)], "self_target"),
        (&[shoot("p", 2, "q", 100), shoot("p", 3, "q", 1)], "target_dead"),
        (&[shoot("p", 2, "q", 10)], "applied"),
    ];
    for (events, want) in cases {
        let mut w = SpecWorld::new();
        let mut all = vec![spawn("p", 1), spawn("q", 1)];
        all.extend(events.iter().cloned());
        let out = run(&mut w, &lines(&all));
        assert_eq!(out.last().copied(), Some(*want), "{events:?}");
        // Rule 2 advanced the shooter's seq whatever the outcome.
        assert_eq!(player(&w, "p").seq, 1 + events.len() as u64, "{events:?}");
    }
}

#[test]
fn shoot_on_unknown_target_is_rejected_and_advances_seq() {
    let mut w = SpecWorld::new();
    let out = run(
        &mut w,
        &lines(&[spawn("p", 1), shoot("p", 5, "nobody", 10), shoot("p", 5, "nobody", 10)]),
    );
    assert_eq!(out, ["applied", "unknown_target", "stale_seq"]);
    assert_eq!(player(&w, "p").seq, 5);
}

#[test]
fn shooting_to_zero_kills_and_scores_once() {
    let mut w = SpecWorld::new();
    let out = run(
        &mut w,
        &lines(&[
            spawn("p", 1),
            spawn("q", 1),
            shoot("p", 2, "q", 60),
            shoot("p", 3, "q", 60),
            shoot("p", 4, "q", 60),
        ]),
    );
    assert_eq!(out, ["applied", "applied", "applied", "applied", "target_dead"]);
    let q = player(&w, "q");
    assert_eq!((q.hp, q.alive), (0, false));
    assert_eq!(player(&w, "p").score, 1);
}

#[test]
fn damage_below_remaining_health_does_not_kill() {
    let mut w = SpecWorld::new();
    run(&mut w, &lines(&[spawn("p", 1), spawn("q", 1), shoot("p", 2, "q", 99)]));
    let q = player(&w, "q");
    assert_eq!((q.hp, q.alive), (1, true));
    assert_eq!(player(&w, "p").score, 0);
}

#[test]
fn an_item_is_claimed_once() {
    let mut w = SpecWorld::new();
    let out = run(
        &mut w,
        &lines(&[
            spawn("p", 1),
            spawn("q", 1),
            loot("p", 2, "gem"),
            loot("q", 2, "gem"),
            loot("p", 3, "gem"),
        ]),
    );
    assert_eq!(out, ["applied", "applied", "applied", "already_claimed", "already_claimed"]);
    assert_eq!(w.item_claimed_by(b"gem"), Some(&b"p"[..]));
    assert_eq!((player(&w, "p").loot, player(&w, "q").loot), (1, 0));
    assert_eq!((player(&w, "p").seq, player(&w, "q").seq), (3, 2));
}

#[test]
fn worlds_are_independent() {
    let mut a = SpecWorld::new();
    let mut b = SpecWorld::new();
    run(&mut a, &[&spawn("p", 1)]);
    assert_eq!(run(&mut b, &[&mv("p", 2, 1.0)]), ["unknown_player"]);
}

/// Applies `lines` as one batch and returns the encoded updates of one flush.
fn encoded_updates(world: &mut SpecWorld, lines: &[&str]) -> Vec<(String, serde_json::Value)> {
    let mut parser = SpecParser::new();
    let mut batch = EventBatch::default();
    for (offset, line) in lines.iter().enumerate() {
        let r = batch.push_record(RecordMeta {
            partition: 3,
            offset: 100 + offset as i64,
            timestamp_ms: 1_700_000_000_000 + offset as i64,
            arrival_ns: 0,
        });
        parser.parse(line.as_bytes(), r, &mut batch);
    }
    for e in &batch.events {
        world.apply(&e.event, &batch.bytes, &batch.records[e.record as usize]);
    }
    let mut updates = Updates::default();
    world.flush(&mut updates);
    let (mut key, mut value) = (Vec::new(), Vec::new());
    updates
        .items
        .iter()
        .map(|(src, u)| {
            SpecEncoder.encode(src, u, &updates.bytes, &mut key, &mut value);
            (String::from_utf8(key.clone()).unwrap(), serde_json::from_slice(&value).unwrap())
        })
        .collect()
}

#[test]
fn updates_carry_the_full_state_and_the_source_record() {
    let mut w = SpecWorld::new();
    let got = encoded_updates(
        &mut w,
        &[
            r#"{"type":"spawn","player":"p\"1","seq":41,"x":1,"y":2}"#,
            r#"{"type":"loot","player":"p\"1","seq":42,"item":"chest-7"}"#,
        ],
    );
    let want = vec![
        (
            "player:p\"1".to_string(),
            serde_json::json!({"kind":"player","id":"p\"1","x":1.0,"y":2.0,"z":0.0,"yaw":0.0,"pitch":0.0,"hp":100,"alive":true,"score":0,"loot":1,"seq":42,"src_partition":3,"src_offset":101,"src_ts":1_700_000_000_001_i64}),
        ),
        (
            "item:chest-7".to_string(),
            serde_json::json!({"kind":"item","id":"chest-7","claimed_by":"p\"1","src_partition":3,"src_offset":101,"src_ts":1_700_000_000_001_i64}),
        ),
    ];
    assert_eq!(got, want);
}

#[test]
fn player_update_values_are_written_exactly_as_specified() {
    let mut w = SpecWorld::new();
    run(&mut w, &[&spawn("p1", 1)]);
    let mut updates = Updates::default();
    w.flush(&mut updates);
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let (src, u) = &updates.items[0];
    SpecEncoder.encode(src, u, &updates.bytes, &mut key, &mut value);
    assert_eq!(key, b"player:p1");
    assert_eq!(
        String::from_utf8(value).unwrap(),
        r#"{"kind":"player","id":"p1","x":1.0,"y":2.0,"z":3.0,"yaw":0.0,"pitch":0.0,"hp":100,"alive":true,"score":0,"loot":0,"seq":1,"src_partition":3,"src_offset":0,"src_ts":1000}"#
    );
}

#[test]
fn updates_of_a_batch_are_coalesced_per_entity_with_the_last_source() {
    let mut w = SpecWorld::new();
    let got = encoded_updates(
        &mut w,
        &lines(&[
            spawn("p", 1),
            spawn("q", 1),
            mv("p", 2, 5.0),
            shoot("q", 2, "p", 30),
            mv("p", 3, 6.0),
        ]),
    );
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["player:p", "player:q"]);
    assert_eq!(got[0].1["x"], 6.0);
    assert_eq!(got[0].1["hp"], 70);
    assert_eq!(got[0].1["src_offset"], 104);
    assert_eq!(got[1].1["src_offset"], 103);
    // A second flush has nothing left to send.
    let mut updates = Updates::<Update>::default();
    w.flush(&mut updates);
    assert!(updates.is_empty());
}

#[test]
fn a_rejected_event_that_advanced_seq_publishes_the_player() {
    let mut w = SpecWorld::new();
    run(&mut w, &lines(&[spawn("p", 1)]));
    let got = encoded_updates(&mut w, &lines(&[shoot("p", 9, "nobody", 1)]));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["seq"], 9);
    // Rejections before rule 2 change nothing and publish nothing.
    let got = encoded_updates(&mut w, &lines(&[mv("p", 9, 1.0), mv("ghost", 1, 1.0)]));
    assert!(got.is_empty(), "{got:?}");
}
