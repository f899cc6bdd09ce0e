//! A hot zone for end-to-end tests: the zone's topics on a broker (the test binary's
//! shared one unless the test brings its own), and checks of what the data plane
//! published.
//!
//! Every topic is named after the zone (`<zone>.events`, ...) and the zone is the
//! shard name (the data plane's consumer group), so zones of different tests on one
//! broker never meet.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;

use super::broker::Broker;
use super::dataplane::Dataplane;
use super::kafka::{self, Outgoing};
use crate::verify;

/// A temporary folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty folder named after `name`.
    pub fn new(name: &str) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "gameshard-{name}-{}-{}",
            std::process::id(),
            super::broker::free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How often each malformed unit must be on the dead-letter topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetters {
    /// Once: no crash happened.
    ExactlyOnce,
    /// At least once: a crash may have republished some.
    AtLeastOnce,
}

/// The output framing the data plane is started with (SPEC section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One record per entity update (the default).
    Entity,
    /// NDJSON of many updates of one partition per record.
    Batch,
}

impl Framing {
    /// Both framings, for tests that check the output with each.
    pub const ALL: [Framing; 2] = [Framing::Entity, Framing::Batch];

    /// The `--output-framing` value.
    pub fn flag(self) -> &'static str {
        match self {
            Framing::Entity => "entity",
            Framing::Batch => "batch",
        }
    }
}

/// A zone: its topics on a broker.
pub struct Zone {
    name: String,
    bootstrap: String,
    broker_log: String,
    /// Input partitions.
    pub partitions: i32,
    framing: Framing,
}

/// The input topic's suffix.
pub const EVENTS: &str = "events";
/// The output topic's suffix.
pub const UPDATES: &str = "updates";
/// The dead-letter topic's suffix.
pub const DEAD: &str = "dead";
/// The snapshot topic's suffix.
pub const SNAPSHOTS: &str = "snapshots";

impl Zone {
    /// Creates the zone's topics on the test binary's shared broker, or returns `None`
    /// (saying why) when Kafka is not installed. `name` must be unique in the binary.
    pub fn start(name: &str, partitions: i32) -> anyhow::Result<Option<Self>> {
        let Some(broker) = Broker::shared()? else { return Ok(None) };
        Self::on(broker, name, partitions).map(Some)
    }

    /// Creates the zone's topics on `broker`.
    pub fn on(broker: &Broker, name: &str, partitions: i32) -> anyhow::Result<Self> {
        let zone = Self {
            name: name.to_owned(),
            bootstrap: broker.bootstrap(),
            broker_log: broker.log(),
            partitions,
            framing: Framing::Entity,
        };
        let topics = [EVENTS, UPDATES, DEAD, SNAPSHOTS].map(|t| zone.topic(t));
        let specs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), partitions)).collect();
        kafka::create_topics(&zone.bootstrap, &specs).map_err(|e| zone.noted(&e))?;
        Ok(zone)
    }

    /// Starts its data planes with `framing` from now on.
    #[must_use]
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The zone's name: the shard name, and the prefix of its topics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone's topic with `suffix` ([`EVENTS`], [`UPDATES`], [`DEAD`], [`SNAPSHOTS`],
    /// or any other the test creates).
    pub fn topic(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.name)
    }

    /// The bootstrap address.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// The broker's log file.
    pub fn broker_log(&self) -> &str {
        &self.broker_log
    }

    /// `e` with the broker's log file named, for failure messages.
    pub fn noted(&self, e: &anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!("{e:#}\n(broker log: {})", self.broker_log)
    }

    /// The data plane's command line for every partition of the zone, plus `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        self.args_via(&self.bootstrap, extra)
    }

    /// The same, with another bootstrap address of the broker (its `SASL_SSL` listener).
    pub fn args_via(&self, bootstrap: &str, extra: &[&str]) -> Vec<String> {
        let all = format!("0-{}", self.partitions - 1);
        let mut v: Vec<String> = vec![
            "--brokers".into(),
            bootstrap.to_owned(),
            "--shard".into(),
            self.name.clone(),
            "--input-topic".into(),
            self.topic(EVENTS),
            "--output-topic".into(),
            self.topic(UPDATES),
            "--dlq-topic".into(),
            self.topic(DEAD),
            "--snapshot-topic".into(),
            self.topic(SNAPSHOTS),
            "--partitions".into(),
            all,
        ];
        if self.framing != Framing::Entity {
            v.extend(["--output-framing".into(), self.framing.flag().into()]);
        }
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    }

    /// Starts a data plane on every partition of the zone.
    pub fn dataplane(&self, extra: &[&str]) -> anyhow::Result<Dataplane> {
        self.start_dataplane(&self.args(extra))
    }

    /// Starts a data plane with `args`, naming the broker's log in its failures.
    pub fn start_dataplane(&self, args: &[String]) -> anyhow::Result<Dataplane> {
        Ok(Dataplane::start(args)?.with_broker_log(&self.broker_log))
    }

    /// Produces `records` (partition, value) to the input topic and waits for them.
    pub fn produce(&self, records: &[(i32, Vec<u8>)]) -> anyhow::Result<()> {
        let w = kafka::Writer::new(&self.bootstrap())?;
        let out: Vec<Outgoing<'_>> = records.iter().map(|(p, v)| Outgoing::value(*p, v)).collect();
        w.send(&self.topic(EVENTS), &out)?;
        w.flush().map_err(|e| self.noted(&e))
    }

    /// The input topic's high watermarks, as (partition, offset) targets.
    pub fn ends(&self) -> anyhow::Result<Vec<(u32, i64)>> {
        let hw = kafka::high_watermarks(&self.bootstrap(), &self.topic(EVENTS), self.partitions)
            .map_err(|e| self.noted(&e))?;
        Ok(hw.into_iter().enumerate().map(|(p, o)| (p as u32, o)).collect())
    }

    /// Reads a topic of the zone (by suffix) from the start to its end now.
    pub fn read(&self, suffix: &str) -> anyhow::Result<Vec<kafka::Incoming>> {
        kafka::read_all(&self.bootstrap(), &self.topic(suffix), self.partitions)
            .map_err(|e| self.noted(&e))
    }

    /// Waits until `dp` has committed the whole input topic.
    pub fn wait_caught_up(&self, dp: &mut Dataplane, timeout: Duration) -> anyhow::Result<()> {
        dp.wait_committed(&self.ends()?, timeout)
    }

    /// Checks the output topic against the reference model applied to the input topic,
    /// and the dead-letter topic against the input's malformed units.
    pub fn check(&self, dead_letters: DeadLetters) -> anyhow::Result<()> {
        self.compare(dead_letters).map_err(|e| self.noted(&e))
    }

    /// Checks the output and dead-letter topics against the reference model applied to
    /// `input` instead of the whole input topic: the records the data plane's state
    /// holds when some were deleted before it read them.
    pub fn check_input(
        &self,
        input: &[kafka::Incoming],
        dead_letters: DeadLetters,
    ) -> anyhow::Result<()> {
        self.compare_with(input, dead_letters).map_err(|e| self.noted(&e))
    }

    fn compare(&self, dead_letters: DeadLetters) -> anyhow::Result<()> {
        self.compare_with(&self.read(EVENTS)?, dead_letters)
    }

    fn compare_with(
        &self,
        input: &[kafka::Incoming],
        dead_letters: DeadLetters,
    ) -> anyhow::Result<()> {
        let got = verify::fold(&self.read(UPDATES)?)?;
        let want = verify::expected(input);
        for (key, value) in &want {
            ensure!(
                got.get(key) == Some(value),
                "entity {key:?}: published {:?}, expected {value}",
                got.get(key)
            );
        }
        ensure!(
            got.len() == want.len(),
            "{} entities published, {} expected",
            got.len(),
            want.len()
        );
        let mut dead = verify::dead_letters(&self.read(DEAD)?)?;
        let want_dead = verify::expected_dead_letters(input);
        if dead_letters == DeadLetters::AtLeastOnce {
            dead.dedup();
        }
        ensure!(
            dead == want_dead,
            "dead letters differ: {} published, {} expected",
            dead.len(),
            want_dead.len()
        );
        Ok(())
    }
}
