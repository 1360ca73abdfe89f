//! Planning: an order's funds, credit memos and invoices, reservations, and the Draft
//! refunds a plan writes.

use sqlx::Row;

use crate::db::expect_one;
use crate::dialect::locks;
use crate::lists::rows_with_ids;
use crate::{Result, Tx};

/// An order payment summary as the allocator needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryFunds {
    pub id: String,
    pub available: i64,
}

/// A payment as the allocator needs it; `refundable` is 0 unless the payment is `Processed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentFunds {
    pub id: String,
    pub summary_id: String,
    pub gateway_id: String,
    pub refundable: i64,
    /// The provider's reference of the captured payment (`GatewayRefNumber`).
    pub payment_ref: Option<String>,
}

/// The order summary and its refundable money, oldest first (the deterministic tie-break).
#[derive(Clone, Debug)]
pub struct OrderFunds {
    pub order_id: String,
    pub life_cycle_type: String,
    pub currency: String,
    /// What earlier admissions of the order's operations hold (see [`crate::admission`]).
    pub admitted: i64,
    pub summaries: Vec<SummaryFunds>,
    /// Grouped by summary, in the summaries' order; oldest first within a summary.
    pub payments: Vec<PaymentFunds>,
}

/// Reads an order, its payment summaries and their payments in one statement. With `lock`
/// on PostgreSQL the order summary's row stays locked until the transaction ends: every
/// transaction that takes money from an order (admission, planning) holds it, so they run
/// one at a time per order. The summaries and payments are not locked: what other writers
/// do to them meanwhile (a settlement moving reserved money to refunded, a release) never
/// lowers what this order has available, and each reservation that follows re-checks it
/// in its own conditional statement.
pub async fn order_funds(tx: &mut Tx, order_id: &str, lock: bool) -> Result<Option<OrderFunds>> {
    let lock_clause = if lock {
        locks::for_update_of(tx.backend(), "o")
    } else {
        String::new()
    };
    let rows = sqlx::query(&format!(
        "SELECT o.order_life_cycle_type, o.currency_iso_code, o.admitted_amount, \
         s.id AS summary_id, s.captured_amount - s.refunded_amount - s.pending_refund_amount AS available, \
         p.id AS payment_id, p.payment_gateway_id, p.gateway_ref_number, \
         CASE WHEN p.status = 'Processed' THEN p.amount - p.total_refund_applied - p.pending_refund_amount \
              ELSE 0 END AS refundable \
         FROM order_summaries o \
         LEFT JOIN order_payment_summaries s ON s.order_summary_id = o.id \
         LEFT JOIN payments p ON p.order_payment_summary_id = s.id \
         WHERE o.id = $1 ORDER BY s.created_date, s.id, p.created_date, p.id{lock_clause}"
    ))
    .bind(order_id)
    .fetch_all(tx.conn())
    .await?;
    let Some(head) = rows.first() else {
        return Ok(None);
    };
    let mut funds = OrderFunds {
        order_id: order_id.to_string(),
        life_cycle_type: head.try_get("order_life_cycle_type")?,
        currency: head.try_get("currency_iso_code")?,
        admitted: head.try_get("admitted_amount")?,
        summaries: Vec::new(),
        payments: Vec::new(),
    };
    for r in &rows {
        let Some(summary_id) = r.try_get::<Option<String>, _>("summary_id")? else {
            continue; // an order without payment summaries: its one row has none
        };
        if funds.summaries.last().map(|s| s.id.as_str()) != Some(summary_id.as_str()) {
            funds.summaries.push(SummaryFunds {
                id: summary_id.clone(),
                available: r.try_get::<i64, _>("available")?.max(0),
            });
        }
        if let Some(payment_id) = r.try_get::<Option<String>, _>("payment_id")? {
            funds.payments.push(PaymentFunds {
                id: payment_id,
                summary_id,
                gateway_id: r.try_get("payment_gateway_id")?,
                refundable: r.try_get::<i64, _>("refundable")?.max(0),
                payment_ref: r.try_get("gateway_ref_number")?,
            });
        }
    }
    Ok(Some(funds))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditMemoRow {
    pub id: String,
    pub reference_entity_id: String,
    pub balance: i64,
    pub status: String,
    /// What earlier admissions hold of the balance (see [`crate::admission`]).
    pub admitted: i64,
}

pub async fn credit_memo(tx: &mut Tx, id: &str) -> Result<Option<CreditMemoRow>> {
    let row = sqlx::query(
        "SELECT id, reference_entity_id, balance, status, admitted_amount FROM credit_memos WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    row.map(|r| {
        Ok(CreditMemoRow {
            id: r.try_get("id")?,
            reference_entity_id: r.try_get("reference_entity_id")?,
            balance: r.try_get("balance")?,
            status: r.try_get("status")?,
            admitted: r.try_get("admitted_amount")?,
        })
    })
    .transpose()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceRow {
    pub id: String,
    pub reference_entity_id: String,
    pub balance: i64,
    pub status: String,
}

/// The given invoices that exist, oldest first.
pub async fn invoices(tx: &mut Tx, ids: &[String]) -> Result<Vec<InvoiceRow>> {
    rows_with_ids(
        tx,
        "SELECT id, reference_entity_id, balance, status FROM invoices",
        " ORDER BY created_date, id",
        ids,
    )
    .await?
    .iter()
    .map(|r| {
        Ok(InvoiceRow {
            id: r.try_get("id")?,
            reference_entity_id: r.try_get("reference_entity_id")?,
            balance: r.try_get("balance")?,
            status: r.try_get("status")?,
        })
    })
    .collect()
}

/// Pays `amount` of an invoice from a credit memo: both balances drop and a
/// `CreditMemoInvApplication` records it.
#[allow(clippy::too_many_arguments)]
pub async fn apply_credit_memo(
    tx: &mut Tx,
    application_id: &str,
    credit_memo_id: &str,
    invoice_id: &str,
    amount: i64,
    operation_id: &str,
    currency: &str,
    now: i64,
) -> Result<()> {
    take_from_credit_memo(tx, credit_memo_id, amount, now).await?;
    let r = sqlx::query(
        "UPDATE invoices SET balance = balance - $1, last_modified_date = $2 WHERE id = $3 AND $1 > 0 AND balance >= $1",
    )
    .bind(amount)
    .bind(now)
    .bind(invoice_id)
    .execute(tx.conn())
    .await?;
    expect_one(r, || format!("invoice {invoice_id} with balance {amount}"))?;
    sqlx::query(
        "INSERT INTO credit_memo_inv_applications (id, credit_memo_id, invoice_id, amount, type, applied_date, \
         background_operation_id, currency_iso_code, created_date, last_modified_date) \
         VALUES ($1, $2, $3, $4, 'Applied', $5, $6, $7, $5, $5)",
    )
    .bind(application_id)
    .bind(credit_memo_id)
    .bind(invoice_id)
    .bind(amount)
    .bind(now)
    .bind(operation_id)
    .bind(currency)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Lowers a credit memo's balance, only if it holds that much.
pub async fn take_from_credit_memo(tx: &mut Tx, id: &str, amount: i64, now: i64) -> Result<()> {
    let r = sqlx::query(
        "UPDATE credit_memos SET balance = balance - $1, last_modified_date = $2 \
         WHERE id = $3 AND $1 > 0 AND balance >= $1",
    )
    .bind(amount)
    .bind(now)
    .bind(id)
    .execute(tx.conn())
    .await?;
    expect_one(r, || format!("credit memo {id} with balance {amount}"))
}

/// Reserves `amount` on a summary and one of its payments: `PendingRefundAmount` rises
/// only where at least that much is still available to refund.
pub async fn reserve(
    tx: &mut Tx,
    summary_id: &str,
    payment_id: &str,
    amount: i64,
    now: i64,
) -> Result<()> {
    let r = sqlx::query(
        "UPDATE order_payment_summaries SET pending_refund_amount = pending_refund_amount + $1, \
         last_modified_date = $2 \
         WHERE id = $3 AND $1 > 0 AND captured_amount - refunded_amount - pending_refund_amount >= $1",
    )
    .bind(amount)
    .bind(now)
    .bind(summary_id)
    .execute(tx.conn())
    .await?;
    expect_one(r, || {
        format!("order payment summary {summary_id} with {amount} available")
    })?;
    let r = sqlx::query(
        "UPDATE payments SET pending_refund_amount = pending_refund_amount + $1, last_modified_date = $2 \
         WHERE id = $3 AND $1 > 0 AND status = 'Processed' \
           AND amount - total_refund_applied - pending_refund_amount >= $1",
    )
    .bind(amount)
    .bind(now)
    .bind(payment_id)
    .execute(tx.conn())
    .await?;
    expect_one(r, || {
        format!("payment {payment_id} with {amount} refundable")
    })
}

/// A refund about to be asked for.
#[derive(Clone, Debug)]
pub struct NewRefund<'a> {
    pub id: &'a str,
    pub operation_id: &'a str,
    pub leg: i64,
    pub summary_id: &'a str,
    pub payment_id: &'a str,
    pub gateway_id: &'a str,
    pub amount: i64,
    pub credit_memo_id: Option<&'a str>,
    pub credit_memo_amount: i64,
    pub currency: &'a str,
    /// Provider calls already counted against it: 1 when the plan also writes the first
    /// call's `Initiated` log row in its own transaction.
    pub attempts: i64,
    pub now: i64,
}

/// Inserts a `Draft` refund; its id is the idempotency key sent to the provider and its
/// ClientContext is `<operation id>:<leg>`.
pub async fn insert_refund(tx: &mut Tx, r: &NewRefund<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO refunds (id, background_operation_id, leg, order_payment_summary_id, payment_id, \
         payment_gateway_id, amount, credit_memo_id, credit_memo_amount, status, type, processing_mode, \
         client_context, currency_iso_code, attempts, created_date, last_modified_date) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'Draft', 'Referenced', 'Salesforce', $10, $11, $13, $12, $12)",
    )
    .bind(r.id)
    .bind(r.operation_id)
    .bind(r.leg)
    .bind(r.summary_id)
    .bind(r.payment_id)
    .bind(r.gateway_id)
    .bind(r.amount)
    .bind(r.credit_memo_id)
    .bind(r.credit_memo_amount)
    .bind(format!("{}:{}", r.operation_id, r.leg))
    .bind(r.currency)
    .bind(r.now)
    .bind(r.attempts)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Records that the operation's refunds are fixed, in the planning transaction: the
/// operation stops holding its order's line, so the next one may plan.
pub async fn mark_planned(tx: &mut Tx, operation_id: &str, now: i64) -> Result<()> {
    let parent_key: Option<String> = sqlx::query_scalar(
        "UPDATE background_operations SET planned_at = $1 WHERE id = $2 AND planned_at IS NULL \
         RETURNING parent_key",
    )
    .bind(now)
    .bind(operation_id)
    .fetch_optional(tx.conn())
    .await?;
    let parent_key = parent_key.ok_or_else(|| {
        crate::StoreError::Missing(format!("unplanned background operation {operation_id}"))
    })?;
    crate::ops::advance_line(tx, &parent_key).await
}
