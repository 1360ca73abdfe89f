//! What the outside world says about a refund, outside any provider call of ours: a
//! provider's notification (Adyen's), or a person settling it by hand. The API parses and
//! bounds the request; what it means for the refund — which refund, whether it is
//! authentic, whether it matches, what it settles — is decided here.

use refunds_domain::ProviderType;
use refunds_gateway::adyen::NotificationItem;
use refunds_store::refunds::{find_refund_work, RefundWork};
use refunds_store::{now_ms, Db};

use crate::settle::{
    by_hand_refused, notification_mismatch, record_mismatched_notification, settle_by_hand,
    settle_notification,
};
use crate::JobError;

/// What became of a person's settlement of a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ByHand {
    /// No refund has that id.
    NotFound,
    /// The refund is not in a state a person may settle (why, in words for the caller).
    Refused(String),
    /// Settled as asked.
    Settled,
    /// Someone (or something) settled it first; nothing changed.
    SettledMeanwhile,
}

/// Settles refund `refund_id` by hand: `refunded` says the money reached the customer
/// (`Processed`) or not (`Canceled`). Only a refund handed to a person, or still `Pending`,
/// may be settled so.
pub async fn settle_refund_by_hand(
    db: &Db,
    refund_id: &str,
    refunded: bool,
) -> Result<ByHand, JobError> {
    let Some(work) = find_refund_work(db, refund_id).await? else {
        return Ok(ByHand::NotFound);
    };
    if let Some(why) = by_hand_refused(&work) {
        return Ok(ByHand::Refused(why));
    }
    Ok(if settle_by_hand(db, &work, refunded).await? {
        ByHand::Settled
    } else {
        ByHand::SettledMeanwhile
    })
}

/// What became of one Adyen delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Every refund item was verified and applied: settled, logged as a repeat, or (not
    /// matching its refund) handed to a person. Items that name no Adyen refund were
    /// ignored: `unknown` named no refund, `other_provider` one of another provider.
    Accepted {
        unknown: usize,
        other_provider: usize,
    },
    /// An item's gateway has no webhook HMAC key: nothing of the delivery was applied.
    NoKey,
    /// An item's HMAC signature is wrong: nothing of the delivery was applied.
    BadSignature,
}

/// Applies an Adyen delivery. Every refund item is first verified with its gateway's HMAC
/// key; one that cannot be verified rejects the whole delivery before anything changes.
/// What an unauthenticated sender cannot match is counted, never applied, and logged once
/// per delivery, not once per item.
pub async fn apply_adyen_delivery(
    db: &Db,
    items: Vec<NotificationItem>,
) -> Result<Delivery, JobError> {
    let mut verified: Vec<(NotificationItem, RefundWork)> = Vec::new();
    let mut unknown = 0usize;
    let mut other_provider = 0usize;
    for item in items.into_iter().filter(NotificationItem::is_refund_event) {
        let Some(w) = find_refund_work(db, &item.merchant_reference).await? else {
            unknown += 1;
            continue;
        };
        if w.provider_type != ProviderType::Adyen {
            other_provider += 1;
            continue;
        }
        let key = w
            .webhook_hmac_key_env
            .as_deref()
            .and_then(|name| refunds_gateway::secret_from_env(Some(name)).ok());
        let Some(key) = key else {
            tracing::error!(gateway = %w.gateway_id, "no webhook HMAC key configured: cannot verify Adyen notifications");
            return Ok(Delivery::NoKey);
        };
        if !item.verify(&key) {
            tracing::warn!(refund = %w.id, "Adyen notification with a bad HMAC signature: delivery rejected");
            return Ok(Delivery::BadSignature);
        }
        verified.push((item, w));
    }
    if unknown + other_provider > 0 {
        tracing::warn!(
            unknown_refunds = unknown,
            other_providers = other_provider,
            "Adyen notification items that name no Adyen refund: ignored"
        );
    }
    for (item, w) in verified {
        let success = item.succeeded();
        let outcome = item.outcome(now_ms());
        // Authentic is not the same as matching: a notification for another amount,
        // currency or merchant account is not applied to this refund.
        let mismatch = notification_mismatch(
            &w,
            item.amount.value,
            &item.amount.currency,
            &item.merchant_account_code,
        );
        match mismatch {
            Some(why) => record_mismatched_notification(db, &w, &outcome, &why).await?,
            None => {
                settle_notification(db, &w, &outcome, success).await?;
            }
        }
    }
    Ok(Delivery::Accepted {
        unknown,
        other_provider,
    })
}
