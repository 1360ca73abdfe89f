//! The books against the ledger, for the tests that run the real binaries (`serve`,
//! `worker`) against `refunds simulator` over real HTTP: a Stripe gateway pointed at the
//! simulator, orders of one 100.00 charge each, a seeded mix of refund amounts, waiting
//! until every operation and refund is final, and the checks — every refund made at most
//! once at the provider, each Processed refund in the ledger with its amount, per charge
//! the ledger's total equal to the summary's RefundedAmount and nothing left reserved.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use refunds_testkit::ledger::{
    assert_charge_matches, assert_each_made_once, assert_refund_matches,
};
use serde_json::{json, Value};

use super::{client_token, free_port, Server};

const V: &str = "/services/data/v58.0";

/// The provider key's variable, set for every node.
pub const SECRET_ENV: &str = "REFUNDS_SECRET_BOOKS_STRIPE";
pub const NODE_ENV: [(&str, &str); 1] = [(SECRET_ENV, "sk_test_books")];

/// Options of every node: loopback gateways allowed, short leases and delays.
pub const NODE_ARGS: [&str; 10] = [
    "--gateway-hosts",
    "127.0.0.1,localhost",
    "--lease-ms",
    "500",
    "--reconcile-delay-ms",
    "200",
    "--provider-backoff-ms",
    "50",
    "--retry-backoff-ms",
    "100",
];

/// `refunds simulator` on a free port with its ledger in `ledger`; answers once it accepts
/// connections.
pub async fn simulator(ledger: &Path, latency_ms: u64) -> Server {
    let port = free_port();
    let latency = latency_ms.to_string();
    let server = super::simulator(port, ledger, &["--latency-ms", &latency]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the simulator did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
}

/// `refunds worker` on `url`, its log in `log`.
pub fn worker(url: &str, log: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_refunds"))
        .args(["worker", "--database-url", url])
        .args(NODE_ARGS)
        .envs(NODE_ENV)
        .env("REFUNDS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("worker log"))
        .spawn()
        .expect("start refunds worker");
    Server {
        child,
        base: String::new(),
        token: String::new(),
    }
}

/// The API of one `serve`, logged in as an administrative client.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub async fn login(base: &str, credentials: &str) -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let token = client_token(&http, base, credentials).await;
        Api {
            http,
            base: base.to_string(),
            token,
        }
    }

    /// A POST under the data path; an error when no answer came (the process died).
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
        let r = self
            .http
            .post(format!("{}{V}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    pub async fn created(&self, path: &str, body: Value) -> String {
        let (status, answer) = self.post(path, &body).await.expect("an answer");
        assert!((200..300).contains(&status), "{path}: {status} {answer}");
        let id = answer["id"]
            .as_str()
            .or(answer["orderPaymentSummaryId"].as_str());
        id.expect("an id").to_string()
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{V}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("json")
    }

    /// ensure-refunds-async for `amount` of excess funds.
    pub async fn ensure(&self, order: &str, amount: &str) -> Result<(u16, Value), reqwest::Error> {
        self.post(
            &format!(
                "/commerce/order-management/order-summaries/{order}/async-actions/ensure-refunds-async"
            ),
            &json!({"excessFundsAmount": amount}),
        )
        .await
    }

    /// The records a SOQL query answers (its first page).
    pub async fn query(&self, soql: &str) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}{V}/query", self.base))
            .query(&[("q", soql)])
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 200, "{soql}");
        let answer: Value = r.json().await.expect("json");
        answer["records"].as_array().cloned().unwrap_or_default()
    }

    /// How many refunds are Draft: written, their provider call not answered yet.
    pub async fn drafts(&self) -> usize {
        self.query("SELECT Id FROM Refund WHERE Status = 'Draft'")
            .await
            .len()
    }

    async fn refunds_of(&self, summary: &str) -> Vec<Value> {
        self.query(&format!(
            "SELECT Id, Status, Amount, GatewayRefNumber FROM Refund WHERE OrderPaymentSummaryId = '{summary}'"
        ))
        .await
    }
}

/// One order's charge and its payment summary.
pub struct Charge {
    pub order: String,
    pub charge: String,
    pub summary: String,
}

/// A Stripe gateway at the simulator and `orders` orders with one 100.00 charge each.
pub async fn orders(api: &Api, simulator: &str, orders: usize, tag: &str) -> Vec<Charge> {
    let gateway = api
        .created(
            "/sobjects/PaymentGateway",
            json!({"PaymentGatewayName": "Stripe (simulated)", "ProviderType": "Stripe",
                   "BaseUrl": simulator, "MerchantCredentialEnv": SECRET_ENV, "TimeoutMs": 1000}),
        )
        .await;
    let mut charges = Vec::new();
    for i in 0..orders {
        let order = api
            .created(
                "/sobjects/OrderSummary",
                json!({"OrderNumber": format!("{tag}-{i}"), "CurrencyIsoCode": "USD"}),
            )
            .await;
        let charge = format!("ch_{tag}_{i}");
        let payment = api
            .created(
                "/sobjects/Payment",
                json!({"PaymentGatewayId": gateway, "Amount": 100.00, "CurrencyIsoCode": "USD",
                       "GatewayRefNumber": charge}),
            )
            .await;
        let summary = api
            .created(
                "/commerce/order-management/order-payment-summaries",
                json!({"orderSummaryId": order, "paymentIds": [payment]}),
            )
            .await;
        charges.push(Charge {
            order,
            charge,
            summary,
        });
    }
    charges
}

/// An amount of at most 5.99 whose cents pick the simulator's answer (SPEC §4): mostly
/// successes, some declines, refusals, reviews, rate limits, answers cut after the refund
/// was made, requests that get no answer (the gateway times out; reconciliation looks them
/// up), and pending refunds that succeed or fail later.
pub fn amount(rng: &mut StdRng) -> String {
    const ROWS: [u32; 9] = [91, 92, 93, 94, 95, 96, 97, 98, 99];
    let cents = if rng.random_bool(0.6) {
        rng.random_range(1..91)
    } else {
        ROWS[rng.random_range(0..ROWS.len())]
    };
    format!("{}.{cents:02}", rng.random_range(0..6))
}

/// Waits (within `limit`) until every operation of `ops` has finished and no refund of
/// `charges` is Draft or Pending. Finished is Complete — or, with `given_up_allowed`, failed
/// for good by the rescue limit (`refunds_queue::MAX_RESCUES`: its process died under it
/// that often), which hands back what it held. Answers how many were given up.
pub async fn wait_final(
    api: &Api,
    db: &refunds_store::Db,
    ops: &[String],
    charges: &[Charge],
    limit: Duration,
    seed: u64,
    given_up_allowed: bool,
) -> usize {
    let deadline = Instant::now() + limit;
    let mut given_up = 0;
    for op in ops {
        loop {
            let bo = api
                .get(&format!("/sobjects/BackgroundOperation/{op}"))
                .await;
            if bo["Status"] == "Complete" {
                break;
            }
            if given_up_allowed && bo["Status"] == "Error" {
                let rescues: i64 = sqlx::query_scalar(
                    "SELECT CAST(rescue_count AS BIGINT) FROM background_operations \
                     WHERE id = $1 AND status = 'Error' AND retry_scheduled = 0",
                )
                .bind(op)
                .fetch_optional(db.pool())
                .await
                .expect("the operation's row")
                .unwrap_or(0);
                if rescues > refunds_queue::MAX_RESCUES {
                    given_up += 1;
                    break;
                }
            }
            assert!(Instant::now() < deadline, "seed {seed}: not finished: {bo}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for c in charges {
        loop {
            let open: Vec<Value> = api
                .refunds_of(&c.summary)
                .await
                .into_iter()
                .filter(|r| r["Status"] == "Draft" || r["Status"] == "Pending")
                .collect();
            if open.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {seed}: refunds still open: {open:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    given_up
}

/// The checks, once everything is final and the simulator is stopped.
pub async fn assert_books_equal_ledger(api: &Api, charges: &[Charge], ledger: &Path, seed: u64) {
    let sim = refunds_simulator::Simulator::open(ledger, Duration::ZERO)
        .await
        .expect("open the ledger");
    let rows = sim.refunds().await.expect("ledger");
    assert_each_made_once(&rows, seed);
    let settled = rows.iter().filter(|r| r.status == "succeeded").count();
    assert!(settled > 0, "seed {seed}: no refund reached the provider");
    let mut processed = 0;
    for c in charges {
        for refund in api.refunds_of(&c.summary).await {
            processed += usize::from(assert_refund_matches(&rows, &refund, seed));
        }
        let summary = api
            .get(&format!("/sobjects/OrderPaymentSummary/{}", c.summary))
            .await;
        assert_charge_matches(&rows, &c.charge, &summary, seed);
    }
    assert_eq!(
        processed, settled,
        "seed {seed}: paid refunds the service does not know"
    );
    eprintln!("seed {seed}: {settled} refunds paid, each once, the books equal to the ledger");
}

/// A number from the environment.
pub fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}
