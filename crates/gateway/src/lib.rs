//! Payment providers: the [`Provider`] trait every adapter implements, the outcome it
//! answers with, and the [`Registry`] that picks an adapter for a PaymentGateway record and
//! holds each gateway's call limits ([`limits`]).
//!
//! An adapter only builds requests and maps answers; it never touches the database and
//! never decides what to refund. Whatever it puts in an [`Outcome`]'s raw request and
//! response ends up in the gateway log, so secrets must be removed before that — in every
//! encoding [`redact`] knows — and what is kept is bounded. A gateway is called only at a
//! host its [`HostPolicy`] allows, and its secret is read only from a `REFUNDS_SECRET_…`
//! variable.

pub mod adyen;
pub mod hosts;
mod http;
pub mod limits;
pub mod redact;
mod simulator;
pub mod stripe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use refunds_domain::SfResultCode;

pub use hosts::{HostError, HostPolicy, DEFAULT_GATEWAY_HOSTS};
pub use http::{is_secret_env_name, secret_from_env, SecretError, SECRET_ENV_PREFIX};
pub use limits::GatewayLimits;
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

impl Lookup {
    /// The outcome that describes this lookup, whatever it found.
    pub fn outcome_mut(&mut self) -> &mut Outcome {
        match self {
            Lookup::Found(o) | Lookup::NotFound(o) | Lookup::Unknown(o) => o,
        }
    }
}

/// A payment provider adapter.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Asks for a refund. Must be safe to repeat with the same idempotency key.
    async fn refund(&self, request: &RefundRequest) -> Outcome;
    /// Looks a refund up by its idempotency key.
    async fn lookup(&self, request: &RefundRequest) -> Lookup;
    /// Whether a refund that settles later is followed by looking it up (true), or by the
    /// provider's notification (false).
    ///
    /// This and the two below have no default on purpose: a wrapper around another provider
    /// (a limiter, a counter) that forgot to forward one would silently answer a default,
    /// and a default key lifetime of "for ever" would skip the lookup before a re-send.
    fn polls_settlement(&self) -> bool;
    /// How long the provider remembers an idempotency key after its first use (`None`: for
    /// ever). A request sent again later than this may be taken for a new refund, so a
    /// refund first sent that long ago is looked up before it is sent again.
    fn key_lifetime(&self) -> Option<Duration>;
    /// Whether [`Provider::lookup`] finds a refund by the reference the service put on it,
    /// however old its key (true); false when a lookup replays the request under its key
    /// (Adyen), which past [`Provider::key_lifetime`] proves nothing and could pay twice.
    fn lookup_by_reference(&self) -> bool;
}

/// The gateway fields an adapter is chosen and configured by.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GatewayConfig {
    pub provider_type: String,
    pub base_url: Option<String>,
    /// The name of the environment variable holding the provider secret.
    pub credential_env: Option<String>,
    pub merchant_account: Option<String>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    /// JSON object from provider result codes to Salesforce result codes, applied on top
    /// of the adapter's own mapping.
    pub result_code_mapping: Option<String>,
    /// The PaymentGateway's id: adapters of one gateway share its [`limits`].
    pub gateway_id: Option<String>,
    pub limits: GatewayLimits,
}

/// Default HTTP timeouts of provider calls.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Provider types this build can call.
pub const SUPPORTED_PROVIDER_TYPES: &[&str] = &["Simulator", "Stripe", "Adyen"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("payment provider type {0} is not supported (supported: Simulator, Stripe, Adyen)")]
    UnsupportedProvider(String),
    #[error(
        "ResultCodeMapping must be a JSON object of provider code to one of {codes}: {0}",
        codes = "Success, Decline, RequiresReview, Indeterminate, PermanentFail, SystemError, ValidationError"
    )]
    BadMapping(String),
    #[error("the gateway may not be called: {0}")]
    Host(#[from] HostError),
    #[error("cannot build the provider HTTP client: {0}")]
    HttpClient(String),
}

/// Parses a gateway's `ResultCodeMapping` (checked at ingest, applied on every answer).
pub fn parse_mapping(text: &str) -> Result<HashMap<String, SfResultCode>, ConfigError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ConfigError::BadMapping(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| ConfigError::BadMapping("not an object".into()))?;
    object
        .iter()
        .map(|(k, v)| {
            let code = v
                .as_str()
                .and_then(|s| s.parse::<SfResultCode>().ok())
                .ok_or_else(|| ConfigError::BadMapping(format!("{k}: {v}")))?;
            Ok((k.clone(), code))
        })
        .collect()
}

/// The URL a gateway's adapter calls: its `BaseUrl`, or the provider's public API.
/// `None` for the built-in simulator, which makes no network call.
pub fn effective_base_url(config: &GatewayConfig) -> Option<&str> {
    let default = match config.provider_type.as_str() {
        "Stripe" => stripe::DEFAULT_BASE_URL,
        "Adyen" => adyen::DEFAULT_BASE_URL,
        _ => return None,
    };
    Some(config.base_url.as_deref().unwrap_or(default))
}

/// What is wrong with a gateway under the security rules, as (field, problem): a secret
/// variable not named `REFUNDS_SECRET_…`, or a URL whose host is not allowed. Empty when
/// the gateway obeys them. (`webhook_env` is the gateway's `WebhookHmacKeyEnv`.)
pub fn rule_violations(
    config: &GatewayConfig,
    webhook_env: Option<&str>,
    hosts: &HostPolicy,
) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    for (field, env) in [
        ("MerchantCredentialEnv", config.credential_env.as_deref()),
        ("WebhookHmacKeyEnv", webhook_env),
    ] {
        if let Some(env) = env.filter(|e| !is_secret_env_name(e)) {
            problems.push((
                field,
                format!("{field} {env} does not start with {SECRET_ENV_PREFIX} (followed by A-Z, 0-9, _)"),
            ));
        }
    }
    if let Some(url) = effective_base_url(config) {
        if let Err(e) = hosts.check_url(url) {
            problems.push(("BaseUrl", e.to_string()));
        }
    }
    problems
}

/// Hands out adapters by PaymentGateway `ProviderType`; shares one pooled HTTP client per
/// connect timeout, each resolving names through the host policy, and one
/// [`limits::Limiter`] per gateway id.
#[derive(Clone)]
pub struct Registry {
    simulator: Arc<Simulator>,
    hosts: Arc<HostPolicy>,
    clients: Arc<Mutex<HashMap<Duration, reqwest::Client>>>,
    limiters: Arc<Mutex<HashMap<String, Arc<limits::Limiter>>>>,
}

impl Registry {
    /// Builds the registry and its default HTTP client, so that a client that cannot be
    /// built fails at start-up rather than at the first refund.
    pub fn new(simulator: SimulatorConfig, hosts: HostPolicy) -> Result<Registry, ConfigError> {
        let hosts = Arc::new(hosts);
        let default = http::client(DEFAULT_CONNECT_TIMEOUT, &hosts)?;
        Ok(Registry {
            simulator: Arc::new(Simulator::new(simulator)),
            hosts,
            clients: Arc::new(Mutex::new(HashMap::from([(
                DEFAULT_CONNECT_TIMEOUT,
                default,
            )]))),
            limiters: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub fn supports(provider_type: &str) -> bool {
        SUPPORTED_PROVIDER_TYPES.contains(&provider_type)
    }

    /// The hosts gateways may call.
    pub fn hosts(&self) -> &HostPolicy {
        &self.hosts
    }

    fn client(&self, connect_timeout: Duration) -> Result<reqwest::Client, ConfigError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&connect_timeout) {
            return Ok(client.clone());
        }
        let client = http::client(connect_timeout, &self.hosts)?;
        clients.insert(connect_timeout, client.clone());
        Ok(client)
    }

    /// The adapter for a gateway. A gateway whose URL's host is not allowed gets none:
    /// the check at write time is repeated here because the list may have changed since,
    /// and because a literal address in the URL is never resolved by the guarded resolver.
    pub fn provider(&self, config: &GatewayConfig) -> Result<Arc<dyn Provider>, ConfigError> {
        let mapping = match &config.result_code_mapping {
            Some(text) => parse_mapping(text)?,
            None => HashMap::new(),
        };
        if let Some(url) = effective_base_url(config) {
            self.hosts.check_url(url)?;
        }
        let connect = config.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let inner: Arc<dyn Provider> = match config.provider_type.as_str() {
            "Simulator" => self.simulator.clone(),
            "Stripe" => Arc::new(stripe::Stripe::new(self.client(connect)?, config)),
            "Adyen" => Arc::new(adyen::Adyen::new(self.client(connect)?, config)),
            other => return Err(ConfigError::UnsupportedProvider(other.to_string())),
        };
        let inner: Arc<dyn Provider> = match self.limiter(config) {
            Some(limiter) => Arc::new(limits::Limited { inner, limiter }),
            None => inner,
        };
        if mapping.is_empty() {
            Ok(inner)
        } else {
            Ok(Arc::new(Remapped { inner, mapping }))
        }
    }

    /// The limiter of the config's gateway, shared by every adapter handed out for that
    /// gateway id (`None` when it sets no limit). A gateway whose limits changed gets a new
    /// limiter; calls admitted under the old one finish under it.
    pub fn limiter(&self, config: &GatewayConfig) -> Option<Arc<limits::Limiter>> {
        let key = config.gateway_id.clone().unwrap_or_default();
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        if config.limits.is_unlimited() {
            limiters.remove(&key);
            return None;
        }
        let wanted = Arc::new(limits::Limiter::new(config.limits));
        let limiter = limiters.entry(key).or_insert_with(|| wanted.clone());
        if limiter.limits() != wanted.limits() {
            *limiter = wanted;
        }
        Some(limiter.clone())
    }

    /// The built-in simulator (tests inspect its ledger).
    pub fn simulator(&self) -> &Arc<Simulator> {
        &self.simulator
    }
}

/// A gateway's own result-code mapping, applied over its adapter's.
struct Remapped {
    inner: Arc<dyn Provider>,
    mapping: HashMap<String, SfResultCode>,
}

impl Remapped {
    fn apply(&self, mut outcome: Outcome) -> Outcome {
        if let Some(code) = outcome
            .gateway_result_code
            .as_ref()
            .and_then(|c| self.mapping.get(c))
        {
            outcome.code = *code;
        }
        outcome
    }
}

#[async_trait]
impl Provider for Remapped {
    async fn refund(&self, request: &RefundRequest) -> Outcome {
        self.apply(self.inner.refund(request).await)
    }

    async fn lookup(&self, request: &RefundRequest) -> Lookup {
        match self.inner.lookup(request).await {
            Lookup::Found(o) => Lookup::Found(self.apply(o)),
            other => other,
        }
    }

    fn polls_settlement(&self) -> bool {
        self.inner.polls_settlement()
    }

    fn key_lifetime(&self) -> Option<Duration> {
        self.inner.key_lifetime()
    }

    fn lookup_by_reference(&self) -> bool {
        self.inner.lookup_by_reference()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refunds_domain::ProviderType;

    /// The store reads a gateway's `ProviderType` into the domain's enum: every value of it
    /// has an adapter here, and every adapter a value there.
    #[test]
    fn every_provider_type_has_an_adapter() {
        let registry = Registry::new(SimulatorConfig::default(), HostPolicy::with_loopback())
            .expect("an HTTP client");
        for &p in ProviderType::ALL {
            assert!(Registry::supports(p.as_str()), "{p}");
            let config = GatewayConfig {
                provider_type: p.as_str().to_string(),
                ..GatewayConfig::default()
            };
            assert!(registry.provider(&config).is_ok(), "{p}");
        }
        for name in SUPPORTED_PROVIDER_TYPES {
            assert!(name.parse::<ProviderType>().is_ok(), "{name}");
        }
    }
}
