//! The specification's rules, applied to one partition's players and items.

use super::event::{Action, Event, Reject};
use super::table::Table;
use super::update::Update;
use crate::{Outcome, RecordMeta, SnapshotError, Updates, World};

/// Hit points of a freshly spawned player.
pub const FULL_HP: u8 = 100;

/// A player's full state, as its updates publish it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlayerState {
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
    /// Highest sequence number seen from the player.
    pub seq: u64,
    /// Kills.
    pub score: u64,
    /// Items claimed.
    pub loot: u64,
    /// Hit points, 0 to 100.
    pub hp: u8,
    /// Whether the player is alive; false exactly when `hp` is 0.
    pub alive: bool,
}

impl PlayerState {
    fn spawned(pos: [f64; 3], seq: u64) -> Self {
        let [x, y, z] = pos;
        Self { x, y, z, yaw: 0.0, pitch: 0.0, seq, score: 0, loot: 0, hp: FULL_HP, alive: true }
    }
}

/// An item: the row number of the player that claimed it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Item {
    pub(super) claimed_by: u32,
}

/// An entity changed since the last flush, with the record that last changed it.
#[derive(Clone, Copy, Debug)]
struct Dirty {
    entity: Entity,
    src: RecordMeta,
}

#[derive(Clone, Copy, Debug)]
enum Entity {
    Player(u32),
    Item(u32),
}

/// One partition's world: its players and items.
#[derive(Default)]
pub struct SpecWorld {
    pub(super) players: Table<PlayerState>,
    pub(super) items: Table<Item>,
    dirty: Vec<Dirty>,
    capture: Capture,
}

/// A snapshot being written in slices while events go on being applied.
///
/// Rows never move and ids never change, so the snapshot point is the number of rows of
/// each table then; rows added later are left out. Items never change once claimed.
/// A player row not written yet keeps its state at the snapshot point in `kept` the
/// first time an event changes it, and the slice that reaches it writes that.
#[derive(Default)]
struct Capture {
    active: bool,
    header_written: bool,
    /// Rows at the snapshot point.
    players: u32,
    items: u32,
    /// Next row to write.
    next_player: u32,
    next_item: u32,
    /// Per player row below `players`: 0 while it is as it was at the snapshot point,
    /// else 1 + the index of its state then in `kept`. Both keep their capacity from
    /// one snapshot to the next.
    kept_at: Vec<u32>,
    kept: Vec<PlayerState>,
}

impl SpecWorld {
    /// An empty world.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of player `id`.
    pub fn player(&self, id: &[u8]) -> Option<&PlayerState> {
        self.players.find(id).map(|row| &self.players.row(row).value)
    }

    /// The id of the player that claimed item `id`.
    pub fn item_claimed_by(&self, id: &[u8]) -> Option<&[u8]> {
        let row = self.items.find(id)?;
        Some(self.players.key(self.items.row(row).value.claimed_by))
    }

    /// Every player with its id, in creation order.
    pub fn players(&self) -> impl ExactSizeIterator<Item = (&[u8], &PlayerState)> {
        self.players.rows()
    }

    /// Every claimed item with the id of its claimant, in claim order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> {
        self.items.rows().map(|(id, item)| (id, self.players.key(item.claimed_by)))
    }

    /// Makes room for `players` players and `items` items with ids of about `id_bytes`
    /// bytes, so that a world loaded up front does not grow on the hot path.
    pub fn reserve(&mut self, players: usize, items: usize, id_bytes: usize) {
        self.players.reserve(players, players * id_bytes);
        self.items.reserve(items, items * id_bytes);
    }

    /// Player row `row`, to be changed: keeps its state first if a snapshot in progress
    /// has not written it yet.
    #[inline]
    fn player_mut(&mut self, row: u32) -> &mut PlayerState {
        let Self { players, capture: c, .. } = self;
        let value = &mut players.row_mut(row).value;
        if c.active && row >= c.next_player && row < c.players {
            let at = &mut c.kept_at[row as usize];
            if *at == 0 {
                c.kept.push(*value);
                *at = c.kept.len() as u32;
            }
        }
        value
    }

    /// Records that `entity` changed because of record `src`.
    #[inline]
    fn touch(&mut self, entity: Entity, src: &RecordMeta) {
        let mark = match entity {
            Entity::Player(row) => &mut self.players.row_mut(row).mark,
            Entity::Item(row) => &mut self.items.row_mut(row).mark,
        };
        if *mark == 0 {
            self.dirty.push(Dirty { entity, src: *src });
            *mark = self.dirty.len() as u32;
        } else {
            self.dirty[*mark as usize - 1].src = *src;
        }
    }

    fn rejected(reason: Reject) -> Outcome {
        Outcome::Rejected(reason as u8)
    }

    /// Rule 6 for living player `p`.
    fn shoot(&mut self, p: u32, target: &[u8], damage: u8, src: &RecordMeta) -> Outcome {
        let Some(t) = self.players.find(target) else {
            return Self::rejected(Reject::UnknownTarget);
        };
        if t == p {
            return Self::rejected(Reject::SelfTarget);
        }
        if !self.players.row(t).value.alive {
            return Self::rejected(Reject::TargetDead);
        }
        let target = self.player_mut(t);
        target.hp = target.hp.saturating_sub(damage);
        let killed = target.hp == 0;
        if killed {
            target.alive = false;
            let player = self.player_mut(p);
            player.score = player.score.saturating_add(1);
        }
        self.touch(Entity::Player(t), src);
        Outcome::Applied
    }

    /// Rule 7 for living player `p`.
    fn loot(&mut self, p: u32, item: &[u8], src: &RecordMeta) -> Outcome {
        if self.items.find(item).is_some() {
            return Self::rejected(Reject::AlreadyClaimed);
        }
        let row = self.items.insert(item, Item { claimed_by: p });
        self.touch(Entity::Item(row), src);
        let player = self.player_mut(p);
        player.loot = player.loot.saturating_add(1);
        Outcome::Applied
    }
}

/// `yaw mod 360` into `[0, 360)`, as the Euclidean remainder.
fn normalize_yaw(yaw: f64) -> f64 {
    let r = yaw.rem_euclid(360.0);
    // A tiny negative yaw rounds up to exactly 360, outside the range; and -0 is 0.
    if r >= 360.0 || r == 0.0 { 0.0 } else { r }
}

impl World for SpecWorld {
    type Event = Event;
    type Update = Update;

    const REJECT_REASONS: &'static [&'static str] = &Reject::LABELS;

    fn apply(&mut self, event: &Event, bytes: &[u8], src: &RecordMeta) -> Outcome {
        let id = event.player.get(bytes);
        let Some(p) = self.players.find(id) else {
            // Rule 1 for a new player, rule 2 for everything else.
            let Action::Spawn { pos } = event.action else {
                return Self::rejected(Reject::UnknownPlayer);
            };
            let p = self.players.insert(id, PlayerState::spawned(pos, event.seq));
            self.touch(Entity::Player(p), src);
            return Outcome::Applied;
        };
        if event.seq <= self.players.row(p).value.seq {
            return Self::rejected(Reject::StaleSeq);
        }
        let player = self.player_mut(p);
        player.seq = event.seq;
        let outcome = match event.action {
            Action::Spawn { pos: [x, y, z] } => {
                (player.x, player.y, player.z) = (x, y, z);
                player.hp = FULL_HP;
                player.alive = true;
                Outcome::Applied
            }
            _ if !player.alive => Self::rejected(Reject::Dead),
            Action::Move { pos: [x, y, z] } => {
                (player.x, player.y, player.z) = (x, y, z);
                Outcome::Applied
            }
            Action::Rotate { yaw, pitch } => {
                player.yaw = normalize_yaw(yaw);
                player.pitch = pitch.clamp(-90.0, 90.0);
                Outcome::Applied
            }
            Action::Shoot { target, damage } => self.shoot(p, target.get(bytes), damage, src),
            Action::Loot { item } => self.loot(p, item.get(bytes), src),
        };
        // The seq advanced whatever the outcome, so the player changed.
        self.touch(Entity::Player(p), src);
        outcome
    }

    fn flush(&mut self, out: &mut Updates<Update>) {
        for Dirty { entity, src } in self.dirty.drain(..) {
            let update = match entity {
                Entity::Player(row) => {
                    let r = self.players.row_mut(row);
                    r.mark = 0;
                    let state = r.value;
                    Update::Player { id: out.push_bytes(self.players.key(row)), state }
                }
                Entity::Item(row) => {
                    let r = self.items.row_mut(row);
                    r.mark = 0;
                    let claimant = r.value.claimed_by;
                    Update::Item {
                        id: out.push_bytes(self.items.key(row)),
                        claimed_by: out.push_bytes(self.players.key(claimant)),
                    }
                }
            };
            out.push(src, update);
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        super::snapshot::write(self, out);
    }

    fn snapshot_begin(&mut self) {
        let c = &mut self.capture;
        c.active = true;
        c.header_written = false;
        c.players = self.players.len() as u32;
        c.items = self.items.len() as u32;
        c.next_player = 0;
        c.next_item = 0;
        c.kept_at.clear();
        c.kept_at.resize(c.players as usize, 0);
        c.kept.clear();
    }

    fn snapshot_continue(&mut self, out: &mut Vec<u8>, budget: usize) -> bool {
        let Self { players, items, capture: c, .. } = self;
        if !c.active {
            return true;
        }
        let start = out.len();
        if !c.header_written {
            super::snapshot::write_header(out, c.players, c.items);
            c.header_written = true;
        }
        while c.next_player < c.players {
            if out.len() - start >= budget {
                return false;
            }
            let row = c.next_player;
            let state = match c.kept_at[row as usize] {
                0 => &players.row(row).value,
                kept => &c.kept[kept as usize - 1],
            };
            super::snapshot::write_player(out, players.key(row), state);
            c.next_player += 1;
        }
        while c.next_item < c.items {
            if out.len() - start >= budget {
                return false;
            }
            let row = c.next_item;
            super::snapshot::write_item(out, items.key(row), items.row(row).value.claimed_by);
            c.next_item += 1;
        }
        c.active = false;
        true
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.capture.active = false;
        self.players.clear();
        self.items.clear();
        self.dirty.clear();
        let result = super::snapshot::read(self, bytes);
        if result.is_err() {
            self.players.clear();
            self.items.clear();
        }
        result
    }

    fn entities(&self) -> usize {
        self.players.len() + self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_yaw;

    #[test]
    fn yaw_normalizes_into_the_half_open_range() {
        for (yaw, want) in [
            (0.0, 0.0),
            (-0.0, 0.0),
            (360.0, 0.0),
            (720.5, 0.5),
            (-90.0, 270.0),
            (-1e-20, 0.0),
            (359.5, 359.5),
            (-360.0, 0.0),
        ] {
            let got = normalize_yaw(yaw);
            assert!((0.0..360.0).contains(&got), "{yaw} -> {got}");
            assert_eq!(got.to_bits(), f64::to_bits(want), "{yaw} -> {got}");
        }
    }
}
