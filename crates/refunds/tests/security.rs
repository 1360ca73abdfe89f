//! Security regressions against the real binary: no secret (provider key, HMAC key,
//! client secrets, passwords, tokens) appears in the service's log, in the database
//! files or in an answer, in any encoding tried; login throttling counts by the peer
//! address of the TCP connection; a gateway that breaks the rules under the host list
//! `serve` starts with is named in a WARN line and by `/readyz`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{cli, database_url, field, free_port, simulator, Server};
use serde_json::{json, Value};

/// `refunds serve` on `db`, its stderr (the log) written to `log`.
fn serve(db: &Path, log: &Path, hosts: &str, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refunds"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database-url")
        .arg(database_url(db))
        .arg("--gateway-hosts")
        .arg(hosts)
        .args(["--reconcile-delay-ms", "100"])
        // Everything the service can log, SQL included.
        .env("REFUNDS_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server {
        child: cmd.spawn().expect("start refunds serve"),
        base: format!("http://127.0.0.1:{port}"),
        token: String::new(),
    }
}

async fn healthy(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "serve did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every answer the test saw, as text (status, headers and body).
#[derive(Default)]
struct Answers(Vec<String>);

impl Answers {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let headers = format!("{:?}", response.headers());
        let text = response.text().await.expect("a body");
        self.0.push(format!("{status}\n{headers}\n{text}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// The forms a secret could be written in.
fn encodings(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    let mut forms = vec![
        secret.to_string(),
        secret.to_ascii_lowercase(),
        secret.to_ascii_uppercase(),
        hex::encode(b),
        secret
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect(),
        secret
            .chars()
            .map(|c| format!("%{:02X}", c as u32))
            .collect(),
        secret.chars().rev().collect(),
    ];
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        // Inside a longer base64 text the secret starts at one of three alignments; the
        // middle of each encoding survives whatever comes before and after it.
        for skip in 0..3 {
            let encoded = engine.encode(&b[skip..]);
            forms.push(encoded[4..encoded.len() - 4].to_string());
        }
    }
    forms
}

fn assert_absent(haystack: &str, what: &str, secrets: &[(&str, String)]) {
    for (name, secret) in secrets {
        for form in encodings(secret) {
            assert!(
                !haystack.contains(&form),
                "the {name} ({form}) appears in {what}"
            );
        }
    }
}

fn random_secret(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand_bytes()))
}

fn rand_bytes() -> [u8; 16] {
    rand::random()
}

#[tokio::test]
async fn no_secret_reaches_the_log_the_database_or_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("refunds.db");
    let log = dir.path().join("serve.log");
    let sim = simulator(free_port(), &dir.path().join("ledger.db"), &[]);
    let stripe_key = random_secret("sk_test_");
    let hmac_key = hex::encode(rand_bytes()).repeat(2).to_ascii_uppercase();
    let adyen_key = random_secret("AQE_");
    let admin = cli(&db, &["clients", "create", "ops-admin", "--admin"]);
    let client = cli(&db, &["clients", "create", "orders"]);
    let user = cli(&db, &["users", "create", "clerk@example.com"]);
    let server = serve(
        &db,
        &log,
        "127.0.0.1",
        &[
            ("REFUNDS_SECRET_STRIPE", &stripe_key),
            ("REFUNDS_SECRET_ADYEN_HMAC", &hmac_key),
            ("REFUNDS_SECRET_ADYEN", &adyen_key),
        ],
    );
    let http = reqwest::Client::new();
    healthy(&http, &server.base).await;
    let base = &server.base;
    let data = format!("{base}/services/data/v58.0");
    let mut answers = Answers::default();
    let mut token_answers = Answers::default();

    let login = |form: Vec<(&'static str, String)>| {
        http.post(format!("{base}/services/oauth2/token"))
            .form(&form)
    };
    let (_, admin_token) = token_answers
        .send(login(vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", field(&admin, "client_id")),
            ("client_secret", field(&admin, "client_secret")),
        ]))
        .await;
    let admin_token = admin_token["access_token"].as_str().unwrap().to_string();
    let (_, token) = token_answers
        .send(login(vec![
            ("grant_type", "password".into()),
            ("client_id", field(&client, "client_id")),
            ("client_secret", field(&client, "client_secret")),
            ("username", field(&user, "username")),
            ("password", field(&user, "password")),
        ]))
        .await;
    let token = token["access_token"].as_str().unwrap().to_string();
    // Failed logins that carry real secrets in the wrong places.
    for (id, secret) in [
        (field(&client, "client_id"), field(&admin, "client_secret")),
        (field(&admin, "client_secret"), field(&user, "password")),
    ] {
        let (status, _) = answers
            .send(login(vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", id),
                ("client_secret", secret),
            ]))
            .await;
        assert_eq!(status, 400);
    }

    let (status, gateway) = answers
        .send(http.post(format!("{data}/sobjects/PaymentGateway")).bearer_auth(&admin_token).json(&json!({
            "PaymentGatewayName": "Stripe (simulated)", "ProviderType": "Stripe",
            "BaseUrl": sim.base, "MerchantCredentialEnv": "REFUNDS_SECRET_STRIPE", "TimeoutMs": 5000})))
        .await;
    assert_eq!(status, 201, "{gateway}");
    let gateway = gateway["id"].as_str().unwrap().to_string();
    let (status, adyen) = answers
        .send(http.post(format!("{data}/sobjects/PaymentGateway")).bearer_auth(&admin_token).json(&json!({
            "PaymentGatewayName": "Adyen", "ProviderType": "Adyen", "BaseUrl": "http://127.0.0.1:9/v71",
            "MerchantCredentialEnv": "REFUNDS_SECRET_ADYEN", "WebhookHmacKeyEnv": "REFUNDS_SECRET_ADYEN_HMAC",
            "MerchantAccount": "M"})))
        .await;
    assert_eq!(status, 201, "{adyen}");
    // The standard user may not, and gets Salesforce's answer.
    let (status, refused) = answers
        .send(
            http.post(format!("{data}/sobjects/PaymentGateway"))
                .bearer_auth(&token)
                .json(&json!({
            "PaymentGatewayName": "Mine", "ProviderType": "Simulator"})),
        )
        .await;
    assert_eq!(
        (status, refused[0]["errorCode"].as_str()),
        (403, Some("INSUFFICIENT_ACCESS_OR_READONLY"))
    );

    let (_, order) = answers
        .send(
            http.post(format!("{data}/sobjects/OrderSummary"))
                .bearer_auth(&token)
                .json(&json!({"OrderNumber": "SEC-1"})),
        )
        .await;
    let order = order["id"].as_str().unwrap().to_string();
    let (_, payment) = answers
        .send(
            http.post(format!("{data}/sobjects/Payment"))
                .bearer_auth(&token)
                .json(&json!({
            "PaymentGatewayId": gateway, "Amount": 100.00, "GatewayRefNumber": "ch_sec_1"})),
        )
        .await;
    let payment = payment["id"].as_str().unwrap().to_string();
    let (status, _) = answers
        .send(
            http.post(format!(
                "{data}/commerce/order-management/order-payment-summaries"
            ))
            .bearer_auth(&token)
            .json(&json!({"orderSummaryId": order, "paymentIds": [payment]})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, accepted) = answers
        .send(http.post(format!("{data}/commerce/order-management/order-summaries/{order}/async-actions/ensure-refunds-async"))
            .bearer_auth(&token).json(&json!({"excessFundsAmount": 12.34})))
        .await;
    assert_eq!(status, 201, "{accepted}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let soql = format!(
        "SELECT Id, Status FROM Refund WHERE OrderPaymentSummary.OrderSummaryId = '{order}'"
    );
    loop {
        let (_, found) = answers
            .send(
                http.get(format!("{data}/query"))
                    .query(&[("q", soql.as_str())])
                    .bearer_auth(&token),
            )
            .await;
        if found["records"][0]["Status"] == "Processed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refund did not complete: {found}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Read back everything a client could: gateways, logs, the refund.
    for q in [
        "SELECT Id, PaymentGatewayName, BaseUrl, MerchantCredentialEnv, WebhookHmacKeyEnv FROM PaymentGateway",
        "SELECT Id, Request, Response, GatewayMessage, GatewayResultCode FROM PaymentGatewayLog",
    ] {
        let (status, _) = answers
            .send(http.get(format!("{data}/query")).query(&[("q", q)]).bearer_auth(&token))
            .await;
        assert_eq!(status, 200);
    }
    for q in [
        format!("{data}/sobjects/PaymentGateway/{gateway}"),
        format!("{base}/readyz"),
    ] {
        answers.send(http.get(q).bearer_auth(&token)).await;
    }
    drop(server);

    let secrets = [
        ("Stripe key", stripe_key.clone()),
        ("Adyen key", adyen_key.clone()),
        ("Adyen HMAC key", hmac_key.clone()),
        ("admin client secret", field(&admin, "client_secret")),
        ("client secret", field(&client, "client_secret")),
        ("password", field(&user, "password")),
        ("admin token", admin_token.clone()),
        ("user token", token.clone()),
    ];
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("provider refund call"),
        "the log was captured: {}",
        logged.len()
    );
    assert_absent(&logged, "the log", &secrets);
    let mut stored = Vec::new();
    for file in ["refunds.db", "refunds.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(file)) {
            stored.extend(bytes);
        }
    }
    assert!(stored.len() > 4096, "the database was read");
    assert_absent(
        &String::from_utf8_lossy(&stored),
        "the database files",
        &secrets,
    );
    assert_absent(&answers.0.join("\n"), "the answers", &secrets);
    // The token answers carry their own token, and nothing else.
    assert_absent(
        &token_answers.0.join("\n"),
        "the token answers",
        &secrets[..6],
    );
}

#[tokio::test]
async fn logins_are_throttled_by_the_peer_address_of_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("refunds.db");
    let credentials = cli(&db, &["clients", "create", "target"]);
    let server = serve(&db, &dir.path().join("serve.log"), "api.stripe.com", &[]);
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .no_proxy()
            .build()
            .unwrap()
    };
    let attacker = from("127.0.0.1");
    healthy(&attacker, &server.base).await;
    let login = |client: &reqwest::Client, secret: String| {
        client
            .post(format!("{}/services/oauth2/token", server.base))
            // A forged header changes nothing: no proxy is trusted.
            .header("x-forwarded-for", "192.0.2.77")
            .form(&[
                ("grant_type", "client_credentials".to_string()),
                ("client_id", field(&credentials, "client_id")),
                ("client_secret", secret),
            ])
            .send()
    };
    for i in 0..10 {
        let answer = login(&attacker, format!("guess{i}")).await.unwrap();
        assert_eq!(answer.status(), 400);
    }
    let secret = field(&credentials, "client_secret");
    let answer: Value = login(&attacker, secret.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("too many"),
        "{answer}"
    );
    // The real client, on another address of the machine, is not locked out.
    let answer = login(&from("127.0.0.2"), secret).await.unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
}

#[tokio::test]
async fn serve_names_stored_gateways_that_break_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("refunds.db");
    let admin = cli(&db, &["clients", "create", "admin", "--admin"]);
    let http = reqwest::Client::new();
    // Written while loopback was allowed …
    let first = serve(&db, &dir.path().join("first.log"), "127.0.0.1", &[]);
    healthy(&http, &first.base).await;
    let token = common::client_token(&http, &first.base, &admin).await;
    let created: Value = http
        .post(format!("{}/services/data/v58.0/sobjects/PaymentGateway", first.base))
        .bearer_auth(&token)
        .json(&json!({"PaymentGatewayName": "Local Stripe", "ProviderType": "Stripe",
                      "BaseUrl": "http://127.0.0.1:12111", "MerchantCredentialEnv": "REFUNDS_SECRET_STRIPE"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gateway = created["id"].as_str().expect("created").to_string();
    let ready: Value = http
        .get(format!("{}/readyz", first.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready, json!({"status": "ok"}));
    drop(first);
    // … and served again under the default list.
    let log = dir.path().join("second.log");
    let port = free_port();
    let second = Server {
        child: Command::new(env!("CARGO_BIN_EXE_refunds"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                &database_url(&db),
            ])
            .env("REFUNDS_LOG", "warn")
            .env_remove("REFUNDS_GATEWAY_HOSTS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
        token: String::new(),
    };
    healthy(&http, &second.base).await;
    let answer = http
        .get(format!("{}/readyz", second.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let ready: Value = answer.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["gatewayViolations"][0]["id"], gateway.as_str());
    assert_eq!(
        ready["gatewayViolations"][0]["problems"][0]["field"],
        "BaseUrl"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let warning = logged
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&gateway))
        .unwrap_or_else(|| panic!("a WARN line names the gateway: {logged}"));
    assert!(warning.contains("127.0.0.1"), "{warning}");
    drop(second);
}
