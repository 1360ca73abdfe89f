//! Process exceptions: raised on a failure, found again so none is raised twice, and
//! resolved when a hand-over settles.

use refunds_domain::ProcessExceptionStatus;

use crate::db::expect_one;
use crate::{Result, Tx};

use super::work::RefundWork;

#[derive(Clone, Debug)]
pub struct NewProcessException<'a> {
    pub id: &'a str,
    pub message: &'a str,
    pub description: &'a str,
    pub attached_to_id: &'a str,
    pub order_summary_id: &'a str,
    pub operation_id: Option<&'a str>,
    pub priority: &'a str,
    pub now: i64,
}

impl<'a> NewProcessException<'a> {
    /// A High-priority exception about `attached_to_id` on an order summary, raised while
    /// running `operation_id`.
    pub fn high(
        id: &'a str,
        message: &'a str,
        description: &'a str,
        attached_to_id: &'a str,
        order_summary_id: &'a str,
        operation_id: &'a str,
        now: i64,
    ) -> NewProcessException<'a> {
        NewProcessException {
            id,
            message,
            description,
            attached_to_id,
            order_summary_id,
            operation_id: Some(operation_id),
            priority: "High",
            now,
        }
    }

    /// A High-priority exception about refund `w`, on its order summary and operation.
    pub fn about_refund(
        w: &'a RefundWork,
        id: &'a str,
        message: &'a str,
        description: &'a str,
        now: i64,
    ) -> NewProcessException<'a> {
        NewProcessException::high(
            id,
            message,
            description,
            w.id.as_str(),
            w.order_summary_id.as_str(),
            w.operation_id.as_str(),
            now,
        )
    }
}

/// Raises an `OM Refund Failed` process exception and counts it on the order summary.
pub async fn insert_process_exception(tx: &mut Tx, e: &NewProcessException<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO process_exceptions (id, category, exception_type, status, severity, priority, message, \
         description, attached_to_id, order_summary_id, background_operation_id, created_date, last_modified_date) \
         VALUES ($1, 'Payment', 'OM Refund Failed', $2, NULL, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(e.id)
    .bind(ProcessExceptionStatus::New.as_str())
    .bind(e.priority)
    .bind(e.message)
    .bind(e.description)
    .bind(e.attached_to_id)
    .bind(e.order_summary_id)
    .bind(e.operation_id)
    .bind(e.now)
    .execute(tx.conn())
    .await?;
    let r = sqlx::query(
        "UPDATE order_summaries SET active_process_exception_count = active_process_exception_count + 1, \
         last_modified_date = $1 WHERE id = $2",
    )
    .bind(e.now)
    .bind(e.order_summary_id)
    .execute(tx.conn())
    .await?;
    expect_one(r, || format!("order summary {}", e.order_summary_id))
}

/// Whether `attached_to_id` has a process exception with this message that nobody has
/// resolved or voided yet.
pub async fn has_open_exception(tx: &mut Tx, attached_to_id: &str, message: &str) -> Result<bool> {
    Ok(!open_exceptions(tx, attached_to_id, message, "=")
        .await?
        .is_empty())
}

/// How a hand-over exception's message starts, followed by the refund's id.
pub const HAND_OVER_MESSAGE: &str = "The outcome of refund";

/// Resolves the open hand-over exception of a refund whose provider has since settled it,
/// adding `note` to its description, so that nobody settles it by hand as well. Returns
/// how many it resolved (0 when the refund was never handed over).
pub async fn resolve_hand_over(
    tx: &mut Tx,
    refund_id: &str,
    note: &str,
    now: i64,
) -> Result<usize> {
    let pattern = format!("{HAND_OVER_MESSAGE} {refund_id} %");
    let ids = open_exceptions(tx, refund_id, &pattern, "LIKE").await?;
    for id in &ids {
        sqlx::query("UPDATE process_exceptions SET description = description || $1 WHERE id = $2")
            .bind(note)
            .bind(id)
            .execute(tx.conn())
            .await?;
        crate::records::set_process_exception_status(
            tx,
            id,
            ProcessExceptionStatus::Resolved.as_str(),
            now,
        )
        .await?;
    }
    Ok(ids.len())
}

/// Ids of the active exceptions on `attached_to_id` whose message compares (`=` or
/// `LIKE`, never from a request) with `message`.
async fn open_exceptions(
    tx: &mut Tx,
    attached_to_id: &str,
    message: &str,
    compare: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT id FROM process_exceptions WHERE attached_to_id = $1 AND message {compare} $2 \
         AND {} ORDER BY id",
        crate::schema::active_process_exception_sql()
    ))
    .bind(attached_to_id)
    .bind(message)
    .fetch_all(tx.conn())
    .await?)
}
