//! sObject REST and the other resources over the in-process router, on SQLite and
//! PostgreSQL: record rendering, `?fields=`, ingest validation, the
//! `order-payment-summaries` Connect resource, PATCH of a ProcessException, the version
//! and resource lists, health, and odd bodies.

mod common;

use axum::http::{Method, StatusCode};
use common::{assert_plain_error, is_sf_datetime, raw, JSON_UTF8};
use refunds_domain::{ObjectType, SfId};
use refunds_testkit::{backend_tests, Backend, Order, TestApp, V};
use serde_json::{json, Value};

const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;

/// Fields that hold datetimes, in any object.
const DATETIME_FIELDS: &[&str] = &[
    "CreatedDate",
    "LastModifiedDate",
    "SubmittedAt",
    "StartedAt",
    "FinishedAt",
    "ProcessAfter",
    "GatewayDate",
    "AppliedDate",
];

/// GETs a record and checks what every record answer shares: 200, JSON content type,
/// `attributes {type, url}` first, then exactly `fields` in order (PascalCase), the id,
/// and Salesforce datetimes. Answers the record and the raw body text.
async fn get_record(app: &TestApp, ty: &str, id: &str, fields: &[&str]) -> (Value, String) {
    let answer = raw(
        app,
        Method::GET,
        &format!("{V}/sobjects/{ty}/{id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "GET {ty} {id}: {}",
        answer.text
    );
    assert_eq!(answer.content_type(), JSON_UTF8);
    let record = answer.json();
    let keys: Vec<&str> = record
        .as_object()
        .expect("record object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec!["attributes"];
    want.extend_from_slice(fields);
    assert_eq!(keys, want, "{ty} fields");
    assert_eq!(
        record["attributes"],
        json!({"type": ty, "url": format!("{V}/sobjects/{ty}/{id}")})
    );
    assert_eq!(record["Id"], id);
    for key in &keys[1..] {
        let first = key.chars().next().expect("name");
        assert!(
            first.is_ascii_uppercase() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "{ty}.{key} is not PascalCase"
        );
        if DATETIME_FIELDS.contains(key) && !record[*key].is_null() {
            let text = record[*key].as_str().unwrap_or_default();
            assert!(is_sf_datetime(text), "{ty}.{key} = {}", record[*key]);
        }
    }
    for key in ["CreatedDate", "LastModifiedDate"] {
        assert!(
            record[key].is_string(),
            "{ty}.{key} is always set: {record}"
        );
    }
    (record, answer.text)
}

const ORDER_SUMMARY: &[&str] = &[
    "Id",
    "OrderNumber",
    "OrderLifeCycleType",
    "Status",
    "GrandTotalAmount",
    "ActiveProcessExceptionCount",
    "CurrencyIsoCode",
    "CreatedDate",
    "LastModifiedDate",
];
const PAYMENT_GATEWAY: &[&str] = &[
    "Id",
    "PaymentGatewayName",
    "ProviderType",
    "Status",
    "BaseUrl",
    "MerchantCredentialEnv",
    "MerchantAccount",
    "WebhookHmacKeyEnv",
    "TimeoutMs",
    "ConnectTimeoutMs",
    "ResultCodeMapping",
    "MaxConcurrentRequests",
    "MaxRequestsPerSecond",
    "CreatedDate",
    "LastModifiedDate",
];
const ORDER_PAYMENT_SUMMARY: &[&str] = &[
    "Id",
    "OrderSummaryId",
    "Method",
    "Type",
    "AuthorizationAmount",
    "CapturedAmount",
    "RefundedAmount",
    "PendingRefundAmount",
    "AvailableToRefundAmount",
    "LastPaymentGatewayLogId",
    "LastPaymentGatewayMessage",
    "CurrencyIsoCode",
    "CreatedDate",
    "LastModifiedDate",
];
const PAYMENT: &[&str] = &[
    "Id",
    "OrderPaymentSummaryId",
    "PaymentGatewayId",
    "Amount",
    "Type",
    "Status",
    "GatewayRefNumber",
    "TotalRefundApplied",
    "NetRefundApplied",
    "Balance",
    "CurrencyIsoCode",
    "CreatedDate",
    "LastModifiedDate",
];
const INVOICE_OR_CREDIT_MEMO: &[&str] = &[
    "Id",
    "ReferenceEntityId",
    "TotalAmountWithTax",
    "Balance",
    "Status",
    "CurrencyIsoCode",
    "CreatedDate",
    "LastModifiedDate",
];
const CREDIT_MEMO_INV_APPLICATION: &[&str] = &[
    "Id",
    "CreditMemoId",
    "InvoiceId",
    "Amount",
    "Type",
    "AppliedDate",
    "CurrencyIsoCode",
    "CreatedDate",
    "LastModifiedDate",
];
const BACKGROUND_OPERATION: &[&str] = &[
    "Id",
    "Name",
    "Type",
    "Status",
    "ParentKey",
    "SubmittedAt",
    "StartedAt",
    "FinishedAt",
    "Error",
    "RetryCount",
    "RetryLimit",
    "RetryBackoff",
    "ProcessAfter",
    "Timeout",
    "WorkerUri",
    "CreatedDate",
    "LastModifiedDate",
];
const REFUND: &[&str] = &[
    "Id",
    "OrderPaymentSummaryId",
    "PaymentGatewayId",
    "Amount",
    "Status",
    "Type",
    "ProcessingMode",
    "SfResultCode",
    "GatewayRefNumber",
    "GatewayResultCode",
    "GatewayResultCodeDescription",
    "GatewayDate",
    "ClientContext",
    "CurrencyIsoCode",
    "CreatedDate",
    "LastModifiedDate",
];
const REFUND_LINE_PAYMENT: &[&str] = &[
    "Id",
    "RefundId",
    "PaymentId",
    "Amount",
    "Type",
    "AppliedDate",
    "CurrencyIsoCode",
    "CreatedDate",
    "LastModifiedDate",
];
const PAYMENT_GATEWAY_LOG: &[&str] = &[
    "Id",
    "InteractionType",
    "InteractionStatus",
    "SfResultCode",
    "GatewayResultCode",
    "GatewayMessage",
    "GatewayRefNumber",
    "GatewayDate",
    "SfRefNumber",
    "Request",
    "Response",
    "ReferencedEntityId",
    "OrderPaymentSummaryId",
    "PaymentGatewayId",
    "IsNotification",
    "DurationMs",
    "CurrencyIsoCode",
    "CreatedDate",
    "LastModifiedDate",
];
const PROCESS_EXCEPTION: &[&str] = &[
    "Id",
    "Category",
    "ExceptionType",
    "Status",
    "Severity",
    "Priority",
    "Message",
    "Description",
    "AttachedToId",
    "OrderSummaryId",
    "BackgroundOperationId",
    "CreatedDate",
    "LastModifiedDate",
];

/// Rows of every ingest table, to show a rejected create wrote nothing.
async fn ingest_rows(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "order_summaries",
        "payment_gateways",
        "payments",
        "order_payment_summaries",
        "invoices",
        "credit_memos",
    ] {
        out.push(app.scalar(&format!("SELECT COUNT(*) FROM {table}")).await);
    }
    out.push(
        app.scalar("SELECT COUNT(*) FROM payments WHERE order_payment_summary_id IS NOT NULL")
            .await,
    );
    out
}

/// POSTs a create and asserts a plain-array rejection that wrote nothing.
async fn create_rejected(
    app: &TestApp,
    ty: &str,
    body: Value,
    status: StatusCode,
    code: &str,
    fields: Option<&[&str]>,
) {
    let before = ingest_rows(app).await;
    // Gateways are an administrator's to create: their validation is what an admin meets.
    let (got, value) = if ty == "PaymentGateway" {
        app.call_as_admin(
            Method::POST,
            &format!("{V}/sobjects/{ty}"),
            Some(&body.to_string()),
        )
        .await
    } else {
        app.post(&format!("{V}/sobjects/{ty}"), &body).await
    };
    assert_eq!(
        (got, value[0]["errorCode"].as_str()),
        (status, Some(code)),
        "POST {ty} {body}: {value}"
    );
    assert_plain_error(got, &value, status, code, fields);
    assert_eq!(
        ingest_rows(app).await,
        before,
        "rejected {ty} {body} wrote rows"
    );
}

async fn payment_in(app: &TestApp, gateway: &str, amount: &str, currency: &str) -> String {
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

fn ops_path() -> String {
    format!("{V}/commerce/order-management/order-payment-summaries")
}

/// An order with two finished operations: a 25.00 credit-memo refund (after a 5.00 fee
/// invoice) that succeeds, then a 10.91 excess refund that the simulator declines.
struct Worked {
    order: Order,
    operation: String,
    declined: String,
    credit_memo: String,
    invoice: String,
}

async fn worked_order(app: &TestApp) -> Worked {
    let order = app.order("USD", &["100.00"]).await;
    let credit_memo = app.credit_memo(&order, "30.00").await;
    let invoice = app.invoice(&order, "5.00").await;
    let operation = app
        .ensure(
            &order,
            json!({"creditMemoId": credit_memo, "invoicesToPay": [{"invoiceId": invoice}]}),
        )
        .await;
    app.settle().await;
    let declined = app
        .ensure(&order, json!({"excessFundsAmount": "10.91"}))
        .await;
    app.settle().await;
    Worked {
        order,
        operation,
        declined,
        credit_memo,
        invoice,
    }
}

// ---------------------------------------------------------------------------------------
// GET /sobjects/{Type}/{id}
// ---------------------------------------------------------------------------------------

async fn ingested_records_render_as_sobjects(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cm = app.credit_memo(&order, "12.34").await;
    let invoice = app.invoice(&order, "5.00").await;

    let (os, _) = get_record(&app, "OrderSummary", &order.id, ORDER_SUMMARY).await;
    assert_eq!(os["OrderNumber"], "T-1");
    assert_eq!(os["OrderLifeCycleType"], "MANAGED");
    assert_eq!(os["ActiveProcessExceptionCount"], 0);
    assert_eq!(os["CurrencyIsoCode"], "USD");
    assert!(os["GrandTotalAmount"].is_number());

    let (gw, _) = get_record(&app, "PaymentGateway", &order.gateway, PAYMENT_GATEWAY).await;
    assert_eq!(gw["ProviderType"], "Simulator");
    assert_eq!(gw["Status"], "Active");

    let (p, _) = get_record(&app, "Payment", &order.payments[0], PAYMENT).await;
    assert_eq!(p["OrderPaymentSummaryId"], order.summaries[0].as_str());
    assert_eq!(p["PaymentGatewayId"], order.gateway.as_str());
    assert_eq!(p["Amount"].to_string(), "100.00");
    assert_eq!(p["Balance"].to_string(), "100.00");
    assert_eq!(p["Type"], "Capture");
    assert_eq!(p["Status"], "Processed");
    assert_eq!(p["GatewayRefNumber"], "ch_test_0");

    let (s, _) = get_record(
        &app,
        "OrderPaymentSummary",
        &order.summaries[0],
        ORDER_PAYMENT_SUMMARY,
    )
    .await;
    assert_eq!(s["OrderSummaryId"], order.id.as_str());
    assert_eq!(s["AvailableToRefundAmount"].to_string(), "100.00");

    let (c, _) = get_record(&app, "CreditMemo", &cm, INVOICE_OR_CREDIT_MEMO).await;
    assert_eq!(c["ReferenceEntityId"], order.id.as_str());
    assert_eq!(c["TotalAmountWithTax"].to_string(), "12.34");
    let (i, _) = get_record(&app, "Invoice", &invoice, INVOICE_OR_CREDIT_MEMO).await;
    assert_eq!(i["Balance"].to_string(), "5.00");
    // The type name in the path is case-insensitive; the answer uses the canonical name.
    let (status, value) = app.get(&format!("{V}/sobjects/creditmemo/{cm}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["attributes"]["type"], "CreditMemo");
    // A 15-char id reads the same record, answered with its 18-char id.
    let (status, value) = app
        .get(&format!("{V}/sobjects/CreditMemo/{}", &cm[..15]))
        .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["Id"], cm.as_str());
}

async fn records_written_by_workers_render_as_sobjects(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let w = worked_order(&app).await;

    let (op, _) = get_record(
        &app,
        "BackgroundOperation",
        &w.operation,
        BACKGROUND_OPERATION,
    )
    .await;
    assert_eq!(op["Status"], "Complete");
    assert_eq!(op["ParentKey"], w.order.id.as_str());
    for key in ["SubmittedAt", "StartedAt", "FinishedAt"] {
        assert!(op[key].is_string(), "{key}: {op}");
    }
    assert!(op["RetryCount"].is_i64(), "{op}");

    let mut refunds = app.refunds_of(&w.operation).await;
    refunds.extend(app.refunds_of(&w.declined).await);
    assert_eq!(refunds.len(), 2, "{refunds:?}");
    let mut amounts = Vec::new();
    for (r, op) in refunds.iter().zip([&w.operation, &w.declined]) {
        let id = r["Id"].as_str().expect("id");
        let (refund, _) = get_record(&app, "Refund", id, REFUND).await;
        amounts.push((refund["Amount"].to_string(), refund["Status"].clone()));
        assert_eq!(
            refund["ClientContext"]
                .as_str()
                .map(|c| c.starts_with(op.as_str())),
            Some(true),
            "{refund}"
        );
        for log in app.logs_of(id).await {
            get_record(
                &app,
                "PaymentGatewayLog",
                log["Id"].as_str().expect("id"),
                PAYMENT_GATEWAY_LOG,
            )
            .await;
        }
    }
    amounts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        amounts,
        [
            ("10.91".to_string(), json!("Canceled")),
            ("25.00".to_string(), json!("Processed"))
        ]
    );
    let processed = refunds
        .iter()
        .find(|r| r["Status"] == "Processed")
        .expect("processed refund");
    let lines = app.lines_of(processed["Id"].as_str().expect("id")).await;
    assert_eq!(lines.len(), 1);
    let (line, _) = get_record(&app, "RefundLinePayment", &lines[0], REFUND_LINE_PAYMENT).await;
    assert_eq!(line["Amount"].to_string(), "25.00");
    assert_eq!(line["PaymentId"], w.order.payments[0].as_str());

    let applications = app
        .ids(
            "SELECT id FROM credit_memo_inv_applications WHERE credit_memo_id = $1",
            &w.credit_memo,
        )
        .await;
    assert_eq!(applications.len(), 1);
    let (application, _) = get_record(
        &app,
        "CreditMemoInvApplication",
        &applications[0],
        CREDIT_MEMO_INV_APPLICATION,
    )
    .await;
    assert_eq!(application["InvoiceId"], w.invoice.as_str());
    assert_eq!(application["Amount"].to_string(), "5.00");

    let exceptions = app.exceptions_of(&w.order.id).await;
    assert_eq!(exceptions.len(), 1);
    let (pe, _) = get_record(
        &app,
        "ProcessException",
        exceptions[0]["Id"].as_str().expect("id"),
        PROCESS_EXCEPTION,
    )
    .await;
    assert_eq!(pe["Status"], "New");
    assert_eq!(pe["OrderSummaryId"], w.order.id.as_str());
    assert_eq!(pe["BackgroundOperationId"], w.declined.as_str());
}

async fn money_is_rendered_with_the_currency_decimals(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let gateway = app
        .gateway(json!({"PaymentGatewayName": "Sim", "ProviderType": "Simulator"}))
        .await;
    for (currency, given, rendered) in [
        ("USD", "10.10", "10.10"),
        ("USD", "10.1", "10.10"),
        ("USD", "7", "7.00"),
        ("JPY", "1000", "1000"),
        ("JPY", "1000.000", "1000"),
        ("BHD", "1.5", "1.500"),
        ("BHD", "0.001", "0.001"),
    ] {
        let id = payment_in(&app, &gateway, given, currency).await;
        let (record, text) = get_record(&app, "Payment", &id, PAYMENT).await;
        assert!(record["Amount"].is_number(), "{record}");
        // The body's own text, not a re-serialisation: 10.10 stays 10.10.
        assert!(
            text.contains(&format!("\"Amount\":{rendered},")),
            "{currency} {given}: {text}"
        );
        assert!(
            text.contains(&format!("\"Balance\":{rendered},")),
            "{currency} {given}: {text}"
        );
        assert_eq!(record["CurrencyIsoCode"], currency);
    }
    // Sums keep exact decimals too: 10.10 + 0.20 is 10.30.
    let order = app
        .create("OrderSummary", json!({"OrderNumber": "M-1"}))
        .await;
    let a = payment_in(&app, &gateway, "10.10", "USD").await;
    let b = payment_in(&app, &gateway, "0.20", "USD").await;
    let (status, value) = app
        .post(
            &ops_path(),
            &json!({"orderSummaryId": order, "paymentIds": [a, b]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    let summary = value["orderPaymentSummaryId"].as_str().expect("id");
    let (_, text) = get_record(&app, "OrderPaymentSummary", summary, ORDER_PAYMENT_SUMMARY).await;
    assert!(text.contains("\"CapturedAmount\":10.30,"), "{text}");
}

async fn fields_query_selects_fields(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let payment = &order.payments[0];
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    for (query, want) in [
        ("Status,Amount", vec!["Status", "Amount"]),
        ("amount,%20status", vec!["Amount", "Status"]),
        ("Amount,Id,Amount", vec!["Amount"]),
    ] {
        let (status, value) = app
            .get(&format!("{V}/sobjects/Payment/{payment}?fields={query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{query}: {value}");
        let mut expected = vec!["attributes".to_string(), "Id".to_string()];
        expected.extend(want.iter().map(|s| s.to_string()));
        assert_eq!(keys(&value), expected, "{query}");
        assert_eq!(value["Id"], payment.as_str());
        assert_eq!(value["attributes"]["type"], "Payment");
        assert_eq!(value["Amount"].to_string(), "100.00");
    }
    // Money renders in the record's currency even when CurrencyIsoCode is not asked for.
    let jpy = app.order("JPY", &["5000"]).await;
    let (status, value) = app
        .get(&format!(
            "{V}/sobjects/OrderPaymentSummary/{}?fields=CapturedAmount",
            jpy.summaries[0]
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["CapturedAmount"].to_string(), "5000");
    // An empty list means every field (the code's choice).
    let (status, value) = app
        .get(&format!("{V}/sobjects/Payment/{payment}?fields="))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&value).len(), PAYMENT.len() + 1);

    for query in [
        "Bogus",
        "Status,Bogus",
        "order_payment_summary_id",
        "amount%20-%201",
    ] {
        let (status, value) = app
            .get(&format!("{V}/sobjects/Payment/{payment}?fields={query}"))
            .await;
        assert_plain_error(status, &value, BAD_REQUEST, "INVALID_FIELD", None);
        assert!(value[0]["fields"].is_array(), "{value}");
    }
    let (status, value) = app
        .get(&format!(
            "{V}/sobjects/Payment/{payment}?fields=Status,Bogus"
        ))
        .await;
    assert_plain_error(
        status,
        &value,
        BAD_REQUEST,
        "INVALID_FIELD",
        Some(&["Bogus"]),
    );
}

async fn unknown_type_or_id_is_not_found(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let missing_payment = SfId::generate(ObjectType::Payment).into_string();
    for path in [
        format!("{V}/sobjects/Account/{}", order.id),
        format!("{V}/sobjects/Order_Summary/{}", order.id),
        format!("{V}/sobjects/Payment/{missing_payment}"),
        format!("{V}/sobjects/Payment/{}", &missing_payment[..15]),
        // A well-formed id of another type is no record of this one.
        format!("{V}/sobjects/Payment/{}", order.id),
        format!("{V}/sobjects/OrderSummary/{}", order.payments[0]),
        format!("{V}/sobjects/Payment/{}/extra", order.payments[0]),
        format!("{V}/nothing-here"),
        "/services/nothing".to_string(),
    ] {
        let answer = raw(&app, Method::GET, &path, None, &[]).await;
        assert_eq!(answer.content_type(), JSON_UTF8, "{path}");
        assert_plain_error(
            answer.status,
            &answer.json(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            None,
        );
    }
    // A malformed id is the client's mistake, not a missing record (the code's choice,
    // as Salesforce: MALFORMED_ID).
    for bad in [&order.payments[0][..10], "0Pa!!!!!!!!!!!!"] {
        let (status, value) = app.get(&format!("{V}/sobjects/Payment/{bad}")).await;
        assert_plain_error(status, &value, BAD_REQUEST, "MALFORMED_ID", Some(&["Id"]));
    }
    // A method the resource does not have answers JSON too.
    let answer = raw(
        &app,
        Method::DELETE,
        &format!("{V}/sobjects/Payment/{}", order.payments[0]),
        None,
        &[],
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        answer.text
    );
    assert_eq!(answer.content_type(), JSON_UTF8);
    assert_eq!(answer.json()[0]["errorCode"], "METHOD_NOT_ALLOWED");
}

backend_tests!(
    ingested_records_render_as_sobjects,
    records_written_by_workers_render_as_sobjects,
    money_is_rendered_with_the_currency_decimals,
    fields_query_selects_fields,
    unknown_type_or_id_is_not_found,
);

// ---------------------------------------------------------------------------------------
// POST /sobjects/{Type}
// ---------------------------------------------------------------------------------------

async fn created_answer_shape(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let answer = raw(
        &app,
        Method::POST,
        &format!("{V}/sobjects/OrderSummary"),
        Some(br#"{"OrderNumber": "A-1"}"#.to_vec()),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(answer.content_type(), JSON_UTF8);
    let body = answer.json();
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(body, json!({"id": id, "success": true, "errors": []}));
    assert_eq!(id.len(), 18);
    assert!(
        SfId::parse_as(&id, ObjectType::OrderSummary).is_ok(),
        "{id}"
    );
    // Defaults of an order summary.
    let (os, _) = get_record(&app, "OrderSummary", &id, ORDER_SUMMARY).await;
    assert_eq!(os["OrderLifeCycleType"], "MANAGED");
    assert_eq!(os["CurrencyIsoCode"], "USD");
    assert_eq!(os["ActiveProcessExceptionCount"], 0);
    assert_eq!(os["GrandTotalAmount"].to_string(), "0.00");
    // Field names are matched case-insensitively, picklist values too.
    let id = app
        .create(
            "OrderSummary",
            json!({"ordernumber": "A-2", "orderLifeCycleType": "unmanaged", "currencyisocode": "EUR"}),
        )
        .await;
    let os = app.record("OrderSummary", &id).await;
    assert_eq!(os["OrderNumber"], "A-2");
    assert_eq!(os["OrderLifeCycleType"], "UNMANAGED");
    assert_eq!(os["CurrencyIsoCode"], "EUR");
    // simple-salesforce posts to the type's URL with a trailing slash.
    let answer = raw(
        &app,
        Method::POST,
        &format!("{V}/sobjects/OrderSummary/"),
        Some(br#"{"OrderNumber": "A-3"}"#.to_vec()),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let id = answer.json()["id"].as_str().expect("id").to_string();
    assert_eq!(app.record("OrderSummary", &id).await["OrderNumber"], "A-3");
}

async fn missing_required_fields_are_named(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("OrderSummary", json!({}), "OrderNumber"),
        ("OrderSummary", json!({"OrderNumber": null}), "OrderNumber"),
        (
            "PaymentGateway",
            json!({"ProviderType": "Simulator"}),
            "PaymentGatewayName",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "Sim"}),
            "ProviderType",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": order.gateway}),
            "Amount",
        ),
        ("Payment", json!({"Amount": 5}), "PaymentGatewayId"),
        (
            "CreditMemo",
            json!({"TotalAmountWithTax": 5}),
            "ReferenceEntityId",
        ),
        (
            "CreditMemo",
            json!({"ReferenceEntityId": order.id}),
            "TotalAmountWithTax",
        ),
        (
            "Invoice",
            json!({"ReferenceEntityId": order.id}),
            "TotalAmountWithTax",
        ),
    ];
    for (ty, body, field) in cases {
        create_rejected(
            &app,
            ty,
            body,
            BAD_REQUEST,
            "REQUIRED_FIELD_MISSING",
            Some(&[field]),
        )
        .await;
    }
}

async fn unknown_or_read_only_fields_are_invalid_field(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("OrderSummary", json!({"OrderNumber": "X", "Foo": 1}), "Foo"),
        (
            "OrderSummary",
            json!({"OrderNumber": "X", "Order_Number__c": "Y"}),
            "Order_Number__c",
        ),
        (
            "OrderSummary",
            json!({"OrderNumber": "X", "ActiveProcessExceptionCount": 3}),
            "ActiveProcessExceptionCount",
        ),
        (
            "OrderSummary",
            json!({"OrderNumber": "X", "Id": order.id}),
            "Id",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": order.gateway, "Amount": 5, "Balance": 5}),
            "Balance",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": order.gateway, "Amount": 5, "OrderPaymentSummaryId": order.summaries[0]}),
            "OrderPaymentSummaryId",
        ),
        (
            "CreditMemo",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": 5, "CreatedDate": "2026-11-28T16:00:00.000+0000"}),
            "CreatedDate",
        ),
    ];
    for (ty, body, field) in cases {
        create_rejected(&app, ty, body, BAD_REQUEST, "INVALID_FIELD", Some(&[field])).await;
    }
}

async fn bad_values_are_field_integrity_exceptions(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let gw = order.gateway.as_str();
    let missing_gateway = SfId::generate(ObjectType::PaymentGateway).into_string();
    let missing_order = SfId::generate(ObjectType::OrderSummary).into_string();
    let long = "x".repeat(256);
    let cases: Vec<(&str, Value, &str)> = vec![
        // picklists
        (
            "OrderSummary",
            json!({"OrderNumber": "X", "OrderLifeCycleType": "SOMETIMES"}),
            "OrderLifeCycleType",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": gw, "Amount": 5, "Type": "Refund"}),
            "Type",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": gw, "Amount": 5, "Status": "Settled"}),
            "Status",
        ),
        (
            "CreditMemo",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": 5, "Status": "Open"}),
            "Status",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "P", "ProviderType": "PayPal"}),
            "ProviderType",
        ),
        // currencies
        (
            "OrderSummary",
            json!({"OrderNumber": "X", "CurrencyIsoCode": "XXX"}),
            "CurrencyIsoCode",
        ),
        (
            "OrderSummary",
            json!({"OrderNumber": "X", "CurrencyIsoCode": "usd"}),
            "CurrencyIsoCode",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": gw, "Amount": 5, "CurrencyIsoCode": "ZZZ"}),
            "CurrencyIsoCode",
        ),
        (
            "CreditMemo",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": 5, "CurrencyIsoCode": "EUR"}),
            "CurrencyIsoCode",
        ),
        // amounts
        (
            "Payment",
            json!({"PaymentGatewayId": gw, "Amount": -5}),
            "Amount",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": gw, "Amount": 0}),
            "Amount",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": gw, "Amount": "abc"}),
            "Amount",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": gw, "Amount": true}),
            "Amount",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": gw, "Amount": 10.123}),
            "Amount",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": gw, "Amount": 1.5, "CurrencyIsoCode": "JPY"}),
            "Amount",
        ),
        (
            "CreditMemo",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": -1}),
            "TotalAmountWithTax",
        ),
        (
            "Invoice",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": 5, "Balance": -1}),
            "Balance",
        ),
        (
            "OrderSummary",
            json!({"OrderNumber": "X", "GrandTotalAmount": -0.01}),
            "GrandTotalAmount",
        ),
        // references
        (
            "Payment",
            json!({"PaymentGatewayId": missing_gateway, "Amount": 5}),
            "PaymentGatewayId",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": order.id, "Amount": 5}),
            "PaymentGatewayId",
        ),
        (
            "Payment",
            json!({"PaymentGatewayId": "nonsense", "Amount": 5}),
            "PaymentGatewayId",
        ),
        (
            "CreditMemo",
            json!({"ReferenceEntityId": missing_order, "TotalAmountWithTax": 5}),
            "ReferenceEntityId",
        ),
        (
            "Invoice",
            json!({"ReferenceEntityId": order.gateway, "TotalAmountWithTax": 5}),
            "ReferenceEntityId",
        ),
        // balances
        (
            "CreditMemo",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": 5, "Balance": 5.01}),
            "Balance",
        ),
        (
            "Invoice",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": 5, "Balance": 6}),
            "Balance",
        ),
        // providers
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "P", "ProviderType": "PayPal"}),
            "ProviderType",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "S", "ProviderType": "Stripe"}),
            "MerchantCredentialEnv",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "A", "ProviderType": "Adyen", "MerchantCredentialEnv": "REFUNDS_SECRET_ADYEN_KEY"}),
            "MerchantAccount",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "S", "ProviderType": "Stripe", "MerchantCredentialEnv": "REFUNDS_SECRET_K", "ResultCodeMapping": "{\"x\": \"Maybe\"}"}),
            "ResultCodeMapping",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "S", "ProviderType": "Stripe", "MerchantCredentialEnv": "REFUNDS_SECRET_K", "WebhookHmacKeyEnv": "the key"}),
            "WebhookHmacKeyEnv",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "S", "ProviderType": "Stripe", "MerchantCredentialEnv": "REFUNDS_SECRET_K", "TimeoutMs": 0}),
            "TimeoutMs",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "S", "ProviderType": "Stripe", "MerchantCredentialEnv": "REFUNDS_SECRET_K", "BaseUrl": "ftp://x"}),
            "BaseUrl",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "S", "ProviderType": "Simulator", "MerchantCredentialEnv": "sk_live_51Habc"}),
            "MerchantCredentialEnv",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "S", "ProviderType": "Simulator", "MerchantCredentialEnv": "1KEY"}),
            "MerchantCredentialEnv",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "S", "ProviderType": "Simulator", "MerchantCredentialEnv": ""}),
            "MerchantCredentialEnv",
        ),
        (
            "PaymentGateway",
            json!({"PaymentGatewayName": "S", "ProviderType": "Simulator", "MerchantCredentialEnv": "MY KEY"}),
            "MerchantCredentialEnv",
        ),
        // text
        ("OrderSummary", json!({"OrderNumber": long}), "OrderNumber"),
    ];
    for (ty, body, field) in cases {
        create_rejected(
            &app,
            ty,
            body,
            BAD_REQUEST,
            "FIELD_INTEGRITY_EXCEPTION",
            Some(&[field]),
        )
        .await;
    }
    // The valid neighbours of those values are accepted.
    let gateway = app
        .gateway(
            json!({"PaymentGatewayName": "S", "ProviderType": "Simulator", "MerchantCredentialEnv": "REFUNDS_SECRET_SIM_KEY_1"}),
        )
        .await;
    let record = app.record("PaymentGateway", &gateway).await;
    assert_eq!(record["MerchantCredentialEnv"], "REFUNDS_SECRET_SIM_KEY_1");
    app.create(
        "CreditMemo",
        json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": 5, "Balance": 5, "CurrencyIsoCode": "USD"}),
    )
    .await;
    app.create(
        "Payment",
        json!({"PaymentGatewayId": gateway, "Amount": "1.50", "Type": "Sale", "Status": "Draft"}),
    )
    .await;
    app.create("OrderSummary", json!({"OrderNumber": "x".repeat(255)}))
        .await;
}

async fn credit_memo_and_invoice_default_from_their_order(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let jpy = app.order("JPY", &["10000"]).await;
    let bhd = app.order("BHD", &["100.000"]).await;
    let cm = app
        .create(
            "CreditMemo",
            json!({"ReferenceEntityId": jpy.id, "TotalAmountWithTax": 500}),
        )
        .await;
    let (record, text) = get_record(&app, "CreditMemo", &cm, INVOICE_OR_CREDIT_MEMO).await;
    assert_eq!(record["CurrencyIsoCode"], "JPY");
    assert_eq!(record["Status"], "Posted");
    assert!(text.contains("\"Balance\":500,"), "{text}");
    let invoice = app
        .create(
            "Invoice",
            json!({"ReferenceEntityId": bhd.id, "TotalAmountWithTax": "1.5"}),
        )
        .await;
    let (record, text) = get_record(&app, "Invoice", &invoice, INVOICE_OR_CREDIT_MEMO).await;
    assert_eq!(record["CurrencyIsoCode"], "BHD");
    assert_eq!(record["Status"], "Posted");
    assert!(text.contains("\"Balance\":1.500,"), "{text}");
    // The order's currency decides the decimals of the amounts given.
    create_rejected(
        &app,
        "CreditMemo",
        json!({"ReferenceEntityId": jpy.id, "TotalAmountWithTax": 5.5}),
        BAD_REQUEST,
        "FIELD_INTEGRITY_EXCEPTION",
        Some(&["TotalAmountWithTax"]),
    )
    .await;
    // A balance below the total is kept as given.
    let partial = app
        .create(
            "CreditMemo",
            json!({"ReferenceEntityId": bhd.id, "TotalAmountWithTax": 2, "Balance": 0.25}),
        )
        .await;
    assert_eq!(
        app.record("CreditMemo", &partial).await["Balance"].to_string(),
        "0.250"
    );
}

async fn records_the_service_writes_are_not_creatable(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    for ty in [
        "Refund",
        "RefundLinePayment",
        "BackgroundOperation",
        "ProcessException",
        "PaymentGatewayLog",
        "CreditMemoInvApplication",
        "OrderPaymentSummary",
    ] {
        create_rejected(
            &app,
            ty,
            json!({"OrderPaymentSummaryId": order.summaries[0], "Amount": 5}),
            BAD_REQUEST,
            "INVALID_TYPE",
            None,
        )
        .await;
    }
    create_rejected(
        &app,
        "Account",
        json!({"Name": "Acme"}),
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        None,
    )
    .await;
}

backend_tests!(
    created_answer_shape,
    missing_required_fields_are_named,
    unknown_or_read_only_fields_are_invalid_field,
    bad_values_are_field_integrity_exceptions,
    credit_memo_and_invoice_default_from_their_order,
    records_the_service_writes_are_not_creatable,
);

// ---------------------------------------------------------------------------------------
// POST /commerce/order-management/order-payment-summaries
// ---------------------------------------------------------------------------------------

async fn payment_summary_rolls_up_its_payments(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app
        .create("OrderSummary", json!({"OrderNumber": "R-1"}))
        .await;
    let gateway = app
        .gateway(json!({"PaymentGatewayName": "Sim", "ProviderType": "Simulator"}))
        .await;
    let a = payment_in(&app, &gateway, "10.10", "USD").await;
    let b = payment_in(&app, &gateway, "20.25", "USD").await;
    let answer = raw(
        &app,
        Method::POST,
        &ops_path(),
        Some(
            json!({"orderSummaryId": order, "paymentIds": [a, b, a]})
                .to_string()
                .into_bytes(),
        ),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(answer.content_type(), JSON_UTF8);
    let body = answer.json();
    let summary = body["orderPaymentSummaryId"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(
        body,
        json!({"orderPaymentSummaryId": summary, "errors": [], "success": true})
    );
    assert!(SfId::parse_as(&summary, ObjectType::OrderPaymentSummary).is_ok());
    let (record, text) =
        get_record(&app, "OrderPaymentSummary", &summary, ORDER_PAYMENT_SUMMARY).await;
    assert_eq!(record["OrderSummaryId"], order.as_str());
    for field in [
        "AuthorizationAmount",
        "CapturedAmount",
        "AvailableToRefundAmount",
    ] {
        assert!(
            text.contains(&format!("\"{field}\":30.35,")),
            "{field}: {text}"
        );
    }
    for field in ["RefundedAmount", "PendingRefundAmount"] {
        assert!(
            text.contains(&format!("\"{field}\":0.00,")),
            "{field}: {text}"
        );
    }
    assert_eq!(record["CurrencyIsoCode"], "USD");
    for p in [&a, &b] {
        assert_eq!(
            app.record("Payment", p).await["OrderPaymentSummaryId"],
            summary.as_str()
        );
    }
    // A payment that is not Processed is attached but adds nothing captured (the code's
    // choice: only processed money can be refunded).
    let processed = payment_in(&app, &gateway, "5.00", "USD").await;
    let draft = app
        .create(
            "Payment",
            json!({"PaymentGatewayId": gateway, "Amount": 7, "Status": "Draft"}),
        )
        .await;
    let (status, value) = app
        .post(
            &ops_path(),
            &json!({"orderSummaryId": order, "paymentIds": [processed, draft]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    let second = app
        .record(
            "OrderPaymentSummary",
            value["orderPaymentSummaryId"].as_str().expect("id"),
        )
        .await;
    assert_eq!(second["CapturedAmount"].to_string(), "5.00");
    assert_eq!(second["AvailableToRefundAmount"].to_string(), "5.00");
}

async fn payment_summary_rejections(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let attached = order.payments[0].clone();
    let free = payment_in(&app, &order.gateway, "10.00", "USD").await;
    let euro = payment_in(&app, &order.gateway, "10.00", "EUR").await;
    let missing = SfId::generate(ObjectType::Payment).into_string();
    let missing_order = SfId::generate(ObjectType::OrderSummary).into_string();
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        // already in a summary — and the free payment listed with it is not taken either
        (
            json!({"orderSummaryId": order.id, "paymentIds": [free, attached]}),
            BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            json!({"orderSummaryId": order.id, "paymentIds": [free, missing]}),
            BAD_REQUEST,
            "INVALID_ID_FIELD",
        ),
        (
            json!({"orderSummaryId": order.id, "paymentIds": [free, euro]}),
            BAD_REQUEST,
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        (
            json!({"orderSummaryId": missing_order, "paymentIds": [free]}),
            BAD_REQUEST,
            "INVALID_ID_FIELD",
        ),
        (
            json!({"orderSummaryId": order.gateway, "paymentIds": [free]}),
            BAD_REQUEST,
            "INVALID_ID_FIELD",
        ),
        (
            json!({"orderSummaryId": order.id, "paymentIds": [order.gateway]}),
            BAD_REQUEST,
            "INVALID_ID_FIELD",
        ),
        (
            json!({"orderSummaryId": "1Os123", "paymentIds": [free]}),
            BAD_REQUEST,
            "MALFORMED_ID",
        ),
        (
            json!({"orderSummaryId": order.id, "paymentIds": ["0Pa!"]}),
            BAD_REQUEST,
            "MALFORMED_ID",
        ),
        (
            json!({"orderSummaryId": order.id, "paymentIds": []}),
            BAD_REQUEST,
            "REQUIRED_FIELD_MISSING",
        ),
        (
            json!({"orderSummaryId": order.id}),
            BAD_REQUEST,
            "REQUIRED_FIELD_MISSING",
        ),
        (
            json!({"paymentIds": [free]}),
            BAD_REQUEST,
            "REQUIRED_FIELD_MISSING",
        ),
        (
            json!({"orderSummaryId": order.id, "paymentIds": [free], "amount": 1}),
            BAD_REQUEST,
            "JSON_PARSER_ERROR",
        ),
        (
            json!({"orderSummaryId": order.id, "paymentIds": free}),
            BAD_REQUEST,
            "JSON_PARSER_ERROR",
        ),
        (json!([]), BAD_REQUEST, "JSON_PARSER_ERROR"),
    ];
    for (body, status, code) in cases {
        let before = ingest_rows(&app).await;
        let (got, value) = app.post(&ops_path(), &body).await;
        assert_eq!(
            (got, value[0]["errorCode"].as_str()),
            (status, Some(code)),
            "{body}: {value}"
        );
        assert_plain_error(got, &value, status, code, None);
        assert_eq!(ingest_rows(&app).await, before, "{body} wrote rows");
    }
    assert_eq!(
        app.record("Payment", &free).await["OrderPaymentSummaryId"],
        Value::Null
    );
    // The free payment on its own is fine.
    let (status, value) = app
        .post(
            &ops_path(),
            &json!({"orderSummaryId": order.id, "paymentIds": [free]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
}

backend_tests!(
    payment_summary_rolls_up_its_payments,
    payment_summary_rejections
);

// ---------------------------------------------------------------------------------------
// PATCH /sobjects/ProcessException/{id}
// ---------------------------------------------------------------------------------------

async fn resolving_a_process_exception_lowers_the_active_count(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let w = worked_order(&app).await;
    let count = |os: Value| os["ActiveProcessExceptionCount"].clone();
    assert_eq!(count(app.record("OrderSummary", &w.order.id).await), 1);
    let exceptions = app.exceptions_of(&w.order.id).await;
    assert_eq!(exceptions.len(), 1);
    let pe = exceptions[0]["Id"].as_str().expect("id").to_string();
    let path = format!("{V}/sobjects/ProcessException/{pe}");

    for (body, code, field) in [
        (json!({"Message": "done"}), "INVALID_FIELD", Some("Message")),
        (
            json!({"Status": "Resolved", "Priority": "High"}),
            "INVALID_FIELD",
            Some("Priority"),
        ),
        (
            json!({"Status": "Fixed"}),
            "FIELD_INTEGRITY_EXCEPTION",
            Some("Status"),
        ),
        (json!({}), "REQUIRED_FIELD_MISSING", Some("Status")),
        (
            json!({"Status": null}),
            "REQUIRED_FIELD_MISSING",
            Some("Status"),
        ),
    ] {
        let (status, value) = app
            .call(Method::PATCH, &path, Some(&body.to_string()), &[])
            .await;
        let fields = field.map(|f| vec![f]);
        assert_plain_error(status, &value, BAD_REQUEST, code, fields.as_deref());
        assert_eq!(app.record("ProcessException", &pe).await["Status"], "New");
        assert_eq!(count(app.record("OrderSummary", &w.order.id).await), 1);
    }

    let answer = raw(
        &app,
        Method::PATCH,
        &path,
        Some(br#"{"Status": "Resolved"}"#.to_vec()),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    assert_eq!(answer.text, "");
    assert_eq!(
        app.record("ProcessException", &pe).await["Status"],
        "Resolved"
    );
    assert_eq!(count(app.record("OrderSummary", &w.order.id).await), 0);
    // Resolving again changes nothing; reopening (Triaged is active) counts it again.
    let (status, _) = app
        .call(Method::PATCH, &path, Some(r#"{"Status": "Ignored"}"#), &[])
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(count(app.record("OrderSummary", &w.order.id).await), 0);
    let (status, _) = app
        .call(Method::PATCH, &path, Some(r#"{"status": "triaged"}"#), &[])
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.record("ProcessException", &pe).await["Status"],
        "Triaged"
    );
    assert_eq!(count(app.record("OrderSummary", &w.order.id).await), 1);

    // Unknown exception, other types.
    let missing = SfId::generate(ObjectType::ProcessException).into_string();
    let (status, value) = app
        .call(
            Method::PATCH,
            &format!("{V}/sobjects/ProcessException/{missing}"),
            Some(r#"{"Status": "Resolved"}"#),
            &[],
        )
        .await;
    assert_plain_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND", None);
    let (status, value) = app
        .call(
            Method::PATCH,
            &format!("{V}/sobjects/CreditMemo/{}", w.credit_memo),
            Some(r#"{"Status": "Canceled"}"#),
            &[],
        )
        .await;
    assert_plain_error(status, &value, BAD_REQUEST, "INVALID_TYPE", None);
    assert_eq!(
        app.record("CreditMemo", &w.credit_memo).await["Status"],
        "Posted"
    );
}

backend_tests!(resolving_a_process_exception_lowers_the_active_count);

// ---------------------------------------------------------------------------------------
// Versions, resources, health
// ---------------------------------------------------------------------------------------

async fn version_and_resource_lists(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let answer = raw(&app, Method::GET, "/services/data", None, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type(), JSON_UTF8);
    let list = answer.json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 20);
    for (entry, major) in list.iter().zip(48..=67) {
        let keys: Vec<&String> = entry.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["label", "url", "version"]);
        assert_eq!(entry["version"], format!("{major}.0"));
        assert_eq!(entry["url"], format!("/services/data/v{major}.0"));
        assert!(entry["label"].as_str().is_some_and(|l| !l.is_empty()));
    }
    assert_eq!(list[0]["label"], "Spring '20");
    assert_eq!(list[19]["label"], "Summer '26");

    for major in [48, 58, 67] {
        let (status, value) = app.get(&format!("/services/data/v{major}.0")).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        assert_eq!(
            value["sobjects"],
            format!("/services/data/v{major}.0/sobjects")
        );
        assert!(value.as_object().is_some_and(|o| !o.is_empty()));
    }
    let order = app.order("USD", &["100.00"]).await;
    for version in ["v47.0", "v68.0", "v58", "58.0"] {
        let (status, value) = app.get(&format!("/services/data/{version}")).await;
        assert_plain_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND", None);
        let (status, value) = app
            .get(&format!(
                "/services/data/{version}/sobjects/OrderSummary/{}",
                order.id
            ))
            .await;
        assert_plain_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND", None);
        let (status, value) = app
            .post(
                &format!("/services/data/{version}/sobjects/OrderSummary"),
                &json!({"OrderNumber": "V"}),
            )
            .await;
        assert_plain_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND", None);
    }
    // The record's url names the version it was read with.
    let (status, value) = app
        .get(&format!(
            "/services/data/v48.0/sobjects/OrderSummary/{}",
            order.id
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        value["attributes"]["url"],
        format!("/services/data/v48.0/sobjects/OrderSummary/{}", order.id)
    );

    for path in ["/healthz", "/readyz"] {
        let answer = raw(&app, Method::GET, path, None, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.content_type(), JSON_UTF8);
        assert_eq!(answer.json(), json!({"status": "ok"}));
    }
}

backend_tests!(version_and_resource_lists);

// ---------------------------------------------------------------------------------------
// Odd input never yields a 5xx
// ---------------------------------------------------------------------------------------

async fn odd_input_never_answers_5xx(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let w = worked_order(&app).await;
    let pe = app.exceptions_of(&w.order.id).await[0]["Id"]
        .as_str()
        .expect("id")
        .to_string();
    let huge = "x".repeat(1 << 20);
    let mut bodies: Vec<Vec<u8>> = [
        String::new(),
        "null".to_string(),
        "[]".to_string(),
        "{}".to_string(),
        "{".to_string(),
        r#"{"OrderNumber": 5}"#.to_string(),
        r#"{"OrderNumber": {}}"#.to_string(),
        r#"{"Status": ["Resolved"]}"#.to_string(),
        r#"{"orderSummaryId": 5, "paymentIds": [5]}"#.to_string(),
        format!(
            r#"{{"orderSummaryId": "{}", "paymentIds": [null]}}"#,
            order.id
        ),
        "[".repeat(100_000),
        "{\"a\":".repeat(10_000),
        format!(
            r#"{{"PaymentGatewayId": "{}", "Amount": 1e400}}"#,
            order.gateway
        ),
        format!(
            r#"{{"PaymentGatewayId": "{}", "Amount": "1e999999999999999999999"}}"#,
            order.gateway
        ),
        format!(
            r#"{{"PaymentGatewayId": "{}", "Amount": 92233720368547758.08}}"#,
            order.gateway
        ),
        format!(r#"{{"OrderNumber": "{huge}"}}"#),
        format!(r#"{{"{huge}": 1}}"#),
        format!(r#"{{"Status": "{huge}"}}"#),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    bodies.push(b"{\"OrderNumber\": \"\xff\"}".to_vec());
    bodies.push(format!(r#"{{"OrderNumber": "{}"}}"#, "y".repeat(3 << 20)).into_bytes());
    let targets = [
        (Method::POST, format!("{V}/sobjects/Payment")),
        (Method::POST, format!("{V}/sobjects/OrderSummary")),
        (Method::POST, ops_path()),
        (Method::PATCH, format!("{V}/sobjects/ProcessException/{pe}")),
    ];
    let before = ingest_rows(&app).await;
    for (method, path) in &targets {
        for body in &bodies {
            let shown: String = String::from_utf8_lossy(body).chars().take(60).collect();
            let answer = raw(&app, method.clone(), path, Some(body.clone()), &[]).await;
            assert!(
                answer.status.is_client_error(),
                "{method} {path} {shown:?} → {} {}",
                answer.status,
                answer.text.chars().take(300).collect::<String>()
            );
            assert_eq!(
                answer.content_type(),
                JSON_UTF8,
                "{method} {path} {shown:?}"
            );
            let value = answer.json();
            assert!(value[0]["errorCode"].is_string(), "{value}");
        }
    }
    assert_eq!(ingest_rows(&app).await, before);
    assert_eq!(app.record("ProcessException", &pe).await["Status"], "New");
    // Odd paths and query strings answer JSON too.
    for path in [
        format!("{V}/sobjects/Payment/%FF"),
        format!("/services/data/%FF/sobjects/Payment/{}", order.payments[0]),
        format!(
            "{V}/sobjects/Payment/{}?fields=Status&fields=Amount",
            order.payments[0]
        ),
        format!("{V}/sobjects/Payment/{}?fields=%FF", order.payments[0]),
        format!("{V}/sobjects/{}/{}", "P".repeat(10_000), order.payments[0]),
    ] {
        let answer = raw(&app, Method::GET, &path, None, &[]).await;
        assert!(answer.status.is_client_error(), "{path}: {}", answer.status);
        assert_eq!(answer.content_type(), JSON_UTF8, "{path}: {}", answer.text);
        assert!(answer.json()[0]["errorCode"].is_string());
    }
}

/// Regression: axum's own extractor rejections (body too large, undecodable path,
/// malformed query string) were answered in plain text, not the Salesforce JSON shape.
async fn extractor_rejections_answer_salesforce_json(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let payment = &order.payments[0];
    let big = format!(r#"{{"OrderNumber": "{}"}}"#, "y".repeat(3 << 20)).into_bytes();
    let cases = [
        (
            Method::POST,
            format!("{V}/sobjects/OrderSummary"),
            Some(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "EXCEEDED_MAX_SIZE_REQUEST",
        ),
        (
            Method::POST,
            ops_path(),
            Some(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "EXCEEDED_MAX_SIZE_REQUEST",
        ),
        (
            Method::PATCH,
            format!(
                "{V}/sobjects/ProcessException/{}",
                SfId::generate(ObjectType::ProcessException)
            ),
            Some(big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "EXCEEDED_MAX_SIZE_REQUEST",
        ),
        (
            Method::GET,
            format!("{V}/sobjects/Payment/%FF"),
            None,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::GET,
            "/services/data/v%FF.0".to_string(),
            None,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::POST,
            format!("{V}/sobjects/%FF"),
            Some(b"{}".to_vec()),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::GET,
            format!("{V}/sobjects/Payment/{payment}?fields=Status&fields=Amount"),
            None,
            BAD_REQUEST,
            "MALFORMED_QUERY",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let answer = raw(&app, method.clone(), &path, body, &[]).await;
        assert_eq!(
            answer.content_type(),
            JSON_UTF8,
            "{method} {path}: {}",
            answer.text
        );
        assert_plain_error(answer.status, &answer.json(), status, code, None);
    }
    assert_eq!(app.scalar("SELECT COUNT(*) FROM order_summaries").await, 1);
}

backend_tests!(
    odd_input_never_answers_5xx,
    extractor_rejections_answer_salesforce_json
);
