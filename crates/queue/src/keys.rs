//! Sending a refund again after its provider may have forgotten its idempotency key.
//!
//! Providers keep a key for a limited time ([`Provider::key_lifetime`]: Stripe 24 hours).
//! A `Draft` refund first sent longer ago than that — rescued late, retried after an
//! outage, handed to reconciliation — cannot be sent again on the key's word: if the first
//! request was made, a new one pays it twice. So it is looked up first, by the reference
//! the service put on it (Stripe `metadata[refund_id]`), and only a lookup that proves it
//! absent lets it be sent again. A lookup that cannot decide — it failed, or the provider
//! can only look up by replaying the key (Adyen) — hands the refund to a person with its
//! money still reserved.

use refunds_domain::{ObjectType, ReconcileState, SfId, SfResultCode};
use refunds_gateway::{Lookup, Provider};
use refunds_store::ops::Claimed;
use refunds_store::refunds::{self as sql, NewProcessException, RefundWork};
use refunds_store::{keys, now_ms, Db};

use crate::settle::{begin, finish_call, request_for, settle_with, start_call, Interaction, Then};
use crate::{ms, timed, JobError, QueueConfig};

/// What the check before a repeat decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Sending under the key is safe: the provider still knows it, or a lookup proved the
    /// refund was never made.
    Safe,
    /// The refund needs no send: the lookup found and recorded it, or it went to a person.
    Done,
}

/// Whether the provider may have forgotten the refund's key by `now`: it was sent before,
/// at least the provider's key lifetime ago.
pub(crate) async fn may_be_forgotten(
    db: &Db,
    provider: &dyn Provider,
    w: &RefundWork,
    now: i64,
) -> Result<bool, JobError> {
    let Some(lifetime) = provider.key_lifetime() else {
        return Ok(false);
    };
    if w.attempts == 0 {
        return Ok(false);
    }
    Ok(match keys::first_sent_at(db, w.id.as_str()).await? {
        Some(first) => now.saturating_sub(first) >= ms(lifetime),
        None => false,
    })
}

/// Before the refund is sent (again) by a run (`run`) or by reconciliation (`None`):
/// looks it up if its key may be forgotten, and says whether sending is safe.
pub(crate) async fn before_resend(
    db: &Db,
    run: Option<&Claimed>,
    config: &QueueConfig,
    provider: &dyn Provider,
    w: &RefundWork,
) -> Result<Resend, JobError> {
    if !may_be_forgotten(db, provider, w, now_ms()).await? {
        return Ok(Resend::Safe);
    }
    if !provider.lookup_by_reference() {
        hand_over(db, run, w, NO_LOOKUP).await?;
        return Ok(Resend::Done);
    }
    let log_id = start_call(db, run, w, Interaction::RefundLookup).await?;
    let (lookup, duration) = timed(provider.lookup(&request_for(w))).await;
    tracing::info!(refund = %w.id, found = matches!(lookup, Lookup::Found(_)),
        "looked up by reference before sending again: the provider may have forgotten its key");
    match lookup {
        Lookup::Found(outcome) => {
            let then = if outcome.code == SfResultCode::Success || outcome.code.is_failure() {
                settle_with(provider, config.reconcile_delay)
            } else {
                // It exists, its outcome is open: reconciliation follows it by reference.
                Then::Reconcile(now_ms().saturating_add(ms(config.reconcile_delay)))
            };
            finish_call(db, run, w, &log_id, &outcome, false, duration, then).await?;
            Ok(Resend::Done)
        }
        Lookup::NotFound(outcome) => {
            finish_call(db, run, w, &log_id, &outcome, true, duration, Then::LogOnly).await?;
            Ok(Resend::Safe)
        }
        Lookup::Unknown(outcome) => {
            finish_call(
                db,
                run,
                w,
                &log_id,
                &outcome,
                false,
                duration,
                Then::LogOnly,
            )
            .await?;
            hand_over(db, run, w, "the lookup by reference failed").await?;
            Ok(Resend::Done)
        }
    }
}

/// Why a provider that looks up by replaying the key cannot decide.
pub(crate) const NO_LOOKUP: &str =
    "its provider can only look a refund up by sending it again under its key";

/// Whether a lookup of the refund would be a resend under a key the provider may have
/// forgotten (then it must not be made: see [`hand_over`]).
pub(crate) async fn lookup_would_resend(
    db: &Db,
    provider: &dyn Provider,
    w: &RefundWork,
) -> Result<bool, JobError> {
    Ok(!provider.lookup_by_reference() && may_be_forgotten(db, provider, w, now_ms()).await?)
}

/// Hands the refund to a person: it stays `Draft` with its money reserved, and a process
/// exception says why it was not sent again.
pub(crate) async fn hand_over(
    db: &Db,
    run: Option<&Claimed>,
    w: &RefundWork,
    why: &str,
) -> Result<(), JobError> {
    let now = now_ms();
    let pe_id = SfId::generate(ObjectType::ProcessException).into_string();
    let message = format!(
        "{} {} ({}) is unknown; its money stays reserved until a person settles it",
        sql::HAND_OVER_MESSAGE,
        w.id,
        crate::settle::format_money(w.amount)
    );
    let description = format!(
        "Refund {} was first sent longer ago than its provider keeps idempotency keys, so sending it again could \
         refund it twice, and {why}. Check the provider's dashboard for reference {} and settle the refund by hand: \
         set its Status to Processed (refunded) or Canceled (not).",
        w.id, w.id
    );
    let exception = NewProcessException::about_refund(w, &pe_id, &message, &description, now);
    let mut tx = begin(db, run).await?;
    // Under reconciliation already, or not yet: either way it stops here.
    if w.reconcile_state == ReconcileState::None {
        sql::start_reconciliation(&mut tx, w.id.as_str(), now, now).await?;
    }
    sql::hand_over_reconciliation(&mut tx, w.id.as_str(), &exception, now).await?;
    tx.commit().await?;
    tracing::warn!(refund = %w.id, why, "not sent again: its key may be forgotten; handed to a person");
    Ok(())
}
