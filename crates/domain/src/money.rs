//! Money as an integer number of minor units plus an ISO 4217 currency.
//!
//! Amounts arrive as the text of JSON numbers and are parsed exactly from that text; a
//! [`Money`] can never be built from a floating-point number, and all arithmetic is
//! checked, because a rounding or wrapping error here would refund the wrong amount.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code {0}")]
    UnknownCurrency(String),
    #[error("{0} is not a number")]
    NotANumber(String),
    #[error("{text} has more decimal places than {currency} allows")]
    TooManyDecimals { text: String, currency: String },
    #[error("amount {0} is out of range")]
    Overflow(String),
    #[error("currencies {0} and {1} do not match")]
    CurrencyMismatch(String, String),
}

/// Active ISO 4217 codes with their minor-unit digits. Codes without minor units
/// ("N.A.": precious metals, XDR, test codes) are left out on purpose: nothing can be
/// refunded in them, so accepting them would only defer the error.
#[rustfmt::skip]
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("ANG", 2), ("AOA", 2), ("ARS", 2),
    ("AUD", 2), ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2),
    ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2),
    ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2),
    ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2), ("COP", 2),
    ("COU", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0), ("DKK", 2),
    ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2),
    ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0),
    ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2),
    ("ILS", 2), ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3),
    ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0),
    ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2), ("LKR", 2), ("LRD", 2),
    ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2), ("MKD", 2), ("MMK", 2),
    ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2), ("MXN", 2),
    ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2),
    ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2),
    ("PKR", 2), ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2),
    ("RWF", 0), ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2),
    ("SHP", 2), ("SLE", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2),
    ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3), ("TOP", 2),
    ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0), ("USD", 2),
    ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2), ("VES", 2),
    ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0),
    ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

/// An ISO 4217 currency known to this service, with its number of minor-unit digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    // Points into `CURRENCIES`, so a Currency can only be one of the table's entries.
    code: &'static str,
    exponent: u8,
}

impl Currency {
    /// Codes are matched exactly (uppercase), as Salesforce's CurrencyIsoCode is always
    /// uppercase; "usd" is more likely a client bug than a currency.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        CURRENCIES
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .ok()
            .and_then(|i| CURRENCIES.get(i))
            .map(|&(code, exponent)| Currency { code, exponent })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    /// Every currency this service knows, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .map(|&(code, exponent)| Currency { code, exponent })
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Number of decimal digits of the minor unit (USD 2, JPY 0, BHD 3).
    pub fn exponent(&self) -> u32 {
        u32::from(self.exponent)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    pub fn from_minor(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// Parses the text of a JSON number (or a numeric string) exactly: "10.10", "10", "-3.5",
    /// "1e1", "1.5E+2", "2.50e-1". Never goes through f64.
    ///
    /// The value, not its spelling, must fit the currency: "10.100" USD is 1010 minor units,
    /// "10.105" USD is rejected. Leading zeros ("010") are tolerated although JSON forbids
    /// them, because numeric strings from spreadsheets carry them and the value is clear.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let number = Decimal::parse(text).ok_or_else(|| MoneyError::NotANumber(text.to_owned()))?;
        let minor = number.to_minor(currency.exponent()).map_err(|e| match e {
            Inexact::Fraction => MoneyError::TooManyDecimals {
                text: text.to_owned(),
                currency: currency.code.to_owned(),
            },
            Inexact::Overflow => MoneyError::Overflow(text.to_owned()),
        })?;
        Ok(Money { minor, currency })
    }

    pub fn minor(&self) -> i64 {
        self.minor
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.minor
            .checked_add(other.minor)
            .map(|minor| Money::from_minor(minor, self.currency))
            .ok_or_else(|| MoneyError::Overflow(format!("{self} + {other}")))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.minor
            .checked_sub(other.minor)
            .map(|minor| Money::from_minor(minor, self.currency))
            .ok_or_else(|| MoneyError::Overflow(format!("{self} - {other}")))
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(
                self.currency.code.to_owned(),
                other.currency.code.to_owned(),
            ))
        }
    }
}

/// Exactly `exponent` decimals and nothing else, because this text is written into JSON
/// as a number: "10.10", "-0.05", "1000" (JPY), "1.234" (BHD).
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        // unsigned_abs keeps i64::MIN printable.
        let magnitude = self.minor.unsigned_abs();
        let exponent = self.currency.exponent();
        if exponent == 0 {
            return write!(f, "{sign}{magnitude}");
        }
        let scale = 10u64.pow(exponent);
        let width = usize::from(self.currency.exponent);
        write!(
            f,
            "{sign}{}.{:0width$}",
            magnitude / scale,
            magnitude % scale
        )
    }
}

/// Why a decimal value has no exact i64 minor-unit form.
enum Inexact {
    Fraction,
    Overflow,
}

/// A syntactically valid number, borrowed from the input:
/// `(int_digits . frac_digits) × 10^exponent`.
struct Decimal<'a> {
    negative: bool,
    int_digits: &'a [u8],
    frac_digits: &'a [u8],
    exponent: i64,
}

impl<'a> Decimal<'a> {
    /// JSON number grammar: `-? digits (. digits)? ([eE] [+-]? digits)?`. Returns None for
    /// anything else (empty, "+1", ".5", "5.", "1e", "NaN", whitespace, hex).
    fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, bytes),
        };
        let (int_digits, rest) = split_digits(rest);
        if int_digits.is_empty() {
            return None;
        }
        let (frac_digits, rest) = match rest.split_first() {
            Some((b'.', rest)) => {
                let (frac, rest) = split_digits(rest);
                if frac.is_empty() {
                    return None;
                }
                (frac, rest)
            }
            _ => (&[][..], rest),
        };
        let exponent = match rest.split_first() {
            None => 0,
            Some((b'e' | b'E', rest)) => parse_exponent(rest)?,
            Some(_) => return None,
        };
        Some(Decimal {
            negative,
            int_digits,
            frac_digits,
            exponent,
        })
    }

    fn digits(&self) -> impl DoubleEndedIterator<Item = u8> + '_ {
        self.int_digits
            .iter()
            .chain(self.frac_digits)
            .map(|d| d - b'0')
    }

    /// The value in units of 10^-`minor_exponent`, exactly, or why not.
    fn to_minor(&self, minor_exponent: u32) -> Result<i64, Inexact> {
        let total = self.int_digits.len() + self.frac_digits.len();
        let leading = self.digits().take_while(|&d| d == 0).count();
        if leading == total {
            // Zero in any spelling ("-0.000e999999999") is zero.
            return Ok(0);
        }
        let trailing = self.digits().rev().take_while(|&d| d == 0).count();
        let significant = total - leading - trailing;
        // The value is significant_digits × 10^scale in minor units. i128 because digit
        // counts and an exponent saturated at the i64 range must combine without overflow.
        let scale = i128::from(self.exponent) - len_i128(self.frac_digits.len())
            + len_i128(trailing)
            + i128::from(minor_exponent);
        if scale < 0 {
            // The significant digits end in a non-zero digit, so any negative power of ten
            // leaves a fraction of a minor unit.
            return Err(Inexact::Fraction);
        }
        // i64::MAX has 19 digits, so a longer value cannot fit; the bound also keeps the
        // loops below short however long the input or large the exponent.
        if len_i128(significant) + scale > 19 {
            return Err(Inexact::Overflow);
        }
        // Below 10^19 after the bound above, so i128 never overflows; checked anyway so
        // that a mistake in that reasoning is an error, not a wrong amount.
        let mut magnitude: i128 = 0;
        let digits = self.digits().skip(leading).take(significant);
        let shifts = std::iter::repeat_n(0, usize::try_from(scale).unwrap_or(usize::MAX));
        for d in digits.chain(shifts) {
            magnitude = magnitude
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(d)))
                .ok_or(Inexact::Overflow)?;
        }
        let signed = if self.negative { -magnitude } else { magnitude };
        i64::try_from(signed).map_err(|_| Inexact::Overflow)
    }
}

fn split_digits(bytes: &[u8]) -> (&[u8], &[u8]) {
    let n = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    bytes.split_at(n)
}

/// `[+-]? digits`, saturating at the i64 range: a saturated exponent is already far past
/// anything that could fit or be exact, so the verdict is the same as for the true value.
fn parse_exponent(bytes: &[u8]) -> Option<i64> {
    let (negative, rest) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    let (digits, tail) = split_digits(rest);
    if digits.is_empty() || !tail.is_empty() {
        return None;
    }
    let magnitude = digits.iter().fold(0i64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    Some(if negative { -magnitude } else { magnitude })
}

fn len_i128(len: usize) -> i128 {
    // usize is at most 64 bits on every supported target, so this never saturates.
    i128::try_from(len).unwrap_or(i128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[derive(Debug)]
    enum Want {
        Minor(i64),
        NotANumber,
        TooManyDecimals,
        Overflow,
    }

    fn check(code: &str, cases: &[(&str, Want)]) {
        let currency = cur(code);
        for (text, want) in cases {
            let got = Money::parse(text, currency);
            let expected = match want {
                Want::Minor(m) => Ok(Money::from_minor(*m, currency)),
                Want::NotANumber => Err(MoneyError::NotANumber((*text).to_owned())),
                Want::TooManyDecimals => Err(MoneyError::TooManyDecimals {
                    text: (*text).to_owned(),
                    currency: code.to_owned(),
                }),
                Want::Overflow => Err(MoneyError::Overflow((*text).to_owned())),
            };
            assert_eq!(got, expected, "{code} {text:?}");
        }
    }

    #[test]
    fn parses_usd() {
        use Want::*;
        check(
            "USD",
            &[
                ("10.10", Minor(1010)),
                ("10", Minor(1000)),
                ("-3.5", Minor(-350)),
                ("1e1", Minor(1000)),
                ("1.5E+2", Minor(15000)),
                ("2.50e-1", Minor(25)),
                ("10.100", Minor(1010)),
                ("10.105", TooManyDecimals),
                ("1e-2", Minor(1)),
                ("1E-2", Minor(1)),
                ("1e-3", TooManyDecimals),
                ("0.30000000000000004", TooManyDecimals),
                ("0", Minor(0)),
                ("-0", Minor(0)),
                ("0.00", Minor(0)),
                ("-0.05", Minor(-5)),
                ("0.01", Minor(1)),
                ("010", Minor(1000)),
                ("100e-2", Minor(100)),
                ("0.001e1", Minor(1)),
                ("12.3400000000000000000000000000", Minor(1234)),
                ("0e999999999", Minor(0)),
                ("0.0e-999999999999999999999999", Minor(0)),
                ("1e999999999", Overflow),
                ("1e99999999999999999999999999", Overflow),
                ("-1e999999999", Overflow),
                ("1e-999999999", TooManyDecimals),
                ("1e-99999999999999999999999999", TooManyDecimals),
                ("92233720368547758.07", Minor(i64::MAX)),
                ("-92233720368547758.08", Minor(i64::MIN)),
                ("92233720368547758.08", Overflow),
                ("-92233720368547758.09", Overflow),
                ("100000000000000000", Overflow),
                ("99999999999999999999999999999999999", Overflow),
                ("", NotANumber),
                ("-", NotANumber),
                ("+1", NotANumber),
                ("NaN", NotANumber),
                ("Infinity", NotANumber),
                ("-Infinity", NotANumber),
                (".5", NotANumber),
                ("5.", NotANumber),
                ("1e", NotANumber),
                ("1e+", NotANumber),
                ("1e-", NotANumber),
                ("1.e2", NotANumber),
                (" 1", NotANumber),
                ("1 ", NotANumber),
                ("0x10", NotANumber),
                ("1,000.00", NotANumber),
                ("--1", NotANumber),
                ("1e2e3", NotANumber),
                ("1.2.3", NotANumber),
                ("١", NotANumber),
            ],
        );
    }

    #[test]
    fn parses_jpy() {
        use Want::*;
        check(
            "JPY",
            &[
                ("1000", Minor(1000)),
                ("1000.0", Minor(1000)),
                ("1000.5", TooManyDecimals),
                ("1.5e3", Minor(1500)),
                ("15e-1", TooManyDecimals),
                ("150e-1", Minor(15)),
                ("-7", Minor(-7)),
                ("9223372036854775807", Minor(i64::MAX)),
                ("9223372036854775808", Overflow),
                ("-9223372036854775808", Minor(i64::MIN)),
            ],
        );
    }

    #[test]
    fn parses_bhd() {
        use Want::*;
        check(
            "BHD",
            &[
                ("1.234", Minor(1234)),
                ("1.2345", TooManyDecimals),
                ("1.2340", Minor(1234)),
                ("0.001", Minor(1)),
                ("1e-3", Minor(1)),
                ("1e-4", TooManyDecimals),
                ("-12.5", Minor(-12500)),
            ],
        );
    }

    #[test]
    fn displays_exactly_exponent_decimals() {
        let cases = [
            (1010, "USD", "10.10"),
            (-5, "USD", "-0.05"),
            (0, "USD", "0.00"),
            (-100, "USD", "-1.00"),
            (1000, "JPY", "1000"),
            (-1000, "JPY", "-1000"),
            (1234, "BHD", "1.234"),
            (1, "BHD", "0.001"),
            (12345, "CLF", "1.2345"),
            (i64::MIN, "USD", "-92233720368547758.08"),
            (i64::MAX, "USD", "92233720368547758.07"),
            (i64::MIN, "JPY", "-9223372036854775808"),
        ];
        for (minor, code, text) in cases {
            assert_eq!(Money::from_minor(minor, cur(code)).to_string(), text);
        }
    }

    #[test]
    fn currencies_have_the_documented_exponents() {
        let zero = "JPY KRW VND CLP ISK UGX XAF XOF XPF PYG RWF KMF GNF DJF BIF VUV";
        let three = "BHD IQD JOD KWD LYD OMR TND";
        let four = "CLF UYW";
        let two = "USD EUR GBP CHF CAD AUD NZD SEK NOK DKK PLN CZK HUF RON BGN INR CNY HKD \
                   SGD MXN BRL ZAR TRY ILS AED SAR THB MYR IDR PHP TWD";
        for (codes, exponent) in [(zero, 0), (two, 2), (three, 3), (four, 4)] {
            for code in codes.split_whitespace() {
                let c = cur(code);
                assert_eq!(c.exponent(), exponent, "{code}");
                assert_eq!(c.code(), code);
                assert_eq!(c.to_string(), code);
            }
        }
    }

    #[test]
    fn currency_table_is_sorted_and_well_formed() {
        // Sortedness is what makes the binary search in Currency::parse correct.
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
        for (code, exponent) in CURRENCIES {
            assert_eq!(code.len(), 3);
            assert!(code.bytes().all(|b| b.is_ascii_uppercase()), "{code}");
            assert!(*exponent <= 4);
            assert_eq!(cur(code).code(), *code);
        }
    }

    #[test]
    fn unknown_currencies_are_rejected() {
        for code in [
            "", "usd", "Usd", "US", "USDD", "XXX", "XAU", "HRK", "ABC", " USD",
        ] {
            assert_eq!(
                Currency::parse(code),
                Err(MoneyError::UnknownCurrency(code.to_owned())),
                "{code:?}"
            );
        }
    }

    #[test]
    fn checked_arithmetic() {
        let usd = cur("USD");
        let eur = cur("EUR");
        let a = Money::parse("10.10", usd).unwrap();
        let b = Money::parse("0.20", usd).unwrap();
        assert_eq!(
            a.checked_add(b).unwrap(),
            Money::parse("10.30", usd).unwrap()
        );
        assert_eq!(a.checked_sub(b).unwrap().to_string(), "9.90");
        assert_eq!(b.checked_sub(a).unwrap().to_string(), "-9.90");
        assert_eq!(
            a.checked_add(Money::from_minor(1, eur)),
            Err(MoneyError::CurrencyMismatch("USD".into(), "EUR".into()))
        );
        assert_eq!(
            a.checked_sub(Money::from_minor(1, eur)),
            Err(MoneyError::CurrencyMismatch("USD".into(), "EUR".into()))
        );
        let max = Money::from_minor(i64::MAX, usd);
        let min = Money::from_minor(i64::MIN, usd);
        let one = Money::from_minor(1, usd);
        assert!(matches!(max.checked_add(one), Err(MoneyError::Overflow(_))));
        assert!(matches!(min.checked_sub(one), Err(MoneyError::Overflow(_))));
        assert_eq!(max.checked_sub(one).unwrap().minor(), i64::MAX - 1);
        assert_eq!(a.minor(), 1010);
        assert_eq!(a.currency(), usd);
    }

    #[test]
    fn error_messages() {
        let usd = cur("USD");
        let msg = |text| Money::parse(text, usd).unwrap_err().to_string();
        assert_eq!(msg("abc"), "abc is not a number");
        assert_eq!(
            msg("1.001"),
            "1.001 has more decimal places than USD allows"
        );
        assert_eq!(msg("1e30"), "amount 1e30 is out of range");
        assert_eq!(
            Currency::parse("ZZZ").unwrap_err().to_string(),
            "unknown currency code ZZZ"
        );
    }

    fn currencies() -> impl Strategy<Value = Currency> {
        prop::sample::select(vec!["JPY", "USD", "BHD", "CLF"]).prop_map(cur)
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(minor in any::<i64>(), currency in currencies()) {
            let m = Money::from_minor(minor, currency);
            prop_assert_eq!(Money::parse(&m.to_string(), currency), Ok(m));
        }

        #[test]
        fn exponent_spelling_parses_to_the_same_value(
            minor in -1_000_000_000_000_000i64..1_000_000_000_000_000,
            currency in currencies(),
            extra_zeros in 0usize..30,
            upper in any::<bool>(),
        ) {
            let m = Money::from_minor(minor, currency);
            let e = if upper { 'E' } else { 'e' };
            let zeros = "0".repeat(extra_zeros);
            let exp = currency.exponent() as usize + extra_zeros;
            let text = format!("{minor}{zeros}{e}-{exp}");
            prop_assert_eq!(Money::parse(&text, currency), Ok(m));
            // Shifting the point the other way: "0.000minor" × 10^k.
            let magnitude = minor.unsigned_abs();
            let sign = if minor < 0 { "-" } else { "" };
            let digits = magnitude.to_string().len();
            let up = digits as i64 - currency.exponent() as i64;
            let up = if up >= 0 { format!("+{up}") } else { up.to_string() };
            let text = format!("{sign}0.{magnitude}{zeros}{e}{up}");
            prop_assert_eq!(Money::parse(&text, currency), Ok(m));
        }

        #[test]
        fn one_digit_too_many_is_rejected(
            minor in -1_000_000_000_000i64..1_000_000_000_000,
            last in 1u8..10,
            currency in currencies(),
        ) {
            // A non-zero digit one place below the minor unit is never representable.
            let text = format!("{}{last}", Money::from_minor(minor, currency));
            let text = if currency.exponent() == 0 { format!("{minor}.{last}") } else { text };
            let rejected = matches!(
                Money::parse(&text, currency),
                Err(MoneyError::TooManyDecimals { .. })
            );
            prop_assert!(rejected, "{} accepted", text);
        }

        #[test]
        fn parse_never_panics(text in "[-+0-9.eE]{0,40}", currency in currencies()) {
            let _ = Money::parse(&text, currency);
        }

        #[test]
        fn add_then_sub_is_identity(
            a in -1_000_000_000_000i64..1_000_000_000_000,
            b in -1_000_000_000_000i64..1_000_000_000_000,
        ) {
            let usd = cur("USD");
            let (a, b) = (Money::from_minor(a, usd), Money::from_minor(b, usd));
            prop_assert_eq!(a.checked_add(b).and_then(|s| s.checked_sub(b)), Ok(a));
        }
    }
}

#[cfg(test)]
mod all_currencies {
    use super::Currency;

    #[test]
    fn every_listed_currency_parses_back_to_itself() {
        let all: Vec<Currency> = Currency::all().collect();
        assert!(all.len() > 100);
        for c in &all {
            assert_eq!(Currency::parse(c.code()).unwrap(), *c);
        }
        assert!(all.windows(2).all(|w| w[0].code() < w[1].code()));
    }
}
