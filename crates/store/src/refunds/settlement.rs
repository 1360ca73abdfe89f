//! Settlement: a refund leaves `Draft` once, as `Processed`, `Pending` or `Canceled`,
//! and its reserved money becomes refunded or is released.

use refunds_domain::{ReconcileState, RefundState, RefundStatus};

use crate::db::expect_one;
use crate::{Db, Result, Tx};

use super::exceptions::{insert_process_exception, NewProcessException};
use super::gateway_log::ProviderAnswer;
use super::work::{due_lookups, RefundWork};

/// Moves a `Draft` refund to its final or pending state (ending any reconciliation);
/// false if it had already left `Draft` (so nothing was changed and the caller must not
/// move money again).
async fn leave_draft(
    tx: &mut Tx,
    w: &RefundWork,
    to: RefundStatus,
    a: &ProviderAnswer<'_>,
    now: i64,
) -> Result<bool> {
    let from = RefundState::new(RefundStatus::Draft, w.reconcile_state);
    let next = from.with_status(to)?;
    let r = sqlx::query(
        "UPDATE refunds SET status = $1, sf_result_code = $2, gateway_ref_number = $3, gateway_result_code = $4, \
         gateway_result_code_description = $5, gateway_date = $6, reconcile_state = $7, next_lookup_at = NULL, \
         last_modified_date = $8 WHERE id = $9 AND status = $10",
    )
    .bind(next.status.as_str())
    .bind(a.sf_result_code)
    .bind(a.gateway_ref_number)
    .bind(a.gateway_result_code)
    .bind(a.gateway_message)
    .bind(a.gateway_date)
    .bind(next.reconcile.as_str())
    .bind(now)
    .bind(w.id.as_str())
    .bind(from.status.as_str())
    .execute(tx.conn())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Records a successful refund. Settled at once (`Processed`): the reservation becomes
/// refunded money and a `RefundLinePayment` is written. Settling later (`Pending`): the
/// money stays reserved until the provider confirms.
pub async fn settle_success(
    tx: &mut Tx,
    w: &RefundWork,
    a: &ProviderAnswer<'_>,
    settlement: Settlement,
    line_id: &str,
    now: i64,
) -> Result<bool> {
    let status = if settlement == Settlement::Now {
        RefundStatus::Processed
    } else {
        RefundStatus::Pending
    };
    if !leave_draft(tx, w, status, a, now).await? {
        return Ok(false);
    }
    match settlement {
        Settlement::Now => move_pending_to_refunded(tx, w, line_id, now).await?,
        Settlement::Notified => {}
        Settlement::PollAt(at) => {
            let from = RefundState::new(RefundStatus::Pending, ReconcileState::None);
            let next = from.with_reconcile(ReconcileState::Settling)?;
            let r = sqlx::query(
                "UPDATE refunds SET reconcile_state = $1, next_lookup_at = $2, lookups = 0, \
                 reconcile_since = $3 WHERE id = $4 AND status = $5 AND reconcile_state = $6",
            )
            .bind(next.reconcile.as_str())
            .bind(at)
            .bind(now)
            .bind(w.id.as_str())
            .bind(from.status.as_str())
            .bind(from.reconcile.as_str())
            .execute(tx.conn())
            .await?;
            expect_one(r, || format!("pending refund {}", w.id))?;
        }
    }
    Ok(true)
}

/// When a successful refund's money settles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Already settled: `Processed`.
    Now,
    /// Later, announced by the provider's notification: `Pending` until then.
    Notified,
    /// Later, found out by looking the refund up from this time on: `Pending` until then.
    PollAt(i64),
}

/// Settles a `Pending` refund once the provider confirms (`success`) or reports it failed:
/// the reserved money becomes refunded, or is released with a process exception. False if
/// the refund was no longer `Pending` (a duplicate notification changes nothing).
pub async fn finish_pending(
    tx: &mut Tx,
    w: &RefundWork,
    a: &ProviderAnswer<'_>,
    success: bool,
    line_id: &str,
    exception: &NewProcessException<'_>,
    now: i64,
) -> Result<bool> {
    let from = RefundState::new(RefundStatus::Pending, w.reconcile_state);
    let next = from.with_status(if success {
        RefundStatus::Processed
    } else {
        RefundStatus::Canceled
    })?;
    let r = sqlx::query(
        "UPDATE refunds SET status = $1, sf_result_code = $2, gateway_ref_number = COALESCE($3, gateway_ref_number), \
         gateway_result_code = $4, gateway_result_code_description = $5, gateway_date = COALESCE($6, gateway_date), \
         reconcile_state = $7, next_lookup_at = NULL, last_modified_date = $8 WHERE id = $9 AND status = $10",
    )
    .bind(next.status.as_str())
    .bind(a.sf_result_code)
    .bind(a.gateway_ref_number)
    .bind(a.gateway_result_code)
    .bind(a.gateway_message)
    .bind(a.gateway_date)
    .bind(next.reconcile.as_str())
    .bind(now)
    .bind(w.id.as_str())
    .bind(from.status.as_str())
    .execute(tx.conn())
    .await?;
    if r.rows_affected() != 1 {
        return Ok(false);
    }
    if success {
        move_pending_to_refunded(tx, w, line_id, now).await?;
    } else {
        release_reservation(tx, w, now).await?;
        insert_process_exception(tx, exception).await?;
    }
    Ok(true)
}

/// `Pending` refunds whose settlement lookup is due.
pub async fn due_settlements(db: &Db, now: i64, limit: i64) -> Result<Vec<RefundWork>> {
    due_lookups(
        db,
        ReconcileState::Settling,
        RefundStatus::Pending,
        now,
        limit,
    )
    .await
}

async fn move_pending_to_refunded(
    tx: &mut Tx,
    w: &RefundWork,
    line_id: &str,
    now: i64,
) -> Result<()> {
    let r = sqlx::query(
        "UPDATE order_payment_summaries SET pending_refund_amount = pending_refund_amount - $1, \
         refunded_amount = refunded_amount + $1, last_modified_date = $2 WHERE id = $3 AND pending_refund_amount >= $1",
    )
    .bind(w.amount.minor())
    .bind(now)
    .bind(w.summary_id.as_str())
    .execute(tx.conn())
    .await?;
    expect_one(r, || {
        format!("reservation of {} on summary {}", w.amount, w.summary_id)
    })?;
    let r = sqlx::query(
        "UPDATE payments SET pending_refund_amount = pending_refund_amount - $1, \
         total_refund_applied = total_refund_applied + $1, last_modified_date = $2 \
         WHERE id = $3 AND pending_refund_amount >= $1",
    )
    .bind(w.amount.minor())
    .bind(now)
    .bind(w.payment_id.as_str())
    .execute(tx.conn())
    .await?;
    expect_one(r, || {
        format!("reservation of {} on payment {}", w.amount, w.payment_id)
    })?;
    sqlx::query(
        "INSERT INTO refund_line_payments (id, refund_id, payment_id, amount, type, applied_date, currency_iso_code, \
         created_date, last_modified_date) VALUES ($1, $2, $3, $4, 'Applied', $5, $6, $5, $5)",
    )
    .bind(line_id)
    .bind(w.id.as_str())
    .bind(w.payment_id.as_str())
    .bind(w.amount.minor())
    .bind(now)
    .bind(w.currency().code())
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Records a failed refund: `Canceled`, reservation released, the credit memo's part
/// returned to it, and a process exception raised. False if it had already left `Draft`.
pub async fn settle_failure(
    tx: &mut Tx,
    w: &RefundWork,
    a: &ProviderAnswer<'_>,
    exception: &NewProcessException<'_>,
    now: i64,
) -> Result<bool> {
    if !leave_draft(tx, w, RefundStatus::Canceled, a, now).await? {
        return Ok(false);
    }
    release_reservation(tx, w, now).await?;
    insert_process_exception(tx, exception).await?;
    Ok(true)
}

async fn release_reservation(tx: &mut Tx, w: &RefundWork, now: i64) -> Result<()> {
    let r = sqlx::query(
        "UPDATE order_payment_summaries SET pending_refund_amount = pending_refund_amount - $1, \
         last_modified_date = $2 WHERE id = $3 AND pending_refund_amount >= $1",
    )
    .bind(w.amount.minor())
    .bind(now)
    .bind(w.summary_id.as_str())
    .execute(tx.conn())
    .await?;
    expect_one(r, || {
        format!("reservation of {} on summary {}", w.amount, w.summary_id)
    })?;
    let r = sqlx::query(
        "UPDATE payments SET pending_refund_amount = pending_refund_amount - $1, last_modified_date = $2 \
         WHERE id = $3 AND pending_refund_amount >= $1",
    )
    .bind(w.amount.minor())
    .bind(now)
    .bind(w.payment_id.as_str())
    .execute(tx.conn())
    .await?;
    expect_one(r, || {
        format!("reservation of {} on payment {}", w.amount, w.payment_id)
    })?;
    if let (Some(cm), true) = (&w.credit_memo_id, w.credit_memo_amount.minor() > 0) {
        let r = sqlx::query(
            "UPDATE credit_memos SET balance = balance + $1, last_modified_date = $2 \
             WHERE id = $3 AND balance + $1 <= total_amount_with_tax",
        )
        .bind(w.credit_memo_amount.minor())
        .bind(now)
        .bind(cm.as_str())
        .execute(tx.conn())
        .await?;
        expect_one(r, || {
            format!(
                "credit memo {cm} with room to take back {}",
                w.credit_memo_amount
            )
        })?;
    }
    Ok(())
}
