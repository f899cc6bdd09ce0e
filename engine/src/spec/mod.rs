//! The built-in world of the gameshard specification: players that spawn, move, rotate,
//! shoot each other and loot items, one independent world per input partition.
//!
//! - [`SpecParser`] reads both record framings (NDJSON and JSON arrays) with simd-json
//!   and validates every field,
//! - [`SpecWorld`] applies the rules in their specified order,
//! - [`SpecEncoder`] writes the `player:<id>` / `item:<id>` updates.

mod event;
mod parse;
mod snapshot;
mod table;
mod update;
mod world;

pub use event::{Action, Event, Reject};
pub use parse::{MAX_ID_BYTES, SpecParser};
pub use update::{SpecEncoder, Update};
pub use world::{FULL_HP, PlayerState, SpecWorld};

use crate::Game;

/// The specification's game, ready to plug into the pipeline.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpecGame;

impl Game for SpecGame {
    type Event = Event;
    type Update = Update;
    type Parser = SpecParser;
    type World = SpecWorld;
    type Encoder = SpecEncoder;

    fn parser(&self) -> SpecParser {
        SpecParser::new()
    }

    fn world(&self) -> SpecWorld {
        SpecWorld::new()
    }

    fn encoder(&self) -> SpecEncoder {
        SpecEncoder
    }
}
