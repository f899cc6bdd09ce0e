//! Record framing and event validation, with simd-json.
//!
//! The parser owns simd-json's buffers, its tape and a padded scratch copy of the
//! document; all three keep their capacity between records, so steady-state parsing
//! allocates nothing.

use simd_json::prelude::*;
use simd_json::tape::Value;
use simd_json::{Buffers, Tape, ValueType};

use super::event::{Action, Event};
use crate::{EventBatch, Parser, Span};

/// Longest id (`player`, `target`, `item`) in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Largest `damage`.
const MAX_DAMAGE: i64 = 100;

/// Parses records of the specification's event format.
pub struct SpecParser {
    json: Json,
}

/// simd-json's reusable state: its buffers, its tape and a padded scratch copy of the
/// document (simd-json parses in place).
struct Json {
    buffers: Buffers,
    // Always empty between calls; `'static` only because an empty tape borrows nothing.
    tape: Tape<'static>,
    scratch: Vec<u8>,
}

impl Json {
    /// Parses `doc` as one JSON document and hands its root to `f`, or `None` when `doc`
    /// is not valid JSON.
    fn parse<R>(&mut self, doc: &[u8], f: impl FnOnce(Option<Value<'_, '_>>) -> R) -> R {
        let len = doc.len();
        self.scratch.clear();
        self.scratch.extend_from_slice(doc);
        self.scratch.resize(len + simd_json::INPUT_PADDING, b' ');
        let mut tape = std::mem::replace(&mut self.tape, Tape(Vec::new())).reset();
        let parsed =
            simd_json::fill_tape_padded(&mut self.scratch, len, &mut self.buffers, &mut tape);
        let result = f(parsed.ok().map(|()| tape.as_value()));
        self.tape = tape.reset();
        result
    }
}

impl Default for SpecParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SpecParser {
    /// A parser with buffers sized for typical records; they grow to the largest record
    /// seen and stay there.
    pub fn new() -> Self {
        Self {
            json: Json {
                buffers: Buffers::new(16 * 1024),
                tape: Tape(Vec::with_capacity(2048)),
                scratch: Vec::with_capacity(16 * 1024 + simd_json::INPUT_PADDING),
            },
        }
    }

    /// Parses one document that should hold exactly one event object.
    fn parse_event(
        &mut self,
        doc: &[u8],
        batch: &mut EventBatch<Event>,
    ) -> Result<Event, &'static str> {
        let fast = self.json.parse(doc, |root| root.map(|root| event(root, batch)));
        // simd-json refuses numbers beyond f64 and u64 range; JSON does not, so such a
        // document takes the slower path that reads numbers from their text.
        fast.unwrap_or_else(|| fallback::parse_event(doc, batch))
    }

    fn parse_lines(&mut self, bytes: &[u8], record: u32, batch: &mut EventBatch<Event>) {
        for line in bytes.split(|&b| b == b'\n') {
            if line.iter().all(|&b| is_whitespace(b)) {
                continue;
            }
            match self.parse_event(line, batch) {
                Ok(event) => batch.push_event(record, event),
                Err(reason) => batch.push_malformed(record, reason, line, 1),
            }
        }
    }

    fn parse_array(&mut self, bytes: &[u8], record: u32, batch: &mut EventBatch<Event>) {
        let mut bad = Bad::default();
        let fast = self.json.parse(bytes, |root| {
            let array = root?.as_array()?;
            for element in &array {
                bad.push(record, event(element, batch), batch);
            }
            Some(array.len())
        });
        let elements = match fast {
            Some(n) => Ok(n),
            None => fallback::elements(bytes).map(|elements| {
                for element in &elements {
                    let event = self.parse_event(element.get().as_bytes(), batch);
                    bad.push(record, event, batch);
                }
                elements.len()
            }),
        };
        match elements {
            Ok(0) => batch.push_malformed(record, "no_event", bytes, 1),
            Ok(_) if bad.count > 0 => batch.push_malformed(record, bad.first, bytes, bad.count),
            Ok(_) => {}
            Err(reason) => batch.push_malformed(record, reason, bytes, 1),
        }
    }
}

/// The event an array element or a document root holds.
fn event(root: Value<'_, '_>, batch: &mut EventBatch<Event>) -> Result<Event, &'static str> {
    let object = root.as_object().ok_or("not_an_object")?;
    fields(&object, batch)
}

/// Validates the fields of an event object.
fn fields(
    object: &simd_json::tape::Object<'_, '_>,
    batch: &mut EventBatch<Event>,
) -> Result<Event, &'static str> {
    let mut fields = Fields::default();
    for (key, value) in object {
        fields.set(key, || scalar(value));
    }
    validate(&fields, batch)
}

/// The bad elements of an array record: how many, and the first one's reason.
#[derive(Default)]
struct Bad {
    count: u32,
    first: &'static str,
}

impl Bad {
    fn push(
        &mut self,
        record: u32,
        event: Result<Event, &'static str>,
        batch: &mut EventBatch<Event>,
    ) {
        match event {
            Ok(event) => batch.push_event(record, event),
            Err(reason) => {
                if self.count == 0 {
                    self.first = reason;
                }
                self.count += 1;
            }
        }
    }
}

impl Parser for SpecParser {
    type Event = Event;

    fn parse(&mut self, bytes: &[u8], record: u32, batch: &mut EventBatch<Event>) {
        if simdutf8::basic::from_utf8(bytes).is_err() {
            batch.push_malformed(record, "not_utf8", bytes, 1);
            return;
        }
        match bytes.iter().find(|&&b| !is_whitespace(b)) {
            Some(b'{') => self.parse_lines(bytes, record, batch),
            Some(b'[') => self.parse_array(bytes, record, batch),
            Some(_) => batch.push_malformed(record, "bad_framing", bytes, 1),
            None => batch.push_malformed(record, "no_event", bytes, 1),
        }
    }
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A field value, as far as the rules care.
#[derive(Clone, Copy, Debug)]
enum Scalar<'a> {
    Str(&'a str),
    Number {
        /// Written without fraction or exponent.
        integer: bool,
        /// The value, when it is an integer that fits an `i64`.
        int: Option<i64>,
        /// The value as an `f64`; infinite when out of `f64` range.
        float: f64,
    },
    /// `null`, a boolean, an object or an array.
    Other,
}

fn scalar<'i>(value: Value<'_, 'i>) -> Scalar<'i> {
    match value.value_type() {
        ValueType::String => value.into_string().map_or(Scalar::Other, Scalar::Str),
        ValueType::I64 | ValueType::U64 => Scalar::Number {
            integer: true,
            int: value.as_i64(),
            float: value.cast_f64().unwrap_or(f64::NAN),
        },
        ValueType::F64 => Scalar::Number {
            integer: false,
            int: None,
            float: value.cast_f64().unwrap_or(f64::NAN),
        },
        _ => Scalar::Other,
    }
}

/// The known fields of an event object; unknown ones are skipped.
#[derive(Default)]
struct Fields<'a> {
    kind: Option<Scalar<'a>>,
    player: Option<Scalar<'a>>,
    seq: Option<Scalar<'a>>,
    x: Option<Scalar<'a>>,
    y: Option<Scalar<'a>>,
    z: Option<Scalar<'a>>,
    yaw: Option<Scalar<'a>>,
    pitch: Option<Scalar<'a>>,
    target: Option<Scalar<'a>>,
    damage: Option<Scalar<'a>>,
    item: Option<Scalar<'a>>,
}

impl<'a> Fields<'a> {
    /// Records field `key`; `value` is only evaluated for known fields. A repeated key
    /// overrides the earlier one, as in most JSON object models.
    #[inline]
    fn set(&mut self, key: &str, value: impl FnOnce() -> Scalar<'a>) {
        let slot = match key {
            "type" => &mut self.kind,
            "player" => &mut self.player,
            "seq" => &mut self.seq,
            "x" => &mut self.x,
            "y" => &mut self.y,
            "z" => &mut self.z,
            "yaw" => &mut self.yaw,
            "pitch" => &mut self.pitch,
            "target" => &mut self.target,
            "damage" => &mut self.damage,
            "item" => &mut self.item,
            _ => return,
        };
        *slot = Some(value());
    }
}

/// Reasons a field can break its rule, as `gameshard-error` header values.
struct FieldReasons {
    missing: &'static str,
    mistyped: &'static str,
    out_of_range: &'static str,
}

macro_rules! reasons {
    ($($name:ident),*) => {
        $(
            #[allow(non_upper_case_globals)]
            pub(super) const $name: FieldReasons = FieldReasons {
                missing: concat!("missing_", stringify!($name)),
                mistyped: concat!("mistyped_", stringify!($name)),
                out_of_range: concat!("out_of_range_", stringify!($name)),
            };
        )*
    };
}

mod field {
    use super::FieldReasons;
    reasons!(player, seq, x, y, z, yaw, pitch, target, damage, item);
}

/// Checks an event's fields against the rules of its type and copies its ids into the
/// batch arena. Ids of an event that turns out malformed stay in the arena unused until
/// the batch is cleared.
fn validate(f: &Fields<'_>, batch: &mut EventBatch<Event>) -> Result<Event, &'static str> {
    let kind = match f.kind {
        Some(Scalar::Str(kind)) => kind,
        Some(_) => return Err("mistyped_type"),
        None => return Err("missing_type"),
    };
    let player = id(f.player, &field::player, batch)?;
    let seq = integer(f.seq, &field::seq, 0, i64::MAX)? as u64;
    let action = match kind {
        "spawn" => Action::Spawn {
            pos: [
                optional_number(f.x, &field::x)?,
                optional_number(f.y, &field::y)?,
                optional_number(f.z, &field::z)?,
            ],
        },
        "move" => Action::Move {
            pos: [number(f.x, &field::x)?, number(f.y, &field::y)?, number(f.z, &field::z)?],
        },
        "rotate" => Action::Rotate {
            yaw: number(f.yaw, &field::yaw)?,
            pitch: number(f.pitch, &field::pitch)?,
        },
        "shoot" => Action::Shoot {
            target: id(f.target, &field::target, batch)?,
            damage: integer(f.damage, &field::damage, 1, MAX_DAMAGE)? as u8,
        },
        "loot" => Action::Loot { item: id(f.item, &field::item, batch)? },
        _ => return Err("unknown_type"),
    };
    Ok(Event { player, seq, action })
}

/// A string of 1 to [`MAX_ID_BYTES`] UTF-8 bytes, copied into the batch arena.
fn id(
    value: Option<Scalar<'_>>,
    reasons: &FieldReasons,
    batch: &mut EventBatch<Event>,
) -> Result<Span, &'static str> {
    match value {
        Some(Scalar::Str(s)) if s.is_empty() || s.len() > MAX_ID_BYTES => Err(reasons.out_of_range),
        Some(Scalar::Str(s)) => Ok(batch.push_bytes(s.as_bytes())),
        Some(_) => Err(reasons.mistyped),
        None => Err(reasons.missing),
    }
}

/// A JSON number written without fraction or exponent, within `min..=max`.
fn integer(
    value: Option<Scalar<'_>>,
    reasons: &FieldReasons,
    min: i64,
    max: i64,
) -> Result<i64, &'static str> {
    match value {
        Some(Scalar::Number { integer: true, int: Some(n), .. }) if (min..=max).contains(&n) => {
            Ok(n)
        }
        Some(Scalar::Number { integer: true, .. }) => Err(reasons.out_of_range),
        Some(_) => Err(reasons.mistyped),
        None => Err(reasons.missing),
    }
}

/// Any JSON number whose value is finite as an `f64`.
fn number(value: Option<Scalar<'_>>, reasons: &FieldReasons) -> Result<f64, &'static str> {
    match value {
        Some(Scalar::Number { float, .. }) if float.is_finite() => Ok(float),
        Some(Scalar::Number { .. }) => Err(reasons.out_of_range),
        Some(_) => Err(reasons.mistyped),
        None => Err(reasons.missing),
    }
}

/// Like [`number`], 0 when absent.
fn optional_number(value: Option<Scalar<'_>>, reasons: &FieldReasons) -> Result<f64, &'static str> {
    value.map_or(Ok(0.0), |v| number(Some(v), reasons))
}

/// The slow path for documents simd-json refuses, with `serde_json`, which can skip a
/// value and hand over a number's text without converting it.
mod fallback {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::value::RawValue;

    use super::{Event, EventBatch, Fields, Scalar, validate};

    /// The elements of a JSON array, or why `bytes` is not one.
    pub(super) fn elements(bytes: &[u8]) -> Result<Vec<&RawValue>, &'static str> {
        serde_json::from_slice(bytes).map_err(|_| "invalid_json")
    }

    pub(super) fn parse_event(
        doc: &[u8],
        batch: &mut EventBatch<Event>,
    ) -> Result<Event, &'static str> {
        let value: &RawValue = serde_json::from_slice(doc).map_err(|_| "invalid_json")?;
        if !value.get().starts_with('{') {
            return Err("not_an_object");
        }
        let raw: RawFields<'_> = serde_json::from_str(value.get()).map_err(|_| "invalid_json")?;
        let mut texts: [Option<Cow<'_, str>>; 11] = Default::default();
        let mut fields = Fields::default();
        // Strings are unescaped into `texts` first, so that `fields` can borrow them.
        for (slot, (_, raw)) in texts.iter_mut().zip(raw.0.iter()) {
            if let Some(raw) = raw
                && raw.get().starts_with('"')
            {
                *slot = serde_json::from_str::<Cow<'_, str>>(raw.get()).ok();
            }
        }
        for ((key, raw), text) in raw.0.iter().zip(texts.iter()) {
            if let Some(raw) = raw {
                fields.set(key, || classify(raw.get(), text.as_deref()));
            }
        }
        validate(&fields, batch)
    }

    fn classify<'a>(raw: &str, text: Option<&'a str>) -> Scalar<'a> {
        if let Some(text) = text {
            return Scalar::Str(text);
        }
        let number = raw.starts_with(|c: char| c == '-' || c.is_ascii_digit());
        if !number {
            return Scalar::Other;
        }
        Scalar::Number {
            integer: !raw.contains(['.', 'e', 'E']),
            int: raw.parse().ok(),
            float: raw.parse().unwrap_or(f64::NAN),
        }
    }

    const KEYS: [&str; 11] =
        ["type", "player", "seq", "x", "y", "z", "yaw", "pitch", "target", "damage", "item"];

    /// The raw text of each known field, in [`KEYS`] order.
    struct RawFields<'a>([(&'static str, Option<&'a RawValue>); 11]);

    impl<'de> Deserialize<'de> for RawFields<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(RawFieldsVisitor)
        }
    }

    struct RawFieldsVisitor;

    impl<'de> Visitor<'de> for RawFieldsVisitor {
        type Value = RawFields<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an event object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut fields = RawFields(KEYS.map(|key| (key, None)));
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match fields.0.iter_mut().find(|(k, _)| *k == key) {
                    // A repeated key overrides the earlier one, as on the fast path.
                    Some((_, slot)) => *slot = Some(map.next_value()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(fields)
        }
    }
}
