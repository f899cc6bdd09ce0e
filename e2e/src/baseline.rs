//! The baseline the benchmark compares the pipeline with: the design game backends use
//! today. A multi-threaded tokio runtime; a reader task that parses every event into a
//! `serde_json::Value` and sends it as its own channel message; a processor task that
//! applies it to the world behind an `Arc<Mutex<HashMap>>` with the reference model and
//! serializes one update per change with `serde_json`; and a publisher task that takes
//! the serialized updates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::model::ModelWorld;
use crate::workload::Workload;

/// What the baseline measured.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    /// Events processed after the warm-up.
    pub events: u64,
    /// Time to process them, from the first read to the last update published.
    pub elapsed: Duration,
    /// Updates published for them.
    pub updates: u64,
}

enum Message {
    Event {
        partition: u32,
        offset: i64,
        timestamp_ms: i64,
        event: Value,
    },
    /// Everything sent before has been published once this comes out at the end.
    Mark(oneshot::Sender<()>),
}

enum Output {
    Update { key: String, value: Vec<u8> },
    Mark(oneshot::Sender<()>),
}

/// Bounded like a typical service: enough to keep tasks busy, small enough to bound
/// memory.
const CHANNEL: usize = 1024;

/// Runs the warm-up of `workload`, then at least `events` events, on a tokio runtime
/// of `workers` threads.
pub fn run(workload: &mut Workload, events: u64, workers: usize) -> std::io::Result<Report> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    Ok(runtime.block_on(measure(workload, events)))
}

async fn measure(workload: &mut Workload, events: u64) -> Report {
    let world = Arc::new(Mutex::new(HashMap::<u32, ModelWorld>::new()));
    let (tx, mut rx) = mpsc::channel::<Message>(CHANNEL);
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(CHANNEL);

    let processor = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            match message {
                Message::Event { partition, offset, timestamp_ms, event } => {
                    let updates: Vec<(String, Vec<u8>)> = {
                        let mut worlds = world.lock().expect("no task panics holding the lock");
                        let w = worlds.entry(partition).or_default();
                        let (_, changed) = w.apply(&event);
                        changed
                            .into_iter()
                            .filter_map(|key| {
                                let mut value = w.state(&key)?;
                                value["src_partition"] = partition.into();
                                value["src_offset"] = offset.into();
                                value["src_ts"] = timestamp_ms.into();
                                Some((key, serde_json::to_vec(&value).expect("a Value serializes")))
                            })
                            .collect()
                    };
                    for (key, value) in updates {
                        if out_tx.send(Output::Update { key, value }).await.is_err() {
                            return;
                        }
                    }
                }
                Message::Mark(done) => {
                    let _ = out_tx.send(Output::Mark(done)).await;
                }
            }
        }
    });

    let publisher = tokio::spawn(async move {
        let (mut updates, mut bytes) = (0u64, 0usize);
        while let Some(output) = out_rx.recv().await {
            match output {
                Output::Update { key, value } => {
                    updates += 1;
                    bytes += key.len() + value.len();
                }
                Output::Mark(done) => {
                    let _ = done.send(());
                }
            }
        }
        (updates, bytes)
    });

    let mut offsets: HashMap<u32, i64> = HashMap::new();
    let mut send_record = async |partition: u32, bytes: &[u8]| {
        let offset = offsets.entry(partition).or_insert(0);
        let timestamp_ms = gameshard_dataplane::clock::unix_ms();
        let events: Vec<Value> = match bytes.first() {
            Some(b'[') => serde_json::from_slice(bytes).unwrap_or_default(),
            _ => bytes
                .split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice(l).ok())
                .collect(),
        };
        let n = events.len() as u64;
        for event in events {
            let message = Message::Event { partition, offset: *offset, timestamp_ms, event };
            tx.send(message).await.expect("the processor runs until the reader ends");
        }
        *offset += 1;
        n
    };

    let mut warmup = Vec::new();
    for i in 0..workload.warmup_records() {
        let partition = workload.warmup_record(i, &mut warmup);
        send_record(partition, &warmup).await;
    }
    let (done, warmed) = oneshot::channel();
    tx.send(Message::Mark(done)).await.expect("the processor runs");
    warmed.await.expect("the publisher acknowledges marks");

    let start = Instant::now();
    let (mut sent, mut pass) = (0u64, 1u64);
    'passes: loop {
        for record in &mut workload.records {
            if sent >= events {
                break 'passes;
            }
            record.set_pass(pass);
            sent += send_record(record.partition, &record.bytes).await;
        }
        pass += 1;
    }
    drop(tx);
    processor.await.expect("the processor does not panic");
    let (updates, _) = publisher.await.expect("the publisher does not panic");
    Report { events: sent, elapsed: start.elapsed(), updates }
}
