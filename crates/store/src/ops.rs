//! The background-operation queue's SQL: enqueue in the caller's transaction, claim with
//! a lease, heartbeat, fencing, completion and retry scheduling.
//!
//! Operations of one `ParentKey` (order summary) stand in a *line*: `seq` is an
//! operation's place in it, taken from the line's row (`queue_lines`) in the enqueue
//! transaction, so the row's lock (PostgreSQL) or the single writer (SQLite) orders
//! concurrent enqueues, not a clock. An operation *holds* its line while it is unfinished
//! and has not planned (`planned_at`); only the first holder of a line may be claimed,
//! so the operations of one order plan one at a time, in line order, while an operation
//! that has planned may run its provider calls beside the next one's plan.
//!
//! `claimable_at` is set (to when the operation is due) exactly on the operations that may
//! be claimed: `New` or `Scheduled` and first in their line. Every statement that changes
//! who holds a line (enqueue, plan, finish) keeps it up to date in its own transaction,
//! under the line row's lock, and the claim reads only those rows through a partial index
//! (`background_operations_ready`) in due order: its cost does not depend on the backlog.
//! Rescue of an expired lease reads only `Running` rows (`background_operations_leases`).
//! On PostgreSQL claimed rows are locked with `FOR UPDATE SKIP LOCKED`, so two workers
//! never claim one operation together.

use refunds_domain::OperationStatus;
use sqlx::Row;

use crate::db::expect_one;
use crate::dialect::{locks, queue as dialect};
use crate::wakeups::WAKE_CHANNEL;
use crate::{Backend, Db, Result, StoreError, Tx};

/// Money an admission set aside for an operation, released if it ends before planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted<'a> {
    /// Set aside on the order summary (`ParentKey`).
    pub amount: i64,
    /// Set aside on a credit memo's balance.
    pub credit_memo: Option<(&'a str, i64)>,
}

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
    pub admitted: Option<Admitted<'a>>,
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
    /// Whether an earlier run already planned it (a rescued or retried run must not plan
    /// twice). Only this run's lease holder can change it, so it holds for the whole run.
    pub planned: bool,
    /// What its admission set aside, until it plans (`None`: nothing, or admitted before
    /// admissions set money aside).
    pub held: Option<crate::admission::Held>,
}

/// The statuses in which an operation holds its line (unfinished; with `planned_at IS
/// NULL`, not yet planned). Written as the partial index `background_operations_to_plan`
/// is, so that the index serves these queries.
const HOLDING: &str = "planned_at IS NULL AND status IN ('New', 'Running', 'Scheduled')";

/// Takes the next place in `parent_key`'s line (and, on PostgreSQL, the line row's lock
/// until the transaction ends).
async fn take_place(tx: &mut Tx, parent_key: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO queue_lines (parent_key, last_seq) VALUES ($1, 1) \
         ON CONFLICT (parent_key) DO UPDATE SET last_seq = queue_lines.last_seq + 1 \
         RETURNING last_seq",
    )
    .bind(parent_key)
    .fetch_one(tx.conn())
    .await?)
}

/// After an operation of `parent_key` stopped holding the line (planned or finished):
/// the line's new first holder, if it waits for a claim, becomes claimable. On PostgreSQL
/// the line row is locked first, in its own statement, so that this statement's snapshot
/// sees every enqueue that committed before it, and an enqueue still running waits and
/// then sees this transaction's change: one of the two always makes the next one claimable.
pub async fn advance_line(tx: &mut Tx, parent_key: &str) -> Result<()> {
    locks::lock_row(tx, "queue_lines", "parent_key", parent_key).await?;
    sqlx::query(&advance_line_statement())
        .bind(parent_key)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// The statement of [`advance_line`] (`$1`: the parent key), for the tests that pin its plan.
pub fn advance_line_statement() -> String {
    format!(
        "UPDATE background_operations SET claimable_at = process_after \
         WHERE id = (SELECT id FROM background_operations WHERE parent_key = $1 AND {HOLDING} \
                     ORDER BY seq LIMIT 1) \
           AND status IN ('New', 'Scheduled') AND claimable_at IS NULL"
    )
}

/// Inserts the operation at `$10` in its line, claimable at once when nothing before it
/// still holds the line (every holder is before it: it has the last place).
pub const INSERT_OPERATION: &str = "INSERT INTO background_operations (id, name, type, status, parent_key, \
    payload, submitted_at, retry_count, retry_limit, retry_backoff, process_after, timeout, created_date, \
    last_modified_date, seq, claimable_at, admitted_amount, admitted_credit_memo_id, admitted_credit_memo_amount) \
    VALUES ($1, $2, $3, 'New', $4, $5, $6, 0, $7, $8, $6, $9, $6, $6, $10, \
    CASE WHEN EXISTS (SELECT 1 FROM background_operations h WHERE h.parent_key = $4 \
        AND h.planned_at IS NULL AND h.status IN ('New', 'Running', 'Scheduled')) THEN NULL ELSE $6 END, \
    $11, $12, $13)";

/// Adds an operation in the caller's transaction at the end of its line; workers are
/// woken when it commits (on PostgreSQL by a NOTIFY sent in the same statement, delivered
/// only if it commits). Answers its place in the line.
pub async fn enqueue(tx: &mut Tx, op: &NewOperation<'_>) -> Result<i64> {
    let seq = take_place(tx, op.parent_key).await?;
    let backend = tx.backend();
    let sql = dialect::insert_and_notify(backend, INSERT_OPERATION, 14);
    let cm = op.admitted.as_ref().and_then(|a| a.credit_memo);
    let mut query = sqlx::query(&sql)
        .bind(op.id)
        .bind(op.name)
        .bind(op.ty)
        .bind(op.parent_key)
        .bind(op.payload)
        .bind(op.now)
        .bind(op.retry_limit)
        .bind(op.retry_backoff_ms)
        .bind(op.timeout_ms)
        .bind(seq)
        .bind(op.admitted.as_ref().map(|a| a.amount))
        .bind(cm.map(|(id, _)| id))
        .bind(cm.map(|(_, amount)| amount));
    if dialect::notifies(backend) {
        query = query.bind(WAKE_CHANNEL);
    }
    query.execute(tx.conn()).await?;
    tx.wake_workers_on_commit();
    Ok(seq)
}

/// The first `$2` operations that may be claimed and are due at `$1`, in due order: read
/// from the partial index of claimable rows only.
pub const READY: &str = "SELECT id FROM background_operations \
    WHERE claimable_at IS NOT NULL AND claimable_at <= $1 ORDER BY claimable_at LIMIT $2";

/// Up to `$2` running operations whose lease expired before `$1`: read from the partial
/// index of running rows only.
const EXPIRED: &str = "SELECT id FROM background_operations \
    WHERE status = 'Running' AND lease_expires_at < $1 LIMIT $2";

const CLAIM_SET: &str = "SET status = 'Running', lease_owner = $3, lease_token = lease_token + 1, \
    lease_expires_at = $1 + $4, started_at = $1, worker_uri = $5, last_modified_date = $1, \
    claimable_at = NULL, retry_scheduled = 0, \
    retry_count = CASE WHEN status = 'Scheduled' THEN retry_count + 1 ELSE retry_count END, \
    rescue_count = CASE WHEN status = 'Running' THEN rescue_count + 1 ELSE rescue_count END";

const CLAIM_RETURNING: &[&str] = &[
    "id",
    "type",
    "parent_key",
    "payload",
    "lease_token",
    "retry_count",
    "retry_limit",
    "retry_backoff",
    "rescue_count",
    "planned_at",
    "admitted_amount",
    "admitted_credit_memo_id",
    "admitted_credit_memo_amount",
];

/// The claim statements, for the tests that pin their query plans: the rescue of expired
/// leases, then the claim of ready operations. Parameters: `$1` now, `$2` how many, `$3`
/// worker, `$4` lease, `$5` worker URI.
pub fn claim_statements(backend: Backend) -> [String; 2] {
    let statement =
        |pick: &str, guard: &str| dialect::claim(backend, pick, CLAIM_SET, guard, CLAIM_RETURNING);
    [
        statement(EXPIRED, "status = 'Running'"),
        statement(READY, "claimable_at IS NOT NULL"),
    ]
}

/// Claims up to `limit` runnable operations (first in their line and due, or whose lease
/// expired) for `worker`, leasing each for `lease_ms`: one statement for the rescues and
/// one for the rest, in one transaction.
pub async fn claim(
    db: &Db,
    worker: &str,
    worker_uri: &str,
    limit: i64,
    lease_ms: i64,
    now: i64,
) -> Result<Vec<Claimed>> {
    let mut tx = db.begin().await?;
    let mut claimed = Vec::new();
    for sql in claim_statements(db.backend()) {
        let room = limit - i64::try_from(claimed.len()).unwrap_or(i64::MAX);
        if room <= 0 {
            break;
        }
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(room)
            .bind(worker)
            .bind(lease_ms)
            .bind(worker_uri)
            .fetch_all(tx.conn())
            .await?;
        for r in &rows {
            claimed.push(Claimed {
                id: r.try_get("id")?,
                ty: r.try_get("type")?,
                parent_key: r.try_get("parent_key")?,
                payload: r.try_get("payload")?,
                lease_token: r.try_get("lease_token")?,
                retry_count: r.try_get("retry_count")?,
                retry_limit: r.try_get("retry_limit")?,
                retry_backoff_ms: r.try_get("retry_backoff")?,
                rescues: r.try_get("rescue_count")?,
                planned: r.try_get::<Option<i64>, _>("planned_at")?.is_some(),
                held: match r.try_get::<Option<i64>, _>("admitted_amount")? {
                    Some(_) => Some(crate::admission::Held::from_row(r)?),
                    None => None,
                },
            });
        }
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Checks, inside the caller's transaction, that this worker still holds the lease; on
/// PostgreSQL it also locks the operation row until the transaction ends, so a rescuer
/// cannot take over half-way through the write.
pub async fn fence(tx: &mut Tx, id: &str, token: i64, now: i64) -> Result<()> {
    let r = sqlx::query(
        "UPDATE background_operations SET last_modified_date = $1 \
         WHERE id = $2 AND lease_token = $3 AND status = 'Running'",
    )
    .bind(now)
    .bind(id)
    .bind(token)
    .execute(tx.conn())
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

/// Ends an operation in `to` (a final status), fenced by `token` when given, with
/// `error`: releases what its admission set aside if it never planned, and lets the
/// next operation of its line go on. `None` if the operation was not in a status that may
/// move to `to` (or, fenced, no longer held by that token).
async fn finish(
    tx: &mut Tx,
    id: &str,
    token: Option<i64>,
    to: OperationStatus,
    error: Option<&str>,
    now: i64,
) -> Result<Option<()>> {
    let fence = if token.is_some() {
        "AND lease_token = $5"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE background_operations SET status = $1, error = $2, finished_at = $3, last_modified_date = $3, \
         lease_owner = NULL, lease_expires_at = NULL, claimable_at = NULL, retry_scheduled = 0 \
         WHERE id = $4 {fence} AND {} \
         RETURNING parent_key, planned_at",
        OperationStatus::sql_sources(to)
    );
    let mut query = sqlx::query(&sql)
        .bind(to.as_str())
        .bind(error)
        .bind(now)
        .bind(id);
    if let Some(token) = token {
        query = query.bind(token);
    }
    let Some(row) = query.fetch_optional(tx.conn()).await? else {
        return Ok(None);
    };
    let parent_key: String = row.try_get("parent_key")?;
    let planned: Option<i64> = row.try_get("planned_at")?;
    if planned.is_none() {
        crate::admission::release(tx, id, now).await?;
    }
    // (After a plan the line has already moved on; once more costs one index probe and
    // means no line can stay stuck behind a finished operation.)
    advance_line(tx, &parent_key).await?;
    Ok(Some(()))
}

/// Marks a run `Complete` (fenced) inside the caller's transaction, which then commits the
/// run's last write and its completion together.
pub async fn complete_in(tx: &mut Tx, id: &str, token: i64, now: i64) -> Result<()> {
    finish(tx, id, Some(token), OperationStatus::Complete, None, now)
        .await?
        .ok_or_else(|| StoreError::LeaseLost(id.to_string()))
}

/// Marks a run `Complete` (fenced).
pub async fn complete(db: &Db, id: &str, token: i64, now: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    complete_in(&mut tx, id, token, now).await?;
    tx.commit().await
}

/// Ends a failed run (fenced). With `retry_in_ms` the operation is `Scheduled` to run again
/// after that delay (`Error` keeps the last error); without, it ends `Error`.
pub async fn fail(
    db: &Db,
    id: &str,
    token: i64,
    error: &str,
    retry_in_ms: Option<i64>,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let done = match retry_in_ms {
        None => {
            finish(
                &mut tx,
                id,
                Some(token),
                OperationStatus::Error,
                Some(error),
                now,
            )
            .await?
        }
        // A retry keeps its place: first in its line if it has not planned yet (it was
        // when it was claimed), and past the line if it has.
        Some(delay) => {
            let r = sqlx::query(&format!(
                "UPDATE background_operations SET status = 'Scheduled', error = $1, finished_at = $2, \
                 last_modified_date = $2, lease_owner = NULL, lease_expires_at = NULL, retry_scheduled = 1, \
                 process_after = $2 + $3, claimable_at = $2 + $3 \
                 WHERE id = $4 AND lease_token = $5 AND {}",
                OperationStatus::sql_sources(OperationStatus::Scheduled)
            ))
            .bind(error)
            .bind(now)
            .bind(delay)
            .bind(id)
            .bind(token)
            .execute(tx.conn())
            .await?;
            (r.rows_affected() == 1).then_some(())
        }
    };
    tx.commit().await?;
    done.ok_or_else(|| StoreError::LeaseLost(id.to_string()))
}

/// The statement of [`next_due`].
pub const NEXT_DUE: &str = "SELECT CAST(MIN(due) AS BIGINT) FROM ( \
       SELECT MIN(claimable_at) AS due FROM background_operations WHERE claimable_at IS NOT NULL \
       UNION ALL \
       SELECT MIN(lease_expires_at) AS due FROM background_operations WHERE status = 'Running' \
     ) AS d";

/// When the next waiting operation (claimable, or a lease running out) becomes due, if
/// any: lets an idle worker sleep exactly until then instead of polling blindly. Reads
/// the first entry of each of the claim's two partial indexes.
pub async fn next_due(db: &Db) -> Result<Option<i64>> {
    let row = sqlx::query(NEXT_DUE).fetch_one(db.pool()).await?;
    Ok(row.try_get::<Option<i64>, _>(0)?)
}

/// Cancels an operation that has not started (`New` → `Canceled`); what its admission set
/// aside is released.
pub async fn cancel(db: &Db, id: &str, now: i64) -> Result<bool> {
    let mut tx = db.begin().await?;
    let done = finish(&mut tx, id, None, OperationStatus::Canceled, None, now).await?;
    tx.commit().await?;
    Ok(done.is_some())
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
