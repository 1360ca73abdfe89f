//! Helpers shared by the end-to-end tests of this crate (each test file uses a subset).
#![allow(dead_code)]

use refunds_testkit::{Order, TestApp};
use serde_json::{json, Value};

/// A JSON number from its exact text.
pub fn num(text: &str) -> Value {
    Value::Number(text.parse().expect("number"))
}

/// A money field as its exact JSON text.
pub fn text(v: &Value) -> String {
    v.to_string()
}

/// Where an operation's refunds went: (summary index in the order, amount, status), by leg.
pub async fn placed(app: &TestApp, order: &Order, op: &str) -> Vec<(usize, String, String)> {
    app.refunds_of(op)
        .await
        .iter()
        .map(|r| {
            let summary = r["OrderPaymentSummaryId"].as_str().expect("summary id");
            let index = order
                .summaries
                .iter()
                .position(|s| s == summary)
                .expect("a summary of this order");
            (
                index,
                text(&r["Amount"]),
                r["Status"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// Shorthand for the expected side of [`placed`]: processed refunds.
pub fn processed(legs: &[(usize, &str)]) -> Vec<(usize, String, String)> {
    legs.iter()
        .map(|&(i, amount)| (i, amount.to_string(), "Processed".to_string()))
        .collect()
}

/// Ensures, settles, and checks the operation completed.
pub async fn ensure_settled(app: &TestApp, order: &Order, body: Value) -> String {
    let op = app.ensure(order, body).await;
    app.settle().await;
    let operation = app.record("BackgroundOperation", &op).await;
    assert_eq!(operation["Status"], "Complete", "{operation}");
    op
}

pub async fn summary_field(app: &TestApp, order: &Order, index: usize, field: &str) -> String {
    text(
        &app.record("OrderPaymentSummary", &order.summaries[index])
            .await[field],
    )
}

/// Every processed refund of `op` has one RefundLinePayment of its amount on its payment,
/// and the refund's fixed fields are as SPEC §2 says.
pub async fn check_refund_records(app: &TestApp, order: &Order, op: &str) {
    for refund in app.refunds_of(op).await {
        let id = refund["Id"].as_str().expect("id");
        let leg = app
            .scalar(&format!("SELECT leg FROM refunds WHERE id = '{id}'"))
            .await;
        assert_eq!(refund["ClientContext"], format!("{op}:{leg}"), "{refund}");
        assert_eq!(refund["Type"], "Referenced");
        assert_eq!(refund["ProcessingMode"], "Salesforce");
        let lines = app.lines_of(id).await;
        if refund["Status"] != "Processed" {
            assert!(lines.is_empty(), "{lines:?}");
            continue;
        }
        assert_eq!(lines.len(), 1, "one line per processed refund: {lines:?}");
        let line = app.record("RefundLinePayment", &lines[0]).await;
        assert_eq!(line["RefundId"], id);
        assert_eq!(text(&line["Amount"]), text(&refund["Amount"]));
        assert_eq!(line["Type"], "Applied");
        let summary = refund["OrderPaymentSummaryId"].as_str().expect("summary");
        let index = order
            .summaries
            .iter()
            .position(|s| s == summary)
            .expect("summary of this order");
        assert_eq!(line["PaymentId"], order.payments[index].as_str());
    }
}

/// Ensures `amount` of excess funds on `order`, settles, checks that the operation
/// completed with one leg, and returns the operation id and its single refund.
pub async fn refund_excess_once(app: &TestApp, order: &Order, amount: &str) -> (String, Value) {
    let op = app
        .ensure(order, json!({"excessFundsAmount": num(amount)}))
        .await;
    app.settle().await;
    let operation = app.record("BackgroundOperation", &op).await;
    assert_eq!(
        operation["Status"], "Complete",
        "a provider answer never fails the operation: {operation}"
    );
    assert_eq!(operation["Error"], Value::Null);
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds.len(), 1, "one leg: {refunds:?}");
    (op, refunds[0].clone())
}
