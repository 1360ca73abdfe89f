//! The HTTP plumbing every HTTP adapter shares: the pooled client, classifying transport
//! failures, reading secrets (from `REFUNDS_SECRET_…` variables only), and keeping them
//! out of what is logged.

use std::sync::Arc;
use std::time::Duration;

use refunds_domain::SfResultCode;

use crate::hosts::{GuardedResolver, HostPolicy};
use crate::{ConfigError, Outcome};

/// A pooled client. Redirects are not followed: a provider API answers, it does not redirect.
/// Names are resolved by [`GuardedResolver`] (listed hosts, allowed addresses only), and
/// proxy variables are ignored so that no proxy can reach what the resolver refuses.
pub(crate) fn client(
    connect_timeout: Duration,
    hosts: &Arc<HostPolicy>,
) -> Result<reqwest::Client, ConfigError> {
    built(
        reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: hosts.clone(),
            })),
    )
}

/// A builder that fails is an error, never a default client: that one would have no
/// connect timeout, would follow redirects and would resolve names without the host policy.
fn built(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, ConfigError> {
    builder.build().map_err(|e| {
        // reqwest says only "builder error"; the cause is in the source chain.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            why.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        ConfigError::HttpClient(why)
    })
}

/// What a failed exchange means for the money. A request that never left (connection
/// refused, DNS, connect timeout) moved nothing: `SystemError`, safe to repeat. Anything
/// after the request may have been sent (read timeout, connection cut, unreadable body)
/// leaves the outcome unknown: `Indeterminate`, to be looked up.
pub(crate) fn transport_failure(
    error: &reqwest::Error,
    raw_request: &str,
    secret: Option<&str>,
) -> Outcome {
    let code = if error.is_connect() || error.is_builder() {
        SfResultCode::SystemError
    } else {
        SfResultCode::Indeterminate
    };
    let kind = if error.is_connect() {
        "connection failed before the request was sent"
    } else if error.is_timeout() {
        "timed out waiting for the answer"
    } else {
        "the exchange broke off after the request was sent"
    };
    Outcome {
        raw_request: Some(redact(raw_request, secret)),
        gateway_result_code: Some(
            if error.is_timeout() {
                "timeout"
            } else {
                "transport_error"
            }
            .into(),
        ),
        ..Outcome::bare(code, redact(&format!("{kind}: {error}"), secret))
    }
}

/// Sends a request and reads the whole answer: `(status, body)`, or the outcome a transport
/// failure means (see [`transport_failure`]).
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    raw_request: &str,
    secret: &str,
) -> Result<(u16, String), Outcome> {
    let mut response = request
        .send()
        .await
        .map_err(|e| transport_failure(&e, raw_request, Some(secret)))?;
    let status = response.status().as_u16();
    // Read at most MAX_ANSWER: no answer of the APIs we call is near it, and a provider
    // (or anything in its place) must not make us hold an unbounded body in memory.
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_failure(&e, raw_request, Some(secret)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(Outcome {
                raw_request: Some(redact(raw_request, Some(secret))),
                gateway_result_code: Some("answer_too_large".into()),
                ..Outcome::bare(
                    SfResultCode::Indeterminate,
                    format!("the answer (HTTP {status}) is larger than {MAX_ANSWER} bytes"),
                )
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The largest provider answer read (bytes); a larger one is an unreadable answer.
pub(crate) const MAX_ANSWER: usize = 1024 * 1024;

/// Attaches the exchange to an outcome for the gateway log and removes the secret from
/// every field (redacted before truncation, so no fragment of it survives a cut).
pub(crate) fn record_exchange(
    outcome: &mut Outcome,
    raw_request: String,
    status: u16,
    text: &str,
    secret: &str,
) {
    use crate::redact::{truncate_to, MAX_LOGGED_BODY};
    outcome.raw_request = Some(raw_request);
    outcome.raw_response = None;
    redact_outcome(outcome, Some(secret));
    // The body alone, so an answer that is JSON is redacted as JSON.
    let response = format!("HTTP {status}\n{}", redact(text, Some(secret)));
    outcome.raw_response = Some(truncate_to(&storable(&response), MAX_LOGGED_BODY));
}

/// Removes a secret, in every encoding [`crate::redact`] knows, from text bound for a log
/// (defence in depth: requests are built without it, but a provider might echo it).
pub(crate) fn redact(text: &str, secret: Option<&str>) -> String {
    crate::redact::redact(text, secret)
}

/// Removes a secret from every text of an outcome — a provider may echo it in a message, a
/// code or a reference, not only in the raw response — and bounds each one: the raw request
/// and response to [`crate::redact::MAX_LOGGED_BODY`], the others to
/// [`crate::redact::MAX_LOGGED_TEXT`]. Redaction comes first, so no cut splits a secret.
pub(crate) fn redact_outcome(outcome: &mut Outcome, secret: Option<&str>) {
    use crate::redact::{truncate_to, MAX_LOGGED_BODY, MAX_LOGGED_TEXT};
    let short = [
        &mut outcome.gateway_result_code,
        &mut outcome.message,
        &mut outcome.gateway_ref,
    ];
    for text in short.into_iter().flatten() {
        *text = truncate_to(&storable(&redact(text, secret)), MAX_LOGGED_TEXT);
    }
    for text in [&mut outcome.raw_request, &mut outcome.raw_response]
        .into_iter()
        .flatten()
    {
        *text = truncate_to(&storable(&redact(text, secret)), MAX_LOGGED_BODY);
    }
}

/// Text every database can store: PostgreSQL refuses a NUL character in text, and a
/// provider's answer may hold one; it becomes U+FFFD.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// The prefix every environment variable holding a provider secret must have: a gateway
/// cannot name, and so cannot send, any other variable of the process.
pub const SECRET_ENV_PREFIX: &str = "REFUNDS_SECRET_";

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the payment gateway names no environment variable for its secret")]
    Unnamed,
    #[error("{0} does not start with {SECRET_ENV_PREFIX}: it is not read")]
    NotASecretVariable(String),
    #[error("environment variable {0} (a provider secret) is not set")]
    Unset(String),
}

/// Reads a provider secret from the named environment variable; only variables named
/// `REFUNDS_SECRET_…` are ever read.
pub fn secret_from_env(name: Option<&str>) -> Result<String, SecretError> {
    let name = name.ok_or(SecretError::Unnamed)?;
    if !is_secret_env_name(name) {
        return Err(SecretError::NotASecretVariable(name.to_string()));
    }
    std::env::var(name).map_err(|_| SecretError::Unset(name.to_string()))
}

/// `REFUNDS_SECRET_` followed by at least one of A-Z, 0-9, `_`.
pub fn is_secret_env_name(name: &str) -> bool {
    name.strip_prefix(SECRET_ENV_PREFIX).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Reads the provider secret from the named environment variable (see [`secret_from_env`]).
pub(crate) fn secret(env: Option<&str>) -> Result<String, String> {
    match secret_from_env(env) {
        Err(SecretError::Unnamed) => Err("the payment gateway has no MerchantCredentialEnv".into()),
        other => other.map_err(|e| e.to_string()),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_cannot_be_built_is_an_error() {
        // A TLS configuration reqwest does not know makes `build` fail.
        let broken = reqwest::Client::builder().use_preconfigured_tls(());
        match built(broken) {
            Err(ConfigError::HttpClient(why)) => assert!(why.contains("TLS"), "{why}"),
            Ok(_) => panic!("a failed builder gave a client"),
            Err(other) => panic!("unexpected error {other}"),
        }
        assert!(client(
            Duration::from_secs(1),
            &Arc::new(HostPolicy::with_loopback())
        )
        .is_ok());
    }
}
