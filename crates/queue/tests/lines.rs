//! An order's line: its operations *plan* one at a time, in the order their enqueues
//! committed (a place in line taken in the enqueue transaction, never a clock), and once an
//! operation has planned, the next one plans and calls its provider beside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{from_fn, Next};
use refunds_domain::{ObjectType, SfId};
use refunds_gateway::{Registry, SimulatorConfig};
use refunds_queue::{Job, JobContext, JobError, Runner};
use refunds_store::ops::{self, NewOperation};
use refunds_store::{now_ms, Db};
use refunds_testkit::{
    backend_tests, fast_config, Backend, LocalServer, StripeSimulator, TestApp, TestDb,
};
use serde_json::json;
use tokio::sync::{watch, Notify};

async fn enqueue_at(db: &Db, ty: &str, parent: &str, now: i64) -> String {
    let id = SfId::generate(ObjectType::BackgroundOperation).into_string();
    let mut tx = db.begin().await.expect("begin");
    ops::enqueue(
        &mut tx,
        &NewOperation {
            id: &id,
            name: "test",
            ty,
            parent_key: parent,
            payload: "{}",
            retry_limit: 0,
            retry_backoff_ms: 10,
            timeout_ms: 5000,
            now,
            admitted: None,
        },
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
    id
}

async fn status(db: &Db, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM background_operations WHERE id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .expect("status")
}

/// Waits (at most 20 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Per order: (operation, plan began, plan ended).
type PlanLog = Arc<Mutex<HashMap<String, Vec<(String, Instant, Instant)>>>>;

/// A job that plans (a fenced transaction that marks the operation planned) and notes
/// when each plan began and ended, per order, across every runner that shares it.
struct Plans {
    log: PlanLog,
    /// How long a plan keeps its transaction open: long enough that a second plan of the
    /// same order, if the queue let one start, would overlap it.
    hold: Duration,
}

#[async_trait]
impl Job for Plans {
    fn job_type(&self) -> &'static str {
        "Plans"
    }

    async fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let mut tx = ctx.fenced().await?;
        let began = Instant::now();
        tokio::time::sleep(self.hold).await;
        refunds_store::refunds::mark_planned(&mut tx, &ctx.op.id, now_ms()).await?;
        tx.commit().await?;
        let ended = Instant::now();
        self.log
            .lock()
            .expect("log")
            .entry(ctx.op.parent_key.clone())
            .or_default()
            .push((ctx.op.id.clone(), began, ended));
        // The "provider calls": after planning, overlapping the next plan is allowed.
        tokio::time::sleep(self.hold * 2).await;
        Ok(())
    }
}

/// The place in line is taken when the enqueue commits, not from the clock read before
/// it: an operation enqueued after another, with a clock that reads earlier (another
/// process's clock, or a stamp taken before a slow transaction), still comes second.
async fn the_place_in_line_is_the_commit_order_not_the_clock(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let first = enqueue_at(&t.db, "Plans", "order-1", now_ms()).await;
    let second = enqueue_at(&t.db, "Plans", "order-1", now_ms() - 60_000).await;
    let claimed = ops::claim(&t.db, "w", "uri", 10, 5000, now_ms())
        .await
        .expect("claim");
    let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![first.as_str()],
        "the first committed is first in line"
    );
    assert_eq!(status(&t.db, &second).await, "New");
    // Once the first has planned, the second may go.
    let mut tx = t.db.begin().await.expect("begin");
    refunds_store::refunds::mark_planned(&mut tx, &first, now_ms())
        .await
        .expect("planned");
    tx.commit().await.expect("commit");
    let claimed = ops::claim(&t.db, "w", "uri", 10, 5000, now_ms())
        .await
        .expect("claim");
    let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec![second.as_str()]);
}

/// Two runners on separate connection pools (as two processes) and many simultaneous
/// enqueues on four orders: no two operations of one order ever plan at once, and each
/// order's operations plan in their line's order.
async fn no_two_operations_of_an_order_plan_at_once(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let second_pool = match backend {
        Backend::Postgres => Db::connect(t.db.url()).await.expect("second pool"),
        // SQLite runs workers in one process only.
        Backend::Sqlite => t.db.clone(),
    };
    let log = Arc::new(Mutex::new(HashMap::new()));
    let job = || Plans {
        log: log.clone(),
        hold: Duration::from_millis(15),
    };
    let mut a = Runner::new(
        t.db.clone(),
        fast_config(),
        Registry::new(
            SimulatorConfig::default(),
            refunds_gateway::HostPolicy::with_loopback(),
        )
        .expect("registry"),
    );
    a.register(Arc::new(job()));
    let mut b = Runner::new(
        second_pool.clone(),
        fast_config(),
        Registry::new(
            SimulatorConfig::default(),
            refunds_gateway::HostPolicy::with_loopback(),
        )
        .expect("registry"),
    );
    b.register(Arc::new(job()));
    let (stop, stopped) = watch::channel(false);
    let mut workers = vec![tokio::spawn(a.run(stopped.clone()))];
    // SQLite runs workers in one process: a second would not start (its own test).
    if backend == Backend::Postgres {
        workers.push(tokio::spawn(b.run(stopped)));
    }
    let mut enqueues = Vec::new();
    for i in 0..24 {
        let db = if i % 2 == 0 {
            t.db.clone()
        } else {
            second_pool.clone()
        };
        enqueues.push(tokio::spawn(async move {
            enqueue_at(&db, "Plans", &format!("order-{}", i % 4), now_ms()).await
        }));
    }
    for e in enqueues {
        e.await.expect("enqueued");
    }
    eventually("every operation completed", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM background_operations WHERE status = 'Complete'",
        )
        .fetch_one(t.db.pool())
        .await
        .expect("count")
            == 24
    })
    .await;
    stop.send(true).expect("stop");
    for w in workers {
        tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .expect("workers stop")
            .expect("worker")
            .expect("ran");
    }
    let log = log.lock().expect("log").clone();
    assert_eq!(log.values().map(Vec::len).sum::<usize>(), 24);
    for (order, plans) in &log {
        let seqs: Vec<i64> = {
            let mut v = Vec::new();
            for (id, _, _) in plans {
                v.push(
                    sqlx::query_scalar("SELECT seq FROM background_operations WHERE id = $1")
                        .bind(id)
                        .fetch_one(t.db.pool())
                        .await
                        .expect("seq"),
                );
            }
            v
        };
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "{order} planned in line order");
        for pair in plans.windows(2) {
            assert!(
                pair[0].2 <= pair[1].1,
                "{order}: {} began planning before {} had finished",
                pair[1].0,
                pair[0].0
            );
        }
    }
}

/// A Stripe stand-in whose refund calls for `hang_amount` (minor units) wait until
/// released; every other call goes straight to the Stripe simulator.
struct HangingStripe {
    base_url: String,
    arrived: Arc<Notify>,
    release: Arc<Notify>,
    _sim: StripeSimulator,
    _server: LocalServer,
}

impl HangingStripe {
    async fn start(hang_amount: i64) -> HangingStripe {
        let sim = StripeSimulator::start().await;
        let arrived = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (arr, rel) = (arrived.clone(), release.clone());
        let marker = format!("amount={hang_amount}&");
        let router =
            sim.simulator
                .clone()
                .router()
                .layer(from_fn(move |request: Request, next: Next| {
                    let (arr, rel, marker) = (arr.clone(), rel.clone(), marker.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let bytes = axum::body::to_bytes(body, 1 << 20)
                            .await
                            .unwrap_or_default();
                        let text = String::from_utf8_lossy(&bytes).into_owned() + "&";
                        if parts.method == axum::http::Method::POST && text.contains(&marker) {
                            arr.notify_one();
                            rel.notified().await;
                        }
                        next.run(Request::from_parts(parts, Body::from(bytes)))
                            .await
                    }
                }));
        let server = LocalServer::start(router).await;
        HangingStripe {
            base_url: server.base_url.clone(),
            arrived,
            release,
            _sim: sim,
            _server: server,
        }
    }
}

/// An order whose first refund's provider call hangs completes its second refund in the
/// meantime: the order waits only while money is decided.
async fn a_hanging_provider_call_does_not_hold_up_the_next_refund(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let stripe = HangingStripe::start(1111).await;
    let env = format!("REFUNDS_SECRET_TEST_STRIPE_KEY_LINES_{backend:?}").to_uppercase();
    std::env::set_var(&env, "sk_test_lines");
    let gateway = app
        .gateway(
            json!({"PaymentGatewayName": "Stripe (hanging)", "ProviderType": "Stripe",
                   "BaseUrl": stripe.base_url, "MerchantCredentialEnv": env, "TimeoutMs": 60000}),
        )
        .await;
    let order = app.order_on(&gateway, "USD", &["100.00"]).await;
    let first = app
        .ensure(&order, json!({"excessFundsAmount": 11.11}))
        .await;
    let second = app
        .ensure(&order, json!({"excessFundsAmount": 22.22}))
        .await;
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(app.runner.clone().run(stopped));
    tokio::time::timeout(Duration::from_secs(20), stripe.arrived.notified())
        .await
        .expect("the first refund's call reached the provider");
    eventually("the second operation completed", || async {
        app.record("BackgroundOperation", &second).await["Status"] == "Complete"
    })
    .await;
    let refunds = app.refunds_of(&second).await;
    assert_eq!(refunds[0]["Status"], "Processed", "{}", refunds[0]);
    assert_eq!(
        app.record("BackgroundOperation", &first).await["Status"],
        "Running",
        "the first is still inside its provider call"
    );
    assert_eq!(app.refunds_of(&first).await[0]["Status"], "Draft");
    stripe.release.notify_one();
    eventually("the first operation completed", || async {
        app.record("BackgroundOperation", &first).await["Status"] == "Complete"
    })
    .await;
    assert_eq!(app.refunds_of(&first).await[0]["Status"], "Processed");
    let summary = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(summary["RefundedAmount"].to_string(), "33.33");
    assert_eq!(summary["PendingRefundAmount"].to_string(), "0.00");
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("worker stops")
        .expect("worker")
        .expect("ran");
}

/// Requests answered one after the other plan in that order.
async fn a_request_answered_first_plans_first(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let mut ops = Vec::new();
    for amount in ["10.00", "20.00", "30.00"] {
        ops.push(
            app.ensure(&order, json!({"excessFundsAmount": amount}))
                .await,
        );
    }
    app.settle().await;
    let mut planned = Vec::new();
    for op in &ops {
        let (seq, at): (i64, i64) =
            sqlx::query_as("SELECT seq, planned_at FROM background_operations WHERE id = $1")
                .bind(op)
                .fetch_one(app.db.pool())
                .await
                .expect("row");
        planned.push((seq, at));
    }
    assert_eq!(
        planned.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "places in line in the order of the answers"
    );
    assert!(
        planned.windows(2).all(|w| w[0].1 <= w[1].1),
        "planned in that order: {planned:?}"
    );
}

backend_tests!(
    the_place_in_line_is_the_commit_order_not_the_clock,
    no_two_operations_of_an_order_plan_at_once,
    a_hanging_provider_call_does_not_hold_up_the_next_refund,
    a_request_answered_first_plans_first,
);
