//! The HTTP plumbing every HTTP adapter shares: the pooled client, classifying transport
//! failures, and keeping secrets out of what is logged.

use std::time::Duration;

use refunds_domain::SfResultCode;

use crate::Outcome;

/// A pooled client. Redirects are not followed: a provider API answers, it does not redirect.
pub(crate) fn client(connect_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
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

/// Reads the provider secret from the named environment variable.
pub(crate) fn secret(env: Option<&str>) -> Result<String, String> {
    let name = env.ok_or("the payment gateway has no MerchantCredentialEnv")?;
    std::env::var(name)
        .map_err(|_| format!("environment variable {name} (the provider credential) is not set"))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
