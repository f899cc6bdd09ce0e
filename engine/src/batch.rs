//! The containers that carry events and updates between pipeline threads.
//!
//! Every container owns one byte arena for the strings its items reference through
//! [`Span`]s, so a batch is a handful of `Vec`s whose capacity survives `clear()`: once the
//! pipeline has warmed up, filling a batch allocates nothing.

/// Where a record came from and when it arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// Input partition the record was read from.
    pub partition: u32,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// Record timestamp (`CreateTime`), milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Monotonic arrival time in nanoseconds, stamped by the IO thread; only compared with
    /// other readings of the same clock, for in-process latency.
    pub arrival_ns: u64,
}

/// A byte range inside a container's arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// The bytes this span covers in `arena`.
    ///
    /// A span is only ever resolved against the arena it was pushed into; resolving it
    /// against a shorter one yields an empty slice rather than a panic.
    #[inline]
    pub fn get(self, arena: &[u8]) -> &[u8] {
        let start = self.start as usize;
        arena.get(start..start + self.len as usize).unwrap_or_default()
    }

    /// Appends `bytes` to `arena` and returns the span that covers them.
    #[inline]
    pub fn push(arena: &mut Vec<u8>, bytes: &[u8]) -> Span {
        let start = arena.len() as u32;
        arena.extend_from_slice(bytes);
        Span { start, len: bytes.len() as u32 }
    }

    /// Length in bytes.
    #[inline]
    pub fn len(self) -> usize {
        self.len as usize
    }

    /// Whether the span is empty.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// One parsed event and the index of the record it came from.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<E> {
    /// Index into [`EventBatch::records`].
    pub record: u32,
    /// The event itself; its strings live in [`EventBatch::bytes`].
    pub event: E,
}

/// A unit of input that broke the event rules, kept aside for the dead-letter topic.
#[derive(Clone, Copy, Debug)]
pub struct Malformed {
    /// Index into [`EventBatch::records`].
    pub record: u32,
    /// Short machine-readable reason, such as `missing_player`.
    pub reason: &'static str,
    /// The bytes to dead-letter (a line or a whole record), in [`EventBatch::bytes`].
    pub payload: Span,
    /// How many malformed events this unit stands for (an array record with three bad
    /// elements is dead-lettered once and counts three).
    pub events: u32,
}

/// Events parsed from a run of records, as they cross from the IO thread to the
/// state-machine thread.
#[derive(Debug)]
pub struct EventBatch<E> {
    /// The records the batch covers, in the order they were read.
    pub records: Vec<RecordMeta>,
    /// Well-formed events, in record order and within a record in their order in it.
    pub events: Vec<Parsed<E>>,
    /// Malformed units, in record order.
    pub malformed: Vec<Malformed>,
    /// Arena for every string the events and malformed units reference.
    pub bytes: Vec<u8>,
}

impl<E> Default for EventBatch<E> {
    fn default() -> Self {
        Self { records: Vec::new(), events: Vec::new(), malformed: Vec::new(), bytes: Vec::new() }
    }
}

impl<E> EventBatch<E> {
    /// An empty batch with room for `records` records, `events` events and `bytes` bytes
    /// of strings, so that filling it up to that size allocates nothing.
    pub fn with_capacity(records: usize, events: usize, bytes: usize) -> Self {
        Self {
            records: Vec::with_capacity(records),
            events: Vec::with_capacity(events),
            malformed: Vec::with_capacity(records),
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.records.clear();
        self.events.clear();
        self.malformed.clear();
        self.bytes.clear();
    }

    /// Whether the batch covers no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Adds a record and returns its index, for [`Parser::parse`](crate::Parser::parse).
    pub fn push_record(&mut self, meta: RecordMeta) -> u32 {
        self.records.push(meta);
        (self.records.len() - 1) as u32
    }

    /// Copies a string into the arena.
    #[inline]
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Span {
        Span::push(&mut self.bytes, bytes)
    }

    /// Adds a well-formed event of record `record`.
    #[inline]
    pub fn push_event(&mut self, record: u32, event: E) {
        self.events.push(Parsed { record, event });
    }

    /// Adds a malformed unit of record `record`; `payload` is copied into the arena.
    pub fn push_malformed(
        &mut self,
        record: u32,
        reason: &'static str,
        payload: &[u8],
        events: u32,
    ) {
        let payload = self.push_bytes(payload);
        self.malformed.push(Malformed { record, reason, payload, events });
    }
}

/// Updates emitted by a [`World`](crate::World), each with the record of the event that
/// last changed its entity.
#[derive(Debug)]
pub struct Updates<U> {
    /// The updates, each with the record it is attributed to.
    pub items: Vec<(RecordMeta, U)>,
    /// Arena for every string the updates reference.
    pub bytes: Vec<u8>,
}

impl<U> Default for Updates<U> {
    fn default() -> Self {
        Self { items: Vec::new(), bytes: Vec::new() }
    }
}

impl<U> Updates<U> {
    /// Empty updates with room for `items` updates and `bytes` bytes of strings.
    pub fn with_capacity(items: usize, bytes: usize) -> Self {
        Self { items: Vec::with_capacity(items), bytes: Vec::with_capacity(bytes) }
    }

    /// Empties the container, keeping its capacity.
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes.clear();
    }

    /// Number of updates.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is no update.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Copies a string into the arena.
    #[inline]
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Span {
        Span::push(&mut self.bytes, bytes)
    }

    /// Adds an update attributed to record `src`.
    #[inline]
    pub fn push(&mut self, src: RecordMeta, update: U) {
        self.items.push((src, update));
    }
}
