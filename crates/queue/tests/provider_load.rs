//! The provider under load, over real HTTP to the Stripe-compatible simulator behind a
//! stand-in that counts what reaches it: reconciliation runs many lookups at once (bounded),
//! one failing lookup stops no other, `Runner::run` waits for the lookups in flight, the
//! reconciler's counters reach `/metrics`; and a gateway's `MaxConcurrentRequests` and
//! `MaxRequestsPerSecond` hold at the provider across every worker and lookup.
//!
//! Refunds of 10.96 are made by the simulator on their first attempt, and then the
//! connection is cut mid-answer: the outcome is unknown, and reconciliation finds the
//! refund (`GET /v1/refunds`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{from_fn, Next};
use refunds_queue::QueueConfig;
use refunds_testkit::{
    backend_tests, fast_config, Backend, LocalServer, Order, StripeSimulator, TestApp,
};
use serde_json::json;
use tokio::sync::watch;
use tower::ServiceExt;

/// Every test here gives up after this long rather than hang.
const PATIENCE: Duration = Duration::from_secs(30);

/// What the stand-in saw, shared with its middleware.
#[derive(Default)]
struct Seen {
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    lookups_in_flight: AtomicUsize,
    most_lookups_in_flight: AtomicUsize,
    /// When each request arrived, and what it was (`METHOD /path`).
    arrivals: Mutex<Vec<(Instant, String)>>,
}

/// Counts a request as in flight until its answer leaves (or the caller goes away).
struct Counting(Arc<Seen>, bool);

impl Counting {
    fn new(seen: &Arc<Seen>, lookup: bool) -> Counting {
        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
        if lookup {
            let now = seen.lookups_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most_lookups_in_flight.fetch_max(now, Ordering::SeqCst);
        }
        Counting(seen.clone(), lookup)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.1 {
            self.0.lookups_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The simulator behind a middleware that notes every request, keeps each one `delay`
/// long, and, while `hold` is true, holds lookups until it turns false (`held` counts the
/// lookups being held).
struct StandIn {
    sim: StripeSimulator,
    base_url: String,
    seen: Arc<Seen>,
    hold: watch::Sender<bool>,
    held: watch::Receiver<usize>,
    _server: LocalServer,
}

impl StandIn {
    async fn start(delay: Duration, hold: bool) -> StandIn {
        let sim = StripeSimulator::start().await;
        let seen = Arc::new(Seen::default());
        let (hold_tx, hold_rx) = watch::channel(hold);
        let (held_tx, held_rx) = watch::channel(0usize);
        let held_tx = Arc::new(held_tx);
        let noted = seen.clone();
        let router =
            sim.simulator
                .clone()
                .router()
                .layer(from_fn(move |request: Request, next: Next| {
                    let (seen, mut hold, held) = (noted.clone(), hold_rx.clone(), held_tx.clone());
                    async move {
                        let what = format!("{} {}", request.method(), request.uri().path());
                        let lookup = what == "GET /v1/refunds";
                        let _counting = Counting::new(&seen, lookup);
                        seen.arrivals
                            .lock()
                            .unwrap()
                            .push((Instant::now(), what.clone()));
                        if lookup && *hold.borrow() {
                            held.send_modify(|n| *n += 1);
                            let _ = hold.wait_for(|h| !*h).await;
                            held.send_modify(|n| *n -= 1);
                        }
                        tokio::time::sleep(delay).await;
                        next.run(request).await
                    }
                }));
        let server = LocalServer::start(router).await;
        StandIn {
            sim,
            base_url: server.base_url.clone(),
            seen,
            hold: hold_tx,
            held: held_rx,
            _server: server,
        }
    }

    /// Waits until `n` lookups are being held at once.
    async fn wait_held(&self, n: usize) {
        let mut held = self.held.clone();
        tokio::time::timeout(PATIENCE, held.wait_for(|h| *h >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} lookups were never in flight at once"))
            .expect("stand-in alive");
    }

    fn release(&self) {
        self.hold.send_replace(false);
    }

    /// The most requests of any kind in flight at once.
    fn most_in_flight(&self) -> usize {
        self.seen.most_in_flight.load(Ordering::SeqCst)
    }

    fn most_lookups_in_flight(&self) -> usize {
        self.seen.most_lookups_in_flight.load(Ordering::SeqCst)
    }

    fn count(&self, what: &str) -> usize {
        self.seen
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, w)| w == what)
            .count()
    }

    /// Seconds from the first request to the last.
    fn span(&self) -> Duration {
        let arrivals = self.seen.arrivals.lock().unwrap();
        let first = arrivals.iter().map(|(t, _)| *t).min().expect("a request");
        let last = arrivals.iter().map(|(t, _)| *t).max().expect("a request");
        last - first
    }
}

/// A Stripe gateway at the stand-in, patient enough that a held lookup never times out.
async fn gateway(
    app: &TestApp,
    stand_in: &StandIn,
    env: &str,
    limits: serde_json::Value,
) -> String {
    std::env::set_var(env, format!("sk_test_{:016x}", rand::random::<u64>()));
    let mut body = json!({"PaymentGatewayName": "Stripe (stand-in)", "ProviderType": "Stripe",
                          "BaseUrl": stand_in.base_url, "MerchantCredentialEnv": env, "TimeoutMs": 60000});
    for (k, v) in limits.as_object().expect("an object") {
        body[k] = v.clone();
    }
    app.gateway(body).await
}

/// The environment variable of one test on one backend (both run at once in this process).
fn env_name(test: &str, backend: Backend) -> String {
    format!("REFUNDS_SECRET_TEST_LOAD_{test}_{backend:?}").to_uppercase()
}

/// `n` orders on `gateway`, each with one 100.00 payment and one operation of `amount`.
async fn orders(app: &TestApp, gateway: &str, n: usize, amount: &str) -> Vec<(Order, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let order = app.order_on(gateway, "USD", &["100.00"]).await;
        let op = app
            .ensure(
                &order,
                json!({"excessFundsAmount": amount.parse::<serde_json::Number>().unwrap()}),
            )
            .await;
        out.push((order, op));
    }
    out
}

async fn refund_statuses(app: &TestApp, ops: &[(Order, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (_, op) in ops {
        for r in app.refunds_of(op).await {
            out.push(r["Status"].as_str().unwrap_or("?").to_string());
        }
    }
    out
}

/// Waits (polling the records, within [`PATIENCE`]) until every operation's refund is Processed.
async fn wait_processed(app: &TestApp, ops: &[(Order, String)]) {
    let started = Instant::now();
    loop {
        let statuses = refund_statuses(app, ops).await;
        if statuses.len() == ops.len() && statuses.iter().all(|s| s == "Processed") {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "not all processed: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/metrics` of the app's runner: the value of each sample by name and labels.
async fn scrape(app: &TestApp) -> std::collections::HashMap<String, f64> {
    let response = refunds_api::metrics::router(app.db.clone(), app.runner.reconcile_stats())
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            (name.to_string(), value.parse::<f64>().expect("a number"))
        })
        .collect()
}

fn config(reconcile_concurrency: usize) -> QueueConfig {
    QueueConfig {
        concurrency: 10,
        reconcile_concurrency,
        ..fast_config()
    }
}

/// Runs the app's runner until the returned sender says stop.
fn run(app: &TestApp) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let runner = app.runner.clone();
    let handle = tokio::spawn(async move { runner.run(stopped).await.expect("the runner") });
    (stop, handle)
}

/// Six unknown outcomes, three lookups at once: the stand-in holds the lookups until three
/// are in flight together (so one at a time would never get there), and a fourth never
/// joins them; then all six are found, and `/metrics` counted them.
async fn lookups_run_concurrently_up_to_the_limit(backend: Backend) {
    let Some(app) = TestApp::with_config(backend, config(3)).await else {
        return;
    };
    let stand_in = StandIn::start(Duration::ZERO, true).await;
    let gw = gateway(&app, &stand_in, &env_name("CONCURRENT", backend), json!({})).await;
    let ops = orders(&app, &gw, 6, "10.96").await;
    let (stop, runner) = run(&app);

    stand_in.wait_held(3).await;
    assert_eq!(app.runner.reconcile_stats().counts().in_flight, 3);
    let metrics = scrape(&app).await;
    assert_eq!(
        metrics["refunds_reconcile_lookups_in_flight"], 3.0,
        "{metrics:?}"
    );
    // The other three are due too (every 30 ms); the bound keeps them out. (Absence can
    // only be shown by waiting: several passes' worth.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*stand_in.held.borrow(), 3, "a fourth lookup joined");

    stand_in.release();
    wait_processed(&app, &ops).await;
    assert_eq!(
        stand_in.most_lookups_in_flight(),
        3,
        "never more than three lookups at once"
    );
    assert_eq!(
        stand_in.count("POST /v1/refunds"),
        6,
        "no refund was sent again"
    );
    assert_eq!(
        stand_in.sim.simulator.settled().await.unwrap(),
        (6, 6 * 1096)
    );

    stop.send_replace(true);
    tokio::time::timeout(PATIENCE, runner)
        .await
        .expect("the runner stops")
        .expect("the runner did not panic");
    let metrics = scrape(&app).await;
    for (name, want) in [
        (r#"refunds_reconcile_lookups_total{result="found"}"#, 6.0),
        (
            r#"refunds_reconcile_lookups_total{result="not_found"}"#,
            0.0,
        ),
        (r#"refunds_reconcile_lookups_total{result="unknown"}"#, 0.0),
        ("refunds_reconcile_failures_total", 0.0),
        ("refunds_reconcile_lookups_in_flight", 0.0),
    ] {
        assert_eq!(metrics[name], want, "{name}: {metrics:?}");
    }
}

/// The refund at the head of the lookups fails every time (the database refuses to update
/// it); the others are still found, one lookup at a time, and the failures are counted.
async fn a_failing_lookup_does_not_stop_the_others(backend: Backend) {
    let Some(app) = TestApp::with_config(backend, config(1)).await else {
        return;
    };
    let stand_in = StandIn::start(Duration::ZERO, false).await;
    let gw = gateway(&app, &stand_in, &env_name("FAILING", backend), json!({})).await;
    // The failing one first, so that it is due first.
    let failing = orders(&app, &gw, 1, "10.96").await;
    app.runner.run_once().await.expect("run");
    let others = orders(&app, &gw, 3, "10.96").await;
    app.runner.run_once().await.expect("run");
    let refund = app.refunds_of(&failing[0].1).await[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    for sql in refuse_updates_of(backend, &refund) {
        sqlx::query(&sql)
            .execute(app.db.pool())
            .await
            .expect("install the fault");
    }

    let (stop, runner) = run(&app);
    wait_processed(&app, &others).await;
    stop.send_replace(true);
    tokio::time::timeout(PATIENCE, runner)
        .await
        .expect("the runner stops")
        .expect("the runner did not panic");
    assert_eq!(refund_statuses(&app, &failing).await, ["Draft"]);
    let counts = app.runner.reconcile_stats().counts();
    assert!(counts.failures >= 1, "{counts:?}");
    assert_eq!((counts.found, counts.in_flight), (3, 0), "{counts:?}");
    let metrics = scrape(&app).await;
    assert!(
        metrics["refunds_reconcile_failures_total"] >= 1.0,
        "{metrics:?}"
    );
}

/// SQL that makes every UPDATE of one refund fail.
fn refuse_updates_of(backend: Backend, refund: &str) -> Vec<String> {
    match backend {
        Backend::Sqlite => vec![format!(
            "CREATE TRIGGER refuse_refund BEFORE UPDATE ON refunds WHEN OLD.id = '{refund}' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )],
        Backend::Postgres => vec![
            "CREATE FUNCTION refuse_refund() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
                .to_string(),
            format!(
                "CREATE TRIGGER refuse_refund BEFORE UPDATE ON refunds FOR EACH ROW \
                 WHEN (OLD.id = '{refund}') EXECUTE FUNCTION refuse_refund()"
            ),
        ],
    }
}

/// Shutdown while a lookup is held at the provider: `Runner::run` does not return until
/// that lookup has ended and its answer is recorded.
async fn shutdown_waits_for_the_lookups_in_flight(backend: Backend) {
    let Some(app) = TestApp::with_config(backend, config(4)).await else {
        return;
    };
    let stand_in = StandIn::start(Duration::ZERO, true).await;
    let gw = gateway(&app, &stand_in, &env_name("SHUTDOWN", backend), json!({})).await;
    let ops = orders(&app, &gw, 1, "10.96").await;
    let (stop, mut runner) = run(&app);
    stand_in.wait_held(1).await;

    stop.send_replace(true);
    let early = tokio::time::timeout(Duration::from_millis(300), &mut runner).await;
    assert!(
        early.is_err(),
        "the runner returned with a lookup in flight"
    );
    assert_eq!(refund_statuses(&app, &ops).await, ["Draft"]);

    stand_in.release();
    tokio::time::timeout(PATIENCE, runner)
        .await
        .expect("the runner stops once the lookup ends")
        .expect("the runner did not panic");
    // Recorded before `run` returned.
    assert_eq!(refund_statuses(&app, &ops).await, ["Processed"]);
    let refund = app.refunds_of(&ops[0].1).await[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let logs = app.logs_of(&refund).await;
    let last = logs.last().expect("a log");
    assert_eq!(last["InteractionType"], "RefundLookup", "{logs:?}");
    assert_ne!(last["InteractionStatus"], "Initiated", "{logs:?}");
    assert_eq!(app.runner.reconcile_stats().counts().in_flight, 0);
}

/// `MaxConcurrentRequests: 2` with ten refunds at once, four of them then looked up while
/// the others still wait their turn: never more than two calls at the provider, refunds and
/// lookups together. The same load on a gateway without the limit does reach the provider
/// more than two at a time.
async fn a_concurrency_limit_holds_at_the_provider(backend: Backend) {
    let Some(app) = TestApp::with_config(backend, config(8)).await else {
        return;
    };
    let slow = Duration::from_millis(100);
    let load = |stand_in: StandIn, name: &'static str, limits: serde_json::Value| {
        let app = &app;
        async move {
            let gw = gateway(app, &stand_in, &env_name(name, backend), limits).await;
            let mut ops = orders(app, &gw, 4, "10.96").await;
            ops.extend(orders(app, &gw, 6, "12.34").await);
            let (stop, runner) = run(app);
            wait_processed(app, &ops).await;
            stop.send_replace(true);
            tokio::time::timeout(PATIENCE, runner)
                .await
                .expect("the runner stops")
                .expect("the runner did not panic");
            assert_eq!(stand_in.count("POST /v1/refunds"), 10);
            assert_eq!(stand_in.count("GET /v1/refunds"), 4);
            stand_in
        }
    };
    let free = load(StandIn::start(slow, false).await, "UNLIMITED", json!({})).await;
    assert!(
        free.most_in_flight() > 2,
        "without a limit: {}",
        free.most_in_flight()
    );
    let limited = load(
        StandIn::start(slow, false).await,
        "LIMITED",
        json!({"MaxConcurrentRequests": 2}),
    )
    .await;
    assert_eq!(
        limited.most_in_flight(),
        2,
        "at most two at once, and two did overlap"
    );
    assert!(limited.most_lookups_in_flight() >= 1);
}

/// `MaxRequestsPerSecond: 5` with ten refunds at once: they reach the provider over at
/// least ~1.8 s (a lower bound: calls start 200 ms apart).
async fn a_rate_limit_spaces_the_calls(backend: Backend) {
    let Some(app) = TestApp::with_config(backend, config(8)).await else {
        return;
    };
    let stand_in = StandIn::start(Duration::ZERO, false).await;
    let gw = gateway(
        &app,
        &stand_in,
        &env_name("RATE", backend),
        json!({"MaxRequestsPerSecond": 5}),
    )
    .await;
    let ops = orders(&app, &gw, 10, "12.34").await;
    let started = Instant::now();
    app.settle().await;
    assert_eq!(refund_statuses(&app, &ops).await, vec!["Processed"; 10]);
    assert_eq!(stand_in.count("POST /v1/refunds"), 10);
    let span = stand_in.span();
    assert!(
        span >= Duration::from_millis(1700),
        "ten calls within {span:?}"
    );
    assert!(started.elapsed() >= span);
}

backend_tests!(
    lookups_run_concurrently_up_to_the_limit,
    a_failing_lookup_does_not_stop_the_others,
    shutdown_waits_for_the_lookups_in_flight,
    a_concurrency_limit_holds_at_the_provider,
    a_rate_limit_spaces_the_calls,
);
