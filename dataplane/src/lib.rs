//! The gameshard data plane: an IO thread that reads and parses records, one
//! state-machine thread pinned to a core that applies them on a single-threaded smol
//! executor, and a publisher thread that encodes and produces the updates.
//!
//! The engine ([`gameshard_engine`]) holds the game; this crate holds the threads, the
//! queues between them, CPU pinning, metrics and the admin server.

pub mod admin;
pub mod affinity;
pub mod cli;
pub mod clock;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod sink;
pub mod source;

pub use gameshard_engine as engine;
