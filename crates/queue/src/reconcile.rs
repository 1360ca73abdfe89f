//! Finding out what became of refunds after the provider's first answer left it open.
//!
//! - **Unknown outcomes** (`Indeterminate`, the refund is `Draft`): each is looked up by its
//!   idempotency key; one the provider never received is sent again with the same key; one
//!   that stays unknown past the give-up time is handed to a person, money still reserved.
//! - **Later settlement** (`Pending`, for providers that are polled, such as Stripe): each
//!   is looked up until the provider reports it settled or failed.

use std::time::Duration;

use refunds_domain::{ObjectType, RefundStatus, SfId, SfResultCode};
use refunds_gateway::{Lookup, Provider, Registry};
use refunds_store::refunds::{self as sql, NewProcessException, RefundWork};
use refunds_store::{now_ms, Db};
use tokio::sync::watch;

use crate::settle::{
    finish_call, finish_pending, format_money, gateway_config, request_for, settle_with,
    start_call, Interaction, Then,
};
use crate::{keys, ms, timed, JobError, QueueConfig};

pub(crate) async fn run(
    db: Db,
    config: QueueConfig,
    registry: Registry,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = config
        .poll_interval
        .min(config.reconcile_delay)
        .max(Duration::from_millis(10));
    loop {
        if let Err(e) = reconcile_due(&db, &config, &registry).await {
            tracing::error!(error = %e, "reconciliation pass failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// One pass over the lookups that are due. Returns how many refunds were looked up.
pub async fn reconcile_due(
    db: &Db,
    config: &QueueConfig,
    registry: &Registry,
) -> Result<usize, JobError> {
    let now = now_ms();
    let mut due = sql::due_reconciliations(db, now, 32).await?;
    due.extend(sql::due_settlements(db, now, 32).await?);
    let mut done = 0;
    for w in due {
        if !take(db, config, &w, now).await? {
            continue;
        }
        done += 1;
        let provider = match registry.provider(&gateway_config(&w)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(refund = %w.id, error = %e, "cannot look the refund up: no provider");
                continue;
            }
        };
        if w.status == RefundStatus::Pending {
            follow_settlement(db, &*provider, &w).await?;
        } else if now.saturating_sub(w.reconcile_since.unwrap_or(now))
            >= ms(config.reconcile_give_up)
        {
            hand_over(db, &w, now).await?;
        } else {
            resolve_unknown(db, config, &*provider, &w).await?;
        }
    }
    Ok(done)
}

/// Counts the lookup and pushes the next one out (doubling, capped), which also keeps
/// other workers off this refund meanwhile. False if another worker took it.
async fn take(db: &Db, config: &QueueConfig, w: &RefundWork, now: i64) -> Result<bool, JobError> {
    let backoff = ms(config.reconcile_delay).saturating_mul(1i64 << w.lookups.clamp(0, 30));
    let next = now.saturating_add(backoff.min(ms(config.reconcile_max_delay)));
    let mut tx = db.begin().await?;
    let taken = sql::take_reconciliation(tx.conn(), w.id.as_str(), w.lookups, next, now).await?;
    tx.commit().await?;
    Ok(taken)
}

async fn resolve_unknown(
    db: &Db,
    config: &QueueConfig,
    provider: &dyn Provider,
    w: &RefundWork,
) -> Result<(), JobError> {
    let final_answer = |code: SfResultCode| {
        if code == SfResultCode::Success || code.is_failure() {
            settle_with(provider, config.reconcile_delay)
        } else {
            Then::LogOnly
        }
    };
    if keys::lookup_would_resend(db, provider, w).await? {
        return keys::hand_over(db, None, w, keys::NO_LOOKUP).await;
    }
    let request = request_for(w);
    let log_id = start_call(db, None, w, Interaction::RefundLookup).await?;
    let (lookup, duration) = timed(provider.lookup(&request)).await;
    let (outcome, not_found, then) = match lookup {
        Lookup::Found(outcome) => {
            tracing::info!(refund = %w.id, code = %outcome.code, "reconciliation found the refund");
            let then = final_answer(outcome.code);
            (outcome, false, then)
        }
        Lookup::Unknown(outcome) => (outcome, false, Then::LogOnly),
        Lookup::NotFound(outcome) => (outcome, true, Then::LogOnly),
    };
    finish_call(db, None, w, &log_id, &outcome, not_found, duration, then).await?;
    if not_found {
        // The request never arrived: sending it again with the same key is safe.
        let log_id = start_call(db, None, w, Interaction::ReferencedRefund).await?;
        let (outcome, duration) = timed(provider.refund(&request)).await;
        tracing::info!(refund = %w.id, code = %outcome.code, "reconciliation sent the refund again");
        let then = final_answer(outcome.code);
        finish_call(db, None, w, &log_id, &outcome, false, duration, then).await?;
    }
    Ok(())
}

async fn follow_settlement(
    db: &Db,
    provider: &dyn Provider,
    w: &RefundWork,
) -> Result<(), JobError> {
    let log_id = start_call(db, None, w, Interaction::RefundLookup).await?;
    let (lookup, duration) = timed(provider.lookup(&request_for(w))).await;
    match lookup {
        Lookup::Found(outcome)
            if outcome.code == SfResultCode::Success && !outcome.settles_later =>
        {
            finish_pending(db, w, &log_id, &outcome, true, duration).await?;
        }
        Lookup::Found(outcome) if outcome.code.is_failure() => {
            finish_pending(db, w, &log_id, &outcome, false, duration).await?;
        }
        Lookup::Found(outcome) | Lookup::NotFound(outcome) | Lookup::Unknown(outcome) => {
            finish_call(
                db,
                None,
                w,
                &log_id,
                &outcome,
                false,
                duration,
                Then::LogOnly,
            )
            .await?;
        }
    }
    Ok(())
}

async fn hand_over(db: &Db, w: &RefundWork, now: i64) -> Result<(), JobError> {
    let pe_id = SfId::generate(ObjectType::ProcessException).into_string();
    let message = format!(
        "{} {} ({}) is unknown; its money stays reserved until a person settles it",
        sql::HAND_OVER_MESSAGE,
        w.id,
        format_money(w.amount)
    );
    let description = format!(
        "The provider could not confirm refund {} after {} lookups. Check the provider's dashboard for \
         idempotency key {} and settle the refund by hand: set its Status to Processed (refunded) or Canceled (not).",
        w.id, w.lookups, w.id
    );
    let mut tx = db.begin().await?;
    sql::hand_over_reconciliation(
        tx.conn(),
        w.id.as_str(),
        &NewProcessException::about_refund(w, &pe_id, &message, &description, now),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(refund = %w.id, "reconciliation gave up; handed to a person");
    Ok(())
}
