//! Any record: the parser never panics and accounts for it, the world applies whatever
//! it accepts, and every update it emits is valid JSON.
#![no_main]

use gameshard_engine::spec::{SpecEncoder, SpecParser, SpecWorld};
use gameshard_engine::{Encoder, EventBatch, Parser, RecordMeta, Updates, World};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut parser = SpecParser::new();
    let mut batch = EventBatch::default();
    let meta = RecordMeta { partition: 1, offset: 7, timestamp_ms: 1, arrival_ns: 0 };
    let record = batch.push_record(meta);
    parser.parse(data, record, &mut batch);
    assert!(!batch.events.is_empty() || !batch.malformed.is_empty(), "a record yields something");

    let mut world = SpecWorld::new();
    for e in &batch.events {
        world.apply(&e.event, &batch.bytes, &meta);
    }
    let mut updates = Updates::default();
    world.flush(&mut updates);
    let (mut key, mut value) = (Vec::new(), Vec::new());
    for (src, update) in &updates.items {
        SpecEncoder.encode(src, update, &updates.bytes, &mut key, &mut value);
        serde_json::from_slice::<serde_json::Value>(&value).expect("updates are JSON");
    }
});
