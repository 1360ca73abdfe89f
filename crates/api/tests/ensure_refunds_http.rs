//! `POST …/ensure-refunds-async` over the in-process router, on SQLite and PostgreSQL:
//! every row of SPEC §1.1's validation table, JSON and version handling, the 201 answer,
//! and `Idempotency-Key`.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{
    assert_error_with_output, bad_checksum, is_sf_datetime, ledger, raw, raw_on, JSON_UTF8,
};
use refunds_api::{router, AppState};
use refunds_domain::{ObjectType, SfId};
use refunds_testkit::{backend_tests, Backend, Order, TestApp, V};
use serde_json::{json, Value};

const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;

fn path_v(version: &str, order_id: &str) -> String {
    format!(
        "/services/data/{version}/commerce/order-management/order-summaries/{order_id}/async-actions/ensure-refunds-async"
    )
}

async fn operations(app: &TestApp) -> i64 {
    app.scalar("SELECT COUNT(*) FROM background_operations")
        .await
}

/// Posts `body` and asserts a rejection with `code` in the Error-with-Output shape that
/// changed nothing: no operation, no remembered key, no balance.
async fn rejected(app: &TestApp, path: &str, body: &str, status: StatusCode, code: &str) {
    let before = ledger(app).await;
    let (got, value) = app.call(Method::POST, path, Some(body), &[]).await;
    assert_eq!(
        (got, value[0]["errorCode"].as_str()),
        (status, Some(code)),
        "POST {path} {body}: {value}"
    );
    assert_error_with_output(got, &value, status, code);
    assert_eq!(
        ledger(app).await,
        before,
        "a rejected request changed state: {body}"
    );
}

/// Posts `body` and expects 201; answers the operation id.
async fn accepted(app: &TestApp, path: &str, body: &str) -> String {
    let (status, value) = app.call(Method::POST, path, Some(body), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "POST {path} {body}: {value}");
    value["backgroundOperationId"]
        .as_str()
        .expect("backgroundOperationId")
        .to_string()
}

async fn payment(app: &TestApp, gateway: &str, amount: &str, currency: &str) -> String {
    app.create(
        "Payment",
        json!({
            "PaymentGatewayId": gateway,
            "Amount": Value::Number(amount.parse().expect("number")),
            "CurrencyIsoCode": currency,
        }),
    )
    .await
}

async fn payment_summary(app: &TestApp, order_id: &str, payments: &[&str]) -> String {
    let (status, value) = app
        .post(
            &format!("{V}/commerce/order-management/order-payment-summaries"),
            &json!({"orderSummaryId": order_id, "paymentIds": payments}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value["orderPaymentSummaryId"]
        .as_str()
        .expect("id")
        .to_string()
}

// ---------------------------------------------------------------------------------------
// SPEC §1.1 validation table
// ---------------------------------------------------------------------------------------

async fn malformed_ids_are_malformed_id(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "10.00").await;
    let body = json!({ "creditMemoId": cm }).to_string();
    let id = order.id.as_str();
    let in_url = [
        id[..14].to_string(),
        id[..16].to_string(),
        id[..17].to_string(),
        format!("{id}A"),
        format!("{}_{}", &id[..7], &id[8..]),
        format!("{}-{}", &id[..7], &id[8..15]),
        bad_checksum(id),
    ];
    for bad in &in_url {
        rejected(
            &app,
            &TestApp::ensure_path(bad),
            &body,
            BAD_REQUEST,
            "MALFORMED_ID",
        )
        .await;
    }
    let path = TestApp::ensure_path(&order.id);
    for bad in [
        cm[..16].to_string(),
        bad_checksum(&cm),
        format!("{}!", &cm[..14]),
    ] {
        rejected(
            &app,
            &path,
            &json!({ "creditMemoId": bad }).to_string(),
            BAD_REQUEST,
            "MALFORMED_ID",
        )
        .await;
        rejected(
            &app,
            &path,
            &json!({"creditMemoId": cm, "invoicesToPay": [{"invoiceId": bad}]}).to_string(),
            BAD_REQUEST,
            "MALFORMED_ID",
        )
        .await;
        rejected(
            &app,
            &path,
            &json!({"excessFundsAmount": 1, "sequences": [{"orderPaymentSummaryId": bad, "amount": 1}]})
                .to_string(),
            BAD_REQUEST,
            "MALFORMED_ID",
        )
        .await;
    }
    assert_eq!(operations(&app).await, 0);
    // The same body on the well-formed id is accepted: the id was the only problem.
    accepted(&app, &path, &body).await;
}

async fn ids_of_another_object_are_invalid_id_field(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "10.00").await;
    let invoice = app.invoice(&order, "1.00").await;
    let body = json!({ "creditMemoId": cm }).to_string();
    for wrong in [
        cm.clone(),
        cm[..15].to_string(),
        order.payments[0].clone(),
        order.summaries[0].clone(),
    ] {
        rejected(
            &app,
            &TestApp::ensure_path(&wrong),
            &body,
            BAD_REQUEST,
            "INVALID_ID_FIELD",
        )
        .await;
    }
    let path = TestApp::ensure_path(&order.id);
    for body in [
        json!({ "creditMemoId": invoice }),
        json!({ "creditMemoId": order.id }),
        json!({"creditMemoId": cm, "invoicesToPay": [{"invoiceId": cm}]}),
        json!({"creditMemoId": cm, "invoicesToPay": [{"invoiceId": order.summaries[0]}]}),
        json!({"excessFundsAmount": 1, "sequences": [{"orderPaymentSummaryId": order.payments[0], "amount": 1}]}),
        json!({"excessFundsAmount": 1, "sequences": [{"orderPaymentSummaryId": order.id, "amount": 1}]}),
    ] {
        rejected(
            &app,
            &path,
            &body.to_string(),
            BAD_REQUEST,
            "INVALID_ID_FIELD",
        )
        .await;
    }
    assert_eq!(operations(&app).await, 0);
}

async fn unknown_order_summary_is_not_found(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let missing = SfId::generate(ObjectType::OrderSummary).into_string();
    for id in [missing.clone(), missing[..15].to_string()] {
        rejected(
            &app,
            &TestApp::ensure_path(&id),
            r#"{"excessFundsAmount": 10}"#,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        )
        .await;
    }
    assert_eq!(operations(&app).await, 0);
    accepted(
        &app,
        &TestApp::ensure_path(&order.id),
        r#"{"excessFundsAmount": 10}"#,
    )
    .await;
}

async fn unmanaged_order_summary_is_invalid_input(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order_id = app
        .create(
            "OrderSummary",
            json!({"OrderNumber": "U-1", "OrderLifeCycleType": "UNMANAGED"}),
        )
        .await;
    let gateway = app
        .gateway(json!({"PaymentGatewayName": "Sim", "ProviderType": "Simulator"}))
        .await;
    let p = payment(&app, &gateway, "100.00", "USD").await;
    payment_summary(&app, &order_id, &[&p]).await;
    let cm = app
        .create(
            "CreditMemo",
            json!({"ReferenceEntityId": order_id, "TotalAmountWithTax": 10}),
        )
        .await;
    let path = TestApp::ensure_path(&order_id);
    for body in [
        json!({"excessFundsAmount": 10}),
        json!({ "creditMemoId": cm }),
    ] {
        rejected(&app, &path, &body.to_string(), BAD_REQUEST, "INVALID_INPUT").await;
    }
    assert_eq!(operations(&app).await, 0);
}

async fn neither_credit_memo_nor_excess_is_required_field_missing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let path = TestApp::ensure_path(&order.id);
    for body in [
        json!({}),
        json!({"creditMemoId": null}),
        json!({"excessFundsAmount": null}),
        json!({"isAllowPartial": true}),
        json!({"sequences": [{"orderPaymentSummaryId": order.summaries[0], "amount": 5}]}),
    ] {
        rejected(
            &app,
            &path,
            &body.to_string(),
            BAD_REQUEST,
            "REQUIRED_FIELD_MISSING",
        )
        .await;
    }
    assert_eq!(operations(&app).await, 0);
}

async fn bad_amounts_are_invalid_input(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let usd = app.order("USD", &["100.00"]).await;
    let jpy = app.order("JPY", &["10000"]).await;
    let bhd = app.order("BHD", &["100.000"]).await;
    let usd_path = TestApp::ensure_path(&usd.id);
    for amount in [
        "0",
        "0.00",
        "-1",
        "-0.01",
        "\"0\"",
        "\"-5\"",
        "\"abc\"",
        "\"NaN\"",
        "\"\"",
        "\"10,00\"",
        "10.123",
        "\"10.123\"",
        "0.001",
        "1e-3",
        "0.30000000000000004",
        "123456789012345678901234567890",
    ] {
        rejected(
            &app,
            &usd_path,
            &format!(r#"{{"excessFundsAmount": {amount}}}"#),
            BAD_REQUEST,
            "INVALID_INPUT",
        )
        .await;
    }
    // A sequence amount follows the same rules (0 is allowed there: "as much as possible").
    for amount in ["10.123", "-1", "\"abc\""] {
        rejected(
            &app,
            &usd_path,
            &format!(
                r#"{{"excessFundsAmount": 10, "sequences": [{{"orderPaymentSummaryId": "{}", "amount": {amount}}}]}}"#,
                usd.summaries[0]
            ),
            BAD_REQUEST,
            "INVALID_INPUT",
        )
        .await;
    }
    rejected(
        &app,
        &TestApp::ensure_path(&jpy.id),
        r#"{"excessFundsAmount": 10.5}"#,
        BAD_REQUEST,
        "INVALID_INPUT",
    )
    .await;
    rejected(
        &app,
        &TestApp::ensure_path(&bhd.id),
        r#"{"excessFundsAmount": 1.2345}"#,
        BAD_REQUEST,
        "INVALID_INPUT",
    )
    .await;
    assert_eq!(operations(&app).await, 0);

    // The decimals are the currency's: what USD and JPY refuse, BHD takes, and trailing
    // zeros of an exact value are fine; a numeric string is accepted.
    accepted(
        &app,
        &TestApp::ensure_path(&bhd.id),
        r#"{"excessFundsAmount": 1.234}"#,
    )
    .await;
    accepted(
        &app,
        &TestApp::ensure_path(&jpy.id),
        r#"{"excessFundsAmount": 10}"#,
    )
    .await;
    accepted(&app, &usd_path, r#"{"excessFundsAmount": 10.100}"#).await;
    accepted(&app, &usd_path, r#"{"excessFundsAmount": "0.30"}"#).await;
    assert_eq!(operations(&app).await, 4);
}

async fn records_of_other_orders_are_invalid_id_field(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let other = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "20.00").await;
    let invoice = app.invoice(&order, "5.00").await;
    let other_cm = app.credit_memo(&other, "20.00").await;
    let other_invoice = app.invoice(&other, "5.00").await;
    let path = TestApp::ensure_path(&order.id);
    let missing_cm = SfId::generate(ObjectType::CreditMemo).into_string();
    let missing_invoice = SfId::generate(ObjectType::Invoice).into_string();
    let missing_ops = SfId::generate(ObjectType::OrderPaymentSummary).into_string();
    for body in [
        json!({ "creditMemoId": missing_cm }),
        json!({ "creditMemoId": other_cm }),
        json!({"creditMemoId": other_cm, "excessFundsAmount": 1}),
        json!({"creditMemoId": cm, "invoicesToPay": [{"invoiceId": missing_invoice}]}),
        json!({"creditMemoId": cm, "invoicesToPay": [{"invoiceId": invoice}, {"invoiceId": other_invoice}]}),
        json!({"excessFundsAmount": 5, "sequences": [{"orderPaymentSummaryId": missing_ops, "amount": 5}]}),
        json!({"excessFundsAmount": 5, "sequences": [{"orderPaymentSummaryId": other.summaries[0], "amount": 5}]}),
    ] {
        rejected(
            &app,
            &path,
            &body.to_string(),
            BAD_REQUEST,
            "INVALID_ID_FIELD",
        )
        .await;
    }
    assert_eq!(operations(&app).await, 0);
    // The order's own records in the same shapes are accepted.
    accepted(
        &app,
        &path,
        &json!({"creditMemoId": cm, "invoicesToPay": [{"invoiceId": invoice}],
                "excessFundsAmount": 5,
                "sequences": [{"orderPaymentSummaryId": order.summaries[0], "amount": 5}]})
        .to_string(),
    )
    .await;
}

async fn credit_memo_without_balance_is_invalid_input(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let empty = app
        .create(
            "CreditMemo",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": 10, "Balance": 0}),
        )
        .await;
    assert_eq!(
        app.record("CreditMemo", &empty).await["Balance"].to_string(),
        "0.00"
    );
    let path = TestApp::ensure_path(&order.id);
    rejected(
        &app,
        &path,
        &json!({ "creditMemoId": empty }).to_string(),
        BAD_REQUEST,
        "INVALID_INPUT",
    )
    .await;
    assert_eq!(operations(&app).await, 0);
    // The code's additions: a canceled credit memo refunds nothing, and fee invoices are
    // paid from a credit memo, so they need one.
    let canceled = app
        .create(
            "CreditMemo",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": 10, "Status": "Canceled"}),
        )
        .await;
    let invoice = app.invoice(&order, "1.00").await;
    for body in [
        json!({ "creditMemoId": canceled }),
        json!({"excessFundsAmount": 5, "invoicesToPay": [{"invoiceId": invoice}]}),
    ] {
        rejected(&app, &path, &body.to_string(), BAD_REQUEST, "INVALID_INPUT").await;
    }
    assert_eq!(operations(&app).await, 0);
    // With excess funds the empty credit memo is no obstacle (the code's reading of the
    // table row: "Balance = 0 and no excess funds").
    accepted(
        &app,
        &path,
        &json!({"creditMemoId": empty, "excessFundsAmount": 5}).to_string(),
    )
    .await;
}

async fn more_than_available_is_invalid_input_and_exactly_available_is_accepted(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    // Two summaries, 60 + 40: the limit is their sum, not the largest.
    let order = app.order("USD", &["60.00", "40.00"]).await;
    let cm = app.credit_memo(&order, "80.00").await;
    let fee = app.invoice(&order, "10.00").await;
    let big_cm = app.credit_memo(&order, "100.01").await;
    let path = TestApp::ensure_path(&order.id);
    for body in [
        // 80 − 10 (fee) + 30.01 = 100.01
        json!({"creditMemoId": cm, "invoicesToPay": [{"invoiceId": fee}], "excessFundsAmount": "30.01"}),
        // without the fee invoice, 80 + 20.01
        json!({"creditMemoId": cm, "excessFundsAmount": "20.01"}),
        json!({ "creditMemoId": big_cm }),
        json!({"excessFundsAmount": "100.01"}),
    ] {
        rejected(&app, &path, &body.to_string(), BAD_REQUEST, "INVALID_INPUT").await;
    }
    assert_eq!(operations(&app).await, 0);
    // Exactly Σ AvailableToRefundAmount, counting the fee invoice paid from the memo.
    let op = accepted(
        &app,
        &path,
        &json!({"creditMemoId": cm, "invoicesToPay": [{"invoiceId": fee}], "excessFundsAmount": "30.00"})
            .to_string(),
    )
    .await;
    app.settle().await;
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Complete"
    );
    for summary in &order.summaries {
        assert_eq!(
            app.record("OrderPaymentSummary", summary).await["AvailableToRefundAmount"].to_string(),
            "0.00"
        );
    }
    // Refunded money is no longer available: one cent more is now too much.
    rejected(
        &app,
        &path,
        r#"{"excessFundsAmount": 0.01}"#,
        BAD_REQUEST,
        "INVALID_INPUT",
    )
    .await;
}

backend_tests!(
    malformed_ids_are_malformed_id,
    ids_of_another_object_are_invalid_id_field,
    unknown_order_summary_is_not_found,
    unmanaged_order_summary_is_invalid_input,
    neither_credit_memo_nor_excess_is_required_field_missing,
    bad_amounts_are_invalid_input,
    records_of_other_orders_are_invalid_id_field,
    credit_memo_without_balance_is_invalid_input,
    more_than_available_is_invalid_input_and_exactly_available_is_accepted,
);

// ---------------------------------------------------------------------------------------
// JSON and API versions
// ---------------------------------------------------------------------------------------

async fn malformed_or_unexpected_json_is_json_parser_error(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "10.00").await;
    let invoice = app.invoice(&order, "1.00").await;
    let path = TestApp::ensure_path(&order.id);
    let bodies = [
        String::new(),
        "{".to_string(),
        format!(r#"{{"creditMemoId": "{cm}""#),
        format!(r#"{{"creditMemoId": "{cm}",}}"#),
        "{'creditMemoId': 1}".to_string(),
        "null".to_string(),
        "[]".to_string(),
        format!(r#"[{{"creditMemoId": "{cm}"}}]"#),
        "\"text\"".to_string(),
        "42".to_string(),
        "true".to_string(),
        format!(r#"{{"creditMemoId": "{cm}", "amount": 5}}"#),
        format!(
            r#"{{"creditMemoId": "{cm}", "orderSummaryId": "{}"}}"#,
            order.id
        ),
        r#"{"creditMemoId": 5}"#.to_string(),
        r#"{"excessFundsAmount": true}"#.to_string(),
        r#"{"excessFundsAmount": [1]}"#.to_string(),
        format!(r#"{{"creditMemoId": "{cm}", "invoicesToPay": {{"invoiceId": "{invoice}"}}}}"#),
        format!(r#"{{"creditMemoId": "{cm}", "invoicesToPay": ["{invoice}"]}}"#),
        format!(
            r#"{{"creditMemoId": "{cm}", "invoicesToPay": [{{"invoiceId": "{invoice}", "amount": 1}}]}}"#
        ),
        format!(r#"{{"creditMemoId": "{cm}", "isAllowPartial": "yes"}}"#),
    ];
    for body in &bodies {
        rejected(&app, &path, body, BAD_REQUEST, "JSON_PARSER_ERROR").await;
    }
    assert_eq!(operations(&app).await, 0);
}

async fn fields_newer_than_the_version_are_json_parser_errors(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "10.00").await;
    let invoice = app.invoice(&order, "1.00").await;
    let ops = &order.summaries[0];
    let cases = [
        // (field's first version, the version before it, body)
        ("v49.0", "v48.0", json!({"excessFundsAmount": 1})),
        (
            "v56.0",
            "v55.0",
            json!({"creditMemoId": cm, "invoicesToPay": [{"invoiceId": invoice}]}),
        ),
        (
            "v56.0",
            "v55.0",
            json!({"excessFundsAmount": 1, "sequences": [{"orderPaymentSummaryId": ops, "amount": 1}]}),
        ),
        (
            "v56.0",
            "v55.0",
            json!({"excessFundsAmount": 1, "isAllowPartial": true}),
        ),
        (
            "v59.0",
            "v58.0",
            json!({"excessFundsAmount": 1, "isReservedBalanceAmountConsidered": true}),
        ),
    ];
    for (_, before, body) in &cases {
        rejected(
            &app,
            &path_v(before, &order.id),
            &body.to_string(),
            BAD_REQUEST,
            "JSON_PARSER_ERROR",
        )
        .await;
    }
    assert_eq!(operations(&app).await, 0);
    for (since, _, body) in &cases {
        accepted(&app, &path_v(since, &order.id), &body.to_string()).await;
    }
    // The oldest version knows creditMemoId, the newest knows everything. (Each request
    // takes its credit memo's whole balance: one memo per request.)
    let cm_48 = app.credit_memo(&order, "10.00").await;
    accepted(
        &app,
        &path_v("v48.0", &order.id),
        &json!({ "creditMemoId": cm_48 }).to_string(),
    )
    .await;
    let cm_67 = app.credit_memo(&order, "10.00").await;
    accepted(
        &app,
        &path_v("v67.0", &order.id),
        &json!({"creditMemoId": cm_67, "invoicesToPay": [{"invoiceId": invoice}], "excessFundsAmount": 1,
                "sequences": [{"orderPaymentSummaryId": ops, "amount": 0}], "isAllowPartial": false,
                "isReservedBalanceAmountConsidered": false})
        .to_string(),
    )
    .await;
    assert_eq!(operations(&app).await, cases.len() as i64 + 2);
}

async fn versions_outside_48_to_67_are_not_found(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let body = r#"{"excessFundsAmount": 1}"#;
    for version in ["v47.0", "v68.0", "v58", "v58.1", "58.0", "v0.0", "v100.0"] {
        rejected(
            &app,
            &path_v(version, &order.id),
            body,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        )
        .await;
    }
    assert_eq!(operations(&app).await, 0);
    for version in ["v49.0", "v58.0", "v67.0"] {
        accepted(&app, &path_v(version, &order.id), body).await;
    }
}

backend_tests!(
    malformed_or_unexpected_json_is_json_parser_error,
    fields_newer_than_the_version_are_json_parser_errors,
    versions_outside_48_to_67_are_not_found,
);

// ---------------------------------------------------------------------------------------
// The 201 answer
// ---------------------------------------------------------------------------------------

async fn created_answer_and_queued_operation(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "25.00").await;
    let answer = raw(
        &app,
        Method::POST,
        &TestApp::ensure_path(&order.id),
        Some(json!({ "creditMemoId": cm }).to_string().into_bytes()),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(answer.content_type(), JSON_UTF8);
    let body = answer.json();
    let op = body["backgroundOperationId"]
        .as_str()
        .expect("backgroundOperationId")
        .to_string();
    assert_eq!(
        body,
        json!({"backgroundOperationId": op, "errors": [], "success": true})
    );
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["backgroundOperationId", "errors", "success"]);
    assert_eq!(op.len(), 18);
    assert!(op.starts_with("0BO"), "{op}");
    assert!(SfId::parse_as(&op, ObjectType::BackgroundOperation).is_ok());

    // Durable and visible at once, before any worker ran.
    assert_eq!(operations(&app).await, 1);
    let record = app.record("BackgroundOperation", &op).await;
    assert_eq!(record["Id"], op.as_str());
    assert_eq!(record["Status"], "New");
    assert_eq!(record["Type"], "EnsureRefunds");
    assert_eq!(record["ParentKey"], order.id.as_str());
    assert!(
        is_sf_datetime(record["SubmittedAt"].as_str().expect("SubmittedAt")),
        "{record}"
    );
    assert_eq!(record["StartedAt"], Value::Null);
    assert_eq!(record["FinishedAt"], Value::Null);

    app.settle().await;
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Complete"
    );
}

async fn fifteen_char_ids_are_accepted(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "25.00").await;
    let invoice = app.invoice(&order, "5.00").await;
    // The 15-char form, and the 18-char form with a differently cased suffix.
    let lower_suffix = format!("{}{}", &order.id[..15], order.id[15..].to_ascii_lowercase());
    for (n, order_id) in [order.id[..15].to_string(), lower_suffix]
        .iter()
        .enumerate()
    {
        let body = if n == 0 {
            json!({"creditMemoId": &cm[..15], "invoicesToPay": [{"invoiceId": &invoice[..15]}]})
        } else {
            json!({"excessFundsAmount": 1, "sequences": [{"orderPaymentSummaryId": &order.summaries[0][..15], "amount": 1}]})
        };
        let op = accepted(&app, &TestApp::ensure_path(order_id), &body.to_string()).await;
        // Stored under the canonical 18-char id.
        assert_eq!(
            app.record("BackgroundOperation", &op).await["ParentKey"],
            order.id.as_str()
        );
    }
    app.settle().await;
    assert_eq!(
        app.record("CreditMemo", &cm).await["Balance"].to_string(),
        "0.00"
    );
}

backend_tests!(
    created_answer_and_queued_operation,
    fifteen_char_ids_are_accepted
);

// ---------------------------------------------------------------------------------------
// Idempotency-Key
// ---------------------------------------------------------------------------------------

async fn post_with_key(app: &TestApp, order: &Order, body: &str, key: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &TestApp::ensure_path(&order.id),
        Some(body),
        &[("Idempotency-Key", key)],
    )
    .await
}

async fn same_key_and_body_replays_the_first_answer(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let body = r#"{"excessFundsAmount": 10}"#;
    let (status, first) = post_with_key(&app, &order, body, "k1").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, second) = post_with_key(&app, &order, body, "k1").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second, first);
    assert_eq!(operations(&app).await, 1);
    // Still the same answer after the operation ran.
    app.settle().await;
    let (status, third) = post_with_key(&app, &order, body, "k1").await;
    assert_eq!((status, &third), (StatusCode::CREATED, &first));
    assert_eq!(operations(&app).await, 1);
    assert_eq!(
        app.record("OrderPaymentSummary", &order.summaries[0]).await["RefundedAmount"].to_string(),
        "10.00",
        "refunded once"
    );
}

async fn same_key_with_the_same_content_differently_written_replays(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "10.00").await;
    let first_body = format!(r#"{{"creditMemoId":"{cm}","excessFundsAmount":1.5}}"#);
    let retry_body = format!("{{\n  \"excessFundsAmount\": 1.5,\n  \"creditMemoId\": \"{cm}\"\n}}");
    let (status, first) = post_with_key(&app, &order, &first_body, "k1").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, second) = post_with_key(&app, &order, &retry_body, "k1").await;
    assert_eq!(
        (status, &second),
        (StatusCode::CREATED, &first),
        "key order and whitespace do not matter"
    );
    assert_eq!(operations(&app).await, 1);
    let other_amount = format!(r#"{{"creditMemoId":"{cm}","excessFundsAmount":1.50}}"#);
    let (status, _) = post_with_key(&app, &order, &other_amount, "k1").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "numbers are compared as written"
    );
}

async fn same_key_with_another_body_is_idempotency_key_reused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let (status, first) = post_with_key(&app, &order, r#"{"excessFundsAmount": 10}"#, "k1").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let before = ledger(&app).await;
    for other in [
        r#"{"excessFundsAmount": 11}"#,
        r#"{"excessFundsAmount": 10, "isAllowPartial": true}"#,
    ] {
        let (status, value) = post_with_key(&app, &order, other, "k1").await;
        assert_error_with_output(
            status,
            &value,
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
        );
    }
    assert_eq!(ledger(&app).await, before);
    // The first request is still what the key replays.
    let (status, again) = post_with_key(&app, &order, r#"{"excessFundsAmount": 10}"#, "k1").await;
    assert_eq!((status, &again), (StatusCode::CREATED, &first));
    // Keys are not scoped to an order summary (the code's choice): the same key on another
    // order summary is another request too.
    let other_order = app.order("USD", &["100.00"]).await;
    let before_other = ledger(&app).await;
    let (status, value) =
        post_with_key(&app, &other_order, r#"{"excessFundsAmount": 10}"#, "k1").await;
    assert_error_with_output(
        status,
        &value,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(ledger(&app).await, before_other);
    assert_ne!(before, before_other, "the second order was loaded");
    assert_eq!(operations(&app).await, 1);
}

async fn different_keys_make_different_operations(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let body = r#"{"excessFundsAmount": 10}"#;
    let (s1, a) = post_with_key(&app, &order, body, "k1").await;
    let (s2, b) = post_with_key(&app, &order, body, "k2").await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_ne!(a["backgroundOperationId"], b["backgroundOperationId"]);
    // Without a key every request is new.
    let c = accepted(&app, &TestApp::ensure_path(&order.id), body).await;
    assert_ne!(a["backgroundOperationId"], c.as_str());
    assert_eq!(operations(&app).await, 3);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM idempotency_keys").await, 2);
}

async fn a_rejected_request_does_not_use_up_its_key(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let (status, value) = post_with_key(&app, &order, r#"{"excessFundsAmount": 1000}"#, "k1").await;
    assert_error_with_output(status, &value, BAD_REQUEST, "INVALID_INPUT");
    // The corrected request with the same key is not a "reuse" (the code's choice, as
    // Stripe: only admitted requests are remembered).
    let (status, value) = post_with_key(&app, &order, r#"{"excessFundsAmount": 10}"#, "k1").await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    assert_eq!(operations(&app).await, 1);
    // A key that is empty or longer than 255 characters is refused.
    let long = "k".repeat(256);
    for key in [" ", long.as_str()] {
        let (status, value) = post_with_key(&app, &order, r#"{"excessFundsAmount": 5}"#, key).await;
        assert_error_with_output(status, &value, BAD_REQUEST, "INVALID_INPUT");
    }
    assert_eq!(operations(&app).await, 1);
}

async fn an_expired_key_is_a_new_request(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    // The same database behind a router that remembers keys for 1 ms only.
    let short = router(AppState {
        idempotency_ttl: Duration::from_millis(1),
        ..AppState::new(app.db.clone(), app.config.clone())
    });
    let path = TestApp::ensure_path(&order.id);
    let body = br#"{"excessFundsAmount": 10}"#.to_vec();
    let bearer = format!("Bearer {}", app.token);
    let key = [
        ("Idempotency-Key", "k1"),
        ("Authorization", bearer.as_str()),
    ];
    let first = raw_on(&short, Method::POST, &path, Some(body.clone()), &key).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let first_id = first.json()["backgroundOperationId"].clone();
    // Let the wall clock pass the 1 ms TTL (this waits for time itself, not for work).
    let stored = app
        .scalar("SELECT MAX(created_at) FROM idempotency_keys")
        .await;
    while refunds_store::now_ms() <= stored + 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The default 24 h router still replays it ...
    let replay = raw_on(&app.router, Method::POST, &path, Some(body.clone()), &key).await;
    assert_eq!(replay.status, StatusCode::CREATED, "{}", replay.text);
    assert_eq!(replay.json()["backgroundOperationId"], first_id);
    assert_eq!(operations(&app).await, 1);
    // ... the 1 ms one has forgotten it: a new operation, and the key now names it.
    let fresh = raw_on(&short, Method::POST, &path, Some(body.clone()), &key).await;
    assert_eq!(fresh.status, StatusCode::CREATED, "{}", fresh.text);
    let fresh_id = fresh.json()["backgroundOperationId"].clone();
    assert_ne!(fresh_id, first_id);
    assert_eq!(operations(&app).await, 2);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM idempotency_keys").await, 1);
    let again = raw_on(&app.router, Method::POST, &path, Some(body), &key).await;
    assert_eq!(again.json()["backgroundOperationId"], fresh_id);
    assert_eq!(operations(&app).await, 2);
}

async fn concurrent_requests_with_one_key_enqueue_once(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let path = TestApp::ensure_path(&order.id);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let router = app.router.clone();
        let path = path.clone();
        let bearer = format!("Bearer {}", app.token);
        tasks.push(tokio::spawn(async move {
            let answer = raw_on(
                &router,
                Method::POST,
                &path,
                Some(br#"{"excessFundsAmount": 10}"#.to_vec()),
                &[
                    ("Idempotency-Key", "same"),
                    ("Authorization", bearer.as_str()),
                ],
            )
            .await;
            (answer.status, answer.json())
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["backgroundOperationId"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(operations(&app).await, 1);
}

backend_tests!(
    concurrent_requests_with_one_key_enqueue_once,
    same_key_and_body_replays_the_first_answer,
    same_key_with_another_body_is_idempotency_key_reused,
    same_key_with_the_same_content_differently_written_replays,
    different_keys_make_different_operations,
    a_rejected_request_does_not_use_up_its_key,
    an_expired_key_is_a_new_request,
);

// ---------------------------------------------------------------------------------------
// Odd bodies never yield a 5xx
// ---------------------------------------------------------------------------------------

async fn odd_bodies_never_answer_5xx(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let ops = &order.summaries[0];
    let huge = "x".repeat(1 << 20);
    let nines = "9".repeat(100_000);
    let mut bodies: Vec<Vec<u8>> = [
        String::new(),
        "null".to_string(),
        "[]".to_string(),
        "{}".to_string(),
        " ".to_string(),
        "\u{feff}{}".to_string(),
        r#"{"creditMemoId": 5}"#.to_string(),
        r#"{"creditMemoId": {}}"#.to_string(),
        r#"{"creditMemoId": ""}"#.to_string(),
        "[".repeat(100_000),
        format!("{}1{}", "[".repeat(1000), "]".repeat(1000)),
        "{\"a\":".repeat(10_000),
        r#"{"excessFundsAmount": 1e400}"#.to_string(),
        r#"{"excessFundsAmount": -1e400}"#.to_string(),
        r#"{"excessFundsAmount": 1e-400}"#.to_string(),
        r#"{"excessFundsAmount": "1e999999999999999999999999999"}"#.to_string(),
        r#"{"excessFundsAmount": 1E+9223372036854775807}"#.to_string(),
        r#"{"excessFundsAmount": 92233720368547758.08}"#.to_string(),
        r#"{"excessFundsAmount": "Infinity"}"#.to_string(),
        format!(r#"{{"excessFundsAmount": {nines}}}"#),
        format!(r#"{{"excessFundsAmount": "{nines}"}}"#),
        format!(r#"{{"excessFundsAmount": 0.{nines}}}"#),
        format!(r#"{{"creditMemoId": "{huge}"}}"#),
        format!(r#"{{"{huge}": 1}}"#),
        format!(r#"{{"excessFundsAmount": 1, "sequences": [{{"orderPaymentSummaryId": "{ops}", "amount": 1e400}}]}}"#),
        r#"{"excessFundsAmount": 1, "sequences": [null]}"#.to_string(),
        r#"{"excessFundsAmount": 1, "sequences": [{}]}"#.to_string(),
        r#"{"excessFundsAmount": 1, "invoicesToPay": [{"invoiceId": null}]}"#.to_string(),
        r#"{"creditMemoId": "\u0000"}"#.to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    bodies.push(b"{\"creditMemoId\": \"\xff\xfe\"}".to_vec());
    bodies.push(vec![0xff; 64]);
    // Larger than any sane request body.
    bodies.push(format!(r#"{{"creditMemoId": "{}"}}"#, "y".repeat(3 << 20)).into_bytes());
    let path = TestApp::ensure_path(&order.id);
    let before = ledger(&app).await;
    for body in bodies {
        let shown: String = String::from_utf8_lossy(&body).chars().take(80).collect();
        let answer = raw(&app, Method::POST, &path, Some(body), &[]).await;
        assert!(
            answer.status.is_client_error(),
            "{shown:?} → {} {}",
            answer.status,
            answer.text.chars().take(300).collect::<String>()
        );
        assert_eq!(answer.content_type(), JSON_UTF8, "{shown:?}");
        let value = answer.json();
        let code = value[0]["errorCode"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_error_with_output(answer.status, &value, answer.status, &code);
    }
    assert_eq!(ledger(&app).await, before);
    assert_eq!(operations(&app).await, 0);
}

/// Regression: a body over the size limit was answered by axum's extractor in plain text.
async fn an_oversized_body_answers_in_the_error_with_output_shape(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let body = format!(
        r#"{{"excessFundsAmount": 1, "padding": "{}"}}"#,
        " ".repeat(3 << 20)
    );
    let answer = raw(
        &app,
        Method::POST,
        &TestApp::ensure_path(&order.id),
        Some(body.into_bytes()),
        &[],
    )
    .await;
    assert_eq!(answer.content_type(), JSON_UTF8, "{}", answer.text);
    assert_error_with_output(
        answer.status,
        &answer.json(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "EXCEEDED_MAX_SIZE_REQUEST",
    );
    assert_eq!(operations(&app).await, 0);
}

backend_tests!(
    odd_bodies_never_answer_5xx,
    an_oversized_body_answers_in_the_error_with_output_shape
);
