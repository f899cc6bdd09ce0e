//! A `gameshard-dataplane` process, with its admin server on a free loopback port.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::broker::free_port;
use super::watchdog::Watchdog;

/// The `gameshard-dataplane` binary of this build profile, built (or found up to date)
/// once per test process so that tests never run a stale binary.
pub fn binary() -> anyhow::Result<PathBuf> {
    super::binary::cargo_binary("gameshard-dataplane", "gameshard-dataplane")
}

/// A running data plane, killed when dropped.
pub struct Dataplane {
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    admin: SocketAddr,
    log: PathBuf,
    broker_log: Option<String>,
}

impl Dataplane {
    /// Starts the data plane with `args` (the admin address is added), logging to a file.
    pub fn start(args: &[String]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let admin: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::env::temp_dir().join(format!("gameshard-dataplane-{port}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(binary()?)
            .args(args)
            .args(["--metrics-addr", &admin.to_string()])
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting gameshard-dataplane")?;
        // A test process killed outright must not leave its data planes running.
        let watchdog = Watchdog::guard(child.id(), None);
        let mut dp = Self { child: Some(child), watchdog: None, admin, log, broker_log: None };
        dp.watchdog = Some(watchdog.context("starting the data plane's watchdog")?);
        Ok(dp)
    }

    /// Names the broker's log file in this data plane's failure messages.
    #[must_use]
    pub fn with_broker_log(mut self, path: &str) -> Self {
        self.broker_log = Some(path.to_owned());
        self
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log so far, followed by where the broker's log is, for failure messages.
    pub fn report(&self) -> String {
        let mut text = format!("data plane log ({}):\n{}", self.log.display(), self.log_text());
        if let Some(broker) = &self.broker_log {
            let _ = writeln!(text, "(broker log: {broker})");
        }
        text
    }

    /// Where its admin server (`/metrics`, `/status`) listens.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `GET path` on the admin server: status code and body.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        get(self.admin, path)
    }

    /// `/status` as JSON.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let (code, body) = self.get("/status")?;
        if code != 200 {
            bail!("/status answered {code}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The sum of the samples on `/metrics` whose series starts with `series` (a family
    /// name, or a name with its first labels: `name{shard="a",partition="1"`).
    pub fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let (code, page) = self.get("/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(page
            .lines()
            // The series itself, not a longer name it is the start of.
            .filter(|l| {
                l.starts_with(series)
                    && matches!(l.as_bytes().get(series.len()), Some(b' ' | b'{' | b',' | b'}'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.wait(timeout, "ready", |d| Ok(d.get("/readyz")?.0 == 200))
    }

    /// Waits until every (partition, offset) in `targets` is processed.
    pub fn wait_processed(
        &mut self,
        targets: &[(u32, i64)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.wait_offsets("processed", targets, timeout)
    }

    /// Waits until every (partition, offset) in `targets` is committed.
    pub fn wait_committed(
        &mut self,
        targets: &[(u32, i64)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.wait_offsets("committed", targets, timeout)
    }

    /// Waits until `/status` shows offset `field` of every partition in `targets` at
    /// least at its target.
    fn wait_offsets(
        &mut self,
        field: &'static str,
        targets: &[(u32, i64)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.wait(timeout, field, |d| {
            let status = d.status()?;
            let reached = |p: u32| {
                status["partitions"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|e| e["partition"] == p))
                    .and_then(|e| e[field].as_i64())
            };
            Ok(targets.iter().all(|&(p, target)| reached(p).is_some_and(|o| o >= target)))
        })
    }

    fn wait(
        &mut self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if matches!(done(self), Ok(true)) {
                return Ok(());
            }
            if let Some(status) = self.exited()? {
                bail!("the data plane exited ({status}) before it was {what}; {}", self.report());
            }
            if Instant::now() > deadline {
                let status = self.get("/status").map(|(_, body)| body).unwrap_or_default();
                bail!(
                    "the data plane was not {what} within {timeout:?}; status:\n{status}\n{}",
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let status = match &mut self.child {
            Some(child) => child.try_wait()?,
            None => bail!("the data plane was stopped"),
        };
        if status.is_some() {
            // Reaped: its pid may go to another process.
            self.watchdog = None;
        }
        Ok(status)
    }

    /// Peak resident set size of the process so far, in MB.
    pub fn max_rss_mb(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
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

    /// Stops the process where it is (SIGSTOP), as a stalled or partitioned pod would
    /// be; [`Dataplane::resume`] lets it go on.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the data plane is not running")?;
        kill(Pid::from_raw(child.id() as i32), signal)?;
        Ok(())
    }

    /// Kills the process with SIGKILL: no drain, no snapshot, no commit.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.watchdog = None;
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("the data plane is not running") };
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.watchdog = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.watchdog = None;
                bail!(
                    "the data plane did not exit within {timeout:?} of SIGTERM; {}",
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `GET path` on `addr`: status code and body.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: gameshard\r\n\r\n")?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP head")?;
    let code =
        head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status code")?;
    Ok((code, body.to_owned()))
}
