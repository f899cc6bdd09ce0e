//! The baseline the benchmark compares the pipeline with: the specification's service
//! written the way a game team writes a tokio service.
//!
//! - A reader (the `main` future) parses every event of a record into a
//!   `serde_json::Value` and sends it, as its own message, to its partition's task.
//! - One processor task per partition, on the multi-threaded runtime, reads each event
//!   into a typed [`Event`] with serde, applies it under the lock of the world they all
//!   share (an `Arc<Mutex<HashMap>>` of typed partition [`World`]s), and serializes one
//!   update per changed entity from a derived `Serialize` struct with `serde_json`.
//! - A publisher task takes the serialized updates (where a service hands them to its
//!   Kafka producer).
//!
//! It is meant to be neither weakened nor tuned: the choices are the ones the tokio and
//! serde documentation lead to (a `std::sync::Mutex` held for the short, synchronous
//! critical section and never across an `.await`, updates built inside it and serialized
//! outside it, bounded channels).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::workload::Workload;

/// What the baseline measured.
#[derive(Debug)]
pub struct Report {
    /// Events processed after the warm-up.
    pub events: u64,
    /// Time to process them, from the first read to the last update published.
    pub elapsed: Duration,
    /// Updates published for them.
    pub updates: u64,
    /// Events found malformed, over the whole run.
    pub malformed: u64,
    /// Every partition's world at the end.
    pub worlds: HashMap<u32, World>,
    /// The last update published for each partition and key (warm-up included), with
    /// [`Options::keep_updates`].
    pub last_updates: HashMap<(u32, String), Vec<u8>>,
}

/// How to run the baseline.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Events to process after the warm-up (rounded up to whole records).
    pub events: u64,
    /// Tokio worker threads.
    pub workers: usize,
    /// Keep the last update of every key in the report, for tests; the benchmark only
    /// counts them, as a producer would take them.
    pub keep_updates: bool,
}

/// An event, read from its `Value` with serde. Unknown fields are ignored; a missing or
/// mistyped field fails the read, and [`Event::valid`] checks the ranges.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Event {
    Spawn {
        player: String,
        seq: u64,
        #[serde(default)]
        x: f64,
        #[serde(default)]
        y: f64,
        #[serde(default)]
        z: f64,
    },
    Move {
        player: String,
        seq: u64,
        x: f64,
        y: f64,
        z: f64,
    },
    Rotate {
        player: String,
        seq: u64,
        yaw: f64,
        pitch: f64,
    },
    Shoot {
        player: String,
        seq: u64,
        target: String,
        damage: u8,
    },
    Loot {
        player: String,
        seq: u64,
        item: String,
    },
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
}

impl Event {
    /// The acting player and the event's `seq`.
    fn player(&self) -> (&str, u64) {
        match self {
            Event::Spawn { player, seq, .. }
            | Event::Move { player, seq, .. }
            | Event::Rotate { player, seq, .. }
            | Event::Shoot { player, seq, .. }
            | Event::Loot { player, seq, .. } => (player, *seq),
        }
    }

    /// The range rules serde's types do not express. `serde_json` refuses non-finite
    /// numbers when it parses, and `u64`/`u8` refuse numbers with a fraction or exponent.
    fn valid(&self) -> bool {
        let (player, seq) = self.player();
        let rest = match self {
            Event::Shoot { target, damage, .. } => valid_id(target) && (1..=100).contains(damage),
            Event::Loot { item, .. } => valid_id(item),
            _ => true,
        };
        valid_id(player) && i64::try_from(seq).is_ok() && rest
    }
}

/// A player, as its updates publish it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Player {
    /// Position.
    pub x: f64,
    /// Position.
    pub y: f64,
    /// Position.
    pub z: f64,
    /// Heading in degrees, in `[0, 360)`.
    pub yaw: f64,
    /// Pitch in degrees, in `[-90, 90]`.
    pub pitch: f64,
    /// Hit points.
    pub hp: u8,
    /// Whether the player is alive.
    pub alive: bool,
    /// Kills.
    pub score: u64,
    /// Items claimed.
    pub loot: u64,
    /// Highest sequence number seen from the player.
    pub seq: u64,
}

/// One partition's world.
#[derive(Debug, Default)]
pub struct World {
    /// Players by id.
    pub players: HashMap<String, Player>,
    /// Item id to the id of its claimant.
    pub items: HashMap<String, String>,
}

/// Where an update's change came from.
#[derive(Clone, Copy, Debug, Serialize)]
struct Source {
    #[serde(rename = "src_partition")]
    partition: u32,
    #[serde(rename = "src_offset")]
    offset: i64,
    #[serde(rename = "src_ts")]
    timestamp_ms: i64,
}

/// An update, serialized as the specification's JSON value.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Update {
    Player {
        id: String,
        #[serde(flatten)]
        state: Player,
        #[serde(flatten)]
        src: Source,
    },
    Item {
        id: String,
        claimed_by: String,
        #[serde(flatten)]
        src: Source,
    },
}

impl Update {
    fn key(&self) -> String {
        match self {
            Update::Player { id, .. } => format!("player:{id}"),
            Update::Item { id, .. } => format!("item:{id}"),
        }
    }
}

/// Why an event changed nothing but (maybe) its player's `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rejected {
    StaleSeq,
    UnknownPlayer,
    Dead,
    UnknownTarget,
    SelfTarget,
    TargetDead,
    AlreadyClaimed,
}

impl World {
    /// Applies `event` with the specification's rules, in their order, and returns the
    /// updates of the entities it changed (none when it was rejected before the player's
    /// `seq` advanced).
    fn apply(&mut self, event: Event, src: Source) -> (Result<(), Rejected>, Vec<Update>) {
        let (id, seq) = event.player();
        let Some(player) = self.players.get_mut(id) else {
            let Event::Spawn { player, seq, x, y, z } = event else {
                return (Err(Rejected::UnknownPlayer), Vec::new());
            };
            let state = Player {
                x,
                y,
                z,
                yaw: 0.0,
                pitch: 0.0,
                hp: 100,
                alive: true,
                score: 0,
                loot: 0,
                seq,
            };
            self.players.insert(player.clone(), state.clone());
            return (Ok(()), vec![Update::Player { id: player, state, src }]);
        };
        if seq <= player.seq {
            return (Err(Rejected::StaleSeq), Vec::new());
        }
        player.seq = seq;
        let mut changed = Vec::new();
        let outcome = match &event {
            Event::Spawn { x, y, z, .. } => {
                (player.x, player.y, player.z) = (*x, *y, *z);
                player.hp = 100;
                player.alive = true;
                Ok(())
            }
            _ if !player.alive => Err(Rejected::Dead),
            Event::Move { x, y, z, .. } => {
                (player.x, player.y, player.z) = (*x, *y, *z);
                Ok(())
            }
            Event::Rotate { yaw, pitch, .. } => {
                let yaw = yaw.rem_euclid(360.0);
                // A tiny negative yaw rounds up to 360, and -0 is 0.
                player.yaw = if yaw >= 360.0 || yaw == 0.0 { 0.0 } else { yaw };
                player.pitch = pitch.clamp(-90.0, 90.0);
                Ok(())
            }
            Event::Shoot { target, damage, .. } => {
                self.shoot(id, target, *damage, src, &mut changed)
            }
            Event::Loot { item, .. } => {
                if self.items.contains_key(item) {
                    Err(Rejected::AlreadyClaimed)
                } else {
                    self.items.insert(item.clone(), id.to_owned());
                    self.players.get_mut(id).expect("the looter exists").loot += 1;
                    changed.push(Update::Item { id: item.clone(), claimed_by: id.to_owned(), src });
                    Ok(())
                }
            }
        };
        // The player's seq advanced whatever the outcome: it changed, and comes first.
        let state = self.players[id].clone();
        changed.insert(0, Update::Player { id: id.to_owned(), state, src });
        (outcome, changed)
    }

    fn shoot(
        &mut self,
        shooter: &str,
        target: &str,
        damage: u8,
        src: Source,
        changed: &mut Vec<Update>,
    ) -> Result<(), Rejected> {
        // The shooter exists, so shooting oneself passes the existence check first.
        if target == shooter {
            return Err(Rejected::SelfTarget);
        }
        let t = self.players.get_mut(target).ok_or(Rejected::UnknownTarget)?;
        if !t.alive {
            return Err(Rejected::TargetDead);
        }
        t.hp = t.hp.saturating_sub(damage);
        let killed = t.hp == 0;
        if killed {
            t.alive = false;
        }
        changed.push(Update::Player { id: target.to_owned(), state: t.clone(), src });
        if killed {
            self.players.get_mut(shooter).expect("the shooter exists").score += 1;
        }
        Ok(())
    }

    /// Every entity's update value without its source fields, by key, as
    /// [`ModelWorld::view`](crate::model::ModelWorld::view) gives them.
    pub fn view(&self) -> BTreeMap<String, Value> {
        let players = self.players.iter().map(|(id, p)| {
            let mut v = serde_json::to_value(p).expect("a player serializes");
            v["kind"] = "player".into();
            v["id"] = id.as_str().into();
            (format!("player:{id}"), v)
        });
        let items = self.items.iter().map(|(id, by)| {
            let v = serde_json::json!({"kind": "item", "id": id, "claimed_by": by});
            (format!("item:{id}"), v)
        });
        players.chain(items).collect()
    }
}

enum Message {
    Event {
        offset: i64,
        timestamp_ms: i64,
        event: Value,
    },
    /// Everything sent before has been published once this comes out at the end, which
    /// answers with the updates published so far.
    Mark(oneshot::Sender<u64>),
}

enum Output {
    /// An update for the output partition of the input's number.
    Update {
        partition: u32,
        key: String,
        value: Vec<u8>,
    },
    DeadLetter {
        payload: Vec<u8>,
    },
    Mark(oneshot::Sender<u64>),
}

/// Bounded like a typical service: enough to keep tasks busy, small enough to bound
/// memory.
const CHANNEL: usize = 1024;

/// Runs the warm-up of `workload`, then `options.events` events, on a tokio runtime of
/// `options.workers` threads.
pub fn run(workload: &mut Workload, options: Options) -> std::io::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .enable_all()
        .build()?;
    Ok(runtime.block_on(measure(workload, options)))
}

/// One partition's processor: reads, applies and serializes each event in turn.
async fn process(
    partition: u32,
    mut rx: mpsc::Receiver<Message>,
    worlds: Arc<Mutex<HashMap<u32, World>>>,
    out: mpsc::Sender<Output>,
) -> u64 {
    let mut malformed = 0;
    while let Some(message) = rx.recv().await {
        match message {
            Message::Event { offset, timestamp_ms, event } => {
                let typed = match Event::deserialize(&event) {
                    Ok(typed) if typed.valid() => typed,
                    _ => {
                        malformed += 1;
                        let payload = serde_json::to_vec(&event).expect("a Value serializes");
                        if out.send(Output::DeadLetter { payload }).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let src = Source { partition, offset, timestamp_ms };
                let (_, updates) = {
                    let mut worlds = worlds.lock().expect("no task panics holding the lock");
                    worlds.entry(partition).or_default().apply(typed, src)
                };
                for update in updates {
                    let value = serde_json::to_vec(&update).expect("an update serializes");
                    let key = update.key();
                    if out.send(Output::Update { partition, key, value }).await.is_err() {
                        return malformed;
                    }
                }
            }
            Message::Mark(done) => {
                let _ = out.send(Output::Mark(done)).await;
            }
        }
    }
    malformed
}

async fn measure(workload: &mut Workload, options: Options) -> Report {
    let worlds = Arc::new(Mutex::new(HashMap::<u32, World>::new()));
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(CHANNEL);
    let partitions = workload.partitions();
    let mut inputs = Vec::new();
    let mut processors = Vec::new();
    for partition in 0..partitions {
        let (tx, rx) = mpsc::channel::<Message>(CHANNEL);
        inputs.push(tx);
        processors.push(tokio::spawn(process(partition, rx, Arc::clone(&worlds), out_tx.clone())));
    }
    drop(out_tx);

    let keep = options.keep_updates;
    let publisher = tokio::spawn(async move {
        let mut updates = 0u64;
        let mut last = HashMap::new();
        while let Some(output) = out_rx.recv().await {
            match output {
                Output::Update { partition, key, value } => {
                    updates += 1;
                    if keep {
                        last.insert((partition, key), value);
                    }
                }
                Output::DeadLetter { payload } => drop(payload),
                Output::Mark(done) => {
                    let _ = done.send(updates);
                }
            }
        }
        (updates, last)
    });

    let mut offsets = vec![0i64; partitions as usize];
    let mut send_record = async |partition: u32, bytes: &[u8]| {
        let offset = &mut offsets[partition as usize];
        let timestamp_ms = gameshard_dataplane::clock::unix_ms();
        // A line or a record that is not JSON goes on as `null`, which the processor
        // counts as malformed.
        let events: Vec<Value> = match bytes.first() {
            Some(b'[') => serde_json::from_slice(bytes).unwrap_or_else(|_| vec![Value::Null]),
            _ => bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(|l| serde_json::from_slice(l).unwrap_or(Value::Null))
                .collect(),
        };
        let n = events.len() as u64;
        for event in events {
            let message = Message::Event { offset: *offset, timestamp_ms, event };
            inputs[partition as usize]
                .send(message)
                .await
                .expect("the processors run until the reader ends");
        }
        *offset += 1;
        n
    };

    let mut warmup = Vec::new();
    for i in 0..workload.warmup_records() {
        let partition = workload.warmup_record(i, &mut warmup);
        send_record(partition, &warmup).await;
    }
    let mut marks = Vec::new();
    for input in &inputs {
        let (done, published) = oneshot::channel();
        input.send(Message::Mark(done)).await.expect("the processors run");
        marks.push(published);
    }
    // The marks reach the publisher in any order: the last one it saw counts every
    // warm-up update (none after the warm-up is sent before all are acknowledged).
    let mut warmup_updates = 0;
    for published in marks {
        warmup_updates =
            warmup_updates.max(published.await.expect("the publisher acknowledges marks"));
    }

    let start = Instant::now();
    let (mut sent, mut pass) = (0u64, 1u64);
    'passes: loop {
        for record in &mut workload.records {
            if sent >= options.events {
                break 'passes;
            }
            record.set_pass(pass);
            sent += send_record(record.partition, &record.bytes).await;
        }
        pass += 1;
    }
    drop(inputs);
    let mut malformed = 0;
    for processor in processors {
        malformed += processor.await.expect("a processor does not panic");
    }
    let (updates, last_updates) = publisher.await.expect("the publisher does not panic");
    let elapsed = start.elapsed();
    let updates = updates - warmup_updates;
    let worlds = std::mem::take(&mut *worlds.lock().expect("no task panicked"));
    Report { events: sent, elapsed, updates, malformed, worlds, last_updates }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelWorld, Verdict, split_record};
    use crate::workload;

    const SRC: Source = Source { partition: 0, offset: 0, timestamp_ms: 0 };

    /// Applies `line` to the baseline's world as its processor does.
    fn apply(world: &mut World, line: &str) -> Verdict {
        let value: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        match Event::deserialize(&value) {
            Ok(event) if event.valid() => match world.apply(event, SRC).0 {
                Ok(()) => Verdict::Applied,
                Err(r) => Verdict::Rejected(match r {
                    Rejected::StaleSeq => "stale_seq",
                    Rejected::UnknownPlayer => "unknown_player",
                    Rejected::Dead => "dead",
                    Rejected::UnknownTarget => "unknown_target",
                    Rejected::SelfTarget => "self_target",
                    Rejected::TargetDead => "target_dead",
                    Rejected::AlreadyClaimed => "already_claimed",
                }),
            },
            _ => Verdict::Malformed,
        }
    }

    #[test]
    fn each_rule_and_field_check_gives_the_models_verdict_and_state() {
        let lines = [
            r#"{"type":"move","player":"a","seq":1,"x":1,"y":1,"z":1}"#,
            r#"{"type":"spawn","player":"a","seq":1,"extra":[1]}"#,
            r#"{"type":"spawn","player":"b","seq":1,"x":2.5}"#,
            r#"{"type":"spawn","player":"a","seq":1}"#,
            r#"{"type":"rotate","player":"a","seq":2,"yaw":-90,"pitch":120}"#,
            r#"{"type":"rotate","player":"a","seq":3,"yaw":-1e-20,"pitch":-0.5}"#,
            r#"{"type":"shoot","player":"a","seq":4,"target":"a","damage":5}"#,
            r#"{"type":"shoot","player":"a","seq":5,"target":"zz","damage":5}"#,
            r#"{"type":"shoot","player":"a","seq":6,"target":"b","damage":0}"#,
            r#"{"type":"shoot","player":"a","seq":6,"target":"b","damage":2.5}"#,
            r#"{"type":"shoot","player":"a","seq":6,"target":"b","damage":101}"#,
            r#"{"type":"shoot","player":"a","seq":6,"target":"b","damage":60}"#,
            r#"{"type":"shoot","player":"a","seq":7,"target":"b","damage":60}"#,
            r#"{"type":"shoot","player":"a","seq":8,"target":"b","damage":1}"#,
            r#"{"type":"move","player":"b","seq":2,"x":1,"y":1,"z":1}"#,
            r#"{"type":"move","player":"b","seq":2,"x":1,"y":1,"z":1}"#,
            r#"{"type":"move","player":"a","seq":9,"x":1,"y":1}"#,
            r#"{"type":"loot","player":"a","seq":9,"item":"gem"}"#,
            r#"{"type":"loot","player":"a","seq":10,"item":"gem"}"#,
            r#"{"type":"loot","player":"a","seq":11,"item":7}"#,
            r#"{"type":"loot","player":"a","seq":11,"item":""}"#,
            r#"{"type":"spawn","player":"","seq":1}"#,
            r#"{"type":"spawn","player":"c","seq":-1}"#,
            r#"{"type":"spawn","player":"c","seq":9223372036854775808}"#,
            r#"{"type":"spawn","player":"c","seq":1.0}"#,
            r#"{"type":"fly","player":"a","seq":12}"#,
            r#"{"player":"a","seq":12}"#,
            r#"{"type":"spawn","player":"b","seq":3,"x":-4}"#,
            "[1]",
            "42",
            "{broken",
        ];
        let (mut world, mut model) = (World::default(), ModelWorld::default());
        for line in lines {
            let want = model.apply(&serde_json::from_str(line).unwrap_or(Value::Null)).0;
            assert_eq!(apply(&mut world, line), want, "{line}");
        }
        assert_eq!(world.view(), model.view());
    }

    #[test]
    fn updates_serialize_as_the_specifications_values() {
        let state = Player {
            x: 1.0,
            y: 2.0,
            z: 0.0,
            yaw: 90.0,
            pitch: 0.0,
            hp: 75,
            alive: true,
            score: 0,
            loot: 1,
            seq: 42,
        };
        let src = Source { partition: 3, offset: 1234, timestamp_ms: 1_732_760_000_123 };
        let player = Update::Player { id: "p1".into(), state, src };
        assert_eq!(player.key(), "player:p1");
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&player).unwrap()).unwrap(),
            r#"{"kind":"player","id":"p1","x":1.0,"y":2.0,"z":0.0,"yaw":90.0,"pitch":0.0,"hp":75,"alive":true,"score":0,"loot":1,"seq":42,"src_partition":3,"src_offset":1234,"src_ts":1732760000123}"#
        );
        let item = Update::Item { id: "chest-7".into(), claimed_by: "p1".into(), src };
        assert_eq!(item.key(), "item:chest-7");
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&item).unwrap()).unwrap(),
            r#"{"kind":"item","id":"chest-7","claimed_by":"p1","src_partition":3,"src_offset":1234,"src_ts":1732760000123}"#
        );
    }

    #[test]
    fn the_baseline_ends_in_the_models_state_and_publishes_every_change() {
        let config = workload::Config {
            players: 3_000,
            partitions: 4,
            records: 200,
            items: 500,
            ..workload::Config::default()
        };
        let mut workload = Workload::generate(&config);
        let passes = 2;
        let events = passes * workload.pass_events();
        let report = run(&mut workload.clone(), Options { events, workers: 2, keep_updates: true })
            .expect("the runtime starts");
        assert_eq!(report.events, events);

        let mut models: HashMap<u32, ModelWorld> = HashMap::new();
        let mut changes = 0;
        let mut apply = |partition: u32, bytes: &[u8]| {
            let model = models.entry(partition).or_default();
            split_record(bytes)
                .expect("workload records are well-formed")
                .iter()
                .map(|e| model.apply(e).1.len() as u64)
                .sum::<u64>()
        };
        let mut bytes = Vec::new();
        for i in 0..workload.warmup_records() {
            let partition = workload.warmup_record(i, &mut bytes);
            apply(partition, &bytes);
        }
        for pass in 1..=passes {
            for record in &mut workload.records {
                record.set_pass(pass);
                changes += apply(record.partition, &record.bytes);
            }
        }
        assert_eq!(report.updates, changes, "one update per change after the warm-up");
        assert_eq!(report.malformed, 0);

        let mut want = BTreeMap::new();
        for (&partition, model) in &models {
            assert_eq!(report.worlds[&partition].view(), model.view(), "partition {partition}");
            want.extend(model.view().into_iter().map(|(k, v)| ((partition, k), v)));
        }
        assert_eq!(report.worlds.len(), models.len());
        assert!(want.keys().any(|(_, k)| k.starts_with("item:")), "items were claimed");
        let published: BTreeMap<(u32, String), Value> = report
            .last_updates
            .iter()
            .map(|(k, v)| {
                let mut v: Value = serde_json::from_slice(v).expect("updates are JSON");
                for f in ["src_partition", "src_offset", "src_ts"] {
                    v.as_object_mut().expect("an object").remove(f);
                }
                (k.clone(), v)
            })
            .collect();
        assert_eq!(published, want, "the last update of every entity is its final state");
    }
}
