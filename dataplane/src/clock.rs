//! Wall-clock readings, for the threads that may read time (never the state machine).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    (unix_ns() / 1_000_000) as i64
}

/// Nanoseconds since the Unix epoch.
pub fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
