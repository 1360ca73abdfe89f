//! Refunds through the Stripe adapter over real HTTP to the Stripe-compatible simulator.

use refunds_testkit::{backend_tests, Backend, StripeSimulator, TestApp};
use serde_json::json;

async fn stripe_gateway(app: &TestApp, sim: &StripeSimulator, env: &str) -> String {
    std::env::set_var(env, "sk_test_simulated_key");
    app.create(
        "PaymentGateway",
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
    let gateway = stripe_gateway(&app, &sim, "REFUNDS_TEST_STRIPE_KEY_SMOKE").await;
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

backend_tests!(a_stripe_refund_succeeds_over_http);
