//! SQL of the refund job: reading an order's funds, reserving money, writing refunds,
//! gateway logs and process exceptions, and settling outcomes.
//!
//! Every statement that moves money is conditional: a reservation only happens while
//! enough is available, a refund only leaves `Draft` once. A caller that breaks the rules
//! gets an error, never a wrong balance.
//!
//! A refund's status and reconciliation state change only here, and each such statement
//! first asks the domain's lifecycle (`RefundState::with_status` / `with_reconcile`) for
//! the move from the state its `WHERE` requires, then binds the texts it answers with:
//! a move the lifecycle does not list is a `StoreError::Lifecycle`, never a row.

use refunds_domain::{
    Currency, GatewayStatus, InteractionStatus, Money, ObjectType, ProcessExceptionStatus,
    ProviderType, ReconcileState, RefundState, RefundStatus, SfId,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::db::expect_one;
use crate::{Backend, Db, Result, StoreError};

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
}

/// The order summary and its refundable money, oldest first (the deterministic tie-break).
#[derive(Clone, Debug)]
pub struct OrderFunds {
    pub order_id: String,
    pub life_cycle_type: String,
    pub currency: String,
    pub summaries: Vec<SummaryFunds>,
    pub payments: Vec<PaymentFunds>,
}

/// Reads an order's funds in three queries. With `lock` on PostgreSQL the summaries and
/// payments stay locked until the transaction ends, so the reservations that follow see
/// exactly what the allocation saw.
pub async fn order_funds(
    conn: &mut AnyConnection,
    backend: Backend,
    order_id: &str,
    lock: bool,
) -> Result<Option<OrderFunds>> {
    let lock_clause = if lock && backend == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let Some(head) = sqlx::query(&format!(
        "SELECT order_life_cycle_type, currency_iso_code FROM order_summaries WHERE id = $1{lock_clause}"
    ))
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let summaries = sqlx::query(&format!(
        "SELECT id, captured_amount - refunded_amount - pending_refund_amount FROM order_payment_summaries \
         WHERE order_summary_id = $1 ORDER BY created_date, id{lock_clause}"
    ))
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(SummaryFunds {
            id: r.try_get(0)?,
            available: r.try_get::<i64, _>(1)?.max(0),
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let payments = sqlx::query(&format!(
        "SELECT p.id, p.order_payment_summary_id, p.payment_gateway_id, \
         CASE WHEN p.status = 'Processed' THEN p.amount - p.total_refund_applied - p.pending_refund_amount ELSE 0 END \
         FROM payments p JOIN order_payment_summaries s ON s.id = p.order_payment_summary_id \
         WHERE s.order_summary_id = $1 ORDER BY p.created_date, p.id{}",
        if lock_clause.is_empty() { "" } else { " FOR UPDATE OF p" }
    ))
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(PaymentFunds {
            id: r.try_get(0)?,
            summary_id: r.try_get(1)?,
            gateway_id: r.try_get(2)?,
            refundable: r.try_get::<i64, _>(3)?.max(0),
        })
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(Some(OrderFunds {
        order_id: order_id.to_string(),
        life_cycle_type: head.try_get(0)?,
        currency: head.try_get(1)?,
        summaries,
        payments,
    }))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditMemoRow {
    pub id: String,
    pub reference_entity_id: String,
    pub balance: i64,
    pub status: String,
}

pub async fn credit_memo(conn: &mut AnyConnection, id: &str) -> Result<Option<CreditMemoRow>> {
    let row = sqlx::query(
        "SELECT id, reference_entity_id, balance, status FROM credit_memos WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(CreditMemoRow {
            id: r.try_get(0)?,
            reference_entity_id: r.try_get(1)?,
            balance: r.try_get(2)?,
            status: r.try_get(3)?,
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
pub async fn invoices(conn: &mut AnyConnection, ids: &[String]) -> Result<Vec<InvoiceRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let params: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT id, reference_entity_id, balance, status FROM invoices WHERE id IN ({}) ORDER BY created_date, id",
        params.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(id.as_str());
    }
    query
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| {
            Ok(InvoiceRow {
                id: r.try_get(0)?,
                reference_entity_id: r.try_get(1)?,
                balance: r.try_get(2)?,
                status: r.try_get(3)?,
            })
        })
        .collect()
}

/// Pays `amount` of an invoice from a credit memo: both balances drop and a
/// `CreditMemoInvApplication` records it.
#[allow(clippy::too_many_arguments)]
pub async fn apply_credit_memo(
    conn: &mut AnyConnection,
    application_id: &str,
    credit_memo_id: &str,
    invoice_id: &str,
    amount: i64,
    operation_id: &str,
    currency: &str,
    now: i64,
) -> Result<()> {
    take_from_credit_memo(conn, credit_memo_id, amount, now).await?;
    let r = sqlx::query(
        "UPDATE invoices SET balance = balance - $1, last_modified_date = $2 WHERE id = $3 AND balance >= $1",
    )
    .bind(amount)
    .bind(now)
    .bind(invoice_id)
    .execute(&mut *conn)
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
    .execute(conn)
    .await?;
    Ok(())
}

/// Lowers a credit memo's balance, only if it holds that much.
pub async fn take_from_credit_memo(
    conn: &mut AnyConnection,
    id: &str,
    amount: i64,
    now: i64,
) -> Result<()> {
    let r = sqlx::query(
        "UPDATE credit_memos SET balance = balance - $1, last_modified_date = $2 WHERE id = $3 AND balance >= $1",
    )
    .bind(amount)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    expect_one(r, || format!("credit memo {id} with balance {amount}"))
}

/// Reserves `amount` on a summary and one of its payments: `PendingRefundAmount` rises
/// only where at least that much is still available to refund.
pub async fn reserve(
    conn: &mut AnyConnection,
    summary_id: &str,
    payment_id: &str,
    amount: i64,
    now: i64,
) -> Result<()> {
    let r = sqlx::query(
        "UPDATE order_payment_summaries SET pending_refund_amount = pending_refund_amount + $1, \
         last_modified_date = $2 WHERE id = $3 AND captured_amount - refunded_amount - pending_refund_amount >= $1",
    )
    .bind(amount)
    .bind(now)
    .bind(summary_id)
    .execute(&mut *conn)
    .await?;
    expect_one(r, || {
        format!("order payment summary {summary_id} with {amount} available")
    })?;
    let r = sqlx::query(
        "UPDATE payments SET pending_refund_amount = pending_refund_amount + $1, last_modified_date = $2 \
         WHERE id = $3 AND status = 'Processed' AND amount - total_refund_applied - pending_refund_amount >= $1",
    )
    .bind(amount)
    .bind(now)
    .bind(payment_id)
    .execute(conn)
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
    pub now: i64,
}

/// Inserts a `Draft` refund; its id is the idempotency key sent to the provider and its
/// ClientContext is `<operation id>:<leg>`.
pub async fn insert_refund(conn: &mut AnyConnection, r: &NewRefund<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO refunds (id, background_operation_id, leg, order_payment_summary_id, payment_id, \
         payment_gateway_id, amount, credit_memo_id, credit_memo_amount, status, type, processing_mode, \
         client_context, currency_iso_code, created_date, last_modified_date) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'Draft', 'Referenced', 'Salesforce', $10, $11, $12, $12)",
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
    .execute(conn)
    .await?;
    Ok(())
}

/// A refund with everything needed to ask its provider for it, read once into typed
/// values: a row that does not parse (an id of the wrong kind, an unknown currency,
/// status or provider) is [`StoreError::Corrupt`], never a guess.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundWork {
    pub id: SfId,
    pub operation_id: SfId,
    pub leg: i64,
    pub order_summary_id: SfId,
    pub summary_id: SfId,
    pub payment_id: SfId,
    pub gateway_id: SfId,
    /// The whole refund, in the refund's currency.
    pub amount: Money,
    pub credit_memo_id: Option<SfId>,
    /// The part of `amount` taken from the credit memo (returned to it on failure).
    pub credit_memo_amount: Money,
    pub status: RefundStatus,
    pub attempts: i64,
    pub lookups: i64,
    pub reconcile_since: Option<i64>,
    pub payment_ref: Option<String>,
    pub provider_type: ProviderType,
    pub gateway_status: GatewayStatus,
    pub base_url: Option<String>,
    pub credential_env: Option<String>,
    pub merchant_account: Option<String>,
    pub timeout_ms: Option<i64>,
    pub connect_timeout_ms: Option<i64>,
    pub result_code_mapping: Option<String>,
    pub webhook_hmac_key_env: Option<String>,
    pub reconcile_state: ReconcileState,
    /// The gateway's limits on provider calls (`None`: no limit).
    pub max_concurrent_requests: Option<i64>,
    pub max_requests_per_second: Option<i64>,
}

impl RefundWork {
    /// The refund's currency (that of `amount` and `credit_memo_amount`).
    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }

    /// Where the refund stands in its lifecycle.
    pub fn state(&self) -> RefundState {
        RefundState::new(self.status, self.reconcile_state)
    }
}

const WORK_SELECT: &str = "SELECT r.id, r.background_operation_id, r.leg, s.order_summary_id, r.order_payment_summary_id, \
    r.payment_id, r.payment_gateway_id, r.amount, r.credit_memo_id, r.credit_memo_amount, r.status, r.currency_iso_code, \
    r.attempts, r.lookups, r.reconcile_since, p.gateway_ref_number, g.provider_type, g.status, g.base_url, \
    g.merchant_credential_env, g.merchant_account, g.timeout_ms, g.connect_timeout_ms, g.result_code_mapping, \
    g.webhook_hmac_key_env, r.reconcile_state, g.max_concurrent_requests, g.max_requests_per_second \
    FROM refunds r JOIN order_payment_summaries s ON s.id = r.order_payment_summary_id \
    JOIN payments p ON p.id = r.payment_id JOIN payment_gateways g ON g.id = r.payment_gateway_id";

fn work_from_row(r: &AnyRow) -> Result<RefundWork> {
    let refund_id: String = r.try_get(0)?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("refund {refund_id}: {what}: {e}"))
    };
    // Stored ids are canonical (18 chars); one that parses into another spelling would
    // make every statement keyed by it miss its row.
    let parse_id = |text: String, ty: ObjectType| -> Result<SfId> {
        match SfId::parse_as(&text, ty) {
            Ok(id) if id.as_str() == text => Ok(id),
            Ok(id) => Err(corrupt("id", &format!("{text} is stored for {id}"))),
            Err(e) => Err(corrupt("id", &e)),
        }
    };
    let id = |i: usize, ty: ObjectType| -> Result<SfId> { parse_id(r.try_get(i)?, ty) };
    let currency =
        Currency::parse(&r.try_get::<String, _>(11)?).map_err(|e| corrupt("currency", &e))?;
    let money = |i: usize| -> Result<Money> { Ok(Money::from_minor(r.try_get(i)?, currency)) };
    let credit_memo_id = r
        .try_get::<Option<String>, _>(8)?
        .map(|text| parse_id(text, ObjectType::CreditMemo))
        .transpose()?;
    Ok(RefundWork {
        id: id(0, ObjectType::Refund)?,
        operation_id: id(1, ObjectType::BackgroundOperation)?,
        leg: r.try_get(2)?,
        order_summary_id: id(3, ObjectType::OrderSummary)?,
        summary_id: id(4, ObjectType::OrderPaymentSummary)?,
        payment_id: id(5, ObjectType::Payment)?,
        gateway_id: id(6, ObjectType::PaymentGateway)?,
        amount: money(7)?,
        credit_memo_id,
        credit_memo_amount: money(9)?,
        status: r
            .try_get::<String, _>(10)?
            .parse()
            .map_err(|e| corrupt("status", &e))?,
        attempts: r.try_get(12)?,
        lookups: r.try_get(13)?,
        reconcile_since: r.try_get(14)?,
        payment_ref: r.try_get(15)?,
        provider_type: r
            .try_get::<String, _>(16)?
            .parse()
            .map_err(|e| corrupt("gateway", &e))?,
        gateway_status: r
            .try_get::<String, _>(17)?
            .parse()
            .map_err(|e| corrupt("gateway", &e))?,
        base_url: r.try_get(18)?,
        credential_env: r.try_get(19)?,
        merchant_account: r.try_get(20)?,
        timeout_ms: r.try_get(21)?,
        connect_timeout_ms: r.try_get(22)?,
        result_code_mapping: r.try_get(23)?,
        webhook_hmac_key_env: r.try_get(24)?,
        reconcile_state: r
            .try_get::<String, _>(25)?
            .parse()
            .map_err(|e| corrupt("reconcile state", &e))?,
        max_concurrent_requests: r.try_get(26)?,
        max_requests_per_second: r.try_get(27)?,
    })
}

/// Whether the operation already fixed its refunds (a rescued run must not plan twice).
pub async fn is_planned(conn: &mut AnyConnection, operation_id: &str) -> Result<bool> {
    let planned: Option<Option<i64>> =
        sqlx::query_scalar("SELECT planned_at FROM background_operations WHERE id = $1")
            .bind(operation_id)
            .fetch_optional(conn)
            .await?;
    Ok(matches!(planned, Some(Some(_))))
}

/// Records that the operation's refunds are fixed, in the planning transaction: the
/// operation stops holding its order's line, so the next one may plan.
pub async fn mark_planned(
    conn: &mut AnyConnection,
    backend: Backend,
    operation_id: &str,
    now: i64,
) -> Result<()> {
    let parent_key: Option<String> = sqlx::query_scalar(
        "UPDATE background_operations SET planned_at = $1 WHERE id = $2 AND planned_at IS NULL \
         RETURNING parent_key",
    )
    .bind(now)
    .bind(operation_id)
    .fetch_optional(&mut *conn)
    .await?;
    let parent_key = parent_key.ok_or_else(|| {
        crate::StoreError::Missing(format!("unplanned background operation {operation_id}"))
    })?;
    crate::ops::advance_line(conn, backend, &parent_key).await
}

/// The operation's refunds still waiting for a provider answer (not under reconciliation), by leg.
pub async fn drafts_of_operation(db: &Db, operation_id: &str) -> Result<Vec<RefundWork>> {
    sqlx::query(&format!(
        "{WORK_SELECT} WHERE r.background_operation_id = $1 AND r.status = $2 AND r.reconcile_state = $3 \
         ORDER BY r.leg"
    ))
    .bind(operation_id)
    .bind(RefundStatus::Draft.as_str())
    .bind(ReconcileState::None.as_str())
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(work_from_row)
    .collect()
}

/// A gateway log row as first written.
#[derive(Clone, Debug)]
pub struct NewLog<'a> {
    pub id: &'a str,
    pub interaction_type: &'a str,
    pub interaction_status: InteractionStatus,
    pub sf_ref_number: &'a str,
    pub request: Option<&'a str>,
    pub refund_id: &'a str,
    pub summary_id: &'a str,
    pub gateway_id: &'a str,
    pub is_notification: bool,
    pub currency: &'a str,
    pub now: i64,
}

pub async fn insert_log(conn: &mut AnyConnection, log: &NewLog<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO payment_gateway_logs (id, interaction_type, interaction_status, sf_ref_number, request, \
         referenced_entity_id, order_payment_summary_id, payment_gateway_id, is_notification, currency_iso_code, \
         created_date, last_modified_date) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
    )
    .bind(log.id)
    .bind(log.interaction_type)
    .bind(log.interaction_status.as_str())
    .bind(log.sf_ref_number)
    .bind(log.request)
    .bind(log.refund_id)
    .bind(log.summary_id)
    .bind(log.gateway_id)
    .bind(if log.is_notification { "Yes" } else { "No" })
    .bind(log.currency)
    .bind(log.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts a provider call against the refund (before it is made).
pub async fn count_attempt(conn: &mut AnyConnection, refund_id: &str, now: i64) -> Result<()> {
    let r = sqlx::query(
        "UPDATE refunds SET attempts = attempts + 1, last_modified_date = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(refund_id)
    .execute(conn)
    .await?;
    expect_one(r, || format!("refund {refund_id}"))
}

/// What a provider said, as written to the log, the refund and the summary.
#[derive(Clone, Debug)]
pub struct ProviderAnswer<'a> {
    pub interaction_status: InteractionStatus,
    pub sf_result_code: &'a str,
    pub gateway_result_code: Option<&'a str>,
    pub gateway_message: Option<&'a str>,
    pub gateway_ref_number: Option<&'a str>,
    pub gateway_date: Option<i64>,
    pub request: Option<&'a str>,
    pub response: Option<&'a str>,
    pub duration_ms: i64,
}

/// Completes a log row with the provider's answer and makes it the summary's latest.
pub async fn finish_log(
    conn: &mut AnyConnection,
    log_id: &str,
    summary_id: &str,
    a: &ProviderAnswer<'_>,
    now: i64,
) -> Result<()> {
    let r = sqlx::query(
        "UPDATE payment_gateway_logs SET interaction_status = $1, sf_result_code = $2, gateway_result_code = $3, \
         gateway_message = $4, gateway_ref_number = $5, gateway_date = $6, request = COALESCE($7, request), \
         response = $8, duration_ms = $9, last_modified_date = $10 WHERE id = $11",
    )
    .bind(a.interaction_status.as_str())
    .bind(a.sf_result_code)
    .bind(a.gateway_result_code)
    .bind(a.gateway_message)
    .bind(a.gateway_ref_number)
    .bind(a.gateway_date)
    .bind(a.request)
    .bind(a.response)
    .bind(a.duration_ms)
    .bind(now)
    .bind(log_id)
    .execute(&mut *conn)
    .await?;
    expect_one(r, || format!("gateway log {log_id}"))?;
    sqlx::query(
        "UPDATE order_payment_summaries SET last_payment_gateway_log_id = $1, last_payment_gateway_message = $2, \
         last_modified_date = $3 WHERE id = $4",
    )
    .bind(log_id)
    .bind(a.gateway_message)
    .bind(now)
    .bind(summary_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a `Draft` refund to its final or pending state (ending any reconciliation);
/// false if it had already left `Draft` (so nothing was changed and the caller must not
/// move money again).
async fn leave_draft(
    conn: &mut AnyConnection,
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
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Records a successful refund. Settled at once (`Processed`): the reservation becomes
/// refunded money and a `RefundLinePayment` is written. Settling later (`Pending`): the
/// money stays reserved until the provider confirms.
pub async fn settle_success(
    conn: &mut AnyConnection,
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
    if !leave_draft(conn, w, status, a, now).await? {
        return Ok(false);
    }
    match settlement {
        Settlement::Now => move_pending_to_refunded(conn, w, line_id, now).await?,
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
            .execute(conn)
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
    conn: &mut AnyConnection,
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
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() != 1 {
        return Ok(false);
    }
    if success {
        move_pending_to_refunded(conn, w, line_id, now).await?;
    } else {
        release_reservation(conn, w, now).await?;
        insert_process_exception(conn, exception).await?;
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

/// Refunds in `reconcile_state` and `status` whose next lookup is due, soonest first.
async fn due_lookups(
    db: &Db,
    reconcile_state: ReconcileState,
    status: RefundStatus,
    now: i64,
    limit: i64,
) -> Result<Vec<RefundWork>> {
    sqlx::query(&format!(
        "{WORK_SELECT} WHERE r.reconcile_state = $1 AND r.status = $2 AND r.next_lookup_at <= $3 \
         ORDER BY r.next_lookup_at LIMIT $4"
    ))
    .bind(reconcile_state.as_str())
    .bind(status.as_str())
    .bind(now)
    .bind(limit)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(work_from_row)
    .collect()
}

async fn move_pending_to_refunded(
    conn: &mut AnyConnection,
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
    .execute(&mut *conn)
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
    .execute(&mut *conn)
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
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed refund: `Canceled`, reservation released, the credit memo's part
/// returned to it, and a process exception raised. False if it had already left `Draft`.
pub async fn settle_failure(
    conn: &mut AnyConnection,
    w: &RefundWork,
    a: &ProviderAnswer<'_>,
    exception: &NewProcessException<'_>,
    now: i64,
) -> Result<bool> {
    if !leave_draft(conn, w, RefundStatus::Canceled, a, now).await? {
        return Ok(false);
    }
    release_reservation(conn, w, now).await?;
    insert_process_exception(conn, exception).await?;
    Ok(true)
}

async fn release_reservation(conn: &mut AnyConnection, w: &RefundWork, now: i64) -> Result<()> {
    let r = sqlx::query(
        "UPDATE order_payment_summaries SET pending_refund_amount = pending_refund_amount - $1, \
         last_modified_date = $2 WHERE id = $3 AND pending_refund_amount >= $1",
    )
    .bind(w.amount.minor())
    .bind(now)
    .bind(w.summary_id.as_str())
    .execute(&mut *conn)
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
    .execute(&mut *conn)
    .await?;
    expect_one(r, || {
        format!("reservation of {} on payment {}", w.amount, w.payment_id)
    })?;
    if let (Some(cm), true) = (&w.credit_memo_id, w.credit_memo_amount.minor() > 0) {
        let r = sqlx::query(
            "UPDATE credit_memos SET balance = balance + $1, last_modified_date = $2 WHERE id = $3",
        )
        .bind(w.credit_memo_amount.minor())
        .bind(now)
        .bind(cm.as_str())
        .execute(conn)
        .await?;
        expect_one(r, || format!("credit memo {cm}"))?;
    }
    Ok(())
}

/// Puts a refund whose outcome is unknown under reconciliation (it stays `Draft`, its
/// money stays reserved) with the first lookup at `next_lookup_at`.
pub async fn start_reconciliation(
    conn: &mut AnyConnection,
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
    .execute(conn)
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
    conn: &mut AnyConnection,
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
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Stops looking a refund up and hands it to a person; the money stays reserved.
pub async fn hand_over_reconciliation(
    conn: &mut AnyConnection,
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
    .execute(&mut *conn)
    .await?;
    expect_one(r, || format!("refund {refund_id} under reconciliation"))?;
    insert_process_exception(conn, exception).await
}

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
pub async fn insert_process_exception(
    conn: &mut AnyConnection,
    e: &NewProcessException<'_>,
) -> Result<()> {
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
    .execute(&mut *conn)
    .await?;
    let r = sqlx::query(
        "UPDATE order_summaries SET active_process_exception_count = active_process_exception_count + 1, \
         last_modified_date = $1 WHERE id = $2",
    )
    .bind(e.now)
    .bind(e.order_summary_id)
    .execute(conn)
    .await?;
    expect_one(r, || format!("order summary {}", e.order_summary_id))
}

/// Whether `attached_to_id` has a process exception with this message that nobody has
/// resolved or voided yet.
pub async fn has_open_exception(
    conn: &mut AnyConnection,
    attached_to_id: &str,
    message: &str,
) -> Result<bool> {
    Ok(!open_exceptions(conn, attached_to_id, message, "=")
        .await?
        .is_empty())
}

/// How a hand-over exception's message starts, followed by the refund's id.
pub const HAND_OVER_MESSAGE: &str = "The outcome of refund";

/// Resolves the open hand-over exception of a refund whose provider has since settled it,
/// adding `note` to its description, so that nobody settles it by hand as well. Returns
/// how many it resolved (0 when the refund was never handed over).
pub async fn resolve_hand_over(
    conn: &mut AnyConnection,
    refund_id: &str,
    note: &str,
    now: i64,
) -> Result<usize> {
    let pattern = format!("{HAND_OVER_MESSAGE} {refund_id} %");
    let ids = open_exceptions(conn, refund_id, &pattern, "LIKE").await?;
    for id in &ids {
        sqlx::query("UPDATE process_exceptions SET description = description || $1 WHERE id = $2")
            .bind(note)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        crate::records::set_process_exception_status(
            conn,
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
    conn: &mut AnyConnection,
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
    .fetch_all(conn)
    .await?)
}

/// A refund with its gateway, by id, outside any transaction (for notifications).
pub async fn find_refund_work(db: &Db, refund_id: &str) -> Result<Option<RefundWork>> {
    sqlx::query(&format!("{WORK_SELECT} WHERE r.id = $1"))
        .bind(refund_id)
        .fetch_optional(db.pool())
        .await?
        .as_ref()
        .map(work_from_row)
        .transpose()
}
