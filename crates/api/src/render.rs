//! Rendering stored records as Salesforce sObject JSON.

use std::str::FromStr;

use refunds_domain::{Currency, Money};
use refunds_store::records::{Record, Value as Stored};
use refunds_store::FieldKind;
use serde_json::{Map, Number, Value};

use crate::version::ApiVersion;

/// `yyyy-MM-dd'T'HH:mm:ss.SSS+0000` in UTC.
pub fn datetime(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}+0000",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A money amount as a JSON number with exactly the currency's decimals.
pub fn money(minor: i64, currency: &str) -> Value {
    let text = match Currency::parse(currency) {
        Ok(c) => Money::from_minor(minor, c).to_string(),
        Err(_) => minor.to_string(),
    };
    Number::from_str(&text)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

pub fn record(record: &Record, version: ApiVersion) -> Value {
    let mut out = Map::new();
    let id = record
        .get("Id")
        .and_then(|v| v.as_text())
        .unwrap_or_default()
        .to_string();
    out.insert(
        "attributes".into(),
        serde_json::json!({
            "type": record.ty.api_name(),
            "url": format!("/services/data/{}/sobjects/{}/{}", version.segment(), record.ty.api_name(), id),
        }),
    );
    for (field, value) in &record.values {
        let json = match (value, field.kind) {
            (Stored::Null, _) => Value::Null,
            (Stored::Int(ms), FieldKind::DateTime) => Value::String(datetime(*ms)),
            (Stored::Int(minor), FieldKind::Money) => {
                money(*minor, record.currency.as_deref().unwrap_or("USD"))
            }
            (Stored::Int(i), _) => Value::from(*i),
            (Stored::Text(s), _) => Value::String(s.clone()),
        };
        out.insert(field.name.to_string(), json);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_use_salesforce_format() {
        assert_eq!(datetime(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(datetime(1_795_881_600_123), "2026-11-28T16:00:00.123+0000");
        assert_eq!(datetime(951_782_400_000), "2000-02-29T00:00:00.000+0000");
    }

    #[test]
    fn money_keeps_the_currency_decimals() {
        assert_eq!(money(1010, "USD").to_string(), "10.10");
        assert_eq!(money(1000, "JPY").to_string(), "1000");
        assert_eq!(money(1234, "BHD").to_string(), "1.234");
    }
}
