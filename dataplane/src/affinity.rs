//! CPU pinning within the CPUs the process may use.
//!
//! Under the Kubernetes static CPU manager a Guaranteed pod with integer CPUs gets an
//! exclusive cpuset; the allowed set read here is that cpuset, so the state-machine thread
//! lands on a core that belongs to the pod alone.

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// Why pinning failed.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    /// The affinity system calls failed.
    #[error("cannot read or set CPU affinity: {0}")]
    Sys(#[from] nix::Error),
    /// The requested CPU is outside the allowed set.
    #[error("CPU {cpu} is not in the allowed set {allowed:?}")]
    NotAllowed {
        /// The requested CPU.
        cpu: usize,
        /// The CPUs this process may run on.
        allowed: Vec<usize>,
    },
}

/// The CPUs the calling thread may run on, in ascending order.
pub fn allowed_cpus() -> Result<Vec<usize>, AffinityError> {
    let set = sched_getaffinity(Pid::from_raw(0))?;
    Ok((0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect())
}

/// Chooses the state-machine core: `requested` when it is allowed, else the first
/// allowed CPU.
pub fn choose_core(requested: Option<usize>) -> Result<usize, AffinityError> {
    let allowed = allowed_cpus()?;
    match requested {
        Some(cpu) if allowed.contains(&cpu) => Ok(cpu),
        Some(cpu) => Err(AffinityError::NotAllowed { cpu, allowed }),
        None => allowed.first().copied().ok_or(AffinityError::NotAllowed { cpu: 0, allowed }),
    }
}

/// Restricts the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), AffinityError> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)?;
    }
    sched_setaffinity(Pid::from_raw(0), &set)?;
    Ok(())
}

/// The CPUs left for the other threads once `core` is taken, or all of them when `core`
/// is the only one.
pub fn others(allowed: &[usize], core: usize) -> Vec<usize> {
    let rest: Vec<usize> = allowed.iter().copied().filter(|&c| c != core).collect();
    if rest.is_empty() { allowed.to_vec() } else { rest }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_core_is_the_first_allowed_and_others_exclude_it() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let core = choose_core(None).unwrap();
        assert_eq!(core, allowed[0]);
        let rest = others(&allowed, core);
        if allowed.len() > 1 {
            assert!(!rest.contains(&core));
        } else {
            assert_eq!(rest, allowed);
        }
    }

    #[test]
    fn a_core_outside_the_allowed_set_is_refused() {
        let err = choose_core(Some(CpuSet::count() + 1)).unwrap_err();
        assert!(matches!(err, AffinityError::NotAllowed { .. }), "{err}");
    }

    #[test]
    fn pinning_restricts_the_thread() {
        let allowed = allowed_cpus().unwrap();
        let last = *allowed.last().unwrap();
        std::thread::spawn(move || {
            pin_current_thread(&[last]).unwrap();
            assert_eq!(allowed_cpus().unwrap(), [last]);
        })
        .join()
        .unwrap();
    }
}
