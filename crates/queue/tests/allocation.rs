//! End to end: where the worker puts the money among an order's payment summaries
//! (SPEC §3.1) — the default rule (exact match, smallest covering, descending split,
//! oldest first on ties), `sequences` with and without `isAllowPartial`, and the
//! `largest-first` compatibility rule.

mod common;

use common::{check_refund_records, ensure_settled, num, placed, processed, summary_field, text};
use refunds_domain::AllocationRule;
use refunds_queue::QueueConfig;
use refunds_testkit::{backend_tests, fast_config, Backend, TestApp, V};
use serde_json::json;

/// An exact match wins over a smaller covering summary.
async fn exact_match_preferred(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["50.00", "30.00", "100.00"]).await;
    let op = ensure_settled(&app, &order, json!({"excessFundsAmount": num("30.00")})).await;
    assert_eq!(placed(&app, &order, &op).await, processed(&[(1, "30.00")]));
}

/// Without an exact match, the smallest summary that covers the amount is refunded.
async fn smallest_covering_chosen(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00", "40.00", "60.00"]).await;
    let op = ensure_settled(&app, &order, json!({"excessFundsAmount": num("35.00")})).await;
    assert_eq!(placed(&app, &order, &op).await, processed(&[(1, "35.00")]));
}

/// When no summary covers the amount, the largest ones are used first (fewest refunds).
async fn descending_split_when_none_covers(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["20.00", "50.00", "30.00"]).await;
    let op = ensure_settled(&app, &order, json!({"excessFundsAmount": num("70.00")})).await;
    assert_eq!(
        placed(&app, &order, &op).await,
        processed(&[(1, "50.00"), (2, "20.00")])
    );
    check_refund_records(&app, &order, &op).await;
    assert_eq!(
        summary_field(&app, &order, 0, "AvailableToRefundAmount").await,
        "20.00"
    );
    assert_eq!(
        summary_field(&app, &order, 2, "AvailableToRefundAmount").await,
        "10.00"
    );
}

/// Equal amounts are broken by age, oldest first, every time (Salesforce picks at random;
/// several orders make a random pick very unlikely to pass).
async fn ties_go_to_the_oldest(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    for _ in 0..3 {
        let exact = app.order("USD", &["40.00", "40.00"]).await;
        let op = ensure_settled(&app, &exact, json!({"excessFundsAmount": num("40.00")})).await;
        assert_eq!(placed(&app, &exact, &op).await, processed(&[(0, "40.00")]));

        let covering = app.order("USD", &["50.00", "50.00"]).await;
        let op = ensure_settled(&app, &covering, json!({"excessFundsAmount": num("30.00")})).await;
        assert_eq!(
            placed(&app, &covering, &op).await,
            processed(&[(0, "30.00")])
        );

        let split = app.order("USD", &["30.00", "30.00", "30.00"]).await;
        let op = ensure_settled(&app, &split, json!({"excessFundsAmount": num("50.00")})).await;
        assert_eq!(
            placed(&app, &split, &op).await,
            processed(&[(0, "30.00"), (1, "20.00")])
        );
    }
}

/// `sequences` are applied in the order given, each capped by its amount, before (here:
/// instead of) the default rule, which would have put 25.00 on summary 1 in one refund.
/// An amount may be a numeric string.
async fn sequences_in_order(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00", "50.00"]).await;
    let op = ensure_settled(
        &app,
        &order,
        json!({
            "excessFundsAmount": num("25.00"),
            "sequences": [
                {"orderPaymentSummaryId": order.summaries[1], "amount": "10.00"},
                {"orderPaymentSummaryId": order.summaries[0], "amount": num("15.00")},
            ],
        }),
    )
    .await;
    assert_eq!(
        placed(&app, &order, &op).await,
        processed(&[(1, "10.00"), (0, "15.00")])
    );
    check_refund_records(&app, &order, &op).await;
}

/// isAllowPartial true: what the sequences do not cover stays on the credit memo, and
/// that is what was asked for, so no process exception.
async fn sequences_partial_leave_the_rest_on_the_credit_memo(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00", "50.00"]).await;
    let cm = app.credit_memo(&order, "60.00").await;
    let op = ensure_settled(
        &app,
        &order,
        json!({
            "creditMemoId": cm,
            "sequences": [{"orderPaymentSummaryId": order.summaries[1], "amount": num("20.00")}],
            "isAllowPartial": true,
        }),
    )
    .await;
    assert_eq!(placed(&app, &order, &op).await, processed(&[(1, "20.00")]));
    assert_eq!(
        text(&app.record("CreditMemo", &cm).await["Balance"]),
        "40.00"
    );
    assert_eq!(
        summary_field(&app, &order, 0, "RefundedAmount").await,
        "0.00"
    );
    assert!(app.exceptions_of(&order.id).await.is_empty());
}

/// isAllowPartial false: the rest goes by the default rule (40.00 is no longer covered by
/// summary 1's remaining 30.00, so summary 0 takes it).
async fn sequences_not_partial_place_the_rest_by_default(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00", "50.00"]).await;
    let cm = app.credit_memo(&order, "60.00").await;
    let op = ensure_settled(
        &app,
        &order,
        json!({
            "creditMemoId": cm,
            "sequences": [{"orderPaymentSummaryId": order.summaries[1], "amount": num("20.00")}],
            "isAllowPartial": false,
        }),
    )
    .await;
    assert_eq!(
        placed(&app, &order, &op).await,
        processed(&[(1, "20.00"), (0, "40.00")])
    );
    assert_eq!(
        text(&app.record("CreditMemo", &cm).await["Balance"]),
        "0.00"
    );
    check_refund_records(&app, &order, &op).await;
}

/// A sequence amount of 0 means "as much as the summary has available".
async fn sequence_amount_zero_takes_as_much_as_possible(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    for (partial, expected, balance) in [
        (true, processed(&[(1, "30.00")]), "20.00"),
        (false, processed(&[(1, "30.00"), (0, "20.00")]), "0.00"),
    ] {
        let order = app.order("USD", &["100.00", "30.00"]).await;
        let cm = app.credit_memo(&order, "50.00").await;
        let op = ensure_settled(
            &app,
            &order,
            json!({
                "creditMemoId": cm,
                "sequences": [{"orderPaymentSummaryId": order.summaries[1], "amount": 0}],
                "isAllowPartial": partial,
            }),
        )
        .await;
        assert_eq!(
            placed(&app, &order, &op).await,
            expected,
            "partial {partial}"
        );
        assert_eq!(
            text(&app.record("CreditMemo", &cm).await["Balance"]),
            balance,
            "partial {partial}"
        );
        assert_eq!(
            summary_field(&app, &order, 1, "AvailableToRefundAmount").await,
            "0.00"
        );
    }
}

/// A sequence amount above what its summary has available is capped; the rest goes by
/// the default rule.
async fn sequence_amount_is_capped_by_availability(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00", "50.00"]).await;
    let op = ensure_settled(
        &app,
        &order,
        json!({
            "excessFundsAmount": num("70.00"),
            "sequences": [{"orderPaymentSummaryId": order.summaries[1], "amount": num("80.00")}],
        }),
    )
    .await;
    assert_eq!(
        placed(&app, &order, &op).await,
        processed(&[(1, "50.00"), (0, "20.00")])
    );
    assert!(app.exceptions_of(&order.id).await.is_empty());
}

/// An order whose one payment summary holds several payments (oldest first), built
/// through the Connect resource as an order system would.
async fn one_summary_over(app: &TestApp, amounts: &[&str]) -> (String, String, Vec<String>) {
    let order = app.order("USD", &[]).await;
    let mut payments = Vec::new();
    for (n, amount) in amounts.iter().enumerate() {
        payments.push(
            app.create(
                "Payment",
                json!({
                    "PaymentGatewayId": order.gateway,
                    "Amount": num(amount),
                    "GatewayRefNumber": format!("ch_multi_{n}"),
                }),
            )
            .await,
        );
        // Distinct creation milliseconds keep "oldest first" unambiguous.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (status, answer) = app
        .post(
            &format!("{V}/commerce/order-management/order-payment-summaries"),
            &json!({"orderSummaryId": order.id, "paymentIds": payments}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{answer}");
    let summary = answer["orderPaymentSummaryId"]
        .as_str()
        .expect("summary id")
        .to_string();
    (order.id, summary, payments)
}

/// Within one summary the same rule picks payments by their refundable balance
/// (SPEC §3.1 step 3): exact, then smallest covering, then descending.
async fn payments_within_a_summary_follow_the_rule(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    // Exact (not the smaller covering 50.00), smallest covering (not the largest
    // 100.00), and descending when no payment covers the amount.
    for (excess, expected) in [
        ("30.00", vec![(1, "30.00")]),
        ("40.00", vec![(0, "40.00")]),
        ("170.00", vec![(2, "100.00"), (0, "50.00"), (1, "20.00")]),
    ] {
        let (order_id, summary, payments) =
            one_summary_over(&app, &["50.00", "30.00", "100.00"]).await;
        let path = TestApp::ensure_path(&order_id);
        let (status, answer) = app
            .post(&path, &json!({"excessFundsAmount": num(excess)}))
            .await;
        assert_eq!(status.as_u16(), 201, "{answer}");
        let op = answer["backgroundOperationId"].as_str().expect("op");
        app.settle().await;
        let mut seen = Vec::new();
        for refund in app.refunds_of(op).await {
            assert_eq!(refund["Status"], "Processed", "{refund}");
            assert_eq!(refund["OrderPaymentSummaryId"], summary.as_str());
            let id = refund["Id"].as_str().expect("id");
            let lines = app.lines_of(id).await;
            assert_eq!(lines.len(), 1);
            let line = app.record("RefundLinePayment", &lines[0]).await;
            let payment = payments
                .iter()
                .position(|p| line["PaymentId"] == p.as_str())
                .expect("a payment of the summary");
            seen.push((payment, text(&refund["Amount"])));
        }
        let expected: Vec<(usize, String)> =
            expected.iter().map(|&(p, a)| (p, a.to_string())).collect();
        assert_eq!(seen, expected, "excess {excess}");
        let ops = app.record("OrderPaymentSummary", &summary).await;
        assert_eq!(text(&ops["RefundedAmount"]), excess);
        assert_eq!(text(&ops["PendingRefundAmount"]), "0.00");
        for (n, payment) in payments.iter().enumerate() {
            let applied = expected
                .iter()
                .find(|(p, _)| *p == n)
                .map_or("0.00", |(_, a)| a.as_str());
            let record = app.record("Payment", payment).await;
            assert_eq!(text(&record["TotalRefundApplied"]), applied, "{record}");
        }
    }
}

/// The `largest-first` compatibility rule refunds the largest summary, where the default
/// picks the smallest one that covers the amount.
async fn largest_first_rule_differs_from_default(backend: Backend) {
    let largest_first = QueueConfig {
        allocation_rule: AllocationRule::LargestFirst,
        ..fast_config()
    };
    for (config, expected) in [
        (fast_config(), processed(&[(1, "30.00")])),
        (largest_first, processed(&[(0, "30.00")])),
    ] {
        let rule = config.allocation_rule;
        let Some(app) = TestApp::with_config(backend, config).await else {
            return;
        };
        let order = app.order("USD", &["100.00", "40.00"]).await;
        let op = ensure_settled(&app, &order, json!({"excessFundsAmount": num("30.00")})).await;
        assert_eq!(placed(&app, &order, &op).await, expected, "{rule:?}");
    }
}

backend_tests!(
    exact_match_preferred,
    smallest_covering_chosen,
    descending_split_when_none_covers,
    ties_go_to_the_oldest,
    sequences_in_order,
    sequences_partial_leave_the_rest_on_the_credit_memo,
    sequences_not_partial_place_the_rest_by_default,
    sequence_amount_zero_takes_as_much_as_possible,
    sequence_amount_is_capped_by_availability,
    payments_within_a_summary_follow_the_rule,
    largest_first_rule_differs_from_default,
);
