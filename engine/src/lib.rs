//! The pure gameshard engine: the parts of the data plane that know nothing of threads,
//! clocks, Kafka or metrics.
//!
//! A game plugs into the pipeline through three roles, one per pipeline thread:
//!
//! - a [`Parser`] turns raw record bytes into events on the IO thread,
//! - a [`World`] holds one partition's state and applies events on the state-machine
//!   thread, emitting coalesced [`Updates`],
//! - an [`Encoder`] turns updates into Kafka keys and values on the publisher thread.
//!
//! [`Game`] ties the three together. The built-in game is [`spec::SpecGame`], the world of
//! the gameshard specification (spawn, move, rotate, shoot, loot).
//!
//! Everything here is deterministic: time and record positions are passed in, never read,
//! so the same records always produce the same state and the same updates. That is what
//! makes recovery by snapshot plus replay exact.

mod batch;
mod game;
pub mod json;
pub mod spec;

pub use batch::{EventBatch, Malformed, Parsed, RecordMeta, Span, Updates};
pub use game::{Encoder, Game, Outcome, Parser, SnapshotError, World};
