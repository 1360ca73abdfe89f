//! `POST …/order-summaries/{id}/async-actions/ensure-refunds-async` (SPEC §1.1).
//!
//! Every check runs in the same transaction that enqueues the operation, so a 201 means
//! the request is durable and was valid against what was committed when it was admitted.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use refunds_domain::{ObjectType, SfId};
use refunds_queue::{admit, AdmitRequest, Refusal};
use refunds_store::now_ms;
use refunds_store::records;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::body;
use crate::error::{json_response, ApiError};
use crate::version::ApiVersion;
use crate::AppState;

/// Fields of the input and the version that introduced each.
const FIELDS: &[(&str, u32)] = &[
    ("creditMemoId", 48),
    ("excessFundsAmount", 49),
    ("invoicesToPay", 56),
    ("sequences", 56),
    ("isAllowPartial", 56),
    ("isReservedBalanceAmountConsidered", 59),
];

/// The request after the checks that need no database.
struct Input {
    credit_memo_id: Option<SfId>,
    excess_funds: Option<Value>,
    invoices: Vec<SfId>,
    sequences: Vec<(SfId, Value)>,
    allow_partial: bool,
}

fn invalid_input(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("INVALID_INPUT", message)
}

fn parse_input(bytes: &[u8], version: ApiVersion) -> Result<Input, ApiError> {
    let map = body::object(bytes)?;
    for key in map.keys() {
        match FIELDS.iter().find(|(name, _)| name == key) {
            None => {
                return Err(ApiError::json_parser(format!(
                    "Unrecognized field \"{key}\""
                )))
            }
            Some((_, since)) if *since > version.0 => {
                return Err(ApiError::json_parser(format!(
                    "Unrecognized field \"{key}\": available from API version {since}.0"
                )))
            }
            Some(_) => {}
        }
    }
    let present = |k: &str| map.get(k).filter(|v| !v.is_null());
    let credit_memo_id = present("creditMemoId")
        .map(|v| {
            body::string("creditMemoId", v)
                .and_then(|s| body::id("creditMemoId", s, ObjectType::CreditMemo))
        })
        .transpose()?;
    let excess_funds = present("excessFundsAmount").cloned();
    if let Some(v) = &excess_funds {
        if body::number_text(v).is_none() {
            return Err(ApiError::json_parser(
                "Cannot deserialize excessFundsAmount: expected a number",
            ));
        }
    }
    let mut invoices = Vec::new();
    for item in array(&map, "invoicesToPay")? {
        let obj = item_object(item, "invoicesToPay", &["invoiceId"])?;
        let raw = obj
            .get("invoiceId")
            .filter(|v| !v.is_null())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "REQUIRED_FIELD_MISSING",
                    "invoicesToPay: invoiceId is required",
                )
            })?;
        invoices.push(body::id(
            "invoiceId",
            body::string("invoiceId", raw)?,
            ObjectType::Invoice,
        )?);
    }
    let mut sequences = Vec::new();
    for item in array(&map, "sequences")? {
        let obj = item_object(item, "sequences", &["orderPaymentSummaryId", "amount"])?;
        let raw = obj
            .get("orderPaymentSummaryId")
            .filter(|v| !v.is_null())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "REQUIRED_FIELD_MISSING",
                    "sequences: orderPaymentSummaryId is required",
                )
            })?;
        let ops = body::id(
            "orderPaymentSummaryId",
            body::string("orderPaymentSummaryId", raw)?,
            ObjectType::OrderPaymentSummary,
        )?;
        let amount = obj.get("amount").filter(|v| !v.is_null()).ok_or_else(|| {
            ApiError::bad_request("REQUIRED_FIELD_MISSING", "sequences: amount is required")
        })?;
        if body::number_text(amount).is_none() {
            return Err(ApiError::json_parser(
                "Cannot deserialize sequences.amount: expected a number",
            ));
        }
        sequences.push((ops, amount.clone()));
    }
    let allow_partial = boolean(&map, "isAllowPartial")?;
    boolean(&map, "isReservedBalanceAmountConsidered")?;
    if credit_memo_id.is_none() && excess_funds.is_none() {
        return Err(ApiError::bad_request(
            "REQUIRED_FIELD_MISSING",
            "Specify a creditMemoId, an excessFundsAmount, or both",
        ));
    }
    if credit_memo_id.is_none() && !invoices.is_empty() {
        return Err(invalid_input(
            "invoicesToPay are paid from a credit memo: specify creditMemoId",
        ));
    }
    Ok(Input {
        credit_memo_id,
        excess_funds,
        invoices,
        sequences,
        allow_partial,
    })
}

fn array<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ApiError::json_parser(format!(
            "Cannot deserialize {key}: expected an array"
        ))),
    }
}

fn item_object<'a>(
    item: &'a Value,
    list: &str,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, ApiError> {
    let obj = item.as_object().ok_or_else(|| {
        ApiError::json_parser(format!("Cannot deserialize {list}: expected objects"))
    })?;
    if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::json_parser(format!(
            "Unrecognized field \"{key}\" in {list}"
        )));
    }
    Ok(obj)
}

fn boolean(map: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::json_parser(format!(
            "Cannot deserialize {key}: expected true or false"
        ))),
    }
}

fn created(operation_id: &str) -> Response {
    json_response(
        StatusCode::CREATED,
        &json!({"backgroundOperationId": operation_id, "errors": [], "success": true}),
    )
}

pub async fn ensure_refunds(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = match (path, bytes) {
        (Err(rejection), _) => Err(ApiError::from(rejection)),
        (Ok(_), Err(rejection)) => Err(ApiError::from(rejection)),
        (Ok(Path((version, order_id))), Ok(bytes)) => {
            handle(state, &version, &order_id, &headers, &bytes).await
        }
    };
    result.map_err(ApiError::with_output)
}

async fn handle(
    state: AppState,
    version: &str,
    order_id: &str,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let version = ApiVersion::parse(version)?;
    let order_id = body::id("orderSummaryId", order_id, ObjectType::OrderSummary)?;
    let input = parse_input(bytes, version)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str().map(str::trim) {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Some(k.to_string()),
            _ => {
                return Err(invalid_input(
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                ))
            }
        },
    };
    let hash = fingerprint(&order_id, bytes)?;
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    if let Some(key) = &key {
        let cutoff = now - i64::try_from(state.idempotency_ttl.as_millis()).unwrap_or(i64::MAX);
        if let Some(seen) = records::idempotency_key(&mut tx, key, cutoff).await? {
            tx.rollback().await?;
            return replay(&seen, &hash);
        }
    }
    let operation_id = SfId::generate(ObjectType::BackgroundOperation).into_string();
    admit(
        &mut tx,
        &state.queue,
        &operation_id,
        admit_request(&order_id, input),
        now,
    )
    .await
    .map_err(|r| refused(r, &order_id))?;
    if let Some(key) = &key {
        if !records::remember_idempotency_key(&mut tx, key, &hash, &operation_id, now).await? {
            // A concurrent request with the same key won: answer as it did.
            tx.rollback().await?;
            let mut tx = state.db.begin().await?;
            let seen = records::idempotency_key(&mut tx, key, 0).await?;
            tx.rollback().await?;
            return match seen {
                Some(seen) => replay(&seen, &hash),
                None => Err(ApiError::internal(&"idempotency key vanished")),
            };
        }
    }
    tx.commit().await?;
    tracing::info!(operation = %operation_id, order_summary = %order_id, "ensure-refunds operation enqueued");
    Ok(created(&operation_id))
}

/// What "the same request" means for an `Idempotency-Key`: the order summary and the JSON
/// body's content — object keys sorted, whitespace gone, numbers as written — so a client
/// that re-serialises its retry differently is still recognised.
fn fingerprint(order_id: &SfId, bytes: &[u8]) -> Result<String, ApiError> {
    fn canonical(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut text = String::new();
    canonical(&Value::Object(body::object(bytes)?), &mut text);
    let mut h = Sha256::new();
    h.update(order_id.as_str().as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    Ok(hex::encode(h.finalize()))
}

fn replay(seen: &records::IdempotencyRecord, hash: &str) -> Result<Response, ApiError> {
    if seen.request_hash == hash {
        Ok(created(&seen.operation_id))
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            "This Idempotency-Key was already used with a different request",
        ))
    }
}

/// A request the admit step refused, as the client's error (or ours, for a store failure).
fn refused(refusal: Refusal, order_id: &SfId) -> ApiError {
    match refusal {
        Refusal::OrderNotFound => ApiError::not_found(),
        Refusal::Unmanaged(_) => invalid_input(format!(
            "Order summary {order_id} is UNMANAGED; refunds are only ensured for MANAGED order summaries"
        )),
        Refusal::CreditMemoNotOnOrder { credit_memo, order } => ApiError::bad_request(
            "INVALID_ID_FIELD",
            format!("Credit memo {credit_memo} does not belong to order summary {order}"),
        )
        .field("creditMemoId"),
        Refusal::CreditMemoUnrefundable { credit_memo, status } => invalid_input(format!(
            "Credit memo {credit_memo} has status {status} and cannot be refunded"
        )),
        Refusal::NoCreditMemoBalance(credit_memo) => invalid_input(format!(
            "Credit memo {credit_memo} has no balance left to refund"
        )),
        Refusal::InvoiceNotOnOrder { invoice, order } => ApiError::bad_request(
            "INVALID_ID_FIELD",
            format!("Invoice {invoice} does not belong to order summary {order}"),
        )
        .field("invoiceId"),
        Refusal::SummaryNotOnOrder { summary, order } => ApiError::bad_request(
            "INVALID_ID_FIELD",
            format!("Order payment summary {summary} does not belong to order summary {order}"),
        )
        .field("orderPaymentSummaryId"),
        Refusal::Amount {
            field,
            text,
            error,
            currency,
        } => invalid_input(body::amount_problem(field, &text, &error, currency)),
        Refusal::NotPositive => invalid_input("excessFundsAmount must be greater than 0"),
        Refusal::Negative => invalid_input("sequences.amount must not be negative"),
        Refusal::TooLarge => invalid_input("The requested amount is too large"),
        Refusal::AvailableTooLarge => {
            invalid_input("The order's available amounts are too large to add up")
        }
        Refusal::ExceedsAvailable {
            requested,
            available,
            currency,
        } => invalid_input(format!(
            "The amount to refund ({}) exceeds the total available to refund on the order's payment summaries ({})",
            crate::render::money(requested, currency.code()),
            crate::render::money(available, currency.code()),
        )),
        Refusal::Store(e) => ApiError::from(e),
    }
}

/// The request as the admit step takes it: amounts as the text the client sent.
fn admit_request(order_id: &SfId, input: Input) -> AdmitRequest {
    let text = |v: &Value| body::number_text(v).unwrap_or_default();
    AdmitRequest {
        order_id: order_id.clone(),
        credit_memo_id: input.credit_memo_id,
        excess_funds: input.excess_funds.as_ref().map(text),
        invoices: input.invoices,
        sequences: input
            .sequences
            .iter()
            .map(|(ops, amount)| (ops.clone(), text(amount)))
            .collect(),
        allow_partial: input.allow_partial,
    }
}
