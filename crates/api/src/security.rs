//! The start-up check of stored payment gateways against the security rules: a gateway
//! written before the rules (or under a longer `--gateway-hosts` list) keeps existing, but
//! `serve` names it in a WARN line and in `/readyz`, and its refunds are not sent
//! (the gateway crate refuses to build an adapter for a host that is not allowed, and
//! never reads a variable that is not named `REFUNDS_SECRET_…`).

use axum::http::StatusCode;
use axum::response::Response;
use refunds_gateway::{rule_violations, GatewayConfig, HostPolicy};
use refunds_store::{auth as sql, Db, StoreError};
use serde_json::json;

use crate::error::json_response;

/// One gateway that breaks the rules, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub gateway_id: String,
    pub gateway_name: String,
    /// (field, what is wrong with it)
    pub problems: Vec<(&'static str, String)>,
}

/// Every stored gateway that breaks the rules under `hosts`.
pub async fn scan(db: &Db, hosts: &HostPolicy) -> Result<Vec<Violation>, StoreError> {
    let gateways = sql::gateways_security(db).await?;
    Ok(gateways
        .into_iter()
        .filter_map(|g| {
            let config = GatewayConfig {
                provider_type: g.provider_type,
                base_url: g.base_url,
                credential_env: g.merchant_credential_env,
                ..GatewayConfig::default()
            };
            let problems = rule_violations(&config, g.webhook_hmac_key_env.as_deref(), hosts);
            (!problems.is_empty()).then_some(Violation {
                gateway_id: g.id,
                gateway_name: g.name,
                problems,
            })
        })
        .collect())
}

/// One WARN line per gateway that breaks the rules (names of variables and hosts only:
/// no gateway field holds a secret).
pub fn warn(violations: &[Violation]) {
    for v in violations {
        let problems: Vec<&str> = v.problems.iter().map(|(_, p)| p.as_str()).collect();
        tracing::warn!(
            gateway = %v.gateway_id, name = %v.gateway_name, problems = %problems.join("; "),
            "payment gateway breaks the security rules: its refunds are not sent until it is fixed (README, Security)"
        );
    }
}

/// `/readyz` while some gateway breaks the rules: still 200 (the service works for every
/// other gateway), with `"status": "degraded"` and the list.
pub fn readiness(violations: &[Violation]) -> Response {
    let list: Vec<_> = violations
        .iter()
        .map(|v| {
            json!({
                "id": v.gateway_id,
                "name": v.gateway_name,
                "problems": v.problems.iter().map(|(field, problem)| json!({"field": field, "problem": problem})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"status": "degraded", "gatewayViolations": list}),
    )
}
