//! What the adapter tests share: a gateway's credential in a fresh environment variable,
//! the provider the registry builds, what a stand-in received, a port where nothing
//! listens, and the check that a secret never reaches an outcome.

#![allow(dead_code)] // each test binary uses its own part of this

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use refunds_gateway::{GatewayConfig, Lookup, Outcome, Provider, Registry, SimulatorConfig};
use wiremock::{MockServer, Request};

/// The idempotency key of the refund requests.
pub const KEY: &str = "0xR5e000000AbCdEAA";
/// Generous for answers that should arrive (other crates compile meanwhile).
pub const PATIENT: Duration = Duration::from_secs(5);
/// For the tests that time out on purpose.
pub const IMPATIENT: Duration = Duration::from_millis(300);

/// A fresh environment variable name (tests run in parallel) holding `secret`.
pub fn credential_env(provider: &str, tag: &str, secret: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "REFUNDS_TEST_{provider}_{tag}_{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    std::env::set_var(&name, secret);
    name
}

pub fn provider(config: &GatewayConfig) -> Arc<dyn Provider> {
    match Registry::new(SimulatorConfig::default())
        .expect("an HTTP client")
        .provider(config)
    {
        Ok(p) => p,
        Err(e) => panic!("a valid {} gateway was refused: {e}", config.provider_type),
    }
}

pub async fn received(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording is on")
}

/// Neither the secret nor a recognisable part of it appears anywhere in the outcome.
pub fn assert_no_secret(outcome: &Outcome, secret: &str) {
    let all = format!("{outcome:?}");
    assert!(!all.contains(secret), "the secret leaked into {all}");
    assert!(
        !all.contains("SECRET_abc"),
        "part of the secret leaked into {all}"
    );
}

pub fn lookup_outcome(lookup: &Lookup) -> &Outcome {
    match lookup {
        Lookup::Found(o) | Lookup::NotFound(o) | Lookup::Unknown(o) => o,
    }
}

/// A port on loopback where nothing listens.
pub fn dead_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}
