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

/// The view a consumer of `updates` ends with: per partition and key, the update with
/// the greatest `src_offset` (the later one among equals). Checks along the way that
/// every update is valid and sits in the partition of its source.
pub fn fold(updates: &[Incoming]) -> anyhow::Result<View> {
    let mut latest: BTreeMap<(i32, String), (i64, Value)> = BTreeMap::new();
    for u in updates {
        let mut value: Value = serde_json::from_slice(&u.value)?;
        let key = String::from_utf8(u.key.clone())?;
        let src_partition = value["src_partition"].as_i64();
        anyhow::ensure!(
            src_partition == Some(i64::from(u.partition)),
            "update {key} of partition {} says {src_partition:?}",
            u.partition
        );
        let offset = value["src_offset"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("update {key} has no src_offset"))?;
        anyhow::ensure!(value["src_ts"].is_i64(), "update {key} has no src_ts");
        let object = value
            .as_object_mut()
            .ok_or_else(|| anyhow::anyhow!("update {key} is not an object"))?;
        for field in ["src_partition", "src_offset", "src_ts"] {
            object.remove(field);
        }
        let slot = latest.entry((u.partition, key)).or_insert((i64::MIN, Value::Null));
        if offset >= slot.0 {
            *slot = (offset, value);
        }
    }
    Ok(latest.into_iter().map(|(k, (_, v))| (k, v)).collect())
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
