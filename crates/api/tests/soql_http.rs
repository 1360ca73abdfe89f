//! `GET …/query?q=` (SOQL) over the in-process router, on SQLite and PostgreSQL: records
//! made by real ensure-refunds flows found by reference, parent path and IN list; ORDER BY,
//! LIMIT and the 2000-record batch; money in currencies of 0, 2 and 3 decimals; nulls and
//! datetimes; the URL spellings real clients send; every error; injection attempts.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{assert_plain_error, raw, JSON_UTF8};
use refunds_domain::{ObjectType, SfId};
use refunds_store::records::{self, Value as Stored};
use refunds_testkit::{backend_tests, Backend, Order, TestApp, V};
use serde_json::{json, Value};

/// Form-style encoding as simple-salesforce and rustforce send it: `+` for a space.
fn encode(soql: &str) -> String {
    let mut out = String::new();
    for b in soql.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Runs a query that must succeed; checks the answer's shape and that `totalSize`
/// counts `records`, and answers the body.
async fn query_at(app: &TestApp, path: &str) -> Value {
    let answer = raw(app, Method::GET, path, None, &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
    assert_eq!(answer.content_type(), JSON_UTF8);
    let body = answer.json();
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    if body["done"] == true {
        assert_eq!(keys, ["totalSize", "done", "records"], "{body}");
    } else {
        assert_eq!(
            keys,
            ["totalSize", "done", "nextRecordsUrl", "records"],
            "{body}"
        );
    }
    let records = body["records"].as_array().expect("records");
    if body["done"] == true {
        assert_eq!(body["totalSize"], records.len(), "{body}");
    }
    for record in records {
        let keys: Vec<&String> = record.as_object().expect("record").keys().collect();
        assert_eq!(keys[0], "attributes", "{record}");
    }
    body
}

async fn query(app: &TestApp, soql: &str) -> Value {
    query_at(app, &format!("{V}/query?q={}", encode(soql))).await
}

fn ids(body: &Value) -> Vec<String> {
    body["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["Id"].as_str().expect("Id").to_string())
        .collect()
}

async fn query_ids(app: &TestApp, soql: &str) -> Vec<String> {
    ids(&query(app, soql).await)
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

async fn rejected(app: &TestApp, soql: &str, code: &str) -> String {
    let (status, value) = app.get(&format!("{V}/query?q={}", encode(soql))).await;
    assert_plain_error(status, &value, StatusCode::BAD_REQUEST, code, None);
    value[0]["message"].as_str().expect("message").to_string()
}

fn num(text: &str) -> Value {
    Value::Number(text.parse().expect("number"))
}

/// Ensures `amount` for `order`, settles, and answers the refunds' ids.
async fn refunded(app: &TestApp, order: &Order, amount: &str) -> Vec<String> {
    let op = app
        .ensure(order, json!({"excessFundsAmount": num(amount)}))
        .await;
    app.settle().await;
    app.refunds_of(&op)
        .await
        .iter()
        .map(|r| r["Id"].as_str().expect("Id").to_string())
        .collect()
}

async fn refunds_by_reference_and_the_answer_shape(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.order("USD", &["100.00"]).await;
    let b = app.order("USD", &["100.00"]).await;
    let mut of_a = refunded(&app, &a, "30.00").await;
    of_a.extend(refunded(&app, &a, "12.34").await);
    let of_b = refunded(&app, &b, "5.00").await;
    assert_eq!((of_a.len(), of_b.len()), (2, 1));

    let soql = format!(
        "SELECT Id, Amount, Status, OrderPaymentSummaryId, CreatedDate FROM Refund \
         WHERE OrderPaymentSummaryId = '{}' ORDER BY Amount DESC",
        a.summaries[0]
    );
    let body = query(&app, &soql).await;
    assert_eq!(
        (body["totalSize"].clone(), body["done"].clone()),
        (json!(2), json!(true))
    );
    assert_eq!(ids(&body), of_a, "largest first");
    let record = &body["records"][0];
    let keys: Vec<&String> = record.as_object().expect("record").keys().collect();
    assert_eq!(
        keys,
        [
            "attributes",
            "Id",
            "Amount",
            "Status",
            "OrderPaymentSummaryId",
            "CreatedDate"
        ]
    );
    assert_eq!(
        record["attributes"],
        json!({"type": "Refund", "url": format!("{V}/sobjects/Refund/{}", of_a[0])})
    );
    assert_eq!(record["Amount"].to_string(), "30.00");
    assert_eq!(body["records"][1]["Amount"].to_string(), "12.34");
    // Every field as the sObject resource renders it.
    let full = app.record("Refund", &of_a[0]).await;
    for key in ["Amount", "Status", "OrderPaymentSummaryId", "CreatedDate"] {
        assert_eq!(record[key], full[key], "{key}");
    }
    // A 15-char id names the same record; keywords and names are case-insensitive.
    let soql = format!(
        "select id from REFUND where orderpaymentsummaryid = '{}'",
        &a.summaries[0][..15]
    );
    assert_eq!(set(&query_ids(&app, &soql).await), set(&of_a));
    // Without Id in the SELECT list the URL still names the record.
    let body = query(
        &app,
        &format!("SELECT Status FROM Refund WHERE Id = '{}'", of_b[0]),
    )
    .await;
    let keys: Vec<&String> = body["records"][0]
        .as_object()
        .expect("record")
        .keys()
        .collect();
    assert_eq!(keys, ["attributes", "Status"]);
    assert_eq!(
        body["records"][0]["attributes"]["url"],
        format!("{V}/sobjects/Refund/{}", of_b[0])
    );
    // No match is an empty answer, not an error.
    let body = query(&app, "SELECT Id FROM Refund WHERE Status = 'Nope'").await;
    assert_eq!(body, json!({"totalSize": 0, "done": true, "records": []}));
    // The version's resource list names the query resource.
    let (_, resources) = app.get(V).await;
    assert_eq!(resources["query"], format!("{V}/query"));
}

async fn gateway_logs_through_the_parent_path(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let other = app.order("USD", &["100.00"]).await;
    let ok = refunded(&app, &order, "10.00").await;
    // Cents of .91 make the Simulator decline.
    let declined = refunded(&app, &order, "10.91").await;
    refunded(&app, &other, "10.00").await;
    let mut logs = app.logs_of(&ok[0]).await;
    logs.extend(app.logs_of(&declined[0]).await);
    let ok_logs: Vec<String> = logs
        .iter()
        .filter(|l| l["GatewayMessage"] == "Refund succeeded.")
        .map(|l| l["Id"].as_str().expect("Id").to_string())
        .collect();
    assert!(
        !ok_logs.is_empty() && ok_logs.len() < logs.len(),
        "{logs:?}"
    );

    // The Adyen end-to-end test's query.
    let soql = format!(
        "SELECT Id, GatewayMessage FROM PaymentGatewayLog WHERE OrderPaymentSummary.OrderSummaryId = '{}' \
         AND GatewayMessage = 'Refund succeeded.'",
        order.id
    );
    let body = query(&app, &soql).await;
    assert_eq!(set(&ids(&body)), set(&ok_logs));
    for record in body["records"].as_array().expect("records") {
        assert_eq!(record["GatewayMessage"], "Refund succeeded.");
    }
    // Strings compare case-insensitively, as in SOQL.
    let soql = soql.replace("'Refund succeeded.'", "'REFUND SUCCEEDED.'");
    assert_eq!(set(&query_ids(&app, &soql).await), set(&ok_logs));

    // Parent fields in the SELECT list nest under the relationship, as Salesforce does.
    let soql = format!(
        "SELECT OrderPaymentSummary.OrderSummaryId, Id, ReferencedEntity.Amount, \
         ReferencedEntity.Status, OrderPaymentSummary.CapturedAmount FROM PaymentGatewayLog \
         WHERE ReferencedEntityId = '{}' ORDER BY ReferencedEntity.CreatedDate LIMIT 1",
        declined[0]
    );
    let body = query(&app, &soql).await;
    let record = &body["records"][0];
    let keys: Vec<&String> = record.as_object().expect("record").keys().collect();
    assert_eq!(
        keys,
        [
            "attributes",
            "OrderPaymentSummary",
            "Id",
            "ReferencedEntity"
        ]
    );
    assert_eq!(
        record["OrderPaymentSummary"],
        json!({
            "attributes": {"type": "OrderPaymentSummary", "url": format!("{V}/sobjects/OrderPaymentSummary/{}", order.summaries[0])},
            "OrderSummaryId": order.id,
            "CapturedAmount": num("100.00"),
        })
    );
    assert_eq!(
        record["ReferencedEntity"],
        json!({
            "attributes": {"type": "Refund", "url": format!("{V}/sobjects/Refund/{}", declined[0])},
            "Amount": num("10.91"),
            "Status": "Canceled",
        })
    );

    // A missing parent renders as null and matches `Parent.Field = null`.
    let loose = app
        .create(
            "Payment",
            json!({"PaymentGatewayId": order.gateway, "Amount": num("1.00")}),
        )
        .await;
    let body = query(
        &app,
        "SELECT Id, OrderPaymentSummary.OrderSummaryId FROM Payment WHERE OrderPaymentSummary.OrderSummaryId = null",
    )
    .await;
    assert_eq!(ids(&body), [loose]);
    assert_eq!(body["records"][0]["OrderPaymentSummary"], Value::Null);
    let soql = format!(
        "SELECT Id FROM Payment WHERE OrderPaymentSummary.OrderSummaryId = '{}'",
        order.id
    );
    assert_eq!(query_ids(&app, &soql).await, order.payments);
}

async fn in_lists_order_by_and_limit(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["500.00"]).await;
    let mut made = Vec::new();
    for amount in ["20.00", "5.91", "40.00", "10.00"] {
        made.extend(refunded(&app, &order, amount).await);
    }
    let by_amount = |ids: &[usize]| ids.iter().map(|&i| made[i].clone()).collect::<Vec<_>>();
    let soql = "SELECT Id, Amount FROM Refund WHERE Status IN ('Processed', 'Canceled') ORDER BY Amount DESC";
    assert_eq!(query_ids(&app, soql).await, by_amount(&[2, 0, 3, 1]));
    let soql = "SELECT Id FROM Refund WHERE Status IN ('processed') ORDER BY Amount";
    assert_eq!(query_ids(&app, soql).await, by_amount(&[3, 0, 2]));
    let soql = "SELECT Id FROM Refund WHERE Status IN ('Canceled', 'Nope')";
    assert_eq!(query_ids(&app, soql).await, by_amount(&[1]));
    let soql = format!(
        "SELECT Id FROM Refund WHERE Id IN ('{}', '{}') ORDER BY CreatedDate DESC",
        made[0], made[3]
    );
    assert_eq!(query_ids(&app, &soql).await, by_amount(&[3, 0]));

    let body = query(&app, "SELECT Id FROM Refund ORDER BY Amount DESC LIMIT 2").await;
    assert_eq!(
        (body["totalSize"].clone(), body["done"].clone()),
        (json!(2), json!(true))
    );
    assert_eq!(ids(&body), by_amount(&[2, 0]));
    assert_eq!(
        query_ids(&app, "SELECT Id FROM Refund LIMIT 0").await,
        Vec::<String>::new()
    );
    // Without ORDER BY, creation order.
    assert_eq!(query_ids(&app, "SELECT Id FROM Refund").await, made);

    // Text sorts case-insensitively by code point; nulls come first either way.
    for (number, url) in [
        ("b", None),
        ("A", Some("http://b")),
        ("c", None),
        ("B2", Some("http://a")),
    ] {
        app.create("OrderSummary", json!({"OrderNumber": number}))
            .await;
        let mut gateway = json!({"PaymentGatewayName": number, "ProviderType": "Simulator"});
        if let Some(url) = url {
            gateway["BaseUrl"] = json!(url);
        }
        app.gateway(gateway).await;
    }
    let names = |body: &Value, key: &str| -> Vec<String> {
        body["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r[key].as_str().unwrap_or("null").to_string())
            .collect()
    };
    let body = query(
        &app,
        "SELECT OrderNumber FROM OrderSummary WHERE OrderNumber != 'T-1' ORDER BY OrderNumber",
    )
    .await;
    assert_eq!(names(&body, "OrderNumber"), ["A", "b", "B2", "c"]);
    let body = query(
        &app,
        "SELECT OrderNumber FROM OrderSummary WHERE OrderNumber != 'T-1' ORDER BY OrderNumber DESC",
    )
    .await;
    assert_eq!(names(&body, "OrderNumber"), ["c", "B2", "b", "A"]);
    let body = query(&app, "SELECT PaymentGatewayName, BaseUrl FROM PaymentGateway WHERE PaymentGatewayName IN ('A', 'b', 'c', 'B2') ORDER BY BaseUrl").await;
    assert_eq!(names(&body, "PaymentGatewayName"), ["b", "c", "B2", "A"]);
    let body = query(&app, "SELECT PaymentGatewayName FROM PaymentGateway WHERE PaymentGatewayName IN ('A', 'b', 'c', 'B2') ORDER BY BaseUrl DESC").await;
    assert_eq!(names(&body, "PaymentGatewayName"), ["b", "c", "A", "B2"]);
}

/// `GrandTotalAmount` in minor units of each row's currency: a literal means the same
/// amount of money in every currency, and 10.5 is no whole number of yen.
async fn money_in_usd_jpy_and_bhd(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let mut made = Vec::new();
    for (currency, amount) in [
        ("USD", "10.50"),
        ("USD", "10.49"),
        ("USD", "10.51"),
        ("JPY", "10"),
        ("JPY", "11"),
        ("JPY", "1050"),
        ("BHD", "10.500"),
    ] {
        let id = app.create("OrderSummary", json!({"OrderNumber": "M", "CurrencyIsoCode": currency, "GrandTotalAmount": num(amount)})).await;
        made.push(id);
    }
    let pick = |is: &[usize]| set(&is.iter().map(|&i| made[i].clone()).collect::<Vec<_>>());
    let cases: &[(&str, &[usize])] = &[
        ("= 10.5", &[0, 6]),
        ("= 10.50", &[0, 6]),
        ("> 10.5", &[2, 4, 5]),
        (">= 10.5", &[0, 2, 4, 5, 6]),
        ("< 10.5", &[1, 3]),
        ("<= 10.49", &[1, 3]),
        ("< 10.499", &[1, 3]),
        ("> 10.499", &[0, 2, 4, 5, 6]),
        ("= 1050", &[5]),
        ("!= 10.5", &[1, 2, 3, 4, 5]),
        ("= 10.005", &[]),
        ("> 99999999999999999999999", &[]),
        ("< 99999999999999999999999", &[0, 1, 2, 3, 4, 5, 6]),
        ("> -5", &[0, 1, 2, 3, 4, 5, 6]),
        ("IN (10, 10.50)", &[0, 3, 6]),
    ];
    for (condition, want) in cases {
        let soql = format!("SELECT Id FROM OrderSummary WHERE GrandTotalAmount {condition}");
        assert_eq!(
            set(&query_ids(&app, &soql).await),
            pick(want),
            "{condition}"
        );
    }
    // Ordered by value, not by minor units; rendered with each currency's decimals.
    let body = query(
        &app,
        "SELECT Id, GrandTotalAmount, CurrencyIsoCode FROM OrderSummary ORDER BY GrandTotalAmount",
    )
    .await;
    let order: Vec<usize> = ids(&body)
        .iter()
        .map(|id| made.iter().position(|m| m == id).expect("made"))
        .collect();
    assert_eq!(order, [3, 1, 0, 6, 2, 4, 5]);
    let amounts: Vec<String> = body["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["GrandTotalAmount"].to_string())
        .collect();
    assert_eq!(
        amounts,
        ["10", "10.49", "10.50", "10.500", "10.51", "11", "1050"]
    );

    // Refunds made by a JPY flow compare in yen.
    let order = app.order("JPY", &["5000"]).await;
    let refund = refunded(&app, &order, "1200").await;
    assert_eq!(
        query_ids(&app, "SELECT Id FROM Refund WHERE Amount = 1200").await,
        refund
    );
    assert!(
        query_ids(&app, "SELECT Id FROM Refund WHERE Amount = 12.00")
            .await
            .is_empty()
    );
    let soql = "SELECT Id, OrderPaymentSummary.AvailableToRefundAmount FROM Refund WHERE OrderPaymentSummary.AvailableToRefundAmount = 3800";
    let body = query(&app, soql).await;
    assert_eq!(ids(&body), refund);
    assert_eq!(
        body["records"][0]["OrderPaymentSummary"]["AvailableToRefundAmount"].to_string(),
        "3800"
    );
}

async fn nulls_and_datetimes(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let mut with_url = Vec::new();
    let mut without = Vec::new();
    for (n, url) in [Some("http://a"), None, Some("http://b"), None]
        .into_iter()
        .enumerate()
    {
        let mut gateway =
            json!({"PaymentGatewayName": format!("g{n}"), "ProviderType": "Simulator"});
        if let Some(url) = url {
            gateway["BaseUrl"] = json!(url);
        }
        let id = app.gateway(gateway).await;
        if url.is_some() {
            with_url.push(id)
        } else {
            without.push(id)
        }
    }
    assert_eq!(
        query_ids(&app, "SELECT Id FROM PaymentGateway WHERE BaseUrl = null").await,
        without
    );
    assert_eq!(
        query_ids(&app, "SELECT Id FROM PaymentGateway WHERE BaseUrl != NULL").await,
        with_url
    );
    // SOQL's `!=` keeps rows whose field is null.
    let mut not_a = without.clone();
    not_a.push(with_url[1].clone());
    assert_eq!(
        set(&query_ids(
            &app,
            "SELECT Id FROM PaymentGateway WHERE BaseUrl != 'http://a'"
        )
        .await),
        set(&not_a)
    );
    let soql = "SELECT Id FROM PaymentGateway WHERE BaseUrl IN ('http://b', null) AND PaymentGatewayName != 'g1'";
    assert_eq!(
        set(&query_ids(&app, soql).await),
        set(&[with_url[1].clone(), without[1].clone()])
    );
    let body = query(
        &app,
        &format!(
            "SELECT BaseUrl, MerchantAccount FROM PaymentGateway WHERE Id = '{}'",
            without[0]
        ),
    )
    .await;
    assert_eq!(body["records"][0]["BaseUrl"], Value::Null);

    // Datetime literals in SOQL's forms, including the form this API renders.
    let created = app.record("PaymentGateway", &with_url[1]).await["CreatedDate"]
        .as_str()
        .expect("CreatedDate")
        .to_string();
    let soql = format!("SELECT Id, CreatedDate FROM PaymentGateway WHERE CreatedDate = {created}");
    let body = query(&app, &soql).await;
    assert!(ids(&body).contains(&with_url[1]));
    assert!(body["records"]
        .as_array()
        .expect("records")
        .iter()
        .all(|r| r["CreatedDate"] == created.as_str()));
    let all = query_ids(&app, "SELECT Id FROM PaymentGateway").await;
    assert_eq!(
        query_ids(
            &app,
            "SELECT Id FROM PaymentGateway WHERE CreatedDate > 2000-01-01T00:00:00Z"
        )
        .await,
        all
    );
    assert_eq!(
        query_ids(
            &app,
            "SELECT Id FROM PaymentGateway WHERE CreatedDate > 2000-01-01T01:00:00+01:00"
        )
        .await,
        all
    );
    assert!(query_ids(
        &app,
        "SELECT Id FROM PaymentGateway WHERE CreatedDate < 2000-01-01T00:00:00.000+0000"
    )
    .await
    .is_empty());
}

async fn the_url_forms_clients_send(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let made = refunded(&app, &order, "10.00").await;
    let soql = format!(
        "SELECT Id, Status FROM Refund WHERE Status = 'Processed' AND OrderPaymentSummaryId = '{}'",
        order.summaries[0]
    );
    let want = query(&app, &soql).await;
    assert_eq!(ids(&want), made);
    let forms = [
        // simple-salesforce, rustforce: trailing slash, `+` for spaces.
        format!("{V}/query/?q={}", encode(&soql)),
        // jsforce: no slash, %20.
        format!("{V}/query?q={}", encode(&soql).replace('+', "%20")),
        // newman: literal `+`, unencoded `,` and `'`.
        format!("{V}/query?q={}", soql.replace(' ', "+")),
    ];
    for path in forms {
        assert_eq!(query_at(&app, &path).await, want, "{path}");
    }
    // A literal `+` must be sent as %2B (a `+` is a space).
    let body = query_at(&app, &format!("{V}/query/?q=SELECT+Id+FROM+Refund+WHERE+CreatedDate+%3E+2000-01-01T00:00:00.000%2B0000")).await;
    assert_eq!(ids(&body), made);
}

async fn more_than_one_batch(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let mut tx = app.db.begin().await.expect("begin");
    for n in 0..2001 {
        let id = SfId::generate(ObjectType::PaymentGateway).into_string();
        let values = [
            ("id", Stored::Text(id)),
            ("payment_gateway_name", Stored::Text(format!("bulk {n}"))),
            ("provider_type", Stored::Text("Simulator".into())),
            ("status", Stored::Text("Active".into())),
            ("created_date", Stored::Int(0)),
            ("last_modified_date", Stored::Int(0)),
        ];
        records::insert(&mut tx, ObjectType::PaymentGateway, &values)
            .await
            .expect("insert");
    }
    tx.commit().await.expect("commit");
    let cases = [
        ("", 2001, false, 2000),
        (" LIMIT 5000", 2001, false, 2000),
        (" LIMIT 2000", 2000, true, 2000),
        (" LIMIT 7", 7, true, 7),
    ];
    for (limit, total, done, returned) in cases {
        let body = query(&app, &format!("SELECT Id FROM PaymentGateway{limit}")).await;
        assert_eq!(
            (body["totalSize"].clone(), body["done"].clone()),
            (json!(total), json!(done)),
            "{limit}"
        );
        assert_eq!(
            body["records"].as_array().expect("records").len(),
            returned,
            "{limit}"
        );
    }

    // Following nextRecordsUrl answers every record once, in the query's order.
    let all = query_ids(&app, "SELECT Id FROM PaymentGateway ORDER BY Id").await;
    let (pages, ids) = every_batch(&app, "SELECT Id FROM PaymentGateway", &[]).await;
    assert_eq!(pages, [(2001, 2000), (2001, 1)]);
    assert_eq!(ids.len(), 2001);
    assert_eq!(set(&ids).len(), 2001, "no record twice");
    assert_eq!(
        &ids[..2000],
        &all[..],
        "the first batch is the query's first rows"
    );

    // A smaller batch on request (kept within 200..=2000), across a LIMIT and a
    // descending order on another field.
    let soql = "SELECT Id, PaymentGatewayName FROM PaymentGateway ORDER BY PaymentGatewayName DESC LIMIT 450";
    let small = [("Sforce-Query-Options", "batchSize=1")];
    let (pages, ids) = every_batch(&app, soql, &small).await;
    assert_eq!(pages, [(450, 200), (450, 200), (450, 50)]);
    let unpaged = query(&app, &soql.replace("450", "1000")).await;
    assert_eq!(ids, self::ids(&unpaged)[..450], "same rows, same order");
    let (pages, _) = every_batch(
        &app,
        "SELECT Id FROM PaymentGateway LIMIT 2001",
        &[("Sforce-Query-Options", "foo=bar, batchSize = 5000")],
    )
    .await;
    assert_eq!(pages, [(2001, 2000), (2001, 1)]);

    // The locator also works through queryAll, and the version of the path renders.
    let first = query_at(
        &app,
        &format!("{V}/queryAll?q={}", encode("SELECT Id FROM PaymentGateway")),
    )
    .await;
    let next = first["nextRecordsUrl"].as_str().expect("nextRecordsUrl");
    assert!(next.starts_with(&format!("{V}/query/01g")), "{next}");
    let other_version = next.replace(V, "/services/data/v50.0");
    let answer = raw(&app, Method::GET, &other_version, None, &[]).await;
    let body = answer.json();
    assert_eq!(
        (body["totalSize"].clone(), body["done"].clone()),
        (json!(2001), json!(true))
    );
    assert_eq!(
        body["records"][0]["attributes"]["url"]
            .as_str()
            .map(|u| u.starts_with("/services/data/v50.0/")),
        Some(true)
    );
}

/// Runs `soql` and follows `nextRecordsUrl` to the end: each batch's (totalSize, records),
/// and every Id in the order answered.
async fn every_batch(
    app: &TestApp,
    soql: &str,
    headers: &[(&str, &str)],
) -> (Vec<(u64, usize)>, Vec<String>) {
    let mut path = format!("{V}/query?q={}", encode(soql));
    let (mut pages, mut all) = (Vec::new(), Vec::new());
    loop {
        let answer = raw(app, Method::GET, &path, None, headers).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        let body = answer.json();
        let batch = ids(&body);
        pages.push((body["totalSize"].as_u64().expect("totalSize"), batch.len()));
        all.extend(batch);
        match body["nextRecordsUrl"].as_str() {
            Some(next) => {
                assert_eq!(body["done"], false, "{body}");
                path = next.to_string();
            }
            None => {
                assert_eq!(body["done"], true, "{body}");
                return (pages, all);
            }
        }
        assert!(pages.len() < 50, "the batches never end");
    }
}

async fn every_error_is_a_salesforce_error(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    for soql in [
        "garbage",
        "SELECT Id",
        "SELECT Id Refund",
        "SELECT Id FROM Refund WHERE Status = 'open",
        "SELECT Id FROM Refund LIMIT -1",
        "SELECT * FROM Refund",
        "SELECT Id FROM Refund WHERE Amount > null",
        "SELECT Id FROM Refund WHERE Amount = 'ten'",
        "SELECT Id, Id FROM Refund",
    ] {
        rejected(&app, soql, "MALFORMED_QUERY").await;
    }
    let message = rejected(&app, "SELECT Id, Foo FROM Refund", "INVALID_FIELD").await;
    assert_eq!(message, "No such column 'Foo' on entity 'Refund'");
    let message = rejected(
        &app,
        "SELECT Id FROM Refund WHERE Nope.Id = 'x'",
        "INVALID_FIELD",
    )
    .await;
    assert!(message.contains("relationship 'Nope'"), "{message}");
    let message = rejected(&app, "SELECT Id FROM Account", "INVALID_TYPE").await;
    assert_eq!(message, "sObject type 'Account' is not supported");
    rejected(
        &app,
        "SELECT Id FROM Refund WHERE Id = 'nope'",
        "INVALID_QUERY_FILTER_OPERATOR",
    )
    .await;
    for path in [
        format!("{V}/query"),
        format!("{V}/query/?q="),
        format!("{V}/query?q=+++"),
        format!("{V}/query?q=a&q=b"),
    ] {
        let (status, value) = app.get(&path).await;
        assert_plain_error(
            status,
            &value,
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            None,
        );
    }
    let (status, value) = app
        .get(&format!(
            "/services/data/v47.0/query?q={}",
            encode("SELECT Id FROM Refund")
        ))
        .await;
    assert_plain_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND", None);
    // A POSTed query is a form (`q=…`), not JSON; other methods are not allowed.
    let (status, value) = app.post(&format!("{V}/query"), &json!({})).await;
    assert_plain_error(
        status,
        &value,
        StatusCode::BAD_REQUEST,
        "MALFORMED_QUERY",
        None,
    );
    let (status, value) = app
        .call(Method::PUT, &format!("{V}/query"), Some("{}"), &[])
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{value}");

    // Locators that are not ours, or carry a batch size we never hand out.
    let locator =
        |payload: &str, offset: &str| format!("01g{}-{offset}", URL_SAFE_NO_PAD.encode(payload));
    for bad in [
        "01gD0000002HU6KIAW-2000".to_string(),
        "nope".to_string(),
        locator("2000:SELECT Id FROM Refund", ""),
        locator("2000:SELECT Id FROM Refund", "2e3"),
        locator("2000:SELECT Id FROM Refund", "99999999999999999999999"),
        locator("199:SELECT Id FROM Refund", "0").replacen("01g", "01h", 1),
        locator("199:SELECT Id FROM Refund", "0"),
        locator("2001:SELECT Id FROM Refund", "0"),
        locator("SELECT Id FROM Refund", "0"),
        format!(
            "01g{}-0",
            URL_SAFE_NO_PAD.encode([b'2', b'0', b'0', b':', 0xff])
        ),
    ] {
        let (status, value) = app.get(&format!("{V}/query/{bad}")).await;
        assert_plain_error(
            status,
            &value,
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            None,
        );
    }
    // A well-formed locator is still only a query: it is checked like one.
    let (status, value) = app
        .get(&format!(
            "{V}/query/{}",
            locator("200:SELECT Id FROM Account", "200")
        ))
        .await;
    assert_plain_error(
        status,
        &value,
        StatusCode::BAD_REQUEST,
        "INVALID_TYPE",
        None,
    );
    for options in ["batchSize=lots", "batchSize=", "batchSize=-5"] {
        let answer = raw(
            &app,
            Method::GET,
            &format!("{V}/query?q={}", encode("SELECT Id FROM Refund")),
            None,
            &[("Sforce-Query-Options", options)],
        )
        .await;
        assert_plain_error(
            answer.status,
            &answer.json(),
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            None,
        );
    }
}

async fn injection_attempts_find_nothing_and_change_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let made = refunded(&app, &order, "10.00").await;
    let count = || app.scalar("SELECT COUNT(*) FROM refunds");
    assert_eq!(count().await, 1);
    // Inside a (backslash-escaped) SOQL string the attack is just text to compare.
    for soql in [
        r"SELECT Id FROM Refund WHERE Status = 'x\' OR 1=1 --'",
        r"SELECT Id FROM Refund WHERE Status = '\'; DROP TABLE refunds; --'",
        r"SELECT Id FROM Refund WHERE Status IN ('\') OR (1=1', 'x')",
        r"SELECT Id FROM Refund WHERE ClientContext > 'x\'); DELETE FROM refunds; --'",
    ] {
        assert!(query_ids(&app, soql).await.is_empty(), "{soql}");
    }
    // Outside one it is not SOQL.
    for soql in [
        "SELECT Id FROM Refund WHERE Status = 'x'' OR 1=1 --'",
        "SELECT Id FROM Refund WHERE Status = ''; DROP TABLE refunds; --'",
        "SELECT Id FROM refunds; DROP TABLE refunds",
        "SELECT Id FROM Refund WHERE 1=1",
        "SELECT Id FROM Refund ORDER BY Amount; DROP TABLE refunds",
        "SELECT Id FROM Refund LIMIT 1; DROP TABLE refunds",
        "SELECT Id FROM Refund WHERE Status = 'x' OR Status = 'y' -- comment",
        "SELECT id, (SELECT 1) FROM Refund",
    ] {
        rejected(&app, soql, "MALFORMED_QUERY").await;
    }
    rejected(
        &app,
        "SELECT Id FROM Refund WHERE Id = '\\'; DROP TABLE refunds; --'",
        "INVALID_QUERY_FILTER_OPERATOR",
    )
    .await;
    rejected(&app, "SELECT Id FROM refunds", "INVALID_TYPE").await;
    rejected(
        &app,
        "SELECT amount FROM Refund WHERE reconcile_state = 'none'",
        "INVALID_FIELD",
    )
    .await;
    assert_eq!(count().await, 1);
    assert_eq!(query_ids(&app, "SELECT Id FROM Refund").await, made);
}

backend_tests!(
    refunds_by_reference_and_the_answer_shape,
    gateway_logs_through_the_parent_path,
    in_lists_order_by_and_limit,
    money_in_usd_jpy_and_bhd,
    nulls_and_datetimes,
    the_url_forms_clients_send,
    more_than_one_batch,
    every_error_is_a_salesforce_error,
    injection_attempts_find_nothing_and_change_nothing,
);
