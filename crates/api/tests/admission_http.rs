//! A 201 sets the money aside: concurrent requests are admitted only while the order (and
//! the credit memo) still has money no earlier admission holds, and what an operation that
//! ends before planning held is given back.

use std::sync::Arc;

use axum::http::StatusCode;
use refunds_store::{now_ms, ops};
use refunds_testkit::{backend_tests, Backend, TestApp};
use serde_json::{json, Value};

/// Sends `bodies` to ensure-refunds all at once; answers every (status, body).
async fn all_at_once(
    app: &Arc<TestApp>,
    order_id: &str,
    bodies: Vec<Value>,
) -> Vec<(StatusCode, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (app, barrier, path) =
                (app.clone(), barrier.clone(), TestApp::ensure_path(order_id));
            tokio::spawn(async move {
                barrier.wait().await;
                app.post(&path, &body).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(
            tokio::time::timeout(std::time::Duration::from_secs(60), t)
                .await
                .expect("answered in time")
                .expect("request task"),
        );
    }
    answers
}

fn count(answers: &[(StatusCode, Value)], status: StatusCode) -> usize {
    answers.iter().filter(|(s, _)| *s == status).count()
}

async fn admitted_on_order(app: &TestApp, order_id: &str) -> i64 {
    app.scalar(&format!(
        "SELECT admitted_amount FROM order_summaries WHERE id = '{order_id}'"
    ))
    .await
}

async fn thirty_requests_of_ten_against_a_hundred_admit_exactly_ten(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let app = Arc::new(app);
    let order = app.order("USD", &["100.00"]).await;
    let bodies = (0..30)
        .map(|_| json!({"excessFundsAmount": "10.00"}))
        .collect();
    let answers = all_at_once(&app, &order.id, bodies).await;
    assert_eq!(count(&answers, StatusCode::CREATED), 10, "{answers:?}");
    assert_eq!(count(&answers, StatusCode::BAD_REQUEST), 20, "{answers:?}");
    for (status, body) in &answers {
        if *status == StatusCode::BAD_REQUEST {
            assert_eq!(body[0]["errorCode"], "INVALID_INPUT", "{body}");
            let message = body[0]["message"].as_str().unwrap_or_default();
            assert!(message.contains("exceeds the total available"), "{message}");
        }
    }
    assert_eq!(admitted_on_order(&app, &order.id).await, 10_000);
    app.settle().await;
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM background_operations WHERE status = 'Complete'")
            .await,
        10
    );
    let summary = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(summary["RefundedAmount"].to_string(), "100.00");
    assert_eq!(
        app.exceptions_of(&order.id).await.len(),
        0,
        "no shortfall at run time: every admitted request had its money"
    );
    assert_eq!(admitted_on_order(&app, &order.id).await, 0, "all planned");
}

async fn one_credit_memo_is_admitted_once_for_its_balance(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let app = Arc::new(app);
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "40.00").await;
    let bodies = (0..2).map(|_| json!({"creditMemoId": cm})).collect();
    let answers = all_at_once(&app, &order.id, bodies).await;
    assert_eq!(count(&answers, StatusCode::CREATED), 1, "{answers:?}");
    let refused = answers
        .iter()
        .find(|(s, _)| *s == StatusCode::BAD_REQUEST)
        .expect("one refused");
    assert_eq!(refused.1[0]["errorCode"], "INVALID_INPUT");
    assert!(
        refused.1[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no balance left"),
        "{}",
        refused.1
    );
    // With excess funds beside it, a second request is admitted for the excess only.
    let (status, body) = app
        .post(
            &TestApp::ensure_path(&order.id),
            &json!({"creditMemoId": cm, "excessFundsAmount": "5.00"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(admitted_on_order(&app, &order.id).await, 4500);
    app.settle().await;
    let summary = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(summary["RefundedAmount"].to_string(), "45.00");
    assert_eq!(
        app.record("CreditMemo", &cm).await["Balance"].to_string(),
        "0.00"
    );
    assert_eq!(app.exceptions_of(&order.id).await.len(), 0);
}

async fn a_canceled_operation_gives_its_money_back(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let first = app
        .ensure(&order, json!({"excessFundsAmount": "60.00"}))
        .await;
    let (status, _) = app
        .post(
            &TestApp::ensure_path(&order.id),
            &json!({"excessFundsAmount": "60.00"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only 40.00 is left");
    assert!(ops::cancel(&app.db, &first, now_ms())
        .await
        .expect("cancel"));
    assert_eq!(admitted_on_order(&app, &order.id).await, 0);
    let second = app
        .ensure(&order, json!({"excessFundsAmount": "60.00"}))
        .await;
    app.settle().await;
    assert_eq!(
        app.record("BackgroundOperation", &first).await["Status"],
        "Canceled"
    );
    assert_eq!(
        app.record("BackgroundOperation", &second).await["Status"],
        "Complete"
    );
    let summary = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(summary["RefundedAmount"].to_string(), "60.00");
}

backend_tests!(
    thirty_requests_of_ten_against_a_hundred_admit_exactly_ten,
    one_credit_memo_is_admitted_once_for_its_balance,
    a_canceled_operation_gives_its_money_back,
);
