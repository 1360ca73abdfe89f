//! An order whose payment summaries' available amounts do not fit in one sum (each fits,
//! their total does not) is refused with INVALID_INPUT and nothing is written, instead of
//! a wrapped or panicking total deciding what may be refunded. SQLite and PostgreSQL.

use axum::http::StatusCode;
use refunds_testkit::{backend_tests, Backend, TestApp};
use serde_json::json;

async fn available_amounts_too_large_to_add_are_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    // 50,000,000,000,000,000.00 USD is 5e18 minor units: one fits in i64, two do not.
    let huge = "50000000000000000";
    let order = app.order("USD", &[huge, huge]).await;
    let operations = || app.scalar("SELECT COUNT(*) FROM background_operations");
    let before = operations().await;
    let (status, value) = app
        .post(
            &TestApp::ensure_path(&order.id),
            &json!({"excessFundsAmount": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(value[0]["errorCode"], "INVALID_INPUT", "{value}");
    let message = value[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("too large to add up"), "{value}");
    assert_eq!(
        operations().await,
        before,
        "a refused request enqueued work"
    );

    // The same request on an order whose amounts add up is accepted.
    let fine = app.order("USD", &["100.00", "50.00"]).await;
    app.ensure(&fine, json!({"excessFundsAmount": 1})).await;
}

backend_tests!(available_amounts_too_large_to_add_are_refused);
