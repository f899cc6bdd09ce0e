//! A `gameshard-operator run` process, as a local stand-in for the chart's Deployment:
//! it talks to the API server through a kubeconfig, serves its admin port on loopback,
//! and dies with the test process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::broker::free_port;
use super::{binary, dataplane, watchdog};

/// The `gameshard-operator` binary of this build profile.
pub fn binary() -> anyhow::Result<PathBuf> {
    binary::cargo_binary("gameshard-operator", "gameshard-operator")
}

/// A running operator, killed when dropped.
pub struct Operator {
    child: Option<Child>,
    admin: SocketAddr,
    log: PathBuf,
}

impl Operator {
    /// Starts `gameshard-operator` with `args` (the Deployment's, whose
    /// `--metrics-addr` is replaced by a free loopback port) and `env` (plus
    /// `KUBECONFIG`), logging to a file.
    pub fn start(
        kubeconfig: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let admin: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut args = args.to_vec();
        match args.iter().position(|a| a == "--metrics-addr") {
            Some(i) if i + 1 < args.len() => args[i + 1] = admin.to_string(),
            _ => args.extend(["--metrics-addr".to_owned(), admin.to_string()]),
        }
        let log = watchdog::scratch_dir("operator")?.join("operator.log");
        let out = std::fs::File::create(&log)?;
        let child = watchdog::command(binary()?)?
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting gameshard-operator")?;
        Ok(Self { child: Some(child), admin, log })
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin server's `/metrics` page.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let (code, body) = dataplane::get(self.admin, "/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("the operator was stopped"),
        }
    }

    /// Kills the process with SIGKILL: no release of its lease, nothing.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("the operator is not running") };
        kill(Pid::from_raw(i32::try_from(child.id())?), Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the operator did not exit within {timeout:?} of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
    }
}
