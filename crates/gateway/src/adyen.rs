//! Adyen: `POST /payments/{pspReference}/refunds`, answered `received`; the outcome arrives
//! later as a signed `REFUND` / `REFUND_FAILED` notification at `POST /webhooks/adyen`.
//!
//! Adyen replays the original answer for a repeated `Idempotency-Key`, so a lookup is the
//! same request sent again: it cannot make a second refund while Adyen remembers the key
//! ([`KEY_LIFETIME`]). Past that, a lookup proves nothing (the Checkout API has no search by
//! merchant reference), and the queue hands such a refund to a person instead.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use refunds_domain::SfResultCode;
use serde::Deserialize;
use sha2::Sha256;

use crate::http::{exchange, record_exchange, secret};
use crate::{GatewayConfig, Lookup, Outcome, Provider, RefundRequest, DEFAULT_TIMEOUT};

pub const DEFAULT_BASE_URL: &str = "https://checkout-test.adyen.com/v71";

pub struct Adyen {
    client: reqwest::Client,
    base_url: String,
    credential_env: Option<String>,
    merchant_account: Option<String>,
    timeout: Duration,
}

impl Adyen {
    pub fn new(client: reqwest::Client, config: &GatewayConfig) -> Adyen {
        Adyen {
            client,
            base_url: config
                .base_url
                .clone()
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
                .trim_end_matches('/')
                .to_string(),
            credential_env: config.credential_env.clone(),
            merchant_account: config.merchant_account.clone(),
            timeout: config.timeout.unwrap_or(DEFAULT_TIMEOUT),
        }
    }

    async fn send(&self, request: &RefundRequest) -> Outcome {
        // The reference goes into the URL path: only a plain token is accepted, so it
        // cannot change the path or add a query.
        let Some(psp) = request.payment_ref.as_deref().filter(|r| {
            !r.is_empty()
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) else {
            return Outcome::bare(
                SfResultCode::ValidationError,
                "Payment GatewayRefNumber is not an Adyen pspReference (letters, digits, _ and - only)",
            );
        };
        let Some(merchant) = self.merchant_account.as_deref() else {
            return Outcome::bare(
                SfResultCode::PermanentFail,
                "the payment gateway has no MerchantAccount",
            );
        };
        let key = match secret(self.credential_env.as_deref()) {
            Ok(k) => k,
            Err(why) => return Outcome::bare(SfResultCode::PermanentFail, why),
        };
        let body = serde_json::json!({
            "amount": {"value": request.amount, "currency": request.currency},
            "merchantAccount": merchant,
            "reference": request.idempotency_key,
        });
        let path = format!("/payments/{psp}/refunds");
        let raw_request = format!(
            "POST {path}\nIdempotency-Key: {}\n\n{body}",
            request.idempotency_key
        );
        let (status, text) = match exchange(
            self.client
                .post(format!("{}{path}", self.base_url))
                .header("X-API-Key", &key)
                .header("Idempotency-Key", &request.idempotency_key)
                .json(&body)
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
}

#[async_trait]
impl Provider for Adyen {
    async fn refund(&self, request: &RefundRequest) -> Outcome {
        self.send(request).await
    }

    async fn lookup(&self, request: &RefundRequest) -> Lookup {
        let outcome = self.send(request).await;
        match outcome.code {
            // PermanentFail here is a refused API key (checked before Adyen replays an
            // idempotent answer) or missing configuration: nothing about the refund itself.
            SfResultCode::Indeterminate
            | SfResultCode::SystemError
            | SfResultCode::PermanentFail => Lookup::Unknown(outcome),
            _ => Lookup::Found(outcome),
        }
    }

    /// Settlement arrives by notification (`POST /webhooks/adyen`), never by polling.
    fn polls_settlement(&self) -> bool {
        false
    }

    fn key_lifetime(&self) -> Option<Duration> {
        Some(KEY_LIFETIME)
    }

    /// The Checkout API has no search by merchant reference: a lookup is the request sent
    /// again under its key, which proves nothing once the key may be forgotten.
    fn lookup_by_reference(&self) -> bool {
        false
    }
}

/// How long Adyen is taken to remember an idempotency key. Adyen documents "a minimum of
/// 31 days after first submission" (earlier versions of its documentation: 7 days); the
/// shorter reading is used, so a refund is handed to a person rather than sent again
/// while there is any doubt.
pub const KEY_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Adyen's JSON and its mapping to Salesforce result codes.
pub mod wire {
    use refunds_domain::SfResultCode;
    use serde::Deserialize;

    use crate::Outcome;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RefundResponse {
        psp_reference: String,
        status: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        #[serde(default)]
        error_code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }

    pub fn refund_answer(status: u16, body: &str) -> Outcome {
        if (200..300).contains(&status) {
            // Only a JSON object is an answer: serde would also read an array, field by field.
            let parsed = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body)
                .and_then(|o| {
                    serde_json::from_value::<RefundResponse>(serde_json::Value::Object(o))
                });
            return match parsed {
                Ok(r) if r.status == "received" => Outcome {
                    code: SfResultCode::Success,
                    gateway_result_code: Some(r.status),
                    message: Some("[refund-received]".into()),
                    gateway_ref: Some(r.psp_reference),
                    gateway_date_ms: Some(crate::http::now_ms()),
                    settles_later: true,
                    raw_request: None,
                    raw_response: None,
                },
                Ok(r) => Outcome::bare(
                    SfResultCode::Indeterminate,
                    format!("Unrecognised Adyen status {:?}", r.status),
                ),
                Err(e) => Outcome::bare(
                    SfResultCode::Indeterminate,
                    format!("Unreadable Adyen answer: {e}"),
                ),
            };
        }
        let error = serde_json::from_str::<ErrorBody>(body).ok();
        let code = error.as_ref().and_then(|e| e.error_code.as_deref());
        let sf = match status {
            // 704: a request with this idempotency key is already processed or still in
            // progress. What it did is unknown here: keep the money reserved, look it up.
            _ if code == Some(super::IDEMPOTENCY_IN_USE) => SfResultCode::Indeterminate,
            429 => SfResultCode::SystemError,
            500..=599 => SfResultCode::Indeterminate,
            401 | 403 => SfResultCode::PermanentFail,
            400 | 404 | 422 => SfResultCode::ValidationError,
            _ => SfResultCode::Indeterminate,
        };
        let message = error
            .as_ref()
            .and_then(|e| e.message.clone())
            .unwrap_or_else(|| format!("Adyen answered HTTP {status}"));
        Outcome {
            gateway_result_code: Some(
                error
                    .and_then(|e| e.error_code)
                    .unwrap_or_else(|| format!("http_{status}")),
            ),
            ..Outcome::bare(sf, message)
        }
    }
}

/// Adyen's error code for an idempotency key whose request is done or still running.
const IDEMPOTENCY_IN_USE: &str = "704";

/// One item of a standard Adyen notification.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationItem {
    #[serde(default)]
    pub additional_data: Option<serde_json::Map<String, serde_json::Value>>,
    pub amount: NotificationAmount,
    pub event_code: String,
    #[serde(default)]
    pub event_date: Option<String>,
    #[serde(default)]
    pub merchant_account_code: String,
    #[serde(default)]
    pub merchant_reference: String,
    #[serde(default)]
    pub original_reference: Option<String>,
    pub psp_reference: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub success: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct NotificationAmount {
    pub currency: String,
    pub value: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    notification_items: Vec<Wrapped>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Wrapped {
    notification_request_item: NotificationItem,
}

/// Parses a notification body into its items.
pub fn parse_notification(body: &[u8]) -> Result<Vec<NotificationItem>, String> {
    serde_json::from_slice::<Notification>(body)
        .map(|n| {
            n.notification_items
                .into_iter()
                .map(|w| w.notification_request_item)
                .collect()
        })
        .map_err(|e| format!("not an Adyen notification: {e}"))
}

impl NotificationItem {
    pub fn succeeded(&self) -> bool {
        self.event_code == "REFUND" && self.success == "true"
    }

    pub fn is_refund_event(&self) -> bool {
        matches!(self.event_code.as_str(), "REFUND" | "REFUND_FAILED")
    }

    /// What this (verified) notification says of its refund, received at `received_at_ms`:
    /// `REFUND` with `success: "true"` settles it, anything else declines it with Adyen's
    /// reason. The item itself (without its signature) is kept as the log's response, and
    /// every text is bounded and made storable as a provider's answer is: the sender
    /// writes these texts, so they are bounded here, not trusted.
    pub fn outcome(&self, received_at_ms: i64) -> Outcome {
        let success = self.succeeded();
        let mut logged = self.clone();
        if let Some(data) = logged.additional_data.as_mut() {
            data.remove("hmacSignature");
        }
        let mut outcome = Outcome {
            code: if success {
                SfResultCode::Success
            } else {
                SfResultCode::Decline
            },
            gateway_result_code: Some(self.event_code.clone()),
            message: Some(match (&self.reason, success) {
                (_, true) => "[refund-complete]".to_string(),
                (Some(reason), false) => format!("[refund-fail] {reason}"),
                (None, false) => "[refund-fail]".to_string(),
            }),
            gateway_ref: Some(self.psp_reference.clone()),
            gateway_date_ms: Some(received_at_ms),
            settles_later: false,
            raw_request: None,
            raw_response: Some(format!("{logged:?}")),
        };
        crate::http::redact_outcome(&mut outcome, None);
        outcome
    }

    /// Adyen's signing string: eight fields joined by `:`.
    fn signing_string(&self) -> String {
        [
            self.psp_reference.as_str(),
            self.original_reference.as_deref().unwrap_or(""),
            self.merchant_account_code.as_str(),
            self.merchant_reference.as_str(),
            &self.amount.value.to_string(),
            self.amount.currency.as_str(),
            self.event_code.as_str(),
            self.success.as_str(),
        ]
        .join(":")
    }

    /// The base64 HMAC-SHA256 signature of this item under a hex-encoded key.
    pub fn sign(&self, hex_key: &str) -> Result<String, String> {
        let key = hex::decode(hex_key.trim()).map_err(|_| "the HMAC key is not hex".to_string())?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&key).map_err(|_| "unusable HMAC key".to_string())?;
        mac.update(self.signing_string().as_bytes());
        Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether `additionalData.hmacSignature` is this item's signature under the key
    /// (compared in constant time).
    pub fn verify(&self, hex_key: &str) -> bool {
        let Some(given) = self
            .additional_data
            .as_ref()
            .and_then(|d| d.get("hmacSignature"))
            .and_then(|v| v.as_str())
        else {
            return false;
        };
        let Ok(key) = hex::decode(hex_key.trim()) else {
            return false;
        };
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            return false;
        };
        mac.update(self.signing_string().as_bytes());
        mac.verify_slice(&given).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"live":"false","notificationItems":[{"NotificationRequestItem":{
        "additionalData":{"hmacSignature":"x"},"amount":{"currency":"USD","value":1000},
        "eventCode":"REFUND","eventDate":"2024-01-01T01:00:00+01:00","merchantAccountCode":"TestMerchantAccount",
        "merchantReference":"00001234","paymentMethod":"visa","pspReference":"REFUNDPSP0000001",
        "originalReference":"CAPTUREPSP000001","reason":"null","success":"true"}}]}"#;

    #[test]
    fn notifications_parse_and_verify_only_with_the_right_key() {
        let mut items = parse_notification(EXAMPLE.as_bytes()).unwrap();
        let key = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
        assert!(!items[0].verify(key), "a made-up signature is rejected");
        let signature = items[0].sign(key).unwrap();
        items[0]
            .additional_data
            .as_mut()
            .unwrap()
            .insert("hmacSignature".into(), signature.into());
        assert!(items[0].verify(key));
        assert!(!items[0].verify("00"), "another key fails");
        let mut tampered = items[0].clone();
        tampered.amount.value = 100_000;
        assert!(!tampered.verify(key), "a changed amount fails");
        assert!(items[0].succeeded() && items[0].is_refund_event());
    }

    #[test]
    fn a_notification_maps_to_its_refund_outcome() {
        let item = parse_notification(EXAMPLE.as_bytes()).unwrap().remove(0);
        let done = item.outcome(1_700_000_000_000);
        assert_eq!(
            (
                done.code,
                done.message.as_deref(),
                done.gateway_ref.as_deref(),
                done.gateway_result_code.as_deref(),
                done.gateway_date_ms,
                done.settles_later,
            ),
            (
                SfResultCode::Success,
                Some("[refund-complete]"),
                Some("REFUNDPSP0000001"),
                Some("REFUND"),
                Some(1_700_000_000_000),
                false,
            )
        );
        let mut failed = item.clone();
        failed.event_code = "REFUND_FAILED".into();
        failed.reason = Some("Insufficient balance".into());
        let declined = failed.outcome(0);
        assert_eq!(declined.code, SfResultCode::Decline);
        assert_eq!(
            declined.message.as_deref(),
            Some("[refund-fail] Insufficient balance")
        );
        let mut refused = item;
        refused.success = "false".into();
        refused.reason = None;
        let declined = refused.outcome(0);
        assert_eq!(
            (declined.code, declined.message.as_deref()),
            (SfResultCode::Decline, Some("[refund-fail]"))
        );
    }

    #[test]
    fn a_notification_s_texts_are_bounded_and_storable_and_its_signature_is_not_logged() {
        let mut item = parse_notification(EXAMPLE.as_bytes()).unwrap().remove(0);
        item.success = "false".into();
        item.reason = Some(format!("bad\0{}", "x".repeat(5_000)));
        let outcome = item.outcome(0);
        let message = outcome.message.unwrap();
        assert!(!message.contains('\0') && message.contains('\u{FFFD}'));
        let marker = "…[truncated]".len();
        assert!(message.ends_with("…[truncated]"), "{message}");
        assert!(message.len() <= crate::redact::MAX_LOGGED_TEXT + marker);
        let logged = outcome.raw_response.unwrap();
        assert!(!logged.contains('\0'));
        assert!(logged.len() <= crate::redact::MAX_LOGGED_BODY + marker);
        assert!(!logged.contains("hmacSignature"), "{logged}");
        assert!(logged.contains("REFUNDPSP0000001"), "{logged}");
    }

    #[tokio::test]
    async fn a_reference_that_would_change_the_url_is_refused_before_sending() {
        let adyen = Adyen::new(
            reqwest::Client::new(),
            &GatewayConfig {
                provider_type: "Adyen".into(),
                base_url: Some("http://127.0.0.1:9".into()),
                credential_env: Some("REFUNDS_TEST_ADYEN_UNUSED".into()),
                merchant_account: Some("M".into()),
                ..GatewayConfig::default()
            },
        );
        for bad in ["../../admin", "PSP?x=1", "PSP/1", "PSP 1"] {
            let request = RefundRequest {
                idempotency_key: "0Rf1".into(),
                payment_ref: Some(bad.into()),
                amount: 100,
                currency: "USD".into(),
                operation_id: "0BO1".into(),
            };
            assert_eq!(
                adyen.refund(&request).await.code,
                SfResultCode::ValidationError,
                "{bad}"
            );
        }
    }

    #[test]
    fn answers_map_explicitly() {
        let ok = wire::refund_answer(
            201,
            r#"{"pspReference":"P1","status":"received","reference":"r"}"#,
        );
        assert_eq!(
            (ok.code, ok.settles_later, ok.gateway_ref.as_deref()),
            (SfResultCode::Success, true, Some("P1"))
        );
        assert_eq!(
            wire::refund_answer(422, r#"{"errorCode":"137","message":"Invalid amount"}"#).code,
            SfResultCode::ValidationError
        );
        assert_eq!(
            wire::refund_answer(
                422,
                r#"{"errorCode":"704","message":"request already processed or in progress"}"#
            )
            .code,
            SfResultCode::Indeterminate,
            "the key's first request may have refunded"
        );
        assert_eq!(
            wire::refund_answer(401, "").code,
            SfResultCode::PermanentFail
        );
        assert_eq!(wire::refund_answer(429, "").code, SfResultCode::SystemError);
        assert_eq!(
            wire::refund_answer(503, "").code,
            SfResultCode::Indeterminate
        );
        assert_eq!(
            wire::refund_answer(201, "{").code,
            SfResultCode::Indeterminate
        );
        assert_eq!(
            wire::refund_answer(201, r#"{"pspReference":"P","status":"odd"}"#).code,
            SfResultCode::Indeterminate
        );
    }
}
