//! Salesforce-style record ids: a 3-char key prefix naming the object type, 12 base62
//! chars (15, case-sensitive), and a 3-char checksum suffix (18, case-insensitive).
//!
//! Both lengths are accepted on input; an [`SfId`] always holds the 18-char form so that
//! equality, hashing and output never depend on how a client spelled the id.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

/// Base62 in ASCII order, so that generated ids compare as plain strings in digit order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Salesforce's alphabet for the 5-bit checksum values.
const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

const SHORT_LEN: usize = 15;
const LONG_LEN: usize = 18;
const PREFIX_LEN: usize = 3;
const TIME_DIGITS: usize = 7;
const RANDOM_DIGITS: usize = SHORT_LEN - PREFIX_LEN - TIME_DIGITS;

/// The kinds of record this service stores, each with its own key prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectType {
    OrderSummary,
    OrderPaymentSummary,
    PaymentGateway,
    Payment,
    Invoice,
    CreditMemo,
    CreditMemoInvApplication,
    BackgroundOperation,
    Refund,
    RefundLinePayment,
    PaymentGatewayLog,
    ProcessException,
}

impl ObjectType {
    pub const ALL: [ObjectType; 12] = [
        ObjectType::OrderSummary,
        ObjectType::OrderPaymentSummary,
        ObjectType::PaymentGateway,
        ObjectType::Payment,
        ObjectType::Invoice,
        ObjectType::CreditMemo,
        ObjectType::CreditMemoInvApplication,
        ObjectType::BackgroundOperation,
        ObjectType::Refund,
        ObjectType::RefundLinePayment,
        ObjectType::PaymentGatewayLog,
        ObjectType::ProcessException,
    ];

    /// The 3-char key prefix. Those Salesforce does not publish are this project's choice
    /// (SPEC §2); changing one would orphan every stored id, so they are fixed forever.
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectType::OrderSummary => "1Os",
            ObjectType::OrderPaymentSummary => "0aR",
            ObjectType::PaymentGateway => "0b0",
            ObjectType::Payment => "0Pa",
            ObjectType::Invoice => "3tt",
            ObjectType::CreditMemo => "50g",
            ObjectType::CreditMemoInvApplication => "0cm",
            ObjectType::BackgroundOperation => "0BO",
            ObjectType::Refund => "0Rf",
            ObjectType::RefundLinePayment => "0Rl",
            ObjectType::PaymentGatewayLog => "0Xt",
            ObjectType::ProcessException => "0PE",
        }
    }

    /// The sObject API name, as it appears in REST URLs and `attributes.type`.
    pub fn api_name(self) -> &'static str {
        match self {
            ObjectType::OrderSummary => "OrderSummary",
            ObjectType::OrderPaymentSummary => "OrderPaymentSummary",
            ObjectType::PaymentGateway => "PaymentGateway",
            ObjectType::Payment => "Payment",
            ObjectType::Invoice => "Invoice",
            ObjectType::CreditMemo => "CreditMemo",
            ObjectType::CreditMemoInvApplication => "CreditMemoInvApplication",
            ObjectType::BackgroundOperation => "BackgroundOperation",
            ObjectType::Refund => "Refund",
            ObjectType::RefundLinePayment => "RefundLinePayment",
            ObjectType::PaymentGatewayLog => "PaymentGatewayLog",
            ObjectType::ProcessException => "ProcessException",
        }
    }

    /// Case-insensitive because Salesforce resolves sObject names in URLs that way, and
    /// clients written against it send e.g. `/sobjects/refund/...`.
    pub fn from_api_name(name: &str) -> Option<ObjectType> {
        ObjectType::ALL
            .into_iter()
            .find(|ty| ty.api_name().eq_ignore_ascii_case(name))
    }

    /// Exact match: key prefixes are case-sensitive ("0Rf" and "0RF" are different keys).
    pub fn from_prefix(prefix: &str) -> Option<ObjectType> {
        ObjectType::ALL.into_iter().find(|ty| ty.prefix() == prefix)
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid id: {0}")]
    Malformed(String),
    #[error("id {id} is not a valid {expected} id")]
    WrongType { id: String, expected: ObjectType },
}

/// A record id in its canonical 18-char form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SfId(String);

impl SfId {
    /// Accepts the 15-char (case-sensitive) or 18-char form. An unknown prefix is not an
    /// error here: ids of objects this service does not model may still be echoed back.
    pub fn parse(s: &str) -> Result<SfId, IdError> {
        let malformed = || IdError::Malformed(s.to_owned());
        // Checking bytes (not chars) also rejects every non-ASCII char, whose UTF-8 bytes
        // are never ASCII alphanumerics.
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(malformed());
        }
        let (short, given_suffix) = match s.len() {
            SHORT_LEN => (s, None),
            LONG_LEN => (&s[..SHORT_LEN], Some(&s[SHORT_LEN..])),
            _ => return Err(malformed()),
        };
        let suffix = checksum_suffix(short.as_bytes());
        if let Some(given) = given_suffix {
            if !given.as_bytes().eq_ignore_ascii_case(&suffix) {
                return Err(malformed());
            }
        }
        Ok(SfId::from_checked_parts(short.as_bytes(), suffix))
    }

    /// Parses, then insists on `ty`'s prefix, so an id of one kind can never be used where
    /// another is meant.
    pub fn parse_as(s: &str, ty: ObjectType) -> Result<SfId, IdError> {
        let id = SfId::parse(s)?;
        if id.object_type() == Some(ty) {
            Ok(id)
        } else {
            Err(IdError::WrongType {
                id: s.to_owned(),
                expected: ty,
            })
        }
    }

    /// A fresh id: prefix, the creation time in ms (so ids sort by creation as strings, which
    /// keeps "oldest first" tie-breaks and index locality cheap), then 5 random chars
    /// (62^5 ≈ 9e8 choices per millisecond makes collisions negligible).
    pub fn generate(ty: ObjectType) -> SfId {
        let mut short = Vec::with_capacity(SHORT_LEN);
        short.extend_from_slice(ty.prefix().as_bytes());
        let (millis, sequence) = next_stamp(now_millis());
        short.extend_from_slice(&time_digits(millis));
        short.extend_from_slice(&sequence_digits(sequence));
        let suffix = checksum_suffix(&short);
        SfId::from_checked_parts(&short, suffix)
    }

    pub fn object_type(&self) -> Option<ObjectType> {
        ObjectType::from_prefix(&self.0[..PREFIX_LEN])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Callers pass 15 validated base62 bytes and a computed suffix; both are ASCII, for
    /// which `char::from(u8)` is exact.
    fn from_checked_parts(short: &[u8], suffix: [u8; 3]) -> SfId {
        SfId(
            short
                .iter()
                .chain(&suffix)
                .map(|&b| char::from(b))
                .collect(),
        )
    }
}

impl fmt::Display for SfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SfId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Salesforce's suffix: one char per 5-char chunk, encoding which chars are uppercase, so
/// that the 18-char form survives case-insensitive systems (spreadsheets, some databases).
fn checksum_suffix(short: &[u8]) -> [u8; 3] {
    let mut suffix = [0u8; 3];
    for (slot, chunk) in suffix.iter_mut().zip(short.chunks(5)) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | (1 << i));
        *slot = SUFFIX_ALPHABET[bits];
    }
    suffix
}

/// A clock before 1970 is a broken host; 0 still yields a valid (if early-sorting) id,
/// which is better than refusing to create records.
/// How many sequence values the random part holds (62^5).
const SEQUENCE_SPACE: u64 = 916_132_832;

/// The (millisecond, sequence) of the last id this process generated.
static LAST_STAMP: std::sync::Mutex<(u128, u64)> = std::sync::Mutex::new((0, 0));

/// The next (millisecond, sequence) pair, strictly greater than the last one: a new
/// millisecond starts at a random sequence (so two processes rarely meet), and ids made in
/// the same millisecond count up from there — so within a process ids sort in creation
/// order, which is what "oldest first" and the queue's FIFO rely on.
fn next_stamp(now: u128) -> (u128, u64) {
    let mut last = LAST_STAMP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let fresh = || rand::rng().random_range(0..SEQUENCE_SPACE / 2);
    let stamp = if now > last.0 {
        (now, fresh())
    } else if last.1 + 1 < SEQUENCE_SPACE {
        (last.0, last.1 + 1)
    } else {
        // A clock that stands still or went back: borrow from the next millisecond.
        (last.0 + 1, fresh())
    };
    *last = stamp;
    stamp
}

fn sequence_digits(mut sequence: u64) -> [u8; RANDOM_DIGITS] {
    let mut out = [b'0'; RANDOM_DIGITS];
    for slot in out.iter_mut().rev() {
        // `sequence % 62` is below 62, so the index is in range.
        *slot = BASE62[(sequence % 62) as usize];
        sequence /= 62;
    }
    out
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `millis` as 7 base62 digits, most significant first. 62^7 ms reaches the year 2081;
/// past that the value saturates so ids stay sortable (non-decreasing) rather than wrapping.
fn time_digits(millis: u128) -> [u8; TIME_DIGITS] {
    let base = BASE62.len() as u128;
    let max = base.pow(TIME_DIGITS as u32) - 1;
    let mut rest = millis.min(max);
    let mut digits = [b'0'; TIME_DIGITS];
    for digit in digits.iter_mut().rev() {
        // `rest % base` < 62, so the index is in range and the cast is lossless.
        *digit = BASE62[(rest % base) as usize];
        rest /= base;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn checksum_matches_the_documented_example() {
        assert_eq!(&checksum_suffix(b"50gR000000000JN"), b"IAY");
        let id = SfId::parse("50gR000000000JN").unwrap();
        assert_eq!(id.as_str(), "50gR000000000JNIAY");
    }

    #[test]
    fn checksum_bits_are_least_significant_first() {
        // One uppercase char at position i of a chunk sets bit i.
        let cases = [
            ("A0000", b'B'), // bit 0 -> 1
            ("0A000", b'C'), // bit 1 -> 2
            ("0000A", b'Q'), // bit 4 -> 16
            ("AAAAA", b'5'), // 31
            ("aaaaa", b'A'), // lowercase never counts
            ("zZ9Zz", b'K'), // bits 1 and 3 -> 10
        ];
        for (chunk, expected) in cases {
            let short = format!("{chunk}0000000000");
            assert_eq!(checksum_suffix(short.as_bytes())[0], expected, "{chunk}");
        }
    }

    #[test]
    fn fifteen_chars_become_eighteen() {
        let cases = [
            ("001000000000000", "001000000000000AAA"),
            ("0Rf000000000ABC", "0Rf000000000ABCCA2"),
            ("1Os5g00000AbCdE", "1Os5g00000AbCdECAV"),
        ];
        for (short, long) in cases {
            let id = SfId::parse(short).unwrap();
            assert_eq!(id.as_str(), long, "{short}");
            assert_eq!(SfId::parse(long).unwrap(), id, "{long}");
        }
    }

    #[test]
    fn suffix_is_accepted_in_any_case_and_output_uppercase() {
        for given in [
            "50gR000000000JNIAY",
            "50gR000000000JNiay",
            "50gR000000000JNiAy",
        ] {
            let id = SfId::parse(given).unwrap();
            assert_eq!(id.as_str(), "50gR000000000JNIAY", "{given}");
        }
    }

    #[test]
    fn the_fifteen_char_part_stays_case_sensitive() {
        let upper = SfId::parse("50gR000000000JN").unwrap();
        let lower = SfId::parse("50gr000000000jn").unwrap();
        assert_ne!(upper, lower);
        // The same 15 chars with the other id's suffix are rejected.
        assert!(SfId::parse("50gr000000000jnIAY").is_err());
    }

    #[test]
    fn malformed_ids_are_rejected() {
        let cases = [
            "",
            "50gR000000000J",      // 14
            "50gR000000000JNI",    // 16
            "50gR000000000JNIA",   // 17
            "50gR000000000JNIAYA", // 19
            "50gR00000-000JN",     // '-'
            "50gR00000é00JN",      // non-ASCII, 15 bytes
            "50gR0000é00JNIAY",    // non-ASCII, 18 bytes
            "50gR000000000JNIAZ",  // wrong suffix
            "50gR000000000JNAAA",  // wrong suffix
            "50gR000000000JN-AY",  // '-' in the suffix
            "50gR 00000000JN",     // space
        ];
        for case in cases {
            assert_eq!(
                SfId::parse(case),
                Err(IdError::Malformed(case.to_owned())),
                "{case:?}"
            );
        }
    }

    #[test]
    fn unknown_prefix_parses_but_has_no_type() {
        let id = SfId::parse("001000000000000").unwrap();
        assert_eq!(id.object_type(), None);
        assert_eq!(
            SfId::parse_as("001000000000000", ObjectType::Refund),
            Err(IdError::WrongType {
                id: "001000000000000".to_owned(),
                expected: ObjectType::Refund,
            })
        );
    }

    #[test]
    fn parse_as_checks_the_prefix() {
        let id = SfId::parse_as("50gR000000000JN", ObjectType::CreditMemo).unwrap();
        assert_eq!(id.object_type(), Some(ObjectType::CreditMemo));
        let err = SfId::parse_as("50gR000000000JNIAY", ObjectType::Invoice).unwrap_err();
        assert_eq!(
            err.to_string(),
            "id 50gR000000000JNIAY is not a valid Invoice id"
        );
        // Malformed beats wrong type.
        assert!(matches!(
            SfId::parse_as("50g", ObjectType::Invoice),
            Err(IdError::Malformed(_))
        ));
    }

    #[test]
    fn object_type_tables_are_consistent() {
        let expected_prefixes = [
            "1Os", "0aR", "0b0", "0Pa", "3tt", "50g", "0cm", "0BO", "0Rf", "0Rl", "0Xt", "0PE",
        ];
        for (ty, prefix) in ObjectType::ALL.into_iter().zip(expected_prefixes) {
            assert_eq!(ty.prefix(), prefix);
            assert_eq!(ObjectType::from_prefix(prefix), Some(ty));
            assert_eq!(ty.api_name(), format!("{ty:?}"));
            assert_eq!(ty.to_string(), ty.api_name());
            assert_eq!(ObjectType::from_api_name(ty.api_name()), Some(ty));
        }
        let distinct: HashSet<_> = ObjectType::ALL.iter().map(|t| t.prefix()).collect();
        assert_eq!(distinct.len(), ObjectType::ALL.len());
    }

    #[test]
    fn api_names_are_case_insensitive_and_prefixes_are_not() {
        assert_eq!(
            ObjectType::from_api_name("refund"),
            Some(ObjectType::Refund)
        );
        assert_eq!(
            ObjectType::from_api_name("ORDERPAYMENTSUMMARY"),
            Some(ObjectType::OrderPaymentSummary)
        );
        assert_eq!(ObjectType::from_api_name("Refunds"), None);
        assert_eq!(ObjectType::from_api_name(""), None);
        assert_eq!(ObjectType::from_prefix("0RF"), None);
        assert_eq!(ObjectType::from_prefix("0rf"), None);
        assert_eq!(ObjectType::from_prefix("0Rf0"), None);
    }

    #[test]
    fn generated_ids_round_trip_and_carry_their_type() {
        for ty in ObjectType::ALL {
            let id = SfId::generate(ty);
            assert_eq!(id.as_str().len(), LONG_LEN);
            assert!(id.as_str().starts_with(ty.prefix()));
            assert_eq!(id.object_type(), Some(ty));
            assert_eq!(SfId::parse(id.as_str()).unwrap(), id);
            assert_eq!(SfId::parse(&id.as_str()[..SHORT_LEN]).unwrap(), id);
            assert_eq!(SfId::parse_as(id.as_str(), ty).unwrap(), id);
            assert_eq!(id.to_string(), id.as_str());
            assert_eq!(id.as_ref(), id.as_str());
            assert_eq!(id.clone().into_string(), id.as_str());
        }
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        for _ in 0..5 {
            let earlier = SfId::generate(ObjectType::Refund);
            std::thread::sleep(std::time::Duration::from_millis(2));
            let later = SfId::generate(ObjectType::Refund);
            assert!(later > earlier, "{later} should sort after {earlier}");
            assert!(later.as_str() > earlier.as_str());
        }
    }

    #[test]
    fn generated_ids_in_one_millisecond_differ() {
        let ids: HashSet<_> = (0..1000)
            .map(|_| SfId::generate(ObjectType::PaymentGatewayLog))
            .collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn ids_made_in_a_burst_strictly_increase() {
        let ids: Vec<SfId> = (0..5000)
            .map(|_| SfId::generate(ObjectType::Refund))
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn a_clock_that_stands_still_or_goes_back_still_moves_forward() {
        let a = next_stamp(5_000_000);
        let b = next_stamp(4_000_000);
        let c = next_stamp(4_000_000);
        assert!(a < b && b < c);
        assert_eq!(&sequence_digits(0), b"00000");
        assert_eq!(&sequence_digits(SEQUENCE_SPACE - 1), b"zzzzz");
    }

    #[test]
    fn time_digits_are_big_endian_base62() {
        assert_eq!(&time_digits(0), b"0000000");
        assert_eq!(&time_digits(61), b"000000z");
        assert_eq!(&time_digits(62), b"0000010");
        assert_eq!(&time_digits(u128::MAX), b"zzzzzzz");
        assert_eq!(&time_digits(62u128.pow(7) - 1), b"zzzzzzz");
    }

    proptest! {
        #[test]
        fn time_digits_preserve_order(a in 0u128..62u128.pow(7), b in 0u128..62u128.pow(7)) {
            prop_assert_eq!(a.cmp(&b), time_digits(a).cmp(&time_digits(b)));
        }

        #[test]
        fn any_base62_string_of_fifteen_parses_and_round_trips(short in "[0-9A-Za-z]{15}") {
            let id = SfId::parse(&short).unwrap();
            prop_assert_eq!(&id.as_str()[..SHORT_LEN], short.as_str());
            prop_assert_eq!(SfId::parse(id.as_str()).unwrap(), id.clone());
            // Lowercasing the whole id keeps it valid only when the 15-char part had no
            // uppercase letters (suffix "AAA"); otherwise the suffix no longer matches.
            let lowered = id.as_str().to_ascii_lowercase();
            let had_upper = short.bytes().any(|b| b.is_ascii_uppercase());
            prop_assert_eq!(SfId::parse(&lowered).is_ok(), !had_upper);
        }

        #[test]
        fn a_changed_suffix_is_rejected(short in "[0-9A-Za-z]{15}", suffix in "[A-Z0-5]{3}") {
            let id = SfId::parse(&short).unwrap();
            let candidate = format!("{short}{suffix}");
            prop_assert_eq!(SfId::parse(&candidate).is_ok(), candidate == id.as_str());
        }
    }
}
