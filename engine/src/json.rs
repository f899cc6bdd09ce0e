//! Minimal, allocation-free JSON writing for encoders: strings, integers and floats
//! appended to a caller-owned buffer.

/// Appends `s` as a JSON string, quotes included, escaping what JSON requires.
///
/// `s` is expected to be UTF-8 (ids come from parsed JSON strings); bytes outside ASCII
/// are copied as they are.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends a finite `f64` in its shortest round-trip form (`1.0`, `0.25`, `1e21`).
/// A non-finite value, which JSON cannot hold, is written as `null`.
#[inline]
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends an unsigned integer.
#[inline]
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends a signed integer.
#[inline]
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `true` or `false`.
#[inline]
pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        for s in
            ["", "p1", "quote\"back\\slash", "ctl\u{1}\u{1f}\n\r\t\u{8}\u{c}", "é漢字🎮", "\u{7f}"]
        {
            let written = string(s);
            let parsed: String = serde_json::from_str(&written).unwrap();
            assert_eq!(parsed, s, "{written}");
        }
    }

    #[test]
    fn floats_are_shortest_round_trip_and_integers_keep_a_fraction() {
        let mut out = Vec::new();
        for v in [1.0, -0.5, 0.1, 1e21, 359.999_999_999, -0.0] {
            out.clear();
            write_f64(&mut out, v);
            let text = std::str::from_utf8(&out).unwrap();
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{text}");
            assert!(serde_json::from_str::<f64>(text).is_ok(), "{text} is JSON");
        }
        out.clear();
        write_f64(&mut out, 1.0);
        assert_eq!(out, b"1.0");
        out.clear();
        write_f64(&mut out, f64::NAN);
        assert_eq!(out, b"null");
    }
}
