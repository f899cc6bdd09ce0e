//! Child processes that never outlive the test process.
//!
//! A static's `Drop` does not run at exit, and a test process may also end by a panic
//! that aborts, a signal or a timeout's SIGKILL. So the first use starts a watchdog: a
//! small shell that leads a process group of its own and blocks reading a pipe whose
//! only write end this process holds (Rust opens it close-on-exec, so no child inherits
//! it). However this process ends, the kernel closes that end; the watchdog's read then
//! returns, and it removes the harness's scratch folder and kills its whole process
//! group. Every process started through [`command`] joins that group.
//!
//! (`PR_SET_PDEATHSIG` would need a `pre_exec` hook, which is `unsafe`; the group needs
//! nothing of the kind.)

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use std::os::unix::process::CommandExt as _;

use anyhow::Context as _;

/// The watchdog shell: on end of input, remove the scratch folder, then SIGKILL every
/// process of its group, itself included.
const SCRIPT: &str = r#"trap '' INT TERM HUP; read -r _; rm -rf -- "$1"; kill -s KILL 0"#;

struct Watchdog {
    pgid: i32,
    scratch: PathBuf,
    // Never written and never dropped: its closing at exit is the signal.
    _pipe: ChildStdin,
    _child: Child,
}

fn watchdog() -> anyhow::Result<&'static Watchdog> {
    static WATCHDOG: OnceLock<Result<Watchdog, String>> = OnceLock::new();
    WATCHDOG
        .get_or_init(|| start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(anyhow::Error::msg)
}

fn start() -> anyhow::Result<Watchdog> {
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
    Ok(Watchdog { pgid, scratch, _pipe: pipe, _child: child })
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
