//! What a refund costs the database, in transactions: the budget the queue was tuned to,
//! pinned so that a change which adds a transaction to every refund shows up here (SQLite
//! counts each transaction it makes durable, in its group commits).
//!
//! An excess-funds request is admitted in one transaction. Running its operation takes one
//! transaction to claim it, one to plan it (allocation, reservations, the `Draft`s and the
//! record of each refund's first call), and one per refund to record the provider's
//! answer; the last of those also completes the operation.

use refunds_testkit::{Backend, TestApp};
use serde_json::json;

/// Transactions made durable while `f` ran.
async fn transactions<F: std::future::Future>(app: &TestApp, f: F) -> (u64, F::Output) {
    let before = app.db.group_commits().members;
    let out = f.await;
    (app.db.group_commits().members - before, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_is_admitted_in_one_transaction_and_run_in_three() {
    let app = TestApp::start(Backend::Sqlite).await.expect("sqlite");
    let order = app.order("USD", &["100.00"]).await;
    let (admitted, op) = transactions(
        &app,
        app.ensure(&order, json!({"excessFundsAmount": 10.00})),
    )
    .await;
    assert_eq!(admitted, 1, "the request's transaction");
    let (ran, claimed) = transactions(&app, app.runner.run_once()).await;
    assert_eq!(claimed.expect("run"), 1);
    assert_eq!(ran, 3, "claim, plan, answer and completion");
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Complete"
    );
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["Status"], "Processed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_further_refund_of_an_operation_costs_one_transaction() {
    let app = TestApp::start(Backend::Sqlite).await.expect("sqlite");
    // Two payments of 60.00: 100.00 of excess funds takes two refunds.
    let order = app.order("USD", &["60.00", "60.00"]).await;
    let op = app
        .ensure(&order, json!({"excessFundsAmount": 100.00}))
        .await;
    let (ran, claimed) = transactions(&app, app.runner.run_once()).await;
    assert_eq!(claimed.expect("run"), 1);
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Complete"
    );
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds.len(), 2, "{refunds:#?}");
    assert!(refunds.iter().all(|r| r["Status"] == "Processed"));
    assert_eq!(
        ran, 4,
        "claim, plan, one answer, the last answer and completion"
    );
}
