//! The parser: records of 64 events to event batches of 1,024 events, as the IO thread
//! parses them, in both framings. Throughput in events and in bytes of input.

mod common;

use criterion::{Criterion, Throughput};
use gameshard_engine::spec::SpecParser;
use gameshard_engine::{EventBatch, Parser};

fn parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("parser");
    common::long_iterations(&mut group);
    for (name, array) in [("ndjson", false), ("array", true)] {
        let records = common::records(array);
        let bytes: usize = records.iter().map(Vec::len).sum();
        let events = records.len() as u64 * u64::from(common::EVENTS_PER_RECORD);
        let mut parser = SpecParser::new();
        let mut batch = EventBatch::default();
        group.throughput(Throughput::ElementsAndBytes { elements: events, bytes: bytes as u64 });
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut parsed = 0;
                for (i, chunk) in records.chunks(common::RECORDS_PER_BATCH).enumerate() {
                    batch.clear();
                    for (j, bytes) in chunk.iter().enumerate() {
                        let offset = (i * common::RECORDS_PER_BATCH + j) as i64;
                        let index = batch.push_record(common::meta(offset));
                        parser.parse(bytes, index, &mut batch);
                    }
                    parsed += batch.events.len() as u64;
                }
                assert_eq!(parsed, events);
            });
        });
    }
    group.finish();
}

fn main() {
    common::pin();
    let mut c = Criterion::default().configure_from_args();
    parser(&mut c);
    c.final_summary();
}
