//! Property tests of every input parser, through the router, on SQLite and PostgreSQL:
//! JSON bodies (ensure-refunds, sObject POST and PATCH, order-payment-summaries), ids,
//! money text, SOQL text, query locators and headers, with depth and size extremes.
//! Whatever the input: no panic, no 5xx, a JSON answer, and a refusal is the Salesforce
//! error shape and writes nothing.
//!
//! Each property runs `REFUNDS_PROPTEST_CASES` cases (default 200) from a seed printed
//! at its start (`property <name>: seed <hex>`); a failure panics with the seed and the
//! shrunk input. Replay it with that seed:
//!
//! ```sh
//! REFUNDS_PROPTEST_SEED=<hex> cargo test -p refunds-api --test parsers_prop <name>
//! ```

mod common;

use std::future::Future;

use axum::http::{HeaderValue, Method};
use common::{ledger, raw, Raw};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use refunds_domain::{ObjectType, SfId};
use refunds_testkit::{backend_tests, Backend, Order, TestApp, V};
use serde_json::{json, Map, Value};

fn cases() -> u32 {
    std::env::var("REFUNDS_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200)
}

/// The seed of this run: `REFUNDS_PROPTEST_SEED` (hex) or a fresh one, printed either way.
fn seed(name: &str) -> [u8; 32] {
    let mut seed = [0u8; 32];
    match std::env::var("REFUNDS_PROPTEST_SEED") {
        Ok(hex_seed) => {
            let bytes = hex::decode(hex_seed.trim()).expect("REFUNDS_PROPTEST_SEED is hex");
            assert_eq!(bytes.len(), 32, "REFUNDS_PROPTEST_SEED is 32 bytes of hex");
            seed.copy_from_slice(&bytes);
        }
        Err(_) => seed = rand::random(),
    }
    println!("property {name}: seed {}", hex::encode(seed));
    seed
}

/// Runs `check` on `cases()` inputs drawn from `strategy`, each inside the test's runtime.
fn property<S, F, Fut>(name: &str, strategy: S, check: F)
where
    S: Strategy,
    S::Value: Clone + std::fmt::Debug,
    F: Fn(S::Value) -> Fut,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let seed = seed(name);
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |input| handle.block_on(check(input)))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => {
            let input = format!("{input:?}");
            let shown: String = input.chars().take(2_000).collect();
            panic!(
                "property {name} failed (seed {}): {reason}\nminimal input ({} chars): {shown}",
                hex::encode(seed),
                input.chars().count()
            )
        }
        Err(TestError::Abort(reason)) => panic!("property {name} aborted: {reason}"),
    }
}

/// What every answer must be: below 500, JSON; a refusal is the plain error array (or
/// "Error with Output" for ensure-refunds) and, checked by the caller, writes nothing.
fn well_formed(answer: &Raw, with_output: bool) -> Result<bool, TestCaseError> {
    prop_assert!(
        answer.status.as_u16() < 500,
        "{}: {}",
        answer.status,
        answer.text
    );
    prop_assert!(
        answer.content_type().starts_with("application/json"),
        "{}: content type {:?}",
        answer.status,
        answer.content_type()
    );
    let body: Value = serde_json::from_str(&answer.text)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", answer.text)))?;
    if answer.status.is_success() {
        return Ok(true);
    }
    let items = body
        .as_array()
        .ok_or_else(|| TestCaseError::fail(format!("not an error array: {body}")))?;
    prop_assert_eq!(items.len(), 1, "{}", body);
    let code = items[0]["errorCode"].as_str().unwrap_or("");
    let message = items[0]["message"].as_str().unwrap_or("");
    prop_assert!(!code.is_empty() && !message.is_empty(), "{}", body);
    prop_assert!(!message.contains("panicked"), "{}", body);
    // (a refused token is refused before any resource, in the plain shape)
    if with_output && code != "INVALID_SESSION_ID" {
        prop_assert_eq!(
            &items[0]["output"]["errors"][0]["errorCode"],
            &json!(code),
            "{}",
            body
        );
    }
    Ok(false)
}

/// Every row and balance a request could change.
async fn written(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut out = ledger(app).await;
    for (name, table) in [
        ("order summaries", "order_summaries"),
        ("gateways", "payment_gateways"),
        ("payments", "payments"),
        ("payment summaries", "order_payment_summaries"),
        ("credit memos", "credit_memos"),
        ("invoices", "invoices"),
        ("exceptions", "process_exceptions"),
    ] {
        out.push((
            name,
            app.scalar(&format!("SELECT COUNT(*) FROM {table}")).await,
        ));
    }
    out
}

/// Sends one request; a refusal must have changed nothing.
async fn refused_changes_nothing(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
    with_output: bool,
) -> Result<(), TestCaseError> {
    if path.len() > MAX_URI {
        // Never reaches the router: hyper answers 414 (`server_http.rs` checks its body).
        return Ok(());
    }
    let before = written(app).await;
    let answer = raw(app, method, path, body, headers).await;
    if !well_formed(&answer, with_output)? {
        prop_assert_eq!(written(app).await, before, "{}: {}", path, answer.text);
    }
    Ok(())
}

/// hyper's (and the `http` crate's) longest request target.
const MAX_URI: usize = 65_534;

fn percent(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const KEYS: &[&str] = &[
    "creditMemoId",
    "excessFundsAmount",
    "isAllowPartial",
    "orderSummaryId",
    "paymentIds",
    "Status",
    "OrderNumber",
    "CurrencyIsoCode",
    "Amount",
    "PaymentGatewayId",
    "PaymentGatewayName",
    "ProviderType",
    "GatewayRefNumber",
    "ReferenceEntityId",
    "TotalAmountWithTax",
    "BaseUrl",
    "Id",
    "attributes",
];

fn id_text(mut known: Vec<String>) -> BoxedStrategy<String> {
    if known.is_empty() {
        known.push(SfId::generate(ObjectType::OrderSummary).into_string());
    }
    let prefixes = [
        "1Os", "0a3", "0aB", "0Xc", "3tt", "50g", "0g4", "0BO", "0Rf", "0xO", "zzz",
    ];
    prop_oneof![
        proptest::sample::select(known),
        (
            proptest::sample::select(prefixes.to_vec()),
            "[0-9A-Za-z]{12,15}"
        )
            .prop_map(|(p, rest)| format!("{p}{rest}")),
        "[0-9A-Za-z]{0,20}",
        ".{0,24}",
        Just(String::new()),
        Just("0".repeat(100_000)),
    ]
    .boxed()
}

fn money_text() -> BoxedStrategy<String> {
    prop_oneof![
        "-?[0-9]{0,25}(\\.[0-9]{0,12})?",
        "[0-9]{1,3}[eE][-+]?[0-9]{1,4}",
        Just("NaN".to_string()),
        Just("Infinity".to_string()),
        Just(" 1.00 ".to_string()),
        Just("١٢٣".to_string()),
        Just("9".repeat(10_000)),
        Just(format!("0.{}", "0".repeat(5_000))),
        ".{0,12}",
    ]
    .boxed()
}

/// JSON values with this API's keys and hostile leaves, a few levels deep.
fn json_value(ids: Vec<String>) -> BoxedStrategy<Value> {
    let number = money_text().prop_filter_map("a JSON number", |text| {
        serde_json::from_str::<Value>(&text)
            .ok()
            .filter(Value::is_number)
    });
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        number,
        money_text().prop_map(Value::String),
        id_text(ids).prop_map(Value::String),
        ".{0,16}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        3 => proptest::sample::select(KEYS.to_vec()).prop_map(str::to_string),
        1 => ".{0,10}",
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

/// Body bytes: JSON objects, other JSON, nesting extremes, duplicate keys, raw bytes and
/// truncated JSON.
fn body(ids: Vec<String>) -> BoxedStrategy<Vec<u8>> {
    let object = prop::collection::vec(
        (
            proptest::sample::select(KEYS.to_vec()),
            json_value(ids.clone()),
        ),
        0..6,
    )
    .prop_map(|kv| {
        let map: Map<String, Value> = kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Value::Object(map)
    });
    prop_oneof![
        4 => object.clone().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value(ids).prop_map(|v| v.to_string().into_bytes()),
        1 => (1usize..5_000).prop_map(|depth| {
            format!("{{\"Status\": {}1{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }),
        1 => (1usize..3_000).prop_map(|depth| {
            format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes()
        }),
        1 => (proptest::sample::select(KEYS.to_vec()), json_value(Vec::new()), json_value(Vec::new()))
            .prop_map(|(k, a, b)| format!("{{\"{k}\": {a}, \"{k}\": {b}}}").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => (object, any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            let at = cut.index(text.len().max(1));
            text[..at.min(text.len())].to_vec()
        }),
        1 => (1usize..200_000).prop_map(|n| format!("{{\"OrderNumber\": \"{}\"}}", "x".repeat(n)).into_bytes()),
    ]
    .boxed()
}

struct Fixture {
    app: TestApp,
    order: Order,
    ids: Vec<String>,
}

async fn fixture(backend: Backend) -> Option<Fixture> {
    let app = TestApp::start(backend).await?;
    let order = app.order("USD", &["50.00", "30.00"]).await;
    let memo = app.credit_memo(&order, "5.00").await;
    let mut ids = vec![order.id.clone(), order.gateway.clone(), memo];
    ids.extend(order.payments.iter().cloned());
    ids.extend(order.summaries.iter().cloned());
    Some(Fixture { app, order, ids })
}

async fn ensure_refunds_bodies(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let f = &f;
    let path = TestApp::ensure_path(&f.order.id);
    property("ensure_refunds_bodies", body(f.ids.clone()), |bytes| {
        refused_changes_nothing(&f.app, Method::POST, &path, Some(bytes), &[], true)
    });
}

async fn sobject_post_bodies(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let f = &f;
    let types = vec![
        "OrderSummary",
        "PaymentGateway",
        "Payment",
        "CreditMemo",
        "Invoice",
        "Refund",
        "BackgroundOperation",
        "Nope",
        "ordersummary",
    ];
    property(
        "sobject_post_bodies",
        (proptest::sample::select(types), body(f.ids.clone())),
        |(ty, bytes)| {
            let path = format!("{V}/sobjects/{ty}");
            async move {
                refused_changes_nothing(&f.app, Method::POST, &path, Some(bytes), &[], false).await
            }
        },
    );
}

async fn sobject_patch_bodies_and_ids(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let f = &f;
    let types = vec!["Refund", "ProcessException", "OrderSummary", "Payment"];
    property(
        "sobject_patch_bodies_and_ids",
        (
            proptest::sample::select(types),
            prop_oneof![
                Just(SfId::generate(ObjectType::Refund).into_string()),
                id_text(f.ids.clone())
            ],
            body(f.ids.clone()),
        ),
        |(ty, id, bytes)| {
            let path = format!("{V}/sobjects/{ty}/{}", percent(&id));
            async move {
                refused_changes_nothing(&f.app, Method::PATCH, &path, Some(bytes), &[], false).await
            }
        },
    );
}

async fn order_payment_summary_bodies(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let f = &f;
    let path = format!("{V}/commerce/order-management/order-payment-summaries");
    property(
        "order_payment_summary_bodies",
        body(f.ids.clone()),
        |bytes| refused_changes_nothing(&f.app, Method::POST, &path, Some(bytes), &[], false),
    );
}

async fn ids_and_money_text(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let f = &f;
    property(
        "ids_and_money_text",
        (
            id_text(f.ids.clone()),
            money_text(),
            proptest::sample::select(vec!["OrderSummary", "Refund", "CreditMemo", "x"]),
        ),
        |(id, money, ty)| {
            let ensure = TestApp::ensure_path(&percent(&id));
            let read = format!("{V}/sobjects/{ty}/{}?fields=Id", percent(&id));
            let real = TestApp::ensure_path(&f.order.id);
            let amount = json!({"excessFundsAmount": money}).to_string().into_bytes();
            let memo = json!({"creditMemoId": id}).to_string().into_bytes();
            async move {
                let empty = b"{\"excessFundsAmount\": 1.00}".to_vec();
                refused_changes_nothing(&f.app, Method::POST, &ensure, Some(empty), &[], true)
                    .await?;
                refused_changes_nothing(&f.app, Method::GET, &read, None, &[], false).await?;
                refused_changes_nothing(&f.app, Method::POST, &real, Some(amount), &[], true)
                    .await?;
                refused_changes_nothing(&f.app, Method::POST, &real, Some(memo), &[], true).await
            }
        },
    );
}

/// SOQL-ish text: keywords, names, operators, literals and punctuation in any order, and
/// deep or long forms past every bound.
fn soql() -> BoxedStrategy<String> {
    let token = proptest::sample::select(vec![
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDER",
        "BY",
        "DESC",
        "LIMIT",
        "Id",
        "Status",
        "Amount",
        "CreatedDate",
        "OrderPaymentSummary.Id",
        "Refund",
        "PaymentGatewayLog",
        "OrderSummary",
        "=",
        "!=",
        "<",
        ">=",
        "(",
        ")",
        ",",
        "'x'",
        "'",
        "null",
        "true",
        "10.5",
        "-1",
        "1e5",
        "2026-11-28T16:00:00Z",
        "2026-13-40T99:00:00Z",
        "99999999999999999999999",
        "\\",
        ";",
        "*",
        ":x",
        "é",
        "\u{0}",
    ]);
    let soup = prop::collection::vec(token, 0..40).prop_map(|t| t.join(" "));
    let prefixed = prop::collection::vec(".{0,4}", 0..20)
        .prop_map(|t| format!("SELECT Id FROM Refund WHERE {}", t.join(" ")));
    prop_oneof![
        3 => soup.clone(),
        2 => soup.prop_map(|t| format!("SELECT Id, Amount FROM Refund WHERE {t}")),
        1 => prefixed,
        1 => (0usize..3_000).prop_map(|d| format!(
            "SELECT Id FROM Refund WHERE {}Status = 'x'{}", "(".repeat(d), ")".repeat(d))),
        1 => (0usize..1_500).prop_map(|n| format!(
            "SELECT Id FROM Refund WHERE Status IN ({})",
            vec!["'a'"; n.max(1)].join(","))),
        1 => (0usize..1_200).prop_map(|n| format!(
            "SELECT Id FROM Refund WHERE {}",
            vec!["Amount > 1"; n.max(1)].join(" OR "))),
        1 => (0usize..6_000).prop_map(|n| format!(
            "SELECT Id FROM Refund WHERE {}",
            vec!["Amount IN (1.5, 2, 0.001)"; n.max(1) / 3 + 1].join(" AND "))),
    ]
    .boxed()
}

async fn soql_text(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let f = &f;
    property("soql_text", soql(), |text| {
        let get = format!("{V}/query?q={}", percent(&text));
        let post = format!("q={}", percent(&text)).into_bytes();
        async move {
            refused_changes_nothing(&f.app, Method::GET, &get, None, &[], false).await?;
            refused_changes_nothing(
                &f.app,
                Method::POST,
                &format!("{V}/queryAll/"),
                Some(post),
                &[("content-type", "application/x-www-form-urlencoded")],
                false,
            )
            .await
        }
    });
}

async fn query_locators(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let f = &f;
    use base64::Engine as _;
    let encoded = ("[0-9]{0,6}", soql(), prop_oneof!["[0-9]{0,25}", ".{0,5}"]).prop_map(
        |(batch, text, offset)| {
            let payload =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{batch}:{text}"));
            format!("01g{payload}-{offset}")
        },
    );
    property(
        "query_locators",
        prop_oneof![encoded, ".{0,40}", "01g[A-Za-z0-9_-]{0,40}-[0-9]{0,5}"],
        |locator| {
            let path = format!("{V}/query/{}", percent(&locator));
            async move { refused_changes_nothing(&f.app, Method::GET, &path, None, &[], false).await }
        },
    );
}

async fn headers(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let f = &f;
    let value = prop_oneof![
        "[ -~]{0,40}",
        Just(format!("Bearer {}", "a".repeat(10_000))),
        "(Bearer|bearer|OAuth|Basic) [ -~]{0,30}",
        "batchSize=[0-9-]{0,30}",
        Just("batchSize=99999999999999999999999".to_string()),
    ];
    let ensure = TestApp::ensure_path(&f.order.id);
    let token = f.app.token.clone();
    property(
        "headers",
        (
            proptest::sample::select(vec![
                "Authorization",
                "Sforce-Query-Options",
                "Idempotency-Key",
                "Content-Type",
            ]),
            value,
        ),
        |(name, value)| {
            let ensure = ensure.clone();
            let token = format!("Bearer {token}");
            async move {
                if HeaderValue::from_str(&value).is_err() {
                    return Ok(());
                }
                let mut sent = vec![(name, value.as_str())];
                if name != "Authorization" {
                    sent.push(("Authorization", token.as_str()));
                }
                let body = b"{\"excessFundsAmount\": 0}".to_vec();
                refused_changes_nothing(&f.app, Method::POST, &ensure, Some(body), &sent, true)
                    .await?;
                let query = format!("{V}/query?q=SELECT+Id+FROM+Refund");
                refused_changes_nothing(&f.app, Method::GET, &query, None, &sent, false).await
            }
        },
    );
}

backend_tests!(
    ensure_refunds_bodies,
    sobject_post_bodies,
    sobject_patch_bodies_and_ids,
    order_payment_summary_bodies,
    ids_and_money_text,
    soql_text,
    query_locators,
    headers,
);
