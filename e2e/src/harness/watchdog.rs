//! Child processes that never outlive the test process.
//!
//! A static's `Drop` does not run at exit, and a test process may also end by a panic
//! that aborts, a signal or a timeout's SIGKILL. So a watchdog guards each child: a small
//! shell blocked reading a pipe whose only write end this process holds (Rust opens it
//! close-on-exec, so no child inherits it). However this process ends, the kernel closes
//! that end; the watchdog's read then returns, and it kills what it guards and removes
//! its folder. Two forms:
//!
//! - [`command`] puts a process into the process group of one watchdog per test
//!   process, which removes the harness's scratch folder ([`scratch_dir`]) and kills the
//!   whole group (the control plane, the node agent's pods, operators);
//! - [`Watchdog::guard`] watches one process and its own folder, and ends with that
//!   process (brokers and data planes, which tests kill and restart).
//!
//! (`PR_SET_PDEATHSIG` would need a `pre_exec` hook, which is `unsafe`; neither form
//! needs anything of the kind.)

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use std::os::unix::process::CommandExt as _;

use anyhow::Context as _;

/// The group's watchdog shell: on end of input, remove the scratch folder, then SIGKILL every
/// process of its group, itself included.
const SCRIPT: &str = r#"trap '' INT TERM HUP; read -r _; rm -rf -- "$1"; kill -s KILL 0"#;

struct Group {
    pgid: i32,
    scratch: PathBuf,
    // Never written and never dropped: its closing at exit is the signal.
    _pipe: ChildStdin,
    _child: Child,
}

fn watchdog() -> anyhow::Result<&'static Group> {
    static WATCHDOG: OnceLock<Result<Group, String>> = OnceLock::new();
    WATCHDOG
        .get_or_init(|| start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(anyhow::Error::msg)
}

fn start() -> anyhow::Result<Group> {
    let scratch = std::env::temp_dir().join(format!("gameshard-harness-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("creating the scratch folder {}", scratch.display()))?;
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT, "gameshard-watchdog"])
        .arg(&scratch)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the watchdog shell (sh)")?;
    let pipe = child.stdin.take().context("the watchdog's stdin")?;
    let pgid = i32::try_from(child.id()).context("a pid fits an i32")?;
    Ok(Group { pgid, scratch, _pipe: pipe, _child: child })
}

/// A command for `program` whose process is killed when the test process ends, however
/// it ends.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
    let dog = watchdog()?;
    let mut command = Command::new(program);
    command.process_group(dog.pgid);
    Ok(command)
}

/// A new folder under the scratch folder, removed with it when the test process ends.
pub fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dog = watchdog()?;
    let dir = unique(&dog.scratch, name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn unique(root: &Path, name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    root.join(format!("{name}-{}", NEXT.fetch_add(1, Relaxed)))
}

/// A watchdog over one child process; ended (without touching the child) when dropped.
pub struct Watchdog(Child);

impl Watchdog {
    /// Watches the process `pid`, and removes `folder` (if any) after killing it.
    pub fn guard(pid: u32, folder: Option<&Path>) -> std::io::Result<Self> {
        let mut command = Command::new("sh");
        command
            .args(["-c", r#"read -r _; kill -9 "$1" 2>/dev/null; [ -z "$2" ] || rm -rf "$2""#])
            .arg("gameshard-watchdog")
            .arg(pid.to_string())
            .arg(folder.map(Path::as_os_str).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command.spawn().map(Self)
    }
}

impl Drop for Watchdog {
    // Called once the child is gone and reaped: the watchdog must not kill its pid,
    // which the system may give to another process.
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
