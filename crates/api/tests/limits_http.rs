//! The bounds on what one request may ask for, on SQLite and PostgreSQL, each at and one
//! past its edge: SOQL nesting, IN lists, conditions, values and text length (what is
//! accepted runs on both databases); JSON nesting and duplicate keys on every JSON body;
//! the `Bearer` scheme in any case; what one unauthenticated Adyen delivery can cost.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use common::{assert_error_with_output, assert_plain_error, ledger, raw, Raw};
use refunds_domain::{ObjectType, SfId};
use refunds_testkit::{backend_tests, Backend, TestApp, V};
use serde_json::{json, Value};

const MAX_DEPTH: usize = 100;
const MAX_IN_ITEMS: usize = 1_000;
const MAX_CONDITIONS: usize = 500;
const MAX_VALUES: usize = 4_000;
const MAX_TEXT_CHARS: usize = 100_000;
const MAX_JSON_DEPTH: usize = 32;
const MAX_WEBHOOK_ITEMS: usize = 100;

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn get_query(app: &TestApp, soql: &str) -> Raw {
    raw(
        app,
        Method::GET,
        &format!("{V}/query?q={}", encode(soql)),
        None,
        &[],
    )
    .await
}

async fn post_query(app: &TestApp, soql: &str) -> Raw {
    raw(
        app,
        Method::POST,
        &format!("{V}/query"),
        Some(format!("q={}", encode(soql)).into_bytes()),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await
}

/// The ids a successful answer holds.
fn ids(answer: &Raw) -> Vec<String> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json()["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["Id"].as_str().expect("Id").to_string())
        .collect()
}

fn refused(answer: &Raw, mentions: &str) {
    let body = answer.json();
    assert_plain_error(
        answer.status,
        &body,
        StatusCode::BAD_REQUEST,
        "MALFORMED_QUERY",
        None,
    );
    let message = body[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(mentions), "{message}");
}

async fn gateway(app: &TestApp, name: &str) -> String {
    app.gateway(json!({"PaymentGatewayName": name, "ProviderType": "Simulator"}))
        .await
}

/// Conditions nested `depth` levels deep, alternating OR and AND so that each level is
/// a real node of the SQL (plain parentheses around one condition add nothing): the
/// outermost level is an OR whose first branch names `hit`.
fn nested(depth: usize, hit: &str) -> String {
    let mut condition = "PaymentGatewayName = 'innermost'".to_string();
    for level in (0..depth).rev() {
        let (name, join) = if level == 0 {
            (hit.to_string(), "OR")
        } else if level % 2 == 0 {
            (format!("g{level}"), "OR")
        } else {
            (format!("g{level}"), "AND")
        };
        condition = format!("(PaymentGatewayName = '{name}' {join} {condition})");
    }
    format!("SELECT Id FROM PaymentGateway WHERE {condition}")
}

async fn soql_nesting_is_bounded(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let id = gateway(&app, "hit").await;
    assert_eq!(
        ids(&get_query(&app, &nested(MAX_DEPTH, "hit")).await),
        [id.as_str()]
    );
    refused(
        &get_query(&app, &nested(MAX_DEPTH + 1, "hit")).await,
        "nested too deeply",
    );
    // Parentheses alone, as in the report that crashed the process: 2,000 levels.
    let plain = |depth: usize| {
        format!(
            "SELECT Id FROM PaymentGateway WHERE {}PaymentGatewayName = 'hit'{}",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    assert_eq!(ids(&get_query(&app, &plain(MAX_DEPTH)).await), [id]);
    refused(
        &get_query(&app, &plain(MAX_DEPTH + 1)).await,
        "nested too deeply",
    );
    refused(&get_query(&app, &plain(2_000)).await, "nested too deeply");
}

async fn in_lists_are_bounded_and_run(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let id = gateway(&app, "name-500").await;
    let names = |n: usize| {
        (0..n)
            .map(|i| format!("'name-{i}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // 998 items answered 500 before: SQLite's expression depth.
    for n in [998, MAX_IN_ITEMS] {
        let soql = format!(
            "SELECT Id FROM PaymentGateway WHERE PaymentGatewayName IN ({})",
            names(n)
        );
        assert_eq!(
            ids(&get_query(&app, &soql).await),
            [id.as_str()],
            "{n} items"
        );
    }
    let soql = format!(
        "SELECT Id FROM PaymentGateway WHERE PaymentGatewayName IN ({})",
        names(MAX_IN_ITEMS + 1)
    );
    refused(&get_query(&app, &soql).await, "IN list");

    // Money: one SQL list per currency exponent, so four parameters per value; the
    // whole query's values at their bound (4,000) still run.
    let order = app.order("USD", &["7.50"]).await;
    let amounts = |from: usize| {
        (from..from + MAX_IN_ITEMS)
            .map(|cents| format!("{}.{:02}", cents / 100, cents % 100))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lists: Vec<String> = (0..MAX_VALUES / MAX_IN_ITEMS)
        .map(|i| format!("Amount IN ({})", amounts(1 + i * MAX_IN_ITEMS)))
        .collect();
    let soql = format!("SELECT Id FROM Payment WHERE {}", lists.join(" OR "));
    assert_eq!(ids(&post_query(&app, &soql).await), order.payments);
    let soql = format!(
        "SELECT Id FROM Payment WHERE {} OR Amount = 1",
        lists.join(" OR ")
    );
    refused(&post_query(&app, &soql).await, "too many values");
}

async fn condition_chains_are_bounded_and_run(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let id = gateway(&app, "name-7").await;
    let chain = |n: usize, join: &str| {
        let parts: Vec<String> = (0..n)
            .map(|i| match join {
                "OR" => format!("PaymentGatewayName = 'name-{i}'"),
                _ => format!("PaymentGatewayName != 'other-{i}'"),
            })
            .collect();
        format!(
            "SELECT Id FROM PaymentGateway WHERE {}",
            parts.join(&format!(" {join} "))
        )
    };
    for join in ["OR", "AND"] {
        assert_eq!(
            ids(&get_query(&app, &chain(MAX_CONDITIONS, join)).await),
            [id.as_str()],
            "{join}"
        );
        refused(
            &get_query(&app, &chain(MAX_CONDITIONS + 1, join)).await,
            "too many conditions",
        );
    }
    // 999 ORed conditions answered 500 before.
    refused(
        &get_query(&app, &chain(999, "OR")).await,
        "too many conditions",
    );
}

async fn query_text_length_is_bounded(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let id = gateway(&app, "hit").await;
    let padded = |chars: usize| {
        let head = "SELECT Id FROM PaymentGateway WHERE PaymentGatewayName = 'hit' OR PaymentGatewayName = '";
        // multi-byte characters: the bound counts characters, not bytes
        let pad = chars - head.chars().count() - 1;
        format!("{head}{}'", "é".repeat(pad))
    };
    let edge = padded(MAX_TEXT_CHARS);
    assert_eq!(edge.chars().count(), MAX_TEXT_CHARS);
    assert_eq!(ids(&post_query(&app, &edge).await), [id.as_str()]);
    refused(
        &post_query(&app, &padded(MAX_TEXT_CHARS + 1)).await,
        "too long",
    );
    // A POST needs the form field.
    for (body, content_type) in [
        ("", "application/x-www-form-urlencoded"),
        ("q=", "application/x-www-form-urlencoded"),
        ("{\"q\": \"SELECT Id FROM Refund\"}", "application/json"),
    ] {
        let answer = raw(
            &app,
            Method::POST,
            &format!("{V}/query"),
            Some(body.as_bytes().to_vec()),
            &[("content-type", content_type)],
        )
        .await;
        assert_plain_error(
            answer.status,
            &answer.json(),
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            None,
        );
    }
}

/// Rows a JSON body could add, besides the money in [`ledger`].
async fn records(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "order_summaries",
        "payment_gateways",
        "payments",
        "order_payment_summaries",
        "credit_memos",
    ] {
        out.push(app.scalar(&format!("SELECT COUNT(*) FROM {table}")).await);
    }
    out
}

/// Every JSON body resource, as (method, path, whether it answers "Error with Output").
async fn json_resources(app: &TestApp) -> Vec<(Method, String, bool)> {
    let order = app.order("USD", &["10.00"]).await;
    vec![
        (Method::POST, format!("{V}/sobjects/OrderSummary"), false),
        (
            Method::PATCH,
            format!("{V}/sobjects/Refund/{}", SfId::generate(ObjectType::Refund)),
            false,
        ),
        (
            Method::POST,
            format!("{V}/commerce/order-management/order-payment-summaries"),
            false,
        ),
        (Method::POST, TestApp::ensure_path(&order.id), true),
    ]
}

async fn send(app: &TestApp, method: &Method, path: &str, body: &str) -> Raw {
    raw(
        app,
        method.clone(),
        path,
        Some(body.as_bytes().to_vec()),
        &[("Idempotency-Key", "limits-test")],
    )
    .await
}

fn parser_error(answer: &Raw, with_output: bool) {
    let body = answer.json();
    if with_output {
        assert_error_with_output(
            answer.status,
            &body,
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
        );
    } else {
        assert_plain_error(
            answer.status,
            &body,
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            None,
        );
    }
}

async fn duplicate_json_keys_are_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let resources = json_resources(&app).await;
    let before = (ledger(&app).await, records(&app).await);
    let bodies = [
        r#"{"OrderNumber": "1", "CurrencyIsoCode": "USD", "OrderNumber": "2"}"#,
        // the same key once escaped: equal after unescaping
        r#"{"Status": "Canceled", "St\u0061tus": "Processed"}"#,
        r#"{"excessFundsAmount": 1.00, "excessFundsAmount": 2.00}"#,
        r#"{"paymentIds": [], "orderSummaryId": "x", "paymentIds": []}"#,
        // nested objects too
        r#"{"a": {"b": 1, "b": 2}}"#,
    ];
    for (method, path, with_output) in &resources {
        for body in bodies {
            let answer = send(&app, method, path, body).await;
            parser_error(&answer, *with_output);
            assert!(answer.json()[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("duplicate key")));
        }
    }
    assert_eq!((ledger(&app).await, records(&app).await), before);
    // The Adyen webhook reads JSON the same way.
    let answer = raw(
        &app,
        Method::POST,
        "/webhooks/adyen",
        Some(br#"{"live": "false", "live": "true", "notificationItems": []}"#.to_vec()),
        &[],
    )
    .await;
    parser_error(&answer, false);
}

async fn json_nesting_is_bounded(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let resources = json_resources(&app).await;
    let before = (ledger(&app).await, records(&app).await);
    // `{"Deep": [[…]]}`: the object is one level, each array one more.
    let deep = |levels: usize| {
        format!(
            "{{\"Deep\": {}{}}}",
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    };
    for (method, path, with_output) in &resources {
        // At the bound the body is read; the field is then refused for what it is.
        let answer = send(&app, method, path, &deep(MAX_JSON_DEPTH)).await;
        assert!(answer.status.is_client_error(), "{}", answer.text);
        assert_ne!(
            answer.json()[0]["message"]
                .as_str()
                .map(|m| m.contains("nested")),
            Some(true),
            "{path}: {}",
            answer.text
        );
        for levels in [MAX_JSON_DEPTH + 1, 2_000, 100_000] {
            let answer = send(&app, method, path, &deep(levels)).await;
            parser_error(&answer, *with_output);
            assert!(
                answer.text.contains("nested more than 32 levels"),
                "{}",
                answer.text
            );
        }
    }
    assert_eq!((ledger(&app).await, records(&app).await), before);
}

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let path = format!("{V}/query?q=SELECT+Id+FROM+PaymentGateway");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR", "OAuth", "oauth"] {
        let header = format!("{scheme} {}", app.token);
        let answer = raw(
            &app,
            Method::GET,
            &path,
            None,
            &[("Authorization", &header)],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{scheme}: {}", answer.text);
    }
    for header in [
        format!("Bearer{}", app.token),
        format!("Bearers {}", app.token),
        format!("Basic {}", app.token),
        "bearer ".to_string(),
        format!("bearer {}x", app.token),
    ] {
        let answer = raw(
            &app,
            Method::GET,
            &path,
            None,
            &[("Authorization", &header)],
        )
        .await;
        assert_plain_error(
            answer.status,
            &answer.json(),
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            None,
        );
    }
}

/// Log lines written while `f` runs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn warnings(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().expect("log buffer").clone()).expect("UTF-8");
        text.lines()
            .filter(|l| l.contains("WARN") && l.contains("Adyen"))
            .map(str::to_string)
            .collect()
    }
}

fn delivery(items: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..items)
        .map(|i| {
            json!({"NotificationRequestItem": {
                "amount": {"currency": "EUR", "value": 100},
                "eventCode": "REFUND",
                "merchantAccountCode": "Merchant",
                "merchantReference": format!("unknown-{i}"),
                "pspReference": format!("psp-{i}"),
                "success": "true"
            }})
        })
        .collect();
    json!({"live": "false", "notificationItems": items})
        .to_string()
        .into_bytes()
}

async fn an_adyen_delivery_is_bounded(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let before = (ledger(&app).await, records(&app).await);

    let answer = raw(
        &app,
        Method::POST,
        "/webhooks/adyen",
        Some(delivery(MAX_WEBHOOK_ITEMS)),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.text, "[accepted]");
    let warnings = logs.warnings();
    assert_eq!(warnings.len(), 1, "one summary line: {warnings:?}");
    assert!(warnings[0].contains("unknown_refunds=100"), "{warnings:?}");

    let answer = raw(
        &app,
        Method::POST,
        "/webhooks/adyen",
        Some(delivery(MAX_WEBHOOK_ITEMS + 1)),
        &[],
    )
    .await;
    assert_plain_error(
        answer.status,
        &answer.json(),
        StatusCode::BAD_REQUEST,
        "LIMIT_EXCEEDED",
        None,
    );
    assert_eq!(logs.warnings().len(), 2, "{:?}", logs.warnings());
    assert_eq!((ledger(&app).await, records(&app).await), before);
}

backend_tests!(
    soql_nesting_is_bounded,
    in_lists_are_bounded_and_run,
    condition_chains_are_bounded_and_run,
    query_text_length_is_bounded,
    duplicate_json_keys_are_refused,
    json_nesting_is_bounded,
    the_bearer_scheme_is_case_insensitive,
    an_adyen_delivery_is_bounded,
);
