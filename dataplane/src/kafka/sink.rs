//! The publisher's side of Kafka: updates, dead letters and snapshot chunks go out
//! through one producer; acknowledgements come back in the order batches were handed
//! over, and only then are input offsets committed and snapshot manifests written.
//!
//! Each batch handed over becomes a ticket counting its unacknowledged records. Tickets
//! complete in order: when one completes, every update of every record before its
//! progress is on the brokers, so its offsets can be committed and the snapshots it
//! carries can be declared restorable with a manifest.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gameshard_engine::RecordMeta;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::ClientHealth;
use super::snapshots::{self, CHUNK_HEADER, CHUNK_KEY, ID_HEADER, MANIFEST_KEY, Manifest};
use crate::admin::Health;
use crate::cli::OutputFraming;
use crate::clock;
use crate::metrics::Metrics;
use crate::sink::{Progress, Sink};

/// How often acknowledged offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Largest value of a `batch`-framed output record (SPEC section 4).
pub const MAX_BATCH_RECORD_BYTES: usize = 1024 * 1024;

/// Header that marks a `batch`-framed output record, and its value.
pub const FRAMING_HEADER: (&str, &str) = ("gameshard-framing", "batch");

/// Delivery opaque kinds, in the low two bits; the rest is a ticket or snapshot id.
const BATCH: usize = 0;
const FIRST_CHUNK: usize = 1;
const MANIFEST: usize = 2;

/// The topics the sink writes.
#[derive(Clone, Debug)]
pub struct Topics {
    /// The input topic, whose offsets are committed.
    pub input: String,
    /// Updates.
    pub output: String,
    /// Dead letters, if configured.
    pub dead_letters: Option<String>,
    /// Snapshots, if configured.
    pub snapshots: Option<String>,
    /// Largest snapshot chunk, in bytes.
    pub chunk_bytes: usize,
    /// How updates are framed on the output topic.
    pub framing: OutputFraming,
}

/// A batch's records in flight.
#[derive(Default)]
struct Ticket {
    /// Records sent minus records acknowledged; acknowledgements can come before the
    /// batch is closed and its count added, so this may dip below zero meanwhile.
    remaining: i64,
    closed: bool,
    progress: Vec<Progress>,
    snapshots: Vec<Manifest>,
}

/// What delivery reports update; only touched from the publisher thread (inside
/// `poll`), behind a lock librdkafka's `Sync` bound requires.
#[derive(Default)]
struct Acks {
    /// Id of `tickets[0]`.
    first: u64,
    tickets: VecDeque<Ticket>,
    /// Offset of each snapshot's first chunk, by (ticket, partition).
    first_chunks: HashMap<(u64, u32), i64>,
    /// Manifests acknowledged: snapshot ids.
    manifests: Vec<u64>,
    /// The first delivery that failed for good.
    failed: Option<String>,
}

impl Acks {
    /// The ticket `id`, created if it is the newest.
    fn ticket(&mut self, id: u64) -> &mut Ticket {
        let index = (id - self.first) as usize;
        if self.tickets.len() <= index {
            self.tickets.resize_with(index + 1, Ticket::default);
        }
        &mut self.tickets[index]
    }
}

/// The producer's context: delivery reports into [`Acks`], broker health as for any
/// client.
pub struct SinkContext {
    health: ClientHealth,
    acks: Mutex<Acks>,
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.health.error(error, reason);
    }

    fn stats(&self, stats: Statistics) {
        self.health.stats(stats);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        let (kind, id) = (opaque & 3, (opaque >> 2) as u64);
        let delivered = match result {
            Ok(m) => Some((m.partition(), m.offset())),
            Err((e, m)) => {
                if acks.failed.is_none() {
                    acks.failed = Some(format!(
                        "delivery to {} partition {} failed: {e}",
                        m.topic(),
                        m.partition()
                    ));
                }
                None
            }
        };
        if kind == MANIFEST {
            if delivered.is_some() {
                acks.manifests.push(id);
            }
            return;
        }
        if id >= acks.first {
            acks.ticket(id).remaining -= 1;
        }
        if let (FIRST_CHUNK, Some((partition, offset))) = (kind, delivered) {
            acks.first_chunks.insert((id, partition as u32), offset);
        }
    }
}

/// The Kafka sink of the publisher thread.
pub struct KafkaSink {
    topics: Topics,
    out: Output,
    /// Snapshots of the batch being handed over, to be closed into its ticket.
    pending: Vec<Manifest>,
    /// With the `batch` framing: the NDJSON not yet sent, per input partition, and the
    /// partitions that have some. The buffers keep their capacity.
    lines: Vec<Vec<u8>>,
    lines_pending: Vec<u32>,
}

/// Everything of the sink but the topic names, which records borrow while it sends.
struct Output {
    producer: BaseProducer<SinkContext>,
    committer: BaseConsumer,
    input_topic: String,
    snapshot_topic: Option<String>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    /// Id of the ticket being filled, and the records sent for it so far.
    ticket: u64,
    sent: i64,
    /// Next offset acknowledged and committed, per partition.
    acked: Vec<i64>,
    committed: Vec<i64>,
    last_commit: Instant,
    /// Snapshots whose manifest is in flight, by id.
    manifests: HashMap<u64, Manifest>,
    next_snapshot_id: u64,
    drain_timeout: Duration,
    failed: bool,
}

impl KafkaSink {
    /// A sink producing with `producer` and committing with `committer`; a failed
    /// delivery marks `health` broken and sets `stop`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        producer: &rdkafka::ClientConfig,
        committer: &rdkafka::ClientConfig,
        client_health: ClientHealth,
        topics: Topics,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        stop: Arc<AtomicBool>,
        drain_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let context = SinkContext { health: client_health, acks: Mutex::new(Acks::default()) };
        let partitions = metrics.partitions.len();
        let out = Output {
            producer: producer.create_with_context(context)?,
            committer: committer.create()?,
            input_topic: topics.input.clone(),
            snapshot_topic: topics.snapshots.clone(),
            metrics,
            health,
            stop,
            ticket: 0,
            sent: 0,
            acked: vec![-1; partitions],
            committed: vec![-1; partitions],
            last_commit: Instant::now(),
            manifests: HashMap::new(),
            next_snapshot_id: clock::unix_ms().max(0) as u64 * 1000,
            drain_timeout,
            failed: false,
        };
        let lines = match topics.framing {
            OutputFraming::Entity => Vec::new(),
            OutputFraming::Batch => (0..partitions).map(|_| Vec::new()).collect(),
        };
        Ok(Self { topics, out, pending: Vec::new(), lines, lines_pending: Vec::new() })
    }

    /// Sends the NDJSON gathered for `partition` as one `batch`-framed record.
    fn send_lines(&mut self, partition: u32) {
        let Some(lines) = self.lines.get_mut(partition as usize) else { return };
        if lines.is_empty() {
            return;
        }
        // The header list is librdkafka's own; it takes it over with the record.
        let headers = OwnedHeaders::new_with_capacity(1)
            .insert(Header { key: FRAMING_HEADER.0, value: Some(FRAMING_HEADER.1) });
        let record =
            BaseRecord::with_opaque_to(&self.topics.output, opaque(BATCH, self.out.ticket))
                .partition(partition as i32)
                .payload(&lines[..])
                .headers(headers);
        self.out.send(record);
        // librdkafka copied the value: the buffer is free again.
        lines.clear();
    }

    /// Whether a record could not be delivered, so the data plane stopped.
    pub fn failed(&self) -> bool {
        self.out.failed
    }
}

fn opaque(kind: usize, id: u64) -> usize {
    (id as usize) << 2 | kind
}

impl Output {
    fn acks(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.producer.context().acks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one record, waiting while the local queue is full: a full queue is the
    /// back-pressure that slows the whole pipeline down to what the brokers take.
    fn send(&mut self, mut record: BaseRecord<'_, [u8], [u8], usize>) {
        let counted = record.delivery_opaque & 3 != MANIFEST;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    if counted {
                        self.sent += 1;
                    }
                    return;
                }
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(1));
                    self.advance();
                }
                Err((e, r)) => {
                    let reason = format!("cannot produce to {}: {e}", r.topic);
                    self.fail(&reason);
                    return;
                }
            }
        }
    }

    /// Closes the current ticket with `progress` and the snapshots it carries.
    fn close(&mut self, progress: &[Progress], snapshots: Vec<Manifest>) {
        let (id, sent) = (self.ticket, self.sent);
        {
            let mut acks = self.acks();
            let ticket = acks.ticket(id);
            ticket.remaining += sent;
            ticket.closed = true;
            ticket.progress.extend_from_slice(progress);
            ticket.snapshots = snapshots;
        }
        self.ticket += 1;
        self.sent = 0;
    }

    /// Retires completed tickets in order: commits their offsets (at most every
    /// [`COMMIT_EVERY`]) and writes the manifests of their snapshots.
    fn advance(&mut self) {
        let mut done = Vec::new();
        let (manifests_acked, failure) = {
            let acked = &mut self.acked;
            let mut acks =
                self.producer.context().acks.lock().unwrap_or_else(PoisonError::into_inner);
            while acks.tickets.front().is_some_and(|t| t.closed && t.remaining == 0) {
                let Some(ticket) = acks.tickets.pop_front() else { break };
                let id = acks.first;
                acks.first += 1;
                for mut snapshot in ticket.snapshots {
                    if let Some(offset) = acks.first_chunks.remove(&(id, snapshot.partition)) {
                        snapshot.first_offset = offset;
                        done.push(snapshot);
                    }
                }
                for p in ticket.progress {
                    if let Some(a) = acked.get_mut(p.partition as usize) {
                        *a = (*a).max(p.next_offset);
                    }
                }
            }
            (std::mem::take(&mut acks.manifests), acks.failed.take())
        };
        if let Some(failure) = failure {
            self.fail(&failure);
        }
        if self.failed {
            return;
        }
        for manifest in done {
            self.write_manifest(manifest);
        }
        for id in manifests_acked {
            if let Some(m) = self.manifests.remove(&id) {
                if let Some(stats) = self.metrics.partition(m.partition) {
                    stats.snapshot.store(m.next_offset, Relaxed);
                    stats.snapshot_unix_ms.store(m.created_ms, Relaxed);
                }
                tracing::debug!(
                    partition = m.partition,
                    next_offset = m.next_offset,
                    id,
                    "snapshot restorable"
                );
            }
        }
        if self.last_commit.elapsed() >= COMMIT_EVERY {
            self.commit(CommitMode::Async);
        }
    }

    fn write_manifest(&mut self, manifest: Manifest) {
        let Some(topic) = self.snapshot_topic.clone() else { return };
        let value = serde_json::to_vec(&manifest).expect("a manifest serializes");
        let (id, partition) = (manifest.id, manifest.partition as i32);
        self.manifests.insert(id, manifest);
        let record = BaseRecord::with_opaque_to(&topic, opaque(MANIFEST, id))
            .partition(partition)
            .key(MANIFEST_KEY)
            .payload(&value[..]);
        self.send(record);
    }

    fn commit(&mut self, mode: CommitMode) {
        self.last_commit = Instant::now();
        if self.failed {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, (&acked, committed)) in self.acked.iter().zip(&self.committed).enumerate() {
            if acked > *committed {
                let _ =
                    tpl.add_partition_offset(&self.input_topic, p as i32, Offset::Offset(acked));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match self.committer.commit(&tpl, mode) {
            Ok(()) => {
                for e in tpl.elements() {
                    let (p, Offset::Offset(offset)) = (e.partition() as usize, e.offset()) else {
                        continue;
                    };
                    self.committed[p] = offset;
                    if let Some(stats) = self.metrics.partition(p as u32) {
                        stats.committed.store(offset, Relaxed);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "committing input offsets failed; retrying with the next commit");
            }
        }
        let _ = self.committer.poll(Duration::ZERO);
    }

    fn fail(&mut self, reason: &str) {
        if self.failed {
            return;
        }
        self.failed = true;
        tracing::error!(%reason, "an output record was lost; stopping without committing past it");
        self.health.set_broken(reason);
        self.stop.store(true, Relaxed);
    }
}

impl Sink for KafkaSink {
    fn update(&mut self, src: &RecordMeta, key: &[u8], value: &[u8]) {
        if self.topics.framing == OutputFraming::Batch {
            // One buffer per input partition: an owned partition always has one.
            let partition = src.partition;
            let held = self.lines[partition as usize].len();
            if held == 0 {
                self.lines_pending.push(partition);
            } else if held + value.len() + 1 > MAX_BATCH_RECORD_BYTES {
                // Still pending: what follows goes into the next record.
                self.send_lines(partition);
            }
            let lines = &mut self.lines[partition as usize];
            lines.extend_from_slice(value);
            lines.push(b'\n');
            return;
        }
        let record =
            BaseRecord::with_opaque_to(&self.topics.output, opaque(BATCH, self.out.ticket))
                .partition(src.partition as i32)
                .key(key)
                .payload(value);
        self.out.send(record);
    }

    fn dead_letter(&mut self, src: &RecordMeta, reason: &'static str, payload: &[u8]) {
        let Some(topic) = &self.topics.dead_letters else { return };
        let (partition, offset) = (src.partition.to_string(), src.offset.to_string());
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header { key: "gameshard-error", value: Some(reason) })
            .insert(Header { key: "gameshard-src-partition", value: Some(&partition) })
            .insert(Header { key: "gameshard-src-offset", value: Some(&offset) });
        let record = BaseRecord::with_opaque_to(topic, opaque(BATCH, self.out.ticket))
            .partition(src.partition as i32)
            .payload(payload)
            .headers(headers);
        self.out.send(record);
    }

    fn snapshot(&mut self, partition: u32, next_offset: i64, state: &[u8]) {
        let Some(topic) = &self.topics.snapshots else { return };
        self.out.next_snapshot_id += 1;
        let id = self.out.next_snapshot_id;
        let parts = snapshots::chunks(state, self.topics.chunk_bytes);
        let count = parts.len();
        let id_text = id.to_string();
        for (index, chunk) in parts.into_iter().enumerate() {
            let place = format!("{index}/{count}");
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header { key: ID_HEADER, value: Some(&id_text) })
                .insert(Header { key: CHUNK_HEADER, value: Some(&place) });
            let kind = if index == 0 { FIRST_CHUNK } else { BATCH };
            let record = BaseRecord::with_opaque_to(topic, opaque(kind, self.out.ticket))
                .partition(partition as i32)
                .key(CHUNK_KEY)
                .payload(chunk)
                .headers(headers);
            self.out.send(record);
        }
        self.pending.push(Manifest {
            id,
            partition,
            next_offset,
            first_offset: -1,
            chunks: count as u32,
            bytes: state.len() as u64,
            crc32: crc32fast::hash(state),
            created_ms: clock::unix_ms(),
        });
    }

    fn released(&mut self, partition: u32) {
        tracing::info!(partition, "partition released");
    }

    fn end_batch(&mut self, progress: &[Progress], _now_ns: u64) {
        // A batch's updates leave in its own records, so its ticket counts them.
        let mut pending = std::mem::take(&mut self.lines_pending);
        for &partition in &pending {
            self.send_lines(partition);
        }
        pending.clear();
        self.lines_pending = pending;
        let snapshots = std::mem::take(&mut self.pending);
        self.out.close(progress, snapshots);
        self.out.producer.poll(Duration::ZERO);
        self.out.advance();
    }

    fn finish(&mut self) {
        let out = &mut self.out;
        let deadline = Instant::now() + out.drain_timeout;
        loop {
            out.producer.poll(Duration::from_millis(20));
            out.advance();
            let idle = out.acks().tickets.is_empty() && out.manifests.is_empty();
            if idle || out.failed {
                break;
            }
            if Instant::now() > deadline {
                let reason = format!(
                    "drain timed out after {} s with records unacknowledged",
                    out.drain_timeout.as_secs()
                );
                out.fail(&reason);
                break;
            }
        }
        out.commit(CommitMode::Sync);
        let _ = out.producer.flush(Duration::from_secs(1));
    }
}
