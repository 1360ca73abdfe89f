//! OAuth token endpoint and the bearer check.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use refunds_testkit::{backend_tests, Backend, TestApp, V};
use serde_json::Value;
use tower::ServiceExt;

async fn form_post(app: &TestApp, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/services/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "refunds.example:8443")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn unauthorised(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body,
        &serde_json::json!([{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}])
    );
}

async fn every_data_resource_needs_a_valid_token(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let paths = [
        format!("{V}/sobjects/OrderSummary/{}", order.id),
        format!("{V}/sobjects/Nope/x"),
        format!("{V}/no/such/resource"),
        V.to_string(),
        TestApp::ensure_path(&order.id),
    ];
    for path in &paths {
        for auth in [
            None,
            Some("Bearer nonsense"),
            Some("Bearer "),
            Some("Basic dXNlcjpwYXNz"),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("Authorization", a)).into_iter().collect();
            let headers = if headers.is_empty() {
                vec![("Authorization", "")]
            } else {
                headers
            };
            let (status, body) = app.call(Method::GET, path, None, &headers).await;
            unauthorised(status, &body);
            let (status, body) = app.call(Method::POST, path, Some("{}"), &headers).await;
            unauthorised(status, &body);
        }
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM background_operations")
            .await,
        0
    );
    // Health and the version list stay open.
    assert_eq!(
        app.call(Method::GET, "/healthz", None, &[("Authorization", "")])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.call(
            Method::GET,
            "/services/data",
            None,
            &[("Authorization", "")]
        )
        .await
        .0,
        StatusCode::OK
    );
    // The kit's own token works.
    assert_eq!(
        app.get(&format!("{V}/sobjects/OrderSummary/{}", order.id))
            .await
            .0,
        StatusCode::OK
    );
}

async fn client_credentials_grant_answers_what_clients_need(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (client_id, secret) =
        refunds_api::auth::create_client(&app.db, "jsforce", refunds_api::auth::Role::Standard)
            .await
            .unwrap()
            .unwrap();
    let (status, body) = form_post(
        &app,
        &format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert!(token.len() >= 64, "at least 256 random bits: {token}");
    assert_eq!(body["instance_url"], "http://refunds.example:8443");
    assert_eq!(body["token_type"], "Bearer");
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("http://refunds.example:8443/id/00D"), "{id}");
    assert_eq!(id.rsplit('/').next().unwrap().len(), 18);
    assert!(id.rsplit('/').next().unwrap().starts_with("005"));
    assert!(body["issued_at"].as_str().unwrap().parse::<i64>().is_ok());
    assert!(!body["signature"].as_str().unwrap().is_empty());
    // The token works, and only its hash is stored.
    let bearer = format!("Bearer {token}");
    let (status, _) = app
        .call(Method::GET, V, None, &[("Authorization", &bearer)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let stored = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM access_tokens WHERE token_hash = '{}'",
            refunds_api::auth::token_hash(token)
        ))
        .await;
    assert_eq!(stored, 1);
    let plain = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM access_tokens WHERE token_hash = '{token}'"
        ))
        .await;
    assert_eq!(plain, 0, "the token itself is never stored");
    let argon = app
        .scalar("SELECT COUNT(*) FROM api_clients WHERE secret_hash LIKE '$argon2%'")
        .await;
    assert_eq!(argon, app.scalar("SELECT COUNT(*) FROM api_clients").await);
}

async fn password_grant_and_its_failures(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (client_id, secret) =
        refunds_api::auth::create_client(&app.db, "sfdx", refunds_api::auth::Role::Standard)
            .await
            .unwrap()
            .unwrap();
    let password = refunds_api::auth::create_user(
        &app.db,
        "ops@example.com",
        refunds_api::auth::Role::Standard,
    )
    .await
    .unwrap()
    .unwrap();
    let good = format!(
        "grant_type=password&client_id={client_id}&client_secret={secret}&username=ops%40example.com&password={password}"
    );
    let (status, body) = form_post(&app, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = form_post(&app, &good.replace(&password, "wrong")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, body) = form_post(&app, &good.replace("ops%40example.com", "nobody")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, body) = form_post(&app, &good.replace(&secret, "00")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = form_post(&app, "grant_type=authorization_code&code=x").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    assert!(body["error_description"].is_string());
}

async fn failed_logins_are_rate_limited_per_client(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (client_id, secret) =
        refunds_api::auth::create_client(&app.db, "brute", refunds_api::auth::Role::Standard)
            .await
            .unwrap()
            .unwrap();
    for _ in 0..10 {
        let (status, _) = form_post(
            &app,
            &format!("grant_type=client_credentials&client_id={client_id}&client_secret=guess"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, body) = form_post(
        &app,
        &format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "locked out even with the right secret"
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("too many"));
    let (other_id, other_secret) =
        refunds_api::auth::create_client(&app.db, "other", refunds_api::auth::Role::Standard)
            .await
            .unwrap()
            .unwrap();
    let (status, _) = form_post(
        &app,
        &format!("grant_type=client_credentials&client_id={other_id}&client_secret={other_secret}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "other clients are not affected");
}

async fn expired_and_revoked_tokens_are_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (client_id, _) =
        refunds_api::auth::create_client(&app.db, "short", refunds_api::auth::Role::Standard)
            .await
            .unwrap()
            .unwrap();
    let (expired, _) =
        refunds_api::auth::issue_token(&app.db, &client_id, "005000000000001AAA", Duration::ZERO)
            .await
            .unwrap();
    let (status, body) = app
        .call(
            Method::GET,
            V,
            None,
            &[("Authorization", &format!("Bearer {expired}"))],
        )
        .await;
    unauthorised(status, &body);
    let (live, _) = refunds_api::auth::issue_token(
        &app.db,
        &client_id,
        "005000000000001AAA",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let bearer = format!("Bearer {live}");
    assert_eq!(
        app.call(Method::GET, V, None, &[("Authorization", &bearer)])
            .await
            .0,
        StatusCode::OK
    );
    assert!(
        refunds_store::auth::revoke_client(&app.db, "short", refunds_store::now_ms())
            .await
            .unwrap()
    );
    let (status, body) = app
        .call(Method::GET, V, None, &[("Authorization", &bearer)])
        .await;
    unauthorised(status, &body);
}

backend_tests!(
    every_data_resource_needs_a_valid_token,
    client_credentials_grant_answers_what_clients_need,
    password_grant_and_its_failures,
    failed_logins_are_rate_limited_per_client,
    expired_and_revoked_tokens_are_refused,
);
