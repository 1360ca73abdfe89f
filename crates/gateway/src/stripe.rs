//! Stripe: `POST /v1/refunds` (form-encoded, `Idempotency-Key` header) and
//! `GET /v1/refunds?charge=…|payment_intent=…` for lookups.
//!
//! The client half builds requests; [`wire`] maps Stripe's answers, every status and error
//! type explicitly. An answer this adapter does not understand is `Indeterminate` — looked
//! up again later — never assumed to be a success or a failure.

use std::time::Duration;

use async_trait::async_trait;
use refunds_domain::SfResultCode;

use crate::http::{exchange, record_exchange, secret};
use crate::{GatewayConfig, Lookup, Outcome, Provider, RefundRequest, DEFAULT_TIMEOUT};

pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

pub struct Stripe {
    client: reqwest::Client,
    base_url: String,
    credential_env: Option<String>,
    timeout: Duration,
}

impl Stripe {
    pub fn new(client: reqwest::Client, config: &GatewayConfig) -> Stripe {
        Stripe {
            client,
            base_url: config
                .base_url
                .clone()
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
                .trim_end_matches('/')
                .to_string(),
            credential_env: config.credential_env.clone(),
            timeout: config.timeout.unwrap_or(DEFAULT_TIMEOUT),
        }
    }
}

/// Which Stripe object the payment reference names.
fn target(payment_ref: Option<&str>) -> Option<(&'static str, &str)> {
    let r = payment_ref?;
    if r.starts_with("ch_") || r.starts_with("py_") {
        Some(("charge", r))
    } else if r.starts_with("pi_") {
        Some(("payment_intent", r))
    } else {
        None
    }
}

fn invalid_reference(request: &RefundRequest) -> Outcome {
    Outcome::bare(
        SfResultCode::ValidationError,
        format!(
            "Payment GatewayRefNumber {:?} is not a Stripe charge (ch_…) or payment intent (pi_…)",
            request.payment_ref
        ),
    )
}

#[async_trait]
impl Provider for Stripe {
    async fn refund(&self, request: &RefundRequest) -> Outcome {
        let Some((field, reference)) = target(request.payment_ref.as_deref()) else {
            return invalid_reference(request);
        };
        let key = match secret(self.credential_env.as_deref()) {
            Ok(k) => k,
            Err(why) => return Outcome::bare(SfResultCode::PermanentFail, why),
        };
        let amount = request.amount.to_string();
        let form = [
            (field, reference),
            ("amount", amount.as_str()),
            ("metadata[refund_id]", request.idempotency_key.as_str()),
            ("metadata[operation_id]", request.operation_id.as_str()),
        ];
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let raw_request = format!(
            "POST /v1/refunds\nIdempotency-Key: {}\n\n{body}",
            request.idempotency_key
        );
        let (status, text) = match exchange(
            self.client
                .post(format!("{}/v1/refunds", self.base_url))
                .bearer_auth(&key)
                .header("Idempotency-Key", &request.idempotency_key)
                .form(&form)
                .timeout(self.timeout),
            &raw_request,
            &key,
        )
        .await
        {
            Ok(answer) => answer,
            Err(failure) => return failure,
        };
        let mut outcome = wire::refund_answer(status, &text);
        record_exchange(&mut outcome, raw_request, status, &text, &key);
        outcome
    }

    async fn lookup(&self, request: &RefundRequest) -> Lookup {
        let Some((field, reference)) = target(request.payment_ref.as_deref()) else {
            return Lookup::Unknown(invalid_reference(request));
        };
        let key = match secret(self.credential_env.as_deref()) {
            Ok(k) => k,
            Err(why) => return Lookup::Unknown(Outcome::bare(SfResultCode::SystemError, why)),
        };
        // Stripe lists newest first, 100 at a time; a charge with more refunds is paged
        // through (up to MAX_PAGES) before "not found" is concluded.
        const MAX_PAGES: usize = 10;
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![(field, reference.to_string()), ("limit", "100".to_string())];
            if let Some(cursor) = &after {
                query.push(("starting_after", cursor.clone()));
            }
            let raw_request = format!(
                "GET /v1/refunds?{}",
                query
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            );
            let (status, text) = match exchange(
                self.client
                    .get(format!("{}/v1/refunds", self.base_url))
                    .bearer_auth(&key)
                    .query(&query)
                    .timeout(self.timeout),
                &raw_request,
                &key,
            )
            .await
            {
                Ok(answer) => answer,
                Err(failure) => return Lookup::Unknown(failure),
            };
            let mut found = wire::lookup_answer(status, &text, &request.idempotency_key);
            if matches!(found, Lookup::NotFound(_)) {
                if let Some(cursor) = wire::next_page(&text) {
                    after = Some(cursor);
                    continue;
                }
            }
            record_exchange(found.outcome_mut(), raw_request, status, &text, &key);
            return found;
        }
        Lookup::Unknown(Outcome::bare(
            SfResultCode::Indeterminate,
            format!("more than {MAX_PAGES} pages of refunds on {reference}; not searched further"),
        ))
    }

    fn polls_settlement(&self) -> bool {
        true
    }

    /// Stripe keeps idempotency keys for 24 hours.
    fn key_lifetime(&self) -> Option<Duration> {
        Some(KEY_LIFETIME)
    }

    /// A lookup lists the charge's refunds and matches `metadata.refund_id`, set on create:
    /// it does not depend on the key.
    fn lookup_by_reference(&self) -> bool {
        true
    }
}

/// How long Stripe remembers an idempotency key.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Stripe's JSON and its mapping to Salesforce result codes.
pub mod wire {
    use refunds_domain::SfResultCode;
    use serde::Deserialize;

    use crate::{Lookup, Outcome};

    #[derive(Debug, Deserialize)]
    pub struct Refund {
        pub id: String,
        pub status: String,
        #[serde(default)]
        pub created: Option<i64>,
        #[serde(default)]
        pub failure_reason: Option<String>,
        #[serde(default)]
        pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    }

    #[derive(Debug, Deserialize)]
    struct ErrorBody {
        error: ApiError,
    }

    #[derive(Debug, Deserialize)]
    struct ApiError {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    struct List {
        data: Vec<Refund>,
    }

    #[derive(Debug, Deserialize)]
    struct Page {
        #[serde(default)]
        has_more: bool,
        data: Vec<serde_json::Map<String, serde_json::Value>>,
    }

    /// The cursor of the next page of a list (the last id), if Stripe says there is one.
    pub fn next_page(body: &str) -> Option<String> {
        let page = serde_json::from_str::<Page>(body).ok()?;
        if !page.has_more {
            return None;
        }
        page.data.last()?.get("id")?.as_str().map(str::to_string)
    }

    /// Error codes that mean "this refund can never be made", not "the request was wrong".
    const PERMANENT_CODES: &[&str] = &[
        "charge_already_refunded",
        "charge_disputed",
        "charge_expired_for_refund",
    ];

    /// Stripe has no review outcome for refunds; the simulator answers this code for the
    /// `RequiresReview` row of its outcome table. Gateways can map their own codes.
    const REVIEW_CODES: &[&str] = &["refund_requires_review"];

    /// Maps a refund object's status.
    pub fn refund_outcome(refund: &Refund) -> Outcome {
        let (code, settles_later) = match refund.status.as_str() {
            "succeeded" => (SfResultCode::Success, false),
            "pending" | "requires_action" => (SfResultCode::Success, true),
            "failed" | "canceled" => (SfResultCode::Decline, false),
            _ => (SfResultCode::Indeterminate, false),
        };
        let message = match (&refund.failure_reason, code) {
            (Some(reason), SfResultCode::Decline) => format!("Refund {}: {reason}", refund.status),
            (_, SfResultCode::Indeterminate) => {
                format!("Unrecognised Stripe refund status {:?}", refund.status)
            }
            _ => format!("Refund {}", refund.status),
        };
        Outcome {
            code,
            gateway_result_code: Some(refund.status.clone()),
            message: Some(message),
            gateway_ref: Some(refund.id.clone()),
            gateway_date_ms: refund.created.map(|s| s.saturating_mul(1000)),
            settles_later,
            raw_request: None,
            raw_response: None,
        }
    }

    /// Reads a refund object. Only a JSON object is one: serde would also read a JSON array
    /// into the struct, field by field, and `["re_1","succeeded"]` is not a Stripe answer.
    fn parse_refund(body: &str) -> Result<Refund, serde_json::Error> {
        let object = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body)?;
        serde_json::from_value(serde_json::Value::Object(object))
    }

    /// Maps the answer to `POST /v1/refunds`.
    pub fn refund_answer(status: u16, body: &str) -> Outcome {
        if (200..300).contains(&status) {
            return match parse_refund(body) {
                Ok(refund) => refund_outcome(&refund),
                Err(e) => Outcome::bare(
                    SfResultCode::Indeterminate,
                    format!("Unreadable Stripe answer: {e}"),
                ),
            };
        }
        let error = serde_json::from_str::<ErrorBody>(body)
            .ok()
            .map(|b| b.error);
        let kind = error.as_ref().map(|e| e.kind.as_str()).unwrap_or("");
        let code = error.as_ref().and_then(|e| e.code.as_deref());
        let sf = match (status, kind) {
            (429, _) | (_, "rate_limit_error") => SfResultCode::SystemError,
            (500..=599, _) | (_, "api_error") => SfResultCode::Indeterminate,
            // The key is in use by a request still running, or was first used with other
            // parameters: what became of the first request is unknown, so the money stays
            // reserved and the refund is looked up — never released as failed.
            (409, _) | (_, "idempotency_error") => SfResultCode::Indeterminate,
            _ if code == Some("idempotency_key_in_use") => SfResultCode::Indeterminate,
            _ if code.is_some_and(|c| REVIEW_CODES.contains(&c)) => SfResultCode::RequiresReview,
            _ if code.is_some_and(|c| PERMANENT_CODES.contains(&c)) => SfResultCode::PermanentFail,
            (402, _) | (_, "card_error") => SfResultCode::Decline,
            (401 | 403, _) | (_, "authentication_error" | "permission_error") => {
                SfResultCode::PermanentFail
            }
            (400..=499, _) => SfResultCode::ValidationError,
            _ => SfResultCode::Indeterminate,
        };
        let message = error
            .as_ref()
            .and_then(|e| e.message.clone())
            .unwrap_or_else(|| format!("Stripe answered HTTP {status}"));
        Outcome {
            gateway_result_code: Some(code.map(str::to_string).unwrap_or_else(|| {
                if kind.is_empty() {
                    format!("http_{status}")
                } else {
                    kind.to_string()
                }
            })),
            ..Outcome::bare(sf, message)
        }
    }

    /// Maps the answer to `GET /v1/refunds?…`, finding the refund made with `key`.
    pub fn lookup_answer(status: u16, body: &str, key: &str) -> Lookup {
        if !(200..300).contains(&status) {
            return Lookup::Unknown(Outcome::bare(
                SfResultCode::Indeterminate,
                format!("Stripe lookup answered HTTP {status}"),
            ));
        }
        let list = match serde_json::from_str::<List>(body) {
            Ok(l) => l,
            Err(e) => {
                return Lookup::Unknown(Outcome::bare(
                    SfResultCode::Indeterminate,
                    format!("Unreadable Stripe list: {e}"),
                ))
            }
        };
        let mine = list.data.iter().find(|r| {
            r.metadata
                .as_ref()
                .and_then(|m| m.get("refund_id"))
                .and_then(|v| v.as_str())
                == Some(key)
        });
        match mine {
            Some(refund) => Lookup::Found(refund_outcome(refund)),
            None => Lookup::NotFound(Outcome {
                gateway_result_code: Some("not_found".into()),
                ..Outcome::bare(
                    SfResultCode::Indeterminate,
                    "Stripe has no refund with this key",
                )
            }),
        }
    }
}
