//! A provider that echoes its API key back — literally, JSON-`\u`-escaped, percent-encoded,
//! base64 in both alphabets at every alignment, with and without padding — in every place
//! an answer can carry it (a JSON error message and code, a refund's fields, a body that is
//! not JSON): nothing the service stores, read back through the API, holds
//! the key in any of those forms.
//!
//! The stand-in speaks Stripe's refund API on a loopback port; the key reaches it only in
//! the `Authorization` header, as from the real adapter.

use axum::extract::Form;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use refunds_testkit::{backend_tests, Backend, LocalServer, TestApp, V};
use serde_json::{json, Value};

/// Every encoding of `secret` a provider might echo.
fn encodings(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let escaped = |upper: bool| -> String {
        secret
            .chars()
            .map(|c| {
                if upper {
                    format!("\\u{:04X}", u32::from(c))
                } else {
                    format!("\\u{:04x}", u32::from(c))
                }
            })
            .collect()
    };
    let percent = |upper: bool| -> String {
        secret
            .bytes()
            .map(|b| {
                if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    };
    let mut out = vec![
        secret.to_string(),
        escaped(false),
        escaped(true),
        percent(true),
        percent(false),
    ];
    for prefix in ["", "x", "xy"] {
        for suffix in ["", "!"] {
            let blob = format!("{prefix}{secret}{suffix}");
            out.push(STANDARD.encode(&blob));
            out.push(STANDARD_NO_PAD.encode(&blob));
            out.push(URL_SAFE.encode(&blob));
            out.push(URL_SAFE_NO_PAD.encode(&blob));
        }
    }
    out
}

/// The encodings of `secret` found in `text`. Base64 is found by decoding: every run of
/// base64 characters (with JSON's `\/` undone), at every starting offset, in both alphabets.
fn leaked(text: &str, secret: &str) -> Vec<String> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let lenient = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let engines = [
        GeneralPurpose::new(&STANDARD, lenient),
        GeneralPurpose::new(&URL_SAFE, lenient),
    ];
    let mut found: Vec<String> = encodings(secret)
        .into_iter()
        .take(5)
        .filter(|form| text.to_lowercase().contains(&form.to_lowercase()))
        .collect();
    let unescaped = text.replace("\\/", "/");
    let runs = unescaped.split(|c: char| {
        !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '-' || c == '_')
    });
    for run in runs.filter(|r| r.len() >= 4) {
        for start in 0..4.min(run.len()) {
            let tail = &run[start..];
            // A lone last character holds no whole byte.
            let tail = &tail[..tail.len() - usize::from(tail.len() % 4 == 1)];
            for engine in &engines {
                if let Ok(bytes) = engine.decode(tail) {
                    if String::from_utf8_lossy(&bytes).contains(secret) {
                        found.push(format!("base64 {run}"));
                    }
                }
            }
        }
    }
    found
}

/// The encodings of `secret` in any string (or key) of a JSON value: each field is checked
/// as stored, not as re-escaped by serialisation.
fn leaked_in(value: &Value, secret: &str) -> Vec<String> {
    match value {
        Value::String(s) => leaked(s, secret),
        Value::Array(items) => items.iter().flat_map(|v| leaked_in(v, secret)).collect(),
        Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| {
                let mut found = leaked(k, secret);
                found.extend(leaked_in(v, secret));
                found
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_checker_finds_every_encoding() {
    let secret = "sk_test_51HqLyjWDarjtT1zdp7dc";
    for form in encodings(secret) {
        assert!(
            !leaked(&format!("{{\"m\": \"a {form} b\"}}"), secret).is_empty(),
            "{form}"
        );
    }
    assert!(leaked("nothing here", secret).is_empty());
    let stored = json!({"Response": format!("HTTP 400\n{}", encodings(secret)[1])});
    assert!(
        !leaked_in(&stored, secret).is_empty(),
        "a field is checked as stored"
    );
}

/// Picks where the stand-in puts the echoed key from the amount: `amount / 100 - 10` is
/// the encoding's index, `amount % 100` the place.
fn echo(headers: &HeaderMap, form: &[(String, String)]) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let amount: i64 = field("amount").and_then(|a| a.parse().ok()).unwrap_or(0);
    let forms = encodings(&key);
    let index = usize::try_from(amount / 100 - 10).unwrap_or(0) % forms.len();
    let form = &forms[index];
    // The JSON texts below are written by hand so the echo is exactly `form` on the wire.
    let (status, body) = match amount % 100 {
        // A card error whose message and code carry the key: Decline.
        1 => (
            StatusCode::PAYMENT_REQUIRED,
            format!(
                r#"{{"error": {{"type": "card_error", "code": "{form}", "message": "Declined for key {form}"}}}}"#
            ),
        ),
        // A refund object with the key in its id, failure reason and metadata: Success.
        2 => (
            StatusCode::OK,
            format!(
                r#"{{"id": "re_{form}", "object": "refund", "status": "succeeded", "amount": {amount},
                     "failure_reason": "{form}", "metadata": {{"echo": "{form}"}}, "created": 1700000000}}"#
            ),
        ),
        // Not JSON at all: a proxy's error page. ValidationError.
        _ => (
            StatusCode::BAD_REQUEST,
            format!("<html>upstream rejected Authorization: Bearer {form}</html>"),
        ),
    };
    (status, [("content-type", "application/json")], body).into_response()
}

async fn echoing_provider() -> LocalServer {
    let router = Router::new().route(
        "/v1/refunds",
        post(
            |headers: HeaderMap, Form(form): Form<Vec<(String, String)>>| async move {
                echo(&headers, &form)
            },
        ),
    );
    LocalServer::start(router).await
}

fn env_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "REFUNDS_SECRET_TEST_ECHO_KEY_SQLITE",
        Backend::Postgres => "REFUNDS_SECRET_TEST_ECHO_KEY_POSTGRES",
    }
}

async fn a_provider_echoing_the_key_in_any_encoding_leaves_no_trace(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let provider = echoing_provider().await;
    // A key with characters that every encoding spells differently.
    let secret = format!("sk_test_{:016x}/+~Q", rand::random::<u64>());
    std::env::set_var(env_name(backend), &secret);
    let gateway = app
        .gateway(json!({"PaymentGatewayName": "Echo", "ProviderType": "Stripe", "BaseUrl": provider.base_url,
                   "MerchantCredentialEnv": env_name(backend), "TimeoutMs": 2000}))
        .await;
    let count = encodings(&secret).len();
    let mut orders = Vec::new();
    for index in 0..count {
        for place in 1..=3 {
            let order = app.order_on(&gateway, "USD", &["500.00"]).await;
            let cents = (index as i64 + 10) * 100 + place;
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            let op = app
                .ensure(&order, json!({"excessFundsAmount": amount}))
                .await;
            orders.push((order, op));
        }
    }
    app.settle().await;

    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for (order, op) in &orders {
        for refund in app.refunds_of(op).await {
            *statuses
                .entry(refund["Status"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
            assert!(leaked_in(&refund, &secret).is_empty(), "{refund}");
        }
        for pe in app.exceptions_of(&order.id).await {
            assert!(leaked_in(&pe, &secret).is_empty(), "{pe}");
        }
    }
    // Every shape of answer was exercised: declined, refunded, rejected.
    assert_eq!(statuses.get("Processed"), Some(&count), "{statuses:?}");
    assert_eq!(statuses.get("Canceled"), Some(&(2 * count)), "{statuses:?}");

    // Every gateway log, read through the API, one by one and through SOQL.
    let ids = app
        .ids(
            "SELECT id FROM payment_gateway_logs WHERE id <> $1 ORDER BY id",
            "",
        )
        .await;
    assert_eq!(ids.len(), 3 * count, "one call per refund");
    let mut redacted = 0;
    for id in &ids {
        let log = app.record("PaymentGatewayLog", id).await;
        let response = log["Response"].as_str().unwrap_or("");
        assert!(
            response.len() <= 16 * 1024 + 16,
            "bounded: {}",
            response.len()
        );
        redacted += usize::from(response.contains("[REDACTED]"));
        let leaks = leaked_in(&log, &secret);
        assert!(leaks.is_empty(), "{leaks:?} in {log}");
    }
    assert_eq!(redacted, ids.len(), "every answer echoed the key");
    let (status, found) = app
        .get(&format!(
            "{V}/query?q=SELECT+Id,+Request,+Response,+GatewayMessage,+GatewayResultCode,+GatewayRefNumber+FROM+PaymentGatewayLog"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["totalSize"], json!(ids.len()));
    assert!(leaked_in(&found, &secret).is_empty());
}

backend_tests!(a_provider_echoing_the_key_in_any_encoding_leaves_no_trace);
