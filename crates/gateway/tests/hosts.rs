//! The host policy at connect time: a listed name that resolves to an address that is not
//! allowed (DNS rebinding to loopback, a metadata address) is refused inside the client's
//! resolver before anything is sent; a literal address that is not listed gets no adapter;
//! proxy variables cannot route a call around the resolver; a secret variable without
//! the `REFUNDS_SECRET_` prefix is never read.
//!
//! This binary sets proxy variables for the whole process, so it holds only these tests.

mod common;

use std::time::Duration;

use common::{credential_env, KEY};
use refunds_domain::SfResultCode;
use refunds_gateway::{
    ConfigError, GatewayConfig, HostError, HostPolicy, RefundRequest, Registry, SimulatorConfig,
};
use serde_json::json;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request() -> RefundRequest {
    RefundRequest {
        idempotency_key: KEY.into(),
        payment_ref: Some("ch_3NispeLkdIwHu7ix0nnEZGwu".into()),
        amount: 1234,
        currency: "USD".into(),
        operation_id: "op-hosts".into(),
    }
}

/// A Stripe stand-in that answers every request with a succeeded refund.
async fn stand_in() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "re_1", "object": "refund", "amount": 1234, "currency": "usd",
            "status": "succeeded", "metadata": {"refund_id": KEY}
        })))
        .mount(&server)
        .await;
    server
}

fn registry(hosts: &str) -> Registry {
    Registry::new(
        SimulatorConfig::default(),
        HostPolicy::parse(hosts).expect("a host list"),
    )
    .expect("a registry")
}

fn stripe_at(base_url: String, tag: &str) -> GatewayConfig {
    GatewayConfig {
        provider_type: "Stripe".into(),
        base_url: Some(base_url),
        credential_env: Some(credential_env("STRIPE", tag, "sk_test_hosts_key")),
        timeout: Some(Duration::from_secs(5)),
        connect_timeout: Some(Duration::from_secs(2)),
        ..GatewayConfig::default()
    }
}

/// `http://localhost:PORT` for a stand-in listening on 127.0.0.1.
fn by_name(server: &MockServer) -> String {
    format!("http://localhost:{}", server.address().port())
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.expect("recording").len()
}

#[tokio::test]
async fn a_listed_name_resolving_to_an_unlisted_address_is_refused_before_sending() {
    let server = stand_in().await;
    // `localhost` is listed, its address is not: as if a public name were rebound to
    // 127.0.0.1 after the gateway was written.
    let provider = registry("localhost")
        .provider(&stripe_at(by_name(&server), "REBIND"))
        .expect("the name is allowed");
    let outcome = provider.refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::SystemError, "{outcome:?}");
    assert_eq!(received(&server).await, 0, "nothing reached the address");

    // Listing the address lets the same gateway through: the refusal was the policy's.
    let provider = registry("localhost,127.0.0.1,::1")
        .provider(&stripe_at(by_name(&server), "LISTED"))
        .expect("allowed");
    let outcome = provider.refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::Success, "{outcome:?}");
    assert_eq!(received(&server).await, 1);
}

#[tokio::test]
async fn a_literal_address_that_is_not_listed_gets_no_adapter() {
    let server = stand_in().await;
    let refused = registry("localhost").provider(&stripe_at(server.uri(), "LITERAL"));
    assert!(
        matches!(refused, Err(ConfigError::Host(HostError::NotAllowed(_)))),
        "{:?}",
        refused.err()
    );
    // The providers' default hosts apply when a gateway has no BaseUrl.
    let mut default_url = stripe_at(String::new(), "DEFAULT");
    default_url.base_url = None;
    assert!(registry("api.stripe.com").provider(&default_url).is_ok());
    assert!(matches!(
        registry("checkout-test.adyen.com").provider(&default_url),
        Err(ConfigError::Host(_))
    ));
    assert_eq!(received(&server).await, 0);
}

#[tokio::test]
async fn proxy_variables_cannot_route_around_the_resolver() {
    let proxy = stand_in().await;
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(name, proxy.uri());
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let server = stand_in().await;
    // Not allowed: refused, and the proxy is not asked either.
    let provider = registry("localhost")
        .provider(&stripe_at(by_name(&server), "PROXY_REFUSED"))
        .expect("the name is allowed");
    let outcome = provider.refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::SystemError, "{outcome:?}");
    // Allowed: straight to the provider, not through the proxy.
    let provider = registry("localhost,127.0.0.1,::1")
        .provider(&stripe_at(by_name(&server), "PROXY_ALLOWED"))
        .expect("allowed");
    let outcome = provider.refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::Success, "{outcome:?}");
    assert_eq!(received(&server).await, 1);
    assert_eq!(received(&proxy).await, 0, "the proxy saw nothing");
}

#[tokio::test]
async fn only_refunds_secret_variables_are_read() {
    let server = stand_in().await;
    let name = format!("REFUNDS_TEST_PLAIN_{}", std::process::id());
    std::env::set_var(&name, "sk_test_not_a_secret_variable");
    let mut config = stripe_at(server.uri(), "UNUSED");
    config.credential_env = Some(name.clone());
    let provider = registry("127.0.0.1").provider(&config).expect("allowed");
    let outcome = provider.refund(&request()).await;
    assert_eq!(outcome.code, SfResultCode::PermanentFail, "{outcome:?}");
    let message = outcome.message.unwrap_or_default();
    assert!(message.contains("REFUNDS_SECRET_"), "{message}");
    assert!(!format!("{:?}", provider.lookup(&request()).await).contains("sk_test_not"));
    assert_eq!(received(&server).await, 0, "the variable was never sent");
    assert_eq!(
        refunds_gateway::secret_from_env(Some(&name)),
        Err(refunds_gateway::SecretError::NotASecretVariable(name))
    );
}
