//! `POST /webhooks/adyen`: Adyen's standard notifications about refunds.
//!
//! Every item is verified with its gateway's HMAC key before anything changes; one bad
//! signature rejects the whole delivery with 401. Verified `REFUND` / `REFUND_FAILED`
//! items settle their `Pending` refund when their amount, currency and merchant account
//! match it; one that does not match is handed to a person (a process exception) and
//! changes no money. Each is logged as a notification. Adyen expects the body
//! `[accepted]` once a delivery is stored.
//!
//! The endpoint is open (Adyen signs, it does not log in), so what one request can cost
//! is bounded: at most [`MAX_ITEMS`] items per delivery (more is 400 `LIMIT_EXCEEDED`,
//! before any lookup), and one summary WARN per delivery for items that name no Adyen
//! refund, whatever their number.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use refunds_gateway::adyen::{parse_notification, NotificationItem};
use refunds_store::refunds::{find_refund_work, RefundWork};

use crate::error::ApiError;
use crate::AppState;

/// Notification items in one delivery (Adyen sends one per delivery, a few at most); a
/// larger delivery is refused before any item is looked up.
pub const MAX_ITEMS: usize = 100;

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE", message)
}

pub async fn adyen(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    // Only a JSON object is a delivery: serde would also read an array into the struct,
    // field by field, and accept `[[]]` as a notification with no items. It is checked
    // as every body is (no key twice, bounded nesting) before Adyen's shape is read.
    let delivery = crate::body::object(&body)?;
    let count = delivery
        .get("notificationItems")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    if count > MAX_ITEMS {
        tracing::warn!(
            items = count,
            "Adyen delivery with more than {MAX_ITEMS} items: rejected"
        );
        return Err(ApiError::bad_request(
            "LIMIT_EXCEEDED",
            format!("A delivery may hold at most {MAX_ITEMS} notification items"),
        ));
    }
    let items = parse_notification(&body).map_err(ApiError::json_parser)?;
    let mut verified: Vec<(NotificationItem, RefundWork)> = Vec::new();
    // An unauthenticated caller can name any reference: what it cannot match is counted
    // and logged once per delivery, never once per item.
    let mut unknown = 0usize;
    let mut other_provider = 0usize;
    for item in items.into_iter().filter(NotificationItem::is_refund_event) {
        let Some(w) = find_refund_work(&state.db, &item.merchant_reference).await? else {
            unknown += 1;
            continue;
        };
        if w.provider_type != refunds_domain::ProviderType::Adyen {
            other_provider += 1;
            continue;
        }
        let key = w
            .webhook_hmac_key_env
            .as_deref()
            .and_then(|name| refunds_gateway::secret_from_env(Some(name)).ok());
        let Some(key) = key else {
            tracing::error!(gateway = %w.gateway_id, "no webhook HMAC key configured: cannot verify Adyen notifications");
            return Err(unauthorized("The notification cannot be verified"));
        };
        if !item.verify(&key) {
            tracing::warn!(refund = %w.id, "Adyen notification with a bad HMAC signature: delivery rejected");
            return Err(unauthorized("The notification's HMAC signature is invalid"));
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
        let outcome = item.outcome(refunds_store::now_ms());
        // Authentic is not the same as matching: a notification for another amount,
        // currency or merchant account is not applied to this refund.
        let mismatch = refunds_queue::notification_mismatch(
            &w,
            item.amount.value,
            &item.amount.currency,
            &item.merchant_account_code,
        );
        match mismatch {
            Some(why) => {
                refunds_queue::record_mismatched_notification(&state.db, &w, &outcome, &why).await
            }
            None => refunds_queue::settle_notification(&state.db, &w, &outcome, success)
                .await
                .map(|_| ()),
        }
        .map_err(|e| ApiError::internal(&e))?;
    }
    Ok(([(header::CONTENT_TYPE, "text/plain")], "[accepted]").into_response())
}
