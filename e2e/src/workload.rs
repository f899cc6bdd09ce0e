//! A synthetic workload of the specification's events: players spread over partitions,
//! records of a fixed number of events, and a configurable mix of event types.
//!
//! A workload has a warm-up, which spawns every player once, and a set of records that
//! can be replayed any number of times: their `seq` fields are written with a fixed width
//! and patched in place for every pass, so that each pass carries fresh sequence numbers
//! and exercises the rules as the first did, instead of being rejected as stale.

use std::fmt::Write as _;

use crate::rng::Rng;

/// Written `seq` values are `SEQ_BASE + pass * SEQ_PASS + n` with `n < SEQ_PASS`: twelve
/// digits, of which the first six are `100000 + pass` and the last six `n`, so a new pass
/// only rewrites the first six.
const SEQ_BASE: u64 = 100_000_000_000;
const SEQ_PASS: u64 = 1_000_000;
const PASS_DIGITS: usize = 6;

/// Percentages of each event type; they sum to 100.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Spawns (respawns, once the warm-up has created every player).
    pub spawn: u32,
    /// Moves.
    pub moves: u32,
    /// Rotations.
    pub rotate: u32,
    /// Shots.
    pub shoot: u32,
    /// Loots.
    pub loot: u32,
}

impl Default for Mix {
    /// 10% spawn, 45% move, 20% rotate, 15% shoot, 10% loot.
    fn default() -> Self {
        Self { spawn: 10, moves: 45, rotate: 20, shoot: 15, loot: 10 }
    }
}

/// How events are framed in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One event object per line.
    Ndjson,
    /// One JSON array of events.
    Array,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Config {
    /// Players in the world, spread evenly over the partitions.
    pub players: u32,
    /// Input partitions.
    pub partitions: u32,
    /// Events per record.
    pub events_per_record: u32,
    /// Distinct records in a pass.
    pub records: usize,
    /// Distinct items per partition that loots draw from.
    pub items: u32,
    /// Event-type mix.
    pub mix: Mix,
    /// Record framing.
    pub framing: Framing,
    /// Random seed.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            players: 100_000,
            partitions: 8,
            events_per_record: 64,
            records: 4096,
            items: 1_000_000,
            mix: Mix::default(),
            framing: Framing::Ndjson,
            seed: 0x6761_6d65_7368_6172,
        }
    }
}

/// A generated record.
#[derive(Clone, Debug)]
pub struct Record {
    /// Its input partition.
    pub partition: u32,
    /// Its value.
    pub bytes: Vec<u8>,
    /// Events in it.
    pub events: u32,
    /// Where each `seq` value starts in `bytes`.
    seqs: Vec<u32>,
}

impl Record {
    /// Rewrites the `seq` values for pass `pass` (0 is the pass as generated; at most
    /// 899,999).
    pub fn set_pass(&mut self, pass: u64) {
        assert!(pass < 900_000, "the seq width allows 899,999 passes");
        let mut digits = itoa::Buffer::new();
        let prefix = digits.format(SEQ_BASE / SEQ_PASS + pass).as_bytes();
        for &at in &self.seqs {
            let at = at as usize;
            self.bytes[at..at + PASS_DIGITS].copy_from_slice(prefix);
        }
    }
}

/// A generated workload: a warm-up that spawns every player once, generated on demand,
/// and the records of one pass.
#[derive(Clone, Debug)]
pub struct Workload {
    config: Config,
    /// The records of one pass.
    pub records: Vec<Record>,
}

impl Workload {
    /// Generates the workload `config` describes.
    pub fn generate(config: &Config) -> Self {
        assert!(config.partitions > 0 && config.players >= config.partitions);
        assert!(config.events_per_record > 0);
        let mix = config.mix;
        assert_eq!(
            mix.spawn + mix.moves + mix.rotate + mix.shoot + mix.loot,
            100,
            "the mix sums to 100%"
        );
        let mut rng = Rng::new(config.seed);
        let per_record = config.events_per_record as usize;

        let mut seq = vec![0u32; config.players as usize];
        let mut records = Vec::with_capacity(config.records);
        for r in 0..config.records {
            let p = (r % config.partitions as usize) as u32;
            let in_partition = u64::from((config.players - p).div_ceil(config.partitions));
            let pick = |rng: &mut Rng| p + config.partitions * rng.below(in_partition) as u32;
            let mut w = Writer::new(p, config.framing);
            for _ in 0..per_record {
                let k = pick(&mut rng);
                seq[k as usize] += 1;
                let n = seq[k as usize];
                assert!(u64::from(n) < SEQ_PASS, "too many events per player for the seq width");
                let roll = rng.below(100) as u32;
                if roll < mix.spawn + mix.moves {
                    let kind = if roll < mix.spawn { "spawn" } else { "move" };
                    let (x, y, z) = (
                        rng.coordinate(-1000.0, 1000.0),
                        rng.coordinate(-1000.0, 1000.0),
                        rng.coordinate(0.0, 50.0),
                    );
                    w.event_with_seq(
                        kind,
                        k,
                        n,
                        format_args!(r#","x":{x:.2},"y":{y:.2},"z":{z:.2}}}"#),
                    );
                } else if roll < mix.spawn + mix.moves + mix.rotate {
                    let (yaw, pitch) =
                        (rng.coordinate(-360.0, 720.0), rng.coordinate(-100.0, 100.0));
                    w.event_with_seq(
                        "rotate",
                        k,
                        n,
                        format_args!(r#","yaw":{yaw:.2},"pitch":{pitch:.2}}}"#),
                    );
                } else if roll < 100 - mix.loot {
                    let target = pick(&mut rng);
                    let damage = 1 + rng.below(40);
                    w.event_with_seq(
                        "shoot",
                        k,
                        n,
                        format_args!(r#","target":"p{target}","damage":{damage}}}"#),
                    );
                } else {
                    let item = rng.below(u64::from(config.items));
                    w.event_with_seq("loot", k, n, format_args!(r#","item":"item-{item}"}}"#));
                }
            }
            records.push(w.finish());
        }
        Self { config: config.clone(), records }
    }

    /// Records in the warm-up.
    pub fn warmup_records(&self) -> usize {
        let c = &self.config;
        (0..c.partitions).map(|p| self.players_in(p).div_ceil(c.events_per_record) as usize).sum()
    }

    /// Events in the warm-up: one spawn per player.
    pub fn warmup_events(&self) -> u64 {
        u64::from(self.config.players)
    }

    fn players_in(&self, partition: u32) -> u32 {
        (self.config.players - partition).div_ceil(self.config.partitions)
    }

    /// Writes warm-up record `index` (below [`Workload::warmup_records`]) into `out` and
    /// returns its partition. Warm-up records are generated on demand, so that a world of
    /// millions of players does not sit in memory twice.
    pub fn warmup_record(&self, index: usize, out: &mut Vec<u8>) -> u32 {
        let c = &self.config;
        let mut index = index;
        let mut partition = 0;
        loop {
            let records = self.players_in(partition).div_ceil(c.events_per_record) as usize;
            if index < records || partition + 1 == c.partitions {
                break;
            }
            index -= records;
            partition += 1;
        }
        let mut rng = Rng::new(c.seed ^ (u64::from(partition) << 32 | index as u64));
        let first = index as u32 * c.events_per_record;
        let last = (first + c.events_per_record).min(self.players_in(partition));
        let mut w = Writer::new(partition, c.framing);
        for i in first..last {
            let k = partition + i * c.partitions;
            let (x, y, z) = (
                rng.coordinate(-1000.0, 1000.0),
                rng.coordinate(-1000.0, 1000.0),
                rng.coordinate(0.0, 50.0),
            );
            w.event(format_args!(
                r#"{{"type":"spawn","player":"p{k}","seq":1,"x":{x:.2},"y":{y:.2},"z":{z:.2}}}"#
            ));
        }
        let record = w.finish();
        out.clear();
        out.extend_from_slice(&record.bytes);
        partition
    }

    /// Input partitions.
    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// Events in one pass.
    pub fn pass_events(&self) -> u64 {
        self.records.iter().map(|r| u64::from(r.events)).sum()
    }
}

/// Builds one record.
struct Writer {
    record: Record,
    text: String,
    framing: Framing,
}

impl Writer {
    fn new(partition: u32, framing: Framing) -> Self {
        let text = String::from(if framing == Framing::Array { "[" } else { "" });
        Self {
            record: Record { partition, bytes: Vec::new(), events: 0, seqs: Vec::new() },
            text,
            framing,
        }
    }

    fn separator(&mut self) {
        if self.record.events > 0 {
            self.text.push(if self.framing == Framing::Array { ',' } else { '\n' });
        }
        self.record.events += 1;
    }

    fn event(&mut self, event: std::fmt::Arguments<'_>) {
        self.separator();
        let _ = self.text.write_fmt(event);
    }

    /// An event of type `kind` from player `k` with pass-relative seq `n`; `rest` is the
    /// object after the `seq` value, closing brace included.
    fn event_with_seq(&mut self, kind: &str, k: u32, n: u32, rest: std::fmt::Arguments<'_>) {
        self.separator();
        let _ = write!(self.text, r#"{{"type":"{kind}","player":"p{k}","seq":"#);
        self.record.seqs.push(self.text.len() as u32);
        let _ = write!(self.text, "{}", SEQ_BASE + u64::from(n));
        let _ = self.text.write_fmt(rest);
    }

    fn finish(mut self) -> Record {
        if self.framing == Framing::Array {
            self.text.push(']');
        }
        self.record.bytes = self.text.into_bytes();
        self.record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_of(record: &Record) -> Vec<serde_json::Value> {
        match record.bytes.first() {
            Some(b'[') => serde_json::from_slice::<Vec<serde_json::Value>>(&record.bytes).unwrap(),
            _ => record
                .bytes
                .split(|&b| b == b'\n')
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect(),
        }
    }

    #[test]
    fn the_warmup_spawns_every_player_once_in_its_partition() {
        let config = Config { players: 1000, partitions: 4, records: 10, ..Config::default() };
        let w = Workload::generate(&config);
        assert_eq!(w.warmup_events(), 1000);
        let mut seen = std::collections::HashSet::new();
        let mut bytes = Vec::new();
        for i in 0..w.warmup_records() {
            let partition = w.warmup_record(i, &mut bytes);
            let r = Record { partition, bytes: bytes.clone(), events: 0, seqs: Vec::new() };
            for e in events_of(&r) {
                assert_eq!(e["type"], "spawn");
                let k: u32 = e["player"].as_str().unwrap()[1..].parse().unwrap();
                assert_eq!(k % 4, r.partition);
                assert!(seen.insert(k), "p{k} spawned twice");
            }
        }
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn records_follow_the_mix_and_stay_in_their_partition() {
        for framing in [Framing::Ndjson, Framing::Array] {
            let config =
                Config { players: 1000, partitions: 4, records: 400, framing, ..Config::default() };
            let w = Workload::generate(&config);
            assert_eq!(w.pass_events(), 400 * 64);
            let mut counts = std::collections::HashMap::new();
            for r in &w.records {
                assert_eq!(r.events, 64);
                for e in events_of(r) {
                    *counts.entry(e["type"].as_str().unwrap().to_owned()).or_insert(0u32) += 1;
                    let k: u32 = e["player"].as_str().unwrap()[1..].parse().unwrap();
                    assert_eq!(k % 4, r.partition);
                }
            }
            let share = |t: &str| f64::from(counts[t]) / f64::from(400 * 64);
            for (t, want) in
                [("spawn", 0.10), ("move", 0.45), ("rotate", 0.20), ("shoot", 0.15), ("loot", 0.10)]
            {
                assert!((share(t) - want).abs() < 0.02, "{t}: {} vs {want}", share(t));
            }
        }
    }

    #[test]
    fn each_pass_raises_every_seq_and_keeps_the_record_valid() {
        let config = Config { players: 100, partitions: 2, records: 20, ..Config::default() };
        let mut w = Workload::generate(&config);
        let before: Vec<u64> =
            events_of(&w.records[3]).iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        w.records[3].set_pass(2);
        let after: Vec<u64> =
            events_of(&w.records[3]).iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(a - b, 2 * SEQ_PASS);
        }
    }

    #[test]
    fn generation_is_deterministic_for_a_seed() {
        let config = Config { players: 100, partitions: 2, records: 20, ..Config::default() };
        let (a, b) = (Workload::generate(&config), Workload::generate(&config));
        assert!(a.records.iter().zip(&b.records).all(|(x, y)| x.bytes == y.bytes));
    }
}
