//! Which CPUs the three pipeline threads run on.

use super::Config;
use crate::affinity;

impl Config {
    /// Pins the state machine to `core` and places the other threads on the allowed
    /// CPUs; see [`Placement`].
    pub fn pinned(mut self, core: usize) -> Result<Self, affinity::AffinityError> {
        let placement = Placement::new(&affinity::allowed_cpus()?, core);
        self.core = Some(core);
        self.io_cpus = placement.io;
        self.publisher_cpus = placement.publisher;
        Ok(self)
    }
}

/// Where the IO and publisher threads run, given the allowed CPUs and the state
/// machine's core.
///
/// The IO thread never shares the state machine's core when another is allowed: reading
/// and parsing is the bursty stage, and it overlaps with the state machine's work on the
/// previous batch. The publisher works on a batch right after the state machine is done
/// with it, so the two alternate rather than compete: with only two CPUs the publisher
/// joins the state machine's core and the IO thread has the other to itself; with three
/// or more the state machine has its core alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// CPUs for the IO thread.
    pub io: Vec<usize>,
    /// CPUs for the publisher thread.
    pub publisher: Vec<usize>,
}

impl Placement {
    /// The placement for `allowed` CPUs with the state machine on `core`.
    pub fn new(allowed: &[usize], core: usize) -> Self {
        let rest = affinity::others(allowed, core);
        let publisher = if allowed.len() == 2 { vec![core] } else { rest.clone() };
        Self { io: rest, publisher }
    }
}

/// Restricts the calling thread to `cpus`, or says why it cannot.
pub(super) fn pin(cpus: &[usize], thread: &'static str) {
    if cpus.is_empty() {
        return;
    }
    if let Err(error) = affinity::pin_current_thread(cpus) {
        tracing::warn!(thread, ?cpus, %error, "cannot pin thread; it runs unpinned");
    }
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn placement_isolates_the_state_machine_when_cpus_allow() {
        assert_eq!(Placement::new(&[4], 4), Placement { io: vec![4], publisher: vec![4] });
        assert_eq!(Placement::new(&[2, 3], 3), Placement { io: vec![2], publisher: vec![3] });
        assert_eq!(
            Placement::new(&[0, 1, 2, 3], 1),
            Placement { io: vec![0, 2, 3], publisher: vec![0, 2, 3] }
        );
    }
}
