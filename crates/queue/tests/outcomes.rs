//! End to end: what each Simulator outcome (SPEC §4, by the last two digits of a leg's
//! amount) does to the Refund, the money, the gateway log and the process exceptions
//! (SPEC §3.2). Every order here has one 100.00 USD payment.

use std::time::Duration;

use refunds_queue::QueueConfig;
use refunds_testkit::{backend_tests, fast_config, Backend, Order, TestApp};
use serde_json::{json, Value};

mod common;

use common::{refund_excess_once, text};

/// One expected gateway log row: (InteractionType, InteractionStatus, SfResultCode).
type LogRow = (&'static str, &'static str, &'static str);

/// What one outcome must leave behind once settled.
struct Expect {
    /// The excess funds amount; its cents pick the outcome.
    amount: &'static str,
    status: &'static str,
    code: &'static str,
    refunded: &'static str,
    available: &'static str,
    logs: &'static [LogRow],
    /// Refund calls the simulated provider received for the refund's key.
    attempts: u32,
}

impl Expect {
    fn succeeds(&self) -> bool {
        self.status == "Processed"
    }
}

/// Ensures `amount` of excess funds on a fresh order, settles, checks the operation
/// completed, and returns the order, the operation id and its single refund.
async fn run(app: &TestApp, amount: &str) -> (Order, String, Value) {
    let order = app.order("USD", &["100.00"]).await;
    let (op, refund) = refund_excess_once(app, &order, amount).await;
    (order, op, refund)
}

async fn check_outcome(backend: Backend, expect: Expect) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (order, op, refund) = run(&app, expect.amount).await;
    let refund_id = refund["Id"].as_str().expect("refund id").to_string();

    // The Refund.
    assert_eq!(refund["Status"], expect.status, "{refund}");
    assert_eq!(refund["SfResultCode"], expect.code, "{refund}");
    assert_eq!(text(&refund["Amount"]), expect.amount);
    assert_eq!(refund["OrderPaymentSummaryId"], order.summaries[0].as_str());
    assert_eq!(refund["PaymentGatewayId"], order.gateway.as_str());
    let gateway_ref = refund["GatewayRefNumber"].clone();
    if expect.succeeds() {
        assert!(
            gateway_ref.as_str().is_some_and(|r| !r.is_empty()),
            "a processed refund carries the provider's reference: {refund}"
        );
    } else {
        assert_eq!(gateway_ref, Value::Null, "no money moved, no reference");
    }

    // The money: never left reserved, refunded only on success.
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(text(&ops["CapturedAmount"]), "100.00");
    assert_eq!(text(&ops["RefundedAmount"]), expect.refunded, "{ops}");
    assert_eq!(text(&ops["PendingRefundAmount"]), "0.00", "{ops}");
    assert_eq!(text(&ops["AvailableToRefundAmount"]), expect.available);
    let payment = app.record("Payment", &order.payments[0]).await;
    assert_eq!(text(&payment["TotalRefundApplied"]), expect.refunded);
    let lines = app.lines_of(&refund_id).await;
    assert_eq!(lines.len(), usize::from(expect.succeeds()), "{lines:?}");

    // The gateway log.
    let logs = app.logs_of(&refund_id).await;
    let seen: Vec<(&str, &str, &str)> = logs
        .iter()
        .map(|l| {
            (
                l["InteractionType"].as_str().unwrap_or("?"),
                l["InteractionStatus"].as_str().unwrap_or("?"),
                l["SfResultCode"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(seen, expect.logs, "{logs:#?}");
    for log in &logs {
        assert_eq!(log["SfRefNumber"], refund_id.as_str(), "{log}");
        assert_eq!(log["ReferencedEntityId"], refund_id.as_str(), "{log}");
        assert_eq!(log["OrderPaymentSummaryId"], order.summaries[0].as_str());
        assert_eq!(log["PaymentGatewayId"], order.gateway.as_str());
        assert!(log["DurationMs"].is_i64(), "DurationMs: {log}");
    }
    let last = logs.last().expect("at least one log");
    if expect.succeeds() {
        assert_eq!(
            last["GatewayRefNumber"], gateway_ref,
            "the successful answer's reference is the refund's"
        );
    }
    assert_eq!(
        ops["LastPaymentGatewayLogId"], last["Id"],
        "the summary points at its latest gateway log"
    );

    // Process exceptions: one per failed refund, none otherwise.
    let exceptions = app.exceptions_of(&order.id).await;
    let summary = app.record("OrderSummary", &order.id).await;
    if expect.succeeds() {
        assert!(exceptions.is_empty(), "{exceptions:?}");
        assert_eq!(summary["ActiveProcessExceptionCount"], 0);
    } else {
        assert_eq!(exceptions.len(), 1, "{exceptions:?}");
        let pe = &exceptions[0];
        assert_eq!(pe["ExceptionType"], "OM Refund Failed");
        assert_eq!(pe["Category"], "Payment");
        assert_eq!(pe["Status"], "New");
        assert_eq!(pe["AttachedToId"], refund_id.as_str());
        assert_eq!(pe["BackgroundOperationId"], op.as_str());
        assert_eq!(pe["OrderSummaryId"], order.id.as_str());
        let message = pe["Message"].as_str().expect("message");
        assert!(message.contains(expect.code), "{message}");
        assert!(message.contains(expect.amount), "{message}");
        assert_eq!(summary["ActiveProcessExceptionCount"], 1);
    }

    // The simulated provider moved the money exactly once, or not at all.
    let sim = app.registry.simulator();
    let minor: i64 = expect.amount.replace('.', "").parse().expect("minor units");
    let moved = if expect.succeeds() {
        (1, minor)
    } else {
        (0, 0)
    };
    assert_eq!(sim.settled().await, moved);
    assert_eq!(sim.attempts(&refund_id).await, expect.attempts);
}

async fn success(backend: Backend) {
    check_outcome(
        backend,
        Expect {
            amount: "10.50",
            status: "Processed",
            code: "Success",
            refunded: "10.50",
            available: "89.50",
            logs: &[("ReferencedRefund", "Success", "Success")],
            attempts: 1,
        },
    )
    .await
}

fn failed(amount: &'static str, code: &'static str) -> Expect {
    Expect {
        amount,
        status: "Canceled",
        code,
        refunded: "0.00",
        available: "100.00",
        logs: match code {
            "Decline" => &[("ReferencedRefund", "Failed", "Decline")],
            "PermanentFail" => &[("ReferencedRefund", "Failed", "PermanentFail")],
            "ValidationError" => &[("ReferencedRefund", "Failed", "ValidationError")],
            _ => &[("ReferencedRefund", "Failed", "RequiresReview")],
        },
        attempts: 1,
    }
}

async fn decline_91(backend: Backend) {
    check_outcome(backend, failed("10.91", "Decline")).await
}

async fn permanent_fail_92(backend: Backend) {
    check_outcome(backend, failed("10.92", "PermanentFail")).await
}

async fn validation_error_93(backend: Backend) {
    check_outcome(backend, failed("10.93", "ValidationError")).await
}

async fn requires_review_94(backend: Backend) {
    check_outcome(backend, failed("10.94", "RequiresReview")).await
}

async fn system_error_twice_then_success_95(backend: Backend) {
    check_outcome(
        backend,
        Expect {
            amount: "10.95",
            status: "Processed",
            code: "Success",
            refunded: "10.95",
            available: "89.05",
            logs: &[
                ("ReferencedRefund", "Failed", "SystemError"),
                ("ReferencedRefund", "Failed", "SystemError"),
                ("ReferencedRefund", "Success", "Success"),
            ],
            attempts: 3,
        },
    )
    .await
}

async fn lost_answer_found_by_lookup_96(backend: Backend) {
    check_outcome(
        backend,
        Expect {
            amount: "10.96",
            status: "Processed",
            code: "Success",
            refunded: "10.96",
            available: "89.04",
            logs: &[
                ("ReferencedRefund", "Timeout", "Indeterminate"),
                ("RefundLookup", "Success", "Success"),
            ],
            // The lookup found the refund: it was not sent again.
            attempts: 1,
        },
    )
    .await
}

async fn lost_request_sent_again_97(backend: Backend) {
    check_outcome(
        backend,
        Expect {
            amount: "10.97",
            status: "Processed",
            code: "Success",
            refunded: "10.97",
            available: "89.03",
            logs: &[
                ("ReferencedRefund", "Timeout", "Indeterminate"),
                ("RefundLookup", "NoOp", "Indeterminate"),
                ("ReferencedRefund", "Success", "Success"),
            ],
            attempts: 2,
        },
    )
    .await
}

/// A declined refund of a credit memo gives the credit memo its balance back.
async fn credit_memo_decline_restores_balance(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "20.91").await;
    let op = app.ensure(&order, json!({"creditMemoId": cm})).await;
    app.settle().await;
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Complete"
    );
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["Status"], "Canceled");
    assert_eq!(refunds[0]["SfResultCode"], "Decline");
    assert_eq!(text(&refunds[0]["Amount"]), "20.91");
    let memo = app.record("CreditMemo", &cm).await;
    assert_eq!(text(&memo["Balance"]), "20.91", "{memo}");
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(text(&ops["PendingRefundAmount"]), "0.00");
    assert_eq!(text(&ops["AvailableToRefundAmount"]), "100.00");
    let exceptions = app.exceptions_of(&order.id).await;
    assert_eq!(exceptions.len(), 1);
    assert_eq!(exceptions[0]["AttachedToId"], refunds[0]["Id"]);
    assert_eq!(app.registry.simulator().settled().await, (0, 0));
}

/// SystemError on every allowed attempt ends as a decline would: Canceled, released, a
/// process exception — and no further call is made.
async fn system_error_on_every_attempt_cancels(backend: Backend) {
    let config = QueueConfig {
        provider_attempts: 2,
        ..fast_config()
    };
    let Some(app) = TestApp::with_config(backend, config).await else {
        return;
    };
    let (order, op, refund) = run(&app, "10.95").await;
    let refund_id = refund["Id"].as_str().expect("id").to_string();
    assert_eq!(refund["Status"], "Canceled", "{refund}");
    assert_eq!(refund["SfResultCode"], "SystemError");
    assert_eq!(refund["GatewayRefNumber"], Value::Null);
    let logs = app.logs_of(&refund_id).await;
    let seen: Vec<(&str, &str)> = logs
        .iter()
        .map(|l| {
            (
                l["InteractionStatus"].as_str().unwrap_or("?"),
                l["SfResultCode"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("Failed", "SystemError"), ("Failed", "SystemError")],
        "{logs:#?}"
    );
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(text(&ops["RefundedAmount"]), "0.00");
    assert_eq!(text(&ops["PendingRefundAmount"]), "0.00");
    assert_eq!(text(&ops["AvailableToRefundAmount"]), "100.00");
    let exceptions = app.exceptions_of(&order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert_eq!(exceptions[0]["AttachedToId"], refund_id.as_str());
    assert_eq!(exceptions[0]["BackgroundOperationId"], op.as_str());
    let message = exceptions[0]["Message"].as_str().expect("message");
    assert!(message.contains("SystemError"), "{message}");
    let sim = app.registry.simulator();
    assert_eq!(sim.attempts(&refund_id).await, 2, "no third call");
    assert_eq!(sim.settled().await, (0, 0));
}

/// When reconciliation cannot learn an outcome in time, a person is asked and the money
/// stays reserved: nothing is refunded twice and nothing is released by guesswork.
async fn reconciliation_gives_up_and_keeps_money_reserved(backend: Backend) {
    let config = QueueConfig {
        reconcile_give_up: Duration::ZERO,
        ..fast_config()
    };
    let Some(app) = TestApp::with_config(backend, config).await else {
        return;
    };
    let (order, op, refund) = run(&app, "10.97").await;
    let refund_id = refund["Id"].as_str().expect("id").to_string();
    assert_eq!(refund["Status"], "Draft", "{refund}");
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(text(&ops["RefundedAmount"]), "0.00");
    assert_eq!(text(&ops["PendingRefundAmount"]), "10.97", "{ops}");
    assert_eq!(text(&ops["AvailableToRefundAmount"]), "89.03");
    let payment = app.record("Payment", &order.payments[0]).await;
    assert_eq!(text(&payment["TotalRefundApplied"]), "0.00");
    let logs = app.logs_of(&refund_id).await;
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0]["InteractionStatus"], "Timeout");
    let exceptions = app.exceptions_of(&order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    let pe = &exceptions[0];
    assert_eq!(pe["AttachedToId"], refund_id.as_str());
    assert_eq!(pe["BackgroundOperationId"], op.as_str());
    assert_eq!(pe["Status"], "New");
    let message = pe["Message"].as_str().expect("message");
    assert!(message.contains(&refund_id), "{message}");
    assert_eq!(
        app.record("OrderSummary", &order.id).await["ActiveProcessExceptionCount"],
        1
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM refunds WHERE id = '{refund_id}' AND reconcile_state = 'manual'"
        ))
        .await,
        1,
        "handed to a person, no longer looked up"
    );
    assert_eq!(app.registry.simulator().settled().await, (0, 0));
    assert_eq!(app.registry.simulator().attempts(&refund_id).await, 1);
}

backend_tests!(
    success,
    decline_91,
    permanent_fail_92,
    validation_error_93,
    requires_review_94,
    system_error_twice_then_success_95,
    lost_answer_found_by_lookup_96,
    lost_request_sent_again_97,
    credit_memo_decline_restores_balance,
    system_error_on_every_attempt_cancels,
    reconciliation_gives_up_and_keeps_money_reserved,
);
