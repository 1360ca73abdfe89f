//! Exact decimal literals and the currency exponents they are scaled by.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use refunds_domain::Currency;

/// A decimal number exactly as written, `mantissa × 10^-scale`: SOQL literals are compared
/// with stored integers, so they never pass through floating point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number {
    negative: bool,
    mantissa: u128,
    scale: u32,
}

/// A number multiplied by `10^exponent`, placed among the i64 values a column can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scaled {
    Exact(i64),
    /// Strictly between this value and the next integer.
    Between(i64),
    Above,
    Below,
}

impl Number {
    /// `[+-]?digits(.digits)?`; `None` for anything else, or beyond 38 significant digits.
    pub fn parse(text: &str) -> Option<Number> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (int, frac) = match unsigned.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (unsigned, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|f| !digits(f)) {
            return None;
        }
        // Trailing zeros carry no value: 10.50 and 10.5 are the same literal.
        let frac = frac.unwrap_or("").trim_end_matches('0');
        let mut mantissa: u128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(u128::from(b - b'0'))?;
        }
        Some(Number {
            negative: negative && mantissa != 0,
            mantissa,
            scale: u32::try_from(frac.len()).ok()?,
        })
    }

    pub(super) fn scaled(&self, exponent: u32) -> Scaled {
        let beyond = if self.negative {
            Scaled::Below
        } else {
            Scaled::Above
        };
        let (magnitude, exact) = if exponent >= self.scale {
            match 10u128
                .checked_pow(exponent - self.scale)
                .and_then(|p| self.mantissa.checked_mul(p))
            {
                Some(m) => (m, true),
                None => return beyond,
            }
        } else {
            match 10u128.checked_pow(self.scale - exponent) {
                Some(d) => {
                    let remainder = self.mantissa % d;
                    (self.mantissa / d, remainder == 0)
                }
                // 10^39 exceeds every u128 mantissa: a non-zero fraction below one.
                None => (0, false),
            }
        };
        let Ok(magnitude) = i128::try_from(magnitude) else {
            return beyond;
        };
        let value = if self.negative { -magnitude } else { magnitude };
        let floor = if exact || !self.negative {
            value
        } else {
            value - 1
        };
        match i64::try_from(floor) {
            Ok(f) if exact => Scaled::Exact(f),
            Ok(f) if f < i64::MAX => Scaled::Between(f),
            _ if floor > 0 => Scaled::Above,
            _ => Scaled::Below,
        }
    }
}

/// Currencies grouped by minor-unit digits. SQL cannot see a currency's exponent, so a
/// money comparison is a CASE over these groups, built from the domain's own currency
/// table so it cannot drift from it.
pub(super) struct Exponents {
    /// Every exponent but the most common one, with its codes.
    pub(super) groups: Vec<(u32, Vec<String>)>,
    /// The most common exponent (2): the CASE's ELSE.
    pub(super) default: u32,
    pub(super) max: u32,
}

pub(super) fn exponents() -> &'static Exponents {
    static EXPONENTS: OnceLock<Exponents> = OnceLock::new();
    EXPONENTS.get_or_init(|| {
        let mut by_exponent: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for currency in Currency::all() {
            by_exponent
                .entry(currency.exponent())
                .or_default()
                .push(currency.code().to_string());
        }
        let default = by_exponent
            .iter()
            .max_by_key(|(_, codes)| codes.len())
            .map_or(2, |(e, _)| *e);
        let max = by_exponent.keys().copied().max().unwrap_or(default);
        let groups = by_exponent
            .into_iter()
            .filter(|(e, _)| *e != default)
            .collect();
        Exponents {
            groups,
            default,
            max,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Number {
        Number::parse(text).unwrap_or_else(|| panic!("{text} parses"))
    }

    #[test]
    fn numbers_parse_exactly_and_reject_other_spellings() {
        assert_eq!(n("10.50"), n("10.5"));
        assert_eq!(n("-0.00"), n("0"));
        assert_eq!(n("+7"), n("7"));
        assert_eq!(n("007.10"), n("7.1"));
        for bad in [
            "",
            "-",
            "1.",
            ".5",
            "1e5",
            "1,5",
            "0x10",
            " 1",
            "1 ",
            "--1",
            "NaN",
            "1.2.3",
            "123456789012345678901234567890123456789012",
        ] {
            assert_eq!(Number::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn scaling_places_a_literal_among_the_integers() {
        use Scaled::*;
        let cases: &[(&str, u32, Scaled)] = &[
            ("10.5", 2, Exact(1050)),
            ("10.5", 0, Between(10)),
            ("-10.5", 0, Between(-11)),
            ("-10.5", 2, Exact(-1050)),
            ("10.5", 3, Exact(10_500)),
            ("0.001", 2, Between(0)),
            ("-0.001", 2, Between(-1)),
            ("1000", 0, Exact(1000)),
            ("9223372036854775807", 0, Exact(i64::MAX)),
            ("9223372036854775808", 0, Above),
            ("-9223372036854775808", 0, Exact(i64::MIN)),
            ("-9223372036854775809", 0, Below),
            ("9223372036854775807.5", 0, Above),
            ("-9223372036854775808.5", 0, Below),
            ("92233720368547758.08", 2, Above),
            ("1", 40, Above),
            ("-1", 40, Below),
            (
                "0.000000000000000000000000000000000000000000001",
                2,
                Between(0),
            ),
            (
                "-0.000000000000000000000000000000000000000000001",
                2,
                Between(-1),
            ),
        ];
        for (text, exponent, want) in cases {
            assert_eq!(n(text).scaled(*exponent), *want, "{text} × 10^{exponent}");
        }
    }

    #[test]
    fn exponents_come_from_the_domain_currency_table() {
        let e = exponents();
        assert_eq!(e.default, 2);
        assert_eq!(e.max, 4);
        let group = |exponent: u32| {
            e.groups
                .iter()
                .find(|(x, _)| *x == exponent)
                .map(|(_, codes)| codes.clone())
                .unwrap_or_default()
        };
        assert!(group(0).contains(&"JPY".to_string()));
        assert!(group(0).contains(&"KRW".to_string()));
        assert!(group(3).contains(&"BHD".to_string()));
        assert!(group(4).contains(&"CLF".to_string()));
        assert!(e.groups.iter().all(|(x, codes)| *x != 2
            && codes
                .iter()
                .all(|c| Currency::parse(c).map(|c| c.exponent()) == Ok(*x))));
        assert!(!e
            .groups
            .iter()
            .any(|(_, codes)| codes.contains(&"USD".to_string())));
    }
}
