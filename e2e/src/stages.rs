//! The engine's three stages on a fixed workload, in one thread, with each counted
//! region in a function of its own, so that a tool counting instructions per function
//! (`valgrind --tool=callgrind --toggle-collect=...`) can divide its total by the events.
//!
//! Everything before the counted region is the same for every stage: the workload is
//! generated, its warm-up spawns every player, and one whole pass goes through all three
//! stages, so that buffers and tables have their working size. The counted region is
//! the second pass, through one stage ([`Stage::Parse`], [`Stage::Apply`],
//! [`Stage::Encode`]) or all three in turn ([`Stage::Pipeline`]). Records are batched as
//! the pipeline batches them, and each world is flushed once per batch.
//!
//! This counts the engine's work per event. It leaves out what only the threaded
//! pipeline does: queue hand-offs, thread wake-ups, metrics and the sink.

use gameshard_dataplane::pipeline::Config;
use gameshard_engine::spec::{Event, SpecEncoder, SpecParser, SpecWorld, Update};
use gameshard_engine::{Encoder, EventBatch, Parser, RecordMeta, Updates, World};

use crate::workload::{self, Workload};

/// What a counted region covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Record bytes to event batches.
    Parse,
    /// Event batches to coalesced updates: the rules, and one flush per world per batch.
    Apply,
    /// Updates to keys and values.
    Encode,
    /// All three, one batch at a time.
    Pipeline,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 4] = [Stage::Pipeline, Stage::Parse, Stage::Apply, Stage::Encode];

    /// Its name, as the command line and the reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Apply => "apply",
            Stage::Encode => "encode",
            Stage::Pipeline => "pipeline",
        }
    }

    /// The function that holds this stage's counted region, as a pattern for callgrind's
    /// `--toggle-collect`. It must match that function alone: a closure inside it that is
    /// not inlined would match `...count_encode*` too, and toggle counting off again.
    pub fn counted_function(self) -> String {
        format!("*stages::count_{}", self.name())
    }
}

/// What the counted region went through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Records.
    pub records: u64,
    /// Bytes of record values.
    pub bytes: u64,
    /// Events (well-formed ones; the workload has no malformed one).
    pub events: u64,
    /// Updates.
    pub updates: u64,
    /// Bytes of encoded keys and values; 0 for the stages that do not encode.
    pub encoded_bytes: u64,
}

/// The engine's state between stages: a parser, a world per partition and an encoder.
struct Engine {
    parser: SpecParser,
    worlds: Vec<SpecWorld>,
    encoder: SpecEncoder,
    /// Partitions touched by the batch being applied, in order of first touch.
    touched: Vec<u32>,
    key: Vec<u8>,
    value: Vec<u8>,
    max_batch_events: usize,
    max_batch_bytes: usize,
}

/// A record of the pass, ready to be parsed.
struct Input<'a> {
    meta: RecordMeta,
    bytes: &'a [u8],
}

impl Engine {
    fn new(partitions: u32) -> Self {
        let defaults = Config::default();
        Self {
            parser: SpecParser::new(),
            worlds: (0..partitions).map(|_| SpecWorld::new()).collect(),
            encoder: SpecEncoder,
            touched: Vec::new(),
            key: Vec::with_capacity(256),
            value: Vec::with_capacity(1024),
            max_batch_events: defaults.max_batch_events,
            max_batch_bytes: defaults.max_batch_bytes,
        }
    }

    fn new_batch(&self) -> EventBatch<Event> {
        let events = self.max_batch_events;
        EventBatch::with_capacity(events, events + events / 2, self.max_batch_bytes + 64 * 1024)
    }

    /// Parses `record` into `batch`; true when the batch is full, as the IO thread
    /// decides.
    #[inline]
    fn parse(&mut self, record: &Input<'_>, batch: &mut EventBatch<Event>) -> bool {
        let index = batch.push_record(record.meta);
        self.parser.parse(record.bytes, index, batch);
        batch.events.len() >= self.max_batch_events
            || batch.records.len() >= self.max_batch_events
            || batch.bytes.len() >= self.max_batch_bytes
    }

    /// Applies `batch` and flushes every world it touched into `out`, as the state
    /// machine does.
    #[inline]
    fn apply(&mut self, batch: &EventBatch<Event>, out: &mut Updates<Update>) {
        for parsed in &batch.events {
            let src = &batch.records[parsed.record as usize];
            let partition = src.partition;
            if !self.touched.contains(&partition) {
                self.touched.push(partition);
            }
            self.worlds[partition as usize].apply(&parsed.event, &batch.bytes, src);
        }
        for partition in self.touched.drain(..) {
            self.worlds[partition as usize].flush(out);
        }
    }

    /// Encodes every update of `updates`, as the publisher does; returns the bytes
    /// written.
    #[inline]
    fn encode(&mut self, updates: &Updates<Update>) -> u64 {
        let mut written = 0;
        for (src, update) in &updates.items {
            self.encoder.encode(src, update, &updates.bytes, &mut self.key, &mut self.value);
            written += (self.key.len() + self.value.len()) as u64;
            std::hint::black_box((&self.key, &self.value));
        }
        written
    }

    /// All three stages over `records`, one batch at a time.
    fn run(&mut self, records: &[Input<'_>], counted: &mut Counted) {
        let mut batch = self.new_batch();
        let mut updates = Updates::default();
        let mut end_batch = |engine: &mut Self, batch: &mut EventBatch<Event>| {
            counted.events += batch.events.len() as u64;
            engine.apply(batch, &mut updates);
            counted.updates += updates.len() as u64;
            counted.encoded_bytes += engine.encode(&updates);
            updates.clear();
            batch.clear();
        };
        for record in records {
            counted.records += 1;
            counted.bytes += record.bytes.len() as u64;
            if self.parse(record, &mut batch) {
                end_batch(self, &mut batch);
            }
        }
        if !batch.is_empty() {
            end_batch(self, &mut batch);
        }
    }

    /// Parses `records` into the batches the IO thread would send.
    fn batches(&mut self, records: &[Input<'_>]) -> Vec<EventBatch<Event>> {
        let mut batches = vec![self.new_batch()];
        for record in records {
            let batch = batches.last_mut().expect("there is a batch");
            if self.parse(record, batch) {
                batches.push(self.new_batch());
            }
        }
        batches.retain(|b| !b.is_empty());
        batches
    }
}

/// Plays `config`'s workload up to the counted region, then `stage` over one pass.
pub fn run(stage: Stage, config: &workload::Config) -> Counted {
    let mut workload = Workload::generate(config);
    let mut engine = Engine::new(workload.partitions());
    let mut offsets = vec![0i64; workload.partitions() as usize];
    let mut meta = |partition: u32| {
        let offset = &mut offsets[partition as usize];
        *offset += 1;
        RecordMeta {
            partition,
            offset: *offset - 1,
            timestamp_ms: 1_732_760_000_123,
            arrival_ns: 0,
        }
    };

    let mut warmup = Vec::new();
    for i in 0..workload.warmup_records() {
        let partition = workload.warmup_record(i, &mut warmup);
        engine.run(&[Input { meta: meta(partition), bytes: &warmup }], &mut Counted::default());
    }
    let mut release = |workload: &mut Workload, pass: u64| {
        workload.records.iter_mut().for_each(|r| r.set_pass(pass));
        let records: Vec<(RecordMeta, Vec<u8>)> =
            workload.records.iter().map(|r| (meta(r.partition), r.bytes.clone())).collect();
        records
    };
    let first = release(&mut workload, 1);
    engine.run(&inputs(&first), &mut Counted::default());
    let second = release(&mut workload, 2);
    let records = inputs(&second);

    let mut counted = Counted {
        records: records.len() as u64,
        bytes: records.iter().map(|r| r.bytes.len() as u64).sum(),
        ..Counted::default()
    };
    match stage {
        Stage::Pipeline => {
            counted = Counted::default();
            count_pipeline(&mut engine, &records, &mut counted);
        }
        Stage::Parse => {
            let mut batch = engine.new_batch();
            counted.events = count_parse(&mut engine, &records, &mut batch);
        }
        Stage::Apply => {
            let batches = engine.batches(&records);
            counted.events = batches.iter().map(|b| b.events.len() as u64).sum();
            let mut updates = Updates::default();
            counted.updates = count_apply(&mut engine, &batches, &mut updates);
        }
        Stage::Encode => {
            let batches = engine.batches(&records);
            counted.events = batches.iter().map(|b| b.events.len() as u64).sum();
            let updates: Vec<Updates<Update>> = batches
                .iter()
                .map(|batch| {
                    let mut updates = Updates::default();
                    engine.apply(batch, &mut updates);
                    updates
                })
                .collect();
            counted.updates = updates.iter().map(|u| u.len() as u64).sum();
            counted.encoded_bytes = count_encode(&mut engine, &updates);
        }
    }
    counted
}

fn inputs(records: &[(RecordMeta, Vec<u8>)]) -> Vec<Input<'_>> {
    records.iter().map(|(meta, bytes)| Input { meta: *meta, bytes }).collect()
}

// The counted regions. Each is a function of its own that is never inlined, so that
// callgrind can switch counting on at its entry and off at its exit.

#[inline(never)]
fn count_pipeline(engine: &mut Engine, records: &[Input<'_>], counted: &mut Counted) {
    engine.run(records, counted);
}

#[inline(never)]
fn count_parse(engine: &mut Engine, records: &[Input<'_>], batch: &mut EventBatch<Event>) -> u64 {
    let mut events = 0;
    for record in records {
        if engine.parse(record, batch) {
            events += batch.events.len() as u64;
            batch.clear();
        }
    }
    events + batch.events.len() as u64
}

#[inline(never)]
fn count_apply(
    engine: &mut Engine,
    batches: &[EventBatch<Event>],
    updates: &mut Updates<Update>,
) -> u64 {
    let mut n = 0;
    for batch in batches {
        engine.apply(batch, updates);
        n += updates.len() as u64;
        updates.clear();
    }
    n
}

#[inline(never)]
fn count_encode(engine: &mut Engine, updates: &[Updates<Update>]) -> u64 {
    let mut written = 0;
    for u in updates {
        written += engine.encode(u);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_sees_the_same_pass_and_the_pipeline_sees_what_the_stages_see() {
        let config = workload::Config {
            players: 2_000,
            partitions: 4,
            records: 64,
            items: 1_000,
            ..workload::Config::default()
        };
        let [pipeline, parse, apply, encode] = Stage::ALL.map(|stage| run(stage, &config));
        assert_eq!(pipeline.events, 64 * 64);
        assert_eq!(pipeline.records, 64);
        for stage in [parse, apply, encode] {
            assert_eq!(stage.events, pipeline.events);
            assert_eq!(stage.records, pipeline.records);
            assert_eq!(stage.bytes, pipeline.bytes);
        }
        assert!(pipeline.updates > pipeline.events / 2, "{pipeline:?}");
        assert_eq!(apply.updates, pipeline.updates);
        assert_eq!(encode.updates, pipeline.updates);
        assert_eq!(encode.encoded_bytes, pipeline.encoded_bytes);
    }
}
