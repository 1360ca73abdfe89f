//! The built-in Simulator provider, for demos and tests.
//!
//! Outcomes are chosen by the last two digits of the amount in minor units (SPEC §4), so a
//! test or a demo picks the outcome by picking the amount. Like a real provider it honours
//! idempotency keys: a repeated key returns the first recorded outcome and moves no more
//! money — for [`SimulatorConfig::key_lifetime`], after which it forgets the key, as real
//! providers do, and a request sent again under it is a new refund. A lookup finds a
//! refund by the reference the service put on it (the Refund id), whatever its key's age.
//! Its ledger lives in this process's memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use refunds_domain::SfResultCode;
use tokio::sync::Mutex;

use crate::http::now_ms;
use crate::{Lookup, Outcome, Provider, RefundRequest};

#[derive(Clone, Debug, Default)]
pub struct SimulatorConfig {
    /// Added to every call, to make demos and load tests realistic.
    pub latency: Duration,
    /// How long a key is remembered after its first use (`None`: for ever).
    pub key_lifetime: Option<Duration>,
}

/// What the simulator remembers of an idempotency key.
#[derive(Debug)]
struct Key {
    first_used: Instant,
    attempts: u32,
    /// The refund made under this key (an index into `refunds`), or nothing yet.
    refund: Option<usize>,
}

#[derive(Debug, Default)]
struct Ledger {
    keys: HashMap<String, Key>,
    /// Every recorded refund, with the reference it was made with, in order.
    refunds: Vec<(String, Outcome)>,
    /// Sends per key, kept after the key itself is forgotten.
    sends: HashMap<String, u32>,
}

/// The simulated provider and its ledger.
#[derive(Debug)]
pub struct Simulator {
    config: SimulatorConfig,
    ledger: Mutex<Ledger>,
    next_ref: AtomicU64,
    lookups_fail: AtomicBool,
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
            ledger: Mutex::new(Ledger::default()),
            next_ref: AtomicU64::new(1),
            lookups_fail: AtomicBool::new(false),
        }
    }

    /// How many refunds with money moved (successes recorded) the ledger holds, and their sum.
    pub async fn settled(&self) -> (usize, i64) {
        let ledger = self.ledger.lock().await;
        ledger
            .refunds
            .iter()
            .map(|(_, o)| o)
            .filter(|o| o.code == SfResultCode::Success)
            .fold((0, 0), |(n, sum), o| (n + 1, sum + amount_of(o)))
    }

    /// How many times a key was sent (also before it was forgotten).
    pub async fn attempts(&self, key: &str) -> u32 {
        self.ledger
            .lock()
            .await
            .sends
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Whether the simulator still remembers a key (it was used, and not longer ago than
    /// the key lifetime).
    pub async fn remembers(&self, key: &str) -> bool {
        let ledger = self.ledger.lock().await;
        ledger.keys.get(key).is_some_and(|k| !self.expired(k))
    }

    /// Makes every lookup fail (the provider's search is down) until switched back.
    pub fn fail_lookups(&self, fail: bool) {
        self.lookups_fail.store(fail, Ordering::SeqCst);
    }

    fn expired(&self, key: &Key) -> bool {
        self.config
            .key_lifetime
            .is_some_and(|lifetime| key.first_used.elapsed() >= lifetime)
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
        let mut guard = self.ledger.lock().await;
        let ledger = &mut *guard;
        *ledger
            .sends
            .entry(request.idempotency_key.clone())
            .or_default() += 1;
        if ledger
            .keys
            .get(&request.idempotency_key)
            .is_some_and(|k| self.expired(k))
        {
            // Forgotten: from here on this key is new to the provider.
            ledger.keys.remove(&request.idempotency_key);
        }
        let key = ledger
            .keys
            .entry(request.idempotency_key.clone())
            .or_insert_with(|| Key {
                first_used: Instant::now(),
                attempts: 0,
                refund: None,
            });
        key.attempts += 1;
        if let Some(first) = key.refund.and_then(|i| ledger.refunds.get(i)) {
            return first.1.clone();
        }
        let attempts = key.attempts;
        let (outcome, recorded) = match behaviour(request.amount) {
            Behaviour::Final(code, gw, msg) => {
                let outcome = self.record(request, code, gw, msg);
                (outcome.clone(), Some(outcome))
            }
            Behaviour::FailFirst(n) if attempts <= n => (
                transport(
                    SfResultCode::SystemError,
                    request,
                    "simulated: provider unavailable (connection refused)",
                ),
                None,
            ),
            Behaviour::LostAnswer if attempts == 1 => (
                transport(
                    SfResultCode::Indeterminate,
                    request,
                    "simulated: timed out waiting for the answer",
                ),
                Some(self.record(
                    request,
                    SfResultCode::Success,
                    "succeeded",
                    "Refund succeeded.",
                )),
            ),
            Behaviour::LostRequest if attempts == 1 => (
                transport(
                    SfResultCode::Indeterminate,
                    request,
                    "simulated: timed out sending the request",
                ),
                None,
            ),
            Behaviour::FailFirst(_) | Behaviour::LostAnswer | Behaviour::LostRequest => {
                let outcome = self.record(
                    request,
                    SfResultCode::Success,
                    "succeeded",
                    "Refund succeeded.",
                );
                (outcome.clone(), Some(outcome))
            }
        };
        if let Some(recorded) = recorded {
            ledger
                .refunds
                .push((request.idempotency_key.clone(), recorded));
            key.refund = Some(ledger.refunds.len() - 1);
        }
        outcome
    }

    /// Finds the refund by its reference (the Refund id the service sent), not by its key:
    /// a forgotten key does not hide a refund that was made.
    async fn lookup(&self, request: &RefundRequest) -> Lookup {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        if self.lookups_fail.load(Ordering::SeqCst) {
            return Lookup::Unknown(Outcome {
                gateway_result_code: Some("api_error".into()),
                ..transport(
                    SfResultCode::Indeterminate,
                    request,
                    "simulated: the lookup failed",
                )
            });
        }
        let ledger = self.ledger.lock().await;
        let found = ledger
            .refunds
            .iter()
            .find(|(reference, _)| *reference == request.idempotency_key);
        match found {
            Some((_, outcome)) => Lookup::Found(outcome.clone()),
            None => Lookup::NotFound(Outcome {
                gateway_result_code: Some("resource_missing".into()),
                ..transport(
                    SfResultCode::Indeterminate,
                    request,
                    "no refund with this reference",
                )
            }),
        }
    }

    /// It settles at once: nothing is left to poll.
    fn polls_settlement(&self) -> bool {
        false
    }

    fn key_lifetime(&self) -> Option<Duration> {
        self.config.key_lifetime
    }

    /// Its lookup finds a refund by the reference it was sent with.
    fn lookup_by_reference(&self) -> bool {
        true
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

    fn forgetful(lifetime: Duration) -> Simulator {
        Simulator::new(SimulatorConfig {
            key_lifetime: Some(lifetime),
            ..SimulatorConfig::default()
        })
    }

    #[tokio::test]
    async fn a_key_is_remembered_for_its_lifetime_then_a_resend_pays_again() {
        let s = forgetful(Duration::from_secs(3600));
        let first = s.refund(&req("k", 1000)).await;
        assert_eq!(s.refund(&req("k", 1000)).await, first, "remembered");
        assert!(s.remembers("k").await);
        assert_eq!(s.settled().await, (1, 1000));
        assert_eq!(s.key_lifetime(), Some(Duration::from_secs(3600)));

        let s = forgetful(Duration::from_millis(1));
        s.refund(&req("k", 1000)).await;
        while s.remembers("k").await {
            std::thread::sleep(Duration::from_millis(1));
        }
        let again = s.refund(&req("k", 1000)).await;
        assert_eq!(again.code, SfResultCode::Success);
        assert_eq!(s.settled().await, (2, 2000), "a forgotten key pays twice");
        assert_eq!(s.attempts("k").await, 2);
    }

    #[tokio::test]
    async fn a_lookup_finds_a_refund_by_reference_after_its_key_is_forgotten() {
        let s = forgetful(Duration::from_millis(1));
        let made = s.refund(&req("k", 1000)).await;
        while s.remembers("k").await {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(s.lookup(&req("k", 1000)).await, Lookup::Found(made));
        assert!(matches!(
            s.lookup(&req("other", 1000)).await,
            Lookup::NotFound(_)
        ));
        s.fail_lookups(true);
        assert!(matches!(
            s.lookup(&req("k", 1000)).await,
            Lookup::Unknown(_)
        ));
        s.fail_lookups(false);
        assert!(matches!(s.lookup(&req("k", 1000)).await, Lookup::Found(_)));
    }
}
