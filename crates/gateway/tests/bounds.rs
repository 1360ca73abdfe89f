//! What an adapter keeps of a provider's answer is bounded: an answer larger than the read
//! limit is not held in memory (its outcome is unknown, so the refund is looked up, never
//! guessed), and what is logged is cut to size after the secret is removed from all of it.

use std::sync::Arc;

use refunds_domain::SfResultCode;
use refunds_gateway::redact::{MAX_LOGGED_BODY, MAX_LOGGED_TEXT, REDACTED};
use refunds_gateway::{GatewayConfig, Provider, RefundRequest};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;

use common::{credential_env, provider, KEY, PATIENT};

const SECRET: &str = "sk_test_SECRET_abc_bounds_0123456789";

fn stripe(server: &MockServer, tag: &str) -> Arc<dyn Provider> {
    provider(&GatewayConfig {
        provider_type: "Stripe".into(),
        base_url: Some(server.uri()),
        credential_env: Some(credential_env("STRIPE", tag, SECRET)),
        timeout: Some(PATIENT),
        ..GatewayConfig::default()
    })
}

fn request() -> RefundRequest {
    RefundRequest {
        idempotency_key: KEY.into(),
        payment_ref: Some("ch_1".into()),
        amount: 1234,
        currency: "USD".into(),
        operation_id: "op".into(),
    }
}

async fn answering(status: u16, body: String) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(status).set_body_string(body))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn an_answer_past_the_read_limit_is_unknown_and_not_kept() {
    // One MiB is the limit: a refund object padded to just past it.
    let pad = "x".repeat(1024 * 1024);
    let body = json!({"id": "re_1", "status": "succeeded", "pad": pad}).to_string();
    let server = answering(200, body).await;
    let outcome = stripe(&server, "HUGE").refund(&request()).await;
    assert_eq!(
        outcome.code,
        SfResultCode::Indeterminate,
        "{:?}",
        outcome.message
    );
    assert_eq!(
        outcome.gateway_result_code.as_deref(),
        Some("answer_too_large")
    );
    assert!(outcome.raw_response.is_none());
}

#[tokio::test]
async fn an_answer_just_under_the_read_limit_is_read() {
    let empty = json!({"id": "re_1", "object": "refund", "status": "succeeded", "pad": ""});
    let room = 1024 * 1024 - empty.to_string().len();
    let body =
        json!({"id": "re_1", "object": "refund", "status": "succeeded", "pad": "x".repeat(room)})
            .to_string();
    assert_eq!(body.len(), 1024 * 1024, "exactly at the limit");
    let server = answering(200, body).await;
    let outcome = stripe(&server, "EDGE").refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::Success);
    let logged = outcome.raw_response.expect("logged");
    assert!(logged.len() <= MAX_LOGGED_BODY + "…[truncated]".len());
    assert!(logged.ends_with("…[truncated]"));
}

#[tokio::test]
async fn the_secret_is_removed_before_the_cut_and_every_field_is_bounded() {
    // The key sits exactly across the place the logged body is cut, and the message (which
    // becomes GatewayMessage) is far longer than a short field may be.
    let long_message = format!("{}{SECRET}", "m".repeat(3 * MAX_LOGGED_TEXT));
    let prefix = r#"{"error": {"type": "invalid_request_error", "message": ""#;
    let at = MAX_LOGGED_BODY - "HTTP 400\n".len() - prefix.len() - SECRET.len() / 2;
    let body = format!(
        "{prefix}{}{SECRET}{}\", \"code\": \"x\"}}, \"long\": \"{long_message}\"}}",
        "p".repeat(at),
        "q".repeat(100)
    );
    let server = answering(400, body).await;
    let outcome = stripe(&server, "CUT").refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::ValidationError);
    let logged = outcome.raw_response.clone().expect("logged");
    assert!(logged.len() <= MAX_LOGGED_BODY + "…[truncated]".len());
    let message = outcome.message.clone().expect("message");
    assert!(
        message.len() <= MAX_LOGGED_TEXT + "…[truncated]".len(),
        "{}",
        message.len()
    );
    let all = format!("{outcome:?}");
    for fragment in [
        SECRET,
        &SECRET[..SECRET.len() / 2],
        &SECRET[SECRET.len() / 2..],
    ] {
        assert!(!all.contains(fragment), "{fragment} survived");
    }
    assert!(logged.contains(REDACTED) || logged.len() < MAX_LOGGED_BODY);
}

#[tokio::test]
async fn a_nul_in_an_answer_is_replaced_so_every_database_can_store_it() {
    // PostgreSQL refuses NUL in text: the gateway log row of this answer could not be
    // written, and the refund would stay stuck.
    let server = answering(
        400,
        "{\"error\": {\"type\": \"invalid_request_error\", \"message\": \"bad\\u0000\"}}\u{0}"
            .into(),
    )
    .await;
    let outcome = stripe(&server, "NUL").refund(&request()).await;
    let all = format!(
        "{:?}{:?}{:?}",
        outcome.raw_response, outcome.message, outcome.gateway_result_code
    );
    assert!(!all.contains('\0'), "{all}");
    assert!(outcome.raw_response.expect("logged").contains('\u{FFFD}'));
}
