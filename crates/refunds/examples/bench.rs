//! Measures the cost of a durable enqueue and the end-to-end refund rate, and prints figures.
//!
//! ```sh
//! cargo run --release -p refunds --example bench -- [DATABASE_URL] [REQUESTS] [CONCURRENCY]
//! ```
//! Without a URL it uses a fresh SQLite file in a temporary directory. A PostgreSQL URL must
//! name an empty scratch database (the benchmark migrates it and leaves its rows behind).
//!
//! Figures: (1) the yardstick — one-row durable insert transactions, one after another;
//! (2) ensure-refunds POSTs over real HTTP, `CONCURRENCY` in flight, each a durable enqueue
//! of a validated request; (3) the workers draining those operations with the simulator;
//! (4) the process's peak resident memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use refunds_api::{router, AppState};
use refunds_gateway::{Registry, SimulatorConfig};
use refunds_queue::{QueueConfig, Runner};
use refunds_store::Db;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let r = client.post(url).json(&body).send().await.expect("request");
    assert!(r.status().is_success(), "status {}", r.status());
    r.json().await.expect("json")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = args
        .first()
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("bench.db").display()));
    let requests: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);

    let db = Db::connect(&url).await.expect("connect");
    db.migrate().await.expect("migrate");
    println!(
        "backend: {:?}  requests: {requests}  concurrency: {concurrency}",
        db.backend()
    );

    // (1) Yardstick: the cost of one durable one-row transaction on this machine.
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_yardstick (id BIGINT PRIMARY KEY, v TEXT NOT NULL)",
    )
    .execute(db.pool())
    .await
    .expect("yardstick table");
    let n = 300;
    let started = Instant::now();
    for i in 0..n {
        let mut tx = db.begin().await.expect("begin");
        sqlx::query("INSERT INTO bench_yardstick (id, v) VALUES ($1, 'x')")
            .bind(i as i64 + rand_base())
            .execute(tx.conn())
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    let per = started.elapsed().as_secs_f64() * 1000.0 / n as f64;
    println!(
        "yardstick: one-row durable insert transaction, sequential: {per:.3} ms each ({:.0}/s)",
        1000.0 / per
    );

    let config = QueueConfig::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(AppState::new(db.clone(), config.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}/services/data/v58.0");
    let (client_id, _) =
        refunds_api::auth::create_client(&db, &format!("bench-{}", std::process::id()))
            .await
            .expect("create client")
            .expect("new client");
    let (token, _) = refunds_api::auth::issue_token(
        &db,
        &client_id,
        "005000000000001AAA",
        Duration::from_secs(3600),
    )
    .await
    .expect("token");
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .default_headers(auth)
        .build()
        .expect("client");

    // Load one order per request, so operations are not serialised by order summary.
    let gateway = post(
        &client,
        format!("{base}/sobjects/PaymentGateway"),
        json!({"PaymentGatewayName": "Sim", "ProviderType": "Simulator"}),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut orders = Vec::with_capacity(requests);
    for i in 0..requests {
        let order = post(
            &client,
            format!("{base}/sobjects/OrderSummary"),
            json!({"OrderNumber": format!("B{i}")}),
        )
        .await["id"]
            .as_str()
            .expect("id")
            .to_string();
        let payment = post(
            &client,
            format!("{base}/sobjects/Payment"),
            json!({"PaymentGatewayId": gateway, "Amount": 100.00, "GatewayRefNumber": format!("ch_{i}")}),
        )
        .await["id"]
            .as_str()
            .expect("id")
            .to_string();
        post(
            &client,
            format!("{base}/commerce/order-management/order-payment-summaries"),
            json!({"orderSummaryId": order, "paymentIds": [payment]}),
        )
        .await;
        orders.push(order);
    }

    // (2) Durable enqueues over HTTP.
    let grouped = db.group_commits();
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(requests);
    for order in &orders {
        let permit = permits.clone().acquire_owned().await.expect("permit");
        let client = client.clone();
        let url = format!("{base}/commerce/order-management/order-summaries/{order}/async-actions/ensure-refunds-async");
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            post(&client, url, json!({"excessFundsAmount": 12.34})).await;
            drop(permit);
            t.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for t in tasks {
        latencies.push(t.await.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "enqueue over HTTP: {:.0} requests/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        requests as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    report_groups(&db, grouped);

    // (3) Workers drain the queue: plan, reserve, simulator call, settle, per operation.
    let (stop_tx, stop_rx) = watch::channel(false);
    let runner = Runner::new(
        db.clone(),
        config,
        Registry::new(SimulatorConfig::default()).expect("an HTTP client"),
    );
    let grouped = db.group_commits();
    let started = Instant::now();
    let workers = tokio::spawn(runner.run(stop_rx));
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM background_operations WHERE status <> 'Complete'",
        )
        .fetch_one(db.pool())
        .await
        .expect("count");
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "workers: {requests} operations refunded end to end in {elapsed:.2} s ({:.0}/s)",
        requests as f64 / elapsed
    );
    report_groups(&db, grouped);
    let _ = stop_tx.send(true);
    let _ = workers.await;
    println!("peak resident memory: {:.1} MiB", peak_rss_mib());
}

fn rand_base() -> i64 {
    i64::from(std::process::id()) * 1_000_000
        + i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() % 1_000_000),
        )
        .unwrap_or(0)
}

/// SQLite's group commit since `before`: how many transactions each fsync carried.
fn report_groups(db: &Db, before: refunds_store::GroupCommits) {
    let now = db.group_commits();
    let (commits, members) = (now.commits - before.commits, now.members - before.members);
    if commits > 0 {
        println!(
            "  SQLite group commit: {members} transactions in {commits} COMMITs ({:.1} per fsync)",
            members as f64 / commits as f64
        );
    }
}
