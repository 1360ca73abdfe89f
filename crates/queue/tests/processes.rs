//! Recovery in seconds, not leases. SQLite: one process runs workers on a file (a second
//! does not start), and it takes over every lease at once when it starts. PostgreSQL: the
//! operations of a process that fell silent are rescued within seconds, judged on the
//! database's clock. Both: a shutdown lets running work finish within its grace, then
//! hands back what it holds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use refunds_domain::{ObjectType, SfId};
use refunds_gateway::{Registry, SimulatorConfig};
use refunds_queue::{Job, JobContext, JobError, QueueConfig, Runner};
use refunds_store::ops::{self, NewOperation};
use refunds_store::{now_ms, Db, StoreError};
use refunds_testkit::{backend_tests, fast_config, Backend, TestDb};
use tokio::sync::{watch, Notify};

/// Finishes after `work`, or (with `hang`) never.
struct Work {
    work: Duration,
    hang: bool,
    started: Arc<Notify>,
    runs: Arc<AtomicUsize>,
}

#[async_trait]
impl Job for Work {
    fn job_type(&self) -> &'static str {
        "Work"
    }

    async fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        if self.hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.work).await;
        ctx.fenced().await?.commit().await?;
        Ok(())
    }
}

struct Setup {
    runner: Runner,
    started: Arc<Notify>,
    runs: Arc<AtomicUsize>,
}

fn runner(db: &Db, config: QueueConfig, work: Duration, hang: bool) -> Setup {
    let started = Arc::new(Notify::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let mut runner = Runner::new(
        db.clone(),
        config,
        Registry::new(
            SimulatorConfig::default(),
            refunds_gateway::HostPolicy::with_loopback(),
        )
        .expect("registry"),
    );
    runner.register(Arc::new(Work {
        work,
        hang,
        started: started.clone(),
        runs: runs.clone(),
    }));
    Setup {
        runner,
        started,
        runs,
    }
}

async fn enqueue(db: &Db, parent: &str) -> String {
    let id = SfId::generate(ObjectType::BackgroundOperation).into_string();
    let mut tx = db.begin().await.expect("begin");
    ops::enqueue(
        &mut tx,
        &NewOperation {
            id: &id,
            name: "test",
            ty: "Work",
            parent_key: parent,
            payload: "{}",
            retry_limit: 0,
            retry_backoff_ms: 10,
            timeout_ms: 600_000,
            now: now_ms(),
            admitted: None,
        },
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
    id
}

async fn row(db: &Db, id: &str) -> (String, Option<i64>) {
    sqlx::query_as("SELECT status, lease_expires_at FROM background_operations WHERE id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .expect("row")
}

async fn eventually_complete(db: &Db, id: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while row(db, id).await.0 != "Complete" {
        assert!(
            started.elapsed() < within,
            "{id} not complete within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// An operation a dead process held, with a lease of ten minutes.
async fn held_by_a_dead_process(db: &Db, parent: &str, process: &str) -> String {
    let id = enqueue(db, parent).await;
    let claimed = ops::claim(db, process, "gone", 1, 600_000, now_ms())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    id
}

async fn one_sqlite_process_runs_workers_and_takes_over_at_once(backend: Backend) {
    if backend != Backend::Sqlite {
        return;
    }
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let op = held_by_a_dead_process(&t.db, "order-1", "dead").await;
    let s = runner(&t.db, fast_config(), Duration::ZERO, false);
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(s.runner.run(stopped));
    let took = eventually_complete(&t.db, &op, Duration::from_secs(5)).await;
    println!("sqlite: a dead process's operation ran again after {took:?} (lease 10 min)");
    // A second process on the same file does not start its workers.
    let other = Db::connect(t.db.url()).await.expect("second handle");
    let second = runner(&other, fast_config(), Duration::ZERO, false);
    match second.runner.start().await {
        Err(StoreError::WorkersRunning(path)) => assert!(path.ends_with("-workers.lock"), "{path}"),
        Err(e) => panic!("expected WorkersRunning, got {e}"),
        Ok(_) => panic!("a second process started workers on the same SQLite file"),
    }
    // Commands that only read and write records never take the lock.
    other.migrate().await.expect("migrate beside the workers");
    enqueue(&other, "order-2").await;
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("stops")
        .expect("task")
        .expect("ran");
    // Once it stopped, another may start.
    let third = runner(&other, fast_config(), Duration::ZERO, false);
    assert!(third.runner.start().await.is_ok(), "the lock is free again");
}

async fn a_silent_processes_operations_are_rescued_in_seconds(backend: Backend) {
    if backend != Backend::Postgres {
        return;
    }
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    // A process that registered, claimed, and then fell silent (its heartbeat 10 s ago
    // by the database's clock).
    sqlx::query(
        "INSERT INTO queue_processes (id, started_at, heartbeat_at) VALUES ('dead', 0, \
         CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) - 10000)",
    )
    .execute(t.db.pool())
    .await
    .expect("dead process");
    let op = held_by_a_dead_process(&t.db, "order-1", "dead").await;
    // And one alive: it keeps its operation.
    let other = Db::connect(t.db.url()).await.expect("second pool");
    let quick_stop = QueueConfig {
        shutdown_grace: Duration::from_millis(100),
        ..fast_config()
    };
    let alive = runner(&other, quick_stop, Duration::ZERO, true);
    let (stop_alive, stopped_alive) = watch::channel(false);
    let alive_op = enqueue(&t.db, "order-2").await;
    let alive_task = tokio::spawn(alive.runner.run(stopped_alive));
    tokio::time::timeout(Duration::from_secs(10), alive.started.notified())
        .await
        .expect("the live process runs its operation");
    let config = QueueConfig {
        process_heartbeat: Duration::from_millis(100),
        process_silence: Duration::from_secs(2),
        ..fast_config()
    };
    let s = runner(&t.db, config, Duration::ZERO, false);
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(s.runner.run(stopped));
    let took = eventually_complete(&t.db, &op, Duration::from_secs(10)).await;
    println!("postgres: a silent process's operation ran again after {took:?} (lease 10 min)");
    let processes: Vec<String> = sqlx::query_scalar("SELECT id FROM queue_processes ORDER BY id")
        .fetch_all(t.db.pool())
        .await
        .expect("processes");
    assert!(!processes.contains(&"dead".to_string()), "{processes:?}");
    assert_eq!(
        processes.len(),
        2,
        "both live processes are registered: {processes:?}"
    );
    assert_eq!(
        row(&t.db, &alive_op).await.0,
        "Running",
        "a live process's operation is not rescued"
    );
    assert_eq!(alive.runs.load(Ordering::SeqCst), 1);
    stop.send(true).expect("stop");
    stop_alive.send(true).expect("stop");
    for task in [worker, alive_task] {
        tokio::time::timeout(Duration::from_secs(40), task)
            .await
            .expect("stops")
            .expect("task")
            .expect("ran");
    }
}

async fn a_shutdown_lets_running_work_finish(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let s = runner(&t.db, fast_config(), Duration::from_millis(300), false);
    let op = enqueue(&t.db, "order-1").await;
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(s.runner.run(stopped));
    tokio::time::timeout(Duration::from_secs(10), s.started.notified())
        .await
        .expect("started");
    stop.send(true).expect("stop");
    let later = enqueue(&t.db, "order-2").await;
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("stops")
        .expect("task")
        .expect("ran");
    assert_eq!(
        row(&t.db, &op).await.0,
        "Complete",
        "finished within its grace"
    );
    assert_eq!(
        row(&t.db, &later).await.0,
        "New",
        "nothing claimed after the stop"
    );
    assert_eq!(s.runs.load(Ordering::SeqCst), 1);
}

async fn a_shutdown_hands_back_what_outlives_its_grace(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let config = QueueConfig {
        shutdown_grace: Duration::from_millis(200),
        ..fast_config()
    };
    let s = runner(&t.db, config, Duration::ZERO, true);
    let op = enqueue(&t.db, "order-1").await;
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(s.runner.run(stopped));
    tokio::time::timeout(Duration::from_secs(10), s.started.notified())
        .await
        .expect("started");
    let asked = Instant::now();
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("stops")
        .expect("task")
        .expect("ran");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "waited for its grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "but not for the lease: {took:?}"
    );
    assert_eq!(
        row(&t.db, &op).await,
        ("Running".to_string(), Some(0)),
        "its lease handed back"
    );
    if backend == Backend::Postgres {
        let registered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_processes")
            .fetch_one(t.db.pool())
            .await
            .expect("count");
        assert_eq!(registered, 0, "deregistered");
    }
    // Another process takes it over at once.
    let next = runner(&t.db, fast_config(), Duration::ZERO, false);
    assert_eq!(next.runner.run_once().await.expect("run"), 1);
    assert_eq!(row(&t.db, &op).await.0, "Complete");
}

backend_tests!(
    one_sqlite_process_runs_workers_and_takes_over_at_once,
    a_silent_processes_operations_are_rescued_in_seconds,
    a_shutdown_lets_running_work_finish,
    a_shutdown_hands_back_what_outlives_its_grace,
);
