//! The IO thread's side of Kafka: one consumer whose partitions are added and removed
//! one at a time (`incremental_assign`, no consumer-group rebalancing), as the
//! ownership thread says, and polled.
//!
//! The consumer resets no offset by itself (`auto.offset.reset=error`): a partition
//! whose next record retention already deleted is reported, counted and moved on to the
//! earliest record left, never skipped silently.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, Timestamp};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::ClientHealth;
use super::ownership::Command;
use crate::clock;
use crate::metrics::Metrics;
use crate::source::{Acquisition, Polled, Record, Source};

/// How long the IO thread waits for the brokers when it checks a partition's offsets.
const OFFSETS_TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer the IO thread polls.
pub struct KafkaSource<W> {
    consumer: BaseConsumer<ClientHealth>,
    topic: String,
    commands: Receiver<Command<W>>,
    /// A partition to take whose assignment failed, tried again at the next poll.
    retry: Option<Acquisition<W>>,
    /// Per partition: the offset after the last record read, while owned.
    next: Vec<Option<i64>>,
    metrics: Arc<Metrics>,
    /// The current record's value, copied out of librdkafka's buffer.
    payload: Vec<u8>,
    epoch: Instant,
    errors_logged: Instant,
}

impl<W> KafkaSource<W> {
    /// A consumer of `topic` owning no partition yet; `commands` brings them.
    pub fn new(
        config: &ClientConfig,
        context: ClientHealth,
        topic: &str,
        commands: Receiver<Command<W>>,
        epoch: Instant,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaError> {
        let consumer: BaseConsumer<ClientHealth> = config.create_with_context(context)?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            commands,
            retry: None,
            next: vec![None; metrics.partitions.len()],
            metrics,
            payload: Vec::with_capacity(64 * 1024),
            epoch,
            errors_logged: Instant::now()
                .checked_sub(Duration::from_mins(1))
                .unwrap_or_else(Instant::now),
        })
    }

    fn partition_list(&self, partition: u32, offset: Option<i64>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let offset = offset.map_or(Offset::Invalid, Offset::Offset);
        // A partition number of the topic's metadata always fits.
        let _ = tpl.add_partition_offset(&self.topic, partition as i32, offset);
        tpl
    }

    /// Adds `a`'s partition to the consumer at its offset.
    fn own(&mut self, a: Acquisition<W>) -> Option<Acquisition<W>> {
        let tpl = self.partition_list(a.partition, Some(a.next_offset));
        match self.consumer.incremental_assign(&tpl) {
            Ok(()) => {
                if let Some(next) = self.next.get_mut(a.partition as usize) {
                    *next = Some(a.next_offset);
                }
                Some(a)
            }
            Err(error) => {
                tracing::warn!(partition = a.partition, %error, "cannot assign the partition; retrying");
                self.retry = Some(a);
                None
            }
        }
    }

    fn release(&mut self, partition: u32) {
        let tpl = self.partition_list(partition, None);
        if let Err(error) = self.consumer.incremental_unassign(&tpl) {
            tracing::error!(partition, %error, "cannot unassign the partition");
        }
        if let Some(next) = self.next.get_mut(partition as usize) {
            *next = None;
        }
    }

    /// A partition's next record is gone (deleted by retention) or past the end (the
    /// log was truncated): finds which, counts what was lost, and resumes at the
    /// nearest record there is.
    fn reposition(&mut self) {
        for partition in 0..self.next.len() as u32 {
            let Some(next) = self.next[partition as usize] else { continue };
            let (low, high) = match self.consumer.fetch_watermarks(
                &self.topic,
                partition as i32,
                OFFSETS_TIMEOUT,
            ) {
                Ok(w) => w,
                Err(error) => {
                    tracing::warn!(partition, %error, "cannot read the partition's offsets");
                    continue;
                }
            };
            let resume = if next < low {
                let missing = low - next;
                tracing::error!(
                    partition,
                    from = next,
                    to = low,
                    missing,
                    "input records were deleted by retention before they were processed: the partition's state lacks their events"
                );
                if let Some(stats) = self.metrics.partition(partition) {
                    stats.gap_records.fetch_add(missing as u64, Relaxed);
                }
                low
            } else if next > high {
                tracing::error!(
                    partition,
                    next,
                    high,
                    "the input partition ends before records already processed (its log was truncated); resuming at its end"
                );
                high
            } else {
                continue;
            };
            self.next[partition as usize] = Some(resume);
            if let Err(error) = self.consumer.seek(
                &self.topic,
                partition as i32,
                Offset::Offset(resume),
                OFFSETS_TIMEOUT,
            ) {
                tracing::error!(partition, %error, "cannot move the partition to its earliest record");
            }
        }
    }
}

impl<W: Send + 'static> Source<W> for KafkaSource<W> {
    fn poll(&mut self, wait: Duration) -> Polled<'_, W> {
        if let Some(a) = self.retry.take()
            && let Some(a) = self.own(a)
        {
            return Polled::Assign(a);
        }
        match self.commands.try_recv() {
            Ok(Command::Own(a)) => {
                return match self.own(a) {
                    Some(a) => Polled::Assign(a),
                    None => Polled::Idle,
                };
            }
            Ok(Command::Release { partition, epoch, fenced }) => {
                self.release(partition);
                return Polled::Revoke { partition, epoch, fenced };
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
        match self.consumer.poll(wait) {
            None => Polled::Idle,
            Some(Ok(m)) => {
                let arrival_ns = self.epoch.elapsed().as_nanos() as u64;
                let timestamp_ms = match m.timestamp() {
                    Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => ms,
                    Timestamp::NotAvailable => clock::unix_ms(),
                };
                self.payload.clear();
                self.payload.extend_from_slice(m.payload().unwrap_or_default());
                let meta = gameshard_engine::RecordMeta {
                    partition: m.partition() as u32,
                    offset: m.offset(),
                    timestamp_ms,
                    arrival_ns,
                };
                if let Some(next) = self.next.get_mut(meta.partition as usize)
                    && next.is_some()
                {
                    *next = Some(meta.offset + 1);
                }
                Polled::Record(Record { meta, payload: &self.payload })
            }
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                self.reposition();
                Polled::Idle
            }
            Some(Err(error)) => {
                if self.errors_logged.elapsed() > Duration::from_secs(5) {
                    self.errors_logged = Instant::now();
                    tracing::warn!(%error, "consumer error; retrying");
                }
                Polled::Idle
            }
        }
    }
}
