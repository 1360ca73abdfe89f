//! Helpers shared by the API's HTTP tests: raw responses (status, headers, body text),
//! the two Salesforce error shapes, and a fingerprint of every balance and queue row so a
//! rejected request can be shown to have changed nothing.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use refunds_testkit::TestApp;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Salesforce's JSON content type, on every answer that has a body.
pub const JSON_UTF8: &str = "application/json;charset=UTF-8";

/// One answer as the client sees it on the wire.
pub struct Raw {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Raw {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON, failing the test if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "{} answered a non-JSON body ({e}): {:?}",
                self.status,
                self.text.chars().take(300).collect::<String>()
            )
        })
    }
}

/// Sends one request through the app's router and keeps headers and the exact body text.
pub async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Raw {
    let bearer = format!("Bearer {}", app.token);
    let mut with_token: Vec<(&str, &str)> = headers.to_vec();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        with_token.push(("Authorization", bearer.as_str()));
    }
    raw_on(&app.router, method, path, body, &with_token).await
}

/// As [`raw`], through any router (e.g. one built with a different `AppState`).
pub async fn raw_on(
    router: &Router,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Raw {
    let mut request = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .header("content-type", "application/json")
        .body(Body::from(body.unwrap_or_default()))
        .expect("request");
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    Raw {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
    }
}

/// Asserts the "Error with Output" body of ensure-refunds-async, exactly: one element,
/// these keys and no others, the same code and message inside `output.errors`.
pub fn assert_error_with_output(
    status: StatusCode,
    body: &Value,
    want_status: StatusCode,
    want_code: &str,
) {
    assert_eq!(status, want_status, "status for {want_code}: {body}");
    let message = body[0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("message is a string: {body}"));
    assert!(!message.is_empty(), "empty message: {body}");
    let expected = json!([{
        "errorCode": want_code,
        "message": message,
        "enhancedErrorType": null,
        "output": {
            "backgroundOperationId": null,
            "errors": [{"errorCode": want_code, "message": message}],
            "success": false
        }
    }]);
    assert_eq!(body, &expected, "Error with Output shape");
    assert_no_leak(message);
}

/// Asserts the plain Salesforce error array with one error of `want_code`; `fields`, when
/// given, must be exactly that list.
pub fn assert_plain_error(
    status: StatusCode,
    body: &Value,
    want_status: StatusCode,
    want_code: &str,
    fields: Option<&[&str]>,
) {
    assert_eq!(status, want_status, "status for {want_code}: {body}");
    let items = body
        .as_array()
        .unwrap_or_else(|| panic!("error array: {body}"));
    assert_eq!(items.len(), 1, "one error: {body}");
    let error = items[0]
        .as_object()
        .unwrap_or_else(|| panic!("error object: {body}"));
    assert_eq!(error["errorCode"], want_code, "{body}");
    let message = error["message"].as_str().expect("message");
    assert!(!message.is_empty(), "{body}");
    assert_no_leak(message);
    for key in error.keys() {
        assert!(
            ["errorCode", "message", "fields"].contains(&key.as_str()),
            "unexpected key {key} in {body}"
        );
    }
    if let Some(fields) = fields {
        assert_eq!(error["fields"], json!(fields), "fields of {body}");
    }
}

/// No SQL text or internals in a client-facing message.
fn assert_no_leak(message: &str) {
    let lower = message.to_ascii_lowercase();
    for needle in [
        "select ",
        "insert ",
        "sqlx",
        "panicked",
        "backtrace",
        "src/",
    ] {
        assert!(
            !lower.contains(needle),
            "message leaks {needle:?}: {message}"
        );
    }
}

/// Every number a request could change: queued operations, remembered keys, reservations,
/// refunds, balances. Equal before and after proves a rejected request changed nothing.
pub async fn ledger(app: &TestApp) -> Vec<(&'static str, i64)> {
    const SQL: &[(&str, &str)] = &[
        ("operations", "SELECT COUNT(*) FROM background_operations"),
        ("idempotency keys", "SELECT COUNT(*) FROM idempotency_keys"),
        ("refunds", "SELECT COUNT(*) FROM refunds"),
        (
            "applications",
            "SELECT COUNT(*) FROM credit_memo_inv_applications",
        ),
        (
            "pending refund",
            "SELECT COALESCE(SUM(pending_refund_amount), 0) FROM order_payment_summaries",
        ),
        (
            "refunded",
            "SELECT COALESCE(SUM(refunded_amount), 0) FROM order_payment_summaries",
        ),
        (
            "captured",
            "SELECT COALESCE(SUM(captured_amount), 0) FROM order_payment_summaries",
        ),
        (
            "credit memo balance",
            "SELECT COALESCE(SUM(balance), 0) FROM credit_memos",
        ),
        (
            "invoice balance",
            "SELECT COALESCE(SUM(balance), 0) FROM invoices",
        ),
        (
            "payment refunds",
            "SELECT COALESCE(SUM(total_refund_applied), 0) FROM payments",
        ),
    ];
    let mut out = Vec::with_capacity(SQL.len());
    for (name, sql) in SQL {
        out.push((*name, app.scalar(sql).await));
    }
    out
}

/// An 18-char id whose checksum suffix no longer matches (the suffix compares
/// case-insensitively, so the replacement differs from the original in any case).
pub fn bad_checksum(id: &str) -> String {
    assert_eq!(id.len(), 18);
    let last = id.as_bytes()[17];
    let replacement = if last.eq_ignore_ascii_case(&b'A') {
        'B'
    } else {
        'A'
    };
    format!("{}{}", &id[..17], replacement)
}

/// `yyyy-MM-dd'T'HH:mm:ss.SSS+0000`.
pub fn is_sf_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    b.len() == 28
        && (0..4).all(digit)
        && b[4] == b'-'
        && (5..7).all(digit)
        && b[7] == b'-'
        && (8..10).all(digit)
        && b[10] == b'T'
        && (11..13).all(digit)
        && b[13] == b':'
        && (14..16).all(digit)
        && b[16] == b':'
        && (17..19).all(digit)
        && b[19] == b'.'
        && (20..23).all(digit)
        && &s[23..] == "+0000"
}

#[test]
fn datetime_pattern_checker_rejects_near_misses() {
    assert!(is_sf_datetime("2026-11-28T16:00:00.000+0000"));
    for bad in [
        "2026-11-28T16:00:00+0000",
        "2026-11-28T16:00:00.000Z",
        "2026-11-28 16:00:00.000+0000",
        "2026-11-28T16:00:00.000+00:00",
        "1795881600000",
    ] {
        assert!(!is_sf_datetime(bad), "{bad}");
    }
}
