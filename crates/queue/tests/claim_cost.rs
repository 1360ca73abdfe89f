//! The claim costs the same at any backlog: its statements read only the partial indexes
//! of claimable and of running operations, never scan or sort the queue (pinned on the
//! query plans of both databases with 10,000 operations queued), and a measurement
//! (`--ignored`) prints the claim's time at 1,000 and at 100,000 queued.

use std::time::{Duration, Instant};

use refunds_domain::{ObjectType, SfId};
use refunds_store::ops::{self, NewOperation};
use refunds_store::{now_ms, Db};
use refunds_testkit::{backend_tests, Backend, TestDb};
use sqlx::Row;

/// Queues `n` operations on `n / per_order` orders (`per_order` each), in transactions of
/// 1,000, as the API would: the first of each order is claimable, the rest wait in line.
async fn queue_up(db: &Db, n: usize, per_order: usize) {
    let now = now_ms();
    let mut done = 0;
    while done < n {
        let mut tx = db.begin().await.expect("begin");
        for i in done..(done + 1000).min(n) {
            let id = SfId::generate(ObjectType::BackgroundOperation).into_string();
            let parent = format!("order-{}", i / per_order);
            ops::enqueue(
                &mut tx,
                &NewOperation {
                    id: &id,
                    name: "queued",
                    ty: "Nothing",
                    parent_key: &parent,
                    payload: "{}",
                    retry_limit: 0,
                    retry_backoff_ms: 0,
                    timeout_ms: 1000,
                    now,
                    admitted: None,
                },
            )
            .await
            .expect("enqueue");
        }
        tx.commit().await.expect("commit");
        done = (done + 1000).min(n);
    }
    if db.backend() == Backend::Postgres {
        sqlx::query("ANALYZE background_operations")
            .execute(db.pool())
            .await
            .expect("analyze");
    }
}

/// The plan of `sql` (bound to `binds`, all integers or texts), one line per node.
async fn plan(db: &Db, sql: &str, binds: &[Bind<'_>]) -> Vec<String> {
    let mut conn = db.pool().acquire().await.expect("connection");
    let explain = match db.backend() {
        Backend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
        Backend::Postgres => {
            // A planner that may not scan must show an index; one that may would too
            // at this size, but the test must not depend on the statistics.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .expect("set");
            format!("EXPLAIN {sql}")
        }
    };
    let mut query = sqlx::query(&explain);
    for b in binds {
        query = match b {
            Bind::Int(v) => query.bind(*v),
            Bind::Text(v) => query.bind(*v),
        };
    }
    let rows = query.fetch_all(&mut *conn).await.expect("explain");
    if db.backend() == Backend::Postgres {
        sqlx::query("RESET enable_seqscan")
            .execute(&mut *conn)
            .await
            .expect("reset");
    }
    rows.iter()
        .map(|r| match db.backend() {
            Backend::Sqlite => r.try_get::<String, _>(3).expect("detail"),
            Backend::Postgres => r.try_get::<String, _>(0).expect("plan line"),
        })
        .collect()
}

enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

/// No full scan of the operations table, no sort or temporary B-tree, and `index` is used.
fn assert_indexed(backend: Backend, what: &str, plan: &[String], index: &str) {
    let text = plan.join("\n");
    for line in plan {
        match backend {
            Backend::Sqlite => {
                assert!(
                    !(line.starts_with("SCAN") && line.contains("background_operations")),
                    "{what} scans the queue:\n{text}"
                );
                assert!(!line.contains("TEMP B-TREE"), "{what} sorts:\n{text}");
            }
            Backend::Postgres => {
                assert!(
                    !line.contains("Seq Scan on background_operations"),
                    "{what} scans the queue:\n{text}"
                );
                assert!(!line.contains("Sort"), "{what} sorts:\n{text}");
            }
        }
    }
    assert!(text.contains(index), "{what} does not use {index}:\n{text}");
}

async fn the_claim_reads_only_runnable_rows_through_indexes(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    queue_up(&t.db, 10_000, 5).await;
    let [rescue, claim] = ops::claim_statements(backend);
    let binds = [
        Bind::Int(now_ms()),
        Bind::Int(32),
        Bind::Text("w"),
        Bind::Int(1000),
        Bind::Text("uri"),
    ];
    let p = plan(&t.db, &claim, &binds).await;
    assert_indexed(backend, "the claim", &p, "background_operations_ready");
    let p = plan(&t.db, &rescue, &binds).await;
    assert_indexed(backend, "the rescue", &p, "background_operations_leases");
    let p = plan(
        &t.db,
        &ops::advance_line_statement(),
        &[Bind::Text("order-7")],
    )
    .await;
    assert_indexed(
        backend,
        "moving a line on",
        &p,
        "background_operations_to_plan",
    );
    let p = plan(&t.db, ops::NEXT_DUE, &[]).await;
    assert_indexed(
        backend,
        "the next due time",
        &p,
        "background_operations_ready",
    );
    assert_indexed(
        backend,
        "the next due time",
        &p,
        "background_operations_leases",
    );

    // And it claims what the plan says: the first of each order, in one statement.
    let claimed = ops::claim(&t.db, "w", "uri", 500, 60_000, now_ms())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 500, "a batch as large as the room");
    let mut parents: Vec<&str> = claimed.iter().map(|c| c.parent_key.as_str()).collect();
    parents.sort_unstable();
    parents.dedup();
    assert_eq!(
        parents.len(),
        500,
        "one operation per order: the head of its line"
    );
}

/// The old claim's candidate query, kept only to measure against: it evaluated a
/// correlated `NOT EXISTS` over every queued row and sorted them before `LIMIT`.
const OLD_CANDIDATES: &str = "SELECT c.id FROM background_operations c \
    WHERE ((c.status = 'New' AND c.process_after <= $1) \
        OR (c.status = 'Scheduled' AND c.process_after <= $1) \
        OR (c.status = 'Running' AND c.lease_expires_at < $1)) \
      AND NOT EXISTS (SELECT 1 FROM background_operations p \
        WHERE p.parent_key = c.parent_key AND p.id <> c.id \
          AND (p.submitted_at < c.submitted_at OR (p.submitted_at = c.submitted_at AND p.id < c.id)) \
          AND p.status IN ('New', 'Running', 'Scheduled')) \
    ORDER BY c.submitted_at, c.id LIMIT $2";

/// Mean time of `rounds` claims of 32 (each leaves its operations running, as workers would).
async fn claim_time(db: &Db, rounds: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..rounds {
        let claimed = ops::claim(db, "w", "uri", 32, 600_000, now_ms())
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 32);
    }
    started.elapsed() / rounds
}

/// Mean time of `rounds` runs of a candidate query alone (no update, no commit).
async fn candidates_time(db: &Db, sql: &str, rounds: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..rounds {
        let rows = sqlx::query(sql)
            .bind(now_ms())
            .bind(32i64)
            .fetch_all(db.pool())
            .await
            .expect("old candidates");
        assert_eq!(rows.len(), 32);
    }
    started.elapsed() / rounds
}

async fn claim_time_at_1000_and_100000_queued(backend: Backend) {
    let mut line = format!("{backend:?}:");
    for n in [1_000, 100_000] {
        let Some(t) = TestDb::new(backend).await else {
            return;
        };
        // Every operation on its own order: all of them claimable, the claim's worst case.
        queue_up(&t.db, n, 1).await;
        let old = candidates_time(&t.db, OLD_CANDIDATES, 5).await;
        let ready = candidates_time(&t.db, ops::READY, 20).await;
        let claim = claim_time(&t.db, 20).await;
        line.push_str(&format!(
            " {n} queued: candidates {:.3} ms (the old query {:.3} ms), whole claim of 32 with its commit {:.2} ms;",
            ready.as_secs_f64() * 1000.0,
            old.as_secs_f64() * 1000.0,
            claim.as_secs_f64() * 1000.0
        ));
    }
    println!("{line}");
}

backend_tests!(the_claim_reads_only_runnable_rows_through_indexes);

mod measurement {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: cargo test --release -p refunds-queue --test claim_cost -- --ignored --nocapture"]
    async fn sqlite() {
        super::claim_time_at_1000_and_100000_queued(refunds_testkit::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: cargo test --release -p refunds-queue --test claim_cost -- --ignored --nocapture"]
    async fn postgres() {
        super::claim_time_at_1000_and_100000_queued(refunds_testkit::Backend::Postgres).await
    }
}
