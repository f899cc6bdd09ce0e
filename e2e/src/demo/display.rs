//! The demo's terminal output: a few lines redrawn each second (or one line a second
//! when the output is not a terminal), and the summary at the end. Plain text and ANSI
//! cursor movement: a handful of lines needs no TUI crate.

use std::fmt::Write as _;
use std::io::Write as _;

use gameshard_operator::local::Status;

use super::Summary;
use super::monitor::{Decided, Sample};

/// Decisions shown under the live figures.
const RECENT: usize = 4;

/// Draws the live figures.
pub struct Live {
    terminal: bool,
    drawn: usize,
    file: String,
}

impl Live {
    /// Redraws in place when `terminal`; names the file to edit in its header.
    pub fn new(terminal: bool, file: String) -> Self {
        Self { terminal, drawn: 0, file }
    }

    /// Shows one second.
    pub fn show(&mut self, sample: &Sample, decided: &[Decided], status: &Status) {
        let target = status.shard.as_ref().map_or(0.0, |s| s.spec.latency.p99_target_ms);
        let mode = status
            .shard
            .as_ref()
            .map_or_else(String::new, |s| format!("{:?}", s.spec.autoscaling.mode));
        let p99 = sample.p99_ms.map_or_else(|| "-".to_owned(), |p| format!("{p:.1} ms"));
        let breach = match sample.p99_ms {
            Some(p) if p > target => "ABOVE target",
            Some(_) => "under target",
            None => "",
        };
        let phase = sample.phase.unwrap_or(if sample.t < 0.0 { "lead-in" } else { "draining" });
        if !self.terminal {
            let owners: Vec<String> =
                sample.owners.iter().map(|(p, o)| format!("{p}:{}", short(o))).collect();
            println!(
                "t={:>6.1}s {phase:<8} offered {:>8.0}/s processed {:>8.0}/s p99 {p99:>10} (target {target} ms) replicas {} pods {} map [{}] in flight {}",
                sample.t,
                sample.offered,
                sample.processed,
                sample.replicas,
                sample.pods.len(),
                owners.join(" "),
                sample.in_flight.len()
            );
            return;
        }
        let mut out = String::new();
        let _ =
            writeln!(out, "gameshard demo   t = {:.0} s   phase: {phase}   mode: {mode}", sample.t);
        let _ = writeln!(out, "  edit {} to change the target, bounds or mode", self.file);
        let _ = writeln!(
            out,
            "  events/s   offered {:>9.0}   processed {:>9.0}",
            sample.offered, sample.processed
        );
        let auto =
            sample.autoscaler_p99_ms.map_or_else(|| "-".to_owned(), |p| format!("{p:.1} ms"));
        let _ = writeln!(
            out,
            "  p99        {p99:>10}   target {target} ms   {breach}   (autoscaler read {auto})"
        );
        let pods: Vec<String> = sample
            .pods
            .iter()
            .map(|(n, ready)| format!("{n}{}", if *ready { "" } else { " (starting)" }))
            .collect();
        let _ = writeln!(out, "  replicas   {}   running: {}", sample.replicas, pods.join(", "));
        let owners: Vec<String> = sample.owners.iter().map(|(p, o)| format!("{p}→{o}")).collect();
        let _ = writeln!(out, "  partitions {}   (epoch {})", owners.join("  "), sample.epoch);
        let moving: Vec<String> =
            sample.in_flight.iter().map(|(p, from, to)| format!("{p}: {from} → {to}")).collect();
        let _ = writeln!(
            out,
            "  handoffs   {} in flight{}{}",
            moving.len(),
            if moving.is_empty() { "" } else { ": " },
            moving.join(", ")
        );
        let _ = writeln!(out, "  decisions");
        let recent = &decided[decided.len().saturating_sub(RECENT)..];
        for d in recent {
            let _ = writeln!(out, "    {:>6.1} s  {:<18} {}", d.t, d.reason, d.note);
        }
        for _ in recent.len()..RECENT {
            out.push('\n');
        }
        let mut stdout = std::io::stdout().lock();
        if self.drawn > 0 {
            let _ = write!(stdout, "\x1b[{}F\x1b[J", self.drawn);
        }
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
        self.drawn = out.lines().count();
    }
}

fn short(pod: &str) -> &str {
    pod.rsplit('-').next().unwrap_or(pod)
}

/// The summary for people.
pub fn summary(s: &Summary) -> String {
    let ms = |p: Option<f64>| p.map_or_else(|| "-".to_owned(), |p| format!("{p:.1} ms"));
    let mut out = String::new();
    let _ = writeln!(out, "\nSummary (p99 target {} ms)", s.target_p99_ms);
    for p in &s.phases {
        let _ = writeln!(
            out,
            "  {:<7} {:>5.0}-{:<5.0} s  {:>8.0} events/s offered   p99 {:>10}   worst second {:>10}   replicas at end {}",
            p.name,
            p.start_s,
            p.end_s,
            p.rate,
            ms(p.p99_ms),
            ms(p.max_p99_ms_1s),
            p.replicas_at_end
        );
    }
    let _ = writeln!(out, "  decisions:");
    if s.decisions.is_empty() {
        let _ = writeln!(out, "    none");
    }
    for (t, reason, note) in &s.decisions {
        let _ = writeln!(out, "    {t:>6.1} s  {reason:<18} {note}");
    }
    let opt = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.1} s"));
    let _ = writeln!(
        out,
        "  scale-ups {}, scale-downs {}, most replicas {}, handoffs {} (at most {} in flight)",
        s.scale_ups, s.scale_downs, s.max_replicas, s.handoffs, s.max_handoffs_in_flight
    );
    if s.breaches_held > 0 {
        let _ = writeln!(
            out,
            "  breaches held because the processes kept up with their records: {}",
            s.breaches_held
        );
    }
    let _ = writeln!(
        out,
        "  first decision after the breach began: {}; p99 back under the target {} after {} (worst second after that {})",
        opt(s.first_decision_after_breach_s),
        opt(s.p99_recovery_s),
        s.p99_recovery_from,
        ms(s.max_p99_ms_1s_after_recovery)
    );
    let _ = writeln!(out, "  p99 measured from: {}", s.p99_source);
    if let Some(cores) = s.pod_cpu {
        let _ = writeln!(
            out,
            "  each data-plane process limited to {cores} cores (a cgroup CPU quota)"
        );
    }
    let _ = writeln!(
        out,
        "  broker warmed for {:.1} s before the shard started{}",
        s.broker_warm_up_s,
        if s.broker_warm { "" } else { " (still slow at the limit)" }
    );
    match s.final_state_exact {
        Some(exact) => {
            let _ = writeln!(
                out,
                "  model check: {} events, {} updates, {} wrong; final state {}{}",
                s.events,
                s.updates,
                s.wrong_updates,
                if exact { "exact" } else { "NOT exact" },
                s.check_problem.as_ref().map_or_else(String::new, |p| format!(" ({p})"))
            );
        }
        None => {
            let _ = writeln!(out, "  model check: skipped");
        }
    }
    out
}
