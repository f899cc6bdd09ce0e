//! The Kafka Streams peer (`peers/kstreams/`): the specification's world as a Kafka
//! Streams application, run as a JVM next to the data plane, for the benchmark's
//! comparison and the test that holds it to the reference model.
//!
//! Its jar is built (or found up to date) by `peers/kstreams/build` once per process,
//! as the data plane's binary is, so a test never runs a stale peer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::tools;
use super::zone::TempDir;

/// What installs the peer's build tools.
pub const KSTREAMS_INSTALL: &str = "run scripts/setup (a Java 17 runtime and Maven; it builds \
    peers/kstreams into peers/kstreams/target)";

/// The line the peer prints once every stream thread runs.
const RUNNING: &str = "gameshard-kstreams: RUNNING";

/// The peer's folder in the repository.
fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("peers").join("kstreams")
}

/// The peer's jar, built when its sources changed; `None` (after saying why the calling
/// test is skipped, or panicking under `GAMESHARD_REQUIRE_TOOLS`) without Java or Maven.
pub fn jar() -> anyhow::Result<Option<PathBuf>> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    for tool in ["java", "mvn"] {
        if tools::find(tool).is_none() {
            tools::missing(tool, KSTREAMS_INSTALL);
            return Ok(None);
        }
    }
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map(Some)
        .map_err(anyhow::Error::msg)
}

fn build() -> anyhow::Result<PathBuf> {
    let script = folder().join("build");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let jar = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    if !jar.is_file() {
        bail!("{} is missing after the build", jar.display());
    }
    Ok(jar)
}

/// Where the peer reads and writes.
#[derive(Clone, Debug)]
pub struct Topics {
    /// Bootstrap servers.
    pub brokers: String,
    /// The Streams application id: its consumer group and its changelog topics' prefix.
    pub application_id: String,
    /// The input topic.
    pub input: String,
    /// The output topic.
    pub output: String,
    /// The dead-letter topic, if any.
    pub dead_letters: Option<String>,
    /// Extra Kafka Streams or client settings, `KEY=VALUE` (the peer's `--config`).
    pub config: Vec<String>,
}

/// A running peer, killed (with its state folder removed) when dropped.
pub struct Peer {
    jvm: Option<Child>,
    watchdog: Option<Child>,
    log: PathBuf,
    _state: TempDir,
}

impl Peer {
    /// Starts the peer from `jar` on `topics`, with its state stores in a new folder.
    pub fn start(jar: &Path, topics: &Topics) -> anyhow::Result<Self> {
        let state = TempDir::new("kstreams-state")?;
        let log = state.0.with_extension("log");
        let out = std::fs::File::create(&log)?;
        let mut command = Command::new(tools::find("java").context("java is not on PATH")?);
        command
            // Kafka Streams' own defaults otherwise: a G1 heap sized by the JVM, RocksDB
            // off-heap.
            .arg("-jar")
            .arg(jar)
            .args(["--bootstrap-servers", &topics.brokers])
            .args(["--application-id", &topics.application_id])
            .args(["--input-topic", &topics.input])
            .args(["--output-topic", &topics.output])
            .arg("--state-dir")
            .arg(&state.0);
        if let Some(dead) = &topics.dead_letters {
            command.args(["--dlq-topic", dead]);
        }
        for setting in &topics.config {
            command.args(["--config", setting]);
        }
        let jvm = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting the Kafka Streams peer")?;
        // The JVM must not outlive this process however it ends (a static's or a
        // panicking test's `Drop` may not run): a shell blocked on a pipe that only this
        // process writes kills it once the pipe closes.
        let watchdog = Command::new("sh")
            .args(["-c", r#"read -r _; kill -9 "$1" 2>/dev/null"#])
            .arg("gameshard-kstreams-watchdog")
            .arg(jvm.id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the peer's watchdog")?;
        Ok(Self { jvm: Some(jvm), watchdog: Some(watchdog), log, _state: state })
    }

    /// The peer's log file (its standard output and error).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.jvm.as_ref().map(Child::id)
    }

    /// Waits until every stream thread runs (the peer's `RUNNING` line).
    pub fn wait_running(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(RUNNING) {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "the Kafka Streams peer did not run within {timeout:?}; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error when the JVM has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.jvm.as_mut().and_then(|j| j.try_wait().ok().flatten()) {
            bail!("the Kafka Streams peer exited ({status}); see {}", self.log.display());
        }
        Ok(())
    }

    /// Stops the peer with SIGTERM and waits until Kafka Streams has closed (killing it
    /// after `timeout`); an error unless it closed cleanly. The JVM exits with status
    /// 143 after SIGTERM even when its shutdown hook completed, so a clean close is told
    /// by Kafka Streams' own last state transition.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let Some(mut jvm) = self.jvm.take() else { bail!("the peer is not running") };
        kill(Pid::from_raw(jvm.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = jvm.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = jvm.kill();
                let _ = jvm.wait();
                self.end_watchdog();
                bail!(
                    "the peer did not stop within {timeout:?} of SIGTERM; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.end_watchdog();
        let closed = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("State transition from PENDING_SHUTDOWN to NOT_RUNNING");
        if !(closed && (status.success() || status.code() == Some(143))) {
            bail!("the peer did not close cleanly ({status}); see {}", self.log.display());
        }
        Ok(())
    }

    fn end_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut jvm) = self.jvm.take() {
            let _ = jvm.kill();
            let _ = jvm.wait();
        }
        // The log stays, as the data plane's do, for the failure that names it.
        self.end_watchdog();
    }
}
