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
use refunds_gateway::adyen::parse_notification;
use refunds_queue::Delivery;

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
    match refunds_queue::apply_adyen_delivery(&state.db, items)
        .await
        .map_err(|e| ApiError::internal(&e))?
    {
        Delivery::Accepted { .. } => {}
        Delivery::NoKey => return Err(unauthorized("The notification cannot be verified")),
        Delivery::BadSignature => {
            return Err(unauthorized("The notification's HMAC signature is invalid"))
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain")], "[accepted]").into_response())
}
