//! Login throttling: attempts are reserved before any secret is checked, so concurrent
//! wrong logins cannot get past the limit; a lock decays; a principal locked from one
//! address is not locked from another; one address is throttled across principals;
//! `X-Forwarded-For` counts only behind a trusted proxy; argon2 runs under its cap.
//! Verifications are counted by the service's own counters, not by timing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use futures_util::future::join_all;
use refunds_api::auth::{Auth, LoginLimits, Role, SecretKind};
use refunds_testkit::{backend_tests, fast_config, Backend, TestApp};
use serde_json::Value;
use tower::ServiceExt;

/// Every wait in these tests is bounded.
const PATIENCE: Duration = Duration::from_secs(60);

/// One login through the router, from `peer` (as `serve` records it) with an optional
/// `X-Forwarded-For`.
async fn login(
    app: &TestApp,
    body: String,
    peer: Option<&str>,
    forwarded: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/services/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(f) = forwarded {
        request = request.header("x-forwarded-for", f);
    }
    let mut request = request.body(Body::from(body)).unwrap();
    if let Some(peer) = peer {
        let addr = SocketAddr::new(peer.parse::<IpAddr>().unwrap(), 40_000);
        request.extensions_mut().insert(ConnectInfo(addr));
    }
    let response = tokio::time::timeout(PATIENCE, app.router.clone().oneshot(request))
        .await
        .expect("the login answered in time")
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn client_grant(id: &str, secret: &str) -> String {
    format!("grant_type=client_credentials&client_id={id}&client_secret={secret}")
}

fn password_grant(id: &str, secret: &str, user: &str, password: &str) -> String {
    format!(
        "grant_type=password&client_id={id}&client_secret={secret}&username={user}&password={password}"
    )
}

async fn client(app: &TestApp, name: &str) -> (String, String) {
    refunds_api::auth::create_client(&app.db, name, Role::Standard)
        .await
        .unwrap()
        .unwrap()
}

fn locked(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::BAD_REQUEST
        && body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("too many"))
}

async fn with_limits(
    backend: Backend,
    limits: LoginLimits,
    proxies: Vec<IpAddr>,
) -> Option<TestApp> {
    TestApp::with_state(backend, fast_config(), |state| refunds_api::AppState {
        auth: Arc::new(Auth::with_limits(Duration::from_secs(60), limits, proxies)),
        ..state
    })
    .await
}

/// Fires `n` logins at once and answers their results.
async fn all_at_once(
    app: &TestApp,
    n: usize,
    body: impl Fn(usize) -> String,
) -> Vec<(StatusCode, Value)> {
    let logins = (0..n).map(|i| login(app, body(i), Some("192.0.2.1"), None));
    join_all(logins).await
}

async fn thirty_concurrent_wrong_client_secrets_check_at_most_ten(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (id, secret) = client(&app, "brute").await;
    let before = app.auth.verifications(SecretKind::ClientSecret);
    let answers = all_at_once(&app, 30, |i| client_grant(&id, &format!("guess{i}"))).await;
    let verified = app.auth.verifications(SecretKind::ClientSecret) - before;
    assert!(
        verified <= 10,
        "{verified} wrong secrets were checked against the hash"
    );
    assert_eq!(verified, 10, "the first ten were checked");
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
    }
    let refused = answers.iter().filter(|(s, b)| locked(*s, b)).count();
    assert_eq!(refused, 20, "the rest were refused unchecked: {answers:?}");
    let (status, body) = login(&app, client_grant(&id, &secret), Some("192.0.2.1"), None).await;
    assert!(
        locked(status, &body),
        "locked even with the right secret: {body}"
    );
    assert_eq!(
        app.auth.verifications(SecretKind::ClientSecret) - before,
        10
    );
}

async fn thirty_concurrent_wrong_passwords_check_at_most_ten(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (id, secret) = client(&app, "app").await;
    let password = refunds_api::auth::create_user(&app.db, "ops@example.com", Role::Standard)
        .await
        .unwrap()
        .unwrap();
    let before = app.auth.verifications(SecretKind::Password);
    let answers = all_at_once(&app, 30, |i| {
        password_grant(&id, &secret, "ops@example.com", &format!("guess{i}"))
    })
    .await;
    let verified = app.auth.verifications(SecretKind::Password) - before;
    assert!(
        verified <= 10,
        "{verified} wrong passwords were checked against the hash"
    );
    assert_eq!(answers.iter().filter(|(s, b)| locked(*s, b)).count(), 20);
    let (status, body) = login(
        &app,
        password_grant(&id, &secret, "ops@example.com", &password),
        Some("192.0.2.1"),
        None,
    )
    .await;
    assert!(locked(status, &body), "the user is locked: {body}");
    // The client itself was right every time: it is not locked.
    let (status, body) = login(&app, client_grant(&id, &secret), Some("192.0.2.1"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Correct logins at once are not refused by the reservation: they wait their turn.
async fn concurrent_right_logins_all_succeed(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (id, secret) = client(&app, "busy").await;
    let answers = all_at_once(&app, 25, |_| client_grant(&id, &secret)).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
}

async fn the_lock_decays(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (id, secret) = client(&app, "decaying").await;
    for i in 0..9 {
        let (status, body) = login(
            &app,
            client_grant(&id, &format!("g{i}")),
            Some("192.0.2.1"),
            None,
        )
        .await;
        assert_eq!(body["error"], "invalid_client", "{status} {body}");
    }
    // The tenth failure comes a minute after the first nine.
    app.auth.advance_clock(Duration::from_secs(60));
    login(&app, client_grant(&id, "g9"), Some("192.0.2.1"), None).await;
    let (status, body) = login(&app, client_grant(&id, &secret), Some("192.0.2.1"), None).await;
    assert!(locked(status, &body), "{body}");
    // Four minutes after them, still locked (a minute to spare for a slow machine) …
    app.auth.advance_clock(Duration::from_secs(180));
    let (status, body) = login(&app, client_grant(&id, &secret), Some("192.0.2.1"), None).await;
    assert!(locked(status, &body), "{body}");
    // … and once they are 5 minutes old, they no longer count: the lock has decayed by
    // itself, though the tenth failure still counts.
    app.auth.advance_clock(Duration::from_secs(60));
    let (status, body) = login(&app, client_grant(&id, &secret), Some("192.0.2.1"), None).await;
    assert_eq!(status, StatusCode::OK, "the lock decayed: {body}");
}

async fn a_lock_from_one_address_does_not_lock_out_another(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (id, secret) = client(&app, "target").await;
    for i in 0..10 {
        login(
            &app,
            client_grant(&id, &format!("g{i}")),
            Some("198.51.100.66"),
            None,
        )
        .await;
    }
    let (status, body) = login(
        &app,
        client_grant(&id, &secret),
        Some("198.51.100.66"),
        None,
    )
    .await;
    assert!(
        locked(status, &body),
        "the attacker's address is locked: {body}"
    );
    let (status, body) = login(&app, client_grant(&id, &secret), Some("192.0.2.10"), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the real client elsewhere is not: {body}"
    );
}

async fn many_addresses_lock_a_principal_everywhere_but_it_decays(backend: Backend) {
    let limits = LoginLimits {
        per_principal: 4,
        ..LoginLimits::default()
    };
    let Some(app) = with_limits(backend, limits, Vec::new()).await else {
        return;
    };
    let (id, secret) = client(&app, "spread").await;
    for i in 0..4 {
        login(
            &app,
            client_grant(&id, "g"),
            Some(&format!("203.0.113.{i}")),
            None,
        )
        .await;
    }
    let (status, body) = login(&app, client_grant(&id, &secret), Some("192.0.2.10"), None).await;
    assert!(
        locked(status, &body),
        "a bound on distributed guessing: {body}"
    );
    app.auth.advance_clock(LoginLimits::default().window);
    let (status, body) = login(&app, client_grant(&id, &secret), Some("192.0.2.10"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn one_address_is_throttled_across_principals(backend: Backend) {
    let limits = LoginLimits {
        per_source: 5,
        ..LoginLimits::default()
    };
    let Some(app) = with_limits(backend, limits, Vec::new()).await else {
        return;
    };
    let (id, secret) = client(&app, "innocent").await;
    for i in 0..5 {
        // A different (unknown) client id each time: spraying.
        let (status, body) = login(
            &app,
            client_grant(&format!("3MVGspray{i}"), "x"),
            Some("198.51.100.7"),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_client"))
        );
    }
    let before = app.auth.verifications(SecretKind::ClientSecret);
    let (status, body) = login(&app, client_grant(&id, &secret), Some("198.51.100.7"), None).await;
    assert!(locked(status, &body), "the address is throttled: {body}");
    assert_eq!(
        app.auth.verifications(SecretKind::ClientSecret),
        before,
        "nothing was checked"
    );
    let (status, body) = login(&app, client_grant(&id, &secret), Some("192.0.2.10"), None).await;
    assert_eq!(status, StatusCode::OK, "other addresses are not: {body}");
}

async fn forwarded_for_counts_only_behind_a_trusted_proxy(backend: Backend) {
    let proxy = "10.0.0.1";
    let Some(app) = with_limits(
        backend,
        LoginLimits::default(),
        vec![proxy.parse().unwrap()],
    )
    .await
    else {
        return;
    };
    let (id, secret) = client(&app, "proxied").await;
    // An untrusted peer cannot spread its failures over made-up addresses.
    for i in 0..10 {
        login(
            &app,
            client_grant(&id, "g"),
            Some("198.51.100.9"),
            Some(&format!("203.0.113.{i}")),
        )
        .await;
    }
    let (status, body) = login(
        &app,
        client_grant(&id, &secret),
        Some("198.51.100.9"),
        Some("203.0.113.99"),
    )
    .await;
    assert!(locked(status, &body), "the peer is what counts: {body}");
    // Behind the trusted proxy, each forwarded client counts on its own.
    for _ in 0..10 {
        login(
            &app,
            client_grant(&id, "g"),
            Some(proxy),
            Some("203.0.113.50"),
        )
        .await;
    }
    let (status, body) = login(
        &app,
        client_grant(&id, &secret),
        Some(proxy),
        Some("203.0.113.50"),
    )
    .await;
    assert!(locked(status, &body), "{body}");
    let (status, body) = login(
        &app,
        client_grant(&id, &secret),
        Some(proxy),
        Some("203.0.113.51"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another client behind the proxy: {body}"
    );
}

async fn argon2_runs_under_its_concurrency_cap(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let mut clients = Vec::new();
    for i in 0..12 {
        clients.push(client(&app, &format!("c{i}")).await);
    }
    let before = app.auth.verifications(SecretKind::ClientSecret);
    // Different clients and addresses, so no limit holds any of them back.
    let app = &app;
    let logins = clients.iter().enumerate().map(|(i, (id, secret))| {
        let body = if i % 2 == 0 {
            client_grant(id, secret)
        } else {
            client_grant(id, "wrong")
        };
        let peer = format!("192.0.2.{}", 100 + i);
        async move { login(app, body, Some(&peer), None).await }
    });
    let answers = join_all(logins).await;
    assert_eq!(
        app.auth.verifications(SecretKind::ClientSecret) - before,
        12
    );
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == StatusCode::OK).count(),
        6
    );
    let peak = app.auth.peak_concurrent_verifications();
    assert!(
        (1..=2).contains(&peak),
        "{peak} argon2 verifications ran at once"
    );
}

async fn overlong_names_are_refused_without_a_look_up(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let before = app.auth.verifications(SecretKind::ClientSecret);
    for id in ["x".repeat(256), "y".repeat(100_000)] {
        let (status, body) = login(&app, client_grant(&id, "s"), Some("192.0.2.1"), None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_client"))
        );
    }
    assert_eq!(app.auth.verifications(SecretKind::ClientSecret), before);
    // At the edge (255) the login is looked up and checked as any other.
    let (status, body) = login(
        &app,
        client_grant(&"z".repeat(255), "s"),
        Some("192.0.2.1"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_client"))
    );
    assert_eq!(app.auth.verifications(SecretKind::ClientSecret), before + 1);
}

/// A NUL in a client id or username (PostgreSQL cannot even compare such text) is a refused
/// login, not a 500 — found by the schema-driven contract test.
async fn names_holding_a_nul_are_refused_without_a_look_up(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (id, secret) = client(&app, "nul-check").await;
    for form in [
        client_grant("a%00b", "s"),
        password_grant(&id, &secret, "user%00name", "p"),
    ] {
        let (status, body) = login(&app, form, Some("192.0.2.9"), None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_client")),
            "{body}"
        );
    }
}

backend_tests!(
    names_holding_a_nul_are_refused_without_a_look_up,
    thirty_concurrent_wrong_client_secrets_check_at_most_ten,
    thirty_concurrent_wrong_passwords_check_at_most_ten,
    concurrent_right_logins_all_succeed,
    the_lock_decays,
    a_lock_from_one_address_does_not_lock_out_another,
    many_addresses_lock_a_principal_everywhere_but_it_decays,
    one_address_is_throttled_across_principals,
    forwarded_for_counts_only_behind_a_trusted_proxy,
    argon2_runs_under_its_concurrency_cap,
    overlong_names_are_refused_without_a_look_up,
);
