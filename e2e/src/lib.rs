//! Everything that exercises gameshard from the outside: a synthetic workload of the
//! specification's events, an independent reference model of its semantics, the
//! baseline the benchmark compares against, and the harness that starts real
//! components for end-to-end tests.

pub mod alloc;
pub mod baseline;
pub mod demo;
pub mod endtoend;
pub mod handoffbench;
pub mod harness;
pub mod jitter;
pub mod loadgen;
pub mod model;
pub mod procfs;
pub mod rng;
pub mod scenario;
pub mod stages;
pub mod verify;
pub mod workload;
