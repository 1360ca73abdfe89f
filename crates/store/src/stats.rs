//! What an operator watches: how many operations, refunds and open process exceptions
//! there are in each state, and how long the oldest runnable operation has waited. Four
//! aggregate queries, read when asked (by `/metrics`), never kept.

use sqlx::Row;

use crate::{Db, Result};

/// Counts by state, and the queue's lag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Background operations by `Status`.
    pub operations: Vec<(String, i64)>,
    /// Refunds by `Status`.
    pub refunds: Vec<(String, i64)>,
    /// Refunds whose provider's answer is still awaited, by how: `pending` (an unknown
    /// outcome looked up), `settling` (polled until settled), `manual` (handed to a person).
    pub reconciling: Vec<(String, i64)>,
    /// Process exceptions still `New` or `Triaged`.
    pub open_exceptions: i64,
    /// Milliseconds the oldest runnable new operation has waited (0 when none waits).
    pub queue_lag_ms: i64,
}

async fn counts(db: &Db, sql: &str) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query(sql).fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("n")?)))
        .collect()
}

pub async fn snapshot(db: &Db, now: i64) -> Result<Snapshot> {
    let operations = counts(
        db,
        "SELECT status AS name, CAST(COUNT(*) AS BIGINT) AS n FROM background_operations GROUP BY status ORDER BY status",
    )
    .await?;
    let refunds = counts(
        db,
        "SELECT status AS name, CAST(COUNT(*) AS BIGINT) AS n FROM refunds GROUP BY status ORDER BY status",
    )
    .await?;
    let reconciling = counts(
        db,
        "SELECT reconcile_state AS name, CAST(COUNT(*) AS BIGINT) AS n FROM refunds WHERE reconcile_state <> 'none' \
         GROUP BY reconcile_state ORDER BY reconcile_state",
    )
    .await?;
    let open_exceptions: i64 = sqlx::query_scalar(&format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM process_exceptions WHERE {}",
        crate::schema::active_process_exception_sql()
    ))
    .fetch_one(db.pool())
    .await?;
    // The claim's own index: the operation that has been claimable and due the longest.
    let oldest: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(MIN(claimable_at) AS BIGINT) FROM background_operations \
         WHERE claimable_at IS NOT NULL AND claimable_at <= $1",
    )
    .bind(now)
    .fetch_one(db.pool())
    .await?;
    Ok(Snapshot {
        operations,
        refunds,
        reconciling,
        open_exceptions,
        queue_lag_ms: oldest.map_or(0, |t| now.saturating_sub(t).max(0)),
    })
}
