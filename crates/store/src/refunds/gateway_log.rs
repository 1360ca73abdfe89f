//! The gateway log: a row per provider call, written before the call and completed with
//! its answer.

use refunds_domain::InteractionStatus;

use crate::db::expect_one;
use crate::{Result, Tx};

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

pub async fn insert_log(tx: &mut Tx, log: &NewLog<'_>) -> Result<()> {
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
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Counts a provider call against the refund (before it is made).
pub async fn count_attempt(tx: &mut Tx, refund_id: &str, now: i64) -> Result<()> {
    let r = sqlx::query(
        "UPDATE refunds SET attempts = attempts + 1, last_modified_date = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(refund_id)
    .execute(tx.conn())
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
    tx: &mut Tx,
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
    .execute(tx.conn())
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
    .execute(tx.conn())
    .await?;
    Ok(())
}
