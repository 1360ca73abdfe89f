//! The background-operation queue's SQL: enqueue in the caller's transaction, claim with
//! a lease, heartbeat, fencing, completion and retry scheduling.
//!
//! An operation is *unfinished* while it is `New`, `Running`, or `Error` with a retry
//! scheduled. Per `ParentKey` only the oldest unfinished operation can be claimed, so
//! operations on the same order summary run one at a time and in submission order; on
//! PostgreSQL that candidate row is locked with `FOR UPDATE SKIP LOCKED`, so two workers
//! never claim it together.

use sqlx::{AnyConnection, Row};

use crate::db::{expect_one, WAKE_CHANNEL};
use crate::{Backend, Db, Result, StoreError, Tx};

/// What to enqueue.
#[derive(Clone, Debug)]
pub struct NewOperation<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub ty: &'a str,
    pub parent_key: &'a str,
    pub payload: &'a str,
    pub retry_limit: i64,
    pub retry_backoff_ms: i64,
    pub timeout_ms: i64,
    pub now: i64,
}

/// An operation this worker now holds the lease on.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: String,
    pub ty: String,
    pub parent_key: String,
    pub payload: String,
    /// The fencing token: every write for this run must present it.
    pub lease_token: i64,
    pub retry_count: i64,
    pub retry_limit: i64,
    pub retry_backoff_ms: i64,
    /// Times this operation was taken over from a worker that stopped renewing its lease.
    pub rescues: i64,
}

const INSERT_OPERATION: &str = "INSERT INTO background_operations (id, name, type, status, parent_key, \
    payload, submitted_at, retry_count, retry_limit, retry_backoff, process_after, timeout, created_date, \
    last_modified_date) VALUES ($1, $2, $3, 'New', $4, $5, $6, 0, $7, $8, $6, $9, $6, $6)";

/// Adds an operation in the caller's transaction; workers are woken when it commits (on
/// PostgreSQL by a NOTIFY sent in the same statement, delivered only if it commits).
pub async fn enqueue(tx: &mut Tx, backend: Backend, op: &NewOperation<'_>) -> Result<()> {
    let sql = match backend {
        // (wrapped: the Any driver cannot decode PostgreSQL's `void`)
        Backend::Postgres => format!(
            "WITH op AS ({INSERT_OPERATION} RETURNING id) \
             SELECT CAST(COUNT(*) AS BIGINT) FROM op, (SELECT pg_notify($10, '')) AS n"
        ),
        Backend::Sqlite => INSERT_OPERATION.to_string(),
    };
    let mut query = sqlx::query(&sql)
        .bind(op.id)
        .bind(op.name)
        .bind(op.ty)
        .bind(op.parent_key)
        .bind(op.payload)
        .bind(op.now)
        .bind(op.retry_limit)
        .bind(op.retry_backoff_ms)
        .bind(op.timeout_ms);
    if backend == Backend::Postgres {
        query = query.bind(WAKE_CHANNEL);
    }
    query.execute(tx.conn()).await?;
    tx.wake_workers_on_commit();
    Ok(())
}

const CANDIDATES: &str = "FROM background_operations c \
    WHERE ((c.status = 'New' AND c.process_after <= $1) \
        OR (c.status = 'Error' AND c.retry_scheduled = 1 AND c.process_after <= $1) \
        OR (c.status = 'Running' AND c.lease_expires_at < $1)) \
      AND NOT EXISTS (SELECT 1 FROM background_operations p \
        WHERE p.parent_key = c.parent_key AND p.id <> c.id \
          AND (p.submitted_at < c.submitted_at OR (p.submitted_at = c.submitted_at AND p.id < c.id)) \
          AND (p.status IN ('New', 'Running') OR (p.status = 'Error' AND p.retry_scheduled = 1))) \
    ORDER BY c.submitted_at, c.id LIMIT $2";

const CLAIM_SET: &str = "SET status = 'Running', lease_owner = $3, lease_token = lease_token + 1, \
    lease_expires_at = $1 + $4, started_at = $1, worker_uri = $5, last_modified_date = $1, \
    retry_scheduled = 0, retry_count = CASE WHEN status = 'Error' THEN retry_count + 1 ELSE retry_count END, \
    rescue_count = CASE WHEN status = 'Running' THEN rescue_count + 1 ELSE rescue_count END";

const CLAIM_RETURNING: &str =
    "RETURNING id, type, parent_key, payload, lease_token, retry_count, retry_limit, retry_backoff, \
    rescue_count";
/// PostgreSQL's form joins `picked`, whose `id` would be ambiguous.
const CLAIM_RETURNING_QUALIFIED: &str =
    "RETURNING background_operations.id, type, parent_key, payload, lease_token, \
    retry_count, retry_limit, retry_backoff, rescue_count";

/// Claims up to `limit` runnable operations (new, due for retry, or whose lease expired)
/// for `worker`, leasing each for `lease_ms`.
pub async fn claim(
    db: &Db,
    worker: &str,
    worker_uri: &str,
    limit: i64,
    lease_ms: i64,
    now: i64,
) -> Result<Vec<Claimed>> {
    let sql = match db.backend() {
        Backend::Postgres => format!(
            "WITH picked AS (SELECT c.id {CANDIDATES} FOR UPDATE OF c SKIP LOCKED) \
             UPDATE background_operations {CLAIM_SET} FROM picked \
             WHERE background_operations.id = picked.id {CLAIM_RETURNING_QUALIFIED}"
        ),
        // SQLite has one writer at a time, so the select and update cannot interleave.
        Backend::Sqlite => format!(
            "UPDATE background_operations {CLAIM_SET} WHERE id IN (SELECT c.id {CANDIDATES}) {CLAIM_RETURNING}"
        ),
    };
    let mut tx = db.begin().await?;
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(limit)
        .bind(worker)
        .bind(lease_ms)
        .bind(worker_uri)
        .fetch_all(tx.conn())
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Claimed {
                id: r.try_get(0)?,
                ty: r.try_get(1)?,
                parent_key: r.try_get(2)?,
                payload: r.try_get(3)?,
                lease_token: r.try_get(4)?,
                retry_count: r.try_get(5)?,
                retry_limit: r.try_get(6)?,
                retry_backoff_ms: r.try_get(7)?,
                rescues: r.try_get(8)?,
            })
        })
        .collect()
}

/// Checks, inside the caller's transaction, that this worker still holds the lease; on
/// PostgreSQL it also locks the operation row until the transaction ends, so a rescuer
/// cannot take over half-way through the write.
pub async fn fence(conn: &mut AnyConnection, id: &str, token: i64, now: i64) -> Result<()> {
    let r = sqlx::query(
        "UPDATE background_operations SET last_modified_date = $1 \
         WHERE id = $2 AND lease_token = $3 AND status = 'Running'",
    )
    .bind(now)
    .bind(id)
    .bind(token)
    .execute(conn)
    .await?;
    if r.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(id.to_string()))
    }
}

/// Extends the lease; false if it was lost.
pub async fn heartbeat(db: &Db, id: &str, token: i64, lease_ms: i64, now: i64) -> Result<bool> {
    let mut tx = db.begin().await?;
    let r = sqlx::query(
        "UPDATE background_operations SET lease_expires_at = $1 + $2 \
         WHERE id = $3 AND lease_token = $4 AND status = 'Running'",
    )
    .bind(now)
    .bind(lease_ms)
    .bind(id)
    .bind(token)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

/// Marks a run `Complete` (fenced).
pub async fn complete(db: &Db, id: &str, token: i64, now: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    let r = sqlx::query(
        "UPDATE background_operations SET status = 'Complete', finished_at = $1, last_modified_date = $1, \
         error = NULL, lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $2 AND lease_token = $3 AND status = 'Running'",
    )
    .bind(now)
    .bind(id)
    .bind(token)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    lease_held(r.rows_affected(), id)
}

/// Marks a run `Error` (fenced). With `retry_in_ms` the operation will run again after
/// that delay; without, it stays `Error`.
pub async fn fail(
    db: &Db,
    id: &str,
    token: i64,
    error: &str,
    retry_in_ms: Option<i64>,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let r = sqlx::query(
        "UPDATE background_operations SET status = 'Error', error = $1, finished_at = $2, last_modified_date = $2, \
         lease_owner = NULL, lease_expires_at = NULL, retry_scheduled = $3, process_after = $2 + $4 \
         WHERE id = $5 AND lease_token = $6 AND status = 'Running'",
    )
    .bind(error)
    .bind(now)
    .bind(i64::from(retry_in_ms.is_some()))
    .bind(retry_in_ms.unwrap_or(0))
    .bind(id)
    .bind(token)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    lease_held(r.rows_affected(), id)
}

fn lease_held(rows: u64, id: &str) -> Result<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(id.to_string()))
    }
}

/// When the next waiting operation (new, retry or lease) becomes due, if any: lets an idle
/// worker sleep exactly until then instead of polling blindly.
pub async fn next_due(db: &Db) -> Result<Option<i64>> {
    let row = sqlx::query(
        "SELECT CAST(MIN(CASE WHEN status = 'Running' THEN lease_expires_at ELSE process_after END) AS BIGINT) \
         FROM background_operations \
         WHERE status IN ('New', 'Running') OR (status = 'Error' AND retry_scheduled = 1)",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?)
}

/// Cancels an operation that has not started (`New` → `Canceled`).
pub async fn cancel(db: &Db, id: &str, now: i64) -> Result<bool> {
    let mut tx = db.begin().await?;
    let r = sqlx::query(
        "UPDATE background_operations SET status = 'Canceled', finished_at = $1, last_modified_date = $1 \
         WHERE id = $2 AND status = 'New'",
    )
    .bind(now)
    .bind(id)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

/// Test and operator helper: makes a running operation's lease expire now, as if its
/// worker had died.
pub async fn expire_lease(db: &Db, id: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    let r = sqlx::query("UPDATE background_operations SET lease_expires_at = 0 WHERE id = $1 AND status = 'Running'")
        .bind(id)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    expect_one(r, || format!("running operation {id}"))
}
