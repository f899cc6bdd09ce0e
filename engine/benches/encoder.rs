//! The encoder: the coalesced updates of event batches of 1,024 events (players and
//! items) to Kafka keys and values, as the publisher encodes them. Throughput in updates
//! and in bytes of keys and values written.

mod common;

use criterion::{Criterion, Throughput};
use gameshard_engine::spec::SpecEncoder;
use gameshard_engine::{Encoder, Updates};

fn encoder(c: &mut Criterion) {
    let mut group = c.benchmark_group("encoder");
    common::long_iterations(&mut group);
    let batches = common::batches(&common::records(false));
    let mut world = common::spawned_world();
    let updates: Vec<Updates<_>> = batches
        .iter()
        .map(|batch| {
            let mut updates = Updates::default();
            common::apply(&mut world, batch, &mut updates);
            updates
        })
        .collect();
    let (mut key, mut value) = (Vec::with_capacity(256), Vec::with_capacity(1024));
    let mut encode_all = || {
        let (mut n, mut bytes) = (0u64, 0u64);
        for u in &updates {
            for (src, update) in &u.items {
                SpecEncoder.encode(src, update, &u.bytes, &mut key, &mut value);
                n += 1;
                bytes += (key.len() + value.len()) as u64;
            }
        }
        (n, bytes)
    };
    let (elements, bytes) = encode_all();
    group.throughput(Throughput::ElementsAndBytes { elements, bytes });
    group.bench_function("updates", |b| b.iter(|| assert_eq!(encode_all().0, elements)));
    group.finish();
}

fn main() {
    common::pin();
    let mut c = Criterion::default().configure_from_args();
    encoder(&mut c);
    c.final_summary();
}
