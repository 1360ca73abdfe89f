//! The queue itself: exclusivity, per-order serialisation, rescue of a dead worker's
//! operation, retry backoff, and enqueue rolled back with its transaction.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use refunds_domain::{ObjectType, SfId};
use refunds_gateway::{Registry, SimulatorConfig};
use refunds_queue::{Job, JobContext, JobError, Runner};
use refunds_store::ops::{self, NewOperation};
use refunds_store::{now_ms, Db};
use refunds_testkit::{backend_tests, fast_config, Backend, TestApp, TestDb};
use serde_json::json;
use tokio::sync::Barrier;

/// A job that meets the test at a barrier when it starts, then waits for a second
/// barrier before making one fenced write.
struct Gate {
    started: Arc<Barrier>,
    release: Arc<Barrier>,
    runs: Arc<AtomicUsize>,
    fenced_commits: Arc<AtomicUsize>,
}

#[async_trait]
impl Job for Gate {
    fn job_type(&self) -> &'static str {
        "Gate"
    }

    async fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        within("the test to see this job start", self.started.wait()).await;
        within("the test to release this job", self.release.wait()).await;
        let tx = ctx.fenced().await?;
        tx.commit().await?;
        self.fenced_commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// How long a barrier test waits for the other side: far beyond any healthy run on a
/// loaded machine, so that only a regression (a job that never starts, a run that never
/// ends) reaches it — and then fails, instead of hanging the suite.
const MEET_WITHIN: Duration = Duration::from_secs(30);

/// Awaits `step`, failing the test with a message naming `what` it waited for if that
/// takes longer than [`MEET_WITHIN`].
async fn within<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(MEET_WITHIN, step)
        .await
        .unwrap_or_else(|_| panic!("waited {MEET_WITHIN:?} for {what}: a barrier test is stuck"))
}

struct Harness {
    runs: Arc<AtomicUsize>,
    fenced_commits: Arc<AtomicUsize>,
    started: Arc<Barrier>,
    release: Arc<Barrier>,
}

fn gate_runner(db: &Db) -> (Runner, Harness) {
    gate_runner_with(db, fast_config())
}

fn gate_runner_with(db: &Db, config: refunds_queue::QueueConfig) -> (Runner, Harness) {
    gate_runner_for(db, config, 1)
}

/// A gate runner whose barriers hold `runs` jobs and the test: all of them must arrive
/// before any goes on (so jobs can never release each other).
fn gate_runner_for(db: &Db, config: refunds_queue::QueueConfig, runs: usize) -> (Runner, Harness) {
    let h = Harness {
        runs: Arc::new(AtomicUsize::new(0)),
        fenced_commits: Arc::new(AtomicUsize::new(0)),
        started: Arc::new(Barrier::new(runs + 1)),
        release: Arc::new(Barrier::new(runs + 1)),
    };
    let mut runner = Runner::new(
        db.clone(),
        config,
        Registry::new(
            SimulatorConfig::default(),
            refunds_gateway::HostPolicy::with_loopback(),
        )
        .expect("registry"),
    );
    runner.register(Arc::new(Gate {
        started: h.started.clone(),
        release: h.release.clone(),
        runs: h.runs.clone(),
        fenced_commits: h.fenced_commits.clone(),
    }));
    (runner, h)
}

async fn enqueue(db: &Db, ty: &str, parent: &str, retry_limit: i64) -> String {
    let id = SfId::generate(ObjectType::BackgroundOperation).into_string();
    let mut tx = db.begin().await.unwrap();
    ops::enqueue(
        &mut tx,
        &NewOperation {
            id: &id,
            name: "test",
            ty,
            parent_key: parent,
            payload: "{}",
            retry_limit,
            retry_backoff_ms: 50,
            timeout_ms: 5000,
            now: now_ms(),
            admitted: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Distinct submission milliseconds keep the FIFO order unambiguous.
    tokio::time::sleep(Duration::from_millis(2)).await;
    id
}

/// A runner with one job type of the test's own.
fn runner_for(db: &Db, config: refunds_queue::QueueConfig, job: impl Job) -> Runner {
    let mut runner = Runner::new(
        db.clone(),
        config,
        Registry::new(
            SimulatorConfig::default(),
            refunds_gateway::HostPolicy::with_loopback(),
        )
        .expect("registry"),
    );
    runner.register(Arc::new(job));
    runner
}

async fn status(db: &Db, id: &str) -> (String, i64) {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT status, retry_count FROM background_operations WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

async fn two_workers_never_run_the_same_operation(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let (a, h) = gate_runner(&t.db);
    let (b, _) = gate_runner(&t.db);
    let op = enqueue(&t.db, "Gate", "order-1", 0).await;
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await.unwrap() }
    });
    within("the job to start", h.started.wait()).await; // A is inside the job now.
    assert_eq!(
        b.run_once().await.unwrap(),
        0,
        "B must not claim an operation A holds"
    );
    assert_eq!(a.run_once().await.unwrap(), 0, "nor may A claim it twice");
    within("the job to take its release", h.release.wait()).await;
    assert_eq!(within("the run to end", first).await.unwrap(), 1);
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    assert_eq!(status(&t.db, &op).await, ("Complete".to_string(), 0));
    assert_eq!(
        b.run_once().await.unwrap(),
        0,
        "a complete operation is not run again"
    );
}

async fn operations_of_one_order_run_one_at_a_time_in_order(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let (a, h) = gate_runner(&t.db);
    let first = enqueue(&t.db, "Gate", "order-1", 0).await;
    let second = enqueue(&t.db, "Gate", "order-1", 0).await;
    let running = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await.unwrap() }
    });
    within("the job to start", h.started.wait()).await;
    assert_eq!(status(&t.db, &first).await.0, "Running");
    assert_eq!(
        status(&t.db, &second).await.0,
        "New",
        "the second waits for the first"
    );
    assert_eq!(
        a.run_once().await.unwrap(),
        0,
        "nothing else is claimable for this order"
    );
    within("the job to take its release", h.release.wait()).await;
    assert_eq!(
        within("the run to end", running).await.unwrap(),
        1,
        "only the first ran in that round"
    );
    let next = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await.unwrap() }
    });
    within("the job to start", h.started.wait()).await;
    within("the job to take its release", h.release.wait()).await;
    assert_eq!(within("the run to end", next).await.unwrap(), 1);
    assert_eq!(status(&t.db, &second).await.0, "Complete");
}

async fn operations_of_different_orders_run_together(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    // Both runs and the test meet at one barrier: it only opens if both run at once.
    let (a, h) = gate_runner_for(&t.db, fast_config(), 2);
    enqueue(&t.db, "Gate", "order-1", 0).await;
    enqueue(&t.db, "Gate", "order-2", 0).await;
    let round = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await.unwrap() }
    });
    within("the job to start", h.started.wait()).await;
    assert_eq!(
        h.runs.load(Ordering::SeqCst),
        2,
        "both orders' operations are running at once"
    );
    within("the job to take its release", h.release.wait()).await;
    assert_eq!(within("the run to end", round).await.unwrap(), 2);
}

async fn a_dead_workers_operation_is_rescued_and_finishes_once(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let (a, ha) = gate_runner(&t.db);
    let (b, hb) = gate_runner(&t.db);
    let op = enqueue(&t.db, "Gate", "order-1", 0).await;
    let stale = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await.unwrap() }
    });
    within("the job to start", ha.started.wait()).await;
    // A stops heart-beating (as if its process froze): its lease expires.
    ops::expire_lease(&t.db, &op).await.unwrap();
    let rescue = tokio::spawn({
        let b = b.clone();
        async move { b.run_once().await.unwrap() }
    });
    within("the job to start", hb.started.wait()).await;
    within("the job to take its release", hb.release.wait()).await;
    assert_eq!(within("the run to end", rescue).await.unwrap(), 1);
    assert_eq!(status(&t.db, &op).await.0, "Complete");
    // A wakes up and tries to finish: its fenced write is refused.
    within("the job to take its release", ha.release.wait()).await;
    within("the run to end", stale).await.unwrap();
    assert_eq!(
        ha.fenced_commits.load(Ordering::SeqCst),
        0,
        "the stale run wrote nothing"
    );
    assert_eq!(
        hb.fenced_commits.load(Ordering::SeqCst),
        1,
        "the rescue finished it once"
    );
    assert_eq!(status(&t.db, &op).await, ("Complete".to_string(), 0));
}

async fn a_live_workers_heartbeat_keeps_its_lease(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let short = refunds_queue::QueueConfig {
        lease: Duration::from_millis(300),
        ..fast_config()
    };
    let (a, h) = gate_runner_with(&t.db, short.clone());
    let (b, _) = gate_runner_with(&t.db, short);
    enqueue(&t.db, "Gate", "order-1", 0).await;
    let running = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await.unwrap() }
    });
    within("the job to start", h.started.wait()).await;
    // Well past the lease: only the heartbeat keeps the operation A's.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        b.run_once().await.unwrap(),
        0,
        "a live worker's operation is not rescued"
    );
    within("the job to take its release", h.release.wait()).await;
    assert_eq!(within("the run to end", running).await.unwrap(), 1);
    assert_eq!(h.fenced_commits.load(Ordering::SeqCst), 1);
}

struct AlwaysFails(Arc<AtomicUsize>);

#[async_trait]
impl Job for AlwaysFails {
    fn job_type(&self) -> &'static str {
        "AlwaysFails"
    }

    async fn run(&self, _: &JobContext) -> Result<(), JobError> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Err(JobError::Failed(format!("internal failure #{n}")))
    }
}

async fn error_retries_are_scheduled_with_backoff_then_end_in_error(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let runner = runner_for(&t.db, fast_config(), AlwaysFails(runs.clone()));
    let op = enqueue(&t.db, "AlwaysFails", "order-1", 3).await;
    let mut delays = Vec::new();
    for round in 1..=4 {
        assert_eq!(runner.run_once().await.unwrap(), 1, "round {round} runs");
        let (status, retry_count, retry_scheduled, process_after, finished_at, error) =
            sqlx::query_as::<_, (String, i64, i64, i64, i64, Option<String>)>(
                "SELECT status, retry_count, retry_scheduled, process_after, finished_at, error \
                 FROM background_operations WHERE id = $1",
            )
            .bind(&op)
            .fetch_one(t.db.pool())
            .await
            .unwrap();
        assert_eq!(
            status,
            if round < 4 { "Scheduled" } else { "Error" },
            "Scheduled while a retry is left; Error only at the end"
        );
        assert_eq!(
            retry_count,
            round - 1,
            "RetryCount counts the retries attempted"
        );
        assert_eq!(
            error.as_deref(),
            Some(format!("internal failure #{round}").as_str())
        );
        if round < 4 {
            assert_eq!(retry_scheduled, 1);
            delays.push(process_after - finished_at);
            assert_eq!(
                runner.run_once().await.unwrap(),
                0,
                "not before ProcessAfter"
            );
            let wait = u64::try_from(process_after - now_ms()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(wait + 5)).await;
        } else {
            assert_eq!(retry_scheduled, 0, "RetryLimit reached: no more retries");
        }
    }
    assert_eq!(delays, vec![50, 150, 350], "(2^n - 1) x RetryBackoff");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        runner.run_once().await.unwrap(),
        0,
        "an exhausted operation stays Error"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

async fn an_enqueue_rolled_back_with_its_transaction_leaves_nothing(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let (runner, h) = gate_runner(&t.db);
    let mut tx = t.db.begin().await.unwrap();
    ops::enqueue(
        &mut tx,
        &NewOperation {
            id: &SfId::generate(ObjectType::BackgroundOperation).into_string(),
            name: "test",
            ty: "Gate",
            parent_key: "order-1",
            payload: "{}",
            retry_limit: 0,
            retry_backoff_ms: 50,
            timeout_ms: 5000,
            now: now_ms(),
            admitted: None,
        },
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(runner.run_once().await.unwrap(), 0);
    assert_eq!(h.runs.load(Ordering::SeqCst), 0);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM background_operations")
        .fetch_one(t.db.pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
}

async fn an_unknown_operation_type_fails_without_retry(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let (runner, _) = gate_runner(&t.db);
    let op = enqueue(&t.db, "NoSuchJob", "order-1", 3).await;
    assert_eq!(runner.run_once().await.unwrap(), 1);
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM background_operations WHERE id = $1")
            .bind(&op)
            .fetch_one(t.db.pool())
            .await
            .unwrap();
    assert_eq!(status, "Error");
    assert!(error.unwrap().contains("no worker"));
    assert_eq!(runner.run_once().await.unwrap(), 0);
}

/// A worker that dies in the middle of a provider call: its refund is already a Draft
/// with its key; the rescuer asks again with the same key, and money moves once.
async fn a_refund_interrupted_mid_call_is_redriven_with_the_same_key(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let op = app
        .ensure(&order, json!({"excessFundsAmount": 12.34}))
        .await;
    // The worker dies inside the provider call.
    app.kill_worker_mid_call(fast_config()).await;
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        refunds[0]["Status"], "Draft",
        "written before the call, with its key"
    );
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(
        ops["PendingRefundAmount"].to_string(),
        "12.34",
        "the money is reserved meanwhile"
    );

    ops::expire_lease(&app.db, &op).await.unwrap();
    app.settle().await;
    let refund_id = refunds[0]["Id"].as_str().unwrap();
    let refund = app.record("Refund", refund_id).await;
    assert_eq!(refund["Status"], "Processed");
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Complete"
    );
    assert_eq!(app.registry.simulator().attempts(refund_id).await, 1);
    assert_eq!(
        app.registry.simulator().settled().await,
        (1, 1234),
        "money moved once"
    );
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(ops["RefundedAmount"].to_string(), "12.34");
    assert_eq!(ops["PendingRefundAmount"].to_string(), "0.00");
    let logs = app.logs_of(refund_id).await;
    let statuses: Vec<&str> = logs
        .iter()
        .map(|l| l["InteractionStatus"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec!["Initiated", "Success"],
        "the interrupted call stays visible"
    );
}

struct Panics(Arc<AtomicUsize>);

#[async_trait]
impl Job for Panics {
    fn job_type(&self) -> &'static str {
        "Panics"
    }

    async fn run(&self, _: &JobContext) -> Result<(), JobError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a bug in a job");
    }
}

/// A job that panics fails its run like any error (retried up to RetryLimit, then Error)
/// instead of being rescued and panicking again for ever.
async fn a_panicking_job_fails_its_run_and_retries_are_bounded(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let config = refunds_queue::QueueConfig {
        lease: Duration::from_millis(300),
        ..fast_config()
    };
    let runner = runner_for(&t.db, config.clone(), Panics(runs.clone()));
    let op = enqueue(&t.db, "Panics", "order-1", 1).await;
    for round in 1..=2 {
        assert_eq!(runner.run_once().await.unwrap(), 1, "round {round} runs");
        let (status, scheduled, error): (String, i64, Option<String>) = sqlx::query_as(
            "SELECT status, retry_scheduled, error FROM background_operations WHERE id = $1",
        )
        .bind(&op)
        .fetch_one(t.db.pool())
        .await
        .unwrap();
        assert_eq!(
            status,
            if round == 1 { "Scheduled" } else { "Error" },
            "round {round}"
        );
        assert_eq!(scheduled, i64::from(round == 1), "round {round}");
        let error = error.unwrap_or_default();
        assert!(error.contains("a bug in a job"), "{error}");
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    // Long after any lease would have run out: nothing is rescued or run again.
    tokio::time::sleep(config.lease + Duration::from_millis(50)).await;
    assert_eq!(runner.run_once().await.unwrap(), 0);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Makes every write of a provider's answer into the gateway log fail (as a broken disk or
/// a bug would), or stops doing so. The `Initiated` rows still go in, so a plan commits
/// and its first calls are made; recording what they answered fails.
async fn break_gateway_logs(app: &TestApp, broken: bool) {
    let statements: &[&str] = match (app.db.backend(), broken) {
        (refunds_store::Backend::Sqlite, true) => &[
            "CREATE TRIGGER refuse_logs BEFORE UPDATE ON payment_gateway_logs \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ],
        (refunds_store::Backend::Sqlite, false) => &["DROP TRIGGER refuse_logs"],
        (refunds_store::Backend::Postgres, true) => &[
            "CREATE FUNCTION refuse_logs() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_logs BEFORE UPDATE ON payment_gateway_logs \
             FOR EACH ROW EXECUTE FUNCTION refuse_logs()",
        ],
        (refunds_store::Backend::Postgres, false) => {
            &["DROP TRIGGER refuse_logs ON payment_gateway_logs"]
        }
    };
    for sql in statements {
        sqlx::raw_sql(sql).execute(app.db.pool()).await.unwrap();
    }
}

/// An operation that fails for good after planning leaves no refund stranded: its drafts
/// keep their money reserved and go to reconciliation, a process exception says what
/// failed, and the refund still happens once the cause is gone.
async fn a_failed_operation_hands_its_drafts_to_reconciliation(backend: Backend) {
    let config = refunds_queue::QueueConfig {
        retry_limit: 0,
        ..fast_config()
    };
    let Some(app) = TestApp::with_config(backend, config).await else {
        return;
    };
    let order = app.order("USD", &["100.00"]).await;
    let op = app
        .ensure(&order, json!({"excessFundsAmount": 12.34}))
        .await;
    break_gateway_logs(&app, true).await;
    assert_eq!(app.runner.run_once().await.unwrap(), 1);
    let bo = app.record("BackgroundOperation", &op).await;
    assert_eq!(bo["Status"], "Error", "{bo}");
    let refunds = app.refunds_of(&op).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["Status"], "Draft");
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(
        ops["PendingRefundAmount"].to_string(),
        "12.34",
        "still reserved"
    );
    let exceptions = app.exceptions_of(&order.id).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:#?}");
    let message = exceptions[0]["Message"].as_str().unwrap();
    assert!(
        message.contains(&op) && message.contains("injected failure"),
        "{message}"
    );
    let description = exceptions[0]["Description"].as_str().unwrap();
    let refund_id = refunds[0]["Id"].as_str().unwrap();
    assert!(description.contains(refund_id), "{description}");
    assert_eq!(exceptions[0]["Priority"], "High");

    // The cause goes away; reconciliation looks the refund up by its key, finds what the
    // provider made of the call whose answer could not be recorded, and settles it:
    // refunded once.
    break_gateway_logs(&app, false).await;
    app.settle().await;
    let refund = app.record("Refund", refund_id).await;
    assert_eq!(refund["Status"], "Processed", "{refund}");
    let ops = app.record("OrderPaymentSummary", &order.summaries[0]).await;
    assert_eq!(ops["RefundedAmount"].to_string(), "12.34");
    assert_eq!(ops["PendingRefundAmount"].to_string(), "0.00");
    assert_eq!(
        app.record("BackgroundOperation", &op).await["Status"],
        "Error"
    );
}

backend_tests!(
    a_panicking_job_fails_its_run_and_retries_are_bounded,
    a_failed_operation_hands_its_drafts_to_reconciliation,
    two_workers_never_run_the_same_operation,
    operations_of_one_order_run_one_at_a_time_in_order,
    operations_of_different_orders_run_together,
    a_dead_workers_operation_is_rescued_and_finishes_once,
    a_live_workers_heartbeat_keeps_its_lease,
    error_retries_are_scheduled_with_backoff_then_end_in_error,
    an_enqueue_rolled_back_with_its_transaction_leaves_nothing,
    an_unknown_operation_type_fails_without_retry,
    a_refund_interrupted_mid_call_is_redriven_with_the_same_key,
);

/// An idle worker is woken by an enqueue — on PostgreSQL by NOTIFY from another connection
/// pool (as from another process), on SQLite by the in-process signal — long before its
/// poll interval.
async fn an_idle_worker_is_woken_by_an_enqueue(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let config = refunds_queue::QueueConfig {
        poll_interval: Duration::from_secs(60),
        ..fast_config()
    };
    let mut runner = Runner::new(
        t.db.clone(),
        config,
        Registry::new(
            SimulatorConfig::default(),
            refunds_gateway::HostPolicy::with_loopback(),
        )
        .expect("registry"),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    runner.register(Arc::new(Counting(runs.clone())));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(runner.run(stopped));
    // Let the worker find the queue empty and go to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let producer = match backend {
        Backend::Postgres => Db::connect(t.db.url()).await.unwrap(),
        Backend::Sqlite => t.db.clone(),
    };
    enqueue(&producer, "Counting", "order-1", 0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runs.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker slept through the enqueue"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
}

struct Counting(Arc<AtomicUsize>);

#[async_trait]
impl Job for Counting {
    fn job_type(&self) -> &'static str {
        "Counting"
    }

    async fn run(&self, _: &JobContext) -> Result<(), JobError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Takes `op` as a worker that dies at once (a 1 ms lease, never renewed), `times` times.
async fn die_running(db: &Db, times: i64) {
    for _ in 0..times {
        let claimed = ops::claim(db, "doomed", "local", 1, 1, now_ms())
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An operation whose worker keeps stopping mid-run (killed, out of memory: nothing a
/// panic check catches) is rescued up to MAX_RESCUES times, then given up instead of
/// holding up its order for ever.
async fn an_operation_that_keeps_stopping_its_worker_is_given_up(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let runner = runner_for(&t.db, fast_config(), Counting(runs.clone()));

    // Its worker died MAX_RESCUES times: the last rescue still runs it.
    let op = enqueue(&t.db, "Counting", "order-1", 3).await;
    die_running(&t.db, refunds_queue::MAX_RESCUES).await;
    assert_eq!(runner.run_once().await.unwrap(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(status(&t.db, &op).await.0, "Complete");

    // One death more: given up, not run, no retry; the order's next operation runs.
    let op = enqueue(&t.db, "Counting", "order-2", 3).await;
    die_running(&t.db, refunds_queue::MAX_RESCUES + 1).await;
    let next = enqueue(&t.db, "Counting", "order-2", 3).await;
    assert_eq!(runner.run_once().await.unwrap(), 1);
    let (state, scheduled, error): (String, i64, Option<String>) = sqlx::query_as(
        "SELECT status, retry_scheduled, error FROM background_operations WHERE id = $1",
    )
    .bind(&op)
    .fetch_one(t.db.pool())
    .await
    .unwrap();
    assert_eq!((state.as_str(), scheduled), ("Error", 0));
    let error = error.unwrap_or_default();
    assert!(error.contains("stopped 6 times"), "{error}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not run again");
    assert_eq!(runner.run_once().await.unwrap(), 1);
    assert_eq!(status(&t.db, &next).await.0, "Complete");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

backend_tests!(
    an_idle_worker_is_woken_by_an_enqueue,
    an_operation_that_keeps_stopping_its_worker_is_given_up
);
