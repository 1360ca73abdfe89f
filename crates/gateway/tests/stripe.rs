//! The Stripe adapter against a local Stripe stand-in (wiremock): the requests it sends,
//! how every answer maps to a Salesforce result code, transport failures, lookups, the
//! per-gateway result-code override, and that the API key never reaches an outcome.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use refunds_domain::SfResultCode;
use refunds_gateway::{GatewayConfig, Lookup, Provider, RefundRequest, Registry, SimulatorConfig};
mod common;

use common::{
    assert_no_secret, credential_env, dead_port_url, lookup_outcome, provider, received, IMPATIENT,
    KEY, PATIENT,
};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Recognisable, so a leak is easy to find in any field.
const SECRET: &str = "sk_test_SECRET_abc123";
const OPERATION: &str = "op-7f3a";

fn config(base_url: &str, tag: &str) -> GatewayConfig {
    GatewayConfig {
        provider_type: "Stripe".into(),
        base_url: Some(base_url.into()),
        credential_env: Some(credential_env("STRIPE", tag, SECRET)),
        timeout: Some(PATIENT),
        ..GatewayConfig::default()
    }
}

fn stripe(server: &MockServer, tag: &str) -> Arc<dyn Provider> {
    provider(&config(&server.uri(), tag))
}

fn request(payment_ref: &str) -> RefundRequest {
    RefundRequest {
        idempotency_key: KEY.into(),
        payment_ref: Some(payment_ref.into()),
        amount: 1234,
        currency: "USD".into(),
        operation_id: OPERATION.into(),
    }
}

/// A refund object as Stripe documents it.
fn refund_object(id: &str, status: &str, refund_id: &str) -> Value {
    json!({
        "id": id,
        "object": "refund",
        "amount": 1234,
        "balance_transaction": "txn_1Nispe2eZvKYlo2Cd31jOCgZ",
        "charge": "ch_3NispeLkdIwHu7ix0nnEZGwu",
        "created": 1_692_942_318,
        "currency": "usd",
        "destination_details": null,
        "metadata": {"refund_id": refund_id, "operation_id": OPERATION},
        "payment_intent": "pi_3NispeLkdIwHu7ix0J6Kqbdl",
        "reason": null,
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": status,
        "transfer_reversal": null
    })
}

fn refund_list(data: Vec<Value>) -> Value {
    json!({"object": "list", "url": "/v1/refunds", "has_more": false, "data": data})
}

fn stripe_error(kind: &str, code: Option<&str>, message: &str) -> Value {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    json!({"error": error})
}

/// The decoded pairs of a form-encoded body (the request's URL parser does the decoding).
fn form(request: &Request) -> Vec<(String, String)> {
    let mut url = request.url.clone();
    url.set_query(Some(
        std::str::from_utf8(&request.body).expect("a UTF-8 form"),
    ));
    url.query_pairs().into_owned().collect()
}

/// One successful POST, with the answer `body` at status `status`.
async fn answer_once(status: u16, body: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    server
}

// ---------------------------------------------------------------------------------------
// The request

#[tokio::test]
async fn a_charge_refund_is_a_form_post_with_the_key_and_the_secret_as_bearer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(header("Idempotency-Key", KEY))
        .and(header("Authorization", format!("Bearer {SECRET}").as_str()))
        .and(header("Content-Type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refund_object(
            "re_1Nispe2eZvKYlo2CjvuaYHC4",
            "succeeded",
            KEY,
        )))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = stripe(&server, "CHARGE")
        .refund(&request("ch_3NispeLkdIwHu7ix0nnEZGwu"))
        .await;

    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    let mut pairs = form(&requests[0]);
    pairs.sort();
    let expected: Vec<(String, String)> = [
        ("amount", "1234"),
        ("charge", "ch_3NispeLkdIwHu7ix0nnEZGwu"),
        ("metadata[operation_id]", OPERATION),
        ("metadata[refund_id]", KEY),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        pairs, expected,
        "exactly the documented form fields, amount in minor units"
    );

    assert_eq!(outcome.code, SfResultCode::Success);
    assert!(!outcome.settles_later);
    assert_eq!(
        outcome.gateway_ref.as_deref(),
        Some("re_1Nispe2eZvKYlo2CjvuaYHC4")
    );
    assert_eq!(outcome.gateway_result_code.as_deref(), Some("succeeded"));
    assert_eq!(outcome.message.as_deref(), Some("Refund succeeded"));
    assert_eq!(
        outcome.gateway_date_ms,
        Some(1_692_942_318_000),
        "Stripe's `created` is seconds"
    );
    let raw_request = outcome
        .raw_request
        .as_deref()
        .expect("the request is logged");
    assert!(raw_request.starts_with("POST /v1/refunds"), "{raw_request}");
    assert!(
        raw_request.contains(KEY) && raw_request.contains("charge=ch_3NispeLkdIwHu7ix0nnEZGwu"),
        "{raw_request}"
    );
    let raw_response = outcome
        .raw_response
        .as_deref()
        .expect("the response is logged");
    assert!(
        raw_response.starts_with("HTTP 200")
            && raw_response.contains("re_1Nispe2eZvKYlo2CjvuaYHC4"),
        "{raw_response}"
    );
    assert_no_secret(&outcome, SECRET);
}

#[tokio::test]
async fn a_payment_intent_reference_is_sent_as_payment_intent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(header("Idempotency-Key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(refund_object(
            "re_pi1",
            "succeeded",
            KEY,
        )))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = stripe(&server, "PI")
        .refund(&request("pi_3NispeLkdIwHu7ix0J6Kqbdl"))
        .await;

    assert_eq!(outcome.code, SfResultCode::Success);
    let pairs = form(&received(&server).await[0]);
    assert!(
        pairs.contains(&(
            "payment_intent".into(),
            "pi_3NispeLkdIwHu7ix0J6Kqbdl".into()
        )),
        "{pairs:?}"
    );
    assert!(!pairs.iter().any(|(k, _)| k == "charge"), "{pairs:?}");
}

#[tokio::test]
async fn a_py_reference_is_a_charge() {
    let server = answer_once(200, refund_object("re_py", "succeeded", KEY)).await;
    let outcome = stripe(&server, "PY")
        .refund(&request("py_3NispeLkdIwHu7ix"))
        .await;
    assert_eq!(outcome.code, SfResultCode::Success);
    let pairs = form(&received(&server).await[0]);
    assert!(
        pairs.contains(&("charge".into(), "py_3NispeLkdIwHu7ix".into())),
        "{pairs:?}"
    );
}

#[tokio::test]
async fn a_reference_that_is_neither_charge_nor_intent_is_refused_without_a_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let stripe = stripe(&server, "BADREF");

    for reference in [Some("tok_1Nispe"), Some("8835"), Some(""), None] {
        let request = RefundRequest {
            payment_ref: reference.map(str::to_string),
            ..request("ch_x")
        };
        let outcome = stripe.refund(&request).await;
        assert_eq!(outcome.code, SfResultCode::ValidationError, "{reference:?}");
        assert!(!outcome.settles_later);
        assert!(
            outcome
                .message
                .as_deref()
                .is_some_and(|m| m.contains("not a Stripe charge")),
            "{outcome:?}"
        );
        match stripe.lookup(&request).await {
            Lookup::Unknown(o) => assert_eq!(o.code, SfResultCode::ValidationError),
            other => panic!("a lookup with {reference:?} must not find anything: {other:?}"),
        }
    }
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn a_missing_credential_is_a_permanent_failure_without_a_request() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;

    let unset = GatewayConfig {
        credential_env: Some("REFUNDS_TEST_STRIPE_NEVER_SET_3f9c".into()),
        ..config(&server.uri(), "UNSET")
    };
    let no_name = GatewayConfig {
        credential_env: None,
        ..config(&server.uri(), "NONAME")
    };
    for config in [unset, no_name] {
        let stripe = provider(&config);
        let outcome = stripe.refund(&request("ch_1")).await;
        assert_eq!(outcome.code, SfResultCode::PermanentFail, "{config:?}");
        assert!(outcome.message.is_some());
        // A lookup cannot tell anything without the key: it is not a final answer.
        assert!(matches!(
            stripe.lookup(&request("ch_1")).await,
            Lookup::Unknown(_)
        ));
    }
    assert!(received(&server).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Answers

#[tokio::test]
async fn refund_statuses_map_to_result_codes() {
    let cases = [
        ("succeeded", SfResultCode::Success, false),
        ("pending", SfResultCode::Success, true),
        ("requires_action", SfResultCode::Success, true),
        ("failed", SfResultCode::Decline, false),
        ("canceled", SfResultCode::Decline, false),
        ("in_transit_somewhere", SfResultCode::Indeterminate, false),
    ];
    for (status, code, settles_later) in cases {
        let server = answer_once(200, refund_object("re_status", status, KEY)).await;
        let outcome = stripe(&server, "STATUS").refund(&request("ch_1")).await;
        assert_eq!(
            (outcome.code, outcome.settles_later),
            (code, settles_later),
            "status {status}"
        );
        assert_eq!(outcome.gateway_result_code.as_deref(), Some(status));
        assert_eq!(outcome.gateway_ref.as_deref(), Some("re_status"));
        assert!(
            outcome
                .message
                .as_deref()
                .is_some_and(|m| m.contains(status)),
            "{outcome:?}"
        );
        assert_no_secret(&outcome, SECRET);
    }
}

#[tokio::test]
async fn a_failed_refund_reports_its_failure_reason() {
    let mut body = refund_object("re_failed", "failed", KEY);
    body["failure_reason"] = json!("expired_or_canceled_card");
    let server = answer_once(200, body).await;
    let outcome = stripe(&server, "FAILREASON").refund(&request("ch_1")).await;
    assert_eq!(outcome.code, SfResultCode::Decline);
    assert_eq!(
        outcome.message.as_deref(),
        Some("Refund failed: expired_or_canceled_card")
    );
}

#[tokio::test]
async fn error_answers_map_to_result_codes() {
    struct Case {
        status: u16,
        body: Value,
        code: SfResultCode,
        gateway_code: &'static str,
        message: &'static str,
    }
    let cases = [
        Case {
            status: 402,
            body: stripe_error("card_error", Some("card_declined"), "Your card was declined."),
            code: SfResultCode::Decline,
            gateway_code: "card_declined",
            message: "Your card was declined.",
        },
        Case {
            status: 400,
            body: stripe_error(
                "invalid_request_error",
                Some("amount_too_large"),
                "Refund amount ($12.34) is greater than charge amount ($10.00)",
            ),
            code: SfResultCode::ValidationError,
            gateway_code: "amount_too_large",
            message: "Refund amount ($12.34) is greater than charge amount ($10.00)",
        },
        Case {
            status: 404,
            body: stripe_error("invalid_request_error", Some("resource_missing"), "No such charge: 'ch_1'"),
            code: SfResultCode::ValidationError,
            gateway_code: "resource_missing",
            message: "No such charge: 'ch_1'",
        },
        Case {
            status: 400,
            body: stripe_error(
                "invalid_request_error",
                Some("charge_already_refunded"),
                "Charge ch_1 has already been refunded.",
            ),
            code: SfResultCode::PermanentFail,
            gateway_code: "charge_already_refunded",
            message: "Charge ch_1 has already been refunded.",
        },
        Case {
            status: 400,
            body: stripe_error("invalid_request_error", Some("refund_requires_review"), "The refund needs review."),
            code: SfResultCode::RequiresReview,
            gateway_code: "refund_requires_review",
            message: "The refund needs review.",
        },
        Case {
            status: 401,
            body: stripe_error("authentication_error", None, "Invalid API Key provided: sk_test_****c123"),
            code: SfResultCode::PermanentFail,
            gateway_code: "authentication_error",
            message: "Invalid API Key provided: sk_test_****c123",
        },
        Case {
            status: 429,
            body: stripe_error(
                "invalid_request_error",
                Some("rate_limit"),
                "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
            ),
            code: SfResultCode::SystemError,
            gateway_code: "rate_limit",
            message: "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        },
        Case {
            status: 500,
            body: stripe_error("api_error", None, "An unknown error occurred"),
            code: SfResultCode::Indeterminate,
            gateway_code: "api_error",
            message: "An unknown error occurred",
        },
        // The key's first request may have refunded: unknown, never a failure.
        Case {
            status: 400,
            body: stripe_error(
                "idempotency_error",
                None,
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            ),
            code: SfResultCode::Indeterminate,
            gateway_code: "idempotency_error",
            message: "Keys for idempotent requests can only be used with the same parameters they were first used with.",
        },
        Case {
            status: 409,
            body: stripe_error(
                "invalid_request_error",
                Some("idempotency_key_in_use"),
                "There is currently another in-progress request using this Idempotent Key.",
            ),
            code: SfResultCode::Indeterminate,
            gateway_code: "idempotency_key_in_use",
            message: "There is currently another in-progress request using this Idempotent Key.",
        },
    ];
    for case in cases {
        let server = answer_once(case.status, case.body.clone()).await;
        let outcome = stripe(&server, "ERR").refund(&request("ch_1")).await;
        assert_eq!(
            outcome.code, case.code,
            "HTTP {} {}",
            case.status, case.body
        );
        assert_eq!(
            outcome.gateway_result_code.as_deref(),
            Some(case.gateway_code),
            "{}",
            case.body
        );
        assert_eq!(outcome.message.as_deref(), Some(case.message));
        assert!(!outcome.settles_later);
        assert_eq!(outcome.gateway_ref, None, "an error made no refund");
        assert!(outcome.raw_request.is_some());
        let raw = outcome.raw_response.as_deref().unwrap_or_default();
        assert!(raw.starts_with(&format!("HTTP {}", case.status)), "{raw}");
        assert_no_secret(&outcome, SECRET);
    }
}

#[tokio::test]
async fn a_503_without_a_stripe_body_is_indeterminate() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(
            ResponseTemplate::new(503).set_body_string("<html>Service Unavailable</html>"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let outcome = stripe(&server, "503").refund(&request("ch_1")).await;
    assert_eq!(outcome.code, SfResultCode::Indeterminate);
    assert_eq!(outcome.gateway_result_code.as_deref(), Some("http_503"));
    assert_eq!(outcome.message.as_deref(), Some("Stripe answered HTTP 503"));
    assert!(outcome
        .raw_response
        .as_deref()
        .is_some_and(|r| r.contains("Service Unavailable")));
}

#[tokio::test]
async fn a_200_with_a_malformed_body_is_indeterminate() {
    for body in [
        "{\"id\": \"re_1\", \"object\": \"refund\"",
        "",
        "{\"object\":\"refund\",\"amount\":1234}",
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/refunds"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
            .expect(1)
            .mount(&server)
            .await;
        let outcome = stripe(&server, "MALFORMED").refund(&request("ch_1")).await;
        assert_eq!(outcome.code, SfResultCode::Indeterminate, "{body:?}");
        assert!(!outcome.settles_later);
        assert!(
            outcome
                .message
                .as_deref()
                .is_some_and(|m| m.contains("Unreadable")),
            "{outcome:?}"
        );
        assert!(
            outcome
                .raw_response
                .as_deref()
                .is_some_and(|r| r.contains(body)),
            "the body is kept for the log"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Transport

#[tokio::test]
async fn connection_refused_is_a_system_error() {
    let stripe = provider(&config(&dead_port_url(), "REFUSED"));
    let outcome = stripe.refund(&request("ch_1")).await;
    assert_eq!(outcome.code, SfResultCode::SystemError, "{outcome:?}");
    assert_eq!(
        outcome.gateway_result_code.as_deref(),
        Some("transport_error")
    );
    assert!(
        outcome
            .message
            .as_deref()
            .is_some_and(|m| m.contains("before the request was sent")),
        "{outcome:?}"
    );
    assert!(
        outcome
            .raw_request
            .as_deref()
            .is_some_and(|r| r.contains(KEY)),
        "the attempt is logged"
    );
    assert_eq!(outcome.raw_response, None);
    assert_no_secret(&outcome, SECRET);

    let lookup = stripe.lookup(&request("ch_1")).await;
    assert!(
        matches!(lookup, Lookup::Unknown(ref o) if o.code == SfResultCode::SystemError),
        "{lookup:?}"
    );
    assert_no_secret(lookup_outcome(&lookup), SECRET);
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_indeterminate() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(refund_object("re_late", "succeeded", KEY))
                .set_delay(Duration::from_secs(3)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let stripe = provider(&GatewayConfig {
        timeout: Some(IMPATIENT),
        ..config(&server.uri(), "SLOW")
    });

    let outcome = stripe.refund(&request("ch_1")).await;

    assert_eq!(
        outcome.code,
        SfResultCode::Indeterminate,
        "the request was sent: the money may have moved"
    );
    assert_eq!(outcome.gateway_result_code.as_deref(), Some("timeout"));
    assert!(
        outcome
            .message
            .as_deref()
            .is_some_and(|m| m.contains("timed out")),
        "{outcome:?}"
    );
    assert_eq!(outcome.gateway_ref, None);
    assert!(!outcome.settles_later);
    assert_no_secret(&outcome, SECRET);
}

#[tokio::test]
async fn a_slow_lookup_is_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/refunds"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(refund_list(vec![refund_object("re_1", "succeeded", KEY)]))
                .set_delay(Duration::from_secs(3)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let stripe = provider(&GatewayConfig {
        timeout: Some(IMPATIENT),
        ..config(&server.uri(), "SLOWLOOKUP")
    });
    let lookup = stripe.lookup(&request("ch_1")).await;
    assert!(
        matches!(lookup, Lookup::Unknown(ref o) if o.code == SfResultCode::Indeterminate),
        "{lookup:?}"
    );
    assert_no_secret(lookup_outcome(&lookup), SECRET);
}

/// Answers one request with a status line and headers promising more body than it sends,
/// then hangs up: the exchange breaks off after the request was sent.
fn half_answering_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let handle = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("one connection");
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        // Read the whole request (headers, then Content-Length bytes of body).
        loop {
            let n = socket.read(&mut buffer).expect("read the request");
            assert!(n > 0, "the client hung up first");
            seen.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&seen).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    break;
                }
            }
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"id\":\"re_")
            .expect("write part of an answer");
        socket.flush().expect("flush");
        // Dropping the socket cuts the answer short.
    });
    (url, handle)
}

#[tokio::test]
async fn an_answer_cut_short_is_indeterminate() {
    let (url, server) = half_answering_server();
    let outcome = provider(&config(&url, "CUT"))
        .refund(&request("ch_1"))
        .await;
    server.join().expect("the stand-in server ran");
    assert_eq!(outcome.code, SfResultCode::Indeterminate, "{outcome:?}");
    assert_eq!(
        outcome.gateway_result_code.as_deref(),
        Some("transport_error")
    );
    assert_no_secret(&outcome, SECRET);
}

// ---------------------------------------------------------------------------------------
// Lookups

#[tokio::test]
async fn a_lookup_finds_the_refund_made_with_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/refunds"))
        .and(query_param("charge", "ch_3NispeLkdIwHu7ix0nnEZGwu"))
        .and(header("Authorization", format!("Bearer {SECRET}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(refund_list(vec![
            refund_object("re_other", "succeeded", "0xR5e000000ZzZzZZZ"),
            refund_object("re_mine", "pending", KEY),
            json!({"id": "re_no_metadata", "object": "refund", "status": "succeeded", "metadata": {}}),
        ])))
        .expect(1)
        .mount(&server)
        .await;

    let lookup = stripe(&server, "LOOKUP")
        .lookup(&request("ch_3NispeLkdIwHu7ix0nnEZGwu"))
        .await;

    let Lookup::Found(outcome) = lookup else {
        panic!("the refund is there: {lookup:?}")
    };
    assert_eq!(outcome.code, SfResultCode::Success);
    assert!(outcome.settles_later, "pending settles later");
    assert_eq!(
        outcome.gateway_ref.as_deref(),
        Some("re_mine"),
        "the refund whose metadata.refund_id is the key"
    );
    assert_eq!(outcome.gateway_result_code.as_deref(), Some("pending"));
    assert!(outcome
        .raw_request
        .as_deref()
        .is_some_and(|r| r.starts_with("GET /v1/refunds?charge=ch_3NispeLkdIwHu7ix0nnEZGwu")));
    assert!(outcome
        .raw_response
        .as_deref()
        .is_some_and(|r| r.contains("re_mine")));
    assert_no_secret(&outcome, SECRET);
}

#[tokio::test]
async fn a_lookup_by_payment_intent_maps_the_found_status() {
    for (status, code) in [
        ("succeeded", SfResultCode::Success),
        ("failed", SfResultCode::Decline),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/refunds"))
            .and(query_param("payment_intent", "pi_3NispeLkdIwHu7ix0J6Kqbdl"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(refund_list(vec![refund_object("re_pi", status, KEY)])),
            )
            .expect(1)
            .mount(&server)
            .await;
        let lookup = stripe(&server, "LOOKUPPI")
            .lookup(&request("pi_3NispeLkdIwHu7ix0J6Kqbdl"))
            .await;
        let Lookup::Found(outcome) = lookup else {
            panic!("found: {lookup:?}")
        };
        assert_eq!(
            (outcome.code, outcome.settles_later),
            (code, false),
            "{status}"
        );
        assert_eq!(outcome.gateway_ref.as_deref(), Some("re_pi"));
        let requests = received(&server).await;
        assert!(
            requests[0].url.query_pairs().all(|(k, _)| k != "charge"),
            "{}",
            requests[0].url
        );
    }
}

#[tokio::test]
async fn a_lookup_without_a_matching_refund_is_not_found() {
    for data in [
        vec![],
        vec![refund_object("re_other", "succeeded", "0xR5e000000ZzZzZZZ")],
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/refunds"))
            .and(query_param("charge", "ch_1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(refund_list(data)))
            .expect(1)
            .mount(&server)
            .await;
        let lookup = stripe(&server, "NOTFOUND").lookup(&request("ch_1")).await;
        let Lookup::NotFound(outcome) = lookup else {
            panic!("nothing matches the key: {lookup:?}")
        };
        assert_eq!(outcome.gateway_ref, None);
        assert_eq!(outcome.gateway_result_code.as_deref(), Some("not_found"));
        assert!(
            outcome.raw_request.is_some() && outcome.raw_response.is_some(),
            "the lookup is logged"
        );
    }
}

#[tokio::test]
async fn a_failed_or_unreadable_lookup_is_unknown() {
    let answers = [
        ResponseTemplate::new(500).set_body_json(stripe_error(
            "api_error",
            None,
            "An unknown error occurred",
        )),
        ResponseTemplate::new(401).set_body_json(stripe_error(
            "authentication_error",
            None,
            "Invalid API Key provided",
        )),
        ResponseTemplate::new(200)
            .set_body_raw("{\"object\":\"list\",\"data\":", "application/json"),
    ];
    for answer in answers {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/refunds"))
            .respond_with(answer)
            .expect(1)
            .mount(&server)
            .await;
        let lookup = stripe(&server, "LOOKUPFAIL").lookup(&request("ch_1")).await;
        let Lookup::Unknown(outcome) = lookup else {
            panic!("the lookup failed: {lookup:?}")
        };
        assert_eq!(outcome.code, SfResultCode::Indeterminate);
        assert!(outcome.raw_response.is_some());
    }
}

#[tokio::test]
async fn stripe_refunds_that_settle_later_are_polled() {
    let server = MockServer::start().await;
    assert!(stripe(&server, "POLLS").polls_settlement());
}

// ---------------------------------------------------------------------------------------
// Secrets

/// A provider that echoes the Authorization header it received everywhere it can.
/// (Each test checks afterwards that the header did carry the secret.)
async fn echoing_server(
    status: u16,
    body: impl Fn(&str) -> String + Send + Sync + 'static,
) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(move |request: &Request| {
            let auth = request
                .headers
                .get("Authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no auth")
                .to_string();
            ResponseTemplate::new(status).set_body_raw(body(&auth), "application/json")
        })
        .mount(&server)
        .await;
    server
}

/// The echo is only a test if the secret went out in the first place.
async fn assert_secret_was_sent(server: &MockServer) {
    let requests = received(server).await;
    assert!(!requests.is_empty());
    for request in requests {
        let auth = request
            .headers
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(auth, format!("Bearer {SECRET}"));
    }
}

#[tokio::test]
async fn an_echoed_secret_in_an_error_never_reaches_the_outcome() {
    let server = echoing_server(401, |auth| {
        json!({"error": {"type": "authentication_error", "code": auth, "message": format!("Invalid API Key provided: {auth}")}})
            .to_string()
    })
    .await;
    let outcome = stripe(&server, "ECHOERR").refund(&request("ch_1")).await;
    assert_eq!(outcome.code, SfResultCode::PermanentFail);
    assert!(
        outcome
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("Invalid API Key provided")),
        "{outcome:?}"
    );
    assert_secret_was_sent(&server).await;
    assert_no_secret(&outcome, SECRET);
}

#[tokio::test]
async fn an_echoed_secret_in_a_refund_never_reaches_the_outcome() {
    let server = echoing_server(200, |auth| {
        let mut refund = refund_object(&format!("re_{auth}"), "failed", KEY);
        refund["failure_reason"] = json!(auth);
        refund["description"] = json!(auth);
        refund.to_string()
    })
    .await;
    let outcome = stripe(&server, "ECHOREFUND").refund(&request("ch_1")).await;
    assert_eq!(outcome.code, SfResultCode::Decline);
    assert_secret_was_sent(&server).await;
    assert_no_secret(&outcome, SECRET);
}

#[tokio::test]
async fn an_echoed_secret_in_a_lookup_never_reaches_the_outcome() {
    let server = echoing_server(200, |auth| {
        let mut refund = refund_object(&format!("re_{auth}"), "failed", KEY);
        refund["failure_reason"] = json!(auth);
        refund_list(vec![refund]).to_string()
    })
    .await;
    let lookup = stripe(&server, "ECHOLOOKUP").lookup(&request("ch_1")).await;
    assert!(
        matches!(lookup, Lookup::Found(ref o) if o.code == SfResultCode::Decline),
        "{lookup:?}"
    );
    assert_secret_was_sent(&server).await;
    assert_no_secret(lookup_outcome(&lookup), SECRET);
}

#[tokio::test]
async fn an_echoed_secret_in_an_unreadable_answer_never_reaches_the_outcome() {
    let server = echoing_server(200, |auth| {
        format!("{{\"id\": \"re_1\", \"status\": {auth}")
    })
    .await;
    let outcome = stripe(&server, "ECHOBAD").refund(&request("ch_1")).await;
    assert_eq!(outcome.code, SfResultCode::Indeterminate);
    assert!(
        outcome
            .raw_response
            .as_deref()
            .is_some_and(|r| r.contains("[REDACTED]")),
        "{outcome:?}"
    );
    assert_secret_was_sent(&server).await;
    assert_no_secret(&outcome, SECRET);
}

#[tokio::test]
async fn an_echoed_secret_at_the_end_of_a_long_answer_is_not_cut_in_half() {
    // The log keeps the first 16 KiB of an answer; the secret straddles that edge.
    let server = echoing_server(200, |auth| {
        let filler = "x".repeat(16 * 1024 - "HTTP 200\n".len() - "Bearer sk_test_SEC".len());
        format!("{filler}{auth} and more")
    })
    .await;
    let outcome = stripe(&server, "ECHOLONG").refund(&request("ch_1")).await;
    assert_eq!(outcome.code, SfResultCode::Indeterminate);
    assert_secret_was_sent(&server).await;
    let raw = outcome.raw_response.as_deref().unwrap_or_default();
    assert!(
        raw.ends_with("[truncated]"),
        "the answer was long enough to be cut"
    );
    assert!(
        !raw.contains("sk_test_SEC"),
        "a piece of the secret survived the cut: {}",
        &raw[raw.len() - 40..]
    );
    assert_no_secret(&outcome, SECRET);
}

#[tokio::test]
async fn a_json_array_is_not_a_refund() {
    // serde reads a struct from an array positionally; this must not pass for a success.
    let server = answer_once(200, json!(["re_1", "succeeded"])).await;
    let outcome = stripe(&server, "ARRAY").refund(&request("ch_1")).await;
    assert_eq!(outcome.code, SfResultCode::Indeterminate, "{outcome:?}");
    assert_eq!(outcome.gateway_ref, None);
}

// ---------------------------------------------------------------------------------------
// Per-gateway result-code overrides

fn with_mapping(server: &MockServer, mapping: &str, tag: &str) -> Arc<dyn Provider> {
    provider(&GatewayConfig {
        result_code_mapping: Some(mapping.into()),
        ..config(&server.uri(), tag)
    })
}

#[tokio::test]
async fn a_gateway_mapping_overrides_the_adapter_mapping() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(|r: &Request| {
            form(r)
                .iter()
                .any(|(k, v)| k == "charge" && v == "ch_declined")
        })
        .respond_with(ResponseTemplate::new(402).set_body_json(stripe_error(
            "card_error",
            Some("card_declined"),
            "Your card was declined.",
        )))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(|r: &Request| {
            form(r)
                .iter()
                .any(|(k, v)| k == "charge" && v == "ch_expired")
        })
        .respond_with(ResponseTemplate::new(402).set_body_json(stripe_error(
            "card_error",
            Some("expired_card"),
            "Your card has expired.",
        )))
        .mount(&server)
        .await;

    let plain = stripe(&server, "NOMAP");
    let mapped = with_mapping(&server, r#"{"card_declined": "PermanentFail"}"#, "MAP");

    assert_eq!(
        plain.refund(&request("ch_declined")).await.code,
        SfResultCode::Decline
    );
    let outcome = mapped.refund(&request("ch_declined")).await;
    assert_eq!(outcome.code, SfResultCode::PermanentFail);
    assert_eq!(
        outcome.gateway_result_code.as_deref(),
        Some("card_declined"),
        "the provider's code is kept"
    );
    assert_eq!(outcome.message.as_deref(), Some("Your card was declined."));
    assert_eq!(
        mapped.refund(&request("ch_expired")).await.code,
        SfResultCode::Decline,
        "unmapped codes keep the adapter's mapping"
    );
    assert!(
        mapped.polls_settlement(),
        "the override keeps the adapter's settlement style"
    );
}

#[tokio::test]
async fn a_gateway_mapping_applies_to_lookups_too() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/refunds"))
        .and(query_param("charge", "ch_1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(refund_list(vec![refund_object("re_1", "failed", KEY)])),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/refunds"))
        .and(query_param("charge", "ch_none"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refund_list(vec![])))
        .mount(&server)
        .await;

    // What a Stripe lookup can answer is a refund status, so that is what is mapped here.
    let mapped = with_mapping(
        &server,
        r#"{"card_declined": "PermanentFail", "failed": "PermanentFail"}"#,
        "MAPLOOKUP",
    );
    let plain = stripe(&server, "NOMAPLOOKUP");

    assert!(
        matches!(plain.lookup(&request("ch_1")).await, Lookup::Found(ref o) if o.code == SfResultCode::Decline)
    );
    let lookup = mapped.lookup(&request("ch_1")).await;
    let Lookup::Found(outcome) = lookup else {
        panic!("found: {lookup:?}")
    };
    assert_eq!(outcome.code, SfResultCode::PermanentFail);
    assert_eq!(outcome.gateway_ref.as_deref(), Some("re_1"));
    // Nothing found is still nothing found, whatever the mapping.
    assert!(matches!(
        mapped.lookup(&request("ch_none")).await,
        Lookup::NotFound(_)
    ));
}

#[tokio::test]
async fn a_bad_mapping_is_refused() {
    let server = MockServer::start().await;
    for mapping in [
        r#"{"x": "Maybe"}"#,
        "[1]",
        "not json",
        r#"{"card_declined": 3}"#,
        r#""PermanentFail""#,
    ] {
        let config = GatewayConfig {
            result_code_mapping: Some(mapping.into()),
            ..config(&server.uri(), "BADMAP")
        };
        match Registry::new(SimulatorConfig::default())
            .expect("an HTTP client")
            .provider(&config)
        {
            Err(refunds_gateway::ConfigError::BadMapping(_)) => {}
            Err(other) => panic!("{mapping}: the wrong error {other}"),
            Ok(_) => panic!("{mapping} was accepted"),
        }
    }
    let fine = GatewayConfig {
        result_code_mapping: Some("{}".into()),
        ..config(&server.uri(), "EMPTYMAP")
    };
    assert!(
        Registry::new(SimulatorConfig::default())
            .expect("an HTTP client")
            .provider(&fine)
            .is_ok(),
        "an empty mapping is fine"
    );
}

// ---------------------------------------------------------------------------------------
// The shared client

#[tokio::test]
async fn two_gateways_with_the_same_connect_timeout_both_work() {
    let registry = Registry::new(SimulatorConfig::default()).expect("an HTTP client");
    let mut servers = Vec::new();
    let mut providers = Vec::new();
    for (i, tag) in ["SHARED_A", "SHARED_B"].into_iter().enumerate() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/refunds"))
            .respond_with(ResponseTemplate::new(200).set_body_json(refund_object(
                &format!("re_gateway{i}"),
                "succeeded",
                KEY,
            )))
            .expect(2)
            .mount(&server)
            .await;
        let config = GatewayConfig {
            connect_timeout: Some(Duration::from_secs(2)),
            ..config(&server.uri(), tag)
        };
        providers.push(registry.provider(&config).expect("a Stripe gateway"));
        servers.push(server);
    }
    for _ in 0..2 {
        for (i, provider) in providers.iter().enumerate() {
            let outcome = provider.refund(&request("ch_1")).await;
            assert_eq!(outcome.code, SfResultCode::Success);
            assert_eq!(
                outcome.gateway_ref,
                Some(format!("re_gateway{i}")),
                "each gateway reaches its own server"
            );
        }
    }
}

#[tokio::test]
async fn a_lookup_pages_through_a_charge_with_many_refunds() {
    let server = MockServer::start().await;
    let mut first_page = refund_list(vec![
        refund_object("re_newest", "succeeded", "0xR5e000000ZzZzZZ1"),
        refund_object("re_older", "succeeded", "0xR5e000000ZzZzZZ2"),
    ]);
    first_page["has_more"] = json!(true);
    // The second page is asked for after the last id of the first.
    Mock::given(method("GET"))
        .and(path("/v1/refunds"))
        .and(query_param("starting_after", "re_older"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(refund_list(vec![refund_object(
                "re_mine",
                "succeeded",
                KEY,
            )])),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/refunds"))
        .and(query_param("charge", "ch_3NispeLkdIwHu7ix0nnEZGwu"))
        .respond_with(ResponseTemplate::new(200).set_body_json(first_page))
        .expect(1)
        .mount(&server)
        .await;

    let lookup = stripe(&server, "PAGES")
        .lookup(&request("ch_3NispeLkdIwHu7ix0nnEZGwu"))
        .await;
    let Lookup::Found(outcome) = lookup else {
        panic!("the refund is on the second page: {lookup:?}")
    };
    assert_eq!(outcome.gateway_ref.as_deref(), Some("re_mine"));
}

/// Real providers are HTTPS only: an https base URL must get as far as connecting (here
/// refused), not be rejected as an unsupported scheme.
#[tokio::test]
async fn https_base_urls_are_supported() {
    let url = dead_port_url().replace("http://", "https://");
    let stripe = provider(&config(&url, "HTTPS"));
    let outcome = stripe.refund(&request("ch_1")).await;
    assert_eq!(outcome.code, SfResultCode::SystemError, "{outcome:?}");
    let message = outcome.message.unwrap_or_default();
    assert!(
        !message.contains("scheme"),
        "https must be spoken: {message}"
    );
    assert!(message.contains("connect"), "{message}");
}
