//! Real components started by tests and benchmarks on loopback: a Kafka-compatible broker
//! (tansu), data-plane processes and a Prometheus server.

pub mod broker;
pub mod dataplane;
pub mod kafka;
pub mod prometheus;
pub mod tools;
pub mod zone;
