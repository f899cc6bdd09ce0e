//! A shard's control topic as a test sees it: a reader that keeps every message in
//! topic order with its record timestamp, and the checks of how partitions moved that
//! the tests of scaling make on it (one at a time, each move acknowledged by its new
//! owner before the next begins, a pod emptied before it goes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use gameshard_control::{Assignment, Message, Move};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::kafka;

/// A control-topic message with the timestamp (Unix ms) of its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// The record's timestamp, set by its writer.
    pub at_ms: i64,
    /// The message.
    pub message: Message,
}

/// Follows the control topic on a thread of its own from its first record, keeping the
/// messages of one shard; stops when dropped.
pub struct ControlTopic {
    messages: Arc<Mutex<Vec<Stamped>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlTopic {
    /// Follows `topic` on `bootstrap` for the messages of `shard`. The topic need not
    /// exist yet (the operator creates it): the reader waits for it.
    pub fn follow(bootstrap: &str, topic: &str, shard: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = kafka::config(bootstrap)
            .set("group.id", format!("gameshard-test-control-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            consumer,
            topic: topic.to_owned(),
            shard: shard.to_owned(),
            messages: Arc::clone(&messages),
            errors: Arc::clone(&errors),
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name(format!("control-{topic}"))
            .spawn(move || reader.run())?;
        Ok(Self { messages, errors, stop, thread: Some(thread) })
    }

    /// The shard's messages so far, in topic order.
    pub fn messages(&self) -> Vec<Stamped> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The shard's latest assignment so far.
    pub fn latest(&self) -> Option<Assignment> {
        assignments(&self.messages()).last().map(|&(_, a)| a.clone())
    }

    /// What went wrong reading (the reader retries), for a failing test to show.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for ControlTopic {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Reader {
    consumer: BaseConsumer,
    topic: String,
    shard: String,
    messages: Arc<Mutex<Vec<Stamped>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(self) {
        // The operator creates the topic when it first reconciles the shard.
        while !self.stop.load(Relaxed) {
            let exists = self
                .consumer
                .fetch_metadata(Some(&self.topic), Duration::from_secs(2))
                .is_ok_and(|md| md.topics().first().is_some_and(|t| !t.partitions().is_empty()));
            if exists {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut tpl = TopicPartitionList::new();
        if let Err(e) = tpl
            .add_partition_offset(&self.topic, 0, Offset::Beginning)
            .and_then(|()| self.consumer.assign(&tpl))
        {
            self.error(format!("assigning {}: {e}", self.topic));
            return;
        }
        while !self.stop.load(Relaxed) {
            let Some(record) = self.consumer.poll(Duration::from_millis(100)) else { continue };
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    self.error(format!("reading {}: {e}", self.topic));
                    continue;
                }
            };
            let (Some(key), Some(value)) = (record.key(), record.payload()) else { continue };
            match Message::decode(key, value) {
                Ok(Some(message)) if message.shard() == self.shard => {
                    let at_ms = record.timestamp().to_millis().unwrap_or(0);
                    self.messages
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Stamped { at_ms, message });
                }
                Ok(_) => {}
                Err(e) => self.error(e.to_string()),
            }
        }
    }

    fn error(&self, message: String) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if errors.len() < 100 {
            errors.push(message);
        }
    }
}

/// The assignments among `messages`, in topic order, with their timestamps.
pub fn assignments(messages: &[Stamped]) -> Vec<(i64, &Assignment)> {
    messages
        .iter()
        .filter_map(|s| match &s.message {
            Message::Assignment(a) => Some((s.at_ms, a)),
            _ => None,
        })
        .collect()
}

/// Each partition's owner in `a`.
fn owners(a: &Assignment) -> BTreeMap<u32, &str> {
    a.pods.iter().flat_map(|p| p.partitions.iter().map(|&n| (n, p.pod.as_str()))).collect()
}

/// Checks that partitions moved one at a time: every assignment after the first
/// changes the owner of at most one partition, names that change as its move, and
/// begins it only once every earlier move was acknowledged on the topic by its new owner
/// (an `Acquired` of the move's epoch or later). Returns the moves, in order.
pub fn one_at_a_time(messages: &[Stamped]) -> Result<Vec<Move>, String> {
    let mut previous: Option<&Assignment> = None;
    let mut pending: Vec<Move> = Vec::new();
    let mut moves = Vec::new();
    for stamped in messages {
        match &stamped.message {
            Message::Acquired(acq) => {
                pending.retain(|m| {
                    !(m.partition == acq.partition && m.to == acq.pod && acq.epoch >= m.epoch)
                });
            }
            Message::Release(_) => {}
            Message::Assignment(a) => {
                if a.moves.len() > 1 {
                    return Err(format!(
                        "epoch {}: {} moves in flight: {:?}",
                        a.epoch,
                        a.moves.len(),
                        a.moves
                    ));
                }
                let Some(before) = previous else {
                    previous = Some(a);
                    continue;
                };
                if a.epoch <= before.epoch {
                    return Err(format!("epoch {} follows epoch {}", a.epoch, before.epoch));
                }
                let (old, new) = (owners(before), owners(a));
                let changed: Vec<u32> = new
                    .iter()
                    .filter(|(p, pod)| old.get(p) != Some(pod))
                    .map(|(p, _)| *p)
                    .collect();
                if changed.len() > 1 {
                    return Err(format!(
                        "epoch {} changes the owners of partitions {changed:?} at once: {:?} after {:?}",
                        a.epoch,
                        a.by_pod(),
                        before.by_pod()
                    ));
                }
                if let Some(&p) = changed.first() {
                    let named = a.moves.iter().any(|m| m.partition == p && m.to == new[&p]);
                    if !named {
                        return Err(format!(
                            "epoch {} gives partition {p} to {} without naming the move: {:?}",
                            a.epoch, new[&p], a.moves
                        ));
                    }
                    if let Some(open) = pending.first() {
                        return Err(format!(
                            "epoch {} moves partition {p} while partition {} is not yet acquired by {}",
                            a.epoch, open.partition, open.to
                        ));
                    }
                    let m = a.moves.iter().find(|m| m.partition == p).expect("named above");
                    pending.push(m.clone());
                    moves.push(m.clone());
                }
                if new.len() != old.len() {
                    return Err(format!(
                        "epoch {} owns {} partitions, epoch {} owned {}",
                        a.epoch,
                        new.len(),
                        before.epoch,
                        old.len()
                    ));
                }
                previous = Some(a);
            }
        }
    }
    Ok(moves)
}

/// When `pod` last became free: the timestamp of the message after which the latest
/// assignment gives it no partition and every move away from it was acquired by its new
/// owner; `None` while it holds or hands over a partition (or never appeared).
pub fn freed_at(messages: &[Stamped], pod: &str) -> Option<i64> {
    let mut current: Option<&Assignment> = None;
    let mut acquired: BTreeMap<u32, (u64, &str)> = BTreeMap::new();
    let mut freed = None;
    let mut appeared = false;
    for stamped in messages {
        match &stamped.message {
            Message::Assignment(a) => current = Some(a),
            Message::Acquired(acq) => {
                acquired.insert(acq.partition, (acq.epoch, acq.pod.as_str()));
            }
            Message::Release(_) => continue,
        }
        let Some(a) = current else { continue };
        let holds = !a.partitions_of(pod).is_empty();
        appeared |= holds;
        let handing_over = a.moves.iter().any(|m| {
            m.from == pod
                && !acquired.get(&m.partition).is_some_and(|(e, to)| *e >= m.epoch && *to == m.to)
        });
        if holds || handing_over {
            freed = None;
        } else if appeared && freed.is_none() {
            freed = Some(stamped.at_ms);
        }
    }
    freed
}
