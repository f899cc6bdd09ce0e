//! Updates of the specification's world and their JSON encoding.

use super::world::PlayerState;
use crate::json::{write_bool, write_f64, write_i64, write_str, write_u64};
use crate::{Encoder, RecordMeta, Span};

/// The full state of one entity after a change. Ids are spans into the updates' arena.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// A player's state.
    Player {
        /// The player's id.
        id: Span,
        /// Its state after the change.
        state: PlayerState,
    },
    /// An item's state.
    Item {
        /// The item's id.
        id: Span,
        /// The id of the player that claimed it.
        claimed_by: Span,
    },
}

/// Writes updates as the specification's `player:<id>` / `item:<id>` records.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpecEncoder;

impl Encoder for SpecEncoder {
    type Update = Update;

    fn encode(
        &mut self,
        src: &RecordMeta,
        update: &Update,
        bytes: &[u8],
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) {
        key.clear();
        value.clear();
        match *update {
            Update::Player { id, state } => {
                let id = id.get(bytes);
                key.extend_from_slice(b"player:");
                key.extend_from_slice(id);
                value.extend_from_slice(b"{\"kind\":\"player\",\"id\":");
                write_str(value, id);
                value.extend_from_slice(b",\"x\":");
                write_f64(value, state.x);
                value.extend_from_slice(b",\"y\":");
                write_f64(value, state.y);
                value.extend_from_slice(b",\"z\":");
                write_f64(value, state.z);
                value.extend_from_slice(b",\"yaw\":");
                write_f64(value, state.yaw);
                value.extend_from_slice(b",\"pitch\":");
                write_f64(value, state.pitch);
                value.extend_from_slice(b",\"hp\":");
                write_u64(value, u64::from(state.hp));
                value.extend_from_slice(b",\"alive\":");
                write_bool(value, state.alive);
                value.extend_from_slice(b",\"score\":");
                write_u64(value, state.score);
                value.extend_from_slice(b",\"loot\":");
                write_u64(value, state.loot);
                value.extend_from_slice(b",\"seq\":");
                write_u64(value, state.seq);
            }
            Update::Item { id, claimed_by } => {
                let id = id.get(bytes);
                key.extend_from_slice(b"item:");
                key.extend_from_slice(id);
                value.extend_from_slice(b"{\"kind\":\"item\",\"id\":");
                write_str(value, id);
                value.extend_from_slice(b",\"claimed_by\":");
                write_str(value, claimed_by.get(bytes));
            }
        }
        value.extend_from_slice(b",\"src_partition\":");
        write_u64(value, u64::from(src.partition));
        value.extend_from_slice(b",\"src_offset\":");
        write_i64(value, src.offset);
        value.extend_from_slice(b",\"src_ts\":");
        write_i64(value, src.timestamp_ms);
        value.push(b'}');
    }
}
