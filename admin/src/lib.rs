//! The admin HTTP server of `gameshard-dataplane` and `gameshard-operator`: a few `GET`
//! routes (metrics, probes, status) served from a thread of its own.
//!
//! The binaries own what the routes say (their health, their metrics, their status
//! JSON); this crate owns how it is served: [`Routes`] maps paths to handlers, and
//! [`Server`] serves them with hyper's HTTP/1 server.
//!
//! # Bounds
//!
//! A probe must never wait behind another client. Every connection is served
//! concurrently with the others, and each is bounded ([`Config`]):
//!
//! - its request head must arrive within [`Config::header_read_timeout`] (hyper's own
//!   header timeout), so a client that trickles its request, or sends nothing, is cut off;
//! - the whole exchange, from accepting the connection to writing the last byte of the
//!   response, must end within [`Config::request_timeout`], so a client that does not
//!   read its response is cut off too;
//! - at most [`Config::max_connections`] connections are open at once; past that the
//!   server stops accepting (the kernel's backlog holds the next ones) until one ends,
//!   which the two timeouts above guarantee.
//!
//! Each connection carries one request and is then closed (no keep-alive). Probes and
//! scrapes come a few times a second at most, so a connection per request costs
//! nothing that matters, and it keeps the life of every connection within one
//! request's bound: an idle kept-alive connection can neither outlive the timeouts nor
//! hold one of the capped slots.
//!
//! # Executor
//!
//! The server runs on smol's parts: an `async-executor` `LocalExecutor` on the admin
//! thread runs one task per connection, `async-io` provides the non-blocking sockets and
//! the timers, and `smol-hyper` (from the smol-rs project) adapts them to hyper's
//! runtime traits. The data plane already runs smol for its state machine, so the
//! admin server brings no second runtime into it: no tokio reactor, timer wheel or
//! worker threads (hyper depends on tokio's `sync` feature only, for its channels). A
//! current-thread tokio runtime would have served as well, at the price of tokio's
//! runtime in a binary that has none. The operator runs tokio for kube; its admin
//! server costs it these few small crates, and both binaries serve through one
//! implementation.
//!
//! `async-io`'s reactor is one per process: a thread blocked in `smol::block_on` with
//! nothing to run may be the one that waits on it, and then wakes the admin thread when
//! an admin socket is ready. The data plane's pinned state machine does so only while
//! it is idle, and an admin request costs it one wake-up.
//!
//! Handlers run on the admin thread, one at a time, and must be quick (rendering a
//! metrics page or a status document): they hold up every other connection while they
//! run.

mod routes;
mod server;

pub use http::StatusCode;
pub use routes::{JSON, PROMETHEUS_TEXT, Reply, Routes, TEXT};
pub use server::{Config, Server};
