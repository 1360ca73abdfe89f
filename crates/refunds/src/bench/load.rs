//! The HTTP side of the bench: an API client with a bearer token, the orders it loads,
//! and two load generators for ensure-refunds-async — a closed loop (N clients, each
//! sending its next request when the last one is answered) and an open loop (requests
//! offered at a fixed rate, whether or not the service keeps up).

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const V: &str = "/services/data/v58.0";
/// Each request refunds one cent: the simulator answers success for it (SPEC §4), and the
/// orders' payments cover far more requests than a run sends.
const ENSURE_BODY: &str = r#"{"excessFundsAmount": "0.01"}"#;
/// What each order's one payment captured.
const CAPTURED: &str = "10000.00";
/// No request of the bench waits longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one `serve`, logged in.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")
}

impl Api {
    /// Logs in with the client_credentials grant.
    pub async fn login(
        http: &reqwest::Client,
        base: &str,
        client_id: &str,
        client_secret: &str,
    ) -> anyhow::Result<Api> {
        let answer: Value = http
            .post(format!("{base}/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret),
            ])
            .send()
            .await?
            .json()
            .await?;
        let token = answer["access_token"]
            .as_str()
            .context("the token endpoint answered no access_token")?
            .to_string();
        Ok(Api {
            http: http.clone(),
            base: base.to_string(),
            token,
        })
    }

    /// The same login against another `serve` (the token lives in the database).
    pub fn on(&self, base: &str) -> Api {
        Api {
            base: base.to_string(),
            ..self.clone()
        }
    }

    async fn create(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{V}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {answer}");
        Ok(answer)
    }

    async fn load_order(&self, gateway: &str, n: usize) -> anyhow::Result<String> {
        let order = self
            .create(
                "/sobjects/OrderSummary",
                json!({"OrderNumber": format!("B{n:07}")}),
            )
            .await?;
        let order = order["id"].as_str().context("no order id")?.to_string();
        let amount = serde_json::Number::from_str(CAPTURED).context("the captured amount")?;
        let payment = self
            .create(
                "/sobjects/Payment",
                json!({"PaymentGatewayId": gateway, "Amount": amount, "GatewayRefNumber": format!("ch_bench_{n}")}),
            )
            .await?;
        let payment = payment["id"].as_str().context("no payment id")?;
        self.create(
            "/commerce/order-management/order-payment-summaries",
            json!({"orderSummaryId": order, "paymentIds": [payment]}),
        )
        .await?;
        Ok(order)
    }

    /// Loads `count` orders, each with one payment of the built-in simulator captured in
    /// its own order payment summary, `concurrency` at a time.
    pub async fn load_orders(&self, count: usize, concurrency: usize) -> anyhow::Result<Orders> {
        let gateway = self
            .create(
                "/sobjects/PaymentGateway",
                json!({"PaymentGatewayName": "Bench simulator", "ProviderType": "Simulator"}),
            )
            .await?;
        let gateway = gateway["id"].as_str().context("no gateway id")?.to_string();
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (api, gateway, next) = (self.clone(), gateway.clone(), next.clone());
            tasks.spawn(async move {
                let mut loaded = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return anyhow::Ok(loaded);
                    }
                    loaded.push((n, api.load_order(&gateway, n).await?));
                }
            });
        }
        let mut all = Vec::with_capacity(count);
        while let Some(joined) = tasks.join_next().await {
            all.extend(joined.context("an order loader stopped")??);
        }
        all.sort();
        Ok(Orders {
            ids: all.into_iter().map(|(_, id)| id).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// POSTs ensure-refunds-async for `order`: the operation id on 201, else why not.
    pub async fn ensure(&self, order: &str) -> Result<String, String> {
        let url = format!(
            "{}{V}/commerce/order-management/order-summaries/{order}/async-actions/ensure-refunds-async",
            self.base
        );
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(ENSURE_BODY)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|e| e.to_string())?;
        match answer["backgroundOperationId"].as_str() {
            Some(id) if status == 201 => Ok(id.to_string()),
            _ => Err(format!("{status} {answer}")),
        }
    }
}

/// The loaded orders; each request takes the next one in turn, so consecutive requests
/// land on different orders.
pub struct Orders {
    ids: Vec<String>,
    next: AtomicUsize,
}

impl Orders {
    pub fn next(&self) -> &str {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.ids[n % self.ids.len()]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// What a load generator saw.
#[derive(Debug, Default)]
pub struct Load {
    /// Requests answered 201.
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Open loop: requests due that were not sent because `max_in_flight` were pending.
    pub skipped: u64,
    pub seconds: f64,
    /// Latency of each 201, sorted, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// False when a count-bounded run reached its time bound first.
    pub finished: bool,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        rate(self.ok, self.seconds)
    }

    fn add(&mut self, answer: Result<Duration, String>) {
        match answer {
            Ok(latency) => {
                self.ok += 1;
                self.latencies_ms.push(latency.as_secs_f64() * 1000.0);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn done(mut self, started: Instant) -> Load {
        self.seconds = started.elapsed().as_secs_f64();
        self.latencies_ms.sort_by(f64::total_cmp);
        self
    }
}

pub fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank; 0 when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// When a closed loop stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many requests were sent, or when the bound passes.
    Count { requests: u64, bound: Duration },
}

/// `clients` concurrent clients, each sending its next request when its last is answered.
pub async fn closed_loop(api: &Api, orders: &Arc<Orders>, clients: usize, stop: Stop) -> Load {
    let started = Instant::now();
    let (deadline, budget) = match stop {
        Stop::After(d) => (started + d, u64::MAX),
        Stop::Count { requests, bound } => (started + bound, requests),
    };
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..clients.max(1) {
        let (api, orders, sent) = (api.clone(), orders.clone(), sent.clone());
        tasks.spawn(async move {
            let mut load = Load::default();
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < budget {
                let t = Instant::now();
                load.add(api.ensure(orders.next()).await.map(|_| t.elapsed()));
            }
            load
        });
    }
    let mut total = Load::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(part) => merge(&mut total, part),
            Err(e) => total.add(Err(format!("a client task failed: {e}"))),
        }
    }
    total.finished = match stop {
        Stop::After(_) => true,
        Stop::Count { requests, .. } => total.ok + total.errors >= requests,
    };
    total.done(started)
}

fn merge(total: &mut Load, part: Load) {
    total.ok += part.ok;
    total.errors += part.errors;
    if total.first_error.is_none() {
        total.first_error = part.first_error;
    }
    total.latencies_ms.extend(part.latencies_ms);
}

/// Requests offered at `per_second` for `run`, each sent at its due time whatever the
/// service does, at most `max_in_flight` unanswered (a request due beyond that is counted
/// as skipped: the generator, not the service, would be the limit).
pub async fn open_loop(
    api: &Api,
    orders: &Arc<Orders>,
    per_second: f64,
    run: Duration,
    max_in_flight: usize,
) -> Load {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    let mut total = Load::default();
    let mut due_sent: u64 = 0;
    loop {
        let elapsed = started.elapsed();
        let due = ((elapsed.min(run).as_secs_f64() * per_second) as u64).max(1);
        while due_sent < due {
            due_sent += 1;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                total.skipped += 1;
                continue;
            };
            let (api, orders) = (api.clone(), orders.clone());
            tasks.spawn(async move {
                let t = Instant::now();
                let answer = api.ensure(orders.next()).await.map(|_| t.elapsed());
                drop(permit);
                answer
            });
        }
        while let Some(joined) = tasks.try_join_next() {
            total.add(joined.unwrap_or_else(|e| Err(format!("a request task failed: {e}"))));
        }
        if elapsed >= run {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Requests still unanswered are bounded by the client's request timeout.
    while let Some(joined) = tasks.join_next().await {
        total.add(joined.unwrap_or_else(|e| Err(format!("a request task failed: {e}"))));
    }
    total.finished = true;
    total.done(started)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
