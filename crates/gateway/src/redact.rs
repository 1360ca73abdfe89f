//! Keeping a provider secret out of everything bound for the gateway log.
//!
//! Requests are built without the secret, but a provider (or something in front of it)
//! may echo it back, and not always spelled literally: JSON-escaped (`\u0073\u006b…`),
//! percent-encoded, or inside a base64 blob. [`redact`] removes it in all of these forms:
//!
//! 1. a body that parses as JSON is walked and every string (and key) is redacted after
//!    JSON unescaping, then the document is serialised again;
//! 2. the text is read through a *decoded view* that undoes `\uXXXX` (with surrogate
//!    pairs), the short JSON escapes (`\"`, `\\`, `\/`, `\n`, …) and `%XX` — in any mix
//!    and either hex case, as each escape decodes on its own — and the secret is searched
//!    in that view; a match replaces the original span, however it was spelled;
//! 3. in the same view, the base64 of the secret is searched: standard and url-safe
//!    alphabets, at each of the three alignments the secret can have inside a longer blob
//!    (padding never matters: only the characters that depend on the secret alone are
//!    matched, and the one or two characters at each edge that mix in neighbouring bytes
//!    are left).
//!
//! Redaction runs before anything is cut to size, so a cut cannot leave a fragment that
//! redaction would have caught. What is stored is bounded: see [`MAX_LOGGED_BODY`] and
//! [`MAX_LOGGED_TEXT`].

use base64::Engine;
use memchr::memmem::Finder;

/// What replaces every occurrence of a secret.
pub const REDACTED: &str = "[REDACTED]";

/// The most of a request or response body kept in a gateway log row (bytes, cut at a
/// character boundary, then marked `…[truncated]`).
pub const MAX_LOGGED_BODY: usize = 16 * 1024;

/// The most of a short field (message, result code, reference) kept (bytes).
pub const MAX_LOGGED_TEXT: usize = 1024;

/// Secrets shorter than this are not searched for: a search that short would redact
/// ordinary text (no provider issues keys this short).
pub const MIN_SECRET_LEN: usize = 4;

/// A base64 core shorter than this is not searched for, for the same reason; every core of
/// a secret of 8 bytes or more is longer.
const MIN_BASE64_CORE: usize = 6;

/// Removes every form of `secret` listed in the module doc from `text`.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    let Some(secret) = secret.filter(|s| s.len() >= MIN_SECRET_LEN) else {
        return text.to_string();
    };
    let patterns: Vec<Finder<'static>> = patterns(secret)
        .iter()
        .map(|p| Finder::new(p).into_owned())
        .collect();
    if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) {
        if redact_json(&mut value, &patterns) {
            return redact_spans(&value.to_string(), &patterns);
        }
    }
    redact_spans(text, &patterns)
}

/// The byte strings searched for in the decoded view: the secret itself, then the base64
/// cores of it.
fn patterns(secret: &str) -> Vec<Vec<u8>> {
    let mut out = vec![secret.as_bytes().to_vec()];
    for core in base64_cores(secret.as_bytes()) {
        let core = core.into_bytes();
        if !out.contains(&core) {
            out.push(core);
        }
    }
    out
}

/// The base64 characters that depend on `secret` alone, for each alignment of it inside a
/// longer encoded blob (0, 1 or 2 bytes before it) and each alphabet (standard and url-safe).
pub fn base64_cores(secret: &[u8]) -> Vec<String> {
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut cores = Vec::new();
    for engine in engines {
        for offset in 0..3usize {
            let mut input = vec![0u8; offset];
            input.extend_from_slice(secret);
            let encoded = engine.encode(&input);
            // Character i holds bits 6i..6i+6; those of the secret are 8·offset..8·(offset+n).
            let start = (8 * offset).div_ceil(6);
            let end = (8 * (offset + secret.len())) / 6;
            if let Some(core) = encoded.get(start..end.min(encoded.len())) {
                if core.len() >= MIN_BASE64_CORE && !cores.iter().any(|c| c == core) {
                    cores.push(core.to_string());
                }
            }
        }
    }
    cores
}

/// Redacts every string and key of a JSON document in place; true if anything changed.
fn redact_json(value: &mut serde_json::Value, patterns: &[Finder<'static>]) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            let redacted = redact_spans(s, patterns);
            let changed = redacted != *s;
            *s = redacted;
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| redact_json(v, patterns) | changed),
        Value::Object(map) => {
            let mut changed = false;
            let entries = std::mem::take(map);
            for (key, mut v) in entries {
                changed |= redact_json(&mut v, patterns);
                let new_key = redact_spans(&key, patterns);
                changed |= new_key != key;
                map.insert(new_key, v);
            }
            changed
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// One byte of the decoded view and the span of the original text it came from.
/// The decoded bytes and, for each, where its escape starts in the original and how long
/// the escape is (kept apart, not as one struct per byte, to hold a large answer compactly).
struct View {
    bytes: Vec<u8>,
    start: Vec<usize>,
    len: Vec<u8>,
}

impl View {
    /// The span of the original text that decoded bytes `first..=last` came from.
    fn span(&self, first: usize, last: usize) -> (usize, usize) {
        (
            self.start[first],
            self.start[last] + usize::from(self.len[last]),
        )
    }
}

fn hex_value(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + hex_value(b)?))
}

/// Which escapes a decoded view undoes. A secret may itself contain something that looks
/// like an escape (`%0a`, `\n`) while the text escapes it another way, so the text is
/// read through each of these views.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escapes {
    All,
    Json,
    Percent,
}

const VIEWS: [Escapes; 3] = [Escapes::All, Escapes::Json, Escapes::Percent];

/// The text with its escapes undone, byte by byte, each byte knowing where it came from.
fn decoded_view(text: &str, escapes: Escapes) -> View {
    let bytes = text.as_bytes();
    let mut out = View {
        bytes: Vec::with_capacity(bytes.len()),
        start: Vec::with_capacity(bytes.len()),
        len: Vec::with_capacity(bytes.len()),
    };
    let mut i = 0;
    while i < bytes.len() {
        let (unit, len) = match decode_at(bytes, i, escapes) {
            Some((unit, len)) => (unit, len),
            None => (Unit::Byte(bytes[i]), 1),
        };
        let mut buf = [0u8; 4];
        let decoded: &[u8] = match unit {
            Unit::Byte(b) => {
                buf[0] = b;
                &buf[..1]
            }
            Unit::Char(c) => c.encode_utf8(&mut buf).as_bytes(),
        };
        for &byte in decoded {
            out.bytes.push(byte);
            out.start.push(i);
            // (an escape is at most 12 bytes long)
            out.len.push(u8::try_from(len).unwrap_or(u8::MAX));
        }
        i += len;
    }
    out
}

/// What an escape stands for: a character (`\uXXXX`, `\n`) or one byte (`%XX`, which may
/// be one byte of a multi-byte character).
enum Unit {
    Char(char),
    Byte(u8),
}

/// The escape starting at `i`, if any: what it stands for and its length.
fn decode_at(bytes: &[u8], i: usize, escapes: Escapes) -> Option<(Unit, usize)> {
    match bytes[i] {
        b'\\' if escapes != Escapes::Percent => match *bytes.get(i + 1)? {
            b'u' => {
                let high = hex4(bytes, i + 2)?;
                if (0xD800..0xDC00).contains(&high)
                    && bytes.get(i + 6) == Some(&b'\\')
                    && bytes.get(i + 7) == Some(&b'u')
                {
                    let low = hex4(bytes, i + 8).filter(|l| (0xDC00..0xE000).contains(l));
                    if let Some(low) = low {
                        let cp = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                        return char::from_u32(cp).map(|c| (Unit::Char(c), 12));
                    }
                }
                char::from_u32(high).map(|c| (Unit::Char(c), 6))
            }
            e @ (b'"' | b'\\' | b'/') => Some((Unit::Char(char::from(e)), 2)),
            b'b' => Some((Unit::Char('\u{8}'), 2)),
            b'f' => Some((Unit::Char('\u{c}'), 2)),
            b'n' => Some((Unit::Char('\n'), 2)),
            b'r' => Some((Unit::Char('\r'), 2)),
            b't' => Some((Unit::Char('\t'), 2)),
            _ => None,
        },
        b'%' if escapes != Escapes::Json => {
            let h = bytes.get(i + 1..i + 3)?;
            let value = hex_value(h[0])? * 16 + hex_value(h[1])?;
            u8::try_from(value).ok().map(|b| (Unit::Byte(b), 3))
        }
        _ => None,
    }
}

/// Replaces, in `text`, the original span of every match of a pattern, in the text as it
/// is and in its decoded view. Overlapping and touching matches become one marker.
fn redact_spans(text: &str, finders: &[Finder<'static>]) -> String {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for finder in finders {
        for at in finder.find_iter(text.as_bytes()) {
            spans.push((at, at + finder.needle().len()));
        }
    }
    // Without an escape character every view is the text itself.
    let views: &[Escapes] = if text.contains(['\\', '%']) {
        &VIEWS
    } else {
        &[]
    };
    for &escapes in views {
        let view = decoded_view(text, escapes);
        for finder in finders {
            for at in finder.find_iter(&view.bytes) {
                spans.push(view.span(at, at + finder.needle().len() - 1));
            }
        }
    }
    if spans.is_empty() {
        return text.to_string();
    }
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in merged {
        out.push_str(&text[copied..floor_boundary(text, start)]);
        out.push_str(REDACTED);
        copied = ceil_boundary(text, end);
    }
    out.push_str(&text[copied..]);
    out
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while at < text.len() && !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// Cuts `text` to at most `max` bytes (at a character boundary), marking the cut.
pub fn truncate_to(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    format!("{}…[truncated]", &text[..floor_boundary(text, max)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    use proptest::prelude::*;

    const KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";

    fn json_escaped(s: &str, upper: bool) -> String {
        s.chars()
            .map(|c| {
                if upper {
                    format!("\\u{:04X}", c as u32)
                } else {
                    format!("\\u{:04x}", c as u32)
                }
            })
            .collect()
    }

    fn percent_all(s: &str, upper: bool) -> String {
        s.bytes()
            .map(|b| {
                if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    }

    /// Every encoding of `secret` the tests throw at the redaction.
    fn encodings(secret: &str) -> Vec<String> {
        let mut out = vec![
            secret.to_string(),
            json_escaped(secret, false),
            json_escaped(secret, true),
            percent_all(secret, true),
            percent_all(secret, false),
            serde_json::to_string(secret).unwrap(),
        ];
        for prefix in ["", "a", "ab"] {
            let blob = format!("{prefix}{secret}!");
            out.push(STANDARD.encode(&blob));
            out.push(URL_SAFE.encode(&blob));
            out.push(URL_SAFE_NO_PAD.encode(&blob));
            out.push(STANDARD.encode(format!("{prefix}{secret}")));
            // Standard base64 inside a JSON string escapes its slashes.
            out.push(STANDARD.encode(&blob).replace('/', "\\/"));
        }
        out
    }

    /// What must not survive: the secret, and every core of its base64.
    fn leaks(text: &str, secret: &str) -> Vec<String> {
        let mut found = Vec::new();
        let views: Vec<Vec<u8>> = VIEWS.iter().map(|&e| decoded_view(text, e).bytes).collect();
        for pattern in patterns(secret) {
            let finder = memchr::memmem::Finder::new(&pattern);
            if views.iter().any(|v| finder.find(v).is_some())
                || finder.find(text.as_bytes()).is_some()
            {
                found.push(String::from_utf8_lossy(&pattern).into_owned());
            }
        }
        found
    }

    #[test]
    fn every_encoding_is_redacted_in_plain_text_and_json() {
        for encoded in encodings(KEY) {
            let plain = format!("HTTP 400\nthe key {encoded} is wrong");
            let redacted = redact(&plain, Some(KEY));
            assert!(redacted.contains(REDACTED), "{encoded} → {redacted}");
            assert!(leaks(&redacted, KEY).is_empty(), "{encoded} → {redacted}");
            assert!(redacted.starts_with("HTTP 400\nthe key "), "{redacted}");
            let json = format!(r#"{{"error": {{"message": "bad key {encoded}"}}}}"#);
            let redacted = redact(&json, Some(KEY));
            assert!(leaks(&redacted, KEY).is_empty(), "{encoded} → {redacted}");
        }
    }

    #[test]
    fn mixed_escapes_and_hex_case_are_redacted() {
        let mixed = r#"{"k": "\u0073k_t%65st_4eC39HqLyjWD\u0061rjtT1zdp7d%63"}"#;
        let redacted = redact(mixed, Some(KEY));
        assert_eq!(redacted, r#"{"k":"[REDACTED]"}"#);
        let astral = "😀".to_string() + KEY;
        let escaped = format!("x {} y", json_escaped(&astral, false));
        // (json_escaped writes one \u per char; the astral one as its full code point is
        // not JSON, so spell it as a surrogate pair instead)
        let escaped = escaped.replace("\\u1f600", "\\ud83d\\ude00");
        assert_eq!(redact(&escaped, Some(&astral)), "x [REDACTED] y");
    }

    #[test]
    fn text_without_the_secret_is_unchanged_and_json_keeps_its_spelling() {
        let body = r#"{ "id": "re_1",  "status": "succeeded", "amount": 1.50 }"#;
        assert_eq!(redact(body, Some(KEY)), body);
        assert_eq!(redact("plain", Some(KEY)), "plain");
        assert_eq!(redact(KEY, Some("abc")), KEY, "too short to search for");
        assert_eq!(redact(KEY, None), KEY);
    }

    #[test]
    fn json_keys_and_nested_strings_are_redacted() {
        let body = format!(r#"{{"{KEY}": [1, {{"deep": "x{KEY}y"}}], "n": 10.10}}"#);
        assert_eq!(
            redact(&body, Some(KEY)),
            r#"{"[REDACTED]":[1,{"deep":"x[REDACTED]y"}],"n":10.10}"#
        );
    }

    #[test]
    fn adjacent_and_overlapping_matches_make_one_marker_each_run() {
        let twice = format!("{KEY}{KEY} and {KEY}");
        assert_eq!(
            redact(&twice, Some(KEY)),
            "[REDACTED] and [REDACTED]",
            "a run of matches becomes one marker"
        );
        let overlapping = redact("aaaaaaa", Some("aaaa"));
        assert!(!overlapping.contains("aaaa"), "{overlapping}");
    }

    #[test]
    fn base64_cores_cover_all_three_alignments() {
        let cores = base64_cores(KEY.as_bytes());
        for prefix in ["", "a", "ab", "abc"] {
            let blob = STANDARD.encode(format!("{prefix}{KEY}"));
            assert!(cores.iter().any(|c| blob.contains(c.as_str())), "{prefix}");
        }
    }

    #[test]
    fn truncation_is_bounded_and_keeps_characters_whole() {
        let text = "é".repeat(MAX_LOGGED_BODY);
        let cut = truncate_to(&text, MAX_LOGGED_BODY);
        assert!(cut.len() <= MAX_LOGGED_BODY + "…[truncated]".len());
        assert!(cut.ends_with("…[truncated]"));
        let exact = "a".repeat(MAX_LOGGED_BODY);
        assert_eq!(truncate_to(&exact, MAX_LOGGED_BODY), exact, "at the edge");
        let over = "a".repeat(MAX_LOGGED_BODY + 1);
        assert_eq!(
            truncate_to(&over, MAX_LOGGED_BODY),
            format!("{exact}…[truncated]"),
            "one past the edge"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the secret, and however it is encoded inside whatever text, nothing of
        /// it survives, and the text around it does.
        #[test]
        fn no_encoding_of_a_random_secret_survives(
            secret in "[ -~]{8,48}",
            before in "[a-zA-Z0-9 ,.:{}\\[\\]]{0,40}",
            after in "[a-zA-Z0-9 ,.:{}\\[\\]]{0,40}",
            pick in 0usize..64,
            as_json in any::<bool>(),
        ) {
            let forms = encodings(&secret);
            let encoded = &forms[pick % forms.len()];
            let text = if as_json {
                serde_json::json!({"message": format!("{before}{encoded}{after}")}).to_string()
            } else {
                format!("{before}{encoded}{after}")
            };
            let redacted = redact(&text, Some(&secret));
            prop_assert!(leaks(&redacted, &secret).is_empty(), "{text} → {redacted}");
            prop_assert!(redacted.contains(REDACTED));
        }

        /// Text that holds no form of the secret comes back unchanged.
        #[test]
        fn unrelated_text_is_left_alone(text in "[a-z ]{0,200}") {
            prop_assert_eq!(redact(&text, Some("Sk_LIVE_0123456789")), text);
        }
    }
}
