//! A tansu broker on loopback, in memory or on a `SQLite` file.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::tools;

/// How the broker stores its data.
#[derive(Clone, Debug)]
pub enum Storage {
    /// In memory: gone when the broker stops.
    Memory,
    /// A `SQLite` database file: survives a restart.
    Sqlite(PathBuf),
}

/// A running tansu broker, stopped when dropped.
pub struct Broker {
    binary: PathBuf,
    storage: Storage,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

/// How the harness finds and installs tansu.
pub const TANSU_INSTALL: &str =
    "cargo install tansu --version 0.6.0 --features dynostore,libsql --locked";

impl Broker {
    /// Starts a broker with `storage` on a free loopback port, or returns `None` (after
    /// saying why) when tansu is not installed.
    pub fn start(storage: Storage) -> anyhow::Result<Option<Self>> {
        let Some(binary) = tools::require("tansu", TANSU_INSTALL) else { return Ok(None) };
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("gameshard-tansu-{port}.log"));
        let mut broker = Self { binary, storage, port, log, child: None };
        broker.spawn()?;
        Ok(Some(broker))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let storage = match &self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            // tansu drops the first slash of the path after the scheme.
            Storage::Sqlite(path) => format!("sqlite:///{}", path.display()),
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &storage])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "tansu did not listen on port {} within 20 s; see {}",
                    self.port,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The bootstrap address, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker abruptly (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// The broker's log file.
    pub fn log(&self) -> &std::path::Path {
        &self.log
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port nobody listens on now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
