//! An independent reference model of the specification's semantics, written the plain
//! way: `serde_json::Value` events, `HashMap`s of owned strings, no batching, one update
//! per change. Tests hold the data plane to it, and the benchmark's baseline runs it.
//!
//! It shares no code with the engine on purpose.

use std::collections::HashMap;

use serde_json::{Value, json};

/// A player, as the specification describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Player {
    /// Position.
    pub x: f64,
    /// Position.
    pub y: f64,
    /// Position.
    pub z: f64,
    /// Heading.
    pub yaw: f64,
    /// Pitch.
    pub pitch: f64,
    /// Hit points.
    pub hp: i64,
    /// Alive flag.
    pub alive: bool,
    /// Kills.
    pub score: i64,
    /// Items claimed.
    pub loot: i64,
    /// Last sequence number.
    pub seq: i64,
}

/// One partition's world.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelWorld {
    /// Players by id.
    pub players: HashMap<String, Player>,
    /// Item id to the id of its claimant.
    pub items: HashMap<String, String>,
}

/// What applying an event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The event broke a field rule.
    Malformed,
    /// Applied.
    Applied,
    /// Rejected for the given reason label.
    Rejected(&'static str),
}

/// Key of an entity's updates: `player:<id>` or `item:<id>`.
pub type Key = String;

fn text(e: &Value, field: &str) -> Option<String> {
    let s = e.get(field)?.as_str()?;
    (1..=64).contains(&s.len()).then(|| s.to_owned())
}

fn integer(e: &Value, field: &str, min: i64, max: i64) -> Option<i64> {
    let v = e.get(field)?;
    if !(v.is_i64() || v.is_u64()) {
        return None;
    }
    v.as_i64().filter(|n| (min..=max).contains(n))
}

fn number(e: &Value, field: &str) -> Option<f64> {
    e.get(field)?.as_f64().filter(|v| v.is_finite())
}

fn position(e: &Value, required: bool) -> Option<(f64, f64, f64)> {
    let coordinate = |f| match e.get(f) {
        None if !required => Some(0.0),
        _ => number(e, f),
    };
    Some((coordinate("x")?, coordinate("y")?, coordinate("z")?))
}

impl ModelWorld {
    /// Applies one event object; returns its verdict and the keys of the entities it
    /// changed, in order.
    pub fn apply(&mut self, e: &Value) -> (Verdict, Vec<Key>) {
        match self.try_apply(e) {
            Some(result) => result,
            None => (Verdict::Malformed, Vec::new()),
        }
    }

    fn try_apply(&mut self, e: &Value) -> Option<(Verdict, Vec<Key>)> {
        if !e.is_object() {
            return None;
        }
        let kind = e.get("type")?.as_str()?;
        let id = text(e, "player")?;
        let seq = integer(e, "seq", 0, i64::MAX)?;
        let me = format!("player:{id}");
        match kind {
            "spawn" => {
                let (x, y, z) = position(e, false)?;
                Some(match self.players.get_mut(&id) {
                    None => {
                        let p = Player {
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
                        self.players.insert(id, p);
                        (Verdict::Applied, vec![me])
                    }
                    Some(p) if seq <= p.seq => (Verdict::Rejected("stale_seq"), vec![]),
                    Some(p) => {
                        (p.seq, p.hp, p.alive, p.x, p.y, p.z) = (seq, 100, true, x, y, z);
                        (Verdict::Applied, vec![me])
                    }
                })
            }
            "move" => {
                let (x, y, z) = position(e, true)?;
                Some(self.act(&id, seq, me, |w, id| {
                    let p = w.players.get_mut(id).expect("acting player exists");
                    (p.x, p.y, p.z) = (x, y, z);
                    (Verdict::Applied, vec![])
                }))
            }
            "rotate" => {
                let (yaw, pitch) = (number(e, "yaw")?, number(e, "pitch")?);
                Some(self.act(&id, seq, me, |w, id| {
                    let p = w.players.get_mut(id).expect("acting player exists");
                    let mut y = yaw % 360.0;
                    if y < 0.0 {
                        y += 360.0;
                    }
                    if y >= 360.0 || y == 0.0 {
                        y = 0.0;
                    }
                    p.yaw = y;
                    p.pitch = pitch.clamp(-90.0, 90.0);
                    (Verdict::Applied, vec![])
                }))
            }
            "shoot" => {
                let target = text(e, "target")?;
                let damage = integer(e, "damage", 1, 100)?;
                Some(self.act(&id, seq, me, |w, id| {
                    let Some(t) = w.players.get(&target) else {
                        return (Verdict::Rejected("unknown_target"), vec![]);
                    };
                    if target == id {
                        return (Verdict::Rejected("self_target"), vec![]);
                    }
                    if !t.alive {
                        return (Verdict::Rejected("target_dead"), vec![]);
                    }
                    let t = w.players.get_mut(&target).expect("target exists");
                    t.hp = (t.hp - damage).max(0);
                    if t.hp == 0 {
                        t.alive = false;
                        w.players.get_mut(id).expect("shooter exists").score += 1;
                    }
                    (Verdict::Applied, vec![format!("player:{target}")])
                }))
            }
            "loot" => {
                let item = text(e, "item")?;
                Some(self.act(&id, seq, me, |w, id| {
                    if w.items.contains_key(&item) {
                        return (Verdict::Rejected("already_claimed"), vec![]);
                    }
                    w.items.insert(item.clone(), id.to_owned());
                    w.players.get_mut(id).expect("looter exists").loot += 1;
                    (Verdict::Applied, vec![format!("item:{item}")])
                }))
            }
            _ => None,
        }
    }

    /// Rules 2 and 3, then `rule` for a living player.
    fn act(
        &mut self,
        id: &str,
        seq: i64,
        me: Key,
        rule: impl FnOnce(&mut Self, &str) -> (Verdict, Vec<Key>),
    ) -> (Verdict, Vec<Key>) {
        let Some(p) = self.players.get_mut(id) else {
            return (Verdict::Rejected("unknown_player"), vec![]);
        };
        if seq <= p.seq {
            return (Verdict::Rejected("stale_seq"), vec![]);
        }
        p.seq = seq;
        if !p.alive {
            return (Verdict::Rejected("dead"), vec![me]);
        }
        let (verdict, mut changed) = rule(self, id);
        changed.insert(0, me);
        (verdict, changed)
    }

    /// The update value for `key`, without its source fields, or `None` when no such
    /// entity exists.
    pub fn state(&self, key: &str) -> Option<Value> {
        if let Some(id) = key.strip_prefix("player:") {
            let p = self.players.get(id)?;
            Some(json!({
                "kind": "player", "id": id, "x": p.x, "y": p.y, "z": p.z, "yaw": p.yaw,
                "pitch": p.pitch, "hp": p.hp, "alive": p.alive, "score": p.score,
                "loot": p.loot, "seq": p.seq,
            }))
        } else {
            let id = key.strip_prefix("item:")?;
            Some(json!({"kind": "item", "id": id, "claimed_by": self.items.get(id)?}))
        }
    }

    /// Every entity's update value, by key.
    pub fn view(&self) -> std::collections::BTreeMap<Key, Value> {
        let keys = self.players.keys().map(|id| format!("player:{id}"));
        let keys = keys.chain(self.items.keys().map(|id| format!("item:{id}")));
        keys.map(|k| {
            let v = self.state(&k).expect("listed entity exists");
            (k, v)
        })
        .collect()
    }
}

/// The events of a record, or `None` when the record is malformed as a whole. Elements
/// or lines that are not valid JSON come back as `Value::Null`, which
/// [`ModelWorld::apply`] finds malformed.
pub fn split_record(bytes: &[u8]) -> Option<Vec<Value>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let events = match text.trim_start().as_bytes().first()? {
        b'{' => text
            .split('\n')
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect(),
        b'[' => serde_json::from_str::<Vec<Value>>(text).ok()?,
        _ => return None,
    };
    (!Vec::is_empty(&events)).then_some(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_follows_the_rules_in_order() {
        let mut w = ModelWorld::default();
        let run = |w: &mut ModelWorld, e: Value| w.apply(&e).0;
        assert_eq!(
            run(&mut w, json!({"type":"move","player":"a","seq":1,"x":1,"y":1,"z":1})),
            Verdict::Rejected("unknown_player")
        );
        assert_eq!(run(&mut w, json!({"type":"spawn","player":"a","seq":1})), Verdict::Applied);
        assert_eq!(run(&mut w, json!({"type":"spawn","player":"b","seq":1})), Verdict::Applied);
        assert_eq!(
            run(&mut w, json!({"type":"shoot","player":"a","seq":2,"target":"b","damage":100})),
            Verdict::Applied
        );
        assert_eq!(
            run(&mut w, json!({"type":"move","player":"b","seq":2,"x":1,"y":1,"z":1})),
            Verdict::Rejected("dead")
        );
        assert_eq!(
            run(&mut w, json!({"type":"loot","player":"a","seq":3,"item":"i"})),
            Verdict::Applied
        );
        assert_eq!(
            run(&mut w, json!({"type":"loot","player":"a","seq":4,"item":"i"})),
            Verdict::Rejected("already_claimed")
        );
        assert_eq!(run(&mut w, json!({"type":"loot","player":"a","seq":5})), Verdict::Malformed);
        assert_eq!(w.players["a"].score, 1);
        assert_eq!(w.players["b"].seq, 2);
        assert_eq!(w.view().len(), 3);
    }
}
