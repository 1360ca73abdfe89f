//! Reconciliation: finding out what became of refunds whose provider answer was lost
//! (`Indeterminate`). Each due refund is looked up by its idempotency key; a refund the
//! provider never received is sent again with the same key; one that stays unknown past
//! the give-up time is handed to a person with its money still reserved.

use std::time::{Duration, Instant};

use refunds_domain::{ObjectType, SfId, SfResultCode};
use refunds_gateway::{GatewayConfig, Lookup, Registry};
use refunds_store::refunds::{self as sql, NewProcessException, RefundWork};
use refunds_store::{now_ms, Db};
use tokio::sync::watch;

use crate::settle::{finish_call, format_amount, request_for, start_call, Interaction, Then};
use crate::{ms, JobError, QueueConfig};

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

fn then_for(code: SfResultCode) -> Then {
    if code == SfResultCode::Success || code.is_failure() {
        Then::Settle
    } else {
        Then::LogOnly
    }
}

/// One pass over the refunds whose lookup is due. Returns how many were looked up.
pub async fn reconcile_due(
    db: &Db,
    config: &QueueConfig,
    registry: &Registry,
) -> Result<usize, JobError> {
    let now = now_ms();
    let mut done = 0;
    for w in sql::due_reconciliations(db, now, 32).await? {
        let backoff = ms(config.reconcile_delay).saturating_mul(1i64 << w.lookups.clamp(0, 30));
        let next = now.saturating_add(backoff.min(ms(config.reconcile_max_delay)));
        let mut tx = db.begin().await?;
        let taken = sql::take_reconciliation(tx.conn(), &w.id, w.lookups, next, now).await?;
        tx.commit().await?;
        if !taken {
            continue;
        }
        done += 1;
        let since = w.reconcile_since.unwrap_or(now);
        if now.saturating_sub(since) >= ms(config.reconcile_give_up) {
            hand_over(db, &w, now).await?;
            continue;
        }
        let provider = match registry.provider(&GatewayConfig {
            provider_type: w.provider_type.clone(),
            base_url: w.base_url.clone(),
            credential_env: w.credential_env.clone(),
        }) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(refund = %w.id, error = %e, "cannot reconcile: no provider");
                continue;
            }
        };
        let request = request_for(&w);
        let log_id = start_call(db, None, &w, Interaction::RefundLookup).await?;
        let started = Instant::now();
        let lookup = provider.lookup(&request).await;
        let duration = ms(started.elapsed());
        match lookup {
            Lookup::Found(outcome) => {
                tracing::info!(refund = %w.id, code = %outcome.code, "reconciliation found the refund");
                finish_call(
                    db,
                    None,
                    &w,
                    &log_id,
                    &outcome,
                    false,
                    duration,
                    then_for(outcome.code),
                )
                .await?;
            }
            Lookup::Unknown(outcome) => {
                finish_call(
                    db,
                    None,
                    &w,
                    &log_id,
                    &outcome,
                    false,
                    duration,
                    Then::LogOnly,
                )
                .await?;
            }
            Lookup::NotFound(outcome) => {
                // The request never arrived: sending it again with the same key is safe.
                finish_call(
                    db,
                    None,
                    &w,
                    &log_id,
                    &outcome,
                    true,
                    duration,
                    Then::LogOnly,
                )
                .await?;
                let log_id = start_call(db, None, &w, Interaction::ReferencedRefund).await?;
                let started = Instant::now();
                let outcome = provider.refund(&request).await;
                let duration = ms(started.elapsed());
                tracing::info!(refund = %w.id, code = %outcome.code, "reconciliation sent the refund again");
                finish_call(
                    db,
                    None,
                    &w,
                    &log_id,
                    &outcome,
                    false,
                    duration,
                    then_for(outcome.code),
                )
                .await?;
            }
        }
    }
    Ok(done)
}

async fn hand_over(db: &Db, w: &RefundWork, now: i64) -> Result<(), JobError> {
    let pe_id = SfId::generate(ObjectType::ProcessException).into_string();
    let message = format!(
        "The outcome of refund {} ({}) is unknown; its money stays reserved until a person settles it",
        w.id,
        format_amount(w.amount, &w.currency)
    );
    let description = format!(
        "The provider could not confirm refund {} after {} lookups. Check the provider's dashboard for \
         idempotency key {} and settle the refund by hand.",
        w.id, w.lookups, w.id
    );
    let mut tx = db.begin().await?;
    sql::hand_over_reconciliation(
        tx.conn(),
        &w.id,
        &NewProcessException {
            id: &pe_id,
            message: &message,
            description: &description,
            attached_to_id: &w.id,
            order_summary_id: &w.order_summary_id,
            operation_id: Some(&w.operation_id),
            priority: "High",
            now,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(refund = %w.id, "reconciliation gave up; handed to a person");
    Ok(())
}
