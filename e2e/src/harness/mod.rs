//! Real components started by tests and benchmarks on loopback: a Kafka-compatible broker
//! (tansu) and data-plane processes.

pub mod broker;
pub mod dataplane;
pub mod kafka;
pub mod kstreams;
pub mod tools;
pub mod zone;
