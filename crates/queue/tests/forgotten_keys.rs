//! A `Draft` refund sent again after its provider may have forgotten its idempotency key:
//! it is looked up by reference first, and only a lookup that proves it absent lets it be
//! sent again; one that cannot decide hands it to a person with the money still reserved.
//!
//! The built-in simulator is configured to forget keys after a lifetime; a worker dies in
//! the middle of the provider call (a second, slow simulator, aborted), leaving the refund
//! `Draft` with one attempt; the key's lifetime passes; the operation is rescued.

use std::time::Duration;

use refunds_gateway::{Provider, RefundRequest, SimulatorConfig};
use refunds_store::{now_ms, ops};
use refunds_testkit::{backend_tests, fast_config, Backend, TestApp, V};
use serde_json::{json, Value};

/// The app, its simulator forgetting keys after `lifetime`.
async fn forgetful_app(backend: Backend, lifetime: Duration) -> Option<TestApp> {
    TestApp::with_simulator(
        backend,
        fast_config(),
        SimulatorConfig {
            key_lifetime: Some(lifetime),
            ..SimulatorConfig::default()
        },
    )
    .await
}

struct Interrupted {
    order: refunds_testkit::Order,
    op: String,
    refund: String,
}

/// An operation whose worker died inside the provider call: the refund is `Draft`, sent
/// once (as far as the service knows), its money reserved.
async fn interrupted(app: &TestApp, amount: &str) -> Interrupted {
    let order = app.order("USD", &["100.00"]).await;
    let op = app
        .ensure(&order, json!({"excessFundsAmount": amount}))
        .await;
    app.kill_worker_mid_call(fast_config()).await;
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["Status"], "Draft");
    let refund = refunds[0]["Id"].as_str().expect("id").to_string();
    Interrupted { order, op, refund }
}

/// Waits until `lifetime` has passed since the refund was first sent (the clock, not
/// another task, is what is waited for).
async fn wait_past_lifetime(app: &TestApp, refund: &str, lifetime: Duration) {
    let first = app
        .scalar(&format!(
            "SELECT MIN(created_date) FROM payment_gateway_logs WHERE referenced_entity_id = '{refund}'"
        ))
        .await;
    let lifetime = i64::try_from(lifetime.as_millis()).expect("ms");
    while now_ms() - first < lifetime {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn log_rows(logs: &[Value]) -> Vec<(String, String)> {
    logs.iter()
        .map(|l| {
            (
                l["InteractionType"].as_str().unwrap_or("?").to_string(),
                l["InteractionStatus"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn rows(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn money(app: &TestApp, it: &Interrupted) -> (String, String) {
    let ops = app
        .record("OrderPaymentSummary", &it.order.summaries[0])
        .await;
    (
        ops["RefundedAmount"].to_string(),
        ops["PendingRefundAmount"].to_string(),
    )
}

/// The first request reached the provider and refunded; the answer was lost with the
/// worker; the provider then forgot the key. The rescue looks the refund up, finds it, and
/// records it — without a second payment.
async fn a_refund_made_before_its_key_was_forgotten_is_found_not_paid_again(backend: Backend) {
    let lifetime = Duration::from_millis(50);
    let Some(app) = forgetful_app(backend, lifetime).await else {
        return;
    };
    let it = interrupted(&app, "12.34").await;
    let sim = app.registry.simulator();
    // What the dead worker's request did at the provider.
    let made = sim
        .refund(&RefundRequest {
            idempotency_key: it.refund.clone(),
            payment_ref: Some("ch_test_0".into()),
            amount: 1234,
            currency: "USD".into(),
            operation_id: it.op.clone(),
        })
        .await;
    assert_eq!(made.code, refunds_domain::SfResultCode::Success, "{made:?}");
    while sim.remembers(&it.refund).await {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wait_past_lifetime(&app, &it.refund, lifetime).await;

    ops::expire_lease(&app.db, &it.op).await.unwrap();
    app.settle().await;
    let refund = app.record("Refund", &it.refund).await;
    assert_eq!(refund["Status"], "Processed", "{refund}");
    assert_eq!(refund["GatewayRefNumber"], json!(made.gateway_ref));
    assert_eq!(sim.settled().await, (1, 1234), "paid once");
    assert_eq!(sim.attempts(&it.refund).await, 1, "not sent again");
    assert_eq!(
        log_rows(&app.logs_of(&it.refund).await),
        rows(&[
            ("ReferencedRefund", "Initiated"),
            ("RefundLookup", "Success")
        ])
    );
    assert_eq!(money(&app, &it).await, ("12.34".into(), "0.00".into()));
    assert_eq!(
        app.record("BackgroundOperation", &it.op).await["Status"],
        "Complete"
    );
}

/// The first request never reached the provider; its key's lifetime passed. The lookup
/// proves the refund absent, so it is sent again — once.
async fn a_refund_never_made_is_proven_absent_and_sent_once(backend: Backend) {
    let lifetime = Duration::from_millis(50);
    let Some(app) = forgetful_app(backend, lifetime).await else {
        return;
    };
    let it = interrupted(&app, "12.34").await;
    wait_past_lifetime(&app, &it.refund, lifetime).await;
    ops::expire_lease(&app.db, &it.op).await.unwrap();
    app.settle().await;
    let sim = app.registry.simulator();
    assert_eq!(
        app.record("Refund", &it.refund).await["Status"],
        "Processed"
    );
    assert_eq!(sim.settled().await, (1, 1234));
    assert_eq!(sim.attempts(&it.refund).await, 1, "sent again once");
    assert_eq!(
        log_rows(&app.logs_of(&it.refund).await),
        rows(&[
            ("ReferencedRefund", "Initiated"),
            ("RefundLookup", "NoOp"),
            ("ReferencedRefund", "Success"),
        ])
    );
    assert_eq!(money(&app, &it).await, ("12.34".into(), "0.00".into()));
}

/// The lookup fails: nothing decides whether the refund was made, so it is not sent again
/// but handed to a person, its money still reserved; the person's settlement then counts.
async fn an_undecidable_lookup_hands_the_refund_to_a_person(backend: Backend) {
    let lifetime = Duration::from_millis(50);
    let Some(app) = forgetful_app(backend, lifetime).await else {
        return;
    };
    let it = interrupted(&app, "12.34").await;
    wait_past_lifetime(&app, &it.refund, lifetime).await;
    let sim = app.registry.simulator();
    sim.fail_lookups(true);
    ops::expire_lease(&app.db, &it.op).await.unwrap();
    app.settle().await;

    assert_eq!(sim.attempts(&it.refund).await, 0, "not sent again");
    assert_eq!(sim.settled().await, (0, 0));
    assert_eq!(app.record("Refund", &it.refund).await["Status"], "Draft");
    assert_eq!(
        money(&app, &it).await,
        ("0.00".into(), "12.34".into()),
        "the money stays reserved"
    );
    assert_eq!(
        log_rows(&app.logs_of(&it.refund).await),
        rows(&[
            ("ReferencedRefund", "Initiated"),
            ("RefundLookup", "Timeout")
        ])
    );
    let exceptions = app.exceptions_of(&it.order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert_eq!(exceptions[0]["Status"], "New");
    let description = exceptions[0]["Description"].as_str().unwrap_or("");
    assert!(
        description.contains("longer ago than its provider keeps idempotency keys"),
        "{description}"
    );
    assert_eq!(
        app.record("OrderSummary", &it.order.id).await["ActiveProcessExceptionCount"],
        json!(1)
    );
    // Nothing runs it again by itself.
    sim.fail_lookups(false);
    app.settle().await;
    assert_eq!(sim.attempts(&it.refund).await, 0);

    // A person checked the provider: it was not refunded.
    let (status, body) = app
        .call(
            axum::http::Method::PATCH,
            &format!("{V}/sobjects/Refund/{}", it.refund),
            Some(r#"{"Status": "Canceled"}"#),
            &[],
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(money(&app, &it).await, ("0.00".into(), "0.00".into()));
}

/// A key still within its lifetime is trusted: the rescue sends again without a lookup.
async fn a_key_within_its_lifetime_is_sent_again_without_a_lookup(backend: Backend) {
    let Some(app) = forgetful_app(backend, Duration::from_secs(3600)).await else {
        return;
    };
    let it = interrupted(&app, "12.34").await;
    ops::expire_lease(&app.db, &it.op).await.unwrap();
    app.settle().await;
    assert_eq!(
        log_rows(&app.logs_of(&it.refund).await),
        rows(&[
            ("ReferencedRefund", "Initiated"),
            ("ReferencedRefund", "Success")
        ])
    );
    assert_eq!(app.registry.simulator().settled().await, (1, 1234));
}

/// A rescued refund whose repeats cannot reach the provider (connection refused, every
/// attempt): the dead worker's request may have arrived, so the refund is not released as
/// failed but looked up — here it never arrived, and reconciliation sends it once.
async fn a_rescued_draft_that_cannot_reach_its_provider_is_looked_up_not_released(
    backend: Backend,
) {
    let config = refunds_queue::QueueConfig {
        provider_attempts: 2,
        ..fast_config()
    };
    let Some(app) = TestApp::with_simulator(backend, config, SimulatorConfig::default()).await
    else {
        return;
    };
    // 95: the simulator refuses the first two attempts of a key (SystemError).
    let it = interrupted(&app, "12.95").await;
    ops::expire_lease(&app.db, &it.op).await.unwrap();
    app.settle().await;
    let sim = app.registry.simulator();
    assert_eq!(
        app.record("Refund", &it.refund).await["Status"],
        "Processed",
        "not released"
    );
    assert_eq!(sim.settled().await, (1, 1295));
    assert_eq!(
        log_rows(&app.logs_of(&it.refund).await),
        rows(&[
            ("ReferencedRefund", "Initiated"),
            ("ReferencedRefund", "Failed"),
            ("ReferencedRefund", "Failed"),
            ("RefundLookup", "NoOp"),
            ("ReferencedRefund", "Success"),
        ])
    );
    assert_eq!(money(&app, &it).await, ("12.95".into(), "0.00".into()));
}

/// Adyen can only look a refund up by sending it again under its key. A refund whose
/// outcome is unknown and whose key is past Adyen's lifetime (its first call dated back
/// beyond it) is therefore not "looked up" — which could pay it twice — but handed to a
/// person, its money reserved; the stand-in hears no second request.
async fn an_adyen_refund_past_its_key_lifetime_is_handed_over_not_sent_again(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let router = axum::Router::new().route(
        "/payments/{psp}/refunds",
        axum::routing::post(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    r#"{"status": 500, "errorCode": "000", "message": "Internal error"}"#,
                )
            }
        }),
    );
    let adyen = refunds_testkit::LocalServer::start(router).await;
    let env = match backend {
        Backend::Sqlite => "REFUNDS_SECRET_TEST_ADYEN_OLD_KEY_SQLITE",
        Backend::Postgres => "REFUNDS_SECRET_TEST_ADYEN_OLD_KEY_POSTGRES",
    };
    std::env::set_var(env, "AQE_test_old_key_0123456789");
    let gateway = app
        .gateway(
            json!({"PaymentGatewayName": "Adyen (stand-in)", "ProviderType": "Adyen",
                   "BaseUrl": adyen.base_url, "MerchantCredentialEnv": env,
                   "MerchantAccount": "TestMerchant", "TimeoutMs": 2000}),
        )
        .await;
    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    let op = app
        .ensure(&order, json!({"excessFundsAmount": "12.34"}))
        .await;
    app.runner.run_once().await.expect("run");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the first call");
    let refund = app.refunds_of(&op).await[0]["Id"]
        .as_str()
        .expect("id")
        .to_string();
    // The first call, dated back past Adyen's key lifetime.
    let past =
        i64::try_from(refunds_gateway::adyen::KEY_LIFETIME.as_millis()).expect("ms") + 60_000;
    sqlx::query(
        "UPDATE payment_gateway_logs SET created_date = created_date - $1 WHERE referenced_entity_id = $2",
    )
    .bind(past)
    .bind(&refund)
    .execute(app.db.pool())
    .await
    .expect("date the call back");
    app.settle().await;

    assert_eq!(calls.load(Ordering::SeqCst), 1, "not sent again");
    assert_eq!(app.record("Refund", &refund).await["Status"], "Draft");
    let summary = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(summary["PendingRefundAmount"].to_string(), "12.34");
    let exceptions = app.exceptions_of(&order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    let description = exceptions[0]["Description"].as_str().unwrap_or("");
    assert!(
        description.contains("can only look a refund up by sending it again"),
        "{description}"
    );
}

backend_tests!(
    an_adyen_refund_past_its_key_lifetime_is_handed_over_not_sent_again,
    a_rescued_draft_that_cannot_reach_its_provider_is_looked_up_not_released,
    a_refund_made_before_its_key_was_forgotten_is_found_not_paid_again,
    a_refund_never_made_is_proven_absent_and_sent_once,
    an_undecidable_lookup_hands_the_refund_to_a_person,
    a_key_within_its_lifetime_is_sent_again_without_a_lookup,
);
