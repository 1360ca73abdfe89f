//! Reading JSON bodies ourselves, so that even malformed JSON answers in our error shape.

use refunds_domain::{Currency, IdError, Money, MoneyError, ObjectType, SfId};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Parses a body that must be one JSON object.
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::json_parser(
            "Expected a JSON object as the request body",
        )),
        Err(e) => Err(ApiError::json_parser(format!("Malformed JSON: {e}"))),
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
