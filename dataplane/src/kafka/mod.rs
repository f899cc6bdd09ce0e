//! The Kafka side of the data plane: the consumer the IO thread reads, the producers the
//! publisher writes through, the snapshot topic, the ownership thread that follows the
//! control topic and restores partitions, and the checks made before anything is
//! consumed.

mod context;
pub mod ownership;
pub mod restore;
pub mod setup;
pub mod sink;
pub mod snapshots;
pub mod source;

pub use context::ClientHealth;
