//! Payment providers: the [`Provider`] trait every adapter implements, the outcome it
//! answers with, and the [`Registry`] that picks an adapter for a PaymentGateway record.
//!
//! An adapter only builds requests and maps answers; it never touches the database and
//! never decides what to refund. Whatever it puts in an [`Outcome`]'s raw request and
//! response ends up in the gateway log, so secrets must be removed before that.

mod simulator;

use std::sync::Arc;

use async_trait::async_trait;
use refunds_domain::SfResultCode;

pub use simulator::{Simulator, SimulatorConfig};

/// One refund asked of a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// The Refund's id: the idempotency key, the same on every attempt.
    pub idempotency_key: String,
    /// The provider's id of the captured payment (Payment.GatewayRefNumber).
    pub payment_ref: Option<String>,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    pub operation_id: String,
}

/// What a provider said, mapped to a Salesforce result code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub code: SfResultCode,
    pub gateway_result_code: Option<String>,
    pub message: Option<String>,
    /// The provider's id of the refund.
    pub gateway_ref: Option<String>,
    pub gateway_date_ms: Option<i64>,
    /// Success whose money settles later (the Refund stays `Pending`).
    pub settles_later: bool,
    /// Raw request and response for the gateway log, secrets removed.
    pub raw_request: Option<String>,
    pub raw_response: Option<String>,
}

impl Outcome {
    /// An outcome with just a code and a message (used for transport failures).
    pub fn bare(code: SfResultCode, message: impl Into<String>) -> Outcome {
        Outcome {
            code,
            gateway_result_code: None,
            message: Some(message.into()),
            gateway_ref: None,
            gateway_date_ms: None,
            settles_later: false,
            raw_request: None,
            raw_response: None,
        }
    }
}

/// The answer to "what became of the refund with this key?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The provider knows the refund; the outcome is final (or settles later).
    Found(Outcome),
    /// The provider has no refund with this key: the request never arrived, so sending
    /// it again (same key) is safe. The outcome only describes the lookup for the log.
    NotFound(Outcome),
    /// The lookup itself failed; try again later.
    Unknown(Outcome),
}

/// A payment provider adapter.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Asks for a refund. Must be safe to repeat with the same idempotency key.
    async fn refund(&self, request: &RefundRequest) -> Outcome;
    /// Looks a refund up by its idempotency key.
    async fn lookup(&self, request: &RefundRequest) -> Lookup;
}

/// The gateway fields an adapter is chosen and configured by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    pub provider_type: String,
    pub base_url: Option<String>,
    pub credential_env: Option<String>,
}

/// Provider types this build can call.
pub const SUPPORTED_PROVIDER_TYPES: &[&str] = &["Simulator"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("payment provider type {0} is not supported by this build (supported: Simulator)")]
pub struct UnsupportedProvider(pub String);

/// Hands out adapters by PaymentGateway `ProviderType`.
#[derive(Clone)]
pub struct Registry {
    simulator: Arc<Simulator>,
}

impl Registry {
    pub fn new(simulator: SimulatorConfig) -> Registry {
        Registry {
            simulator: Arc::new(Simulator::new(simulator)),
        }
    }

    pub fn supports(provider_type: &str) -> bool {
        SUPPORTED_PROVIDER_TYPES.contains(&provider_type)
    }

    pub fn provider(
        &self,
        config: &GatewayConfig,
    ) -> Result<Arc<dyn Provider>, UnsupportedProvider> {
        match config.provider_type.as_str() {
            "Simulator" => Ok(self.simulator.clone()),
            other => Err(UnsupportedProvider(other.to_string())),
        }
    }

    /// The built-in simulator (tests inspect its ledger).
    pub fn simulator(&self) -> &Arc<Simulator> {
        &self.simulator
    }
}
