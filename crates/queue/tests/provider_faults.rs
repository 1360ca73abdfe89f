//! Provider faults: a fault-injecting proxy between the Stripe adapter and the
//! Stripe-compatible simulator (`refunds simulator`), for a seeded share of calls —
//! refunds and lookups alike — drops the connection before forwarding, forwards and then
//! drops before answering, stalls past the gateway's timeout (and forwards late), answers
//! 500 (before or after forwarding), 429, garbage, or truncated JSON. A mixed load of
//! refunds goes through it; once reconciliation is done, for every charge the simulator's
//! ledger equals what the service recorded, no refund was paid twice, and no money is
//! left reserved.
//!
//! Small by default (40 orders, seconds). `REFUNDS_FAULT_ORDERS=400` runs a larger load;
//! `REFUNDS_FAULT_SEED=<n>` replays a run (the seed is printed at the start of each).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use refunds_queue::reconcile_due;
use refunds_testkit::ledger::{
    assert_charge_matches, assert_each_made_once, assert_refund_matches,
};
use refunds_testkit::{backend_tests, fast_config, Backend, StripeSimulator, TestApp, V};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    None,
    DropBeforeForward,
    DropAfterForward,
    StallThenForward,
    Status500,
    Status500AfterForward,
    Status429,
    Garbage,
    TruncatedJson,
}

const FAULTS: [Fault; 8] = [
    Fault::DropBeforeForward,
    Fault::DropAfterForward,
    Fault::StallThenForward,
    Fault::Status500,
    Fault::Status500AfterForward,
    Fault::Status429,
    Fault::Garbage,
    Fault::TruncatedJson,
];

/// The share of calls that get a fault.
const FAULT_SHARE: f64 = 0.3;
/// The gateway's timeout; a stall lasts longer.
const TIMEOUT_MS: u64 = 300;
const STALL: Duration = Duration::from_millis(TIMEOUT_MS + 250);

struct FaultProxy {
    base_url: String,
    seen: Arc<Mutex<BTreeMap<(String, Fault), usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The decisions, a function of the seed and of which call this is (method, idempotency
/// key or query, and how many times that call came before), so a seed replays the same
/// faults for the same calls whatever order concurrent calls arrive in.
struct Decider {
    seed: u64,
    calls: HashMap<String, u64>,
}

impl Decider {
    fn decide(&mut self, call: &str) -> Fault {
        let n = self.calls.entry(call.to_string()).or_default();
        *n += 1;
        // FNV-1a of the call, mixed with the seed and the repeat count.
        let hash = call.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ hash ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if rng.random_bool(FAULT_SHARE) {
            FAULTS[rng.random_range(0..FAULTS.len())]
        } else {
            Fault::None
        }
    }
}

impl FaultProxy {
    async fn start(upstream: SocketAddr, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let decider = Arc::new(Mutex::new(Decider {
            seed,
            calls: HashMap::new(),
        }));
        let noted = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (decider, noted) = (decider.clone(), noted.clone());
                tokio::spawn(async move {
                    let _ = serve(client, upstream, decider, noted).await;
                });
            }
        });
        FaultProxy {
            base_url,
            seen,
            task,
        }
    }

    fn seen(&self) -> BTreeMap<(String, Fault), usize> {
        self.seen.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 request as read off the socket.
struct HttpRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request again, asking the upstream to close after its answer (so the answer
    /// is read to its end).
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (k, v) in &self.headers {
            if !k.eq_ignore_ascii_case("connection") {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn read_request(client: &mut TcpStream) -> Option<HttpRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(HttpRequest {
        method,
        target,
        headers,
        body,
    })
}

/// Sends the request to the simulator and reads its whole answer.
async fn forward(upstream: SocketAddr, request: &HttpRequest) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await.ok()?;
    stream.write_all(&request.bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    Some(answer)
}

fn canned(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    decider: Arc<Mutex<Decider>>,
    seen: Arc<Mutex<BTreeMap<(String, Fault), usize>>>,
) -> Option<()> {
    let request = read_request(&mut client).await?;
    let call = match request.header("idempotency-key") {
        Some(key) => format!("{} {key}", request.method),
        None => format!("{} {}", request.method, request.target),
    };
    let fault = decider.lock().unwrap().decide(&call);
    *seen
        .lock()
        .unwrap()
        .entry((request.method.clone(), fault))
        .or_default() += 1;
    let api_error = r#"{"error": {"type": "api_error", "message": "injected"}}"#;
    let answer = match fault {
        Fault::DropBeforeForward => return Some(()),
        Fault::Status500 => canned("500 Internal Server Error", api_error),
        Fault::Status429 => canned(
            "429 Too Many Requests",
            r#"{"error": {"type": "rate_limit_error", "message": "injected"}}"#,
        ),
        Fault::StallThenForward => {
            tokio::time::sleep(STALL).await;
            forward(upstream, &request).await?
        }
        Fault::None => forward(upstream, &request).await?,
        Fault::DropAfterForward => {
            forward(upstream, &request).await?;
            return Some(());
        }
        Fault::Status500AfterForward => {
            forward(upstream, &request).await?;
            canned("500 Internal Server Error", api_error)
        }
        Fault::Garbage => {
            forward(upstream, &request).await?;
            canned("200 OK", "<html>\u{0}\u{1}garbage{{[")
        }
        Fault::TruncatedJson => {
            let answer = forward(upstream, &request).await?;
            let body_at = find(&answer, b"\r\n\r\n")? + 4;
            let cut = body_at + (answer.len() - body_at) / 2;
            answer[..cut].to_vec()
        }
    };
    client.write_all(&answer).await.ok()?;
    client.shutdown().await.ok()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The last two digits pick the simulator's answer (SPEC §4): mostly successes, and every
/// row that ends on its own (96 and 97 stall or cut by themselves, which the proxy covers).
fn cents(rng: &mut StdRng) -> i64 {
    const ROWS: [i64; 7] = [91, 92, 93, 94, 95, 98, 99];
    if rng.random_bool(0.6) {
        rng.random_range(0..91)
    } else {
        ROWS[rng.random_range(0..ROWS.len())]
    }
}

struct Charge {
    charge: String,
    summary: String,
}

async fn faults_leave_the_books_equal_to_the_ledger(backend: Backend) {
    let seed = env_number("REFUNDS_FAULT_SEED").unwrap_or_else(rand::random);
    let orders = env_number("REFUNDS_FAULT_ORDERS").unwrap_or(40);
    eprintln!(
        "provider faults on {backend:?}: seed {seed}, {orders} orders (replay: REFUNDS_FAULT_SEED={seed})"
    );
    let config = refunds_queue::QueueConfig {
        reconcile_give_up: Duration::from_secs(600),
        ..fast_config()
    };
    let Some(app) = TestApp::with_config(backend, config).await else {
        return;
    };
    let sim = StripeSimulator::start().await;
    let upstream: SocketAddr = sim
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("simulator address");
    let proxy = FaultProxy::start(upstream, seed).await;
    let env = match backend {
        Backend::Sqlite => "REFUNDS_SECRET_TEST_FAULTS_KEY_SQLITE",
        Backend::Postgres => "REFUNDS_SECRET_TEST_FAULTS_KEY_POSTGRES",
    };
    std::env::set_var(env, format!("sk_test_{seed:016x}"));
    let gateway = app
        .gateway(json!({"PaymentGatewayName": "Stripe behind faults", "ProviderType": "Stripe",
                   "BaseUrl": proxy.base_url, "MerchantCredentialEnv": env, "TimeoutMs": TIMEOUT_MS}))
        .await;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut charges: Vec<Charge> = Vec::new();
    let mut operations = Vec::new();
    for i in 0..orders {
        let order = app
            .create(
                "OrderSummary",
                json!({"OrderNumber": format!("F-{i}"), "CurrencyIsoCode": "USD"}),
            )
            .await;
        // One or two payments of 50.00, each in its own summary; a refund over 50.00
        // splits across both.
        let payments = rng.random_range(1..=2);
        for j in 0..payments {
            let charge = format!("ch_fault_{i}_{j}");
            let payment = app
                .create(
                    "Payment",
                    json!({"PaymentGatewayId": gateway, "Amount": 50.00, "CurrencyIsoCode": "USD",
                           "GatewayRefNumber": charge}),
                )
                .await;
            let (status, value) = app
                .post(
                    &format!("{V}/commerce/order-management/order-payment-summaries"),
                    &json!({"orderSummaryId": order, "paymentIds": [payment]}),
                )
                .await;
            assert!(status.is_success(), "{value}");
            let summary = value["orderPaymentSummaryId"]
                .as_str()
                .expect("summary")
                .to_string();
            charges.push(Charge { charge, summary });
        }
        let whole = rng.random_range(1..(50 * payments as i64 - 1));
        let amount = format!("{whole}.{:02}", cents(&mut rng));
        let (status, value) = app
            .post(
                &TestApp::ensure_path(&order),
                &json!({"excessFundsAmount": amount}),
            )
            .await;
        assert!(status.is_success(), "{amount}: {value}");
        operations.push(
            value["backgroundOperationId"]
                .as_str()
                .expect("op")
                .to_string(),
        );
    }

    // Workers and reconciliation until nothing is left open.
    let limit = Duration::from_secs(30 + orders);
    let started = Instant::now();
    loop {
        app.runner.run_once().await.expect("run operations");
        reconcile_due(&app.db, &app.config, &app.registry)
            .await
            .expect("reconcile");
        let open_ops = app
            .scalar("SELECT COUNT(*) FROM background_operations WHERE status IN ('New', 'Running') OR (status = 'Error' AND retry_scheduled = 1)")
            .await;
        let open_refunds = app
            .scalar("SELECT COUNT(*) FROM refunds WHERE status IN ('Draft', 'Pending')")
            .await;
        if open_ops + open_refunds == 0 {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "seed {seed}: {open_ops} operations and {open_refunds} refunds still open after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = proxy.seen();
    eprintln!("seed {seed}: calls by (method, fault): {seen:?}");

    // The service's books.
    let ids = app
        .ids("SELECT id FROM refunds WHERE id <> $1 ORDER BY id", "")
        .await;
    let mut service: HashMap<String, Value> = HashMap::new();
    for id in &ids {
        service.insert(id.clone(), app.record("Refund", id).await);
    }
    // The provider's ledger.
    let ledger = sim.simulator.refunds().await.expect("ledger");
    assert_each_made_once(&ledger, seed);
    for refund in service.values() {
        assert_refund_matches(&ledger, refund, seed);
    }
    // Every charge: the ledger's refunded total is the summary's, nothing stays reserved.
    let mut total = 0;
    for c in &charges {
        let summary = app.record("OrderPaymentSummary", &c.summary).await;
        total += assert_charge_matches(&ledger, &c.charge, &summary, seed);
    }
    let (count, sum) = sim.simulator.settled().await.expect("settled");
    assert_eq!(sum, total, "seed {seed}");
    let processed = service
        .values()
        .filter(|r| r["Status"] == "Processed")
        .count();
    assert_eq!(usize::try_from(count).unwrap(), processed, "seed {seed}");
    let faulted: usize = seen
        .iter()
        .filter(|((_, f), _)| *f != Fault::None)
        .map(|(_, n)| n)
        .sum();
    assert!(faulted > 0, "seed {seed}: no fault was injected");
    for op in &operations {
        let operation = app.record("BackgroundOperation", op).await;
        assert_eq!(operation["Status"], "Complete", "seed {seed}: {operation}");
    }
}

backend_tests!(faults_leave_the_books_equal_to_the_ledger);
