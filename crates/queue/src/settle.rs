//! Writing down a provider interaction: the `Initiated` log row before the call, and the
//! answer after it, with whatever the answer does to the money. Shared by the refund job
//! and by reconciliation.

use refunds_domain::{
    Currency, InteractionStatus, Money, ObjectType, RefundStatus, SfId, SfResultCode,
};
use refunds_gateway::{GatewayConfig, GatewayLimits, Outcome, Provider, RefundRequest};
use refunds_store::ops::{self, Claimed};
use refunds_store::refunds::{
    self as sql, NewLog, NewProcessException, ProviderAnswer, RefundWork, Settlement,
};
use refunds_store::{now_ms, Db, Tx};

use crate::{JobContext, JobError};

/// Opens a transaction, fenced by the run's lease when there is a run.
pub(crate) async fn begin(db: &Db, run: Option<&Claimed>) -> Result<Tx, JobError> {
    let mut tx = db.begin().await?;
    if let Some(op) = run {
        ops::fence(&mut tx, &op.id, op.lease_token, now_ms()).await?;
    }
    Ok(tx)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interaction {
    ReferencedRefund,
    RefundLookup,
}

impl Interaction {
    fn as_str(self) -> &'static str {
        match self {
            Interaction::ReferencedRefund => "ReferencedRefund",
            Interaction::RefundLookup => "RefundLookup",
        }
    }
}

/// How a final answer from `provider` is settled: successes that settle later are polled
/// from `delay` on if the provider is polled, else left to its notification.
pub(crate) fn settle_with(provider: &dyn Provider, delay: std::time::Duration) -> Then {
    Then::Settle {
        poll_at: provider
            .polls_settlement()
            .then(|| now_ms().saturating_add(crate::ms(delay))),
    }
}

/// The adapter settings of a refund's payment gateway.
pub(crate) fn gateway_config(w: &RefundWork) -> GatewayConfig {
    let millis = |v: Option<i64>| {
        v.and_then(|ms| u64::try_from(ms).ok())
            .map(std::time::Duration::from_millis)
    };
    GatewayConfig {
        provider_type: w.provider_type.as_str().to_string(),
        base_url: w.base_url.clone(),
        credential_env: w.credential_env.clone(),
        merchant_account: w.merchant_account.clone(),
        timeout: millis(w.timeout_ms),
        connect_timeout: millis(w.connect_timeout_ms),
        result_code_mapping: w.result_code_mapping.clone(),
        gateway_id: Some(w.gateway_id.as_str().to_string()),
        limits: GatewayLimits {
            max_concurrent_requests: w
                .max_concurrent_requests
                .and_then(|n| u32::try_from(n).ok()),
            max_requests_per_second: w
                .max_requests_per_second
                .and_then(|n| u32::try_from(n).ok()),
        },
    }
}

pub(crate) fn request_for(w: &RefundWork) -> RefundRequest {
    RefundRequest {
        idempotency_key: w.id.to_string(),
        payment_ref: w.payment_ref.clone(),
        amount: w.amount.minor(),
        currency: w.currency().code().to_string(),
        operation_id: w.operation_id.to_string(),
    }
}

/// Writes the `Initiated` log row (and counts the attempt) before a provider call.
pub(crate) async fn start_call(
    db: &Db,
    run: Option<&Claimed>,
    w: &RefundWork,
    interaction: Interaction,
) -> Result<String, JobError> {
    let log_id = SfId::generate(ObjectType::PaymentGatewayLog).into_string();
    let now = now_ms();
    let mut tx = begin(db, run).await?;
    if interaction == Interaction::ReferencedRefund {
        sql::count_attempt(&mut tx, w.id.as_str(), now).await?;
    }
    let call = Call {
        refund_id: w.id.as_str(),
        payment_ref: w.payment_ref.as_deref(),
        amount: w.amount.minor(),
        currency: w.currency().code(),
        summary_id: w.summary_id.as_str(),
        gateway_id: w.gateway_id.as_str(),
    };
    write_initiated(&mut tx, &log_id, interaction, &call, now).await?;
    tx.commit().await?;
    Ok(log_id)
}

/// A provider call about a refund, as its `Initiated` log row records it.
pub(crate) struct Call<'a> {
    pub refund_id: &'a str,
    pub payment_ref: Option<&'a str>,
    pub amount: i64,
    pub currency: &'a str,
    pub summary_id: &'a str,
    pub gateway_id: &'a str,
}

/// Writes the `Initiated` log row of `call` in the caller's transaction: by
/// [`start_call`], or by the plan for each refund's first call (so the Draft, its key and
/// the record of its first call are durable in one commit, before the call).
pub(crate) async fn write_initiated(
    tx: &mut Tx,
    log_id: &str,
    interaction: Interaction,
    call: &Call<'_>,
    now: i64,
) -> Result<(), JobError> {
    let request = serde_json::json!({
        "idempotencyKey": call.refund_id,
        "paymentRef": call.payment_ref,
        "amount": call.amount,
        "currency": call.currency,
    })
    .to_string();
    sql::insert_log(
        tx,
        &NewLog {
            id: log_id,
            interaction_type: interaction.as_str(),
            interaction_status: InteractionStatus::Initiated,
            sf_ref_number: call.refund_id,
            request: Some(&request),
            refund_id: call.refund_id,
            summary_id: call.summary_id,
            gateway_id: call.gateway_id,
            is_notification: false,
            currency: call.currency,
            now,
        },
    )
    .await?;
    Ok(())
}

/// The log row of an answer that does not come from a call of ours (a notification, or
/// a person's settlement), before the answer is written into it.
fn answer_row<'a>(
    w: &'a RefundWork,
    log_id: &'a str,
    is_notification: bool,
    now: i64,
) -> NewLog<'a> {
    NewLog {
        id: log_id,
        interaction_type: Interaction::ReferencedRefund.as_str(),
        interaction_status: InteractionStatus::Initiated,
        sf_ref_number: w.id.as_str(),
        request: None,
        refund_id: w.id.as_str(),
        summary_id: w.summary_id.as_str(),
        gateway_id: w.gateway_id.as_str(),
        is_notification,
        currency: w.currency().code(),
        now,
    }
}

/// Raises a High exception about refund `w`, unless the same one is still open.
async fn raise_once(
    tx: &mut Tx,
    w: &RefundWork,
    message: &str,
    description: &str,
    now: i64,
) -> Result<(), JobError> {
    if !sql::has_open_exception(tx, w.id.as_str(), message).await? {
        let pe_id = SfId::generate(ObjectType::ProcessException).into_string();
        let exception = NewProcessException::about_refund(w, &pe_id, message, description, now);
        sql::insert_process_exception(tx, &exception).await?;
    }
    Ok(())
}

/// Resolves the refund's hand-over exception, if any, with `note` (see
/// [`sql::resolve_hand_over`]); answers how many it resolved.
async fn close_hand_over(db: &Db, w: &RefundWork, note: &str) -> Result<usize, JobError> {
    let mut tx = db.begin().await?;
    let resolved = sql::resolve_hand_over(&mut tx, w.id.as_str(), note, now_ms()).await?;
    tx.commit().await?;
    Ok(resolved)
}

/// What to do with an answer besides logging it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Then {
    /// The answer is final: settle the refund (success or failure). A success that settles
    /// later stays `Pending`; with `poll_at` it is looked up from then on, without it the
    /// provider's notification settles it.
    Settle { poll_at: Option<i64> },
    /// Only log it (a repeat or another lookup follows).
    LogOnly,
    /// Unknown outcome: keep the money reserved and look the refund up at this time.
    Reconcile(i64),
}

fn interaction_status(code: SfResultCode, not_found: bool) -> InteractionStatus {
    match code {
        _ if not_found => InteractionStatus::NoOp,
        SfResultCode::Success => InteractionStatus::Success,
        SfResultCode::Indeterminate => InteractionStatus::Timeout,
        _ => InteractionStatus::Failed,
    }
}

/// Records an answer in one transaction: the log row, and per `then` the refund's new
/// state and its money. Returns false if the refund had already been settled elsewhere.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish_call(
    db: &Db,
    run: Option<&Claimed>,
    w: &RefundWork,
    log_id: &str,
    outcome: &Outcome,
    not_found: bool,
    duration_ms: i64,
    then: Then,
) -> Result<bool, JobError> {
    let call = (w, log_id, outcome, not_found, duration_ms);
    finish_call_completing(db, run, call, then, None).await
}

/// [`finish_call`], and with `completes` (the run's last answer, not a repeat) the run's
/// operation is marked `Complete` in the same transaction.
pub(crate) async fn finish_call_completing(
    db: &Db,
    run: Option<&Claimed>,
    (w, log_id, outcome, not_found, duration_ms): (&RefundWork, &str, &Outcome, bool, i64),
    then: Then,
    completes: Option<&JobContext>,
) -> Result<bool, JobError> {
    let completes = completes.filter(|_| then != Then::LogOnly);
    let now = now_ms();
    let answer = answer_of(
        outcome,
        interaction_status(outcome.code, not_found),
        duration_ms,
    );
    let mut tx = begin(db, run).await?;
    sql::finish_log(&mut tx, log_id, w.summary_id.as_str(), &answer, now).await?;
    let mut settled = true;
    match then {
        Then::LogOnly => {}
        Then::Reconcile(at) => sql::start_reconciliation(&mut tx, w.id.as_str(), at, now).await?,
        Then::Settle { poll_at } if outcome.code == SfResultCode::Success => {
            let line_id = SfId::generate(ObjectType::RefundLinePayment).into_string();
            let settlement = match (outcome.settles_later, poll_at) {
                (false, _) => Settlement::Now,
                (true, Some(at)) => Settlement::PollAt(at),
                (true, None) => Settlement::Notified,
            };
            settled = sql::settle_success(&mut tx, w, &answer, settlement, &line_id, now).await?;
        }
        Then::Settle { .. } => {
            let report = FailureReport::new(w, outcome, log_id, "was not made");
            let exception = report.exception(w, now);
            settled = sql::settle_failure(&mut tx, w, &answer, &exception, now).await?;
        }
    }
    if settled {
        if let Some(ctx) = completes {
            ctx.complete_in(&mut tx).await?;
        }
        tx.commit().await?;
    } else {
        // Someone settled this refund first; keep our log line, change no money.
        tx.rollback().await?;
        let mut tx = begin(db, run).await?;
        sql::finish_log(&mut tx, log_id, w.summary_id.as_str(), &answer, now).await?;
        if let Some(ctx) = completes {
            ctx.complete_in(&mut tx).await?;
        }
        tx.commit().await?;
    }
    if let Some(ctx) = completes {
        ctx.completed_with();
    }
    Ok(settled)
}

fn answer_of(
    outcome: &Outcome,
    interaction_status: InteractionStatus,
    duration_ms: i64,
) -> ProviderAnswer<'_> {
    ProviderAnswer {
        interaction_status,
        sf_result_code: outcome.code.as_str(),
        gateway_result_code: outcome.gateway_result_code.as_deref(),
        gateway_message: outcome.message.as_deref(),
        gateway_ref_number: outcome.gateway_ref.as_deref(),
        gateway_date: outcome.gateway_date_ms,
        request: outcome.raw_request.as_deref(),
        response: outcome.raw_response.as_deref(),
        duration_ms,
    }
}

/// The process exception raised when a refund fails: what happened, and where to look.
struct FailureReport {
    id: String,
    message: String,
    description: String,
}

impl FailureReport {
    fn new(w: &RefundWork, outcome: &Outcome, log_id: &str, what_happened: &str) -> FailureReport {
        FailureReport {
            id: SfId::generate(ObjectType::ProcessException).into_string(),
            message: failure_message(w, outcome),
            description: format!(
                "Refund {} (ClientContext {}:{}) {what_happened}; the reservation was released{}. Gateway log {}.",
                w.id,
                w.operation_id,
                w.leg,
                if w.credit_memo_amount.minor() > 0 { " and the credit memo balance restored" } else { "" },
                log_id
            ),
        }
    }

    fn exception<'a>(&'a self, w: &'a RefundWork, now: i64) -> NewProcessException<'a> {
        NewProcessException::about_refund(w, &self.id, &self.message, &self.description, now)
    }
}

/// An amount as a person reads it: "10.50 USD".
pub(crate) fn format_money(amount: Money) -> String {
    format!("{amount} {}", amount.currency())
}

/// An amount given in minor units of a currency code nobody checked (a provider's word):
/// as [`format_money`] if the code is known.
pub(crate) fn format_amount(amount: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(c) => format_money(Money::from_minor(amount, c)),
        Err(_) => format!("{amount} minor units of {currency}"),
    }
}

fn failure_message(w: &RefundWork, outcome: &Outcome) -> String {
    let mut message = format!(
        "Refund of {} to payment {} failed: {}",
        format_money(w.amount),
        w.payment_id,
        outcome.code
    );
    if let Some(code) = &outcome.gateway_result_code {
        message.push_str(&format!(" ({code})"));
    }
    if let Some(text) = &outcome.message {
        message.push_str(&format!(": {text}"));
    }
    message
}

/// Settles a `Pending` refund on the provider's word (a lookup or a notification whose log
/// row is `log_id`): `success` moves the reserved money to refunded, otherwise it is
/// released and a process exception raised. False if the refund was no longer `Pending`.
pub(crate) async fn finish_pending(
    db: &Db,
    w: &RefundWork,
    log_id: &str,
    outcome: &Outcome,
    success: bool,
    duration_ms: i64,
) -> Result<bool, JobError> {
    let now = now_ms();
    let answer = answer_of(
        outcome,
        if success {
            InteractionStatus::Success
        } else {
            InteractionStatus::Failed
        },
        duration_ms,
    );
    let line_id = SfId::generate(ObjectType::RefundLinePayment).into_string();
    let report = FailureReport::new(
        w,
        outcome,
        log_id,
        "was accepted by the provider but did not settle",
    );
    let exception = report.exception(w, now);
    let mut tx = db.begin().await?;
    sql::finish_log(&mut tx, log_id, w.summary_id.as_str(), &answer, now).await?;
    let settled =
        sql::finish_pending(&mut tx, w, &answer, success, &line_id, &exception, now).await?;
    tx.commit().await?;
    Ok(settled)
}

/// Records a provider's notification about a refund — always as a gateway log row with
/// `IsNotification = Yes` — and settles the refund if it is still `Pending` (or still
/// `Draft`, its answer not yet recorded). Repeated notifications are logged and change
/// nothing else. Returns whether it settled the refund.
pub(crate) async fn settle_notification(
    db: &Db,
    w: &RefundWork,
    outcome: &Outcome,
    success: bool,
) -> Result<bool, JobError> {
    let log_id = SfId::generate(ObjectType::PaymentGatewayLog).into_string();
    let mut tx = db.begin().await?;
    sql::insert_log(&mut tx, &answer_row(w, &log_id, true, now_ms())).await?;
    tx.commit().await?;
    // A `Draft` refund has no recorded answer yet (the call's answer was lost, or is still
    // on its way): the notification is that answer. Logging it only would leave the refund
    // `Pending` for ever once reconciliation re-sends the call, because the provider does
    // not deliver an acknowledged notification again.
    let mut settled = false;
    if w.status == RefundStatus::Draft {
        let answer = Outcome {
            settles_later: false,
            ..outcome.clone()
        };
        let then = Then::Settle { poll_at: None };
        settled = finish_call(db, None, w, &log_id, &answer, false, 0, then).await?;
    }
    if !settled {
        settled = finish_pending(db, w, &log_id, outcome, success, 0).await?;
    }
    if !settled {
        contradicted(db, w, success, &log_id).await?;
    } else if w.status == RefundStatus::Draft {
        // It may have been handed to a person when its outcome stayed unknown: that task is
        // done now, and doing it by hand as well could pay the refund twice.
        let note = format!(
            " Settled since by the provider's notification ({}, gateway log {log_id}): \
             nothing is left to do by hand.",
            if success { "refunded" } else { "not refunded" }
        );
        if close_hand_over(db, w, &note).await? > 0 {
            tracing::info!(refund = %w.id, "a notification settled a handed-over refund; its exception is resolved");
        }
    }
    Ok(settled)
}

/// A notification about a refund already settled here: a repeat changes nothing; one that
/// says the opposite of how the refund ended (refunded, but the money was released here;
/// or not refunded, but counted as refunded) is raised for a person.
async fn contradicted(
    db: &Db,
    w: &RefundWork,
    refunded: bool,
    log_id: &str,
) -> Result<(), JobError> {
    let Some(current) = sql::find_refund_work(db, w.id.as_str()).await? else {
        return Ok(());
    };
    let released = current.status == RefundStatus::Canceled;
    let counted = current.status == RefundStatus::Processed;
    if !(refunded && released || !refunded && counted) {
        tracing::info!(refund = %w.id, "notification for a refund that is not pending: logged only");
        return Ok(());
    }
    let message = format!(
        "The provider reports refund {} {}, but it is {} here",
        w.id,
        if refunded { "refunded" } else { "not refunded" },
        current.status
    );
    let description = format!(
        "{} Check the refund in the provider's dashboard and the order's balances. Gateway log {log_id}.",
        if refunded {
            "Its money was released here (and any credit memo part restored) although the provider says it paid it out."
        } else {
            "Its money is counted as refunded here although the provider says it did not pay it out."
        }
    );
    let mut tx = db.begin().await?;
    raise_once(&mut tx, &current, &message, &description, now_ms()).await?;
    tx.commit().await?;
    tracing::warn!(refund = %w.id, refunded, status = %current.status, "a notification contradicts how the refund ended");
    Ok(())
}

/// What a verified notification says about its refund that the refund does not: another
/// amount or currency, or (when the gateway names one) another merchant account. `None`
/// when it matches.
pub(crate) fn notification_mismatch(
    w: &RefundWork,
    amount: i64,
    currency: &str,
    merchant_account: &str,
) -> Option<String> {
    let reported = Currency::parse(currency).map(|c| Money::from_minor(amount, c));
    if reported != Ok(w.amount) {
        return Some(format!(
            "it reports {} but the refund is {}",
            format_amount(amount, currency),
            format_money(w.amount)
        ));
    }
    match &w.merchant_account {
        Some(ours) if ours != merchant_account => Some(format!(
            "it comes from merchant account {merchant_account:?}, the gateway's is {ours:?}"
        )),
        _ => None,
    }
}

/// Records a notification that does not match its refund: logged (`NoOp`, the
/// notification kept in the log) and handed to a person with a process exception; the
/// refund and its money stay as they are. A repeat of the same notification raises no
/// second exception while the first is still open.
pub(crate) async fn record_mismatched_notification(
    db: &Db,
    w: &RefundWork,
    outcome: &Outcome,
    why: &str,
) -> Result<(), JobError> {
    let now = now_ms();
    let log_id = SfId::generate(ObjectType::PaymentGatewayLog).into_string();
    let message = format!(
        "A provider notification about refund {} does not match it: {why}",
        w.id
    );
    let description = format!(
        "The notification was not applied: refund {} stays {} and its money as it was. Check the refund in the \
         provider's dashboard (reference {}) and settle it by hand. Gateway log {log_id}.",
        w.id,
        w.status,
        outcome.gateway_ref.as_deref().unwrap_or(w.id.as_str())
    );
    let mut tx = db.begin().await?;
    sql::insert_log(&mut tx, &answer_row(w, &log_id, true, now)).await?;
    let answer = answer_of(outcome, InteractionStatus::NoOp, 0);
    sql::finish_log(&mut tx, &log_id, w.summary_id.as_str(), &answer, now).await?;
    raise_once(&mut tx, w, &message, &description, now).await?;
    tx.commit().await?;
    tracing::warn!(refund = %w.id, why, "a notification does not match its refund: handed to a person");
    Ok(())
}

/// Why a refund cannot be settled by hand; `None` when it can: it was handed to a person
/// (`Draft`, reconciliation gave up), or it is `Pending` (accepted, awaiting the provider's
/// word). A `Draft` still being worked on — called right now, or being looked up — is not:
/// a person's answer could cross the provider's.
pub(crate) fn by_hand_refused(w: &RefundWork) -> Option<String> {
    use refunds_domain::ReconcileState;
    match (w.status, w.reconcile_state) {
        (RefundStatus::Draft, ReconcileState::Manual) | (RefundStatus::Pending, _) => None,
        (RefundStatus::Draft, _) => Some(format!(
            "Refund {} is still being worked on (its provider call or lookup is not finished); \
             it can be settled by hand once it is handed to a person",
            w.id
        )),
        (status, _) => Some(format!("Refund {} is already {status}", w.id)),
    }
}

/// A person's settlement of a refund (see [`by_hand_refused`]): `refunded` moves its
/// reserved money to refunded, otherwise the money is released (and the credit memo
/// restored). Logged like a provider's answer (result code `manual`); a hand-over
/// exception on the refund is resolved. False if the refund was settled meanwhile.
pub(crate) async fn settle_by_hand(
    db: &Db,
    w: &RefundWork,
    refunded: bool,
) -> Result<bool, JobError> {
    let now = now_ms();
    let log_id = SfId::generate(ObjectType::PaymentGatewayLog).into_string();
    let mut tx = db.begin().await?;
    sql::insert_log(&mut tx, &answer_row(w, &log_id, false, now)).await?;
    tx.commit().await?;
    let outcome = Outcome {
        gateway_result_code: Some("manual".to_string()),
        gateway_date_ms: Some(now),
        ..Outcome::bare(
            if refunded {
                SfResultCode::Success
            } else {
                SfResultCode::PermanentFail
            },
            if refunded {
                "Settled by hand: the provider refunded it"
            } else {
                "Settled by hand: the provider did not refund it"
            },
        )
    };
    let settled = if w.status == RefundStatus::Draft {
        let then = Then::Settle { poll_at: None };
        finish_call(db, None, w, &log_id, &outcome, false, 0, then).await?
    } else {
        finish_pending(db, w, &log_id, &outcome, refunded, 0).await?
    };
    if settled {
        let note = format!(
            " Settled by hand as {} (gateway log {log_id}).",
            if refunded { "refunded" } else { "not refunded" }
        );
        close_hand_over(db, w, &note).await?;
        tracing::info!(refund = %w.id, refunded, "refund settled by hand");
    }
    Ok(settled)
}
