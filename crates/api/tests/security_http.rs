//! Security regressions: every data route refuses a missing, wrong, expired and revoked
//! token (the routes are read from the router's source, not hand-picked); only
//! administrative principals create or change payment gateways; a gateway names only
//! `REFUNDS_SECRET_…` variables and only allowed hosts; a stored gateway that breaks the
//! rules is reported by `/readyz` and its refunds are never sent; no secret the app saw is
//! in a stored record or in what the API answers about it, on either database.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{assert_plain_error, raw, raw_on};
use refunds_api::auth::Role;
use refunds_gateway::HostPolicy;
use refunds_testkit::{backend_tests, fast_config, Backend, LocalServer, TestApp, V};
use serde_json::{json, Value};

/// The router's source: the routes are read from it, so a route added later is covered.
const ROUTER_SOURCE: &str = include_str!("../src/lib.rs");

/// Every `(methods, path)` of the `/services/data` router, from its `.route(…)` calls.
fn data_routes() -> Vec<(Vec<Method>, String)> {
    let start = ROUTER_SOURCE
        .find("let data = Router::new()")
        .expect("the data router");
    let end = start
        + ROUTER_SOURCE[start..]
            .find(';')
            .expect("the end of the data router");
    let text = &ROUTER_SOURCE[start..end];
    let mut routes = Vec::new();
    for call in text.split(".route(").skip(1) {
        let path = call
            .split('"')
            .nth(1)
            .expect("a route's path literal")
            .to_string();
        let handler = &call[call.find(',').expect("a method router")..];
        let mut methods = Vec::new();
        for (name, method) in [
            ("get(", Method::GET),
            ("post(", Method::POST),
            ("patch(", Method::PATCH),
            ("put(", Method::PUT),
            ("delete(", Method::DELETE),
        ] {
            let found = handler.match_indices(name).any(|(i, _)| {
                i == 0
                    || !handler.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && handler.as_bytes()[i - 1] != b'_'
            });
            if found {
                methods.push(method);
            }
        }
        assert!(!methods.is_empty(), "no method found for {path}: {call}");
        routes.push((methods, path));
    }
    routes
}

/// A concrete path for a route template.
fn concrete(template: &str, order: &str) -> String {
    let path = template
        .replace("{version}", "v58.0")
        .replace("{ty}", "OrderSummary")
        .replace("{id}", order)
        .replace("{locator}", "01gU0VMRUNUIElkIEZST00gUmVmdW5k-2000");
    assert!(!path.contains('{'), "unknown placeholder in {template}");
    format!("/services/data{path}")
}

const SESSION_INVALID: &str = "INVALID_SESSION_ID";

async fn every_data_route_refuses_bad_tokens(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let routes = data_routes();
    assert!(
        routes.len() >= 10,
        "the router's routes were read: {routes:?}"
    );
    assert!(routes
        .iter()
        .any(|(m, p)| m.contains(&Method::PATCH) && p.contains("{id}")));
    let order = app.order("USD", &["100.00"]).await;
    // Expired and revoked tokens of a real client.
    let (client_id, _) = refunds_api::auth::create_client(&app.db, "doomed", Role::Admin)
        .await
        .unwrap()
        .unwrap();
    let (expired, _) =
        refunds_api::auth::issue_token(&app.db, &client_id, "005000000000009AAA", Duration::ZERO)
            .await
            .unwrap();
    let (revoked, _) = refunds_api::auth::issue_token(
        &app.db,
        &client_id,
        "005000000000009AAA",
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert!(
        refunds_store::auth::revoke_client(&app.db, "doomed", refunds_store::now_ms())
            .await
            .unwrap()
    );
    let wrong = format!("{}!{}", refunds_api::auth::ORG_ID, "0".repeat(64));
    let bearers = [
        ("missing", String::new()),
        ("wrong", format!("Bearer {wrong}")),
        ("expired", format!("Bearer {expired}")),
        ("revoked", format!("Bearer {revoked}")),
    ];
    let before = common::ledger(&app).await;
    let mut checked = 0;
    for (methods, template) in &routes {
        let path = concrete(template, &order.id);
        for method in methods {
            let body = (*method != Method::GET).then(|| br#"{"OrderNumber": "X"}"#.to_vec());
            for (kind, bearer) in &bearers {
                let headers: Vec<(&str, &str)> = if bearer.is_empty() {
                    Vec::new()
                } else {
                    vec![("Authorization", bearer.as_str())]
                };
                let answer =
                    raw_on(&app.router, method.clone(), &path, body.clone(), &headers).await;
                assert_plain_error(
                    answer.status,
                    &answer.json(),
                    StatusCode::UNAUTHORIZED,
                    SESSION_INVALID,
                    None,
                );
                assert!(
                    answer.status == StatusCode::UNAUTHORIZED,
                    "{method} {path} with a {kind} token: {}",
                    answer.text
                );
                checked += 1;
            }
            // With a valid token the same request reaches the route (not a 401).
            let answer = raw(&app, method.clone(), &path, body.clone(), &[]).await;
            assert_ne!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {}",
                answer.text
            );
        }
    }
    assert!(checked >= 4 * routes.len());
    assert_eq!(
        common::ledger(&app).await,
        before,
        "refused requests changed nothing"
    );
}

fn gateway_body() -> Value {
    json!({"PaymentGatewayName": "G", "ProviderType": "Simulator"})
}

async fn gateways(app: &TestApp) -> i64 {
    app.scalar("SELECT COUNT(*) FROM payment_gateways").await
}

fn insufficient_access(status: StatusCode, body: &Value) {
    assert_plain_error(
        status,
        body,
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_ACCESS_OR_READONLY",
        None,
    );
}

async fn standard_principals_cannot_create_or_change_gateways(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let existing = app.gateway(gateway_body()).await;
    let before = gateways(&app).await;
    let path = format!("{V}/sobjects/PaymentGateway");
    for suffix in ["", "/"] {
        let (status, body) = app.post(&format!("{path}{suffix}"), &gateway_body()).await;
        insufficient_access(status, &body);
    }
    // Refused before anything else is looked at: a malformed body is still a 403.
    let (status, body) = app.call(Method::POST, &path, Some("{not json"), &[]).await;
    insufficient_access(status, &body);
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("{path}/{existing}"),
            Some(r#"{"Status": "Inactive"}"#),
            &[],
        )
        .await;
    insufficient_access(status, &body);
    assert_eq!(gateways(&app).await, before, "nothing was written");
    let record = app.record("PaymentGateway", &existing).await;
    assert_eq!(record["Status"], "Active");
    // An admin gets past the permission to the object's own rules.
    let (status, body) = app
        .call_as_admin(
            Method::PATCH,
            &format!("{path}/{existing}"),
            Some(r#"{"Status": "Inactive"}"#),
        )
        .await;
    assert_plain_error(status, &body, StatusCode::BAD_REQUEST, "INVALID_TYPE", None);
    // Standard principals still read gateways, and load and refund orders on them.
    let order = app.order_on(&existing, "USD", &["50.00"]).await;
    app.ensure(&order, json!({"excessFundsAmount": 10})).await;
    app.settle().await;
    let processed = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM refunds WHERE order_payment_summary_id = '{}' AND status = 'Processed'",
            order.summaries[0]
        ))
        .await;
    assert_eq!(processed, 1);
}

/// A password-grant token acts with its user's role, a client-credentials token with its
/// client's.
async fn the_role_is_the_principals(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let login = |body: String| {
        let router = app.router.clone();
        async move {
            use tower::ServiceExt;
            let request = axum::http::Request::builder()
                .method(Method::POST)
                .uri("/services/oauth2/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(axum::body::Body::from(body))
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let token: Value = serde_json::from_slice(&bytes).unwrap();
            format!("Bearer {}", token["access_token"].as_str().unwrap())
        }
    };
    let (admin_id, admin_secret) = refunds_api::auth::create_client(&app.db, "admin", Role::Admin)
        .await
        .unwrap()
        .unwrap();
    let (plain_id, plain_secret) =
        refunds_api::auth::create_client(&app.db, "plain", Role::Standard)
            .await
            .unwrap()
            .unwrap();
    let admin_pw = refunds_api::auth::create_user(&app.db, "root@example.com", Role::Admin)
        .await
        .unwrap()
        .unwrap();
    let plain_pw = refunds_api::auth::create_user(&app.db, "ops@example.com", Role::Standard)
        .await
        .unwrap()
        .unwrap();
    let cases = [
        (format!("grant_type=client_credentials&client_id={admin_id}&client_secret={admin_secret}"), true),
        (format!("grant_type=client_credentials&client_id={plain_id}&client_secret={plain_secret}"), false),
        (format!("grant_type=password&client_id={plain_id}&client_secret={plain_secret}&username=root@example.com&password={admin_pw}"), true),
        (format!("grant_type=password&client_id={admin_id}&client_secret={admin_secret}&username=ops@example.com&password={plain_pw}"), false),
    ];
    for (grant, admin) in cases {
        let bearer = login(grant.clone()).await;
        let (status, body) = app
            .call(
                Method::POST,
                &format!("{V}/sobjects/PaymentGateway"),
                Some(&gateway_body().to_string()),
                &[("authorization", bearer.as_str())],
            )
            .await;
        if admin {
            assert_eq!(status, StatusCode::CREATED, "{grant}: {body}");
        } else {
            insufficient_access(status, &body);
        }
    }
}

async fn gateway_secrets_come_only_from_refunds_secret_variables(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let path = format!("{V}/sobjects/PaymentGateway");
    let before = gateways(&app).await;
    for field in ["MerchantCredentialEnv", "WebhookHmacKeyEnv"] {
        for name in [
            "STRIPE_KEY",
            "REFUNDS_ADYEN_HMAC_KEY",
            "HOME",
            "REFUNDS_SECRET_",
            "REFUNDS_SECRET_lower",
            "refunds_secret_X",
            "REFUNDS_SECRET_A-B",
            "XREFUNDS_SECRET_A",
        ] {
            let mut body = json!({"PaymentGatewayName": "S", "ProviderType": "Stripe",
                                  "MerchantCredentialEnv": "REFUNDS_SECRET_STRIPE"});
            body[field] = json!(name);
            let (status, answer) = app
                .call_as_admin(Method::POST, &path, Some(&body.to_string()))
                .await;
            assert_plain_error(
                status,
                &answer,
                StatusCode::BAD_REQUEST,
                "FIELD_INTEGRITY_EXCEPTION",
                Some(&[field]),
            );
        }
    }
    assert_eq!(gateways(&app).await, before);
    // At the edge: the prefix and one character.
    app.gateway(json!({"PaymentGatewayName": "S", "ProviderType": "Stripe",
                        "MerchantCredentialEnv": "REFUNDS_SECRET_X", "WebhookHmacKeyEnv": "REFUNDS_SECRET_9"}))
        .await;
}

async fn gateway_hosts_are_checked_when_written(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let path = format!("{V}/sobjects/PaymentGateway");
    let stripe = |url: &str| {
        json!({"PaymentGatewayName": "S", "ProviderType": "Stripe", "BaseUrl": url,
               "MerchantCredentialEnv": "REFUNDS_SECRET_STRIPE"})
    };
    let before = gateways(&app).await;
    for url in [
        "https://evil.example",
        "https://api.stripe.com.evil.example",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1",
        "http://192.168.1.1:8080",
        "http://[fd00::1]/",
        "http://127.0.0.2:80",
        "http://2130706434/",
        "ftp://api.stripe.com",
        "not a url",
    ] {
        let (status, answer) = app
            .call_as_admin(Method::POST, &path, Some(&stripe(url).to_string()))
            .await;
        assert_plain_error(
            status,
            &answer,
            StatusCode::BAD_REQUEST,
            "FIELD_INTEGRITY_EXCEPTION",
            Some(&["BaseUrl"]),
        );
    }
    assert_eq!(gateways(&app).await, before);
    // The providers' hosts, and the loopback the tests list.
    for url in [
        "https://api.stripe.com",
        "http://127.0.0.1:9",
        "http://localhost:9",
        "http://[::1]:9",
    ] {
        app.gateway(stripe(url)).await;
    }
    app.gateway(json!({"PaymentGatewayName": "A", "ProviderType": "Adyen",
                        "BaseUrl": "https://1797a841fbb37ca7-AdyenDemo-checkout-live.adyenpayments.com/checkout/v71",
                        "MerchantCredentialEnv": "REFUNDS_SECRET_ADYEN", "MerchantAccount": "M"}))
        .await;

    // Under the default list, loopback is not allowed, and neither is a default URL
    // whose host was left out.
    let Some(strict) = TestApp::with_state(backend, fast_config(), |state| refunds_api::AppState {
        gateway_hosts: std::sync::Arc::new(HostPolicy::parse("checkout-test.adyen.com").unwrap()),
        ..state
    })
    .await
    else {
        return;
    };
    for body in [
        stripe("http://127.0.0.1:9"),
        json!({"PaymentGatewayName": "S", "ProviderType": "Stripe", "MerchantCredentialEnv": "REFUNDS_SECRET_STRIPE"}),
    ] {
        let (status, answer) = strict
            .call_as_admin(Method::POST, &path, Some(&body.to_string()))
            .await;
        assert_plain_error(
            status,
            &answer,
            StatusCode::BAD_REQUEST,
            "FIELD_INTEGRITY_EXCEPTION",
            Some(&["BaseUrl"]),
        );
    }
}

/// A gateway written before the rules (straight into the database, as an old version
/// could have) is named by `/readyz`, and its refunds never reach the provider nor read
/// the variable it names.
async fn stored_gateways_that_break_the_rules_are_reported_and_not_called(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let stand_in = LocalServer::start(axum::Router::new().fallback(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { "{}" }
    }))
    .await;
    let leak_env = format!("REFUNDS_TEST_LEAK_{}", std::process::id());
    std::env::set_var(&leak_env, "sk_test_must_never_be_sent");
    let gateway = app
        .gateway(json!({"PaymentGatewayName": "Old", "ProviderType": "Stripe",
                        "BaseUrl": stand_in.base_url, "MerchantCredentialEnv": "REFUNDS_SECRET_PLACEHOLDER"}))
        .await;
    sqlx::query("UPDATE payment_gateways SET merchant_credential_env = $1 WHERE id = $2")
        .bind(&leak_env)
        .bind(&gateway)
        .execute(app.db.pool())
        .await
        .unwrap();
    let violations = refunds_api::security::scan(&app.db, &refunds_testkit::test_gateway_hosts())
        .await
        .unwrap();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].gateway_id, gateway);
    assert_eq!(violations[0].problems[0].0, "MerchantCredentialEnv");
    // The same database under a list without loopback: the URL is named too.
    let strict = refunds_api::security::scan(&app.db, &HostPolicy::default())
        .await
        .unwrap();
    let fields: Vec<&str> = strict[0].problems.iter().map(|(f, _)| *f).collect();
    assert_eq!(fields, ["MerchantCredentialEnv", "BaseUrl"]);

    let state = refunds_api::AppState {
        gateway_violations: std::sync::Arc::new(violations),
        ..refunds_api::AppState::new(app.db.clone(), app.config.clone())
    };
    let readyz = raw_on(
        &refunds_api::router(state),
        Method::GET,
        "/readyz",
        None,
        &[],
    )
    .await;
    assert_eq!(readyz.status, StatusCode::OK, "{}", readyz.text);
    let body = readyz.json();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["gatewayViolations"][0]["id"], gateway.as_str());
    assert_eq!(
        body["gatewayViolations"][0]["problems"][0]["field"],
        "MerchantCredentialEnv"
    );
    assert!(!readyz.text.contains("sk_test_must_never_be_sent"));
    // The healthy app's readiness has no list.
    let (status, body) = app.get("/readyz").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    app.ensure(&order, json!({"excessFundsAmount": 10})).await;
    app.settle().await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the provider was never called"
    );
    let refund_id = app
        .ids(
            "SELECT id FROM refunds WHERE order_payment_summary_id = $1",
            &order.summaries[0],
        )
        .await;
    assert_eq!(refund_id.len(), 1);
    let refund = app.record("Refund", &refund_id[0]).await;
    assert_eq!(refund["Status"], "Canceled", "{refund}");
    let logs = app.logs_of(&refund_id[0]).await;
    let text = serde_json::to_string(&logs).unwrap();
    assert!(text.contains("REFUNDS_SECRET_"), "the log says why: {text}");
    assert!(!text.contains("sk_test_must_never_be_sent"));
}

/// Every text value of every table of the app's database.
async fn stored_text(app: &TestApp, backend: Backend) -> String {
    use sqlx::Row;
    let tables: Vec<String> = sqlx::query_scalar(match backend {
        Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema()"
        }
    })
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    assert!(tables.len() > 10, "{tables:?}");
    let mut out = String::new();
    for table in tables {
        for row in sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(app.db.pool())
            .await
            .unwrap()
        {
            for i in 0..row.len() {
                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                    out.push_str(&text);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// The plain, hex and base64 forms of a secret.
fn forms(secret: &str) -> Vec<String> {
    use base64::Engine;
    vec![
        secret.to_string(),
        hex::encode(secret),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    ]
}

/// Secrets the app saw (a provider key used for a real refund over HTTP, client secrets,
/// a password, tokens) are not in any stored record nor in what the API answers about them.
async fn stored_records_hold_no_secret(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let sim = refunds_testkit::StripeSimulator::start().await;
    let key = format!("sk_test_{:032x}", rand::random::<u128>());
    let env = format!("REFUNDS_SECRET_TEST_STORED_{backend:?}").to_ascii_uppercase();
    std::env::set_var(&env, &key);
    let gateway = app
        .gateway(
            json!({"PaymentGatewayName": "Stripe", "ProviderType": "Stripe",
                        "BaseUrl": sim.base_url, "MerchantCredentialEnv": env, "TimeoutMs": 5000}),
        )
        .await;
    let (client_id, client_secret) =
        refunds_api::auth::create_client(&app.db, "keeper", Role::Standard)
            .await
            .unwrap()
            .unwrap();
    let password = refunds_api::auth::create_user(&app.db, "keeper@example.com", Role::Standard)
        .await
        .unwrap()
        .unwrap();
    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    let op = app
        .ensure(&order, json!({"excessFundsAmount": 12.34}))
        .await;
    app.settle().await;
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds[0]["Status"], "Processed", "{}", refunds[0]);
    let mut answers = serde_json::to_string(&refunds).unwrap();
    answers.push_str(
        &app.logs_of(refunds[0]["Id"].as_str().unwrap())
            .await
            .iter()
            .map(Value::to_string)
            .collect::<String>(),
    );
    answers.push_str(&app.record("PaymentGateway", &gateway).await.to_string());
    let stored = stored_text(&app, backend).await;
    assert!(
        stored.contains(&env),
        "the variable's name is stored, as it should be"
    );
    for (name, secret) in [
        ("provider key", key.as_str()),
        ("client secret", client_secret.as_str()),
        ("password", password.as_str()),
        ("token", app.token.as_str()),
        ("admin token", app.admin_token.as_str()),
    ] {
        for form in forms(secret) {
            assert!(!stored.contains(&form), "the {name} is stored ({form})");
            assert!(!answers.contains(&form), "the {name} is answered ({form})");
        }
    }
    assert!(
        stored.contains(&client_id),
        "client ids are not secrets, and are stored"
    );
}

backend_tests!(
    stored_records_hold_no_secret,
    every_data_route_refuses_bad_tokens,
    standard_principals_cannot_create_or_change_gateways,
    the_role_is_the_principals,
    gateway_secrets_come_only_from_refunds_secret_variables,
    gateway_hosts_are_checked_when_written,
    stored_gateways_that_break_the_rules_are_reported_and_not_called,
);
