//! The real binary over a real socket: the README walk-through, and a 201 that survives
//! the process being killed.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cli, client_token, field, free_port, simulator, Server};
use serde_json::{json, Value};

async fn serve(db: &Path, env: &[(&str, &str)]) -> Server {
    let http = reqwest::Client::new();
    let mut server = common::spawn_serve(db, "http://127.0.0.1", &[], env, &http).await;
    server.token = login(&server.base, db).await;
    server
}

/// Creates an API client with the CLI (once per database) and logs in with it.
async fn login(base: &str, db: &Path) -> String {
    let credentials = db.with_extension("client");
    if !credentials.exists() {
        std::fs::write(
            &credentials,
            cli(db, &["clients", "create", "tests", "--admin"]),
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(&credentials).expect("client credentials");
    client_token(&reqwest::Client::new(), base, &text).await
}

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let base = &server.base;
    let r = reqwest::Client::new()
        .post(format!("{base}/services/data/v58.0{path}"))
        .bearer_auth(&server.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn get(server: &Server, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/services/data/v58.0{path}", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    assert_eq!(
        r.headers()["content-type"],
        "application/json;charset=UTF-8"
    );
    r.json().await.unwrap()
}

async fn load_order(base: &Server) -> (String, String) {
    let (_, order) = post(
        base,
        "/sobjects/OrderSummary",
        json!({"OrderNumber": "00001000", "CurrencyIsoCode": "USD"}),
    )
    .await;
    let order = order["id"].as_str().unwrap().to_string();
    let (_, gw) = post(
        base,
        "/sobjects/PaymentGateway",
        json!({"PaymentGatewayName": "Demo", "ProviderType": "Simulator"}),
    )
    .await;
    let (_, pay) = post(
        base,
        "/sobjects/Payment",
        json!({"PaymentGatewayId": gw["id"], "Amount": 100.00, "GatewayRefNumber": "ch_demo_1"}),
    )
    .await;
    let (status, ops) = post(
        base,
        "/commerce/order-management/order-payment-summaries",
        json!({"orderSummaryId": order, "paymentIds": [pay["id"]]}),
    )
    .await;
    assert_eq!(status, 201, "{ops}");
    (
        order,
        ops["orderPaymentSummaryId"].as_str().unwrap().to_string(),
    )
}

async fn wait_complete(base: &Server, op: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bo = get(base, &format!("/sobjects/BackgroundOperation/{op}")).await;
        if bo["Status"] == "Complete" {
            return bo;
        }
        assert!(
            Instant::now() < deadline,
            "operation did not complete: {bo}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn walk_through_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("refunds.db"), &[]).await;
    let base = &server;
    let (order, ops) = load_order(base).await;
    let (_, cm) = post(
        base,
        "/sobjects/CreditMemo",
        json!({"ReferenceEntityId": order, "TotalAmountWithTax": 25.00}),
    )
    .await;
    let (status, answer) = post(
        base,
        &format!(
            "/commerce/order-management/order-summaries/{order}/async-actions/ensure-refunds-async"
        ),
        json!({"creditMemoId": cm["id"]}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let op = answer["backgroundOperationId"].as_str().unwrap();
    wait_complete(base, op).await;
    let summary = get(base, &format!("/sobjects/OrderPaymentSummary/{ops}")).await;
    assert_eq!(summary["RefundedAmount"].to_string(), "25.00");
    assert_eq!(summary["AvailableToRefundAmount"].to_string(), "75.00");
    let log_id = summary["LastPaymentGatewayLogId"].as_str().unwrap();
    let log = get(base, &format!("/sobjects/PaymentGatewayLog/{log_id}")).await;
    assert_eq!(log["InteractionStatus"], "Success");
    let refund = get(
        base,
        &format!(
            "/sobjects/Refund/{}",
            log["ReferencedEntityId"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(refund["Status"], "Processed");
    assert_eq!(refund["ClientContext"], format!("{op}:1"));
}

#[tokio::test]
async fn an_accepted_request_survives_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("refunds.db");
    // Slow provider calls: the process will die before any refund is answered.
    let mut server = serve(
        &db,
        &[
            ("REFUNDS_SIMULATOR_LATENCY_MS", "60000"),
            ("REFUNDS_LEASE_MS", "500"),
        ],
    )
    .await;
    let (order, ops) = load_order(&server).await;
    let (status, answer) = post(
        &server,
        &format!(
            "/commerce/order-management/order-summaries/{order}/async-actions/ensure-refunds-async"
        ),
        json!({"excessFundsAmount": 12.5}),
    )
    .await;
    assert_eq!(status, 201);
    let op = answer["backgroundOperationId"]
        .as_str()
        .unwrap()
        .to_string();
    server.child.kill().unwrap(); // SIGKILL: no shutdown, no flush.
    server.child.wait().unwrap();

    let server = serve(&db, &[("REFUNDS_LEASE_MS", "500")]).await;
    wait_complete(&server, &op).await;
    let summary = get(&server, &format!("/sobjects/OrderPaymentSummary/{ops}")).await;
    assert_eq!(
        summary["RefundedAmount"].to_string(),
        "12.50",
        "refunded once, after the restart"
    );
    assert_eq!(summary["PendingRefundAmount"].to_string(), "0.00");
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    let out = Command::new(env!("CARGO_BIN_EXE_refunds"))
        .args(["migrate", "--database-url"])
        .arg(format!("sqlite:{}", db.display()))
        .env("REFUNDS_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
    let again = Command::new(env!("CARGO_BIN_EXE_refunds"))
        .args(["migrate", "--database-url"])
        .arg(format!("sqlite:{}", db.display()))
        .output()
        .unwrap();
    assert!(again.status.success(), "migrating twice is a no-op");
}

/// A command's stdout is its answer only: `clients create` on a new database logs its
/// migrations, and those lines go to stderr, so `source <(refunds clients create …)` works.
#[test]
fn credentials_are_the_only_output_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("new.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_refunds"))
        .args(["clients", "create", "ci", "--database-url", &db])
        .env_remove("REFUNDS_LOG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let keys: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('=').next().unwrap())
        .collect();
    assert_eq!(keys, ["client_id", "client_secret"], "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("migration"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes off a terminal: {stderr:?}"
    );
}

async fn create_refund(base: &str, key: &str) -> Option<Value> {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/refunds"))
        .bearer_auth("sk_test_demo")
        .header("Idempotency-Key", key)
        .form(&[
            ("charge", "ch_demo_1"),
            ("amount", "1250"),
            ("metadata[refund_id]", key),
        ])
        .send()
        .await
        .ok()?;
    assert_eq!(r.status(), 200);
    r.json().await.ok()
}

async fn until_up(base: &str, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = create_refund(base, key).await {
            return v;
        }
        assert!(Instant::now() < deadline, "simulator did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_simulator_keeps_its_ledger_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    let port = free_port();
    let mut first = simulator(port, &ledger, &[]);
    let refund = until_up(&first.base, "0RfKEY1").await;
    assert_eq!(refund["status"], "succeeded");
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();

    let second = simulator(port, &ledger, &[]);
    let replay = until_up(&second.base, "0RfKEY1").await;
    assert_eq!(
        replay["id"], refund["id"],
        "the same key replays the recorded refund"
    );
    let list: Value = reqwest::Client::new()
        .get(format!("{}/v1/refunds?charge=ch_demo_1", second.base))
        .bearer_auth("sk_test_demo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "one refund, kept and not doubled: {list}"
    );
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert_pem = common::localhost_certificate(dir.path());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let db = dir.path().join("refunds.db");
    let client = common::trusting(&cert_pem);
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let server = common::spawn_serve(&db, "https://localhost", &tls, &[], &client).await;
    // Plain http to the https port gets no answer, and the token endpoint names https.
    let plain_base = server.base.replace("https://", "http://");
    let plain = reqwest::get(format!("{plain_base}/healthz")).await;
    assert!(
        plain.map_or(true, |r| r.status() != 200),
        "no plain-http answer on the https port"
    );
    let text = cli(&db, &["clients", "create", "tls"]);
    let answer = common::token_answer(&client, &server.base, &text).await;
    assert_eq!(answer["instance_url"], server.base);
}

/// rustforce, a published Salesforce REST client, runs the whole flow unchanged: password
/// login, record creation, ensure-refunds, polling the operation, SOQL, a Salesforce error.
#[tokio::test]
async fn rustforce_drives_the_whole_flow() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("refunds.db");
    let server = serve(&db, &[]).await; // also creates the API client "tests"
    let credentials = std::fs::read_to_string(db.with_extension("client")).unwrap();
    let user = cli(&db, &["users", "create", "ops@example.com", "--admin"]);

    let mut client = rustforce::Client::new(
        Some(field(&credentials, "client_id")),
        Some(field(&credentials, "client_secret")),
    );
    client.set_login_endpoint(&server.base).set_version("v58.0");
    client
        .login_with_credential(field(&user, "username"), field(&user, "password"))
        .await
        .unwrap();

    let order = client
        .create("OrderSummary", serde_json::json!({"OrderNumber": "RF-1"}))
        .await
        .unwrap()
        .id;
    let gateway = client
        .create(
            "PaymentGateway",
            serde_json::json!({"PaymentGatewayName": "Sim", "ProviderType": "Simulator"}),
        )
        .await
        .unwrap()
        .id;
    let payment = client
        .create(
            "Payment",
            serde_json::json!({"PaymentGatewayId": gateway, "Amount": 80.0, "GatewayRefNumber": "ch_rf_1"}),
        )
        .await
        .unwrap()
        .id;
    let summary: Value = client
        .rest_post(
            "/services/data/v58.0/commerce/order-management/order-payment-summaries".to_string(),
            serde_json::json!({"orderSummaryId": order, "paymentIds": [payment]}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ops = summary["orderPaymentSummaryId"]
        .as_str()
        .unwrap()
        .to_string();
    let memo = client
        .create(
            "CreditMemo",
            serde_json::json!({"ReferenceEntityId": order, "TotalAmountWithTax": 30.0}),
        )
        .await
        .unwrap()
        .id;
    let answer = client
        .rest_post(
            format!("/services/data/v58.0/commerce/order-management/order-summaries/{order}/async-actions/ensure-refunds-async"),
            serde_json::json!({"creditMemoId": memo}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
    let answer: Value = answer.json().await.unwrap();
    let op = answer["backgroundOperationId"]
        .as_str()
        .unwrap()
        .to_string();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bo: Value = client.find_by_id("BackgroundOperation", &op).await.unwrap();
        if bo["Status"] == "Complete" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "operation did not complete: {bo}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let refunds = client
        .query::<Value>(&format!(
            "SELECT Id, Status, Amount FROM Refund WHERE OrderPaymentSummaryId = '{ops}'"
        ))
        .await
        .unwrap();
    assert_eq!(refunds.total_size, 1);
    assert_eq!(refunds.records[0]["Status"], "Processed");
    assert_eq!(refunds.records[0]["Amount"].to_string(), "30.00");
    let logs = client
        .query::<Value>(&format!(
            "SELECT Id, InteractionStatus FROM PaymentGatewayLog WHERE OrderPaymentSummary.OrderSummaryId = '{order}'"
        ))
        .await
        .unwrap();
    assert_eq!(logs.total_size, 1);
    assert_eq!(logs.records[0]["InteractionStatus"], "Success");

    match client
        .create("OrderSummary", serde_json::json!({"Nope": 1}))
        .await
    {
        Err(rustforce::Error::ErrorResponses(errors)) => {
            assert_eq!(errors[0].error_code, "INVALID_FIELD");
            assert!(!errors[0].message.is_empty());
        }
        other => panic!("expected a Salesforce error, got {other:?}"),
    }
}

/// `--metrics-listen` serves Prometheus text on its own port, and only there, with the
/// reconciler's counters of the serving process (here allowed its smallest concurrency, 1).
#[tokio::test]
async fn metrics_are_served_on_their_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let server = common::spawn_serve(
        &dir.path().join("refunds.db"),
        "http://127.0.0.1",
        &["--metrics-listen", &addr, "--reconcile-concurrency", "1"],
        &[],
        &http,
    )
    .await;
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("refunds_process_exceptions_open 0"), "{text}");
    assert!(
        text.contains("refunds_reconcile_lookups_in_flight 0"),
        "{text}"
    );
    let on_api = http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404, "not on the API's port");
}

/// `--reconcile-concurrency 0` is refused at start-up, with the reason.
#[test]
fn a_reconcile_concurrency_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_refunds"))
        .args(["worker", "--reconcile-concurrency", "0", "--database-url"])
        .arg(common::database_url(&dir.path().join("refunds.db")))
        .env("REFUNDS_LOG", "warn")
        .output()
        .expect("run refunds worker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--reconcile-concurrency must be at least 1"),
        "{stderr}"
    );
}
