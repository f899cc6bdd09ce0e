//! Real components started by tests and benchmarks on loopback: an Apache Kafka broker,
//! data-plane processes, a Prometheus server, and a Kubernetes control plane with a node
//! agent.

pub mod binary;
pub mod broker;
pub mod chart;
pub mod controlplane;
pub mod controltopic;
pub mod dataplane;
pub mod helm;
pub mod kafka;
pub mod kstreams;
pub mod nodeagent;
pub mod operator;
pub mod prometheus;
pub mod tls;
pub mod tools;
pub mod watchdog;
pub mod zone;
