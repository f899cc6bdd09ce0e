//! Parsed events of the specification's world.

use crate::Span;

/// A validated event. Its ids are spans into the batch arena.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    /// The acting player's id (1 to 64 bytes).
    pub player: Span,
    /// The player's sequence number (0 to 2^63-1).
    pub seq: u64,
    /// What the player does.
    pub action: Action,
}

/// The type-specific part of an event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Create the player, or bring it back to life, at a position.
    Spawn {
        /// `[x, y, z]`, each 0 when absent from the event.
        pos: [f64; 3],
    },
    /// Move to a position.
    Move {
        /// `[x, y, z]`.
        pos: [f64; 3],
    },
    /// Turn; the world normalizes yaw into `[0, 360)` and clamps pitch into `[-90, 90]`.
    Rotate {
        /// Degrees, any finite value.
        yaw: f64,
        /// Degrees, any finite value.
        pitch: f64,
    },
    /// Damage another player.
    Shoot {
        /// The target player's id.
        target: Span,
        /// Hit points taken, 1 to 100.
        damage: u8,
    },
    /// Claim an item.
    Loot {
        /// The item's id.
        item: Span,
    },
}

/// Why the world rejected a well-formed event, in the order the rules check them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reject {
    /// The event's `seq` is not above the player's.
    StaleSeq,
    /// A non-spawn event for a player that does not exist.
    UnknownPlayer,
    /// The acting player is dead.
    Dead,
    /// The shot's target does not exist.
    UnknownTarget,
    /// The player shot itself.
    SelfTarget,
    /// The shot's target is already dead.
    TargetDead,
    /// The item was claimed before.
    AlreadyClaimed,
}

impl Reject {
    /// Every reason, indexed by its discriminant.
    pub const ALL: [Reject; 7] = [
        Reject::StaleSeq,
        Reject::UnknownPlayer,
        Reject::Dead,
        Reject::UnknownTarget,
        Reject::SelfTarget,
        Reject::TargetDead,
        Reject::AlreadyClaimed,
    ];

    /// Metric labels, indexed by discriminant.
    pub const LABELS: [&'static str; 7] = [
        "stale_seq",
        "unknown_player",
        "dead",
        "unknown_target",
        "self_target",
        "target_dead",
        "already_claimed",
    ];

    /// The `reason` label of this rejection.
    pub fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }

    /// The reason an [`Outcome::Rejected`](crate::Outcome::Rejected) index stands for.
    pub fn from_index(index: u8) -> Option<Reject> {
        Self::ALL.get(usize::from(index)).copied()
    }
}
