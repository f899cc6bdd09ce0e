//! Ends a child process when the test process ends, however it ends.
//!
//! A static's `Drop` does not run at exit, and nothing runs after a `kill -9`. So each
//! guarded child has a watchdog: a shell blocked reading a pipe whose only writer is
//! the test process (the pipe is close-on-exec, so no other child inherits it).
//! Whichever way the test process ends, the kernel closes the pipe, the read returns,
//! and the shell kills the child and removes its folder.

use std::path::Path;
use std::process::{Child, Command, Stdio};

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
