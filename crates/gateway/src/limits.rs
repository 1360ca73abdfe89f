//! Per-gateway limits on provider calls, so that a burst of refunds waits its turn inside
//! the service instead of meeting the provider's throttling (Stripe answers 429
//! `lock_timeout` to overlapping refunds of one charge, and rate-limits accounts).
//!
//! A gateway may set `MaxConcurrentRequests` (calls in flight at once) and
//! `MaxRequestsPerSecond` (calls started per second). The [`Registry`](crate::Registry)
//! keeps one [`Limiter`] per gateway id, shared by every adapter it hands out for that
//! gateway, so the limits hold across all of a process's workers and reconciliation lookups
//! — and only within one process: processes sharing a PostgreSQL database each keep their own.
//!
//! The rate is a token bucket holding one token: calls start at least `1 / rate` seconds
//! apart, so no half-open second ever sees more than `rate` of them, whatever came before.
//! A call first waits for a concurrency permit (first come, first served), then for its
//! start time; its HTTP timeouts only run once it is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::{Lookup, Outcome, Provider, RefundRequest};

/// The limits a gateway sets; `None` is no limit. Values are at least 1 (checked at ingest;
/// a stored 0 is treated as no limit rather than as "never call").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GatewayLimits {
    /// Provider calls in flight at once.
    pub max_concurrent_requests: Option<u32>,
    /// Provider calls started per second.
    pub max_requests_per_second: Option<u32>,
}

impl GatewayLimits {
    /// The limits with zeros removed.
    fn effective(self) -> GatewayLimits {
        GatewayLimits {
            max_concurrent_requests: self.max_concurrent_requests.filter(|n| *n >= 1),
            max_requests_per_second: self.max_requests_per_second.filter(|n| *n >= 1),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        let e = self.effective();
        e.max_concurrent_requests.is_none() && e.max_requests_per_second.is_none()
    }
}

/// The shared state of one gateway's limits.
#[derive(Debug)]
pub struct Limiter {
    limits: GatewayLimits,
    permits: Option<Arc<Semaphore>>,
    pace: Option<Pace>,
}

/// A token bucket of one token: the earliest time the next call may start.
#[derive(Debug)]
struct Pace {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pace {
    fn new(per_second: u32) -> Pace {
        Pace {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: Mutex::new(None),
        }
    }

    /// Reserves the next start time and waits for it. A caller that gives up while waiting
    /// leaves its slot unused: the calls after it are never started sooner for it.
    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + self.interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Held for the length of one provider call.
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    pub fn new(limits: GatewayLimits) -> Limiter {
        let limits = limits.effective();
        Limiter {
            limits,
            permits: limits
                .max_concurrent_requests
                .map(|n| Arc::new(Semaphore::new(usize::try_from(n).unwrap_or(usize::MAX)))),
            pace: limits.max_requests_per_second.map(Pace::new),
        }
    }

    pub fn limits(&self) -> GatewayLimits {
        self.limits
    }

    /// Waits until a call may start under both limits; the call runs while the answer is held.
    pub async fn admit(&self) -> Admission {
        let permit = match &self.permits {
            // The semaphore is never closed, so acquiring only fails if it were; then
            // the call goes ahead rather than waiting for ever.
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        if let Some(pace) = &self.pace {
            pace.wait().await;
        }
        Admission { _permit: permit }
    }

    /// Calls waiting for a concurrency permit or running now, out of the limit (for tests
    /// and diagnostics): `None` without a concurrency limit.
    pub fn permits_free(&self) -> Option<usize> {
        self.permits.as_ref().map(|s| s.available_permits())
    }
}

/// An adapter whose calls go through its gateway's limiter.
pub(crate) struct Limited {
    pub(crate) inner: Arc<dyn Provider>,
    pub(crate) limiter: Arc<Limiter>,
}

#[async_trait]
impl Provider for Limited {
    async fn refund(&self, request: &RefundRequest) -> Outcome {
        let _admitted = self.limiter.admit().await;
        self.inner.refund(request).await
    }

    async fn lookup(&self, request: &RefundRequest) -> Lookup {
        let _admitted = self.limiter.admit().await;
        self.inner.lookup(request).await
    }

    fn polls_settlement(&self) -> bool {
        self.inner.polls_settlement()
    }

    fn key_lifetime(&self) -> Option<std::time::Duration> {
        self.inner.key_lifetime()
    }

    fn lookup_by_reference(&self) -> bool {
        self.inner.lookup_by_reference()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn limits(concurrent: Option<u32>, per_second: Option<u32>) -> GatewayLimits {
        GatewayLimits {
            max_concurrent_requests: concurrent,
            max_requests_per_second: per_second,
        }
    }

    #[test]
    fn zero_is_no_limit() {
        assert!(limits(None, None).is_unlimited());
        assert!(limits(Some(0), Some(0)).is_unlimited());
        assert!(!limits(Some(1), None).is_unlimited());
        assert!(!limits(None, Some(1)).is_unlimited());
        let limiter = Limiter::new(limits(Some(0), Some(3)));
        assert_eq!(limiter.limits(), limits(None, Some(3)));
        assert_eq!(limiter.permits_free(), None);
    }

    /// Ten calls at five per second: starts 200 ms apart, the last 1.8 s after the first
    /// (virtual time, so the figure is exact).
    #[tokio::test(start_paused = true)]
    async fn calls_start_one_interval_apart() {
        let limiter = Arc::new(Limiter::new(limits(None, Some(5))));
        let started = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let limiter = limiter.clone();
            calls.spawn(async move {
                let _a = limiter.admit().await;
                started.elapsed()
            });
        }
        let mut starts: Vec<Duration> = calls.join_all().await;
        starts.sort();
        let expected: Vec<Duration> = (0..10).map(|n| Duration::from_millis(200 * n)).collect();
        assert_eq!(starts, expected);
    }

    /// After a quiet spell the next call starts at once: unused time is not saved up into
    /// a burst.
    #[tokio::test(start_paused = true)]
    async fn idle_time_does_not_build_a_burst() {
        let limiter = Limiter::new(limits(None, Some(2)));
        limiter.admit().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let quiet = Instant::now();
        limiter.admit().await;
        assert_eq!(quiet.elapsed(), Duration::ZERO);
        limiter.admit().await;
        assert_eq!(quiet.elapsed(), Duration::from_millis(500));
    }

    /// With a concurrency limit of 2, never more than two admissions are held at once, and
    /// every call gets its turn.
    #[tokio::test(start_paused = true)]
    async fn at_most_the_limit_in_flight() {
        let limiter = Arc::new(Limiter::new(limits(Some(2), None)));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (limiter, in_flight, most) = (limiter.clone(), in_flight.clone(), most.clone());
            calls.spawn(async move {
                let _a = limiter.admit().await;
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        }
        assert_eq!(calls.join_all().await.len(), 10);
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(limiter.permits_free(), Some(2));
    }

    /// The registry hands every adapter of one gateway the same limiter, another gateway
    /// its own, and a gateway whose limits changed a new one.
    #[test]
    fn one_limiter_per_gateway() {
        let registry = crate::Registry::new(
            crate::SimulatorConfig::default(),
            crate::HostPolicy::with_loopback(),
        )
        .expect("registry");
        let config = |id: &str, limits: GatewayLimits| crate::GatewayConfig {
            provider_type: "Simulator".into(),
            gateway_id: Some(id.into()),
            limits,
            ..crate::GatewayConfig::default()
        };
        let two = limits(Some(2), None);
        let a = registry.limiter(&config("gw-a", two)).expect("limited");
        let again = registry.limiter(&config("gw-a", two)).expect("limited");
        assert!(Arc::ptr_eq(&a, &again));
        let b = registry.limiter(&config("gw-b", two)).expect("limited");
        assert!(!Arc::ptr_eq(&a, &b));
        let changed = registry
            .limiter(&config("gw-a", limits(Some(3), None)))
            .expect("limited");
        assert!(!Arc::ptr_eq(&a, &changed));
        assert_eq!(changed.permits_free(), Some(3));
        assert!(registry
            .limiter(&config("gw-a", limits(None, None)))
            .is_none());
        assert!(registry.provider(&config("gw-a", two)).is_ok());
    }

    /// A caller that gives up while waiting for its turn returns its permit.
    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_frees_its_place() {
        let limiter = Arc::new(Limiter::new(limits(Some(1), None)));
        let held = limiter.admit().await;
        let waiting = tokio::time::timeout(Duration::from_millis(10), limiter.admit()).await;
        assert!(waiting.is_err(), "the second call waits for the first");
        drop(held);
        assert_eq!(limiter.permits_free(), Some(1));
        let _again = tokio::time::timeout(Duration::from_millis(10), limiter.admit())
            .await
            .expect("admitted once the first call ended");
    }
}
