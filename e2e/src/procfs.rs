//! What `/proc` says about the processes a benchmark runs: their CPU time and peak
//! memory, so that a report can say how the machine's cores were shared.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, 100 on every
/// Linux architecture this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user and system) the process `pid` has used, its threads included.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The user and system times of a `/proc/<pid>/stat` line, in seconds.
fn stat_times(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may hold spaces: fields count from its end.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are the 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// CPU seconds the whole machine has been busy (every state of `/proc/stat`'s `cpu`
/// line but idle and iowait), all CPUs together.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    let (idle, iowait) = (ticks.get(3)?, ticks.get(4)?);
    Some((ticks.iter().sum::<f64>() - idle - iowait) / TICKS_PER_SEC)
}

/// The parent of process `pid`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.split_whitespace().nth(1)?.parse().ok()
}

/// The first child of this process whose command line contains `needle`.
pub fn child_named(needle: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        if parent(pid)? != me {
            return None;
        }
        let cmdline =
            std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        cmdline.contains(needle).then_some(pid)
    })
}

/// Peak resident set size of process `pid` so far, in MB.
pub fn max_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Measures, over one phase of a benchmark, how many cores the broker, the process under
/// test and this process (the load generator and the consumers that measure) each used.
pub struct CpuClock {
    broker: Option<u32>,
    phase: Option<Phase>,
}

/// Where a phase started.
struct Phase {
    at: Instant,
    subject: Option<u32>,
    cpu: [Option<f64>; 4],
}

impl CpuClock {
    /// A clock for the broker process `broker` (when known).
    pub fn new(broker: Option<u32>) -> Self {
        Self { broker, phase: None }
    }

    fn now(&self, subject: Option<u32>) -> [Option<f64>; 4] {
        [
            self.broker.and_then(cpu_seconds),
            subject.and_then(cpu_seconds),
            cpu_seconds(std::process::id()),
            machine_busy_seconds(),
        ]
    }

    /// Starts a phase; `subject` is the process under test, if any.
    pub fn start(&mut self, subject: Option<u32>) {
        self.phase = Some(Phase { at: Instant::now(), subject, cpu: self.now(subject) });
    }

    /// Ends the phase: its wall time, and the cores used over it by the broker, by the
    /// process under test, by this process, and by the whole machine (so that what else
    /// ran shows too).
    pub fn phase(&mut self) -> Value {
        let Some(phase) = self.phase.take() else { return Value::Null };
        let wall = phase.at.elapsed().as_secs_f64();
        let [broker, subject, harness, machine] = self.now(phase.subject);
        let [broker0, subject0, harness0, machine0] = phase.cpu;
        let cores = |now: Option<f64>, then: Option<f64>| {
            now.zip(then).map(|(now, then)| ((now - then) / wall * 100.0).round() / 100.0)
        };
        json!({
            "seconds": (wall * 100.0).round() / 100.0,
            "broker": cores(broker, broker0),
            "subject": cores(subject, subject0),
            "harness": cores(harness, harness0),
            "machine": cores(machine, machine0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::stat_times;

    #[test]
    fn times_are_read_after_a_command_name_with_spaces() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000";
        assert_eq!(stat_times(stat), Some(3.0));
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(super::cpu_seconds(std::process::id()).is_some_and(|s| s > 0.0));
    }
}
