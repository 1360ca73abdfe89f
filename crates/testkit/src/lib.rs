//! Test support: a fresh database per test on each backend, the app in process (with a
//! standard token for requests and an administrative one for creating payment gateways,
//! and loopback among the gateway hosts, where the stand-in providers listen), and
//! fixtures that load an order through the public API.
//!
//! PostgreSQL tests read `REFUNDS_TEST_POSTGRES_URL` (a server URL whose user may create
//! databases). Without it they are skipped with a notice — unless `CI=true`, where a
//! missing database fails the test.

use std::time::{Duration, Instant};

pub mod ledger;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use refunds_api::auth::Role;
use refunds_api::{router, AppState};
use refunds_gateway::{HostPolicy, Registry, SimulatorConfig};
use refunds_queue::{reconcile_due, QueueConfig, Runner};
use refunds_store::Db;
use serde_json::{json, Value};
use sqlx::Connection;
use tower::ServiceExt;

pub use refunds_store::Backend;

/// The API version most tests speak.
pub const V: &str = "/services/data/v58.0";

/// Runs an `async fn(Backend)` test once per backend: `backend_tests!(name, …);`
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A database that disappears with the test.
pub struct TestDb {
    pub db: Db,
    /// The database's URL, for processes that open it themselves.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A new, migrated database; `None` when PostgreSQL is not configured (outside CI).
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite:{}", dir.path().join("refunds.db").display());
                let db = Db::connect(&url).await.expect("open sqlite");
                db.migrate().await.expect("migrate sqlite");
                Some(TestDb {
                    db,
                    url,
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let admin = postgres_url()?;
                let name = format!("refunds_test_{:016x}", rand::random::<u64>());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to the PostgreSQL test server");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let url = with_database(&admin, &name);
                let db = Db::connect(&url).await.expect("open postgres");
                db.migrate().await.expect("migrate postgres");
                Some(TestDb {
                    db,
                    url,
                    _dir: None,
                    pg: Some((admin, name)),
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Drop runs outside async; a short-lived runtime on its own thread drops the database.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .execute(&mut conn)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

fn postgres_url() -> Option<String> {
    match std::env::var("REFUNDS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but REFUNDS_TEST_POSTGRES_URL is not set: PostgreSQL tests are required in CI");
            }
            eprintln!("notice: REFUNDS_TEST_POSTGRES_URL is not set; skipping a PostgreSQL test");
            None
        }
    }
}

/// Replaces the database name of a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host = path_start.map_or(base, |i| &base[..i]);
    match query {
        Some(q) => format!("{host}/{name}?{q}"),
        None => format!("{host}/{name}"),
    }
}

/// Timings short enough for tests.
pub fn fast_config() -> QueueConfig {
    QueueConfig {
        concurrency: 8,
        lease: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        retry_limit: 3,
        retry_backoff: Duration::from_millis(50),
        provider_attempts: 4,
        provider_backoff: Duration::from_millis(1),
        reconcile_delay: Duration::from_millis(30),
        reconcile_max_delay: Duration::from_millis(200),
        reconcile_give_up: Duration::from_secs(60),
        ..QueueConfig::default()
    }
}

/// The app in process: router, runner and the built-in simulator.
pub struct TestApp {
    pub db: Db,
    pub router: Router,
    pub runner: Runner,
    pub registry: Registry,
    pub config: QueueConfig,
    /// A valid bearer token of a standard (not administrative) client; `call` sends it
    /// unless the request names its own `Authorization`.
    pub token: String,
    /// A bearer token of an administrative client: [`TestApp::gateway`] creates payment
    /// gateways with it, as only admins may.
    pub admin_token: String,
    /// The app's authentication state (login throttle and argon2 counters).
    pub auth: std::sync::Arc<refunds_api::auth::Auth>,
    _test_db: TestDb,
}

/// The hosts tests' gateways may call: the providers' public hosts and loopback, where
/// the stand-in providers listen.
pub fn test_gateway_hosts() -> HostPolicy {
    HostPolicy::with_loopback()
}

/// An order loaded through the API: one payment per summary, oldest first.
#[derive(Clone, Debug)]
pub struct Order {
    pub id: String,
    pub gateway: String,
    pub payments: Vec<String>,
    pub summaries: Vec<String>,
}

impl TestApp {
    pub async fn start(backend: Backend) -> Option<TestApp> {
        TestApp::with_config(backend, fast_config()).await
    }

    pub async fn with_config(backend: Backend, config: QueueConfig) -> Option<TestApp> {
        TestApp::with_state(backend, config, |state| state).await
    }

    /// The app with its built-in simulator configured (latency, key lifetime).
    pub async fn with_simulator(
        backend: Backend,
        config: QueueConfig,
        simulator: SimulatorConfig,
    ) -> Option<TestApp> {
        TestApp::build(backend, config, simulator, |state| state).await
    }

    /// An app whose [`AppState`] the test adjusts (e.g. its login limits) before the
    /// router is built.
    pub async fn with_state(
        backend: Backend,
        config: QueueConfig,
        adjust: impl FnOnce(AppState) -> AppState,
    ) -> Option<TestApp> {
        TestApp::build(backend, config, SimulatorConfig::default(), adjust).await
    }

    async fn build(
        backend: Backend,
        config: QueueConfig,
        simulator: SimulatorConfig,
        adjust: impl FnOnce(AppState) -> AppState,
    ) -> Option<TestApp> {
        let test_db = TestDb::new(backend).await?;
        let db = test_db.db.clone();
        let registry = Registry::new(simulator, test_gateway_hosts()).expect("registry");
        let runner = Runner::new(db.clone(), config.clone(), registry.clone());
        let state = adjust(AppState {
            gateway_hosts: std::sync::Arc::new(test_gateway_hosts()),
            ..AppState::new(db.clone(), config.clone())
        });
        let auth = state.auth.clone();
        let router = router(state);
        let token = client_token(&db, "tests", Role::Standard).await;
        let admin_token = client_token(&db, "tests-admin", Role::Admin).await;
        Some(TestApp {
            db,
            router,
            runner,
            registry,
            config,
            token,
            admin_token,
            auth,
            _test_db: test_db,
        })
    }

    /// Sends one request through the router; answers the status and the JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            request = request.header("authorization", format!("Bearer {}", self.token));
        }
        let request = request
            .header("content-type", "application/json")
            .body(Body::from(body.unwrap_or("").to_string()))
            .expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router answers");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&body.to_string()), &[])
            .await
    }

    /// Creates a record and returns its id, failing the test on any error.
    pub async fn create(&self, ty: &str, body: Value) -> String {
        let (status, value) = self.post(&format!("{V}/sobjects/{ty}"), &body).await;
        assert_eq!(status, StatusCode::CREATED, "create {ty}: {value}");
        value["id"].as_str().expect("id").to_string()
    }

    /// Creates a payment gateway with the administrative token and returns its id,
    /// failing the test on any error.
    pub async fn gateway(&self, body: Value) -> String {
        let bearer = format!("Bearer {}", self.admin_token);
        let (status, value) = self
            .call(
                Method::POST,
                &format!("{V}/sobjects/PaymentGateway"),
                Some(&body.to_string()),
                &[("authorization", bearer.as_str())],
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "create PaymentGateway: {value}"
        );
        value["id"].as_str().expect("id").to_string()
    }

    /// Sends one request with the administrative token.
    pub async fn call_as_admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let bearer = format!("Bearer {}", self.admin_token);
        self.call(method, path, body, &[("authorization", bearer.as_str())])
            .await
    }

    /// Reads a record, failing the test if it is missing.
    pub async fn record(&self, ty: &str, id: &str) -> Value {
        let (status, value) = self.get(&format!("{V}/sobjects/{ty}/{id}")).await;
        assert_eq!(status, StatusCode::OK, "read {ty} {id}: {value}");
        value
    }

    /// An order in `currency` with one built-in Simulator payment (and summary) per amount.
    pub async fn order(&self, currency: &str, amounts: &[&str]) -> Order {
        let gateway = self
            .gateway(json!({"PaymentGatewayName": "Simulator", "ProviderType": "Simulator"}))
            .await;
        self.order_on(&gateway, currency, amounts).await
    }

    /// An order whose payments (one per amount, each in its own summary) go through
    /// `gateway`; their GatewayRefNumbers are `ch_test_<n>`.
    pub async fn order_on(&self, gateway: &str, currency: &str, amounts: &[&str]) -> Order {
        let gateway = gateway.to_string();
        let id = self
            .create(
                "OrderSummary",
                json!({"OrderNumber": "T-1", "CurrencyIsoCode": currency}),
            )
            .await;
        let mut payments = Vec::new();
        let mut summaries = Vec::new();
        for (n, amount) in amounts.iter().enumerate() {
            let payment = self
                .create(
                    "Payment",
                    json!({
                        "PaymentGatewayId": gateway,
                        "Amount": Value::Number(amount.parse().expect("number")),
                        "CurrencyIsoCode": currency,
                        "GatewayRefNumber": format!("ch_test_{n}"),
                    }),
                )
                .await;
            let (status, value) = self
                .post(
                    &format!("{V}/commerce/order-management/order-payment-summaries"),
                    &json!({"orderSummaryId": id, "paymentIds": [payment]}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{value}");
            summaries.push(
                value["orderPaymentSummaryId"]
                    .as_str()
                    .expect("ops id")
                    .to_string(),
            );
            payments.push(payment);
            // Distinct creation milliseconds keep "oldest first" unambiguous.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Order {
            id,
            gateway,
            payments,
            summaries,
        }
    }

    pub async fn credit_memo(&self, order: &Order, amount: &str) -> String {
        self.create(
            "CreditMemo",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": Value::Number(amount.parse().expect("number"))}),
        )
        .await
    }

    pub async fn invoice(&self, order: &Order, amount: &str) -> String {
        self.create(
            "Invoice",
            json!({"ReferenceEntityId": order.id, "TotalAmountWithTax": Value::Number(amount.parse().expect("number"))}),
        )
        .await
    }

    pub fn ensure_path(order_id: &str) -> String {
        format!("{V}/commerce/order-management/order-summaries/{order_id}/async-actions/ensure-refunds-async")
    }

    /// POSTs ensure-refunds-async and returns the operation id, failing on anything but 201.
    pub async fn ensure(&self, order: &Order, body: Value) -> String {
        let (status, value) = self.post(&TestApp::ensure_path(&order.id), &body).await;
        assert_eq!(status, StatusCode::CREATED, "ensure-refunds: {value}");
        value["backgroundOperationId"]
            .as_str()
            .expect("operation id")
            .to_string()
    }

    /// Runs workers and reconciliation until no operation is waiting and no refund is
    /// under reconciliation (or `limit` passes, which fails the test).
    pub async fn settle(&self) {
        let started = Instant::now();
        loop {
            self.runner.run_once().await.expect("run operations");
            reconcile_due(&self.db, &self.config, &self.registry)
                .await
                .expect("reconcile");
            if self.pending_work().await == 0 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "work did not settle in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn pending_work(&self) -> i64 {
        let ops = self
            .scalar(
                "SELECT COUNT(*) FROM background_operations \
                 WHERE status IN ('New', 'Running', 'Scheduled')",
            )
            .await;
        let recon = self
            .scalar("SELECT COUNT(*) FROM refunds WHERE reconcile_state = 'pending'")
            .await;
        ops + recon
    }

    /// One integer from SQL (for assertions about rows the API has no list for).
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(&format!("SELECT CAST(({sql}) AS BIGINT)"))
            .fetch_one(self.db.pool())
            .await
            .expect("scalar query")
    }

    /// The ids of rows matching `sql` (`SELECT id FROM … WHERE …`), in the query's order.
    pub async fn ids(&self, sql: &str, bind: &str) -> Vec<String> {
        sqlx::query_scalar::<_, String>(sql)
            .bind(bind)
            .fetch_all(self.db.pool())
            .await
            .expect("ids query")
    }

    /// Starts a worker (with `config`) whose provider takes 30 s, waits until it is inside
    /// the provider call (the `Initiated` log row is written), and kills it there: its
    /// refunds are left `Draft` with their keys and their money reserved, as after a crash.
    pub async fn kill_worker_mid_call(&self, config: QueueConfig) {
        let slow = Registry::new(
            SimulatorConfig {
                latency: Duration::from_secs(30),
                ..SimulatorConfig::default()
            },
            HostPolicy::with_loopback(),
        )
        .expect("registry");
        let doomed = Runner::new(self.db.clone(), config, slow);
        let task = tokio::spawn(async move { doomed.run_once().await });
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .scalar(
                "SELECT COUNT(*) FROM payment_gateway_logs WHERE interaction_status = 'Initiated'",
            )
            .await
            == 0
        {
            assert!(
                Instant::now() < deadline,
                "the worker never called the provider"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        let _ = task.await;
    }

    /// The refunds of an operation, as API records, by leg.
    pub async fn refunds_of(&self, operation_id: &str) -> Vec<Value> {
        let ids = self
            .ids(
                "SELECT id FROM refunds WHERE background_operation_id = $1 ORDER BY leg",
                operation_id,
            )
            .await;
        let mut out = Vec::new();
        for id in ids {
            out.push(self.record("Refund", &id).await);
        }
        out
    }

    /// The ids of a refund's RefundLinePayments (one once its money is refunded).
    pub async fn lines_of(&self, refund_id: &str) -> Vec<String> {
        self.ids(
            "SELECT id FROM refund_line_payments WHERE refund_id = $1",
            refund_id,
        )
        .await
    }

    /// The gateway logs of a refund, as API records, in the order they were written. Rows
    /// written within one millisecond are ordered by when they were finished, which is
    /// causal: a row is always finished before the next one is started.
    pub async fn logs_of(&self, refund_id: &str) -> Vec<Value> {
        let ids = self
            .ids(
                "SELECT id FROM payment_gateway_logs WHERE referenced_entity_id = $1 \
                 ORDER BY created_date, last_modified_date, id",
                refund_id,
            )
            .await;
        let mut out = Vec::new();
        for id in ids {
            out.push(self.record("PaymentGatewayLog", &id).await);
        }
        out
    }

    /// The process exceptions of an order summary, as API records, oldest first.
    pub async fn exceptions_of(&self, order_id: &str) -> Vec<Value> {
        let ids = self
            .ids(
                "SELECT id FROM process_exceptions WHERE order_summary_id = $1 ORDER BY created_date, id",
                order_id,
            )
            .await;
        let mut out = Vec::new();
        for id in ids {
            out.push(self.record("ProcessException", &id).await);
        }
        out
    }
}

/// A token of a new client with `role` (its user id is the client's own).
async fn client_token(db: &Db, name: &str, role: Role) -> String {
    let (client_id, _) = refunds_api::auth::create_client(db, name, role)
        .await
        .expect("create client")
        .expect("new client");
    let user_id =
        sqlx::query_scalar::<_, String>("SELECT user_id FROM api_clients WHERE client_id = $1")
            .bind(&client_id)
            .fetch_one(db.pool())
            .await
            .expect("the client's user id");
    let (token, _) =
        refunds_api::auth::issue_token(db, &client_id, &user_id, Duration::from_secs(3600))
            .await
            .expect("issue token");
    token
}

/// The Stripe-compatible simulator (`refunds simulator`) on a loopback port, with its
/// ledger in a temporary file: real HTTP between the service and a provider.
pub struct StripeSimulator {
    pub base_url: String,
    pub simulator: refunds_simulator::Simulator,
    _server: LocalServer,
    _dir: tempfile::TempDir,
}

impl StripeSimulator {
    pub async fn start() -> StripeSimulator {
        let dir = tempfile::tempdir().expect("temp dir");
        let simulator =
            refunds_simulator::Simulator::open(&dir.path().join("ledger.db"), Duration::ZERO)
                .await
                .expect("open simulator ledger");
        let server = LocalServer::start(simulator.clone().router()).await;
        StripeSimulator {
            base_url: server.base_url.clone(),
            simulator,
            _server: server,
            _dir: dir,
        }
    }
}

/// A router served on a free loopback port (a provider stand-in), stopped when dropped.
pub struct LocalServer {
    pub base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    pub async fn start(router: axum::Router) -> LocalServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        LocalServer { base_url, task }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JSON money value as its exact text (`10.10`), for assertions.
pub fn money_text(v: &Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
