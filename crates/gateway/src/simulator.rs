//! The built-in Simulator provider, for demos and tests.
//!
//! Outcomes are chosen by the last two digits of the amount in minor units (SPEC §4), so a
//! test or a demo picks the outcome by picking the amount. Like a real provider it honours
//! idempotency keys: a repeated key returns the first recorded outcome and moves no more
//! money. Its ledger lives in this process's memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use refunds_domain::SfResultCode;
use tokio::sync::Mutex;

use crate::http::now_ms;
use crate::{Lookup, Outcome, Provider, RefundRequest};

#[derive(Clone, Debug, Default)]
pub struct SimulatorConfig {
    /// Added to every call, to make demos and load tests realistic.
    pub latency: Duration,
}

#[derive(Debug, Default)]
struct Entry {
    attempts: u32,
    /// The refund as the simulated provider recorded it (`None`: it never arrived).
    recorded: Option<Outcome>,
}

/// The simulated provider and its ledger.
#[derive(Debug)]
pub struct Simulator {
    config: SimulatorConfig,
    ledger: Mutex<HashMap<String, Entry>>,
    next_ref: AtomicU64,
}

/// What the simulated provider does with an attempt.
enum Behaviour {
    Final(SfResultCode, &'static str, &'static str),
    /// SystemError for the first `n` attempts of a key, then success.
    FailFirst(u32),
    /// First attempt: money moves, answer lost.
    LostAnswer,
    /// First attempt: request lost.
    LostRequest,
}

fn behaviour(amount: i64) -> Behaviour {
    match amount.rem_euclid(100) {
        91 => Behaviour::Final(
            SfResultCode::Decline,
            "card_declined",
            "The refund was declined.",
        ),
        92 => Behaviour::Final(
            SfResultCode::PermanentFail,
            "charge_disputed",
            "The charge cannot be refunded.",
        ),
        93 => Behaviour::Final(
            SfResultCode::ValidationError,
            "invalid_amount",
            "The refund request is invalid.",
        ),
        94 => Behaviour::Final(
            SfResultCode::RequiresReview,
            "review_required",
            "The refund needs manual review.",
        ),
        95 => Behaviour::FailFirst(2),
        96 => Behaviour::LostAnswer,
        97 => Behaviour::LostRequest,
        _ => Behaviour::Final(SfResultCode::Success, "succeeded", "Refund succeeded."),
    }
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Simulator {
        Simulator {
            config,
            ledger: Mutex::new(HashMap::new()),
            next_ref: AtomicU64::new(1),
        }
    }

    /// How many refunds with money moved (successes recorded) the ledger holds, and their sum.
    pub async fn settled(&self) -> (usize, i64) {
        let ledger = self.ledger.lock().await;
        ledger
            .values()
            .filter_map(|e| e.recorded.as_ref())
            .filter(|o| o.code == SfResultCode::Success)
            .fold((0, 0), |(n, sum), o| (n + 1, sum + amount_of(o)))
    }

    /// How many times a key was sent.
    pub async fn attempts(&self, key: &str) -> u32 {
        self.ledger.lock().await.get(key).map_or(0, |e| e.attempts)
    }

    fn record(
        &self,
        request: &RefundRequest,
        code: SfResultCode,
        gw_code: &str,
        message: &str,
    ) -> Outcome {
        let gateway_ref = (code == SfResultCode::Success)
            .then(|| format!("simre_{:08}", self.next_ref.fetch_add(1, Ordering::Relaxed)));
        let date = now_ms();
        Outcome {
            code,
            gateway_result_code: Some(gw_code.to_string()),
            message: Some(message.to_string()),
            raw_response: Some(
                serde_json::json!({
                    "id": gateway_ref,
                    "status": gw_code,
                    "amount": request.amount,
                    "currency": request.currency,
                    "idempotency_key": request.idempotency_key,
                    "created": date,
                })
                .to_string(),
            ),
            gateway_ref,
            gateway_date_ms: Some(date),
            settles_later: false,
            raw_request: Some(raw_request(request)),
        }
    }
}

fn raw_request(request: &RefundRequest) -> String {
    serde_json::json!({
        "payment": request.payment_ref,
        "amount": request.amount,
        "currency": request.currency,
        "idempotency_key": request.idempotency_key,
    })
    .to_string()
}

fn amount_of(outcome: &Outcome) -> i64 {
    outcome
        .raw_response
        .as_deref()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .and_then(|v| v.get("amount").and_then(|a| a.as_i64()))
        .unwrap_or(0)
}

fn transport(code: SfResultCode, request: &RefundRequest, message: &str) -> Outcome {
    Outcome {
        raw_request: Some(raw_request(request)),
        ..Outcome::bare(code, message)
    }
}

#[async_trait]
impl Provider for Simulator {
    async fn refund(&self, request: &RefundRequest) -> Outcome {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let mut ledger = self.ledger.lock().await;
        let entry = ledger.entry(request.idempotency_key.clone()).or_default();
        entry.attempts += 1;
        if let Some(first) = &entry.recorded {
            return first.clone();
        }
        match behaviour(request.amount) {
            Behaviour::Final(code, gw, msg) => {
                let outcome = self.record(request, code, gw, msg);
                entry.recorded = Some(outcome.clone());
                outcome
            }
            Behaviour::FailFirst(n) if entry.attempts <= n => transport(
                SfResultCode::SystemError,
                request,
                "simulated: provider unavailable (connection refused)",
            ),
            Behaviour::LostAnswer if entry.attempts == 1 => {
                entry.recorded = Some(self.record(
                    request,
                    SfResultCode::Success,
                    "succeeded",
                    "Refund succeeded.",
                ));
                transport(
                    SfResultCode::Indeterminate,
                    request,
                    "simulated: timed out waiting for the answer",
                )
            }
            Behaviour::LostRequest if entry.attempts == 1 => transport(
                SfResultCode::Indeterminate,
                request,
                "simulated: timed out sending the request",
            ),
            Behaviour::FailFirst(_) | Behaviour::LostAnswer | Behaviour::LostRequest => {
                let outcome = self.record(
                    request,
                    SfResultCode::Success,
                    "succeeded",
                    "Refund succeeded.",
                );
                entry.recorded = Some(outcome.clone());
                outcome
            }
        }
    }

    async fn lookup(&self, request: &RefundRequest) -> Lookup {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let ledger = self.ledger.lock().await;
        match ledger
            .get(&request.idempotency_key)
            .and_then(|e| e.recorded.clone())
        {
            Some(found) => Lookup::Found(found),
            None => Lookup::NotFound(Outcome {
                gateway_result_code: Some("resource_missing".into()),
                ..transport(
                    SfResultCode::Indeterminate,
                    request,
                    "no refund with this idempotency key",
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, amount: i64) -> RefundRequest {
        RefundRequest {
            idempotency_key: key.into(),
            payment_ref: Some("ch_1".into()),
            amount,
            currency: "USD".into(),
            operation_id: "0BO".into(),
        }
    }

    fn sim() -> Simulator {
        Simulator::new(SimulatorConfig::default())
    }

    #[tokio::test]
    async fn final_outcomes_follow_the_last_two_digits_and_repeat_for_a_key() {
        let s = sim();
        for (amount, code) in [
            (1000, SfResultCode::Success),
            (1091, SfResultCode::Decline),
            (1092, SfResultCode::PermanentFail),
            (1093, SfResultCode::ValidationError),
            (1094, SfResultCode::RequiresReview),
        ] {
            let key = format!("k{amount}");
            let first = s.refund(&req(&key, amount)).await;
            assert_eq!(first.code, code, "{amount}");
            assert_eq!(
                s.refund(&req(&key, amount)).await,
                first,
                "a repeated key returns the first outcome"
            );
        }
        assert_eq!(s.settled().await, (1, 1000));
    }

    #[tokio::test]
    async fn system_error_twice_then_success_once() {
        let s = sim();
        assert_eq!(
            s.refund(&req("k", 295)).await.code,
            SfResultCode::SystemError
        );
        assert_eq!(
            s.refund(&req("k", 295)).await.code,
            SfResultCode::SystemError
        );
        assert!(matches!(
            s.lookup(&req("k", 295)).await,
            Lookup::NotFound(_)
        ));
        let ok = s.refund(&req("k", 295)).await;
        assert_eq!(ok.code, SfResultCode::Success);
        assert_eq!(s.refund(&req("k", 295)).await, ok);
        assert_eq!(s.settled().await, (1, 295));
    }

    #[tokio::test]
    async fn lost_answer_moved_the_money_and_lookup_finds_it() {
        let s = sim();
        assert_eq!(
            s.refund(&req("k", 196)).await.code,
            SfResultCode::Indeterminate
        );
        let Lookup::Found(found) = s.lookup(&req("k", 196)).await else {
            panic!("expected found")
        };
        assert_eq!(found.code, SfResultCode::Success);
        assert_eq!(s.refund(&req("k", 196)).await, found);
        assert_eq!(s.settled().await, (1, 196));
    }

    #[tokio::test]
    async fn lost_request_moved_nothing_and_a_repeat_succeeds_once() {
        let s = sim();
        assert_eq!(
            s.refund(&req("k", 197)).await.code,
            SfResultCode::Indeterminate
        );
        assert!(matches!(
            s.lookup(&req("k", 197)).await,
            Lookup::NotFound(_)
        ));
        assert_eq!(s.settled().await, (0, 0));
        assert_eq!(s.refund(&req("k", 197)).await.code, SfResultCode::Success);
        assert_eq!(s.refund(&req("k", 197)).await.code, SfResultCode::Success);
        assert_eq!(s.settled().await, (1, 197));
        assert_eq!(s.attempts("k").await, 3);
    }
}
