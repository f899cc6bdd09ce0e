//! The binary snapshot of a [`SpecWorld`]: little-endian, versioned, and checked on the
//! way back in so that a damaged snapshot is refused rather than half-restored.
//!
//! ```text
//! magic "GSSW" | version u16 | players u32 | items u32
//! players: id_len u8 | id | x y z yaw pitch f64 | seq score loot u64 | hp u8 | alive u8
//! items:   id_len u8 | id | claimed_by u32 (player number, in the order above)
//! ```

use super::parse::MAX_ID_BYTES;
use super::world::{FULL_HP, Item, PlayerState, SpecWorld};
use crate::SnapshotError;

const MAGIC: &[u8; 4] = b"GSSW";
const VERSION: u16 = 1;

pub(super) fn write(world: &SpecWorld, out: &mut Vec<u8>) {
    let players = world.players.rows();
    let items = world.items.rows();
    out.reserve(14 + players.len() * 96 + items.len() * 24);
    write_header(out, players.len() as u32, items.len() as u32);
    for (id, p) in players {
        write_player(out, id, p);
    }
    for (id, item) in items {
        write_item(out, id, item.claimed_by);
    }
}

/// The header: magic, version and the counts that follow.
pub(super) fn write_header(out: &mut Vec<u8>, players: u32, items: u32) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&players.to_le_bytes());
    out.extend_from_slice(&items.to_le_bytes());
}

pub(super) fn write_player(out: &mut Vec<u8>, id: &[u8], p: &PlayerState) {
    write_id(out, id);
    for v in [p.x, p.y, p.z, p.yaw, p.pitch] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [p.seq, p.score, p.loot] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(p.hp);
    out.push(u8::from(p.alive));
}

pub(super) fn write_item(out: &mut Vec<u8>, id: &[u8], claimed_by: u32) {
    write_id(out, id);
    out.extend_from_slice(&claimed_by.to_le_bytes());
}

fn write_id(out: &mut Vec<u8>, id: &[u8]) {
    out.push(id.len() as u8);
    out.extend_from_slice(id);
}

/// Reads a snapshot into the empty `world`.
pub(super) fn read(world: &mut SpecWorld, bytes: &[u8]) -> Result<(), SnapshotError> {
    let mut r = Reader(bytes);
    if r.take(4)? != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u16::from_le_bytes(r.array()?);
    if version != VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let players = r.u32()? as usize;
    let items = r.u32()? as usize;
    // Each player takes at least 68 bytes and each item 6: refuse counts the bytes
    // cannot hold before reserving memory for them.
    if players.saturating_mul(68).saturating_add(items.saturating_mul(6)) > r.0.len() {
        return Err(SnapshotError::Truncated);
    }
    world.reserve(players, items, 8);
    for _ in 0..players {
        let id = r.id()?;
        let [x, y, z, yaw, pitch] = [r.f64()?, r.f64()?, r.f64()?, r.f64()?, r.f64()?];
        let [seq, score, loot] = [r.u64()?, r.u64()?, r.u64()?];
        let hp = r.u8()?;
        let alive = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(SnapshotError::Corrupt("player alive flag is not 0 or 1")),
        };
        if ![x, y, z, yaw, pitch].iter().all(|v| v.is_finite()) {
            return Err(SnapshotError::Corrupt("player has a non-finite coordinate"));
        }
        if hp > FULL_HP || alive != (hp > 0) || seq > i64::MAX as u64 {
            return Err(SnapshotError::Corrupt("player state is out of range"));
        }
        if world.players.find(id).is_some() {
            return Err(SnapshotError::Corrupt("duplicate player id"));
        }
        let state = PlayerState { x, y, z, yaw, pitch, seq, score, loot, hp, alive };
        world.players.insert(id, state);
    }
    for _ in 0..items {
        let id = r.id()?;
        let claimed_by = r.u32()?;
        if claimed_by as usize >= players {
            return Err(SnapshotError::Corrupt("item claimed by an unknown player"));
        }
        if world.items.find(id).is_some() {
            return Err(SnapshotError::Corrupt("duplicate item id"));
        }
        world.items.insert(id, Item { claimed_by });
    }
    if !r.0.is_empty() {
        return Err(SnapshotError::Corrupt("trailing bytes after the last item"));
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, SnapshotError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    fn id(&mut self) -> Result<&'a [u8], SnapshotError> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > MAX_ID_BYTES {
            return Err(SnapshotError::Corrupt("id length out of range"));
        }
        self.take(len)
    }
}
