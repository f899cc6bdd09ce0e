//! The demo's model check: every update on the output topic against the SPEC model
//! of everything sent, and the final state a consumer ends with.
//!
//! An update holds an entity's full state after the record at its `src_offset` (the
//! last one that changed it; coalesced updates keep the last state), so the model,
//! applied to the input in offset order, must show exactly that state right after
//! that record. An update published again after a handoff passes the same check. The
//! updates are indexed by source offset and parsed one at a time as the model reaches
//! them, so that a long run's updates are never all held as JSON trees at once: only
//! the latest state of each entity, for the final state, which each partition's thread
//! checks too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::harness::kafka::Incoming;
use crate::model::{ModelWorld, split_record};
use crate::verify;

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Input events read back.
    pub events: u64,
    /// Updates read back.
    pub updates: u64,
    /// Updates whose state is not the model's after their source record.
    pub wrong_updates: u64,
    /// Entities in the model's final state.
    pub entities: usize,
    /// Whether the consumer's final view equals the model's, entity for entity.
    pub final_state_exact: bool,
    /// The first difference, for people.
    pub first_problem: Option<String>,
}

/// Checks `output` (either framing) against the model applied to `input`, each input
/// partition on a thread of its own.
pub fn check(input: &[Incoming], output: &[Incoming]) -> anyhow::Result<Checked> {
    let partitions: BTreeSet<i32> = input.iter().chain(output).map(|r| r.partition).collect();
    let parts: Vec<_> = std::thread::scope(|s| {
        let parts: Vec<_> = partitions
            .iter()
            .map(|&p| s.spawn(move || check_partition(p, input, output)))
            .collect();
        parts.into_iter().map(std::thread::ScopedJoinHandle::join).collect()
    });
    let mut checked = Checked { final_state_exact: true, ..Checked::default() };
    let (mut missing, mut differ, mut extra) = (0, 0, 0);
    for part in parts {
        let part = part.map_err(|_| anyhow::anyhow!("a partition's check panicked"))??;
        checked.events += part.checked.events;
        checked.updates += part.checked.updates;
        checked.wrong_updates += part.checked.wrong_updates;
        checked.entities += part.checked.entities;
        checked.final_state_exact &= part.checked.final_state_exact;
        if checked.first_problem.is_none() {
            checked.first_problem = part.checked.first_problem;
        }
        missing += part.missing;
        differ += part.differ;
        extra += part.extra;
    }
    if !checked.final_state_exact {
        checked.first_problem.get_or_insert(format!(
            "final state: {missing} entities missing, {differ} different, {extra} unknown to the model"
        ));
    }
    Ok(checked)
}

/// One partition's check, and how its final state differs from the model's.
struct Part {
    checked: Checked,
    missing: usize,
    differ: usize,
    extra: usize,
}

/// Every update of `partition` in `output` against the model applied to that
/// partition's records of `input`, and the state a consumer of the partition ends with
/// (per entity, the update with the greatest `src_offset`, the later one among equals,
/// as [`verify::fold`] gives it) against the model's final state.
fn check_partition(
    partition: i32,
    input: &[Incoming],
    output: &[Incoming],
) -> anyhow::Result<Part> {
    let mut checked = Checked::default();
    // src_offset -> (output record, line) of each update, in the order a consumer reads
    // them.
    let mut index: BTreeMap<i64, Vec<(&Incoming, &[u8])>> = BTreeMap::new();
    for record in output.iter().filter(|r| r.partition == partition) {
        for (l, line) in verify::update_lines(record)?.into_iter().enumerate() {
            let offset = src_offset(line).ok_or_else(|| {
                anyhow::anyhow!(
                    "update {}/{} line {l} has no src_offset",
                    record.partition,
                    record.offset
                )
            })?;
            index.entry(offset).or_default().push((record, line));
            checked.updates += 1;
        }
    }
    let mut records: Vec<&Incoming> = input.iter().filter(|r| r.partition == partition).collect();
    records.sort_by_key(|r| r.offset);
    let problem = |checked: &mut Checked, what: String| {
        checked.wrong_updates += 1;
        checked.first_problem.get_or_insert(what);
    };
    // What a consumer of the partition ends with: per entity, (src_offset, state).
    let mut view: HashMap<String, (i64, Value)> = HashMap::new();
    let mut keep = |u: verify::Update| {
        let slot = view.entry(u.key).or_insert((i64::MIN, Value::Null));
        if u.src_offset >= slot.0 {
            *slot = (u.src_offset, u.state);
        }
    };
    let mut world = ModelWorld::default();
    for r in records {
        for event in split_record(&r.value).unwrap_or_default() {
            checked.events += 1;
            world.apply(&event);
        }
        let Some(updates) = index.remove(&r.offset) else { continue };
        for (record, line) in updates {
            let u = verify::update_in(record, line)?;
            let model = world.state(&u.key);
            if model.as_ref() != Some(&u.state) {
                problem(
                    &mut checked,
                    format!(
                        "partition {partition} offset {}: {} is {}, the model says {model:?}",
                        r.offset, u.key, u.state
                    ),
                );
            }
            keep(u);
        }
    }
    for (offset, updates) in index {
        problem(
            &mut checked,
            format!(
                "{} updates name partition {partition} offset {offset}, which was never sent",
                updates.len()
            ),
        );
        for (record, line) in updates {
            keep(verify::update_in(record, line)?);
        }
    }
    let expected = world.view();
    checked.entities = expected.len();
    let missing = expected.keys().filter(|k| !view.contains_key(*k)).count();
    let differ =
        expected.iter().filter(|(k, v)| view.get(*k).is_some_and(|(_, w)| w != *v)).count();
    let extra = view.keys().filter(|k| !expected.contains_key(*k)).count();
    checked.final_state_exact = missing == 0 && differ == 0 && extra == 0;
    Ok(Part { checked, missing, differ, extra })
}

/// The `src_offset` field of an update line, without parsing the rest of it.
fn src_offset(line: &[u8]) -> Option<i64> {
    const FIELD: &[u8] = b"\"src_offset\":";
    let at = line.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits: Vec<u8> = line[at..]
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(partition: i32, offset: i64, key: &str, value: &str) -> Incoming {
        Incoming {
            partition,
            offset,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            headers: std::collections::HashMap::new(),
            timestamp_ms: 0,
        }
    }

    fn update(hp: i64, seq: i64, offset: i64) -> String {
        format!(
            r#"{{"kind":"player","id":"a","x":0.0,"y":0.0,"z":0.0,"yaw":0.0,"pitch":0.0,"hp":{hp},"alive":true,"score":0,"loot":0,"seq":{seq},"src_partition":0,"src_offset":{offset},"src_ts":1}}"#
        )
    }

    #[test]
    fn an_update_is_checked_against_the_model_right_after_its_source_record() {
        let input = [
            incoming(0, 0, "", r#"{"type":"spawn","player":"a","seq":1}"#),
            incoming(0, 1, "", r#"{"type":"move","player":"a","seq":2,"x":0,"y":0,"z":0}"#),
        ];
        let good = [
            incoming(0, 0, "player:a", &update(100, 1, 0)),
            incoming(0, 1, "player:a", &update(100, 2, 1)),
            // Published again after a handoff: still the state after offset 0.
            incoming(0, 2, "player:a", &update(100, 1, 0)),
        ];
        let c = check(&input, &good).unwrap();
        assert_eq!((c.updates, c.wrong_updates, c.final_state_exact), (3, 0, true), "{c:?}");
        // Applied twice: seq 2 under offset 0's name.
        let twice = [incoming(0, 0, "player:a", &update(100, 2, 0)), good[1].clone()];
        let c = check(&input, &twice).unwrap();
        assert_eq!((c.wrong_updates, c.final_state_exact), (1, true));
        // Lost: the move's update never arrived.
        let lost = [good[0].clone()];
        let c = check(&input, &lost).unwrap();
        assert_eq!((c.wrong_updates, c.final_state_exact), (0, false));
        assert!(c.first_problem.unwrap().contains("1 different"));
    }

    #[test]
    fn a_batch_record_is_checked_line_by_line_and_an_unknown_framing_is_an_error() {
        let input = [
            incoming(0, 0, "", r#"{"type":"spawn","player":"a","seq":1}"#),
            incoming(0, 1, "", r#"{"type":"move","player":"a","seq":2,"x":0,"y":0,"z":0}"#),
        ];
        let lines = format!("{}\n{}\n", update(100, 1, 0), update(100, 2, 1));
        let mut batch = incoming(0, 0, "", &lines);
        batch.headers.insert(crate::verify::FRAMING_HEADER.to_owned(), b"batch".to_vec());
        let c = check(&input, std::slice::from_ref(&batch)).unwrap();
        assert_eq!((c.updates, c.wrong_updates, c.final_state_exact), (2, 0, true), "{c:?}");
        let mut other = batch;
        other.headers.insert(crate::verify::FRAMING_HEADER.to_owned(), b"avro".to_vec());
        let error = check(&input, &[other]).unwrap_err().to_string();
        assert!(error.contains("framing"), "{error}");
    }
}
