//! Refunds through the Stripe adapter over real HTTP to the Stripe-compatible simulator
//! (`refunds simulator`): every row of its outcome table (SPEC §4) end to end — the Refund,
//! the money on the summary, the gateway log, the process exceptions, and the simulator's
//! own ledger, which must have moved the money exactly once or not at all (SPEC §3.2).
//! Every order here has one 100.00 USD payment (`ch_test_0`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{from_fn, Next};
use refunds_queue::QueueConfig;
use refunds_testkit::{
    backend_tests, fast_config, Backend, LocalServer, Order, StripeSimulator, TestApp,
};
use serde_json::{json, Value};

mod common;

use common::{num, refund_excess_once, text};

async fn stripe_gateway(app: &TestApp, sim: &StripeSimulator, env: &str) -> String {
    std::env::set_var(env, "sk_test_simulated_key");
    app.gateway(
        json!({"PaymentGatewayName": "Stripe (simulated)", "ProviderType": "Stripe", "BaseUrl": sim.base_url,
               "MerchantCredentialEnv": env, "TimeoutMs": 500}),
    )
    .await
}

async fn a_stripe_refund_succeeds_over_http(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let sim = StripeSimulator::start().await;
    let gateway = stripe_gateway(&app, &sim, "REFUNDS_SECRET_TEST_STRIPE_KEY_SMOKE").await;
    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    let op = app
        .ensure(&order, json!({"excessFundsAmount": 12.34}))
        .await;
    app.settle().await;
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds[0]["Status"], "Processed", "{}", refunds[0]);
    assert!(refunds[0]["GatewayRefNumber"]
        .as_str()
        .unwrap()
        .starts_with("re_sim"));
    assert_eq!(sim.simulator.settled().await.unwrap(), (1, 1234));
    let logs = app.logs_of(refunds[0]["Id"].as_str().unwrap()).await;
    assert_eq!(logs.len(), 1);
    assert!(!logs[0]["Request"]
        .as_str()
        .unwrap()
        .contains("sk_test_simulated_key"));
}

/// The simulator served on a second loopback listener that notes every request it gets
/// (`METHOD /path`), so a test can tell how often the provider was asked — and that it was
/// not asked at all. Its ledger is the testkit simulator's (`sim.simulator.settled()`).
struct Stripe {
    sim: StripeSimulator,
    base_url: String,
    seen: Arc<Mutex<Vec<String>>>,
    _server: LocalServer,
}

impl Stripe {
    async fn start() -> Stripe {
        let sim = StripeSimulator::start().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let noted = seen.clone();
        let router =
            sim.simulator
                .clone()
                .router()
                .layer(from_fn(move |request: Request, next: Next| {
                    let noted = noted.clone();
                    async move {
                        noted.lock().unwrap().push(format!(
                            "{} {}",
                            request.method(),
                            request.uri().path()
                        ));
                        next.run(request).await
                    }
                }));
        let server = LocalServer::start(router).await;
        Stripe {
            sim,
            base_url: server.base_url.clone(),
            seen,
            _server: server,
        }
    }

    /// How many requests `METHOD /path` the simulator received.
    fn received(&self, what: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| *s == what)
            .count()
    }

    fn refund_calls(&self) -> usize {
        self.received("POST /v1/refunds")
    }

    fn lookups(&self) -> usize {
        self.received("GET /v1/refunds")
    }

    /// (refunds that moved money, their total in minor units) in the simulator's ledger.
    async fn settled(&self) -> (i64, i64) {
        self.sim.simulator.settled().await.unwrap()
    }
}

/// The environment variable of one test on one backend: both backends of a test run at
/// the same time in this process and must not overwrite each other's key.
fn env_name(prefix: &str, backend: Backend) -> String {
    match backend {
        Backend::Sqlite => format!("{prefix}_SQLITE"),
        Backend::Postgres => format!("{prefix}_POSTGRES"),
    }
}

/// A Stripe gateway at `base_url` whose key is in the environment variable `env`, set here
/// to a value unique to the test. Returns the gateway id and the key.
async fn gateway_at(app: &TestApp, base_url: &str, env: &str, extra: Value) -> (String, String) {
    let secret = format!("sk_test_{:016x}", rand::random::<u64>());
    std::env::set_var(env, &secret);
    let mut body = json!({"PaymentGatewayName": "Stripe (simulated)", "ProviderType": "Stripe",
                          "BaseUrl": base_url, "MerchantCredentialEnv": env, "TimeoutMs": 500});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    (app.gateway(body).await, secret)
}

/// One expected gateway log row: (InteractionType, InteractionStatus, SfResultCode,
/// GatewayResultCode).
type LogRow = (&'static str, &'static str, &'static str, &'static str);

fn seen_logs(logs: &[Value]) -> Vec<(&str, &str, &str, &str)> {
    logs.iter()
        .map(|l| {
            (
                l["InteractionType"].as_str().unwrap_or("?"),
                l["InteractionStatus"].as_str().unwrap_or("?"),
                l["SfResultCode"].as_str().unwrap_or("?"),
                l["GatewayResultCode"].as_str().unwrap_or("?"),
            )
        })
        .collect()
}

/// The secret appears in no gateway log (any field, Request/Response/GatewayMessage
/// included), no refund and no process exception of the app.
async fn assert_secret_nowhere(app: &TestApp, order: &Order, op: &str, secret: &str) {
    let ids = app
        .ids(
            "SELECT id FROM payment_gateway_logs WHERE id <> $1 ORDER BY id",
            "",
        )
        .await;
    assert!(!ids.is_empty(), "there are logs to check");
    for id in ids {
        let log = app.record("PaymentGatewayLog", &id).await;
        for field in ["Request", "Response", "GatewayMessage"] {
            assert!(
                !log[field].as_str().unwrap_or("").contains(secret),
                "the Stripe key leaked into {field}: {log}"
            );
        }
        assert!(!log.to_string().contains(secret), "{log}");
    }
    for refund in app.refunds_of(op).await {
        assert!(!refund.to_string().contains(secret), "{refund}");
    }
    for pe in app.exceptions_of(&order.id).await {
        assert!(!pe.to_string().contains(secret), "{pe}");
    }
}

/// What one row of the simulator's table must leave behind.
struct Expect {
    /// The excess funds amount; its cents pick the row.
    amount: &'static str,
    status: &'static str,
    code: &'static str,
    /// The Refund's GatewayResultCode at the end.
    gateway_code: &'static str,
    logs: &'static [LogRow],
    /// `POST /v1/refunds` and `GET /v1/refunds` requests the simulator received.
    refund_calls: usize,
    lookups: usize,
    /// The first answer is `pending`: the refund is `Pending` until a lookup settles it.
    settles_later: bool,
}

impl Expect {
    fn succeeds(&self) -> bool {
        self.status == "Processed"
    }

    fn minor(&self) -> i64 {
        self.amount.replace('.', "").parse().unwrap()
    }
}

/// Checks the money on the order's one summary and payment.
async fn assert_money(
    app: &TestApp,
    order: &Order,
    refunded: &str,
    pending: &str,
    available: &str,
) {
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(text(&ops["CapturedAmount"]), "100.00");
    assert_eq!(text(&ops["RefundedAmount"]), refunded, "{ops}");
    assert_eq!(text(&ops["PendingRefundAmount"]), pending, "{ops}");
    assert_eq!(text(&ops["AvailableToRefundAmount"]), available, "{ops}");
    let payment = app.record("Payment", &order.payments[0]).await;
    assert_eq!(text(&payment["TotalRefundApplied"]), refunded, "{payment}");
}

fn hundred_minus(amount: &str) -> String {
    let minor: i64 = amount.replace('.', "").parse().unwrap();
    let left = 10_000 - minor;
    format!("{}.{:02}", left / 100, left % 100)
}

async fn check_row(backend: Backend, env: &str, expect: Expect) {
    // A refund that settles later is looked up from `reconcile_delay` on. An hour keeps it
    // `Pending` after the first `settle()` whatever the machine's speed; the test then
    // moves that lookup to now, as the clock would.
    let config = if expect.settles_later {
        QueueConfig {
            reconcile_delay: Duration::from_secs(3600),
            ..fast_config()
        }
    } else {
        fast_config()
    };
    let Some(app) = TestApp::with_config(backend, config).await else {
        return;
    };
    let stripe = Stripe::start().await;
    let env = env_name(env, backend);
    let (gateway, secret) = gateway_at(&app, &stripe.base_url, &env, json!({})).await;
    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    let (op, refund) = refund_excess_once(&app, &order, expect.amount).await;
    let refund_id = refund["Id"].as_str().unwrap().to_string();

    if expect.settles_later {
        // Accepted, not yet settled: the money is reserved, neither side has moved it.
        assert_eq!(refund["Status"], "Pending", "{refund}");
        assert_eq!(refund["SfResultCode"], "Success", "{refund}");
        assert_eq!(refund["GatewayResultCode"], "pending", "{refund}");
        assert_money(
            &app,
            &order,
            "0.00",
            expect.amount,
            &hundred_minus(expect.amount),
        )
        .await;
        assert_eq!(stripe.settled().await, (0, 0), "pending moves no money yet");
        assert_eq!(seen_logs(&app.logs_of(&refund_id).await), [expect.logs[0]]);
        assert!(app.exceptions_of(&order.id).await.is_empty());
        assert_eq!(stripe.lookups(), 0);
        // Time passes: the settlement lookup falls due.
        sqlx::query("UPDATE refunds SET next_lookup_at = 0 WHERE id = $1")
            .bind(refund_id.as_str())
            .execute(app.db.pool())
            .await
            .unwrap();
        app.settle().await;
    }

    // The Refund.
    let refund = app.record("Refund", &refund_id).await;
    assert_eq!(refund["Status"], expect.status, "{refund}");
    assert_eq!(refund["SfResultCode"], expect.code, "{refund}");
    assert_eq!(refund["GatewayResultCode"], expect.gateway_code, "{refund}");
    assert_eq!(text(&refund["Amount"]), expect.amount);
    if expect.succeeds() || expect.settles_later {
        assert!(
            refund["GatewayRefNumber"]
                .as_str()
                .is_some_and(|r| r.starts_with("re_sim")),
            "the simulator's refund id: {refund}"
        );
    } else {
        assert_eq!(refund["GatewayRefNumber"], Value::Null, "{refund}");
    }
    if expect.settles_later && !expect.succeeds() {
        let description = refund["GatewayResultCodeDescription"]
            .as_str()
            .unwrap_or("");
        assert!(
            description.contains("expired_or_canceled_card"),
            "Stripe's failure_reason is kept: {refund}"
        );
    }

    // The money: refunded on success, released otherwise, never left reserved.
    if expect.succeeds() {
        assert_money(
            &app,
            &order,
            expect.amount,
            "0.00",
            &hundred_minus(expect.amount),
        )
        .await;
    } else {
        assert_money(&app, &order, "0.00", "0.00", "100.00").await;
    }
    let lines = app.lines_of(&refund_id).await;
    assert_eq!(lines.len(), usize::from(expect.succeeds()), "{lines:?}");

    // The gateway log: every refund call carried the refund's id as Idempotency-Key.
    let logs = app.logs_of(&refund_id).await;
    assert_eq!(seen_logs(&logs), expect.logs, "{logs:#?}");
    for log in &logs {
        assert_eq!(log["SfRefNumber"], refund_id.as_str(), "{log}");
        assert_eq!(log["IsNotification"], "No", "{log}");
        assert_eq!(log["PaymentGatewayId"], gateway.as_str(), "{log}");
        let request = log["Request"].as_str().unwrap_or_default();
        if log["InteractionType"] == "ReferencedRefund" {
            assert!(
                request.contains(&format!("Idempotency-Key: {refund_id}")),
                "{log}"
            );
        } else {
            assert!(
                request.starts_with("GET /v1/refunds?charge=ch_test_0"),
                "{log}"
            );
        }
    }
    let summary = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(
        summary["LastPaymentGatewayLogId"],
        logs.last().unwrap()["Id"]
    );

    // Process exceptions: one per failed refund.
    let exceptions = app.exceptions_of(&order.id).await;
    if expect.succeeds() {
        assert!(exceptions.is_empty(), "{exceptions:?}");
    } else {
        assert_eq!(exceptions.len(), 1, "{exceptions:?}");
        let pe = &exceptions[0];
        assert_eq!(pe["ExceptionType"], "OM Refund Failed");
        assert_eq!(pe["AttachedToId"], refund_id.as_str());
        assert_eq!(pe["BackgroundOperationId"], op.as_str());
        let message = pe["Message"].as_str().unwrap();
        assert!(message.contains(expect.code), "{message}");
        assert!(message.contains(expect.gateway_code), "{message}");
    }

    // The simulator's ledger moved the money exactly once, or not at all.
    let moved = if expect.succeeds() {
        (1, expect.minor())
    } else {
        (0, 0)
    };
    assert_eq!(stripe.settled().await, moved);
    assert_eq!(stripe.refund_calls(), expect.refund_calls, "refund calls");
    assert_eq!(stripe.lookups(), expect.lookups, "lookups");

    assert_secret_nowhere(&app, &order, &op, &secret).await;
}

fn answered(
    amount: &'static str,
    status: &'static str,
    code: &'static str,
    gateway_code: &'static str,
    logs: &'static [LogRow],
) -> Expect {
    Expect {
        amount,
        status,
        code,
        gateway_code,
        logs,
        refund_calls: 1,
        lookups: 0,
        settles_later: false,
    }
}

async fn success(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_SUCCESS",
        answered(
            "12.34",
            "Processed",
            "Success",
            "succeeded",
            &[("ReferencedRefund", "Success", "Success", "succeeded")],
        ),
    )
    .await
}

async fn decline_91(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_91",
        answered(
            "12.91",
            "Canceled",
            "Decline",
            "card_declined",
            &[("ReferencedRefund", "Failed", "Decline", "card_declined")],
        ),
    )
    .await
}

async fn permanent_fail_92(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_92",
        answered(
            "12.92",
            "Canceled",
            "PermanentFail",
            "charge_disputed",
            &[(
                "ReferencedRefund",
                "Failed",
                "PermanentFail",
                "charge_disputed",
            )],
        ),
    )
    .await
}

async fn validation_error_93(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_93",
        answered(
            "12.93",
            "Canceled",
            "ValidationError",
            "amount_too_large",
            &[(
                "ReferencedRefund",
                "Failed",
                "ValidationError",
                "amount_too_large",
            )],
        ),
    )
    .await
}

async fn requires_review_94(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_94",
        answered(
            "12.94",
            "Canceled",
            "RequiresReview",
            "refund_requires_review",
            &[(
                "ReferencedRefund",
                "Failed",
                "RequiresReview",
                "refund_requires_review",
            )],
        ),
    )
    .await
}

/// 429 twice, then success: the same key three times, money moved once.
async fn rate_limited_twice_then_success_95(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_95",
        Expect {
            refund_calls: 3,
            ..answered(
                "12.95",
                "Processed",
                "Success",
                "succeeded",
                &[
                    (
                        "ReferencedRefund",
                        "Failed",
                        "SystemError",
                        "rate_limit_error",
                    ),
                    (
                        "ReferencedRefund",
                        "Failed",
                        "SystemError",
                        "rate_limit_error",
                    ),
                    ("ReferencedRefund", "Success", "Success", "succeeded"),
                ],
            )
        },
    )
    .await
}

/// The refund is made and the answer cut: the lookup finds it, nothing is sent again.
async fn answer_cut_found_by_lookup_96(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_96",
        Expect {
            lookups: 1,
            ..answered(
                "12.96",
                "Processed",
                "Success",
                "succeeded",
                &[
                    (
                        "ReferencedRefund",
                        "Timeout",
                        "Indeterminate",
                        "transport_error",
                    ),
                    ("RefundLookup", "Success", "Success", "succeeded"),
                ],
            )
        },
    )
    .await
}

/// The request is lost (the 500 ms timeout fires): the lookup finds nothing, the same key
/// is sent again and succeeds, once.
async fn lost_request_sent_again_97(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_97",
        Expect {
            refund_calls: 2,
            lookups: 1,
            ..answered(
                "12.97",
                "Processed",
                "Success",
                "succeeded",
                &[
                    ("ReferencedRefund", "Timeout", "Indeterminate", "timeout"),
                    ("RefundLookup", "NoOp", "Indeterminate", "not_found"),
                    ("ReferencedRefund", "Success", "Success", "succeeded"),
                ],
            )
        },
    )
    .await
}

/// `pending`, then `succeeded` when looked up: Pending, then Processed by the lookup.
async fn pending_then_succeeded_98(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_98",
        Expect {
            lookups: 1,
            settles_later: true,
            ..answered(
                "12.98",
                "Processed",
                "Success",
                "succeeded",
                &[
                    ("ReferencedRefund", "Success", "Success", "pending"),
                    ("RefundLookup", "Success", "Success", "succeeded"),
                ],
            )
        },
    )
    .await
}

/// `pending`, then `failed` when looked up: Pending, then Canceled (Decline), released.
async fn pending_then_failed_99(backend: Backend) {
    check_row(
        backend,
        "REFUNDS_SECRET_TEST_STRIPE_KEY_99",
        Expect {
            lookups: 1,
            settles_later: true,
            ..answered(
                "12.99",
                "Canceled",
                "Decline",
                "failed",
                &[
                    ("ReferencedRefund", "Success", "Success", "pending"),
                    ("RefundLookup", "Failed", "Decline", "failed"),
                ],
            )
        },
    )
    .await
}

/// A gateway whose key variable is not set never reaches the provider: the refund is
/// canceled as a permanent failure that names the variable.
async fn unset_credential_cancels_without_calling(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let stripe = Stripe::start().await;
    let env = &env_name("REFUNDS_SECRET_TEST_STRIPE_KEY_NEVER_SET", backend);
    std::env::remove_var(env);
    let gateway = app
        .gateway(
            json!({"PaymentGatewayName": "Stripe (no key)", "ProviderType": "Stripe",
                   "BaseUrl": stripe.base_url, "MerchantCredentialEnv": env, "TimeoutMs": 500}),
        )
        .await;
    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    // An amount the simulator would refund, had it been asked.
    let op = app
        .ensure(&order, json!({"excessFundsAmount": num("12.34")}))
        .await;
    app.settle().await;
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Complete"
    );
    let refund = &app.refunds_of(&op).await[0];
    let refund_id = refund["Id"].as_str().unwrap();
    assert_eq!(refund["Status"], "Canceled", "{refund}");
    assert_eq!(refund["SfResultCode"], "PermanentFail", "{refund}");
    assert_eq!(refund["GatewayRefNumber"], Value::Null);
    assert_money(&app, &order, "0.00", "0.00", "100.00").await;
    let logs = app.logs_of(refund_id).await;
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0]["InteractionStatus"], "Failed");
    assert_eq!(logs[0]["SfResultCode"], "PermanentFail");
    assert_eq!(
        logs[0]["Response"],
        Value::Null,
        "nothing answered: {}",
        logs[0]
    );
    let exceptions = app.exceptions_of(&order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert_eq!(exceptions[0]["AttachedToId"], refund_id);
    let message = exceptions[0]["Message"].as_str().unwrap();
    assert!(message.contains("PermanentFail"), "{message}");
    assert!(
        message.contains(env),
        "the message names the variable: {message}"
    );
    assert_eq!(
        stripe.seen.lock().unwrap().len(),
        0,
        "the simulator got no request at all"
    );
    assert_eq!(stripe.settled().await, (0, 0));
}

/// A gateway's ResultCodeMapping overrides the adapter's: card_declined → PermanentFail.
async fn result_code_mapping_turns_a_decline_into_permanent_fail(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let stripe = Stripe::start().await;
    let (gateway, secret) = gateway_at(
        &app,
        &stripe.base_url,
        &env_name("REFUNDS_SECRET_TEST_STRIPE_KEY_MAPPING", backend),
        json!({"ResultCodeMapping": "{\"card_declined\": \"PermanentFail\"}"}),
    )
    .await;
    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    let op = app
        .ensure(&order, json!({"excessFundsAmount": num("12.91")}))
        .await;
    app.settle().await;
    let refund = &app.refunds_of(&op).await[0];
    let refund_id = refund["Id"].as_str().unwrap();
    assert_eq!(refund["Status"], "Canceled", "{refund}");
    assert_eq!(refund["SfResultCode"], "PermanentFail", "{refund}");
    assert_eq!(refund["GatewayResultCode"], "card_declined", "{refund}");
    let logs = app.logs_of(refund_id).await;
    assert_eq!(
        seen_logs(&logs),
        [(
            "ReferencedRefund",
            "Failed",
            "PermanentFail",
            "card_declined"
        )]
    );
    assert_money(&app, &order, "0.00", "0.00", "100.00").await;
    let exceptions = app.exceptions_of(&order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert!(exceptions[0]["Message"]
        .as_str()
        .unwrap()
        .contains("PermanentFail"));
    assert_eq!(stripe.refund_calls(), 1);
    assert_eq!(stripe.settled().await, (0, 0));
    assert_secret_nowhere(&app, &order, &op, &secret).await;
}

backend_tests!(
    a_stripe_refund_succeeds_over_http,
    success,
    decline_91,
    permanent_fail_92,
    validation_error_93,
    requires_review_94,
    rate_limited_twice_then_success_95,
    answer_cut_found_by_lookup_96,
    lost_request_sent_again_97,
    pending_then_succeeded_98,
    pending_then_failed_99,
    unset_credential_cancels_without_calling,
    result_code_mapping_turns_a_decline_into_permanent_fail,
);
