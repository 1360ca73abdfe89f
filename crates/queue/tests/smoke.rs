use refunds_testkit::{backend_tests, Backend, TestApp};
use serde_json::json;

async fn credit_memo_is_refunded_end_to_end(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "25.50").await;
    let op = app.ensure(&order, json!({"creditMemoId": cm})).await;
    app.settle().await;
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Complete"
    );
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["Status"], "Processed");
    assert_eq!(refunds[0]["Amount"].to_string(), "25.50");
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(ops["RefundedAmount"].to_string(), "25.50");
    assert_eq!(ops["AvailableToRefundAmount"].to_string(), "74.50");
    assert_eq!(
        app.record("CreditMemo", &cm).await["Balance"].to_string(),
        "0.00"
    );
}

backend_tests!(credit_memo_is_refunded_end_to_end);
