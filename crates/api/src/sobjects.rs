//! sObject REST: `GET`/`PATCH /sobjects/{Type}/{id}`, `POST /sobjects/{Type}` (ingest), and
//! the Connect `order-payment-summaries` resource.
//!
//! Permissions: any valid token may ingest orders, read, and settle what a person may
//! settle; only an administrative principal ([`Role::Admin`]) may create or change a
//! `PaymentGateway` (a gateway decides where the service sends a provider secret). A
//! gateway may name only `REFUNDS_SECRET_…` variables and call only allowed hosts.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use refunds_domain::{Currency, ObjectType, SfId};
use refunds_gateway::{is_secret_env_name, HostPolicy, Registry, SECRET_ENV_PREFIX};
use refunds_queue::ByHand;
use refunds_store::records::{self, Value as Stored};
use refunds_store::schema::{object_def, Create, FieldDef, FieldKind, ObjectDef};
use refunds_store::{now_ms, Tx};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Role;
use crate::body;
use crate::error::{json_response, ApiError};
use crate::render;
use crate::version::ApiVersion;
use crate::AppState;

/// Objects an upstream order system may create.
const CREATABLE: &[ObjectType] = &[
    ObjectType::OrderSummary,
    ObjectType::PaymentGateway,
    ObjectType::Payment,
    ObjectType::Invoice,
    ObjectType::CreditMemo,
];

fn object_type(name: &str) -> Result<ObjectType, ApiError> {
    ObjectType::from_api_name(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!(
                "The requested resource does not exist: sObject type '{name}' is not supported"
            ),
        )
    })
}

#[derive(Deserialize)]
pub struct ReadQuery {
    fields: Option<String>,
}

pub async fn read(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((version, ty, id)) = path?;
    let Query(query) = query?;
    let version = ApiVersion::parse(&version)?;
    let ty = object_type(&ty)?;
    let def = object_def(ty);
    let id = SfId::parse(&id).map_err(|_| {
        ApiError::bad_request(
            "MALFORMED_ID",
            format!("{ty} ID: id value of incorrect type: {id}"),
        )
        .field("Id")
    })?;
    if id.object_type() != Some(ty) {
        return Err(ApiError::not_found());
    }
    let fields = match query
        .fields
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        None => None,
        Some(list) => Some(select_fields(def, list)?),
    };
    let record = records::get(&state.db, ty, id.as_str(), fields.as_deref())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(json_response(
        StatusCode::OK,
        &render::record(&record, version),
    ))
}

fn select_fields(def: &'static ObjectDef, list: &str) -> Result<Vec<&'static FieldDef>, ApiError> {
    let mut fields = vec![&def.fields[0]];
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let field = def.field(name).ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_FIELD",
                format!("No such column '{name}' on entity '{}'", def.ty),
            )
            .field(name)
        })?;
        if !fields.iter().any(|f| std::ptr::eq(*f, field)) {
            fields.push(field);
        }
    }
    Ok(fields)
}

/// A field's value by the schema's spelling (names are case-insensitive); null is absent.
fn given<'a>(input: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    input
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_null())
        .map(|(_, v)| v)
}

fn created(id: &str) -> Response {
    json_response(
        StatusCode::CREATED,
        &json!({"id": id, "success": true, "errors": []}),
    )
}

fn integrity(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("FIELD_INTEGRITY_EXCEPTION", message).field(field)
}

/// Objects only an administrative principal may create or change.
const ADMIN_ONLY: &[ObjectType] = &[ObjectType::PaymentGateway];

/// Refuses a write of an administrative object by a principal that is not an admin
/// (403, as Salesforce answers a user without the object permission). A request that
/// reached a handler without a role (no bearer check in front) is not an admin.
fn require_admin(ty: ObjectType, role: Option<Extension<Role>>) -> Result<(), ApiError> {
    if !ADMIN_ONLY.contains(&ty) || role.is_some_and(|Extension(r)| r == Role::Admin) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_ACCESS_OR_READONLY",
        format!("insufficient access rights on object {ty}: creating or changing it needs an administrative client or user"),
    ))
}

pub async fn create(
    State(state): State<AppState>,
    role: Option<Extension<Role>>,
    path: Result<Path<(String, String)>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path((version, ty)) = path?;
    ApiVersion::parse(&version)?;
    let ty = object_type(&ty)?;
    require_admin(ty, role)?;
    if !CREATABLE.contains(&ty) {
        return Err(ApiError::bad_request(
            "INVALID_TYPE",
            format!("Records of type {ty} are created by the service, not through this API"),
        ));
    }
    let def = object_def(ty);
    let input = body::object(&bytes?)?;
    for key in input.keys() {
        match def.field(key) {
            None => {
                return Err(ApiError::bad_request(
                    "INVALID_FIELD",
                    format!("No such column '{key}' on sobject of type {ty}"),
                )
                .field(key))
            }
            Some(f) if f.create == Create::No && f.name != "CurrencyIsoCode" => {
                return Err(ApiError::bad_request(
                    "INVALID_FIELD",
                    format!("Field {} of {ty} is not writable", f.name),
                )
                .field(f.name))
            }
            Some(_) => {}
        }
    }
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let currency = resolve_currency(&mut tx, ty, &input).await?;
    let id = SfId::generate(ty).into_string();
    let mut values: Vec<(&'static str, Stored)> = vec![("id", Stored::Text(id.clone()))];
    for field in def.fields {
        let raw = given(&input, field.name);
        let value = match (field.create, raw) {
            (Create::No, _) => continue,
            (Create::Required, None) => {
                return Err(ApiError::bad_request(
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{}]", field.name),
                )
                .field(field.name))
            }
            (Create::Optional(None), None) => continue,
            (Create::Optional(Some(default)), None) => {
                convert(field, &Value::String(default.into()), currency)?
            }
            (_, Some(v)) => convert(field, v, currency)?,
        };
        if field.name == "CurrencyIsoCode" {
            continue;
        }
        values.push((field.sql, value));
    }
    check_references(&mut tx, ty, &mut values, &state.gateway_hosts).await?;
    if let Some(c) = currency {
        values.push(("currency_iso_code", Stored::Text(c.code().to_string())));
    }
    values.push(("created_date", Stored::Int(now)));
    values.push(("last_modified_date", Stored::Int(now)));
    records::insert(&mut tx, ty, &values).await?;
    tx.commit().await?;
    Ok(created(&id))
}

/// The record's currency: given, or the order summary's for records that belong to one,
/// or USD. Records that belong to an order summary must use its currency.
async fn resolve_currency(
    tx: &mut Tx,
    ty: ObjectType,
    input: &Map<String, Value>,
) -> Result<Option<Currency>, ApiError> {
    if !object_def(ty).has_currency() {
        return Ok(None);
    }
    let explicit = match given(input, "CurrencyIsoCode") {
        None => None,
        Some(v) => {
            let code = body::string("CurrencyIsoCode", v)?;
            Some(Currency::parse(code).map_err(|_| {
                integrity("CurrencyIsoCode", format!("Unknown currency code: {code}"))
            })?)
        }
    };
    if let Some(order) = given(input, "ReferenceEntityId") {
        let order_id = body::string("ReferenceEntityId", order)?;
        let order_id = SfId::parse_as(order_id, ObjectType::OrderSummary).map_err(|_| {
            integrity(
                "ReferenceEntityId",
                format!("ReferenceEntityId {order_id} is not an order summary id"),
            )
        })?;
        let head = records::order_summary_head(tx, order_id.as_str())
            .await?
            .ok_or_else(|| {
                integrity(
                    "ReferenceEntityId",
                    format!("Order summary {order_id} does not exist"),
                )
            })?;
        let order_currency = Currency::parse(&head.currency).map_err(|e| ApiError::internal(&e))?;
        if explicit.is_some_and(|c| c != order_currency) {
            return Err(integrity(
                "CurrencyIsoCode",
                format!(
                    "The currency must be the order summary's ({})",
                    head.currency
                ),
            ));
        }
        return Ok(Some(order_currency));
    }
    match explicit {
        Some(c) => Ok(Some(c)),
        None => Ok(Some(
            Currency::parse("USD").map_err(|e| ApiError::internal(&e))?,
        )),
    }
}

/// Converts one JSON value to its stored form, per the field's kind.
fn convert(
    field: &FieldDef,
    value: &Value,
    currency: Option<Currency>,
) -> Result<Stored, ApiError> {
    match field.kind {
        FieldKind::Money => {
            let currency =
                currency.ok_or_else(|| ApiError::internal(&"money field without currency"))?;
            let minor =
                body::amount(field.name, value, currency).map_err(|m| integrity(field.name, m))?;
            if minor < 0 {
                return Err(integrity(
                    field.name,
                    format!("{} must not be negative", field.name),
                ));
            }
            Ok(Stored::Int(minor))
        }
        FieldKind::Picklist(allowed) => {
            let text = body::string(field.name, value)?;
            allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(text))
                .map(|a| Stored::Text((*a).to_string()))
                .ok_or_else(|| {
                    integrity(
                        field.name,
                        format!(
                            "{}: bad value '{text}' (allowed: {})",
                            field.name,
                            allowed.join(", ")
                        ),
                    )
                })
        }
        FieldKind::Reference(ty) => {
            let text = body::string(field.name, value)?;
            SfId::parse_as(text, ty)
                .map(|id| Stored::Text(id.into_string()))
                .map_err(|_| {
                    integrity(
                        field.name,
                        format!("{}: {text} is not a valid {ty} id", field.name),
                    )
                })
        }
        FieldKind::Text | FieldKind::Id => {
            let text = body::string(field.name, value)?;
            if text.chars().count() > 255 {
                return Err(integrity(
                    field.name,
                    format!("{} is longer than 255 characters", field.name),
                ));
            }
            Ok(Stored::Text(text.to_string()))
        }
        FieldKind::Int => value
            .as_i64()
            .filter(|v| (1..=600_000).contains(v))
            .map(Stored::Int)
            .ok_or_else(|| {
                integrity(
                    field.name,
                    format!("{} must be a whole number from 1 to 600000", field.name),
                )
            }),
        FieldKind::DateTime => Err(ApiError::internal(&"creatable field of a read-only kind")),
    }
}

fn value_of<'a>(values: &'a [(&'static str, Stored)], column: &str) -> Option<&'a Stored> {
    values.iter().find(|(c, _)| *c == column).map(|(_, v)| v)
}

/// Type-specific rules: references must exist, balances fit their totals, providers exist.
async fn check_references(
    tx: &mut Tx,
    ty: ObjectType,
    values: &mut Vec<(&'static str, Stored)>,
    hosts: &HostPolicy,
) -> Result<(), ApiError> {
    match ty {
        ObjectType::Payment => {
            let gateway = value_of(values, "payment_gateway_id")
                .and_then(Stored::as_text)
                .unwrap_or_default();
            if !records::exists(tx, ObjectType::PaymentGateway, gateway).await? {
                return Err(integrity(
                    "PaymentGatewayId",
                    format!("Payment gateway {gateway} does not exist"),
                ));
            }
            if value_of(values, "amount").and_then(Stored::as_int) == Some(0) {
                return Err(integrity("Amount", "Amount must be greater than 0"));
            }
        }
        ObjectType::Invoice | ObjectType::CreditMemo => {
            let total = value_of(values, "total_amount_with_tax")
                .and_then(Stored::as_int)
                .unwrap_or(0);
            match value_of(values, "balance").and_then(Stored::as_int) {
                None => values.push(("balance", Stored::Int(total))),
                Some(balance) if balance > total => {
                    return Err(integrity(
                        "Balance",
                        "Balance must not exceed TotalAmountWithTax",
                    ));
                }
                Some(_) => {}
            }
        }
        ObjectType::PaymentGateway => {
            let provider = value_of(values, "provider_type")
                .and_then(Stored::as_text)
                .unwrap_or_default()
                .to_string();
            if !Registry::supports(&provider) {
                return Err(integrity(
                    "ProviderType",
                    format!("Provider type {provider} is not supported"),
                ));
            }
            for (column, field) in [
                ("merchant_credential_env", "MerchantCredentialEnv"),
                ("webhook_hmac_key_env", "WebhookHmacKeyEnv"),
            ] {
                if let Some(env) = value_of(values, column).and_then(Stored::as_text) {
                    if !is_secret_env_name(env) {
                        return Err(integrity(
                            field,
                            format!("{field} names the environment variable holding the secret, which must be {SECRET_ENV_PREFIX} followed by A-Z, 0-9 or _; the secret itself is never stored"),
                        ));
                    }
                }
            }
            if provider != "Simulator" && value_of(values, "merchant_credential_env").is_none() {
                return Err(integrity(
                    "MerchantCredentialEnv",
                    format!("{provider} gateways need MerchantCredentialEnv: the environment variable holding the API key"),
                ));
            }
            if provider == "Adyen" && value_of(values, "merchant_account").is_none() {
                return Err(integrity(
                    "MerchantAccount",
                    "Adyen gateways need a MerchantAccount",
                ));
            }
            if let Some(mapping) = value_of(values, "result_code_mapping").and_then(Stored::as_text)
            {
                refunds_gateway::parse_mapping(mapping)
                    .map_err(|e| integrity("ResultCodeMapping", e.to_string()))?;
            }
            let config = refunds_gateway::GatewayConfig {
                provider_type: provider.clone(),
                base_url: value_of(values, "base_url")
                    .and_then(Stored::as_text)
                    .map(str::to_string),
                ..Default::default()
            };
            if let Some(url) = refunds_gateway::effective_base_url(&config) {
                hosts
                    .check_url(url)
                    .map_err(|e| integrity("BaseUrl", format!("BaseUrl {url}: {e}")))?;
            }
        }
        _ => {}
    }
    Ok(())
}

pub async fn update(
    State(state): State<AppState>,
    role: Option<Extension<Role>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path((version, ty, id)) = path?;
    ApiVersion::parse(&version)?;
    let ty = object_type(&ty)?;
    require_admin(ty, role)?;
    if ty != ObjectType::ProcessException && ty != ObjectType::Refund {
        return Err(ApiError::bad_request(
            "INVALID_TYPE",
            format!("Records of type {ty} cannot be updated through this API"),
        ));
    }
    let id = body::id("Id", &id, ty).map_err(|_| ApiError::not_found())?;
    let input = body::object(&bytes?)?;
    let mut status = None;
    for (key, value) in &input {
        if !key.eq_ignore_ascii_case("Status") {
            return Err(ApiError::bad_request(
                "INVALID_FIELD",
                format!("Only Status of a {ty} can be updated, not '{key}'"),
            )
            .field(key));
        }
        // As on create, null is "not given": Status cannot be cleared.
        if value.is_null() {
            continue;
        }
        let field = object_def(ty)
            .field("Status")
            .ok_or_else(|| ApiError::internal(&"schema lacks Status"))?;
        status = Some(convert(field, value, None)?);
    }
    let Some(Stored::Text(status)) = status else {
        return Err(ApiError::bad_request(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [Status]",
        )
        .field("Status"));
    };
    if ty == ObjectType::Refund {
        return settle_by_hand(&state, id.as_str(), &status).await;
    }
    let mut tx = state.db.begin().await?;
    if !records::set_process_exception_status(&mut tx, id.as_str(), &status, now_ms()).await? {
        return Err(ApiError::not_found());
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PATCH` of a Refund's Status: a person settles a refund that was handed to them (or
/// is `Pending`) after checking the provider: `Processed` (it was refunded) or
/// `Canceled` (it was not). Anything else is refused and changes nothing.
async fn settle_by_hand(state: &AppState, id: &str, status: &str) -> Result<Response, ApiError> {
    let refunded = match status.to_ascii_lowercase().as_str() {
        "processed" => true,
        "canceled" => false,
        _ => {
            return Err(ApiError::bad_request(
                "INVALID_INPUT",
                format!("A refund is settled by hand as Processed or Canceled, not {status}"),
            )
            .field("Status"))
        }
    };
    let refused = |why: String| ApiError::bad_request("INVALID_INPUT", why).field("Status");
    match refunds_queue::settle_refund_by_hand(&state.db, id, refunded)
        .await
        .map_err(|e| ApiError::internal(&e))?
    {
        ByHand::Settled => {}
        ByHand::NotFound => return Err(ApiError::not_found()),
        ByHand::Refused(why) => return Err(refused(why)),
        ByHand::SettledMeanwhile => {
            return Err(refused(format!("Refund {id} was settled meanwhile")))
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn create_order_payment_summary(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(version) = path?;
    ApiVersion::parse(&version)?;
    let input: Map<String, Value> = body::object(&bytes?)?;
    if let Some(key) = input
        .keys()
        .find(|k| !matches!(k.as_str(), "orderSummaryId" | "paymentIds"))
    {
        return Err(ApiError::json_parser(format!(
            "Unrecognized field \"{key}\""
        )));
    }
    let order = input
        .get("orderSummaryId")
        .filter(|v| !v.is_null())
        .ok_or_else(|| {
            ApiError::bad_request("REQUIRED_FIELD_MISSING", "orderSummaryId is required")
                .field("orderSummaryId")
        })?;
    let order = body::id(
        "orderSummaryId",
        body::string("orderSummaryId", order)?,
        ObjectType::OrderSummary,
    )?;
    let ids = match input.get("paymentIds") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                "REQUIRED_FIELD_MISSING",
                "paymentIds must list at least one payment",
            )
            .field("paymentIds"))
        }
        Some(_) => {
            return Err(ApiError::json_parser(
                "Cannot deserialize paymentIds: expected an array",
            ))
        }
    };
    let mut payment_ids = Vec::with_capacity(ids.len());
    for raw in ids {
        let id = body::id(
            "paymentIds",
            body::string("paymentIds", raw)?,
            ObjectType::Payment,
        )?
        .into_string();
        if !payment_ids.contains(&id) {
            payment_ids.push(id);
        }
    }

    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let head = records::order_summary_head(&mut tx, order.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_ID_FIELD",
                format!("Order summary {order} does not exist"),
            )
            .field("orderSummaryId")
        })?;
    let payments = records::payment_heads(&mut tx, &payment_ids).await?;
    if let Some(missing) = payment_ids
        .iter()
        .find(|id| !payments.iter().any(|p| &p.id == *id))
    {
        return Err(ApiError::bad_request(
            "INVALID_ID_FIELD",
            format!("Payment {missing} does not exist"),
        )
        .field("paymentIds"));
    }
    if let Some(p) = payments.iter().find(|p| p.summary_id.is_some()) {
        return Err(ApiError::bad_request(
            "INVALID_INPUT",
            format!(
                "Payment {} already belongs to an order payment summary",
                p.id
            ),
        ));
    }
    if let Some(p) = payments.iter().find(|p| p.currency != head.currency) {
        return Err(integrity(
            "paymentIds",
            format!(
                "Payment {} is in {}, the order summary in {}",
                p.id, p.currency, head.currency
            ),
        ));
    }
    let id = SfId::generate(ObjectType::OrderPaymentSummary).into_string();
    if !records::create_order_payment_summary(
        &mut tx,
        &id,
        order.as_str(),
        &payments,
        &head.currency,
        now,
    )
    .await?
    {
        return Err(ApiError::bad_request(
            "INVALID_INPUT",
            "A payment was attached to another summary concurrently",
        ));
    }
    tx.commit().await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"orderPaymentSummaryId": id, "errors": [], "success": true}),
    ))
}
