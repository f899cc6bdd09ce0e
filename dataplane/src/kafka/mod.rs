//! The Kafka side of the data plane: the consumer the IO thread reads, the producer the
//! publisher writes through, the snapshot topic, and the checks made before anything is
//! consumed.

mod context;
pub mod control;
pub mod setup;
pub mod sink;
pub mod snapshots;
pub mod source;

pub use context::ClientHealth;
