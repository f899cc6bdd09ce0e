//! What end-to-end tests compare: the view a consumer of the output topic ends with,
//! against the reference model applied to the input topic; and the dead-letter topic
//! against the malformed units of the input.

use std::collections::BTreeMap;

use gameshard_engine::spec::SpecParser;
use gameshard_engine::{EventBatch, Parser, RecordMeta};
use serde_json::Value;

use crate::harness::kafka::Incoming;
use crate::model::{ModelWorld, split_record};
use crate::rng::Rng;
use crate::workload::{self, Workload};

/// An entity's latest state per (partition, key), without its source fields.
pub type View = BTreeMap<(i32, String), Value>;

/// The header that marks a record of the `batch` output framing (SPEC section 4).
pub const FRAMING_HEADER: &str = "gameshard-framing";

/// One entity update read back from the output topic.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The output partition, which is its source partition.
    pub partition: i32,
    /// The entity: `player:<id>` or `item:<id>`.
    pub key: String,
    /// The input offset of the event that last changed the entity.
    pub src_offset: i64,
    /// The entity's state without the source fields.
    pub state: Value,
}

/// The updates in `records`, in either output framing (SPEC section 4), in the order a
/// consumer sees them: record order and, within a `batch` record, line order. Checks
/// that every update is valid, names the entity its record key names (`entity`
/// framing) or comes in a keyless record (`batch` framing), and sits in the partition
/// of its source.
pub fn updates(records: &[Incoming]) -> anyhow::Result<Vec<Update>> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        for line in update_lines(r)? {
            out.push(update_in(r, line)?);
        }
    }
    Ok(out)
}

/// The update lines of the output record `r`: its value (`entity` framing), or each
/// line of it (`batch` framing, a keyless record). Checks the framing header, the key
/// of a `batch` record, and that the record is not empty.
pub fn update_lines(r: &Incoming) -> anyhow::Result<Vec<&[u8]>> {
    let batch = match r.headers.get(FRAMING_HEADER).map(Vec::as_slice) {
        None => false,
        Some(b"batch") => true,
        Some(other) => anyhow::bail!(
            "update record {}/{} has framing {:?}",
            r.partition,
            r.offset,
            String::from_utf8_lossy(other)
        ),
    };
    let lines: Vec<&[u8]> = if batch {
        anyhow::ensure!(r.key.is_empty(), "batch record {}/{} has a key", r.partition, r.offset);
        r.value.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect()
    } else {
        vec![r.value.as_slice()]
    };
    anyhow::ensure!(!lines.is_empty(), "update record {}/{} is empty", r.partition, r.offset);
    Ok(lines)
}

/// The update in `line`, one of [`update_lines`] of `r`; an `entity`-framed record's
/// key must name its entity.
pub fn update_in(r: &Incoming, line: &[u8]) -> anyhow::Result<Update> {
    let u = update(r.partition, line)?;
    if !r.headers.contains_key(FRAMING_HEADER) {
        let record_key = String::from_utf8_lossy(&r.key);
        anyhow::ensure!(
            record_key == u.key,
            "update of {} in partition {} has record key {record_key:?}",
            u.key,
            r.partition
        );
    }
    Ok(u)
}

/// The view a consumer of `records` ends with, in either output framing: per partition
/// and entity, the update with the greatest `src_offset` (the later one among equals).
pub fn fold(records: &[Incoming]) -> anyhow::Result<View> {
    let mut latest: BTreeMap<(i32, String), (i64, Value)> = BTreeMap::new();
    for u in updates(records)? {
        let slot = latest.entry((u.partition, u.key)).or_insert((i64::MIN, Value::Null));
        if u.src_offset >= slot.0 {
            *slot = (u.src_offset, u.state);
        }
    }
    Ok(latest.into_iter().map(|(k, (_, v))| (k, v)).collect())
}

/// One update line of `partition`.
fn update(partition: i32, bytes: &[u8]) -> anyhow::Result<Update> {
    let mut state: Value = serde_json::from_slice(bytes)?;
    let key = match (state["kind"].as_str(), state["id"].as_str()) {
        (Some(kind @ ("player" | "item")), Some(id)) => format!("{kind}:{id}"),
        _ => anyhow::bail!("update without a kind and an id: {state}"),
    };
    let src_partition = state["src_partition"].as_i64();
    anyhow::ensure!(
        src_partition == Some(i64::from(partition)),
        "update {key} of partition {partition} says {src_partition:?}"
    );
    let src_offset = state["src_offset"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("update {key} has no src_offset"))?;
    anyhow::ensure!(state["src_ts"].is_i64(), "update {key} has no src_ts");
    let object =
        state.as_object_mut().ok_or_else(|| anyhow::anyhow!("update {key} is not an object"))?;
    for field in ["src_partition", "src_offset", "src_ts"] {
        object.remove(field);
    }
    Ok(Update { partition, key, src_offset, state })
}

/// The view the reference model gives for `input` (records in offset order per
/// partition, as read back from the input topic).
pub fn expected(input: &[Incoming]) -> View {
    let mut by_partition: BTreeMap<i32, Vec<&Incoming>> = BTreeMap::new();
    for r in input {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut view = View::new();
    for (partition, mut records) in by_partition {
        records.sort_by_key(|r| r.offset);
        let mut world = ModelWorld::default();
        for r in records {
            for event in split_record(&r.value).unwrap_or_default() {
                world.apply(&event);
            }
        }
        view.extend(world.view().into_iter().map(|(k, v)| ((partition, k), v)));
    }
    view
}

/// What differs between the view the updates in `output` give and the one the reference
/// model gives for `input`: `None` when they are equal, otherwise how many entities
/// differ, with an example (or why the updates are not valid).
pub fn differences(output: &[Incoming], input: &[Incoming]) -> Option<String> {
    let expected = expected(input);
    let view = match fold(output) {
        Ok(view) if view == expected => return None,
        Ok(view) => view,
        Err(e) => return Some(format!("the updates are not valid: {e:#}")),
    };
    let wrong: Vec<_> = expected.iter().filter(|(k, v)| view.get(k) != Some(v)).collect();
    let extra = view.keys().filter(|k| !expected.contains_key(*k)).count();
    let example = wrong.first().map(|(k, v)| format!("{k:?}: expected {v}, got {:?}", view.get(k)));
    Some(format!(
        "{} of {} entities differ and {extra} are not in the model ({} updates read), e.g. {}",
        wrong.len(),
        expected.len(),
        output.len(),
        example.unwrap_or_default()
    ))
}

/// A malformed unit: partition, source offset, reason and bytes.
pub type Unit = (i32, i64, String, Vec<u8>);

/// The malformed units of `input`, sorted.
pub fn expected_dead_letters(input: &[Incoming]) -> Vec<Unit> {
    let mut parser = SpecParser::new();
    let mut units = Vec::new();
    for r in input {
        let mut batch = EventBatch::default();
        let index = batch.push_record(RecordMeta {
            partition: r.partition as u32,
            offset: r.offset,
            ..RecordMeta::default()
        });
        parser.parse(&r.value, index, &mut batch);
        for m in &batch.malformed {
            units.push((
                r.partition,
                r.offset,
                m.reason.to_owned(),
                m.payload.get(&batch.bytes).to_vec(),
            ));
        }
    }
    units.sort();
    units
}

/// The units on the dead-letter topic, from their headers, sorted.
pub fn dead_letters(records: &[Incoming]) -> anyhow::Result<Vec<Unit>> {
    let mut units = Vec::new();
    for r in records {
        let header = |name: &str| -> anyhow::Result<String> {
            let v =
                r.headers.get(name).ok_or_else(|| anyhow::anyhow!("dead letter without {name}"))?;
            Ok(String::from_utf8(v.clone())?)
        };
        let partition: i32 = header("gameshard-src-partition")?.parse()?;
        anyhow::ensure!(
            partition == r.partition,
            "dead letter of partition {partition} in partition {}",
            r.partition
        );
        units.push((
            partition,
            header("gameshard-src-offset")?.parse()?,
            header("gameshard-error")?,
            r.value.clone(),
        ));
    }
    units.sort();
    Ok(units)
}

/// A stream of input records (partition, value) for end-to-end tests: a small world's
/// events in records of `events_per_record`, with malformed records, lines and array
/// elements mixed in.
pub fn stream(
    seed: u64,
    players: u32,
    partitions: u32,
    records: usize,
    events_per_record: u32,
) -> Vec<(i32, Vec<u8>)> {
    let config = workload::Config {
        players,
        partitions,
        events_per_record,
        records,
        items: players,
        seed,
        ..workload::Config::default()
    };
    let workload = Workload::generate(&config);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut out = Vec::new();
    let mut warmup = Vec::new();
    for i in 0..workload.warmup_records() {
        let partition = workload.warmup_record(i, &mut warmup);
        out.push((partition as i32, warmup.clone()));
    }
    for (i, r) in workload.records.iter().enumerate() {
        let mut bytes = r.bytes.clone();
        match rng.below(12) {
            0 => bytes = b"this is not an event".to_vec(),
            1 if bytes.first() == Some(&b'{') => {
                bytes.extend_from_slice(b"\n{\"type\":\"move\",\"player\":\"p1\"}");
            }
            2 if bytes.first() == Some(&b'[') => {
                bytes.pop();
                bytes.extend_from_slice(b",{\"type\":\"loot\"}]");
            }
            3 => bytes.extend_from_slice(if bytes.first() == Some(&b'[') { b"" } else { b"\n\n" }),
            _ => {}
        }
        out.push((r.partition as i32, bytes));
        // Some array records, so both framings cross the broker.
        if i % 7 == 0 {
            let lines: Vec<&[u8]> = r.bytes.split(|&b| b == b'\n').collect();
            if lines.len() > 1 && r.bytes.first() == Some(&b'{') {
                let array = [b"[".as_slice(), &lines.join(&b','), b"]"].concat();
                out.push((r.partition as i32, array));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64, key: &str, value: &str, batch: bool) -> Incoming {
        let mut headers = std::collections::HashMap::new();
        if batch {
            headers.insert(FRAMING_HEADER.to_owned(), b"batch".to_vec());
        }
        Incoming {
            partition,
            offset,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            headers,
            timestamp_ms: 0,
        }
    }

    fn player(id: &str, hp: i64, src_offset: i64) -> String {
        format!(
            r#"{{"kind":"player","id":"{id}","hp":{hp},"src_partition":1,"src_offset":{src_offset},"src_ts":5}}"#
        )
    }

    #[test]
    fn both_framings_fold_to_the_same_view_keeping_the_greatest_source_offset() {
        let item = r#"{"kind":"item","id":"gem","claimed_by":"a","src_partition":1,"src_offset":3,"src_ts":5}"#;
        let entity = [
            record(1, 0, "player:a", &player("a", 100, 2), false),
            record(1, 1, "item:gem", item, false),
            record(1, 2, "player:a", &player("a", 75, 3), false),
            // Republished after a restart: an older state, ignored.
            record(1, 3, "player:a", &player("a", 100, 2), false),
        ];
        let lines = |v: &[String]| v.join("\n");
        let batch = [
            record(1, 0, "", &lines(&[player("a", 100, 2), item.to_owned()]), true),
            // Two changes from one source record: the later line wins.
            record(1, 1, "", &lines(&[player("a", 90, 3), player("a", 75, 3)]), true),
            record(1, 2, "", &format!("{}\n", player("a", 100, 2)), true),
        ];
        let view = fold(&entity).expect("entity framing folds");
        assert_eq!(fold(&batch).expect("batch framing folds"), view);
        assert_eq!(view.len(), 2);
        assert_eq!(view[&(1, "player:a".to_owned())]["hp"], 75);
        assert_eq!(view[&(1, "item:gem".to_owned())]["claimed_by"], "a");
        assert!(view[&(1, "player:a".to_owned())].get("src_offset").is_none());
    }

    #[test]
    fn misplaced_mislabelled_or_keyed_updates_are_refused() {
        let a = player("a", 100, 2);
        for bad in [
            // In another partition than its source.
            record(2, 0, "player:a", &a, false),
            // Its record key names another entity.
            record(1, 0, "player:b", &a, false),
            // A batch record with a key.
            record(1, 0, "player:a", &a, true),
            // No source offset.
            record(
                1,
                0,
                "player:a",
                r#"{"kind":"player","id":"a","src_partition":1,"src_ts":5}"#,
                false,
            ),
            // An empty batch record.
            record(1, 0, "", "", true),
        ] {
            assert!(fold(std::slice::from_ref(&bad)).is_err(), "{bad:?} refused");
        }
        let mut unknown = record(1, 0, "player:a", &a, false);
        unknown.headers.insert(FRAMING_HEADER.to_owned(), b"columnar".to_vec());
        assert!(fold(&[unknown]).is_err(), "an unknown framing is refused");
    }
}
