//! A refund as the worker reads it ([`RefundWork`]): typed once, from one statement,
//! for the provider call, settlement and reconciliation alike.

use refunds_domain::{
    Currency, GatewayStatus, Money, ObjectType, ProviderType, ReconcileState, RefundState,
    RefundStatus, SfId,
};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Db, Result, StoreError};

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

pub(super) const WORK_SELECT: &str = "SELECT r.id, r.background_operation_id, r.leg, s.order_summary_id, \
    r.order_payment_summary_id, r.payment_id, r.payment_gateway_id, r.amount, r.credit_memo_id, r.credit_memo_amount, \
    r.status, r.currency_iso_code, r.attempts, r.lookups, r.reconcile_since, r.reconcile_state, \
    p.gateway_ref_number, g.provider_type, g.status AS gateway_status, g.base_url, g.merchant_credential_env, \
    g.merchant_account, g.timeout_ms, g.connect_timeout_ms, g.result_code_mapping, g.webhook_hmac_key_env, \
    g.max_concurrent_requests, g.max_requests_per_second \
    FROM refunds r JOIN order_payment_summaries s ON s.id = r.order_payment_summary_id \
    JOIN payments p ON p.id = r.payment_id JOIN payment_gateways g ON g.id = r.payment_gateway_id";

pub(super) fn work_from_row(r: &AnyRow) -> Result<RefundWork> {
    let refund_id: String = r.try_get("id")?;
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
    let id = |column: &str, ty: ObjectType| -> Result<SfId> { parse_id(r.try_get(column)?, ty) };
    let currency = Currency::parse(&r.try_get::<String, _>("currency_iso_code")?)
        .map_err(|e| corrupt("currency", &e))?;
    let money =
        |column: &str| -> Result<Money> { Ok(Money::from_minor(r.try_get(column)?, currency)) };
    let credit_memo_id = r
        .try_get::<Option<String>, _>("credit_memo_id")?
        .map(|text| parse_id(text, ObjectType::CreditMemo))
        .transpose()?;
    Ok(RefundWork {
        id: id("id", ObjectType::Refund)?,
        operation_id: id("background_operation_id", ObjectType::BackgroundOperation)?,
        leg: r.try_get("leg")?,
        order_summary_id: id("order_summary_id", ObjectType::OrderSummary)?,
        summary_id: id("order_payment_summary_id", ObjectType::OrderPaymentSummary)?,
        payment_id: id("payment_id", ObjectType::Payment)?,
        gateway_id: id("payment_gateway_id", ObjectType::PaymentGateway)?,
        amount: money("amount")?,
        credit_memo_id,
        credit_memo_amount: money("credit_memo_amount")?,
        status: r
            .try_get::<String, _>("status")?
            .parse()
            .map_err(|e| corrupt("status", &e))?,
        attempts: r.try_get("attempts")?,
        lookups: r.try_get("lookups")?,
        reconcile_since: r.try_get("reconcile_since")?,
        payment_ref: r.try_get("gateway_ref_number")?,
        provider_type: r
            .try_get::<String, _>("provider_type")?
            .parse()
            .map_err(|e| corrupt("gateway", &e))?,
        gateway_status: r
            .try_get::<String, _>("gateway_status")?
            .parse()
            .map_err(|e| corrupt("gateway", &e))?,
        base_url: r.try_get("base_url")?,
        credential_env: r.try_get("merchant_credential_env")?,
        merchant_account: r.try_get("merchant_account")?,
        timeout_ms: r.try_get("timeout_ms")?,
        connect_timeout_ms: r.try_get("connect_timeout_ms")?,
        result_code_mapping: r.try_get("result_code_mapping")?,
        webhook_hmac_key_env: r.try_get("webhook_hmac_key_env")?,
        reconcile_state: r
            .try_get::<String, _>("reconcile_state")?
            .parse()
            .map_err(|e| corrupt("reconcile state", &e))?,
        max_concurrent_requests: r.try_get("max_concurrent_requests")?,
        max_requests_per_second: r.try_get("max_requests_per_second")?,
    })
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

/// Refunds in `reconcile_state` and `status` whose next lookup is due, soonest first.
pub(super) async fn due_lookups(
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
