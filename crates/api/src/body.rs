//! Reading JSON bodies ourselves, so that even malformed JSON answers in our error shape.
//!
//! Every body is checked before it is read into values: an object that names a key twice
//! (after unescaping: `"a"` and `"\u0061"` are one key) is refused rather than letting the
//! last one win, and nesting deeper than [`MAX_JSON_DEPTH`] is refused without recursing
//! further; both answer `JSON_PARSER_ERROR`.

use std::collections::HashSet;
use std::fmt;

use refunds_domain::{Currency, IdError, Money, MoneyError, ObjectType, SfId};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Arrays and objects nested deeper than this are refused (the bodies of this API nest
/// three levels at most).
pub const MAX_JSON_DEPTH: usize = 32;

/// How serde_json (with `arbitrary_precision`) hands a number's exact text to a visitor:
/// as a map with this one key.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Checks one JSON value: no key twice in an object, nesting within [`MAX_JSON_DEPTH`].
struct Checked {
    /// Arrays and objects around this value.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Checked {
    /// The checker for the values of an array or object at this depth.
    fn inside<E: de::Error>(&self) -> Result<Checked, E> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(E::custom(format_args!(
                "nested more than {MAX_JSON_DEPTH} levels deep"
            )));
        }
        Ok(Checked {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inside = self.inside()?;
        while seq
            .next_element_seed(Checked {
                depth: inside.depth,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut key = map.next_key::<std::borrow::Cow<'de, str>>()?;
        if key.as_deref() == Some(NUMBER_TOKEN) {
            return map.next_value::<de::IgnoredAny>().map(|_| ());
        }
        let inside = self.inside()?;
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(name) = key {
            if !seen.insert(name.to_string()) {
                return Err(de::Error::custom(format_args!("duplicate key {name:?}")));
            }
            map.next_value_seed(Checked {
                depth: inside.depth,
            })?;
            key = map.next_key()?;
        }
        Ok(())
    }
}

/// Parses any JSON body after [`Checked`] has passed it.
pub fn value(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut checker = serde_json::Deserializer::from_slice(bytes);
    Checked { depth: 0 }
        .deserialize(&mut checker)
        .and_then(|()| checker.end())
        .map_err(|e| ApiError::json_parser(format!("Malformed JSON: {e}")))?;
    serde_json::from_slice::<Value>(bytes)
        .map_err(|e| ApiError::json_parser(format!("Malformed JSON: {e}")))
}

/// Parses a body that must be one JSON object.
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match value(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::json_parser(
            "Expected a JSON object as the request body",
        )),
        Err(e) => Err(e),
    }
}

/// The text of a JSON number, or of a string holding one (Salesforce's own examples send
/// amounts as strings). `None` for any other JSON type.
pub fn number_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.trim().to_string()),
        _ => None,
    }
}

/// Parses an amount of `currency`; describes the problem for an `INVALID_INPUT` answer.
pub fn amount(field: &str, value: &Value, currency: Currency) -> Result<i64, String> {
    let text = number_text(value).ok_or_else(|| format!("{field} must be a number"))?;
    Money::parse(&text, currency)
        .map(|m| m.minor())
        .map_err(|e| amount_problem(field, &text, &e, currency))
}

/// What is wrong with the amount `text` of `field`, for an `INVALID_INPUT` answer.
pub fn amount_problem(field: &str, text: &str, error: &MoneyError, currency: Currency) -> String {
    match error {
        MoneyError::TooManyDecimals { .. } => format!(
            "{field} {text} has more decimal places than {} allows ({})",
            currency.code(),
            currency.exponent()
        ),
        MoneyError::Overflow(_) => format!("{field} {text} is too large"),
        _ => format!("{field} {text} is not a valid number"),
    }
}

/// Parses an id that must be of type `ty`: `MALFORMED_ID` or `INVALID_ID_FIELD` otherwise.
pub fn id(field: &str, raw: &str, ty: ObjectType) -> Result<SfId, ApiError> {
    SfId::parse_as(raw, ty).map_err(|e| match e {
        IdError::Malformed(_) => {
            ApiError::bad_request("MALFORMED_ID", format!("{field}: invalid id value: {raw}"))
                .field(field)
        }
        IdError::WrongType { .. } => ApiError::bad_request(
            "INVALID_ID_FIELD",
            format!("{field}: {raw} is not a valid {ty} id"),
        )
        .field(field),
    })
}

/// A string field, or `JSON_PARSER_ERROR` naming the field.
pub fn string<'a>(field: &str, value: &'a Value) -> Result<&'a str, ApiError> {
    value.as_str().ok_or_else(|| {
        ApiError::json_parser(format!("Cannot deserialize {field}: expected a string"))
    })
}
