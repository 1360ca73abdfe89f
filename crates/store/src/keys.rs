//! How old a refund's idempotency key is at its provider: providers forget keys after a
//! while (Stripe after 24 hours), and a refund sent again under a forgotten key is a new
//! refund. The queue asks this before it sends a refund again.

use crate::{Db, Result};

/// When the refund was first sent to its provider, as far as this service knows: the
/// creation time of its first `ReferencedRefund` gateway log row of ours (written just
/// before each call; notifications are not calls). `None`: it was never sent.
pub async fn first_sent_at(db: &Db, refund_id: &str) -> Result<Option<i64>> {
    let first: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(created_date) FROM payment_gateway_logs \
         WHERE referenced_entity_id = $1 AND interaction_type = 'ReferencedRefund' AND is_notification = 'No'",
    )
    .bind(refund_id)
    .fetch_one(db.pool())
    .await?;
    Ok(first)
}
