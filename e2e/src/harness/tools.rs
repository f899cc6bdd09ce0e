//! Finding the external tools the harness runs, or explaining why a test is skipped.

use std::path::PathBuf;

/// Set by the test command: a missing tool then fails the test instead of skipping it.
pub const REQUIRE_TOOLS: &str = "GAMESHARD_REQUIRE_TOOLS";

/// The path of `name` on `PATH` or in Cargo's `bin` folder.
pub fn find(name: &str) -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(cargo_bin)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// `name`'s path, or `None` after printing why the calling test is skipped. Panics
/// instead when [`REQUIRE_TOOLS`] is set.
pub fn require(name: &str, install: &str) -> Option<PathBuf> {
    if let Some(path) = find(name) {
        return Some(path);
    }
    missing(name, install);
    None
}

/// Reports that `what` is not installed: panics when [`REQUIRE_TOOLS`] is set, and
/// otherwise prints why the calling test is skipped.
pub fn missing(what: &str, install: &str) {
    assert!(std::env::var_os(REQUIRE_TOOLS).is_none(), "{what} is required: {install}");
    skip(&format!("{what} is not installed ({install})"));
}

/// Says on the terminal why the calling test is skipped. Written to the process's
/// standard error directly, so the test harness's output capture does not hide it.
pub fn skip(why: &str) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
}
