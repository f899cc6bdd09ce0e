//! A hot zone for end-to-end tests: a tansu broker on a `SQLite` file (in a temporary
//! folder), the zone's topics, and checks of what the data plane published.
//!
//! tansu's in-memory engine is not used: in tansu 0.6 it acknowledges records that it
//! does not keep when several produce requests reach it together.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;

use super::broker::{Broker, Storage};
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

/// A zone: broker and topics.
pub struct Zone {
    /// The broker.
    pub broker: Broker,
    /// Input partitions.
    pub partitions: i32,
    _dir: TempDir,
}

/// Topic names of every test zone.
pub const EVENTS: &str = "events";
/// Updates topic.
pub const UPDATES: &str = "updates";
/// Dead-letter topic.
pub const DEAD: &str = "dead";
/// Snapshot topic.
pub const SNAPSHOTS: &str = "snapshots";

impl Zone {
    /// Starts a broker and creates the zone's topics, or returns `None` (saying why) when
    /// tansu is not installed.
    pub fn start(name: &str, partitions: i32) -> anyhow::Result<Option<Self>> {
        let dir = TempDir::new(name)?;
        let Some(broker) = Broker::start(Storage::Sqlite(dir.0.join("tansu.db")))? else {
            return Ok(None);
        };
        kafka::create_topics(
            &broker.bootstrap(),
            &[
                (EVENTS, partitions),
                (UPDATES, partitions),
                (DEAD, partitions),
                (SNAPSHOTS, partitions),
            ],
        )?;
        Ok(Some(Self { broker, partitions, _dir: dir }))
    }

    /// The bootstrap address.
    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    /// The data plane's command line for every partition of the zone, plus `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let bootstrap = self.bootstrap();
        let all = format!("0-{}", self.partitions - 1);
        let mut v: Vec<String> = [
            "--brokers",
            &bootstrap,
            "--shard",
            "zone-a",
            "--input-topic",
            EVENTS,
            "--output-topic",
            UPDATES,
            "--dlq-topic",
            DEAD,
            "--snapshot-topic",
            SNAPSHOTS,
            "--partitions",
            &all,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    }

    /// Starts a data plane on every partition of the zone.
    pub fn dataplane(&self, extra: &[&str]) -> anyhow::Result<Dataplane> {
        Dataplane::start(&self.args(extra))
    }

    /// Produces `records` (partition, value) to the input topic and waits for them.
    pub fn produce(&self, records: &[(i32, Vec<u8>)]) -> anyhow::Result<()> {
        let w = kafka::Writer::new(&self.bootstrap())?;
        let out: Vec<Outgoing<'_>> = records.iter().map(|(p, v)| Outgoing::value(*p, v)).collect();
        w.send(EVENTS, &out)?;
        w.flush()
    }

    /// The input topic's high watermarks, as (partition, offset) targets.
    pub fn ends(&self) -> anyhow::Result<Vec<(u32, i64)>> {
        let hw = kafka::high_watermarks(&self.bootstrap(), EVENTS, self.partitions)?;
        Ok(hw.into_iter().enumerate().map(|(p, o)| (p as u32, o)).collect())
    }

    /// Waits until `dp` has committed the whole input topic.
    pub fn wait_caught_up(&self, dp: &mut Dataplane, timeout: Duration) -> anyhow::Result<()> {
        dp.wait_committed(&self.ends()?, timeout)
    }

    /// Checks the output topic against the reference model applied to the input topic,
    /// and the dead-letter topic against the input's malformed units.
    pub fn check(&self, dead_letters: DeadLetters) -> anyhow::Result<()> {
        let bootstrap = self.bootstrap();
        let input = kafka::read_all(&bootstrap, EVENTS, self.partitions)?;
        let updates = kafka::read_all(&bootstrap, UPDATES, self.partitions)?;
        let got = verify::fold(&updates)?;
        let want = verify::expected(&input);
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
        let mut dead = verify::dead_letters(&kafka::read_all(&bootstrap, DEAD, self.partitions)?)?;
        let want_dead = verify::expected_dead_letters(&input);
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
