//! The ownership thread: decides which partitions the data plane holds, restores the
//! ones it takes, and tells the IO thread.
//!
//! Standalone (`--partitions`), it restores the listed partitions once. Following the
//! operator (`--control-topic`, `--pod-id`), it reads the control topic from its start,
//! then follows it ([`gameshard_control`] describes the messages): when the latest
//! assignment takes a partition away, it asks the pipeline to give it up (the sink
//! writes the release once the partition's last snapshot and commit are on the
//! brokers); when it gives one, it waits for the former owner's release (at most the
//! handoff timeout: a former owner that crashed never writes one), restores the
//! partition from its latest snapshot, hands it to the IO thread and writes that it
//! acquired it. Restores run here, one at a time, so that deserializing a large world
//! never stalls the partitions being served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gameshard_control::{Acquired, DecodeError, Message, Move, ShardLog};
use gameshard_engine::Game;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::restore::{Restorer, Take};
use crate::admin::Health;
use crate::clock;
use crate::metrics::{Metrics, PartitionState};
use crate::source::Acquisition;

/// How long a failed restore waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What the ownership thread tells the IO thread.
#[derive(Debug)]
pub enum Command<W> {
    /// Take a restored partition.
    Own(Acquisition<W>),
    /// Give a partition up under the epoch of the move that takes it away; a `fenced`
    /// one is dropped without a snapshot, since a newer owner already serves it.
    Release {
        /// The partition.
        partition: u32,
        /// The move's epoch.
        epoch: u64,
        /// Whether a newer owner already serves it.
        fenced: bool,
    },
}

/// Which partitions to hold.
#[derive(Clone, Debug)]
pub enum Mode {
    /// These, for good.
    Standalone(Vec<u32>),
    /// Whatever the operator's assignment on the control topic gives the pod.
    Controlled(Controlled),
}

/// Following the operator's assignment.
#[derive(Clone, Debug)]
pub struct Controlled {
    /// The control topic.
    pub topic: String,
    /// The shard.
    pub shard: String,
    /// This pod's name in the assignment.
    pub pod: String,
    /// Settings of the control topic's reader.
    pub reader: ClientConfig,
    /// Settings of the producer of acquisition messages.
    pub producer: ClientConfig,
    /// Longest wait for a former owner's release before restoring without it.
    pub handoff_timeout: Duration,
}

/// What the ownership thread reports to and through.
pub struct Reporting {
    /// The pipeline's metrics (partition states).
    pub metrics: Arc<Metrics>,
    /// Readiness: set once the first partitions are held.
    pub health: Arc<Health>,
    /// Set once the first partitions are held, for the clients' readiness.
    pub started: Arc<AtomicBool>,
    /// Stops the thread.
    pub stop: Arc<AtomicBool>,
}

/// Why the ownership thread stopped.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// A client could not be created.
    #[error("--control-topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The thread could not be spawned.
    #[error("cannot spawn the ownership thread: {0}")]
    Spawn(std::io::Error),
}

/// Starts the ownership thread.
pub fn spawn<G: Game + Clone>(
    mode: Mode,
    restorer: Restorer<G>,
    commands: Sender<Command<G::World>>,
    reporting: Reporting,
) -> Result<JoinHandle<()>, OwnershipError> {
    let run: Box<dyn FnOnce() + Send> = match mode {
        Mode::Standalone(partitions) => {
            Box::new(move || standalone(&partitions, &restorer, &commands, &reporting))
        }
        Mode::Controlled(c) => {
            let mut follower = Follower::new(c, restorer, commands, reporting)?;
            Box::new(move || follower.run())
        }
    };
    std::thread::Builder::new()
        .name("gs-ownership".into())
        .spawn(run)
        .map_err(OwnershipError::Spawn)
}

fn standalone<G: Game>(
    partitions: &[u32],
    restorer: &Restorer<G>,
    commands: &Sender<Command<G::World>>,
    reporting: &Reporting,
) {
    for &partition in partitions {
        loop {
            if reporting.stop.load(Relaxed) {
                return;
            }
            match restorer.take(Take { partition, min_epoch: 0, epoch: 0, released_ms: None }) {
                Ok(acquisition) => {
                    if commands.send(Command::Own(acquisition)).is_err() {
                        return;
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "cannot restore the partition; retrying");
                    reporting
                        .health
                        .set_not_ready(&format!("restoring partition {partition}: {error}"));
                    std::thread::sleep(RETRY);
                }
            }
        }
    }
    started(reporting);
}

fn started(reporting: &Reporting) {
    reporting.started.store(true, Relaxed);
    reporting.health.set_ready();
}

/// A partition this pod holds.
struct Held {
    /// The epoch it was taken under.
    epoch: u64,
    /// The epoch of the move taking it away, once given up.
    releasing: Option<u64>,
}

/// A partition this pod is to take.
struct Waiting {
    /// The move bringing it, if it comes from another pod.
    from: Option<Move>,
    since: Instant,
    next_try: Instant,
    warned: bool,
}

struct Follower<G: Game> {
    c: Controlled,
    restorer: Restorer<G>,
    commands: Sender<Command<G::World>>,
    reporting: Reporting,
    consumer: BaseConsumer,
    producer: BaseProducer,
    log: ShardLog,
    held: BTreeMap<u32, Held>,
    waiting: BTreeMap<u32, Waiting>,
    /// The partitions of the first assignment, until all are held.
    first: Option<Vec<u32>>,
}

impl<G: Game> Follower<G> {
    fn new(
        c: Controlled,
        restorer: Restorer<G>,
        commands: Sender<Command<G::World>>,
        reporting: Reporting,
    ) -> Result<Self, OwnershipError> {
        let consumer: BaseConsumer = c.reader.create()?;
        let producer: BaseProducer = c.producer.create()?;
        Ok(Self {
            c,
            restorer,
            commands,
            reporting,
            consumer,
            producer,
            log: ShardLog::default(),
            held: BTreeMap::new(),
            waiting: BTreeMap::new(),
            first: None,
        })
    }

    fn run(&mut self) {
        let health = Arc::clone(&self.reporting.health);
        health.set_not_ready("reading the partition assignment");
        // The topic's whole history first: acting on an older assignment would move
        // partitions back and forth.
        let end = loop {
            if self.reporting.stop.load(Relaxed) {
                return;
            }
            match self.start() {
                Ok(end) => break end,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the control topic; retrying");
                    health.set_not_ready(&format!("reading --control-topic: {error}"));
                    std::thread::sleep(RETRY);
                }
            }
        };
        let mut caught_up = end == 0;
        // Whether the last poll returned a record: the records already fetched are read
        // without waiting, and the assignment is acted on as soon as none is left, not
        // after a whole idle wait (which added up to 100 ms to every handoff).
        let mut reading = false;
        while !self.reporting.stop.load(Relaxed) {
            let wait = match (reading, self.waiting.is_empty()) {
                (true, _) => Duration::ZERO,
                (false, true) => Duration::from_millis(100),
                (false, false) => Duration::from_millis(10),
            };
            reading = false;
            if let Some(message) = self.consumer.poll(wait) {
                reading = true;
                match message {
                    Ok(m) => {
                        caught_up |= m.offset() + 1 >= end;
                        let decoded = Message::decode(
                            m.key().unwrap_or_default(),
                            m.payload().unwrap_or_default(),
                        );
                        self.read(m.offset(), decoded);
                    }
                    Err(error) => tracing::warn!(%error, "reading the control topic; retrying"),
                }
                continue;
            }
            if caught_up {
                self.reconcile();
            }
            self.producer.poll(Duration::ZERO);
        }
    }

    /// Folds one control-topic record into the log.
    fn read(&mut self, offset: i64, decoded: Result<Option<Message>, DecodeError>) {
        match decoded {
            Ok(Some(message)) => {
                self.log.apply(&self.c.shard, message);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(offset, %error, "skipping an unreadable control-topic record");
            }
        }
    }

    /// Assigns the reader to the control topic's start; returns the offset its end was
    /// at then.
    fn start(&self) -> Result<i64, rdkafka::error::KafkaError> {
        let (low, high) =
            self.consumer.fetch_watermarks(&self.c.topic, 0, Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.c.topic, 0, Offset::Offset(low))?;
        self.consumer.assign(&tpl)?;
        Ok(if high > low { high } else { 0 })
    }

    /// Brings what this pod holds in line with the latest assignment: gives up what it
    /// lost, takes (at most one per call) what it gained.
    fn reconcile(&mut self) {
        let Some(a) = self.log.assignment.clone() else {
            self.reporting.health.set_not_ready("waiting for the operator's partition assignment");
            return;
        };
        let pod = self.c.pod.clone();
        let metrics = Arc::clone(&self.reporting.metrics);
        self.reporting.health.epoch.store(a.epoch, Relaxed);
        let mine = a.partitions_of(&pod);
        if self.first.is_none() {
            tracing::info!(epoch = a.epoch, partitions = ?mine, "following the operator's assignment");
            self.first = Some(mine.clone());
        }

        for (&partition, held) in &mut self.held {
            if held.releasing.is_some() || mine.contains(&partition) {
                continue;
            }
            let epoch = a.move_of(partition).map_or(a.epoch, |m| m.epoch);
            let fenced = self.log.fenced(partition, &pod, held.epoch);
            tracing::info!(partition, epoch, fenced, "the assignment takes this partition away");
            if self.commands.send(Command::Release { partition, epoch, fenced }).is_err() {
                return;
            }
            held.releasing = Some(epoch);
        }
        // Released once our own release is on the topic (or at once when fenced: there
        // is nothing to announce).
        let log = &self.log;
        self.held.retain(|&partition, held| match held.releasing {
            Some(epoch) => {
                !(log.fenced(partition, &pod, held.epoch)
                    || log
                        .releases
                        .get(&partition)
                        .is_some_and(|r| r.pod == pod && r.epoch >= epoch))
            }
            None => true,
        });

        let now = Instant::now();
        for &partition in &mine {
            if self.held.contains_key(&partition) || self.waiting.contains_key(&partition) {
                continue;
            }
            let from = a.move_of(partition).filter(|m| m.to == pod && m.from != pod).cloned();
            metrics.partitions[partition as usize].set_state(PartitionState::Restoring, a.epoch);
            self.waiting
                .insert(partition, Waiting { from, since: now, next_try: now, warned: false });
        }
        self.waiting.retain(|partition, _| {
            let keep = mine.contains(partition);
            if !keep {
                metrics.partitions[*partition as usize].set_state(PartitionState::Unowned, a.epoch);
            }
            keep
        });

        let timeout = self.c.handoff_timeout;
        let ready = self.waiting.iter_mut().find_map(|(&partition, w)| {
            if now < w.next_try {
                return None;
            }
            let release = w.from.as_ref().and_then(|m| self.log.release_of(m));
            let timed_out = now.duration_since(w.since) >= timeout;
            if let Some(m) = &w.from
                && release.is_none()
            {
                if !timed_out {
                    return None;
                }
                if !w.warned {
                    w.warned = true;
                    tracing::warn!(
                        partition,
                        from = %m.from,
                        seconds = timeout.as_secs(),
                        "the former owner did not release the partition in time; restoring its latest snapshot"
                    );
                }
            }
            let min_epoch = w.from.as_ref().map_or(0, |m| m.epoch).max(
                self.log.acquired.get(&partition).map_or(0, |acquired| acquired.epoch),
            );
            Some(Take { partition, min_epoch, epoch: a.epoch, released_ms: release.map(|r| r.released_ms) })
        });
        if let Some(take) = ready {
            self.take(take);
        }

        if let Some(first) = &self.first
            && first.iter().all(|p| self.held.contains_key(p))
        {
            self.first = Some(Vec::new());
            if !self.reporting.started.load(Relaxed) {
                started(&self.reporting);
            }
        }
    }

    fn take(&mut self, take: Take) {
        let partition = take.partition;
        match self.restorer.take(take) {
            Ok(acquisition) => {
                let next_offset = acquisition.next_offset;
                if self.commands.send(Command::Own(acquisition)).is_err() {
                    return;
                }
                self.waiting.remove(&partition);
                self.held.insert(partition, Held { epoch: take.epoch, releasing: None });
                let message = Message::Acquired(Acquired {
                    shard: self.c.shard.clone(),
                    partition,
                    epoch: take.epoch,
                    pod: self.c.pod.clone(),
                    next_offset,
                    acquired_ms: clock::unix_ms(),
                });
                let (key, value) = (message.key(), message.value());
                let record = BaseRecord::<[u8], [u8]>::to(&self.c.topic)
                    .partition(0)
                    .key(key.as_bytes())
                    .payload(&value);
                if let Err((error, _)) = self.producer.send(record) {
                    tracing::warn!(partition, %error, "cannot announce the acquisition");
                }
                let _ = self.producer.flush(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::warn!(partition, %error, "cannot restore the partition; retrying");
                if let Some(w) = self.waiting.get_mut(&partition) {
                    w.next_try = Instant::now() + RETRY;
                }
            }
        }
    }
}
