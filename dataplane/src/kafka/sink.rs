//! The publisher's side of Kafka. Updates and dead letters go out through one
//! producer; snapshot chunks, manifests and release messages through a second one, so
//! that a snapshot of any size never queues in front of updates. Acknowledgements of
//! updates come back in the order batches were handed over, and only then are input
//! offsets committed, snapshot manifests written and partitions released.
//!
//! Each batch handed over becomes a ticket counting its unacknowledged records. Tickets
//! complete in order: when one completes, every update of every record before its
//! progress is on the brokers, so its offsets can be committed. A snapshot begun with a
//! batch is declared restorable, with a manifest, once that batch's ticket and every
//! chunk of the snapshot are acknowledged. A partition given up is committed and its
//! release written to the control topic once its last snapshot is declared.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gameshard_engine::RecordMeta;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::ClientHealth;
use super::snapshots::{CHUNK_HEADER, CHUNK_KEY, ID_HEADER, MANIFEST_KEY, Manifest};
use crate::admin::Health;
use crate::cli::OutputFraming;
use crate::clock;
use crate::metrics::{Metrics, PartitionState};
use crate::pipeline::{Chunk, ChunkEnd, Released, SnapshotStart};
use crate::sink::{Progress, Sink};

/// How often acknowledged offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Largest value of a `batch`-framed output record. The specification allows 1 MiB
/// (section 4); the value stops short of it so that the record, with its header and
/// framing, also fits librdkafka's default `message.max.bytes` (1,000,000 bytes) and a
/// topic's default `max.message.bytes` (1,048,588 bytes for the whole record batch),
/// which a 1 MiB value would exceed.
pub const MAX_BATCH_RECORD_BYTES: usize = 960 * 1024;

/// Header that marks a `batch`-framed output record, and its value.
pub const FRAMING_HEADER: (&str, &str) = ("gameshard-framing", "batch");

/// Delivery opaque kinds, in the low two bits; the rest is a ticket, snapshot id or
/// partition.
const BATCH: usize = 0;
const CHUNK: usize = 1;
const MANIFEST: usize = 2;
const CONTROL: usize = 3;

fn opaque(kind: usize, id: u64) -> usize {
    (id as usize) << 2 | kind
}

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
    /// The control topic and this pod's id, when following the operator's assignment:
    /// releases are written there.
    pub control: Option<(String, String)>,
    /// The shard, named by release messages.
    pub shard: String,
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
}

/// Tickets in flight that the sink has room for from the start; more grow the lists.
/// Batches are acknowledged within milliseconds on a healthy broker, so a few dozen are
/// in flight at the pipeline's full rate.
const TICKETS_RESERVED: usize = 256;

/// Snapshots in flight per partition (chunks written, manifest not yet acknowledged)
/// that the sink has room for from the start; more grow the lists. A partition is
/// snapshotted every few thousand records, and a snapshot is declared within
/// milliseconds of its last chunk, so rarely more than two are in flight; a pipeline
/// catching up at full speed has a few more.
const SNAPSHOTS_RESERVED: usize = 8;

/// What the update producer's delivery reports update; only touched from the
/// publisher thread (inside `poll`), behind a lock librdkafka's `Sync` bound requires.
#[derive(Default)]
struct Acks {
    /// Id of `tickets[0]`.
    first: u64,
    tickets: VecDeque<Ticket>,
    /// Progress lists of retired tickets, kept for new ones: a batch allocates none.
    free: Vec<Vec<Progress>>,
    /// Input partitions: the most a batch's progress names.
    partitions: usize,
    /// The first delivery that failed for good.
    failed: Option<String>,
}

impl Acks {
    /// The ticket `id`, created if it is the newest.
    fn ticket(&mut self, id: u64) -> &mut Ticket {
        let index = (id - self.first) as usize;
        while self.tickets.len() <= index {
            let partitions = self.partitions;
            let progress = self.free.pop().unwrap_or_else(|| Vec::with_capacity(partitions));
            self.tickets.push_back(Ticket { progress, ..Ticket::default() });
        }
        &mut self.tickets[index]
    }
}

/// The update producer's context: delivery reports into [`Acks`], broker health as for
/// any client.
pub struct SinkContext {
    health: ClientHealth,
    acks: Mutex<Acks>,
    reports: AtomicU64,
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
        self.reports.fetch_add(1, Relaxed);
        let mut acks = lock(&self.acks);
        if let Err((e, m)) = result
            && acks.failed.is_none()
        {
            acks.failed =
                Some(format!("delivery to {} partition {} failed: {e}", m.topic(), m.partition()));
        }
        let id = (opaque >> 2) as u64;
        if id >= acks.first {
            acks.ticket(id).remaining -= 1;
        }
    }
}

/// Acknowledgements of one snapshot's chunks.
#[derive(Clone, Copy)]
struct ChunkAcks {
    id: u64,
    acked: u32,
    /// Offset of chunk 0 in the snapshot partition, once acknowledged.
    first_offset: i64,
}

/// What the snapshot producer's delivery reports update.
#[derive(Default)]
struct SnapshotAcks {
    chunks: Vec<ChunkAcks>,
    /// Snapshot ids whose manifest is acknowledged.
    manifests: Vec<u64>,
    /// Partitions whose release message is acknowledged.
    releases: Vec<u32>,
    failed: Option<String>,
}

/// The snapshot producer's context.
pub struct SnapshotContext {
    health: ClientHealth,
    acks: Mutex<SnapshotAcks>,
    reports: AtomicU64,
}

impl ClientContext for SnapshotContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.health.error(error, reason);
    }
}

impl ProducerContext for SnapshotContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        self.reports.fetch_add(1, Relaxed);
        let mut acks = lock(&self.acks);
        let (kind, id) = (opaque & 3, (opaque >> 2) as u64);
        let offset = match result {
            Ok(m) => m.offset(),
            Err((e, m)) => {
                if acks.failed.is_none() {
                    acks.failed = Some(format!(
                        "delivery to {} partition {} failed: {e}",
                        m.topic(),
                        m.partition()
                    ));
                }
                return;
            }
        };
        match kind {
            CHUNK => {
                if let Some(c) = acks.chunks.iter_mut().find(|c| c.id == id) {
                    c.acked += 1;
                    if c.first_offset < 0 || offset < c.first_offset {
                        c.first_offset = offset;
                    }
                }
            }
            MANIFEST => acks.manifests.push(id),
            _ => acks.releases.push(id as u32),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A producer context that counts the delivery reports it is given.
trait Reports: ProducerContext<DeliveryOpaque = usize> {
    fn reports(&self) -> u64;
}

impl Reports for SinkContext {
    fn reports(&self) -> u64 {
        self.reports.load(Relaxed)
    }
}

impl Reports for SnapshotContext {
    fn reports(&self) -> u64 {
        self.reports.load(Relaxed)
    }
}

/// Serves every delivery report queued for `producer`, without waiting.
///
/// rdkafka's `poll` with no timeout serves one event, and one event holds the reports of
/// one partition's batch of one produce request. Polled once per batch handed over (and
/// once per 250 ms tick while the input is idle), reports queued up faster than they
/// were served: after a burst the last acknowledgements reached the sink, and the
/// offsets their tickets hold were committed, seconds after the broker sent them.
/// Polling again while a poll serves a report empties the queue; a poll that serves
/// another event (statistics, an error) ends the loop early, and the next call goes on.
fn serve<C: Reports>(producer: &BaseProducer<C>) {
    loop {
        let before = producer.context().reports();
        producer.poll(Duration::ZERO);
        if producer.context().reports() == before {
            return;
        }
    }
}

/// A snapshot whose chunks are being written.
struct PendingSnapshot {
    start: SnapshotStart,
    /// The ticket of the batch that began it: its updates, and every one before, must
    /// be acknowledged before the snapshot is restorable.
    ticket: u64,
    chunks: u32,
    last: bool,
    crc: crc32fast::Hasher,
    bytes: u64,
    /// Whether its manifest is written (then waiting for its acknowledgement).
    declaring: bool,
}

/// A partition given up, on its way to its release message.
struct PendingRelease {
    released: Released,
    ticket: u64,
    /// Whether the release message is written (then waiting for its acknowledgement).
    sent: bool,
    /// Whether nothing is left to do (fenced, or no control topic to announce it on).
    done: bool,
    /// When the publisher took it over from the state machine.
    begun: Instant,
    /// From `begun` until its updates and snapshot were on the brokers.
    flushed: Duration,
    /// How long committing its offset took.
    committed: Duration,
}

impl PendingRelease {
    /// Marks it done and the partition unowned, unless it was taken back meanwhile,
    /// and logs how long each step took.
    fn finish(&mut self, metrics: &Metrics) {
        self.done = true;
        let r = &self.released;
        if let Some(stats) = metrics.partition(r.partition)
            && stats.state().0 == PartitionState::Releasing
        {
            stats.set_state(PartitionState::Unowned, r.epoch);
        }
        tracing::info!(
            partition = r.partition,
            epoch = r.epoch,
            next_offset = r.next_offset,
            fenced = r.fenced,
            flushed_ms = self.flushed.as_millis() as u64,
            commit_ms = self.committed.as_millis() as u64,
            total_ms = self.begun.elapsed().as_millis() as u64,
            "partition released"
        );
    }
}

/// The Kafka sink of the publisher thread.
pub struct KafkaSink {
    topics: Topics,
    out: Output,
    snapshots: BaseProducer<SnapshotContext>,
    pending: Vec<PendingSnapshot>,
    releases: Vec<PendingRelease>,
    /// Snapshots declared restorable that a pending release waits for.
    declared: Vec<u64>,
    /// Manifests to write, gathered under the snapshot producer's report lock.
    to_declare: Vec<Manifest>,
    /// Reused buffer for manifests and release messages.
    json: Vec<u8>,
    /// Snapshot ids and partitions acknowledged, swapped with the report lock's lists
    /// so that both keep their capacity.
    acked_manifests: Vec<u64>,
    acked_releases: Vec<u32>,
    /// With the `batch` framing: the NDJSON not yet sent, per input partition, and the
    /// partitions that have some. The buffers keep their capacity.
    lines: Vec<Vec<u8>>,
    lines_pending: Vec<u32>,
}

/// The update producer and everything the sink does with input offsets.
struct Output {
    producer: BaseProducer<SinkContext>,
    committer: BaseConsumer,
    input_topic: String,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    /// Id of the ticket being filled, and the records sent for it so far.
    ticket: u64,
    sent: i64,
    /// The first ticket not retired: every ticket before it is acknowledged. A copy of
    /// the reports' `Acks::first`, which only [`Output::advance`] moves.
    retired: u64,
    /// Next offset acknowledged and committed, per partition.
    acked: Vec<i64>,
    committed: Vec<i64>,
    last_commit: Instant,
    drain_timeout: Duration,
    failed: bool,
}

/// The clients the sink writes through.
pub struct Clients<'a> {
    /// The update producer's settings.
    pub producer: &'a rdkafka::ClientConfig,
    /// The snapshot producer's settings.
    pub snapshots: &'a rdkafka::ClientConfig,
    /// The committing consumer's settings.
    pub committer: &'a rdkafka::ClientConfig,
}

impl KafkaSink {
    /// A sink producing through `clients`; a failed delivery marks `health` broken and
    /// sets `stop`.
    pub fn new(
        clients: &Clients<'_>,
        client_health: &ClientHealth,
        topics: Topics,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        stop: Arc<AtomicBool>,
        drain_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let partitions = metrics.partitions.len();
        let acks = Acks {
            tickets: VecDeque::with_capacity(TICKETS_RESERVED),
            free: (0..TICKETS_RESERVED).map(|_| Vec::with_capacity(partitions)).collect(),
            partitions,
            ..Acks::default()
        };
        let context = SinkContext {
            health: client_health.clone(),
            acks: Mutex::new(acks),
            reports: AtomicU64::new(0),
        };
        let in_flight = SNAPSHOTS_RESERVED * partitions;
        let snapshot_acks = SnapshotAcks {
            chunks: Vec::with_capacity(in_flight),
            manifests: Vec::with_capacity(in_flight),
            releases: Vec::with_capacity(partitions),
            failed: None,
        };
        let snapshot_context = SnapshotContext {
            health: client_health.clone(),
            acks: Mutex::new(snapshot_acks),
            reports: AtomicU64::new(0),
        };
        let out = Output {
            producer: clients.producer.create_with_context(context)?,
            committer: clients.committer.create()?,
            input_topic: topics.input.clone(),
            metrics,
            health,
            stop,
            ticket: 0,
            sent: 0,
            retired: 0,
            acked: vec![-1; partitions],
            committed: vec![-1; partitions],
            last_commit: Instant::now(),
            drain_timeout,
            failed: false,
        };
        let lines = match topics.framing {
            OutputFraming::Entity => Vec::new(),
            OutputFraming::Batch => (0..partitions).map(|_| Vec::new()).collect(),
        };
        Ok(Self {
            snapshots: clients.snapshots.create_with_context(snapshot_context)?,
            topics,
            out,
            pending: Vec::with_capacity(in_flight),
            releases: Vec::with_capacity(partitions),
            declared: Vec::with_capacity(partitions),
            to_declare: Vec::with_capacity(in_flight),
            json: Vec::with_capacity(1024),
            acked_manifests: Vec::with_capacity(in_flight),
            acked_releases: Vec::with_capacity(partitions),
            lines,
            lines_pending: Vec::with_capacity(partitions),
        })
    }

    /// Whether a record could not be delivered, so the data plane stopped.
    pub fn failed(&self) -> bool {
        self.out.failed
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

    /// Acts on everything acknowledged: retires tickets (committing their offsets),
    /// declares snapshots, and moves releases on.
    fn advance(&mut self) {
        self.out.advance();
        let retired = self.out.retired;
        let mut manifests = std::mem::take(&mut self.acked_manifests);
        let mut released = std::mem::take(&mut self.acked_releases);
        manifests.clear();
        released.clear();
        let failure = {
            let mut acks = lock(&self.snapshots.context().acks);
            // Manifests of snapshots whose chunks and updates are all on the brokers.
            for p in &mut self.pending {
                if p.declaring || !p.last || p.ticket >= retired {
                    continue;
                }
                let Some(c) = acks.chunks.iter().find(|c| c.id == p.start.id) else { continue };
                if c.acked < p.chunks {
                    continue;
                }
                p.declaring = true;
                self.to_declare.push(Manifest {
                    id: p.start.id,
                    partition: p.start.partition,
                    next_offset: p.start.next_offset,
                    first_offset: c.first_offset,
                    chunks: p.chunks,
                    bytes: p.bytes,
                    crc32: p.crc.clone().finalize(),
                    created_ms: clock::unix_ms(),
                    epoch: p.start.epoch,
                });
            }
            let pending = &self.pending;
            acks.chunks.retain(|c| pending.iter().any(|p| p.start.id == c.id && !p.declaring));
            std::mem::swap(&mut acks.manifests, &mut manifests);
            std::mem::swap(&mut acks.releases, &mut released);
            acks.failed.take()
        };
        if let Some(failure) = failure {
            self.out.fail(&failure);
        }
        if self.out.failed {
            (self.acked_manifests, self.acked_releases) = (manifests, released);
            return;
        }
        let mut to_declare = std::mem::take(&mut self.to_declare);
        for manifest in to_declare.drain(..) {
            self.write_manifest(&manifest);
        }
        self.to_declare = to_declare;
        for &id in &manifests {
            let Some(i) = self.pending.iter().position(|p| p.start.id == id) else { continue };
            let p = self.pending.swap_remove(i);
            if let Some(stats) = self.out.metrics.partition(p.start.partition) {
                stats.snapshot.store(p.start.next_offset, Relaxed);
                stats.snapshot_unix_ms.store(clock::unix_ms(), Relaxed);
            }
            tracing::debug!(
                partition = p.start.partition,
                next_offset = p.start.next_offset,
                id,
                bytes = p.bytes,
                "snapshot restorable"
            );
            if self.releases.iter().any(|r| r.released.snapshot == Some(id)) {
                self.declared.push(id);
            }
        }
        self.release_ready();
        for &partition in &released {
            if let Some(r) = self.releases.iter_mut().find(|r| r.released.partition == partition) {
                r.finish(&self.out.metrics);
            }
        }
        self.releases.retain(|r| !r.done);
        (self.acked_manifests, self.acked_releases) = (manifests, released);
    }

    fn write_manifest(&mut self, manifest: &Manifest) {
        let Some(topic) = &self.topics.snapshots else { return };
        self.json.clear();
        serde_json::to_writer(&mut self.json, manifest).expect("a manifest serializes");
        let record = BaseRecord::with_opaque_to(topic, opaque(MANIFEST, manifest.id))
            .partition(manifest.partition as i32)
            .key(MANIFEST_KEY)
            .payload(&self.json[..]);
        send(&self.snapshots, record, &mut self.out);
    }

    /// Commits and announces every release whose batch and snapshot are on the brokers.
    fn release_ready(&mut self) {
        let retired = self.out.retired;
        let Self { topics, out, snapshots, releases, declared, json, .. } = self;
        for r in releases.iter_mut() {
            if r.sent || r.ticket >= retired {
                continue;
            }
            let released = r.released;
            let snapshot = released.snapshot.filter(|_| topics.snapshots.is_some());
            if snapshot.is_some_and(|id| !declared.contains(&id)) {
                continue;
            }
            declared.retain(|&id| Some(id) != snapshot);
            r.sent = true;
            r.flushed = r.begun.elapsed();
            if released.fenced {
                r.finish(&out.metrics);
                continue;
            }
            let commit = Instant::now();
            out.commit_release(released.partition, released.next_offset);
            r.committed = commit.elapsed();
            let Some((topic, pod)) = &topics.control else {
                r.finish(&out.metrics);
                continue;
            };
            let message = gameshard_control::Release {
                shard: topics.shard.clone(),
                partition: released.partition,
                epoch: released.epoch,
                pod: pod.clone(),
                next_offset: released.next_offset,
                snapshot,
                released_ms: clock::unix_ms(),
            };
            let key = gameshard_control::release_key(&topics.shard, released.partition);
            json.clear();
            serde_json::to_writer(&mut *json, &message).expect("a release serializes");
            let record =
                BaseRecord::with_opaque_to(topic, opaque(CONTROL, u64::from(released.partition)))
                    .partition(0)
                    .key(key.as_bytes())
                    .payload(&json[..]);
            send(snapshots, record, out);
        }
    }

    fn poll(&mut self) {
        serve(&self.out.producer);
        serve(&self.snapshots);
        self.advance();
    }
}

/// Sends one record through `producer`, waiting while its local queue is full: a full
/// queue is the back-pressure that slows the whole pipeline down to what the brokers
/// take. Serves the update producer's reports meanwhile too, so that neither waits on
/// the other.
fn send<C: Reports>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
    out: &mut Output,
) -> bool {
    loop {
        match producer.send(record) {
            Ok(()) => return true,
            Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                record = r;
                producer.poll(Duration::from_millis(1));
                serve(&out.producer);
                out.advance();
            }
            Err((e, r)) => {
                let reason = format!("cannot produce to {}: {e}", r.topic);
                out.fail(&reason);
                return false;
            }
        }
    }
}

impl Output {
    /// Sends one update-producer record, counting it into the current ticket; waits
    /// while the local queue is full, as [`send`] does.
    fn send(&mut self, mut record: BaseRecord<'_, [u8], [u8], usize>) {
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
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

    /// Whether closed tickets wait for acknowledgements, or acknowledged offsets for
    /// their commit: the publisher should then give the sink a chance to act soon, so
    /// that the last records of a burst are committed within milliseconds of their
    /// acknowledgement instead of at the next tick.
    fn waiting(&self) -> bool {
        !self.failed
            && (self.retired < self.ticket
                || self.acked.iter().zip(&self.committed).any(|(a, c)| a > c))
    }

    /// Closes the current ticket with `progress`.
    fn close(&mut self, progress: &[Progress]) {
        let (id, sent) = (self.ticket, self.sent);
        {
            let mut acks = lock(&self.producer.context().acks);
            let ticket = acks.ticket(id);
            ticket.remaining += sent;
            ticket.closed = true;
            ticket.progress.extend_from_slice(progress);
        }
        self.ticket += 1;
        self.sent = 0;
    }

    /// Retires completed tickets in order and commits their offsets (at most every
    /// [`COMMIT_EVERY`]).
    fn advance(&mut self) {
        let failure = {
            let acked = &mut self.acked;
            let mut acks = lock(&self.producer.context().acks);
            while acks.tickets.front().is_some_and(|t| t.closed && t.remaining == 0) {
                let Some(mut ticket) = acks.tickets.pop_front() else { break };
                acks.first += 1;
                for p in ticket.progress.drain(..) {
                    if let Some(a) = acked.get_mut(p.partition as usize) {
                        *a = (*a).max(p.next_offset);
                    }
                }
                acks.free.push(ticket.progress);
            }
            self.retired = acks.first;
            acks.failed.take()
        };
        if let Some(failure) = failure {
            self.fail(&failure);
        }
        if !self.failed && self.last_commit.elapsed() >= COMMIT_EVERY {
            self.commit(CommitMode::Async);
        }
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
        self.commit_list(&tpl, mode);
    }

    /// Commits `partition` at `next_offset` now, before its release is announced.
    fn commit_release(&mut self, partition: u32, next_offset: i64) {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(
            &self.input_topic,
            partition as i32,
            Offset::Offset(next_offset),
        );
        self.commit_list(&tpl, CommitMode::Sync);
    }

    fn commit_list(&mut self, tpl: &TopicPartitionList, mode: CommitMode) {
        if tpl.count() == 0 {
            return;
        }
        match self.committer.commit(tpl, mode) {
            Ok(()) => {
                for e in tpl.elements() {
                    let (p, Offset::Offset(offset)) = (e.partition() as usize, e.offset()) else {
                        continue;
                    };
                    if let Some(c) = self.committed.get_mut(p) {
                        *c = (*c).max(offset);
                    }
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
        let (mut partition, mut offset) = (itoa::Buffer::new(), itoa::Buffer::new());
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header { key: "gameshard-error", value: Some(reason) })
            .insert(Header {
                key: "gameshard-src-partition",
                value: Some(partition.format(src.partition)),
            })
            .insert(Header { key: "gameshard-src-offset", value: Some(offset.format(src.offset)) });
        let record = BaseRecord::with_opaque_to(topic, opaque(BATCH, self.out.ticket))
            .partition(src.partition as i32)
            .payload(payload)
            .headers(headers);
        self.out.send(record);
    }

    fn snapshot_started(&mut self, start: &SnapshotStart) {
        if self.topics.snapshots.is_none() {
            return;
        }
        lock(&self.snapshots.context().acks).chunks.push(ChunkAcks {
            id: start.id,
            acked: 0,
            first_offset: -1,
        });
        self.pending.push(PendingSnapshot {
            start: *start,
            ticket: self.out.ticket,
            chunks: 0,
            last: false,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            declaring: false,
        });
    }

    fn snapshot_chunk(&mut self, chunk: &Chunk) {
        let Some(topic) = &self.topics.snapshots else { return };
        let Some(i) = self.pending.iter().position(|p| p.start.id == chunk.id) else { return };
        if chunk.end == ChunkEnd::Abandoned {
            // Its chunks stay on the topic without a manifest: restores pass them over.
            self.pending.swap_remove(i);
            return;
        }
        let (mut id, mut index) = (itoa::Buffer::new(), itoa::Buffer::new());
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: ID_HEADER, value: Some(id.format(chunk.id)) })
            .insert(Header { key: CHUNK_HEADER, value: Some(index.format(chunk.index)) });
        let record = BaseRecord::with_opaque_to(topic, opaque(CHUNK, chunk.id))
            .partition(chunk.partition as i32)
            .key(CHUNK_KEY)
            .payload(&chunk.bytes[..])
            .headers(headers);
        if !send(&self.snapshots, record, &mut self.out) {
            return;
        }
        let p = &mut self.pending[i];
        p.chunks += 1;
        p.crc.update(&chunk.bytes);
        p.bytes += chunk.bytes.len() as u64;
        p.last = chunk.end == ChunkEnd::Last;
        self.poll();
    }

    fn released(&mut self, released: &Released) {
        self.releases.push(PendingRelease {
            released: *released,
            ticket: self.out.ticket,
            sent: false,
            done: false,
            begun: Instant::now(),
            flushed: Duration::ZERO,
            committed: Duration::ZERO,
        });
    }

    fn end_batch(&mut self, progress: &[Progress], _now_ns: u64) {
        // A batch's updates leave in its own records, so its ticket counts them.
        let mut pending = std::mem::take(&mut self.lines_pending);
        for &partition in &pending {
            self.send_lines(partition);
        }
        pending.clear();
        self.lines_pending = pending;
        self.out.close(progress);
        self.poll();
    }

    fn busy(&self) -> bool {
        !self.pending.is_empty() || !self.releases.is_empty() || self.out.waiting()
    }

    fn idle(&mut self) {
        self.poll();
    }

    fn finish(&mut self) {
        let deadline = Instant::now() + self.out.drain_timeout;
        loop {
            self.out.producer.poll(Duration::from_millis(10));
            self.snapshots.poll(Duration::from_millis(10));
            self.advance();
            let idle = lock(&self.out.producer.context().acks).tickets.is_empty()
                && self.pending.is_empty()
                && self.releases.is_empty();
            if idle || self.out.failed {
                break;
            }
            if Instant::now() > deadline {
                let reason = format!(
                    "drain timed out after {} s with records unacknowledged",
                    self.out.drain_timeout.as_secs()
                );
                self.out.fail(&reason);
                break;
            }
        }
        self.out.commit(CommitMode::Sync);
        let _ = self.out.producer.flush(Duration::from_secs(1));
        let _ = self.snapshots.flush(Duration::from_secs(1));
        let _ = std::io::stderr().flush();
    }
}
