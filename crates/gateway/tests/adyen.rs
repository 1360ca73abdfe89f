//! The Adyen adapter against a local Adyen stand-in (wiremock): the refund request, how
//! answers map, lookups (the same request again, same key), transport failures, overrides,
//! notification signatures, and that the API key never reaches an outcome.

use std::sync::Arc;
use std::time::Duration;

use refunds_domain::SfResultCode;
use refunds_gateway::adyen::parse_notification;
use refunds_gateway::{GatewayConfig, Lookup, Provider, RefundRequest};
mod common;

use common::{
    assert_no_secret, credential_env, dead_port_url, lookup_outcome, provider, received, IMPATIENT,
    KEY, PATIENT,
};
use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SECRET: &str = "AQEyhmfxSECRET_abc123";
const MERCHANT: &str = "TestMerchantECOM";
const PSP: &str = "993617894903480A";
const REFUND_PSP: &str = "993617894906488A";
const REFUNDS_PATH: &str = "/payments/993617894903480A/refunds";

fn config(base_url: &str, tag: &str) -> GatewayConfig {
    GatewayConfig {
        provider_type: "Adyen".into(),
        base_url: Some(base_url.into()),
        credential_env: Some(credential_env("ADYEN", tag, SECRET)),
        merchant_account: Some(MERCHANT.into()),
        timeout: Some(PATIENT),
        ..GatewayConfig::default()
    }
}

fn adyen(server: &MockServer, tag: &str) -> Arc<dyn Provider> {
    provider(&config(&server.uri(), tag))
}

fn request() -> RefundRequest {
    RefundRequest {
        idempotency_key: KEY.into(),
        payment_ref: Some(PSP.into()),
        amount: 1234,
        currency: "EUR".into(),
        operation_id: "op-7f3a".into(),
    }
}

/// Adyen's documented answer to a refund request.
fn received_answer() -> Value {
    json!({
        "merchantAccount": MERCHANT,
        "paymentPspReference": PSP,
        "pspReference": REFUND_PSP,
        "reference": KEY,
        "status": "received",
        "amount": {"value": 1234, "currency": "EUR"}
    })
}

fn adyen_error(status: u16, code: &str, message: &str, kind: &str) -> Value {
    json!({"status": status, "errorCode": code, "message": message, "errorType": kind})
}

async fn answering(answer: ResponseTemplate, times: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(REFUNDS_PATH))
        .respond_with(answer)
        .expect(times)
        .mount(&server)
        .await;
    server
}

// ---------------------------------------------------------------------------------------
// The request and its answers

#[tokio::test]
async fn a_refund_posts_json_with_the_key_and_is_received_to_settle_later() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(REFUNDS_PATH))
        .and(header("X-API-Key", SECRET))
        .and(header("Idempotency-Key", KEY))
        .and(header("Content-Type", "application/json"))
        .and(body_json(json!({
            "amount": {"value": 1234, "currency": "EUR"},
            "merchantAccount": MERCHANT,
            "reference": KEY
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(received_answer()))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = adyen(&server, "REFUND").refund(&request()).await;

    assert_eq!(outcome.code, SfResultCode::Success);
    assert!(outcome.settles_later, "the outcome arrives by notification");
    assert_eq!(
        outcome.gateway_ref.as_deref(),
        Some(REFUND_PSP),
        "the refund's own pspReference"
    );
    assert_eq!(outcome.gateway_result_code.as_deref(), Some("received"));
    assert_eq!(outcome.message.as_deref(), Some("[refund-received]"));
    assert!(outcome.gateway_date_ms.is_some());
    let raw_request = outcome.raw_request.as_deref().unwrap_or_default();
    assert!(
        raw_request.starts_with(&format!("POST {REFUNDS_PATH}")) && raw_request.contains(MERCHANT),
        "{raw_request}"
    );
    let raw_response = outcome.raw_response.as_deref().unwrap_or_default();
    assert!(
        raw_response.starts_with("HTTP 201") && raw_response.contains(REFUND_PSP),
        "{raw_response}"
    );
    assert_no_secret(&outcome, SECRET);
}

#[tokio::test]
async fn error_answers_map_to_result_codes() {
    let cases = [
        (
            422,
            adyen_error(422, "137", "Invalid amount specified", "validation"),
            SfResultCode::ValidationError,
            "137",
            "Invalid amount specified",
        ),
        (
            400,
            adyen_error(
                400,
                "702",
                "Structure of the request body is invalid",
                "validation",
            ),
            SfResultCode::ValidationError,
            "702",
            "Structure of the request body is invalid",
        ),
        (
            401,
            adyen_error(
                401,
                "000",
                "HTTP Status Response - Unauthorized",
                "security",
            ),
            SfResultCode::PermanentFail,
            "000",
            "HTTP Status Response - Unauthorized",
        ),
        (
            403,
            adyen_error(403, "010", "Not allowed", "security"),
            SfResultCode::PermanentFail,
            "010",
            "Not allowed",
        ),
        (
            429,
            adyen_error(429, "429", "Too many requests", "configuration"),
            SfResultCode::SystemError,
            "429",
            "Too many requests",
        ),
        (
            500,
            adyen_error(500, "905", "Internal error", "internal"),
            SfResultCode::Indeterminate,
            "905",
            "Internal error",
        ),
    ];
    for (status, body, code, gateway_code, message) in cases {
        let server = answering(ResponseTemplate::new(status).set_body_json(body.clone()), 1).await;
        let outcome = adyen(&server, "ERR").refund(&request()).await;
        assert_eq!(outcome.code, code, "HTTP {status} {body}");
        assert_eq!(outcome.gateway_result_code.as_deref(), Some(gateway_code));
        assert_eq!(outcome.message.as_deref(), Some(message));
        assert!(!outcome.settles_later);
        assert_eq!(outcome.gateway_ref, None);
        assert!(outcome
            .raw_response
            .as_deref()
            .is_some_and(|r| r.starts_with(&format!("HTTP {status}"))));
        assert_no_secret(&outcome, SECRET);
    }
}

#[tokio::test]
async fn a_5xx_without_an_adyen_body_is_indeterminate() {
    for status in [502, 503] {
        let server = answering(
            ResponseTemplate::new(status).set_body_string("upstream unavailable"),
            1,
        )
        .await;
        let outcome = adyen(&server, "5XX").refund(&request()).await;
        assert_eq!(outcome.code, SfResultCode::Indeterminate, "HTTP {status}");
        assert_eq!(outcome.gateway_result_code, Some(format!("http_{status}")));
        assert_eq!(
            outcome.message,
            Some(format!("Adyen answered HTTP {status}"))
        );
    }
}

#[tokio::test]
async fn an_answer_not_understood_is_indeterminate() {
    let mut odd_status = received_answer();
    odd_status["status"] = json!("pending");
    let answers = [
        ResponseTemplate::new(201).set_body_json(odd_status),
        ResponseTemplate::new(201).set_body_raw("{\"pspReference\":", "application/json"),
        ResponseTemplate::new(201).set_body_json(json!({"status": "received"})),
        // serde reads a struct from an array positionally: not an Adyen answer either.
        ResponseTemplate::new(201).set_body_json(json!([REFUND_PSP, "received"])),
    ];
    for answer in answers {
        let server = answering(answer, 1).await;
        let outcome = adyen(&server, "ODD").refund(&request()).await;
        assert_eq!(outcome.code, SfResultCode::Indeterminate, "{outcome:?}");
        assert!(!outcome.settles_later);
        assert_eq!(outcome.gateway_ref, None);
        assert!(outcome.raw_response.is_some());
    }
}

#[tokio::test]
async fn missing_configuration_or_reference_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(201))
        .expect(0)
        .mount(&server)
        .await;

    let no_merchant = provider(&GatewayConfig {
        merchant_account: None,
        ..config(&server.uri(), "NOMERCHANT")
    });
    let outcome = no_merchant.refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::PermanentFail);
    assert!(
        outcome
            .message
            .as_deref()
            .is_some_and(|m| m.contains("MerchantAccount")),
        "{outcome:?}"
    );

    let no_credential = provider(&GatewayConfig {
        credential_env: Some("REFUNDS_SECRET_TEST_ADYEN_NEVER_SET_81be".into()),
        ..config(&server.uri(), "NOCRED")
    });
    assert_eq!(
        no_credential.refund(&request()).await.code,
        SfResultCode::PermanentFail
    );

    let adyen = adyen(&server, "NOREF");
    for reference in [None, Some(String::new())] {
        let request = RefundRequest {
            payment_ref: reference.clone(),
            ..request()
        };
        let outcome = adyen.refund(&request).await;
        assert_eq!(outcome.code, SfResultCode::ValidationError, "{reference:?}");
        assert!(
            outcome
                .message
                .as_deref()
                .is_some_and(|m| m.contains("pspReference")),
            "{outcome:?}"
        );
    }
    assert!(received(&server).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Transport

#[tokio::test]
async fn connection_refused_is_a_system_error() {
    let adyen = provider(&config(&dead_port_url(), "REFUSED"));
    let outcome = adyen.refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::SystemError, "{outcome:?}");
    assert_eq!(
        outcome.gateway_result_code.as_deref(),
        Some("transport_error")
    );
    assert!(outcome
        .raw_request
        .as_deref()
        .is_some_and(|r| r.contains(KEY)));
    assert_no_secret(&outcome, SECRET);
    let lookup = adyen.lookup(&request()).await;
    assert!(
        matches!(lookup, Lookup::Unknown(ref o) if o.code == SfResultCode::SystemError),
        "{lookup:?}"
    );
    assert_no_secret(lookup_outcome(&lookup), SECRET);
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_indeterminate() {
    let server = answering(
        ResponseTemplate::new(201)
            .set_body_json(received_answer())
            .set_delay(Duration::from_secs(3)),
        2,
    )
    .await;
    let adyen = provider(&GatewayConfig {
        timeout: Some(IMPATIENT),
        ..config(&server.uri(), "SLOW")
    });

    let outcome = adyen.refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::Indeterminate, "{outcome:?}");
    assert_eq!(outcome.gateway_result_code.as_deref(), Some("timeout"));
    assert!(!outcome.settles_later);
    assert_no_secret(&outcome, SECRET);

    let lookup = adyen.lookup(&request()).await;
    assert!(
        matches!(lookup, Lookup::Unknown(ref o) if o.code == SfResultCode::Indeterminate),
        "{lookup:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Lookups

#[tokio::test]
async fn a_lookup_sends_the_same_request_with_the_same_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(REFUNDS_PATH))
        .and(header("Idempotency-Key", KEY))
        .and(header("X-API-Key", SECRET))
        .respond_with(ResponseTemplate::new(201).set_body_json(received_answer()))
        .expect(2)
        .mount(&server)
        .await;
    let adyen = adyen(&server, "LOOKUP");

    let first = adyen.refund(&request()).await;
    let lookup = adyen.lookup(&request()).await;

    assert_eq!(first.code, SfResultCode::Success);
    let Lookup::Found(outcome) = lookup else {
        panic!("a received refund is found: {lookup:?}")
    };
    assert_eq!(
        (outcome.code, outcome.settles_later),
        (SfResultCode::Success, true)
    );
    assert_eq!(outcome.gateway_ref.as_deref(), Some(REFUND_PSP));
    assert_no_secret(&outcome, SECRET);

    let requests = received(&server).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].body, requests[1].body,
        "the lookup repeats the request exactly"
    );
    assert_eq!(requests[0].url, requests[1].url);
    assert_eq!(
        requests[0].headers.get("Idempotency-Key"),
        requests[1].headers.get("Idempotency-Key")
    );
}

#[tokio::test]
async fn a_lookup_that_fails_at_adyen_is_unknown() {
    for status in [429, 500, 503] {
        let server = answering(
            ResponseTemplate::new(status).set_body_json(adyen_error(
                status,
                "905",
                "Try again",
                "internal",
            )),
            1,
        )
        .await;
        let lookup = adyen(&server, "LOOKUPFAIL").lookup(&request()).await;
        assert!(
            matches!(lookup, Lookup::Unknown(_)),
            "HTTP {status}: {lookup:?}"
        );
    }
}

#[tokio::test]
async fn a_lookup_that_is_refused_for_credentials_says_nothing_about_the_refund() {
    // Adyen checks the API key before it replays an idempotent answer, so a 401/403 to the
    // repeated request does not mean the first one failed: the refund may well exist.
    for status in [401, 403] {
        let server = answering(
            ResponseTemplate::new(status).set_body_json(adyen_error(
                status,
                "000",
                "HTTP Status Response - Unauthorized",
                "security",
            )),
            1,
        )
        .await;
        let lookup = adyen(&server, "LOOKUPAUTH").lookup(&request()).await;
        assert!(
            matches!(lookup, Lookup::Unknown(_)),
            "HTTP {status} must not be a final answer: {lookup:?}"
        );
    }
    // Nor does a lookup that could not be sent for want of configuration.
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(201))
        .expect(0)
        .mount(&server)
        .await;
    let unconfigured = [
        GatewayConfig {
            merchant_account: None,
            ..config(&server.uri(), "LOOKUPNOMERCHANT")
        },
        GatewayConfig {
            credential_env: Some("REFUNDS_SECRET_TEST_ADYEN_NEVER_SET_52ad".into()),
            ..config(&server.uri(), "LOOKUPNOCRED")
        },
    ];
    for config in unconfigured {
        let lookup = provider(&config).lookup(&request()).await;
        assert!(
            matches!(lookup, Lookup::Unknown(_)),
            "{config:?}: {lookup:?}"
        );
    }
}

#[tokio::test]
async fn a_lookup_replaying_a_refusal_finds_it() {
    let server = answering(
        ResponseTemplate::new(422).set_body_json(adyen_error(
            422,
            "137",
            "Invalid amount specified",
            "validation",
        )),
        1,
    )
    .await;
    let lookup = adyen(&server, "LOOKUP422").lookup(&request()).await;
    assert!(
        matches!(lookup, Lookup::Found(ref o) if o.code == SfResultCode::ValidationError),
        "{lookup:?}"
    );
}

#[tokio::test]
async fn adyen_refunds_settle_by_notification() {
    let server = MockServer::start().await;
    assert!(!adyen(&server, "POLLS").polls_settlement());
}

// ---------------------------------------------------------------------------------------
// Secrets

async fn echoing_server(
    status: u16,
    body: impl Fn(&str) -> String + Send + Sync + 'static,
) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(move |request: &Request| {
            let key = request
                .headers
                .get("X-API-Key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no key")
                .to_string();
            ResponseTemplate::new(status).set_body_raw(body(&key), "application/json")
        })
        .mount(&server)
        .await;
    server
}

async fn assert_secret_was_sent(server: &MockServer) {
    let requests = received(server).await;
    assert!(!requests.is_empty());
    for request in requests {
        assert_eq!(
            request
                .headers
                .get("X-API-Key")
                .and_then(|v| v.to_str().ok()),
            Some(SECRET)
        );
    }
}

#[tokio::test]
async fn an_echoed_secret_never_reaches_an_outcome() {
    let error = |key: &str| {
        adyen_error(422, key, &format!("Invalid API key {key}"), "validation").to_string()
    };
    let success = |key: &str| {
        let mut answer = received_answer();
        answer["pspReference"] = json!(format!("PSP-{key}"));
        answer.to_string()
    };
    let odd = |key: &str| {
        let mut answer = received_answer();
        answer["status"] = json!(key);
        answer.to_string()
    };
    let servers = [
        echoing_server(422, error).await,
        echoing_server(201, success).await,
        echoing_server(201, odd).await,
        echoing_server(500, |key: &str| format!("internal error for {key}")).await,
    ];
    for server in &servers {
        let adyen = adyen(server, "ECHO");
        let outcome = adyen.refund(&request()).await;
        assert_no_secret(&outcome, SECRET);
        let lookup = adyen.lookup(&request()).await;
        assert_no_secret(lookup_outcome(&lookup), SECRET);
        assert_secret_was_sent(server).await;
    }
}

#[tokio::test]
async fn an_echoed_secret_at_the_end_of_a_long_answer_is_not_cut_in_half() {
    let server = echoing_server(500, |key| {
        let filler = "x".repeat(16 * 1024 - "HTTP 500\n".len() - "AQEyhmfxSEC".len());
        format!("{filler}{key} and more")
    })
    .await;
    let outcome = adyen(&server, "ECHOLONG").refund(&request()).await;
    assert_secret_was_sent(&server).await;
    let raw = outcome.raw_response.as_deref().unwrap_or_default();
    assert!(raw.ends_with("[truncated]"));
    assert!(
        !raw.contains("AQEyhmfxSEC"),
        "a piece of the secret survived the cut: {}",
        &raw[raw.len() - 40..]
    );
}

// ---------------------------------------------------------------------------------------
// Overrides

#[tokio::test]
async fn a_gateway_mapping_applies_to_refunds_and_lookups() {
    let server = answering(
        ResponseTemplate::new(422).set_body_json(adyen_error(
            422,
            "137",
            "Invalid amount specified",
            "validation",
        )),
        2,
    )
    .await;
    let mapped = provider(&GatewayConfig {
        result_code_mapping: Some(r#"{"137": "PermanentFail"}"#.into()),
        ..config(&server.uri(), "MAP")
    });

    let outcome = mapped.refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::PermanentFail);
    assert_eq!(outcome.gateway_result_code.as_deref(), Some("137"));
    let lookup = mapped.lookup(&request()).await;
    assert!(
        matches!(lookup, Lookup::Found(ref o) if o.code == SfResultCode::PermanentFail),
        "{lookup:?}"
    );
    assert!(!mapped.polls_settlement());
}

// ---------------------------------------------------------------------------------------
// Notifications

/// Adyen's published HMAC example (docs and Adyen's own libraries' tests).
const PUBLISHED_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
const PUBLISHED_SIGNATURE: &str = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0=";

fn published_notification(event_code: &str, success: &str, value: i64) -> String {
    json!({
        "live": "false",
        "notificationItems": [{"NotificationRequestItem": {
            "additionalData": {"hmacSignature": PUBLISHED_SIGNATURE},
            "amount": {"currency": "EUR", "value": value},
            "eventCode": event_code,
            "eventDate": "2019-05-06T17:15:34.121+02:00",
            "merchantAccountCode": "TestMerchant",
            "merchantReference": "TestPayment-1407325143704",
            "operations": ["CANCEL", "CAPTURE", "REFUND"],
            "paymentMethod": "visa",
            "pspReference": "7914073381342284",
            "success": success
        }}]
    })
    .to_string()
}

#[test]
fn adyens_published_signature_verifies() {
    let items =
        parse_notification(published_notification("AUTHORISATION", "true", 1130).as_bytes())
            .expect("a notification");
    assert_eq!(items.len(), 1);
    assert!(items[0].verify(PUBLISHED_KEY));
    assert_eq!(
        items[0].sign(PUBLISHED_KEY).as_deref(),
        Ok(PUBLISHED_SIGNATURE)
    );
    assert!(!items[0].is_refund_event());

    for tampered in [
        published_notification("AUTHORISATION", "true", 1131),
        published_notification("REFUND", "true", 1130),
        published_notification("AUTHORISATION", "false", 1130),
    ] {
        let items = parse_notification(tampered.as_bytes()).expect("a notification");
        assert!(!items[0].verify(PUBLISHED_KEY), "{tampered}");
    }
    assert!(!items[0].verify("not hex"));
}

#[test]
fn refund_notifications_are_told_apart() {
    let parse = |code: &str, success: &str| {
        parse_notification(published_notification(code, success, 1130).as_bytes()).expect("parses")
            [0]
        .clone()
    };
    let ok = parse("REFUND", "true");
    assert!(ok.is_refund_event() && ok.succeeded());
    let refused = parse("REFUND", "false");
    assert!(refused.is_refund_event() && !refused.succeeded());
    let failed = parse("REFUND_FAILED", "true");
    assert!(failed.is_refund_event() && !failed.succeeded());
    assert!(parse_notification(b"{\"notificationItems\": 3}").is_err());
}
