//! The Stripe-compatible simulator on its own, over HTTP on a loopback port: its ledger
//! survives a restart, idempotency keys replay without moving money, requests are checked
//! as Stripe checks them, and each row of the outcome table answers as documented.

use std::path::Path;
use std::time::Duration;

use refunds_simulator::Simulator;
use serde_json::Value;

/// The simulator serving its ledger file on a loopback port.
struct Server {
    base: String,
    sim: Simulator,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(ledger: &Path) -> Server {
        let sim = Simulator::open(ledger, Duration::ZERO).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = sim.clone().router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Server { base, sim, task }
    }

    async fn settled(&self) -> (i64, i64) {
        self.sim.settled().await.unwrap()
    }

    /// Stops serving and lets go of the ledger.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        drop(self.sim);
    }
}

const KEY: &str = "sk_test_ledger";

/// `POST /v1/refunds` (form-encoded) with an optional Idempotency-Key; (status, JSON body).
async fn create(
    client: &reqwest::Client,
    server: &Server,
    idempotency_key: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = client
        .post(format!("{}/v1/refunds", server.base))
        .bearer_auth(KEY)
        .form(form);
    if let Some(k) = idempotency_key {
        request = request.header("Idempotency-Key", k);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn get(client: &reqwest::Client, server: &Server, path: &str) -> (u16, Value) {
    let response = client
        .get(format!("{}{path}", server.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A refund of `amount` minor units of charge `charge`, made with `key`.
fn refund_form<'a>(charge: &'a str, amount: &'a str, key: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("charge", charge),
        ("amount", amount),
        ("currency", "usd"),
        ("metadata[refund_id]", key),
    ]
}

#[tokio::test]
async fn the_ledger_survives_a_restart_and_keys_still_replay() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");

    let server = Server::start(&ledger).await;
    let client = reqwest::Client::new();
    let (status, made) = create(
        &client,
        &server,
        Some("0RfRESTART0000001"),
        &refund_form("ch_restart", "1234", "0RfRESTART0000001"),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["status"], "succeeded");
    let id = made["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("re_sim"), "{made}");
    assert_eq!(server.settled().await, (1, 1234));
    drop(client);
    server.stop().await;

    // A new process on another port, the same file.
    let server = Server::start(&ledger).await;
    let client = reqwest::Client::new();
    let (status, list) = get(&client, &server, "/v1/refunds?charge=ch_restart").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["id"], id.as_str());
    assert_eq!(data[0]["amount"], 1234);
    assert_eq!(data[0]["status"], "succeeded");
    assert_eq!(data[0]["metadata"]["refund_id"], "0RfRESTART0000001");
    assert_eq!(server.settled().await, (1, 1234));

    // The key replays the same refund and moves no more money.
    let (status, again) = create(
        &client,
        &server,
        Some("0RfRESTART0000001"),
        &refund_form("ch_restart", "1234", "0RfRESTART0000001"),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(server.settled().await, (1, 1234));
    let (_, list) = get(&client, &server, "/v1/refunds?charge=ch_restart").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    // The key with another amount is refused, as Stripe refuses it, and moves nothing.
    let (status, refused) = create(
        &client,
        &server,
        Some("0RfRESTART0000001"),
        &refund_form("ch_restart", "999", "0RfRESTART0000001"),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["type"], "idempotency_error", "{refused}");
    assert_eq!(server.settled().await, (1, 1234));

    // A new key is a new refund.
    let (status, other) = create(
        &client,
        &server,
        Some("0RfRESTART0000002"),
        &refund_form("ch_restart", "500", "0RfRESTART0000002"),
    )
    .await;
    assert_eq!(status, 200, "{other}");
    assert_ne!(other["id"], id.as_str());
    assert_eq!(server.settled().await, (2, 1734));
    server.stop().await;
}

#[tokio::test]
async fn every_route_needs_an_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ledger.db")).await;
    let client = reqwest::Client::new();
    let form = refund_form("ch_auth", "1234", "0RfAUTH");
    let requests = [
        client
            .post(format!("{}/v1/refunds", server.base))
            .form(&form),
        client.get(format!("{}/v1/refunds?charge=ch_auth", server.base)),
        client.get(format!("{}/v1/refunds/re_sim0000000000000000", server.base)),
        client
            .post(format!("{}/v1/refunds", server.base))
            .header("Authorization", "Bearer ")
            .form(&form),
        client
            .post(format!("{}/v1/refunds", server.base))
            .basic_auth(KEY, Some(""))
            .form(&form),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    assert_eq!(server.settled().await, (0, 0));
    let (_, list) = get(&client, &server, "/v1/refunds?charge=ch_auth").await;
    assert_eq!(list["data"], Value::Array(vec![]), "nothing was recorded");
}

#[tokio::test]
async fn malformed_requests_are_400_and_use_up_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ledger.db")).await;
    let client = reqwest::Client::new();
    let key = Some("0RfBAD");
    let (status, body) = create(&client, &server, key, &[("amount", "1234")]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "parameter_missing");
    for amount in ["", "abc", "0", "-5", "12.34", "1e3"] {
        let (status, body) = create(
            &client,
            &server,
            key,
            &[("charge", "ch_bad"), ("amount", amount)],
        )
        .await;
        assert_eq!(status, 400, "amount {amount:?}: {body}");
        assert_eq!(body["error"]["code"], "parameter_invalid_integer", "{body}");
    }
    let (status, body) = create(&client, &server, key, &[("charge", "ch_bad")]).await;
    assert_eq!(status, 400, "no amount: {body}");
    assert_eq!(server.settled().await, (0, 0));
    // As at Stripe, a request refused before it ran leaves its key free.
    let (status, body) = create(
        &client,
        &server,
        key,
        &refund_form("ch_bad", "1234", "0RfBAD"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(server.settled().await, (1, 1234));
    // payment_intent names the payment as well as charge does.
    let (status, body) = create(
        &client,
        &server,
        Some("0RfPI"),
        &[("payment_intent", "pi_bad"), ("amount", "100")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payment_intent"], "pi_bad");
    assert_eq!(body["charge"], Value::Null);
}

#[tokio::test]
async fn an_unknown_refund_is_404_resource_missing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ledger.db")).await;
    let client = reqwest::Client::new();
    let (status, body) = get(&client, &server, "/v1/refunds/re_sim_does_not_exist").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "resource_missing");
}

#[tokio::test]
async fn pending_98_succeeds_when_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ledger.db")).await;
    let client = reqwest::Client::new();
    let (status, made) = create(
        &client,
        &server,
        Some("0Rf98"),
        &refund_form("ch_98", "1298", "0Rf98"),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["status"], "pending");
    assert_eq!(made["failure_reason"], Value::Null);
    assert_eq!(server.settled().await, (0, 0), "pending has moved no money");
    let id = made["id"].as_str().unwrap();
    let (status, read) = get(&client, &server, &format!("/v1/refunds/{id}")).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["id"], id);
    assert_eq!(read["status"], "succeeded");
    assert_eq!(server.settled().await, (1, 1298));
    // Reading again changes nothing.
    let (_, read) = get(&client, &server, &format!("/v1/refunds/{id}")).await;
    assert_eq!(read["status"], "succeeded");
    assert_eq!(server.settled().await, (1, 1298));
}

#[tokio::test]
async fn pending_99_fails_when_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ledger.db")).await;
    let client = reqwest::Client::new();
    let (status, made) = create(
        &client,
        &server,
        Some("0Rf99"),
        &refund_form("ch_99", "1299", "0Rf99"),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["status"], "pending");
    assert_eq!(
        made["failure_reason"],
        Value::Null,
        "a pending refund does not show its future failure"
    );
    let id = made["id"].as_str().unwrap();
    // Listing is a read too.
    let (_, list) = get(&client, &server, "/v1/refunds?charge=ch_99").await;
    assert_eq!(list["data"][0]["id"], id);
    assert_eq!(list["data"][0]["status"], "failed");
    assert_eq!(
        list["data"][0]["failure_reason"],
        "expired_or_canceled_card"
    );
    let (status, read) = get(&client, &server, &format!("/v1/refunds/{id}")).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["status"], "failed");
    assert_eq!(read["failure_reason"], "expired_or_canceled_card");
    assert_eq!(
        server.settled().await,
        (0, 0),
        "a failed refund moves no money"
    );
}

#[tokio::test]
async fn failures_91_to_94_answer_as_stripe_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ledger.db")).await;
    let client = reqwest::Client::new();
    let rows = [
        ("1291", 402, "card_error", "card_declined"),
        ("1292", 400, "invalid_request_error", "charge_disputed"),
        ("1293", 400, "invalid_request_error", "amount_too_large"),
        (
            "1294",
            400,
            "invalid_request_error",
            "refund_requires_review",
        ),
    ];
    for (amount, status, kind, code) in rows {
        let key = format!("0Rf{amount}");
        for attempt in 1..=2 {
            let (got, body) = create(
                &client,
                &server,
                Some(&key),
                &refund_form("ch_fail", amount, &key),
            )
            .await;
            assert_eq!(got, status, "{amount} attempt {attempt}: {body}");
            assert_eq!(body["error"]["type"], kind, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    }
    assert_eq!(server.settled().await, (0, 0));
    let (_, list) = get(&client, &server, "/v1/refunds?charge=ch_fail").await;
    assert_eq!(list["data"], Value::Array(vec![]));
}

#[tokio::test]
async fn rate_limited_95_twice_then_succeeds_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ledger.db")).await;
    let client = reqwest::Client::new();
    let form = refund_form("ch_95", "1295", "0Rf95");
    for _ in 0..2 {
        let (status, body) = create(&client, &server, Some("0Rf95"), &form).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }
    assert_eq!(server.settled().await, (0, 0));
    let (status, made) = create(&client, &server, Some("0Rf95"), &form).await;
    assert_eq!(status, 200, "{made}");
    let (status, again) = create(&client, &server, Some("0Rf95"), &form).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], made["id"]);
    assert_eq!(server.settled().await, (1, 1295));
}

#[tokio::test]
async fn cut_answer_96_made_the_refund_and_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ledger.db")).await;
    let client = reqwest::Client::new();
    let form = refund_form("ch_96", "1296", "0Rf96");
    let first = client
        .post(format!("{}/v1/refunds", server.base))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "0Rf96")
        .form(&form)
        .send()
        .await;
    let read = match first {
        Ok(response) => response.text().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(read.is_err(), "the first answer breaks off");
    assert_eq!(server.settled().await, (1, 1296), "yet the refund was made");
    let (_, list) = get(&client, &server, "/v1/refunds?charge=ch_96").await;
    let listed = list["data"][0]["id"].clone();
    assert!(
        listed.as_str().is_some_and(|id| id.starts_with("re_sim")),
        "{list}"
    );
    let (status, again) = create(&client, &server, Some("0Rf96"), &form).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], listed, "the repeat answers that same refund");
    assert_eq!(again["status"], "succeeded");
    assert_eq!(server.settled().await, (1, 1296));
}

#[tokio::test]
async fn lost_request_97_records_nothing_then_succeeds_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ledger.db")).await;
    let client = reqwest::Client::new();
    let form = refund_form("ch_97", "1297", "0Rf97");
    // The simulator never answers the first attempt; the caller gives up.
    let first = client
        .post(format!("{}/v1/refunds", server.base))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "0Rf97")
        .form(&form)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        first.is_err_and(|e| e.is_timeout()),
        "the first attempt times out"
    );
    let (_, list) = get(&client, &server, "/v1/refunds?charge=ch_97").await;
    assert_eq!(list["data"], Value::Array(vec![]), "nothing was recorded");
    assert_eq!(server.settled().await, (0, 0));
    let (status, made) = create(&client, &server, Some("0Rf97"), &form).await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["status"], "succeeded");
    let (status, again) = create(&client, &server, Some("0Rf97"), &form).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], made["id"]);
    assert_eq!(server.settled().await, (1, 1297));
}

/// With a key lifetime, a key is remembered until it ends and forgotten after: a request
/// sent again then is a new refund (the double payment the service must avoid), and the
/// list by charge shows both, each with its `metadata[refund_id]`.
#[tokio::test]
async fn a_forgotten_key_makes_a_new_refund_and_the_list_still_shows_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    let lifetime = Duration::from_millis(200);
    let sim = Simulator::open(&ledger, Duration::ZERO)
        .await
        .unwrap()
        .with_key_lifetime(Some(lifetime));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = sim.clone().router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let server = Server { base, sim, task };
    let client = reqwest::Client::new();
    let form = refund_form("ch_forget", "1234", "0RfFORGET00000001");
    let started = std::time::Instant::now();
    let (_, first) = create(&client, &server, Some("0RfFORGET00000001"), &form).await;
    let (_, replay) = create(&client, &server, Some("0RfFORGET00000001"), &form).await;
    if started.elapsed() < lifetime {
        assert_eq!(replay["id"], first["id"], "remembered within its lifetime");
        assert_eq!(server.settled().await, (1, 1234));
    }
    while started.elapsed() < lifetime {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, second) = create(&client, &server, Some("0RfFORGET00000001"), &form).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["id"], first["id"], "forgotten: a new refund");
    assert_eq!(server.settled().await, (2, 2468), "paid twice");
    let (_, list) = get(&client, &server, "/v1/refunds?charge=ch_forget&limit=1").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["has_more"], true, "{list}");
    let last = list["data"][0]["id"].as_str().unwrap().to_string();
    let (_, next) = get(
        &client,
        &server,
        &format!("/v1/refunds?charge=ch_forget&limit=1&starting_after={last}"),
    )
    .await;
    assert_eq!(next["data"].as_array().unwrap().len(), 1, "{next}");
    assert_eq!(next["has_more"], false, "{next}");
    let ids = [last, next["data"][0]["id"].as_str().unwrap().to_string()];
    assert!(ids.contains(&first["id"].as_str().unwrap().to_string()));
    assert!(ids.contains(&second["id"].as_str().unwrap().to_string()));
    assert_eq!(
        next["data"][0]["metadata"]["refund_id"],
        "0RfFORGET00000001"
    );
    server.stop().await;
}
