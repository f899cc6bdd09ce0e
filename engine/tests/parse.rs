//! Framing and validation rules of the event format, table by table.

use gameshard_engine::spec::{Action, Event, SpecParser};
use gameshard_engine::{EventBatch, Parser, RecordMeta};

/// What parsing one record produced: events (ids resolved) and malformed units.
#[derive(Debug)]
struct Parsed {
    events: Vec<(Event, Vec<String>)>,
    malformed: Vec<(&'static str, Vec<u8>, u32)>,
}

fn parse_bytes(record: &[u8]) -> Parsed {
    let mut parser = SpecParser::new();
    let mut batch = EventBatch::default();
    let r = batch.push_record(RecordMeta::default());
    parser.parse(record, r, &mut batch);
    let ids = |e: &Event| {
        let mut ids = vec![String::from_utf8(e.player.get(&batch.bytes).to_vec()).unwrap()];
        match e.action {
            Action::Shoot { target: s, .. } | Action::Loot { item: s } => {
                ids.push(String::from_utf8(s.get(&batch.bytes).to_vec()).unwrap());
            }
            _ => {}
        }
        ids
    };
    Parsed {
        events: batch.events.iter().map(|p| (p.event, ids(&p.event))).collect(),
        malformed: batch
            .malformed
            .iter()
            .map(|m| (m.reason, m.payload.get(&batch.bytes).to_vec(), m.events))
            .collect(),
    }
}

fn parse(record: &str) -> Parsed {
    parse_bytes(record.as_bytes())
}

/// The reason a single-event record is malformed, or `None` when it is well-formed.
fn verdict(event: &str) -> Option<&'static str> {
    let p = parse(event);
    assert_eq!(p.events.len() + p.malformed.len(), 1, "{event}: {p:?}");
    p.malformed.first().map(|m| m.0)
}

const OK: Option<&str> = None;

#[test]
fn every_event_type_parses_with_its_fields() {
    let p = parse(concat!(
        r#"{"type":"spawn","player":"p1","seq":1,"x":1.5,"y":-2,"z":3e2}"#,
        "\n",
        r#"{"type":"move","player":"p1","seq":2,"x":0,"y":0.25,"z":-1}"#,
        "\n",
        r#"{"type":"rotate","player":"p1","seq":3,"yaw":-90,"pitch":45.5}"#,
        "\n",
        r#"{"type":"shoot","player":"p1","seq":4,"target":"p2","damage":100}"#,
        "\n",
        r#"{"type":"loot","player":"p1","seq":5,"item":"chest-7"}"#,
    ));
    assert!(p.malformed.is_empty(), "{p:?}");
    let actions: Vec<Action> = p.events.iter().map(|(e, _)| e.action).collect();
    assert!(matches!(actions[0], Action::Spawn { pos } if pos == [1.5, -2.0, 300.0]));
    assert!(matches!(actions[1], Action::Move { pos } if pos == [0.0, 0.25, -1.0]));
    assert!(matches!(actions[2], Action::Rotate { yaw, pitch } if yaw == -90.0 && pitch == 45.5));
    assert!(matches!(actions[3], Action::Shoot { damage: 100, .. }));
    assert!(matches!(actions[4], Action::Loot { .. }));
    assert_eq!(p.events[3].1, ["p1", "p2"]);
    assert_eq!(p.events[4].1, ["p1", "chest-7"]);
    let seqs: Vec<u64> = p.events.iter().map(|(e, _)| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[test]
fn spawn_position_defaults_to_the_origin() {
    let p = parse(r#"{"type":"spawn","player":"p","seq":0,"y":7}"#);
    assert!(matches!(p.events[0].0.action, Action::Spawn { pos } if pos == [0.0, 7.0, 0.0]));
}

#[test]
#[rustfmt::skip]
fn field_rules_table() {
    let cases: &[(&str, Option<&str>)] = &[
        // type
        (r#"{"player":"p","seq":1}"#, Some("missing_type")),
        (r#"{"type":1,"player":"p","seq":1}"#, Some("mistyped_type")),
        (r#"{"type":"jump","player":"p","seq":1}"#, Some("unknown_type")),
        (r#"{"type":"Spawn","player":"p","seq":1}"#, Some("unknown_type")),
        // player: 1 to 64 bytes, counted in UTF-8 bytes
        (r#"{"type":"spawn","seq":1}"#, Some("missing_player")),
        (r#"{"type":"spawn","player":7,"seq":1}"#, Some("mistyped_player")),
        (r#"{"type":"spawn","player":null,"seq":1}"#, Some("mistyped_player")),
        (r#"{"type":"spawn","player":"","seq":1}"#, Some("out_of_range_player")),
        // seq: integer 0 to 2^63-1
        (r#"{"type":"spawn","player":"p"}"#, Some("missing_seq")),
        (r#"{"type":"spawn","player":"p","seq":0}"#, OK),
        (r#"{"type":"spawn","player":"p","seq":9223372036854775807}"#, OK),
        (r#"{"type":"spawn","player":"p","seq":9223372036854775808}"#, Some("out_of_range_seq")),
        (r#"{"type":"spawn","player":"p","seq":18446744073709551616}"#, Some("out_of_range_seq")),
        (r#"{"type":"spawn","player":"p","seq":-1}"#, Some("out_of_range_seq")),
        (r#"{"type":"spawn","player":"p","seq":-0}"#, OK),
        (r#"{"type":"spawn","player":"p","seq":1.0}"#, Some("mistyped_seq")),
        (r#"{"type":"spawn","player":"p","seq":1e2}"#, Some("mistyped_seq")),
        (r#"{"type":"spawn","player":"p","seq":"1"}"#, Some("mistyped_seq")),
        // coordinates: finite numbers, required for move, optional for spawn
        (r#"{"type":"move","player":"p","seq":1,"x":1,"y":2}"#, Some("missing_z")),
        (r#"{"type":"move","player":"p","seq":1,"x":1,"y":"2","z":3}"#, Some("mistyped_y")),
        (r#"{"type":"move","player":"p","seq":1,"x":1e400,"y":0,"z":0}"#, Some("out_of_range_x")),
        (r#"{"type":"move","player":"p","seq":1,"x":-1e400,"y":0,"z":0}"#, Some("out_of_range_x")),
        (r#"{"type":"move","player":"p","seq":1,"x":1e308,"y":1e-400,"z":-0.0}"#, OK),
        (r#"{"type":"move","player":"p","seq":1,"x":NaN,"y":0,"z":0}"#, Some("invalid_json")),
        (r#"{"type":"move","player":"p","seq":1,"x":Infinity,"y":0,"z":0}"#, Some("invalid_json")),
        (r#"{"type":"spawn","player":"p","seq":1,"z":true}"#, Some("mistyped_z")),
        (r#"{"type":"spawn","player":"p","seq":1,"x":1e400}"#, Some("out_of_range_x")),
        // rotate
        (r#"{"type":"rotate","player":"p","seq":1,"yaw":1}"#, Some("missing_pitch")),
        (r#"{"type":"rotate","player":"p","seq":1,"pitch":1}"#, Some("missing_yaw")),
        (r#"{"type":"rotate","player":"p","seq":1,"yaw":[],"pitch":1}"#, Some("mistyped_yaw")),
        (r#"{"type":"rotate","player":"p","seq":1,"yaw":1,"pitch":1e999}"#, Some("out_of_range_pitch")),
        // shoot: damage is an integer 1 to 100
        (r#"{"type":"shoot","player":"p","seq":1,"damage":5}"#, Some("missing_target")),
        (r#"{"type":"shoot","player":"p","seq":1,"target":"","damage":5}"#, Some("out_of_range_target")),
        (r#"{"type":"shoot","player":"p","seq":1,"target":"q"}"#, Some("missing_damage")),
        (r#"{"type":"shoot","player":"p","seq":1,"target":"q","damage":0}"#, Some("out_of_range_damage")),
        (r#"{"type":"shoot","player":"p","seq":1,"target":"q","damage":1}"#, OK),
        (r#"{"type":"shoot","player":"p","seq":1,"target":"q","damage":100}"#, OK),
        (r#"{"type":"shoot","player":"p","seq":1,"target":"q","damage":101}"#, Some("out_of_range_damage")),
        (r#"{"type":"shoot","player":"p","seq":1,"target":"q","damage":2.5}"#, Some("mistyped_damage")),
        (r#"{"type":"shoot","player":"p","seq":1,"target":"q","damage":"5"}"#, Some("mistyped_damage")),
        (r#"{"type":"shoot","player":"p","seq":1,"target":"q","damage":-5}"#, Some("out_of_range_damage")),
        // loot
        (r#"{"type":"loot","player":"p","seq":1}"#, Some("missing_item")),
        (r#"{"type":"loot","player":"p","seq":1,"item":{}}"#, Some("mistyped_item")),
        // unknown fields are ignored, whatever they hold
        (r#"{"type":"loot","player":"p","seq":1,"item":"i","extra":{"a":[1,{"b":null}]}}"#, OK),
        (r#"{"type":"loot","player":"p","seq":1,"item":"i","huge":1e400,"big":99999999999999999999}"#, OK),
        // a field the type does not use is not checked
        (r#"{"type":"rotate","player":"p","seq":1,"yaw":1,"pitch":2,"x":"not a number"}"#, OK),
        // the last of repeated keys wins
        (r#"{"type":"move","type":"spawn","player":"p","seq":1}"#, OK),
        (r#"{"type":"spawn","player":"p","seq":1,"seq":-1}"#, Some("out_of_range_seq")),
        // not an object
        (r#"{"type":"spawn","player":"p","seq":1"#, Some("invalid_json")),
        (r#"{"type":"spawn","player":"p","seq":1}}"#, Some("invalid_json")),
        (r#"{"type":"spawn","player":"p","seq":1} trailing"#, Some("invalid_json")),
        // escapes count after decoding
        (r#"{"type":"spawn","player":"p\u00e9\"","seq":1}"#, OK),
        (r#"{"\u0074ype":"spawn","player":"p","seq":1}"#, OK),
    ];
    for (event, want) in cases {
        assert_eq!(verdict(event), *want, "{event}");
    }
}

#[test]
fn id_length_is_counted_in_utf8_bytes() {
    let event = |id: &str| format!(r#"{{"type":"spawn","player":"{id}","seq":1}}"#);
    assert_eq!(verdict(&event(&"a".repeat(64))), OK);
    assert_eq!(verdict(&event(&"a".repeat(65))), Some("out_of_range_player"));
    // 32 two-byte characters are 64 bytes; 33 are 66.
    assert_eq!(verdict(&event(&"é".repeat(32))), OK);
    assert_eq!(verdict(&event(&"é".repeat(33))), Some("out_of_range_player"));
    // 16 four-byte characters are 64 bytes, and 65 with one more ASCII byte.
    assert_eq!(verdict(&event(&"🎮".repeat(16))), OK);
    assert_eq!(verdict(&event(&format!("{}x", "🎮".repeat(16)))), Some("out_of_range_player"));
    // An escape counts as the bytes it decodes to: 64 escaped 'a's are 64 bytes.
    assert_eq!(verdict(&event(&r"\u0061".repeat(64))), OK);
    assert_eq!(verdict(&event(&r"\u0061".repeat(65))), Some("out_of_range_player"));
    let shoot =
        |id: &str| format!(r#"{{"type":"shoot","player":"p","seq":1,"target":"{id}","damage":1}}"#);
    assert_eq!(verdict(&shoot(&"t".repeat(64))), OK);
    assert_eq!(verdict(&shoot(&"t".repeat(65))), Some("out_of_range_target"));
    let loot = |id: &str| format!(r#"{{"type":"loot","player":"p","seq":1,"item":"{id}"}}"#);
    assert_eq!(verdict(&loot(&"i".repeat(64))), OK);
    assert_eq!(verdict(&loot(&"i".repeat(65))), Some("out_of_range_item"));
}

#[test]
fn ndjson_malforms_only_the_bad_line_and_skips_empty_lines() {
    let good = r#"{"type":"spawn","player":"a","seq":1}"#;
    let bad = r#"{"type":"spawn","player":"b"}"#;
    let record = format!("{good}\n\n{bad}\n   \r\n{good}\n");
    let p = parse(&record);
    assert_eq!(p.events.len(), 2);
    assert_eq!(p.malformed, [("missing_seq", bad.as_bytes().to_vec(), 1)]);
}

#[test]
fn ndjson_line_that_is_not_an_object_is_malformed() {
    let record = "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1}\n[1]\n\"s\"\n{\"type\":";
    let p = parse(record);
    assert_eq!(p.events.len(), 1);
    let reasons: Vec<_> = p.malformed.iter().map(|m| (m.0, m.1.clone())).collect();
    assert_eq!(
        reasons,
        [
            ("not_an_object", b"[1]".to_vec()),
            ("not_an_object", b"\"s\"".to_vec()),
            ("invalid_json", b"{\"type\":".to_vec())
        ]
    );
}

#[test]
fn crlf_line_endings_are_whitespace() {
    let p = parse(
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1}\r\n{\"type\":\"spawn\",\"player\":\"b\",\"seq\":1}\r\n",
    );
    assert_eq!(p.events.len(), 2);
    assert!(p.malformed.is_empty());
}

#[test]
fn array_framing_processes_good_elements_and_dead_letters_the_record_once() {
    let record = r#" [{"type":"spawn","player":"a","seq":1}, 5, {"type":"move","player":"a","seq":2,"x":1,"y":2}, {"type":"loot","player":"a","seq":3,"item":"i"}]"#;
    let p = parse(record);
    assert_eq!(p.events.len(), 2);
    assert_eq!(p.events[0].1, ["a"]);
    assert_eq!(p.events[1].1, ["a", "i"]);
    assert_eq!(p.malformed, [("not_an_object", record.as_bytes().to_vec(), 2)]);
}

#[test]
fn array_with_an_out_of_range_number_keeps_its_other_elements() {
    let record = r#"[{"type":"spawn","player":"a","seq":1},{"type":"move","player":"a","seq":2,"x":1e400,"y":0,"z":0},{"type":"spawn","player":"b","seq":1,"note":1e999}]"#;
    let p = parse(record);
    let players: Vec<_> = p.events.iter().map(|(_, ids)| ids[0].clone()).collect();
    assert_eq!(players, ["a", "b"]);
    assert_eq!(p.malformed, [("out_of_range_x", record.as_bytes().to_vec(), 1)]);
}

#[test]
fn single_element_array_and_single_line_records_work() {
    assert_eq!(parse(r#"[{"type":"spawn","player":"a","seq":1}]"#).events.len(), 1);
    assert_eq!(parse(r#"{"type":"spawn","player":"a","seq":1}"#).events.len(), 1);
}

#[test]
fn whole_record_malformations_table() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "no_event"),
        (b"  \n\t ", "no_event"),
        (b"[]", "no_event"),
        (b" [ ] ", "no_event"),
        (b"[{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1}", "invalid_json"),
        (b"[{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1},]", "invalid_json"),
        (b"[{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1}] [1]", "invalid_json"),
        (b"[NaN]", "invalid_json"),
        (b"\"spawn\"", "bad_framing"),
        (b"42", "bad_framing"),
        (b"\xef\xbb\xbf{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1}", "bad_framing"),
        (b"{\"type\":\"spawn\",\"player\":\"\xff\",\"seq\":1}", "not_utf8"),
        (b"[{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1}]\xc3", "not_utf8"),
    ];
    for (record, reason) in cases {
        let p = parse_bytes(record);
        assert!(p.events.is_empty(), "{record:?}: {p:?}");
        assert_eq!(p.malformed, [(*reason, record.to_vec(), 1)], "{record:?}");
    }
}

#[test]
fn events_of_one_record_keep_their_order_and_record_index() {
    let mut parser = SpecParser::new();
    let mut batch = EventBatch::default();
    for (i, record) in [
        r#"{"type":"spawn","player":"a","seq":1}"#,
        r#"[{"type":"spawn","player":"b","seq":1},{"type":"spawn","player":"c","seq":1}]"#,
    ]
    .iter()
    .enumerate()
    {
        let r = batch.push_record(RecordMeta { offset: i as i64, ..RecordMeta::default() });
        parser.parse(record.as_bytes(), r, &mut batch);
    }
    let got: Vec<(u32, &[u8])> =
        batch.events.iter().map(|p| (p.record, p.event.player.get(&batch.bytes))).collect();
    assert_eq!(got, [(0, &b"a"[..]), (1, b"b"), (1, b"c")]);
}

#[test]
fn ndjson_values_spanning_lines_are_malformed_lines_not_merged_events() {
    let cases = [
        // A value split over two lines, and two values on one line: as many elements
        // as lines when joined into an array, yet not one per line.
        concat!(
            r#"{"type":"spawn","player":"a","seq":1,"pad":[1"#,
            "\n",
            "2]}",
            "\n",
            r#"{"type":"spawn","player":"b","seq":1},{"type":"spawn","player":"c","seq":1}"#,
        ),
        concat!(
            r#"{"type":"spawn","player":"a","seq":1,"pad":[{}"#,
            "\n",
            "{}]}",
            "\n",
            r#"{"type":"spawn","player":"b","seq":1},{"type":"spawn","player":"c","seq":1}"#,
        ),
    ];
    for record in cases {
        let p = parse(record);
        assert!(p.events.is_empty(), "{record}: {p:?}");
        assert_eq!(p.malformed.len(), 3, "{record}: {p:?}");
        assert!(p.malformed.iter().all(|m| m.0 == "invalid_json" && m.2 == 1));
    }
}

#[test]
fn separators_inside_strings_do_not_confuse_ndjson_lines() {
    let record = concat!(
        r#"{"type":"spawn","player":"a},{\"b\":[","seq":1}"#,
        "\n",
        r#"{"type":"loot","player":"a},{\"b\":[","seq":2,"item":"],[{,"}"#,
    );
    let p = parse(record);
    assert!(p.malformed.is_empty(), "{p:?}");
    assert_eq!(p.events[1].1, [r#"a},{"b":["#, "],[{,"]);
}

/// Events without their arena positions: ids, seq, and the action's type and numbers.
fn comparable(events: &[(Event, Vec<String>)]) -> Vec<(Vec<String>, u64, &'static str, Vec<f64>)> {
    events
        .iter()
        .map(|(e, ids)| {
            let (kind, numbers) = match e.action {
                Action::Spawn { pos } => ("spawn", pos.to_vec()),
                Action::Move { pos } => ("move", pos.to_vec()),
                Action::Rotate { yaw, pitch } => ("rotate", vec![yaw, pitch]),
                Action::Shoot { damage, .. } => ("shoot", vec![f64::from(damage)]),
                Action::Loot { .. } => ("loot", vec![]),
            };
            (ids.clone(), e.seq, kind, numbers)
        })
        .collect()
}

proptest::proptest! {
    /// An NDJSON record parses exactly as its lines do one by one, whatever the lines.
    #[test]
    fn an_ndjson_record_parses_like_its_lines_one_by_one(
        lines in proptest::collection::vec(proptest::sample::select(vec![
            r#"{"type":"spawn","player":"a","seq":1}"#,
            r#"{"type":"move","player":"a","seq":2,"x":1,"y":2,"z":3}"#,
            r#"{"type":"loot","player":"b","seq":3,"item":"i,]}"}"#,
            r#"{"type":"spawn","player":"c","seq":1,"pad":[1"#,
            "2]}",
            "{}]}",
            r#"{"type":"spawn","player":"d","seq":1,"pad":[{}"#,
            r#"{"type":"spawn","player":"e","seq":1},{"type":"spawn","player":"f","seq":1}"#,
            r#"{"type":"move","player":"a","seq":4,"x":1e400,"y":0,"z":0}"#,
            r#"{"type":"spawn","player":"","seq":1}"#,
            "[1,2]",
            r#""text""#,
            "",
            "  \r",
            "{",
            "}",
        ]), 1..12),
    ) {
        let mut record = lines.join("\n");
        if !record.trim_start().starts_with('{') {
            record.insert_str(0, "{\"type\":\"spawn\",\"player\":\"z\",\"seq\":1}\n");
        }
        let whole = parse(&record);
        let mut events = Vec::new();
        let mut malformed = Vec::new();
        let head = r#"{"type":"spawn","player":"h","seq":1}"#;
        for line in record.split('\n').filter(|l| !l.trim().is_empty()) {
            // The line after a well-formed one, so that it is read as an NDJSON line
            // whatever its first byte.
            let p = parse(&format!("{head}\n{line}"));
            events.extend(p.events.into_iter().skip(1));
            malformed.extend(p.malformed);
        }
        proptest::prop_assert_eq!(comparable(&whole.events), comparable(&events));
        proptest::prop_assert_eq!(whole.malformed, malformed);
    }
}
