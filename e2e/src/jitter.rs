//! Platform jitter: how long a thread that never blocks is kept off its CPU, per CPU.
//!
//! A latency tail cannot be shorter than the stalls the machine itself inflicts (a
//! hypervisor descheduling a virtual CPU, interrupt storms, housekeeping). The benchmark
//! measures them next to its results so that a tail can be read against this floor.

use std::time::{Duration, Instant};

use gameshard_dataplane::affinity;

/// Stalls seen on one CPU.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CpuJitter {
    /// The CPU.
    pub cpu: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Gaps longer than 100 µs between two consecutive clock reads.
    pub stalls_over_100us: u64,
    /// Gaps longer than 500 µs.
    pub stalls_over_500us: u64,
    /// Gaps longer than 1 ms.
    pub stalls_over_1ms: u64,
    /// The longest gap, in microseconds.
    pub max_stall_us: f64,
}

/// Spins one thread pinned to each of `cpus` for `duration`, all at once, and reports
/// the gaps each saw.
pub fn measure(cpus: &[usize], duration: Duration) -> Vec<CpuJitter> {
    let threads: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            std::thread::spawn(move || {
                let pinned = affinity::pin_current_thread(&[cpu]).is_ok();
                let mut j = CpuJitter {
                    cpu,
                    seconds: duration.as_secs_f64(),
                    stalls_over_100us: 0,
                    stalls_over_500us: 0,
                    stalls_over_1ms: 0,
                    max_stall_us: 0.0,
                };
                if !pinned {
                    return j;
                }
                let start = Instant::now();
                let mut last = start;
                let mut max = Duration::ZERO;
                while last - start < duration {
                    let now = Instant::now();
                    let gap = now - last;
                    if gap > Duration::from_micros(100) {
                        j.stalls_over_100us += 1;
                        j.stalls_over_500us += u64::from(gap > Duration::from_micros(500));
                        j.stalls_over_1ms += u64::from(gap > Duration::from_millis(1));
                        max = max.max(gap);
                    }
                    last = now;
                }
                j.max_stall_us = max.as_secs_f64() * 1e6;
                j
            })
        })
        .collect();
    threads.into_iter().filter_map(|t| t.join().ok()).collect()
}
