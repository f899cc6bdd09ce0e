//! CPU limits for local mode's data-plane processes, enforced as a kubelet enforces a
//! container's `limits.cpu`: a CFS quota on a cgroup of the process's own. A process
//! over its quota is throttled until the next period, so a pod given less CPU than its
//! load needs falls behind on this machine as it would on a node.
//!
//! The cgroup `cpu` controller is found in `/proc/self/mountinfo`: cgroup v2 where the
//! unified hierarchy offers it (`cpu.max`), otherwise the v1 `cpu` hierarchy
//! (`cpu.cfs_quota_us`). The groups are made under `gameshard-local-<pid>` at the
//! hierarchy's root and removed once their processes are gone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The CFS period, as a kubelet sets it.
const PERIOD_US: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A CPU limit for each process put under it, in a group of this process's own.
#[derive(Debug)]
pub struct CpuLimits {
    version: Version,
    /// `gameshard-local-<pid>` in the hierarchy.
    dir: PathBuf,
    quota_us: u64,
}

impl CpuLimits {
    /// Limits of `cores` each (fractions allowed). Fails with a line that names what
    /// is missing when this machine's cgroup `cpu` controller cannot be written.
    pub fn new(cores: f64) -> Result<Self, String> {
        if !(cores.is_finite() && cores >= 0.01) {
            return Err(format!("a CPU limit must be at least 0.01 cores, not {cores}"));
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let (version, root) = cpu_hierarchy(&mountinfo, |p| fs::read_to_string(p).ok())
            .ok_or("no cgroup hierarchy with the cpu controller is mounted")?;
        if version == Version::V2 {
            fs::write(root.join("cgroup.subtree_control"), "+cpu").map_err(|e| {
                format!("cannot enable the cpu controller in {}: {e}", root.display())
            })?;
        }
        let dir = root.join(format!("gameshard-local-{}", std::process::id()));
        create(&dir).map_err(|e| format!("cannot make the cgroup {}: {e}", dir.display()))?;
        if version == Version::V2 {
            fs::write(dir.join("cgroup.subtree_control"), "+cpu").map_err(|e| {
                format!("cannot enable the cpu controller in {}: {e}", dir.display())
            })?;
        }
        let quota_us = ((cores * PERIOD_US as f64).round() as u64).max(1_000);
        Ok(Self { version, dir, quota_us })
    }

    /// Puts process `pid` into the group `name`, limited to the cores given.
    pub fn apply(&self, name: &str, pid: u32) -> io::Result<()> {
        let group = self.dir.join(name);
        create(&group)?;
        match self.version {
            Version::V2 => {
                fs::write(group.join("cpu.max"), format!("{} {PERIOD_US}", self.quota_us))?;
            }
            Version::V1 => {
                fs::write(group.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                fs::write(group.join("cpu.cfs_quota_us"), self.quota_us.to_string())?;
            }
        }
        // Every thread of the process moves; the threads it starts later stay.
        fs::write(group.join("cgroup.procs"), pid.to_string())
    }

    /// Removes the group `name`, whose process has exited.
    pub fn remove(&self, name: &str) {
        let _ = fs::remove_dir(self.dir.join(name));
    }
}

impl Drop for CpuLimits {
    fn drop(&mut self) {
        if let Ok(groups) = fs::read_dir(&self.dir) {
            for group in groups.flatten() {
                if group.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(group.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

fn create(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// The hierarchy to use, from `/proc/self/mountinfo`'s text: a cgroup2 mount whose
/// `cgroup.controllers` (read through `read`) lists `cpu`, else a v1 mount with the
/// `cpu` option.
fn cpu_hierarchy(
    mountinfo: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<(Version, PathBuf)> {
    let mut v1 = None;
    for line in mountinfo.lines() {
        // `id parent major:minor root mountpoint options [optional...] - type source super`
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mountpoint) = left.split(' ').nth(4) else { continue };
        let mut right = right.split(' ');
        let (fstype, superopts) = (right.next(), right.nth(1).unwrap_or(""));
        let mountpoint = PathBuf::from(mountpoint);
        match fstype {
            Some("cgroup2") => {
                let controllers = read(&mountpoint.join("cgroup.controllers")).unwrap_or_default();
                if controllers.split_whitespace().any(|c| c == "cpu") {
                    return Some((Version::V2, mountpoint));
                }
            }
            Some("cgroup") if v1.is_none() && superopts.split(',').any(|o| o == "cpu") => {
                v1 = Some((Version::V1, mountpoint));
            }
            _ => {}
        }
    }
    v1
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_AND_EMPTY_V2: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
38 25 0:34 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_v1_cpu_hierarchy_is_used_when_the_unified_one_lacks_the_controller() {
        let found = cpu_hierarchy(V1_AND_EMPTY_V2, |_| Some("hugetlb\n".into()));
        assert_eq!(found, Some((Version::V1, PathBuf::from("/sys/fs/cgroup/cpu"))));
    }

    #[test]
    fn the_unified_hierarchy_is_used_when_it_offers_cpu() {
        let found = cpu_hierarchy(V1_AND_EMPTY_V2, |p| {
            (p == Path::new("/sys/fs/cgroup/unified/cgroup.controllers"))
                .then(|| "cpuset cpu io memory pids\n".into())
        });
        assert_eq!(found, Some((Version::V2, PathBuf::from("/sys/fs/cgroup/unified"))));
    }

    #[test]
    fn no_cpu_controller_is_none() {
        let mountinfo = "22 1 0:21 / /proc rw - proc proc rw\n\
                         38 25 0:34 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cpu_hierarchy(mountinfo, |_| Some("memory pids\n".into())), None);
    }

    #[test]
    fn a_limit_under_a_hundredth_of_a_core_is_refused() {
        let e = CpuLimits::new(0.001).unwrap_err();
        assert!(e.contains("at least 0.01"), "{e}");
        assert!(CpuLimits::new(f64::NAN).is_err());
    }
}
