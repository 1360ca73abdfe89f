//! Reconciliation: a refund whose outcome is unknown is looked up on a schedule until the
//! provider answers, or handed to a person with its money reserved.

use refunds_domain::{ReconcileState, RefundState, RefundStatus};

use crate::db::expect_one;
use crate::{Db, Result, Tx};

use super::exceptions::{insert_process_exception, NewProcessException};
use super::work::{due_lookups, RefundWork};

/// Puts a refund whose outcome is unknown under reconciliation (it stays `Draft`, its
/// money stays reserved) with the first lookup at `next_lookup_at`.
pub async fn start_reconciliation(
    tx: &mut Tx,
    refund_id: &str,
    next_lookup_at: i64,
    now: i64,
) -> Result<()> {
    let from = RefundState::NEW;
    let next = from.with_reconcile(ReconcileState::Pending)?;
    let r = sqlx::query(
        "UPDATE refunds SET reconcile_state = $1, reconcile_since = COALESCE(reconcile_since, $2), \
         next_lookup_at = $3, last_modified_date = $2 WHERE id = $4 AND status = $5 AND reconcile_state = $6",
    )
    .bind(next.reconcile.as_str())
    .bind(now)
    .bind(next_lookup_at)
    .bind(refund_id)
    .bind(from.status.as_str())
    .bind(from.reconcile.as_str())
    .execute(tx.conn())
    .await?;
    expect_one(r, || {
        format!("draft refund {refund_id} not under reconciliation")
    })
}

/// Refunds whose next reconciliation lookup is due.
pub async fn due_reconciliations(db: &Db, now: i64, limit: i64) -> Result<Vec<RefundWork>> {
    due_lookups(db, ReconcileState::Pending, RefundStatus::Draft, now, limit).await
}

/// Takes a due reconciliation for this worker: counts the lookup and pushes the next one
/// to `next_lookup_at`, which doubles as a lease (if this worker dies, another retries
/// then). False if another worker took it first.
pub async fn take_reconciliation(
    tx: &mut Tx,
    refund_id: &str,
    lookups_seen: i64,
    next_lookup_at: i64,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE refunds SET lookups = lookups + 1, next_lookup_at = $1, last_modified_date = $2 \
         WHERE id = $3 AND lookups = $4 AND ((reconcile_state = $5 AND status = $6) \
         OR (reconcile_state = $7 AND status = $8))",
    )
    .bind(next_lookup_at)
    .bind(now)
    .bind(refund_id)
    .bind(lookups_seen)
    .bind(ReconcileState::Pending.as_str())
    .bind(RefundStatus::Draft.as_str())
    .bind(ReconcileState::Settling.as_str())
    .bind(RefundStatus::Pending.as_str())
    .execute(tx.conn())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Stops looking a refund up and hands it to a person; the money stays reserved.
pub async fn hand_over_reconciliation(
    tx: &mut Tx,
    refund_id: &str,
    exception: &NewProcessException<'_>,
    now: i64,
) -> Result<()> {
    let from = RefundState::new(RefundStatus::Draft, ReconcileState::Pending);
    let next = from.with_reconcile(ReconcileState::Manual)?;
    let r = sqlx::query(
        "UPDATE refunds SET reconcile_state = $1, next_lookup_at = NULL, last_modified_date = $2 \
         WHERE id = $3 AND reconcile_state = $4 AND status = $5",
    )
    .bind(next.reconcile.as_str())
    .bind(now)
    .bind(refund_id)
    .bind(from.reconcile.as_str())
    .bind(from.status.as_str())
    .execute(tx.conn())
    .await?;
    expect_one(r, || format!("refund {refund_id} under reconciliation"))?;
    insert_process_exception(tx, exception).await
}
