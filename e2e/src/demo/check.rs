//! The demo's model check: every update on the output topic against the SPEC model
//! of everything sent, and the final state a consumer ends with.
//!
//! An update holds an entity's full state after the record at its `src_offset` (the
//! last one that changed it; coalesced updates keep the last state), so the model,
//! applied to the input in offset order, must show exactly that state right after
//! that record. An update published again after a handoff passes the same check. The
//! updates are indexed by source offset and parsed one at a time as the model reaches
//! them, so that a long run's updates are never all held as JSON trees at once.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::kafka::Incoming;
use crate::model::{ModelWorld, split_record};
use crate::verify::{self, FRAMING_HEADER};

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

/// Checks `output` (either framing) against the model applied to `input`: each input
/// partition on a thread of its own, and the final state on another.
pub fn check(input: &[Incoming], output: &[Incoming]) -> anyhow::Result<Checked> {
    let partitions: BTreeSet<i32> = input.iter().chain(output).map(|r| r.partition).collect();
    let (parts, final_state) = std::thread::scope(|s| {
        let final_state = s.spawn(|| -> anyhow::Result<_> {
            Ok((verify::expected(input), verify::fold(output)?))
        });
        let parts: Vec<_> = partitions
            .iter()
            .map(|&p| s.spawn(move || check_partition(p, input, output)))
            .collect();
        let parts: Vec<_> = parts.into_iter().map(std::thread::ScopedJoinHandle::join).collect();
        (parts, final_state.join())
    });
    let mut checked = Checked::default();
    for part in parts {
        let part = part.map_err(|_| anyhow::anyhow!("a partition's check panicked"))??;
        checked.events += part.events;
        checked.updates += part.updates;
        checked.wrong_updates += part.wrong_updates;
        if checked.first_problem.is_none() {
            checked.first_problem = part.first_problem;
        }
    }
    let (expected, view) =
        final_state.map_err(|_| anyhow::anyhow!("the final state's check panicked"))??;
    checked.entities = expected.len();
    checked.final_state_exact = view == expected;
    if !checked.final_state_exact {
        let missing = expected.keys().filter(|k| !view.contains_key(*k)).count();
        let differ = expected.iter().filter(|(k, v)| view.get(*k).is_some_and(|w| w != *v)).count();
        let extra = view.keys().filter(|k| !expected.contains_key(*k)).count();
        checked.first_problem.get_or_insert(format!(
            "final state: {missing} entities missing, {differ} different, {extra} unknown to the model"
        ));
    }
    Ok(checked)
}

/// Every update of `partition` in `output` against the model applied to that
/// partition's records of `input`; leaves the final state alone.
fn check_partition(
    partition: i32,
    input: &[Incoming],
    output: &[Incoming],
) -> anyhow::Result<Checked> {
    let mut checked = Checked::default();
    // src_offset -> (output record, line) of each update.
    let mut index: BTreeMap<i64, Vec<(usize, usize)>> = BTreeMap::new();
    for (r, record) in output.iter().enumerate().filter(|(_, r)| r.partition == partition) {
        for (l, line) in lines(record).enumerate() {
            let offset = src_offset(line).ok_or_else(|| {
                anyhow::anyhow!(
                    "update {}/{} line {l} has no src_offset",
                    record.partition,
                    record.offset
                )
            })?;
            index.entry(offset).or_default().push((r, l));
            checked.updates += 1;
        }
    }
    let mut records: Vec<&Incoming> = input.iter().filter(|r| r.partition == partition).collect();
    records.sort_by_key(|r| r.offset);
    let problem = |checked: &mut Checked, what: String| {
        checked.wrong_updates += 1;
        checked.first_problem.get_or_insert(what);
    };
    let mut world = ModelWorld::default();
    for r in records {
        for event in split_record(&r.value).unwrap_or_default() {
            checked.events += 1;
            world.apply(&event);
        }
        let Some(updates) = index.remove(&r.offset) else { continue };
        for (o, l) in updates {
            let line = lines(&output[o]).nth(l).expect("indexed above");
            let mut state: Value = serde_json::from_slice(line)?;
            let key = match (state["kind"].as_str(), state["id"].as_str()) {
                (Some(kind), Some(id)) => format!("{kind}:{id}"),
                _ => anyhow::bail!("update without a kind and an id: {state}"),
            };
            if let Some(object) = state.as_object_mut() {
                for field in ["src_partition", "src_offset", "src_ts"] {
                    object.remove(field);
                }
            }
            let model = world.state(&key);
            if model.as_ref() != Some(&state) {
                problem(
                    &mut checked,
                    format!(
                        "partition {partition} offset {}: {key} is {state}, the model says {model:?}",
                        r.offset
                    ),
                );
            }
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
    }
    Ok(checked)
}

fn lines(record: &Incoming) -> impl Iterator<Item = &[u8]> {
    let batch = record.headers.get(FRAMING_HEADER).is_some_and(|v| v == b"batch");
    let mut whole = Some(record.value.as_slice());
    let mut split = record.value.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    std::iter::from_fn(move || if batch { split.next() } else { whole.take() })
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
}
