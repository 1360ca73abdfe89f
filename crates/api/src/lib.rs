//! The HTTP API: Salesforce-compatible routes, request validation and the Salesforce JSON
//! shapes, which live only here.
//!
//! Routes stay thin: they parse raw input into validated values in one step, run one
//! transaction, and render. The API never calls a payment provider and never changes a
//! refund's money itself: it records requests for the workers, and hands a provider's
//! notification or a person's settlement to the queue's settlement code.
//!
//! [`server::serve`] serves the router with the timeouts and connection limit of
//! [`server::HttpLimits`]; every bound on a request is listed in README's "Limits".

pub mod auth;
mod body;
mod ensure_refunds;
mod error;
pub mod metrics;
pub mod openapi;
mod render;
pub mod security;
pub mod server;
mod sobjects;
mod soql;
pub mod tls;
mod version;
mod webhooks;

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use refunds_queue::QueueConfig;
use refunds_store::Db;
use serde_json::json;

pub use error::{json_response, ApiError};
pub use version::ApiVersion;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub queue: QueueConfig,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// Token lifetime and failed-login counters.
    pub auth: std::sync::Arc<auth::Auth>,
    /// The `instance_url` handed to clients; by default this request's scheme and host.
    pub public_url: Option<String>,
    /// Whether this server speaks HTTPS (for the default `instance_url`).
    pub tls: bool,
    /// The hosts a payment gateway may call (checked when a gateway is written).
    pub gateway_hosts: std::sync::Arc<refunds_gateway::HostPolicy>,
    /// Gateways found at start-up to break the security rules (reported by `/readyz`).
    pub gateway_violations: std::sync::Arc<Vec<security::Violation>>,
}

impl AppState {
    pub fn new(db: Db, queue: QueueConfig) -> AppState {
        AppState {
            db,
            queue,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            auth: std::sync::Arc::new(auth::Auth::new(Duration::from_secs(2 * 3600))),
            public_url: None,
            tls: false,
            gateway_hosts: Default::default(),
            gateway_violations: Default::default(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let data = Router::new()
        .route("/{version}", get(resources))
        .route("/{version}/query", get(soql::query).post(soql::query_posted))
        .route("/{version}/query/", get(soql::query).post(soql::query_posted))
        .route("/{version}/query/{locator}", get(soql::query_more))
        .route("/{version}/queryAll", get(soql::query).post(soql::query_posted))
        .route("/{version}/queryAll/", get(soql::query).post(soql::query_posted))
        .route("/{version}/queryAll/{locator}", get(soql::query_more))
        .route("/{version}/sobjects/{ty}", post(sobjects::create))
        // simple-salesforce creates records at `…/sobjects/{Type}/`.
        .route("/{version}/sobjects/{ty}/", post(sobjects::create))
        .route("/{version}/sobjects/{ty}/{id}", get(sobjects::read).patch(sobjects::update))
        .route(
            "/{version}/commerce/order-management/order-summaries/{id}/async-actions/ensure-refunds-async",
            post(ensure_refunds::ensure_refunds),
        )
        .route(
            "/{version}/commerce/order-management/order-payment-summaries",
            post(sobjects::create_order_payment_summary),
        );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/services/data", get(versions))
        .route("/openapi.json", get(openapi::document))
        .route("/services/oauth2/token", post(auth::token))
        .route("/webhooks/adyen", post(webhooks::adyen))
        .nest("/services/data", data)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "HTTP method not allowed for this resource",
    )
}

/// One log line per request: method, path (never the query: it may carry data), status, time.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = loggable_path(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method, %path, status = response.status().as_u16(),
        ms = (started.elapsed().as_secs_f64() * 100_000.0).round() / 100.0, "request"
    );
    response
}

/// The path without a SOQL locator's payload (it is the query, base64-encoded).
fn loggable_path(path: &str) -> String {
    for resource in ["/query/", "/queryAll/"] {
        if let Some(at) = path.find(resource) {
            let end = at + resource.len();
            if end < path.len() {
                return format!("{}{{locator}}", &path[..end]);
            }
        }
    }
    path.to_string()
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.db.is_migrated().await {
        json_response(StatusCode::OK, &json!({"status": "ok"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "migrating"}),
        )
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.gateway_violations.is_empty() || !state.db.is_migrated().await {
        return healthz(State(state)).await;
    }
    security::readiness(&state.gateway_violations)
}

async fn versions() -> Response {
    let list: Vec<_> = (version::OLDEST..=version::NEWEST)
        .map(|v| {
            let v = ApiVersion(v);
            json!({"label": v.label(), "url": format!("/services/data/{}", v.segment()), "version": format!("{}.0", v.0)})
        })
        .collect();
    json_response(StatusCode::OK, &serde_json::Value::Array(list))
}

async fn resources(
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Path(version) = path?;
    let v = ApiVersion::parse(&version)?;
    let base = format!("/services/data/{}", v.segment());
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "sobjects": format!("{base}/sobjects"),
            "query": format!("{base}/query"),
            "queryAll": format!("{base}/queryAll"),
            "commerce": format!("{base}/commerce"),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn logged_paths_leave_out_query_locators() {
        assert_eq!(
            loggable_path("/services/data/v58.0/query/01gMjAwMDpTRUxFQ1Q-2000"),
            "/services/data/v58.0/query/{locator}"
        );
        assert_eq!(
            loggable_path("/services/data/v58.0/queryAll/01gX-1"),
            "/services/data/v58.0/queryAll/{locator}"
        );
        for kept in [
            "/services/data/v58.0/query/",
            "/services/data/v58.0/sobjects/Refund/x",
        ] {
            assert_eq!(loggable_path(kept), kept);
        }
    }
}
