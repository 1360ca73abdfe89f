//! A PaymentGateway's call limits (`MaxConcurrentRequests`, `MaxRequestsPerSecond`) through
//! `POST /sobjects/PaymentGateway` on SQLite and PostgreSQL: whole numbers from 1 to 600000
//! are stored and read back; anything else is 400 `FIELD_INTEGRITY_EXCEPTION` naming the
//! field, and no gateway is written.

use axum::http::{Method, StatusCode};
use refunds_testkit::{backend_tests, Backend, TestApp, V};
use serde_json::{json, Value};

mod common;

use common::assert_plain_error;

const FIELDS: [&str; 2] = ["MaxConcurrentRequests", "MaxRequestsPerSecond"];

fn gateway(field: &str, value: Value) -> Value {
    json!({"PaymentGatewayName": "Limited", "ProviderType": "Simulator", field: value})
}

async fn limits_are_stored_and_read_back(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    // Both edges of the range, and both fields together.
    for field in FIELDS {
        for n in [1, 600_000] {
            let id = app.gateway(gateway(field, json!(n))).await;
            let record = app.record("PaymentGateway", &id).await;
            assert_eq!(record[field], n, "{record}");
        }
    }
    let id = app
        .gateway(
            json!({"PaymentGatewayName": "Both", "ProviderType": "Simulator",
                   "MaxConcurrentRequests": 2, "MaxRequestsPerSecond": 5}),
        )
        .await;
    let record = app.record("PaymentGateway", &id).await;
    assert_eq!(
        (
            &record["MaxConcurrentRequests"],
            &record["MaxRequestsPerSecond"]
        ),
        (&json!(2), &json!(5)),
        "{record}"
    );
    // Not given (or null): no limit.
    for body in [
        json!({"PaymentGatewayName": "Free", "ProviderType": "Simulator"}),
        gateway("MaxConcurrentRequests", Value::Null),
    ] {
        let id = app.gateway(body).await;
        let record = app.record("PaymentGateway", &id).await;
        for field in FIELDS {
            assert_eq!(record[field], Value::Null, "{record}");
        }
    }
}

async fn limits_out_of_range_are_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    for field in FIELDS {
        for bad in [
            json!(0),
            json!(-1),
            json!(600_001),
            json!(2.5),
            json!("3"),
            json!(true),
            json!(i64::MAX),
        ] {
            let before = app.scalar("SELECT COUNT(*) FROM payment_gateways").await;
            let body = gateway(field, bad.clone());
            let (status, answer) = app
                .call_as_admin(
                    Method::POST,
                    &format!("{V}/sobjects/PaymentGateway"),
                    Some(&body.to_string()),
                )
                .await;
            assert_plain_error(
                status,
                &answer,
                StatusCode::BAD_REQUEST,
                "FIELD_INTEGRITY_EXCEPTION",
                Some(&[field]),
            );
            assert_eq!(
                app.scalar("SELECT COUNT(*) FROM payment_gateways").await,
                before,
                "{field} = {bad} wrote a gateway"
            );
        }
    }
}

backend_tests!(
    limits_are_stored_and_read_back,
    limits_out_of_range_are_refused,
);
