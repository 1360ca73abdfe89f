//! Refunds through the Adyen adapter against a local stand-in for Adyen's Checkout API, and
//! their settlement by signed notifications at `POST /webhooks/adyen` (SPEC §4): `received`
//! leaves the Refund `Pending` with its money reserved; a verified `REFUND` notification
//! refunds it once, `REFUND` with success false or `REFUND_FAILED` releases it. Every order
//! here has one 100.00 USD payment whose pspReference is `ch_test_0`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use refunds_gateway::adyen::NotificationItem;
use refunds_queue::{reconcile_due, QueueConfig};
use refunds_testkit::{backend_tests, fast_config, Backend, LocalServer, Order, TestApp, V};
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;

use common::{num, text};

/// The example key of Adyen's documentation.
const HMAC_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";
const MERCHANT: &str = "RefundsTestMerchant";

/// One refund request the stand-in received.
#[derive(Clone, Debug)]
struct Received {
    psp: String,
    api_key: Option<String>,
    idempotency_key: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct StandInState {
    api_key: String,
    received: Arc<Mutex<Vec<Received>>>,
    /// Answers by Idempotency-Key: Adyen replays the first answer to a repeated key.
    answers: Arc<Mutex<HashMap<String, Value>>>,
    /// Makes the first refund, then holds its answer this long (the caller times out).
    stall_first: Option<Duration>,
}

/// `POST /payments/{psp}/refunds` as Adyen answers it: 401 for a wrong API key, 201
/// `received` with a new pspReference otherwise.
async fn stand_in_refund(
    State(s): State<StandInState>,
    Path(psp): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let received = Received {
        psp: psp.clone(),
        api_key: header("x-api-key"),
        idempotency_key: header("idempotency-key"),
        body: body.clone(),
    };
    let first = {
        let mut all = s.received.lock().unwrap();
        all.push(received.clone());
        all.len() == 1
    };
    if received.api_key.as_deref() != Some(s.api_key.as_str()) {
        let error = json!({"status": 401, "errorCode": "000", "message": "HTTP Status Response - Unauthorized",
                           "errorType": "security"});
        return (StatusCode::UNAUTHORIZED, axum::Json(error)).into_response();
    }
    let key = received.idempotency_key.clone().unwrap_or_default();
    let answer = {
        let mut answers = s.answers.lock().unwrap();
        let n = answers.len() + 1;
        answers
            .entry(key)
            .or_insert_with(|| {
                json!({"merchantAccount": body["merchantAccount"], "paymentPspReference": psp,
                       "pspReference": format!("RFND{n:012}"), "reference": body["reference"],
                       "status": "received", "amount": body["amount"]})
            })
            .clone()
    };
    if let (true, Some(stall)) = (first, s.stall_first) {
        tokio::time::sleep(stall).await;
    }
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// The stand-in on a loopback port.
struct AdyenStandIn {
    base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
    _server: LocalServer,
}

impl AdyenStandIn {
    async fn start(api_key: &str, stall_first: Option<Duration>) -> AdyenStandIn {
        let state = StandInState {
            api_key: api_key.to_string(),
            received: Arc::new(Mutex::new(Vec::new())),
            answers: Arc::new(Mutex::new(HashMap::new())),
            stall_first,
        };
        let received = state.received.clone();
        let router = Router::new()
            .route("/payments/{psp}/refunds", post(stand_in_refund))
            .with_state(state);
        let server = LocalServer::start(router).await;
        AdyenStandIn {
            base_url: server.base_url.clone(),
            received,
            _server: server,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// The environment variable of one test on one backend (both backends of a test run at
/// the same time in this process).
fn env_name(prefix: &str, tag: &str, backend: Backend) -> String {
    let backend = match backend {
        Backend::Sqlite => "SQLITE",
        Backend::Postgres => "POSTGRES",
    };
    format!("REFUNDS_SECRET_TEST_ADYEN_{prefix}_{tag}_{backend}")
}

/// An Adyen stand-in and a gateway of the app pointing at it, with its API key (and, if
/// given, its webhook HMAC key) in environment variables of this test and backend.
struct AdyenGateway {
    adyen: AdyenStandIn,
    gateway: String,
    api_key: String,
}

impl AdyenGateway {
    async fn create(
        app: &TestApp,
        backend: Backend,
        tag: &str,
        stall_first: Option<Duration>,
        hmac_key: Option<&str>,
        timeout_ms: u64,
    ) -> AdyenGateway {
        let api_key = format!("AQE_test_{:016x}", rand::random::<u64>());
        let adyen = AdyenStandIn::start(&api_key, stall_first).await;
        let key_env = env_name("KEY", tag, backend);
        let hmac_env = env_name("HMAC", tag, backend);
        std::env::set_var(&key_env, &api_key);
        match hmac_key {
            Some(k) => std::env::set_var(&hmac_env, k),
            None => std::env::remove_var(&hmac_env),
        }
        let gateway = app
            .gateway(
                json!({"PaymentGatewayName": "Adyen (stand-in)", "ProviderType": "Adyen",
                       "BaseUrl": adyen.base_url, "MerchantCredentialEnv": key_env,
                       "MerchantAccount": MERCHANT, "WebhookHmacKeyEnv": hmac_env,
                       "TimeoutMs": timeout_ms}),
            )
            .await;
        AdyenGateway {
            adyen,
            gateway,
            api_key,
        }
    }
}

/// An app with an Adyen refund that the stand-in has `received`: Pending, money reserved.
struct Pending {
    app: TestApp,
    adyen: AdyenStandIn,
    gateway: String,
    order: Order,
    op: String,
    refund_id: String,
    /// The stand-in's pspReference of the refund.
    psp: String,
    amount: &'static str,
    credit_memo: Option<String>,
}

/// Starts an app and a stand-in, and refunds `amount` of the order's 100.00 through Adyen
/// (from a credit memo of that amount, or as excess funds). `hmac_key`: the value of the
/// gateway's WebhookHmacKeyEnv variable, or None to leave it unset.
async fn pending_refund(
    backend: Backend,
    tag: &str,
    amount: &'static str,
    from_credit_memo: bool,
    hmac_key: Option<&str>,
) -> Option<Pending> {
    let app = TestApp::start(backend).await?;
    let AdyenGateway {
        adyen,
        gateway,
        api_key,
    } = AdyenGateway::create(&app, backend, tag, None, hmac_key, 5000).await;
    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    let credit_memo = if from_credit_memo {
        Some(app.credit_memo(&order, amount).await)
    } else {
        None
    };
    let body = match &credit_memo {
        Some(cm) => json!({"creditMemoId": cm}),
        None => json!({"excessFundsAmount": num(amount)}),
    };
    let op = app.ensure(&order, body).await;
    app.settle().await;
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Complete"
    );
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    let refund = &refunds[0];
    let refund_id = refund["Id"].as_str().unwrap().to_string();

    // Adyen was asked once, as its API expects.
    let received = adyen.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    let minor: i64 = amount.replace('.', "").parse().unwrap();
    assert_eq!(request.psp, "ch_test_0");
    assert_eq!(request.api_key.as_deref(), Some(api_key.as_str()));
    assert_eq!(request.idempotency_key.as_deref(), Some(refund_id.as_str()));
    assert_eq!(
        request.body,
        json!({"amount": {"value": minor, "currency": "USD"}, "merchantAccount": MERCHANT,
               "reference": refund_id}),
    );

    // Received is not refunded: Pending, the money reserved.
    let psp = format!("RFND{:012}", 1);
    assert_eq!(refund["Status"], "Pending", "{refund}");
    assert_eq!(refund["SfResultCode"], "Success", "{refund}");
    assert_eq!(refund["GatewayResultCode"], "received", "{refund}");
    assert_eq!(refund["GatewayRefNumber"], psp.as_str(), "{refund}");
    let pending = Pending {
        app,
        adyen,
        gateway,
        order,
        op,
        refund_id,
        psp,
        amount,
        credit_memo,
    };
    pending
        .assert_money("0.00", amount, &hundred_minus(amount))
        .await;
    if let Some(cm) = &pending.credit_memo {
        let memo = pending.app.record("CreditMemo", cm).await;
        assert_eq!(text(&memo["Balance"]), "0.00", "{memo}");
    }
    let logs = pending.app.logs_of(&pending.refund_id).await;
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0]["InteractionType"], "ReferencedRefund");
    assert_eq!(logs[0]["InteractionStatus"], "Success");
    assert_eq!(logs[0]["IsNotification"], "No");
    assert!(!logs[0].to_string().contains(&api_key), "{}", logs[0]);
    assert_eq!(pending.lines().await, 0);
    assert!(pending
        .app
        .exceptions_of(&pending.order.id)
        .await
        .is_empty());
    Some(pending)
}

fn hundred_minus(amount: &str) -> String {
    let minor: i64 = amount.replace('.', "").parse().unwrap();
    let left = 10_000 - minor;
    format!("{}.{:02}", left / 100, left % 100)
}

impl Pending {
    fn minor(&self) -> i64 {
        self.amount.replace('.', "").parse().unwrap()
    }

    async fn refund(&self) -> Value {
        self.app.record("Refund", &self.refund_id).await
    }

    async fn assert_money(&self, refunded: &str, pending: &str, available: &str) {
        let ops = self
            .app
            .record("OrderPaymentSummary", &self.order.summaries[0])
            .await;
        assert_eq!(text(&ops["RefundedAmount"]), refunded, "{ops}");
        assert_eq!(text(&ops["PendingRefundAmount"]), pending, "{ops}");
        assert_eq!(text(&ops["AvailableToRefundAmount"]), available, "{ops}");
        let payment = self.app.record("Payment", &self.order.payments[0]).await;
        assert_eq!(text(&payment["TotalRefundApplied"]), refunded, "{payment}");
    }

    async fn lines(&self) -> usize {
        self.app.lines_of(&self.refund_id).await.len()
    }

    async fn logs(&self) -> Vec<Value> {
        self.app.logs_of(&self.refund_id).await
    }

    /// Everything a rejected or ignored delivery must leave exactly as it was.
    async fn snapshot(&self) -> Value {
        let mut records = vec![
            self.refund().await,
            self.app
                .record("OrderPaymentSummary", &self.order.summaries[0])
                .await,
            self.app.record("Payment", &self.order.payments[0]).await,
            self.app.record("OrderSummary", &self.order.id).await,
        ];
        if let Some(cm) = &self.credit_memo {
            records.push(self.app.record("CreditMemo", cm).await);
        }
        json!({
            "records": records,
            "logs": self.app.scalar("SELECT COUNT(*) FROM payment_gateway_logs").await,
            "lines": self.app.scalar("SELECT COUNT(*) FROM refund_line_payments").await,
            "exceptions": self.app.scalar("SELECT COUNT(*) FROM process_exceptions").await,
        })
    }

    /// A notification item about this refund, unsigned.
    fn item(&self, event: &str, success: &str) -> Value {
        let mut item = json!({
            "amount": {"currency": "USD", "value": self.minor()},
            "eventCode": event,
            "eventDate": "2024-01-01T01:00:00+01:00",
            "merchantAccountCode": MERCHANT,
            "merchantReference": self.refund_id,
            "originalReference": "ch_test_0",
            "paymentMethod": "visa",
            "pspReference": self.psp,
            "success": success,
        });
        if success == "false" || event == "REFUND_FAILED" {
            item["reason"] = json!("Insufficient balance on payment");
        }
        item
    }
}

/// Signs a notification item with `hex_key` (Adyen's HMAC over its eight fields).
fn signed(mut item: Value, hex_key: &str) -> Value {
    let parsed: NotificationItem = serde_json::from_value(item.clone()).unwrap();
    let signature = parsed.sign(hex_key).unwrap();
    item["additionalData"] = json!({"hmacSignature": signature});
    item
}

/// A delivery of the given items, as Adyen posts it.
fn delivery(items: &[Value]) -> String {
    let wrapped: Vec<Value> = items
        .iter()
        .map(|i| json!({"NotificationRequestItem": i}))
        .collect();
    json!({"live": "false", "notificationItems": wrapped}).to_string()
}

/// POSTs a body to the webhook; answers the status, the content type and the raw body
/// (`[accepted]` is not JSON).
async fn post_webhook(app: &TestApp, body: &str) -> (StatusCode, String, String) {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/webhooks/adyen")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).to_string(),
    )
}

fn assert_accepted((status, _, body): &(StatusCode, String, String)) {
    assert_eq!(*status, StatusCode::OK, "{body}");
    assert_eq!(body, "[accepted]");
}

/// A JSON error answer with this status and errorCode.
fn assert_json_error(answer: &(StatusCode, String, String), status: StatusCode, code: &str) {
    let (got, content_type, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON: {body}"));
    assert_eq!(value[0]["errorCode"], code, "{value}");
    assert!(value[0]["message"].is_string(), "{value}");
}

/// `REFUND` success true settles the refund once; a repeated delivery changes nothing.
async fn refund_notification_settles_the_refund_once(backend: Backend) {
    let Some(p) = pending_refund(backend, "SUCCESS", "12.34", false, Some(HMAC_KEY)).await else {
        return;
    };
    let body = delivery(&[signed(p.item("REFUND", "true"), HMAC_KEY)]);
    assert_accepted(&post_webhook(&p.app, &body).await);

    let refund = p.refund().await;
    assert_eq!(refund["Status"], "Processed", "{refund}");
    assert_eq!(refund["SfResultCode"], "Success", "{refund}");
    assert_eq!(refund["GatewayResultCode"], "REFUND", "{refund}");
    assert_eq!(refund["GatewayRefNumber"], p.psp.as_str(), "{refund}");
    p.assert_money("12.34", "0.00", "87.66").await;
    let lines = p.app.lines_of(&p.refund_id).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = p.app.record("RefundLinePayment", &lines[0]).await;
    assert_eq!(text(&line["Amount"]), "12.34");
    assert_eq!(line["PaymentId"], p.order.payments[0].as_str());
    let logs = p.logs().await;
    let notes: Vec<&Value> = logs
        .iter()
        .filter(|l| l["IsNotification"] == "Yes")
        .collect();
    assert_eq!(notes.len(), 1, "{logs:#?}");
    assert_eq!(notes[0]["InteractionStatus"], "Success");
    assert_eq!(notes[0]["SfResultCode"], "Success");
    assert_eq!(notes[0]["GatewayResultCode"], "REFUND");
    assert_eq!(notes[0]["SfRefNumber"], p.refund_id.as_str());
    assert_eq!(notes[0]["PaymentGatewayId"], p.gateway.as_str());
    assert!(p.app.exceptions_of(&p.order.id).await.is_empty());
    let summary = p
        .app
        .record("OrderPaymentSummary", &p.order.summaries[0])
        .await;
    assert_eq!(summary["LastPaymentGatewayLogId"], notes[0]["Id"]);

    // Adyen delivers at least once: the same delivery again is accepted and moves nothing.
    let before = p.refund().await;
    assert_accepted(&post_webhook(&p.app, &body).await);
    assert_eq!(p.refund().await, before, "the refund is untouched");
    p.assert_money("12.34", "0.00", "87.66").await;
    assert_eq!(p.lines().await, 1, "no second RefundLinePayment");
    assert!(p.app.exceptions_of(&p.order.id).await.is_empty());
    let notes = p
        .logs()
        .await
        .iter()
        .filter(|l| l["IsNotification"] == "Yes")
        .count();
    assert!(
        (1..=2).contains(&notes),
        "the repeat may be logged: {notes}"
    );
    assert_eq!(p.adyen.received().len(), 1, "Adyen was asked once");
}

/// Checks a refund that a notification reported failed: Canceled, released, an exception.
async fn assert_failed(p: &Pending, event: &str) {
    let refund = p.refund().await;
    assert_eq!(refund["Status"], "Canceled", "{refund}");
    assert_eq!(refund["SfResultCode"], "Decline", "{refund}");
    assert_eq!(refund["GatewayResultCode"], event, "{refund}");
    assert!(
        refund["GatewayResultCodeDescription"]
            .as_str()
            .unwrap_or("")
            .contains("Insufficient balance"),
        "the reason is kept: {refund}"
    );
    p.assert_money("0.00", "0.00", "100.00").await;
    assert_eq!(p.lines().await, 0);
    let exceptions = p.app.exceptions_of(&p.order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    let pe = &exceptions[0];
    assert_eq!(pe["ExceptionType"], "OM Refund Failed");
    assert_eq!(pe["Status"], "New");
    assert_eq!(pe["AttachedToId"], p.refund_id.as_str());
    assert_eq!(pe["BackgroundOperationId"], p.op.as_str());
    let message = pe["Message"].as_str().unwrap();
    assert!(message.contains("Decline"), "{message}");
    assert!(message.contains(event), "{message}");
    assert_eq!(
        p.app.record("OrderSummary", &p.order.id).await["ActiveProcessExceptionCount"],
        1
    );
    let logs = p.logs().await;
    let notes: Vec<&Value> = logs
        .iter()
        .filter(|l| l["IsNotification"] == "Yes")
        .collect();
    assert_eq!(notes.len(), 1, "{logs:#?}");
    assert_eq!(notes[0]["InteractionStatus"], "Failed");
    assert_eq!(notes[0]["SfResultCode"], "Decline");
    assert_eq!(notes[0]["GatewayResultCode"], event);
}

/// `REFUND` with success false: the refund did not happen.
async fn refund_success_false_cancels_and_releases(backend: Backend) {
    let Some(p) = pending_refund(backend, "FALSE", "12.34", false, Some(HMAC_KEY)).await else {
        return;
    };
    let body = delivery(&[signed(p.item("REFUND", "false"), HMAC_KEY)]);
    assert_accepted(&post_webhook(&p.app, &body).await);
    assert_failed(&p, "REFUND").await;
    // A repeat neither releases twice nor raises a second exception.
    assert_accepted(&post_webhook(&p.app, &body).await);
    p.assert_money("0.00", "0.00", "100.00").await;
    assert_eq!(p.app.exceptions_of(&p.order.id).await.len(), 1);
}

/// `REFUND_FAILED` (Adyen sends it with success "true": the event, not the refund, succeeded)
/// of a credit memo refund: released, and the credit memo gets its balance back.
async fn refund_failed_restores_the_credit_memo(backend: Backend) {
    let Some(p) = pending_refund(backend, "FAILED", "23.45", true, Some(HMAC_KEY)).await else {
        return;
    };
    let body = delivery(&[signed(p.item("REFUND_FAILED", "true"), HMAC_KEY)]);
    assert_accepted(&post_webhook(&p.app, &body).await);
    assert_failed(&p, "REFUND_FAILED").await;
    let memo = p
        .app
        .record("CreditMemo", p.credit_memo.as_deref().unwrap())
        .await;
    assert_eq!(text(&memo["Balance"]), "23.45", "{memo}");
}

/// A signature under another key, over a changed amount, or none at all: 401, and the
/// refund stays Pending with nothing logged.
async fn a_bad_signature_is_rejected(backend: Backend) {
    let Some(p) = pending_refund(backend, "BADSIG", "12.34", false, Some(HMAC_KEY)).await else {
        return;
    };
    let before = p.snapshot().await;
    let wrong_key = signed(p.item("REFUND", "true"), OTHER_KEY);
    let mut tampered = signed(p.item("REFUND", "true"), HMAC_KEY);
    tampered["amount"]["value"] = json!(100_000);
    let mut unsigned = p.item("REFUND", "true");
    unsigned["additionalData"] = json!({});
    let mut garbled = p.item("REFUND", "true");
    garbled["additionalData"] = json!({"hmacSignature": "not base64 at all!"});
    for item in [wrong_key, tampered, unsigned, garbled] {
        let answer = post_webhook(&p.app, &delivery(std::slice::from_ref(&item))).await;
        assert_json_error(&answer, StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE");
        assert_eq!(p.snapshot().await, before, "{item}");
    }
    assert_eq!(p.refund().await["Status"], "Pending");
}

/// One bad item rejects the whole delivery: a well-signed item beside it is not applied.
async fn one_bad_item_rejects_the_whole_delivery(backend: Backend) {
    let Some(p) = pending_refund(backend, "MIXED", "12.34", false, Some(HMAC_KEY)).await else {
        return;
    };
    let before = p.snapshot().await;
    let good = signed(p.item("REFUND", "true"), HMAC_KEY);
    let bad = signed(p.item("REFUND", "true"), OTHER_KEY);
    for items in [[good.clone(), bad.clone()], [bad, good.clone()]] {
        let answer = post_webhook(&p.app, &delivery(&items)).await;
        assert_json_error(&answer, StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE");
        assert_eq!(p.snapshot().await, before);
    }
    // The good item alone is then applied.
    assert_accepted(&post_webhook(&p.app, &delivery(&[good])).await);
    assert_eq!(p.refund().await["Status"], "Processed");
}

/// A gateway whose WebhookHmacKeyEnv variable is not set cannot verify anything: 401.
async fn without_a_webhook_key_notifications_are_refused(backend: Backend) {
    let Some(p) = pending_refund(backend, "NOKEY", "12.34", false, None).await else {
        return;
    };
    let before = p.snapshot().await;
    let body = delivery(&[signed(p.item("REFUND", "true"), HMAC_KEY)]);
    let answer = post_webhook(&p.app, &body).await;
    assert_json_error(&answer, StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE");
    assert_eq!(p.snapshot().await, before);
}

/// A notification about a refund this service does not know is acknowledged (so Adyen
/// stops retrying) and changes nothing.
async fn unknown_merchant_reference_is_accepted_and_ignored(backend: Backend) {
    let Some(p) = pending_refund(backend, "UNKNOWN", "12.34", false, Some(HMAC_KEY)).await else {
        return;
    };
    let before = p.snapshot().await;
    let mut item = p.item("REFUND", "true");
    item["merchantReference"] = json!("0RfUNKNOWN000000000");
    let body = delivery(&[signed(item, HMAC_KEY)]);
    assert_accepted(&post_webhook(&p.app, &body).await);
    assert_eq!(p.snapshot().await, before);
    assert_eq!(p.refund().await["Status"], "Pending");

    // Nor can an Adyen notification touch a refund another provider made.
    let other = p.app.order("USD", &["50.00"]).await;
    let op = p
        .app
        .ensure(&other, json!({"excessFundsAmount": num("5.00")}))
        .await;
    p.app.settle().await;
    let simulated = p.app.refunds_of(&op).await.remove(0);
    assert_eq!(simulated["Status"], "Processed", "{simulated}");
    let mut item = p.item("REFUND_FAILED", "true");
    item["merchantReference"] = simulated["Id"].clone();
    item["amount"]["value"] = json!(500);
    let body = delivery(&[signed(item, HMAC_KEY)]);
    assert_accepted(&post_webhook(&p.app, &body).await);
    let id = simulated["Id"].as_str().unwrap();
    assert_eq!(p.app.record("Refund", id).await, simulated);
    assert!(p
        .app
        .logs_of(id)
        .await
        .iter()
        .all(|l| l["IsNotification"] == "No"));
    let ops = p
        .app
        .record("OrderPaymentSummary", &other.summaries[0])
        .await;
    assert_eq!(text(&ops["RefundedAmount"]), "5.00", "{ops}");
    assert!(p.app.exceptions_of(&other.id).await.is_empty());
}

/// A body that is not an Adyen notification is a 400 with a JSON error.
async fn a_body_that_is_not_a_notification_is_400(backend: Backend) {
    let Some(p) = pending_refund(backend, "NOTNOTE", "12.34", false, Some(HMAC_KEY)).await else {
        return;
    };
    let before = p.snapshot().await;
    for body in [
        "",
        "not json",
        "[]",
        "[[]]",
        r#"{"hello": "world"}"#,
        r#"{"live": "false", "notificationItems": [{"NotificationRequestItem": {"eventCode": "REFUND"}}]}"#,
    ] {
        let answer = post_webhook(&p.app, body).await;
        assert_json_error(&answer, StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR");
        assert_eq!(p.snapshot().await, before, "{body}");
    }
}

/// A refund of 12.34 whose Adyen call timed out: `Draft`, its outcome unknown.
async fn draft_refund(backend: Backend, tag: &str, config: QueueConfig) -> Option<Pending> {
    let app = TestApp::with_config(backend, config).await?;
    let stall = Some(Duration::from_secs(30));
    let AdyenGateway { adyen, gateway, .. } =
        AdyenGateway::create(&app, backend, tag, stall, Some(HMAC_KEY), 300).await;
    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    let op = app
        .ensure(&order, json!({"excessFundsAmount": num("12.34")}))
        .await;
    // The worker runs the operation: the call times out, the refund stays Draft.
    app.runner.run_once().await.unwrap();
    let refund_id = app.refunds_of(&op).await[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = Pending {
        app,
        adyen,
        gateway,
        order,
        op,
        refund_id,
        psp: format!("RFND{:012}", 1),
        amount: "12.34",
        credit_memo: None,
    };
    let refund = p.refund().await;
    assert_eq!(refund["Status"], "Draft", "{refund}");
    assert_eq!(refund["SfResultCode"], Value::Null, "{refund}");
    p.assert_money("0.00", "12.34", "87.66").await;
    assert_eq!(p.adyen.received().len(), 1);
    Some(p)
}

/// The answer to the refund call is lost (the call times out; Adyen made the refund) and
/// Adyen's notification arrives while the Refund is still `Draft`, before reconciliation
/// has looked it up. The verified notification is the outcome: it settles the refund, and
/// reconciliation then has nothing left to do. (Acknowledging it and dropping it would leave
/// the refund `Pending` for ever once the lookup re-sent the call: Adyen does not deliver
/// an accepted notification twice.)
async fn notification_while_draft(backend: Backend, tag: &str, event: &str, success: &str) {
    // Reconciliation waits an hour here, so the notification surely comes first; the test
    // then moves the lookup to now, as the clock would.
    let config = QueueConfig {
        reconcile_delay: Duration::from_secs(3600),
        ..fast_config()
    };
    let Some(p) = draft_refund(backend, tag, config).await else {
        return;
    };

    let body = delivery(&[signed(p.item(event, success), HMAC_KEY)]);
    assert_accepted(&post_webhook(&p.app, &body).await);
    let settled = |refund: &Value| refund["Status"] != "Draft";
    let refund = p.refund().await;
    assert!(settled(&refund), "the notification settled it: {refund}");

    // Time passes: any lookup still due is made; none may change the outcome.
    sqlx::query(
        "UPDATE refunds SET next_lookup_at = 0 WHERE id = $1 AND next_lookup_at IS NOT NULL",
    )
    .bind(p.refund_id.as_str())
    .execute(p.app.db.pool())
    .await
    .unwrap();
    p.app.settle().await;
    if event == "REFUND" && success == "true" {
        let refund = p.refund().await;
        assert_eq!(refund["Status"], "Processed", "{refund}");
        assert_eq!(refund["SfResultCode"], "Success", "{refund}");
        p.assert_money("12.34", "0.00", "87.66").await;
        assert_eq!(p.lines().await, 1);
        assert!(p.app.exceptions_of(&p.order.id).await.is_empty());
    } else {
        assert_failed(&p, event).await;
    }
    assert_eq!(
        p.adyen.received().len(),
        1,
        "a settled refund is not looked up (re-sent) again"
    );
}

async fn refund_notification_while_draft_settles_it(backend: Backend) {
    notification_while_draft(backend, "DRAFTOK", "REFUND", "true").await
}

async fn refund_failed_notification_while_draft_cancels_it(backend: Backend) {
    notification_while_draft(backend, "DRAFTFAIL", "REFUND_FAILED", "true").await
}

/// An authentic notification that does not match its refund (another amount, currency
/// or merchant account) moves no money: it is logged and handed to a person, once per
/// distinct mismatch; a matching one afterwards still settles the refund.
async fn a_notification_that_does_not_match_is_handed_to_a_person(backend: Backend) {
    let Some(p) = pending_refund(backend, "MISMATCH", "12.34", true, Some(HMAC_KEY)).await else {
        return;
    };
    let before = p.refund().await;
    let mut more = p.item("REFUND", "true");
    more["amount"]["value"] = json!(p.minor() + 100);
    let mut euros = p.item("REFUND", "true");
    euros["amount"]["currency"] = json!("EUR");
    let mut elsewhere = p.item("REFUND_FAILED", "true");
    elsewhere["merchantAccountCode"] = json!("SomeoneElsesAccount");
    for (item, expected) in [
        (&more, "reports 13.34 USD but the refund is 12.34 USD"),
        (&more, "reports 13.34 USD but the refund is 12.34 USD"), // a repeat
        (&euros, "reports 12.34 EUR but the refund is 12.34 USD"),
        (&elsewhere, "merchant account \"SomeoneElsesAccount\""),
    ] {
        let body = delivery(&[signed(item.clone(), HMAC_KEY)]);
        assert_accepted(&post_webhook(&p.app, &body).await);
        assert_eq!(p.refund().await, before, "the refund is untouched");
        p.assert_money("0.00", "12.34", "87.66").await;
        let exceptions = p.app.exceptions_of(&p.order.id).await;
        let last = exceptions.last().expect("an exception");
        let message = last["Message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains(&p.refund_id), "{message}");
        assert_eq!(last["Status"], "New");
        assert_eq!(last["Priority"], "High");
    }
    let exceptions = p.app.exceptions_of(&p.order.id).await;
    assert_eq!(
        exceptions.len(),
        3,
        "one per distinct mismatch: {exceptions:#?}"
    );
    let order = p.app.record("OrderSummary", &p.order.id).await;
    assert_eq!(order["ActiveProcessExceptionCount"], 3);
    let memo = p
        .app
        .record("CreditMemo", p.credit_memo.as_ref().unwrap())
        .await;
    assert_eq!(
        text(&memo["Balance"]),
        "0.00",
        "the credit memo is not restored"
    );
    let notes: Vec<Value> = p
        .logs()
        .await
        .into_iter()
        .filter(|l| l["IsNotification"] == "Yes")
        .collect();
    assert_eq!(notes.len(), 4, "every delivery is logged: {notes:#?}");
    assert!(
        notes.iter().all(|n| n["InteractionStatus"] == "NoOp"),
        "{notes:#?}"
    );
    assert_eq!(p.lines().await, 0);

    // The matching notification settles it as usual.
    let body = delivery(&[signed(p.item("REFUND", "true"), HMAC_KEY)]);
    assert_accepted(&post_webhook(&p.app, &body).await);
    assert_eq!(p.refund().await["Status"], "Processed");
    p.assert_money("12.34", "0.00", "87.66").await;
}

/// A refund handed to a person (its outcome stayed unknown) and then settled by Adyen's
/// notification: the person's task is resolved, saying how, so nobody settles it twice.
async fn a_notification_resolves_the_hand_over_of_its_refund(backend: Backend) {
    let Some((p, _)) = handed_over(backend, "HANDOVER").await else {
        return;
    };
    let exceptions = p.app.exceptions_of(&p.order.id).await;
    let message = exceptions[0]["Message"].as_str().unwrap().to_string();
    assert!(message.contains("is unknown"), "{message}");
    let order = p.app.record("OrderSummary", &p.order.id).await;
    assert_eq!(order["ActiveProcessExceptionCount"], 1);

    let body = delivery(&[signed(p.item("REFUND", "true"), HMAC_KEY)]);
    assert_accepted(&post_webhook(&p.app, &body).await);
    assert_eq!(p.refund().await["Status"], "Processed");
    p.assert_money("12.34", "0.00", "87.66").await;
    let exceptions = p.app.exceptions_of(&p.order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:#?}");
    assert_eq!(exceptions[0]["Status"], "Resolved");
    assert_eq!(exceptions[0]["Message"], message.as_str());
    let description = exceptions[0]["Description"].as_str().unwrap();
    assert!(
        description.contains("Settled since by the provider's notification (refunded"),
        "{description}"
    );
    let order = p.app.record("OrderSummary", &p.order.id).await;
    assert_eq!(order["ActiveProcessExceptionCount"], 0);
}

/// PATCHes a refund's Status; answers the HTTP status and body.
async fn patch_refund(p: &Pending, body: Value) -> (StatusCode, Value) {
    let path = format!("{V}/sobjects/Refund/{}", p.refund_id);
    p.app
        .call(Method::PATCH, &path, Some(&body.to_string()), &[])
        .await
}

/// A refund whose outcome stayed unknown, handed to a person: a lookup at once that gives
/// up at once. Answers it with the hand-over exception's id.
async fn handed_over(backend: Backend, tag: &str) -> Option<(Pending, String)> {
    let config = QueueConfig {
        reconcile_delay: Duration::from_millis(1),
        reconcile_give_up: Duration::ZERO,
        ..fast_config()
    };
    let p = draft_refund(backend, tag, config).await?;
    // Still being worked on (its lookup is due): nobody may settle it by hand yet.
    let (status, body) = patch_refund(&p, json!({"Status": "Processed"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALID_INPUT", "{body}");
    assert_eq!(p.refund().await["Status"], "Draft");
    tokio::time::sleep(Duration::from_millis(20)).await;
    reconcile_due(&p.app.db, &p.app.config, &p.app.registry)
        .await
        .unwrap();
    let exceptions = p.app.exceptions_of(&p.order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:#?}");
    let pe = exceptions[0]["Id"].as_str().unwrap().to_string();
    Some((p, pe))
}

/// A person who checked Adyen settles the handed-over refund as refunded: the money moves
/// to refunded, the hand-over exception is resolved; settling it again is refused.
async fn a_person_settles_a_handed_over_refund_as_refunded(backend: Backend) {
    let Some((p, pe)) = handed_over(backend, "BYHANDOK").await else {
        return;
    };
    for (body, code) in [
        (json!({"Status": "Pending"}), "INVALID_INPUT"),
        (json!({"Status": "Processed", "Amount": 1}), "INVALID_FIELD"),
        (json!({}), "REQUIRED_FIELD_MISSING"),
    ] {
        let (status, answer) = patch_refund(&p, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer[0]["errorCode"], code, "{answer}");
    }
    p.assert_money("0.00", "12.34", "87.66").await;

    let (status, body) = patch_refund(&p, json!({"Status": "Processed"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let refund = p.refund().await;
    assert_eq!(refund["Status"], "Processed", "{refund}");
    assert_eq!(refund["GatewayResultCode"], "manual", "{refund}");
    p.assert_money("12.34", "0.00", "87.66").await;
    assert_eq!(p.lines().await, 1);
    let exception = p.app.record("ProcessException", &pe).await;
    assert_eq!(exception["Status"], "Resolved");
    assert!(exception["Description"]
        .as_str()
        .unwrap()
        .contains("Settled by hand as refunded"));
    assert_eq!(
        p.app.exceptions_of(&p.order.id).await.len(),
        1,
        "no new exception"
    );
    let order = p.app.record("OrderSummary", &p.order.id).await;
    assert_eq!(order["ActiveProcessExceptionCount"], 0);
    let logs = p.logs().await;
    assert!(
        logs.iter().any(|l| l["GatewayResultCode"] == "manual"),
        "{logs:#?}"
    );

    let (status, body) = patch_refund(&p, json!({"Status": "Canceled"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .contains("already Processed"),
        "{body}"
    );
    p.assert_money("12.34", "0.00", "87.66").await;
}

/// ...or as not refunded: the reservation is released and the refund Canceled.
async fn a_person_settles_a_handed_over_refund_as_not_refunded(backend: Backend) {
    let Some((p, pe)) = handed_over(backend, "BYHANDNO").await else {
        return;
    };
    let (status, body) = patch_refund(&p, json!({"status": "canceled"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(p.refund().await["Status"], "Canceled");
    p.assert_money("0.00", "0.00", "100.00").await;
    assert_eq!(p.lines().await, 0);
    let exception = p.app.record("ProcessException", &pe).await;
    assert_eq!(exception["Status"], "Resolved");

    // Adyen later says it did refund it: that contradicts how it ended here, so a person
    // hears of it (once), and no money moves.
    let body = delivery(&[signed(p.item("REFUND", "true"), HMAC_KEY)]);
    for _ in 0..2 {
        assert_accepted(&post_webhook(&p.app, &body).await);
    }
    assert_eq!(p.refund().await["Status"], "Canceled");
    p.assert_money("0.00", "0.00", "100.00").await;
    let open: Vec<Value> = p
        .app
        .exceptions_of(&p.order.id)
        .await
        .into_iter()
        .filter(|e| e["Status"] == "New")
        .collect();
    assert_eq!(
        open.len(),
        2,
        "the cancellation's and the contradiction's: {open:#?}"
    );
    let message = open[1]["Message"].as_str().unwrap();
    assert!(
        message.contains("reports refund") && message.contains("refunded, but it is Canceled here"),
        "{message}"
    );
}

backend_tests!(
    a_person_settles_a_handed_over_refund_as_refunded,
    a_person_settles_a_handed_over_refund_as_not_refunded,
    a_notification_resolves_the_hand_over_of_its_refund,
    a_notification_that_does_not_match_is_handed_to_a_person,
    refund_notification_while_draft_settles_it,
    refund_failed_notification_while_draft_cancels_it,
    refund_notification_settles_the_refund_once,
    refund_success_false_cancels_and_releases,
    refund_failed_restores_the_credit_memo,
    a_bad_signature_is_rejected,
    one_bad_item_rejects_the_whole_delivery,
    without_a_webhook_key_notifications_are_refused,
    unknown_merchant_reference_is_accepted_and_ignored,
    a_body_that_is_not_a_notification_is_400,
);

/// A gateway whose WebhookHmacKeyEnv names a variable without the `REFUNDS_SECRET_` prefix
/// (written before the rule) cannot verify anything: the variable is never read, even
/// though it holds the right key, and the delivery is refused with 401.
async fn a_webhook_key_outside_refunds_secret_variables_is_never_read(backend: Backend) {
    let Some(p) = pending_refund(backend, "PLAINVAR", "12.34", false, Some(HMAC_KEY)).await else {
        return;
    };
    let plain = format!("ADYEN_HMAC_PLAIN_{backend:?}").to_ascii_uppercase();
    std::env::set_var(&plain, HMAC_KEY);
    sqlx::query("UPDATE payment_gateways SET webhook_hmac_key_env = $1 WHERE id = $2")
        .bind(&plain)
        .bind(&p.gateway)
        .execute(p.app.db.pool())
        .await
        .unwrap();
    let before = p.snapshot().await;
    let body = delivery(&[signed(p.item("REFUND", "true"), HMAC_KEY)]);
    let answer = post_webhook(&p.app, &body).await;
    assert_json_error(&answer, StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE");
    assert_eq!(p.snapshot().await, before);
    assert_eq!(p.refund().await["Status"], "Pending");
}

backend_tests!(a_webhook_key_outside_refunds_secret_variables_is_never_read);
