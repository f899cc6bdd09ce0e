//! The three roles a game implements to run in the pipeline, and the trait that ties
//! them together.

use crate::{EventBatch, RecordMeta, Updates};

/// What applying one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The event changed the world as its rules say.
    Applied,
    /// A rule rejected the event; the index points into [`World::REJECT_REASONS`].
    Rejected(u8),
}

/// Turns raw record bytes into events. Runs on the IO thread.
pub trait Parser: Send + 'static {
    /// A parsed event. Its strings live in the batch arena, referenced by
    /// [`Span`](crate::Span)s, so that an event is plain data.
    type Event: Copy + Send + 'static;

    /// Parses the record `bytes`, already registered as `record` in `batch`, appending
    /// its well-formed events and its malformed units to `batch`.
    ///
    /// Must not panic on any input: whatever breaks the rules becomes a malformed unit.
    fn parse(&mut self, bytes: &[u8], record: u32, batch: &mut EventBatch<Self::Event>);
}

/// One partition's state. Runs on the state-machine thread.
///
/// A world is deterministic: applying the same events to the same state yields the same
/// state and the same updates. Recovery relies on it.
pub trait World: Send + 'static {
    /// The events this world applies.
    type Event: Copy + Send + 'static;
    /// The updates it emits.
    type Update: Copy + Send + 'static;

    /// Metric labels of the rejection reasons [`Outcome::Rejected`] indexes.
    const REJECT_REASONS: &'static [&'static str];

    /// Applies one event from record `src`; strings in `event` resolve against `bytes`.
    fn apply(&mut self, event: &Self::Event, bytes: &[u8], src: &RecordMeta) -> Outcome;

    /// Moves one update per entity changed since the last flush into `out`, each carrying
    /// the entity's state now and the record of the last event that changed it.
    ///
    /// Flushing once per batch coalesces the updates of a batch; flushing after every
    /// event emits one update per change.
    fn flush(&mut self, out: &mut Updates<Self::Update>);

    /// Appends the whole state, in a form [`World::restore`] reads back, to `out`.
    fn snapshot(&self, out: &mut Vec<u8>);

    /// Starts a snapshot of the state as it is now, to be written in slices by
    /// [`World::snapshot_continue`] while [`World::apply`] goes on: the slices together
    /// are the bytes [`World::snapshot`] would have written at this call. Starting
    /// again abandons a snapshot in progress.
    ///
    /// This lets a pipeline snapshot a large partition at a record boundary without
    /// stopping it: the state machine applies the next batches between slices, and the
    /// world keeps what those batches overwrite until the slice that needs it is out.
    fn snapshot_begin(&mut self);

    /// Appends the next slice of the snapshot begun by [`World::snapshot_begin`] to
    /// `out`, stopping once about `budget` bytes were added; returns `true` when the
    /// snapshot is complete (and then ends it). Without a snapshot begun, appends
    /// nothing and returns `true`.
    fn snapshot_continue(&mut self, out: &mut Vec<u8>, budget: usize) -> bool;

    /// Replaces the whole state with the one `bytes` (from [`World::snapshot`]) holds.
    /// On error the world is left empty.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError>;

    /// Number of entities held, for status reporting.
    fn entities(&self) -> usize;
}

/// Serializes updates into Kafka keys and values. Runs on the publisher thread.
pub trait Encoder: Send + 'static {
    /// The updates this encoder serializes.
    type Update: Copy + Send + 'static;

    /// Writes the key and the value of `update` (attributed to record `src`; its strings
    /// resolve against `bytes`) into the emptied `key` and `value` buffers.
    fn encode(
        &mut self,
        src: &RecordMeta,
        update: &Self::Update,
        bytes: &[u8],
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    );
}

/// A game the pipeline can run: its parser, its per-partition world and its encoder.
pub trait Game: Send + Sync + 'static {
    /// The parsed event type shared by parser and world.
    type Event: Copy + Send + 'static;
    /// The update type shared by world and encoder.
    type Update: Copy + Send + 'static;
    /// The parser.
    type Parser: Parser<Event = Self::Event>;
    /// A partition's world.
    type World: World<Event = Self::Event, Update = Self::Update>;
    /// The encoder.
    type Encoder: Encoder<Update = Self::Update>;

    /// A parser for the IO thread.
    fn parser(&self) -> Self::Parser;
    /// An empty world for a newly owned partition.
    fn world(&self) -> Self::World;
    /// An encoder for the publisher thread.
    fn encoder(&self) -> Self::Encoder;
}

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// The bytes end before the snapshot does.
    #[error("snapshot is truncated")]
    Truncated,
    /// The bytes do not start with this world's snapshot header.
    #[error("not a snapshot of this world (bad magic)")]
    BadMagic,
    /// The snapshot was written by an unknown format version.
    #[error("unsupported snapshot format version {0}")]
    UnsupportedVersion(u16),
    /// The snapshot breaks an invariant of the world.
    #[error("corrupt snapshot: {0}")]
    Corrupt(&'static str),
}
