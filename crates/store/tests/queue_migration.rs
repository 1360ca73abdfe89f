//! Migration 0006 on a database that already holds operations: each order's operations get
//! their places in line in submission order (`submitted_at`, then id), a pending retry
//! becomes `Scheduled`, and only the first holder of each line is claimable.

use refunds_store::{ops, Backend, Db};
use sqlx::Connection;

const BEFORE: &[(i64, &str, &str)] = &[
    (1, "core", include_str!("../migrations/0001_core.sql")),
    (
        2,
        "gateway_settings",
        include_str!("../migrations/0002_gateway_settings.sql"),
    ),
    (3, "auth", include_str!("../migrations/0003_auth.sql")),
    (4, "rescues", include_str!("../migrations/0004_rescues.sql")),
];

/// (id, parent, status, submitted_at, retry_scheduled, planned_at)
type OldRow = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    i64,
    Option<i64>,
);

const ROWS: &[OldRow] = &[
    ("op-a3", "order-a", "New", 300, 0, None),
    ("op-a1", "order-a", "Complete", 100, 0, Some(101)),
    ("op-a2", "order-a", "Running", 200, 0, None),
    ("op-b1", "order-b", "Error", 150, 1, None),
    ("op-b3", "order-b", "New", 160, 0, None),
    ("op-b2", "order-b", "New", 160, 0, None),
    ("op-c1", "order-c", "Running", 50, 0, Some(60)),
    ("op-c2", "order-c", "New", 70, 0, None),
];

async fn old_schema_with_rows(db: &Db) {
    let mut tx = db.begin().await.expect("begin");
    sqlx::query(
        "CREATE TABLE refunds_schema_migrations \
         (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(tx.raw_connection())
    .await
    .expect("migrations table");
    for (version, name, sql) in BEFORE {
        sqlx::raw_sql(sql)
            .execute(tx.raw_connection())
            .await
            .expect("old migration");
        sqlx::query("INSERT INTO refunds_schema_migrations VALUES ($1, $2, 0)")
            .bind(*version)
            .bind(*name)
            .execute(tx.raw_connection())
            .await
            .expect("record migration");
    }
    for (id, parent, status, submitted, scheduled, planned) in ROWS {
        sqlx::query(
            "INSERT INTO background_operations (id, name, type, status, parent_key, payload, submitted_at, \
             retry_limit, retry_backoff, retry_scheduled, process_after, timeout, lease_expires_at, planned_at, \
             created_date, last_modified_date) \
             VALUES ($1, 'old', 'Old', $2, $3, '{}', $4, 3, 10, $5, $4, 1000, $6, $7, $4, $4)",
        )
        .bind(*id)
        .bind(*status)
        .bind(*parent)
        .bind(*submitted)
        .bind(*scheduled)
        .bind((*status == "Running").then_some(i64::MAX))
        .bind(*planned)
        .execute(tx.raw_connection())
        .await
        .expect("old row");
    }
    tx.commit().await.expect("commit");
}

async fn migrates_existing_operations_into_lines(db: Db) {
    old_schema_with_rows(&db).await;
    db.migrate().await.expect("migrate");
    let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, status, seq, claimable_at FROM background_operations ORDER BY parent_key, seq",
    )
    .fetch_all(db.pool())
    .await
    .expect("rows");
    let expected: Vec<(String, String, i64, Option<i64>)> = [
        ("op-a1", "Complete", 1, None),
        ("op-a2", "Running", 2, None),
        // op-a2 has not planned: op-a3 waits behind it.
        ("op-a3", "New", 3, None),
        ("op-b1", "Scheduled", 1, Some(150)),
        ("op-b2", "New", 2, None),
        ("op-b3", "New", 3, None),
        ("op-c1", "Running", 1, None),
        // op-c1 has planned: op-c2 may plan now.
        ("op-c2", "New", 2, Some(70)),
    ]
    .iter()
    .map(|(id, s, seq, at)| (id.to_string(), s.to_string(), *seq, *at))
    .collect();
    assert_eq!(rows, expected);
    let lines: Vec<(String, i64)> =
        sqlx::query_as("SELECT parent_key, last_seq FROM queue_lines ORDER BY parent_key")
            .fetch_all(db.pool())
            .await
            .expect("lines");
    assert_eq!(
        lines,
        vec![
            ("order-a".to_string(), 3),
            ("order-b".to_string(), 3),
            ("order-c".to_string(), 2)
        ]
    );
    let claimed = ops::claim(&db, "w", "uri", 10, 1000, 1_000)
        .await
        .expect("claim");
    let mut ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec!["op-b1", "op-c2"],
        "the heads of the lines, no more"
    );
    let retry = claimed.iter().find(|c| c.id == "op-b1").expect("op-b1");
    assert_eq!(retry.retry_count, 1, "claiming a Scheduled retry counts it");
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Db::connect(&format!("sqlite:{}", dir.path().join("old.db").display()))
        .await
        .expect("connect");
    assert_eq!(db.backend(), Backend::Sqlite);
    migrates_existing_operations_into_lines(db).await;
}

#[tokio::test]
async fn postgres() {
    let Ok(admin) = std::env::var("REFUNDS_TEST_POSTGRES_URL") else {
        eprintln!("notice: REFUNDS_TEST_POSTGRES_URL is not set; skipping a PostgreSQL test");
        return;
    };
    let name = format!("refunds_migration_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await
        .expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let db = Db::connect(&format!("{base}/{name}"))
        .await
        .expect("connect");
    migrates_existing_operations_into_lines(db.clone()).await;
    db.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("drop");
}
