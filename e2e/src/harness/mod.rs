//! Real components started by tests and benchmarks on loopback: an Apache Kafka broker
//! and data-plane processes.

pub mod broker;
pub mod dataplane;
pub mod kafka;
pub mod kstreams;
pub mod tls;
pub mod tools;
pub mod watchdog;
pub mod zone;
