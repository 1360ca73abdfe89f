//! Finding out what became of refunds after the provider's first answer left it open.
//!
//! - **Unknown outcomes** (`Indeterminate`, the refund is `Draft`): each is looked up by its
//!   idempotency key; one the provider never received is sent again with the same key; one
//!   that stays unknown past the give-up time is handed to a person, money still reserved.
//! - **Later settlement** (`Pending`, for providers that are polled, such as Stripe): each
//!   is looked up until the provider reports it settled or failed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use refunds_domain::{ObjectType, RefundStatus, SfId, SfResultCode};
use refunds_gateway::{Lookup, Outcome, Provider, RefundRequest, Registry};
use refunds_store::refunds::{self as sql, NewProcessException, RefundWork};
use refunds_store::{now_ms, Db};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

use crate::settle::{
    finish_call, finish_pending, format_money, gateway_config, request_for, settle_with,
    start_call, Interaction, Then,
};
use crate::{keys, ms, timed, JobError, QueueConfig};

/// What this process's reconciler has done since it started, for `/metrics`. Cheap to
/// clone; clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct ReconcileStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    in_flight: AtomicU64,
    found: AtomicU64,
    not_found: AtomicU64,
    unknown: AtomicU64,
    failures: AtomicU64,
}

/// A reading of [`ReconcileStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileCounts {
    /// Lookups running now (including those waiting for their gateway's limits).
    pub in_flight: u64,
    /// Provider lookups by what they answered: the refund was found, the provider never
    /// received it, or the lookup itself failed.
    pub found: u64,
    pub not_found: u64,
    pub unknown: u64,
    /// Lookups that ended in an internal error or a panic (each ends only itself).
    pub failures: u64,
}

impl ReconcileStats {
    pub fn counts(&self) -> ReconcileCounts {
        let c = &self.0;
        ReconcileCounts {
            in_flight: c.in_flight.load(Ordering::Relaxed),
            found: c.found.load(Ordering::Relaxed),
            not_found: c.not_found.load(Ordering::Relaxed),
            unknown: c.unknown.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    fn looked_up(&self, lookup: &Lookup) {
        let counter = match lookup {
            Lookup::Found(_) => &self.0.found,
            Lookup::NotFound(_) => &self.0.not_found,
            Lookup::Unknown(_) => &self.0.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self) {
        self.0.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a lookup as in flight for as long as it lives (a panic drops it too).
struct InFlight(ReconcileStats);

impl InFlight {
    fn new(stats: ReconcileStats) -> InFlight {
        stats.0.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0 .0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A refund's adapter that counts what its lookups answered.
struct Counted {
    inner: Arc<dyn Provider>,
    stats: ReconcileStats,
}

#[async_trait]
impl Provider for Counted {
    async fn refund(&self, request: &RefundRequest) -> Outcome {
        self.inner.refund(request).await
    }

    async fn lookup(&self, request: &RefundRequest) -> Lookup {
        let lookup = self.inner.lookup(request).await;
        self.stats.looked_up(&lookup);
        lookup
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

/// The lookups this process has in flight: at most `limit`, each in a task of its own, so
/// one that fails or panics ends only itself. A refund is never looked up twice at once
/// here (its next lookup may fall due while a slow one is still running), and one whose
/// lookup failed rests for `rest` before it is tried again: its lookup time did not move,
/// so it would otherwise head every pass and, failing each time, take a place from the others.
struct Lookups {
    limit: usize,
    rest: Duration,
    tasks: JoinSet<Result<bool, JobError>>,
    refunds: HashMap<tokio::task::Id, String>,
    resting: HashMap<String, tokio::time::Instant>,
    stats: ReconcileStats,
}

impl Lookups {
    fn new(limit: usize, rest: Duration, stats: ReconcileStats) -> Lookups {
        Lookups {
            limit: limit.max(1),
            rest,
            tasks: JoinSet::new(),
            refunds: HashMap::new(),
            resting: HashMap::new(),
            stats,
        }
    }

    /// Refunds that are in flight or resting, which a pass skips.
    fn skipped(&mut self) -> usize {
        let now = tokio::time::Instant::now();
        self.resting.retain(|_, until| *until > now);
        self.tasks.len() + self.resting.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn free(&self) -> usize {
        self.limit.saturating_sub(self.tasks.len())
    }

    /// Starts `lookup` of `refund_id` if there is room and that refund is not in flight
    /// already. The lookup answers whether it took the refund (another process may have).
    fn start<F>(&mut self, refund_id: &str, lookup: F) -> bool
    where
        F: Future<Output = Result<bool, JobError>> + Send + 'static,
    {
        let resting = self
            .resting
            .get(refund_id)
            .is_some_and(|until| *until > tokio::time::Instant::now());
        if self.free() == 0 || resting || self.refunds.values().any(|r| r == refund_id) {
            return false;
        }
        let guard = InFlight::new(self.stats.clone());
        let handle = self.tasks.spawn(async move {
            let _in_flight = guard;
            lookup.await
        });
        self.refunds.insert(handle.id(), refund_id.to_string());
        true
    }

    /// Waits for the next lookup to end; `None` when none is in flight. Answers whether it
    /// took its refund.
    async fn join_next(&mut self) -> Option<bool> {
        let joined = self.tasks.join_next_with_id().await?;
        Some(self.ended(joined))
    }

    /// Collects the lookups that have ended, without waiting.
    fn reap(&mut self) {
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            self.ended(joined);
        }
    }

    fn ended(
        &mut self,
        joined: Result<(tokio::task::Id, Result<bool, JobError>), JoinError>,
    ) -> bool {
        let (refund, failure) = match joined {
            Ok((id, Ok(taken))) => {
                self.refunds.remove(&id);
                return taken;
            }
            Ok((id, Err(e))) => (self.refunds.remove(&id), e.to_string()),
            Err(e) if e.is_panic() => (
                self.refunds.remove(&e.id()),
                "it failed unexpectedly (a panic)".to_string(),
            ),
            // Cancelled: the runtime is shutting down.
            Err(e) => {
                self.refunds.remove(&e.id());
                return false;
            }
        };
        let refund = refund.unwrap_or_default();
        tracing::error!(refund = %refund, error = %failure, "looking the refund up failed; it is tried again later");
        self.stats.failed();
        self.resting
            .insert(refund, tokio::time::Instant::now() + self.rest);
        true
    }
}

/// What every lookup needs, shared by the tasks.
#[derive(Clone)]
struct Reconciler {
    db: Db,
    config: Arc<QueueConfig>,
    registry: Registry,
    stats: ReconcileStats,
}

impl Reconciler {
    /// Starts the due lookups there is room for; answers how many started.
    async fn start_due(&self, lookups: &mut Lookups) -> Result<usize, JobError> {
        lookups.reap();
        let free = lookups.free();
        if free == 0 {
            return Ok(0);
        }
        let now = now_ms();
        // Enough to fill the room even if some of them are skipped.
        let want = i64::try_from(free + lookups.skipped()).unwrap_or(i64::MAX);
        let unknown = sql::due_reconciliations(&self.db, now, want).await?;
        let settling = sql::due_settlements(&self.db, now, want).await?;
        let mut started = 0;
        // Alternately, so that neither kind waits behind a backlog of the other.
        let (mut unknown, mut settling) = (unknown.into_iter(), settling.into_iter());
        loop {
            let next = [unknown.next(), settling.next()];
            if next.iter().all(Option::is_none) {
                break;
            }
            for w in next.into_iter().flatten() {
                if lookups.free() == 0 {
                    return Ok(started);
                }
                let id = w.id.clone();
                if lookups.start(id.as_str(), self.clone().look_up(w)) {
                    started += 1;
                }
            }
        }
        Ok(started)
    }

    /// One refund's lookup. False if another worker took it first.
    async fn look_up(self, w: RefundWork) -> Result<bool, JobError> {
        let (db, config) = (&self.db, &*self.config);
        let now = now_ms();
        if !take(db, config, &w, now).await? {
            return Ok(false);
        }
        let provider = self.registry.provider(&gateway_config(&w)).map_err(|e| {
            JobError::Failed(format!("cannot look the refund up: no provider: {e}"))
        })?;
        let provider = Counted {
            inner: provider,
            stats: self.stats.clone(),
        };
        if w.status == RefundStatus::Pending {
            follow_settlement(db, &provider, &w).await?;
        } else if now.saturating_sub(w.reconcile_since.unwrap_or(now))
            >= ms(config.reconcile_give_up)
        {
            hand_over(db, &w, now).await?;
        } else {
            resolve_unknown(db, config, &provider, &w).await?;
        }
        Ok(true)
    }
}

/// The reconciler of one process: runs until `shutdown` turns true, with up to
/// `reconcile_concurrency` lookups in flight, then waits for those to end.
pub(crate) async fn run(
    db: Db,
    config: QueueConfig,
    registry: Registry,
    stats: ReconcileStats,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = config
        .poll_interval
        .min(config.reconcile_delay)
        .max(Duration::from_millis(10));
    let mut lookups = Lookups::new(
        config.reconcile_concurrency,
        config.reconcile_delay,
        stats.clone(),
    );
    let reconciler = Reconciler {
        db,
        config: Arc::new(config),
        registry,
        stats,
    };
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = reconciler.start_due(&mut lookups).await {
            tracing::error!(error = %e, "reconciliation pass failed");
        }
        // Full: the next pass comes when a lookup ends. Otherwise on the next tick.
        let full = lookups.free() == 0;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            Some(_) = lookups.join_next(), if full => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    // No new lookups; the ones in flight end (their provider timeouts bound them).
    while lookups.join_next().await.is_some() {}
}

/// One pass over the lookups that are due, up to `reconcile_concurrency` of them at once;
/// returns when they have ended. Answers how many refunds were looked up. A lookup that
/// fails is logged and ends only itself.
pub async fn reconcile_due(
    db: &Db,
    config: &QueueConfig,
    registry: &Registry,
) -> Result<usize, JobError> {
    let stats = ReconcileStats::default();
    let mut lookups = Lookups::new(
        config.reconcile_concurrency,
        config.reconcile_delay,
        stats.clone(),
    );
    let reconciler = Reconciler {
        db: db.clone(),
        config: Arc::new(config.clone()),
        registry: registry.clone(),
        stats,
    };
    reconciler.start_due(&mut lookups).await?;
    let mut done = 0;
    while let Some(taken) = lookups.join_next().await {
        done += usize::from(taken);
    }
    Ok(done)
}

/// Counts the lookup and pushes the next one out (doubling, capped), which also keeps
/// other workers off this refund meanwhile. False if another worker took it.
async fn take(db: &Db, config: &QueueConfig, w: &RefundWork, now: i64) -> Result<bool, JobError> {
    let backoff = ms(config.reconcile_delay).saturating_mul(1i64 << w.lookups.clamp(0, 30));
    let next = now.saturating_add(backoff.min(ms(config.reconcile_max_delay)));
    let mut tx = db.begin().await?;
    let taken = sql::take_reconciliation(&mut tx, w.id.as_str(), w.lookups, next, now).await?;
    tx.commit().await?;
    Ok(taken)
}

async fn resolve_unknown(
    db: &Db,
    config: &QueueConfig,
    provider: &dyn Provider,
    w: &RefundWork,
) -> Result<(), JobError> {
    let final_answer = |code: SfResultCode| {
        if code == SfResultCode::Success || code.is_failure() {
            settle_with(provider, config.reconcile_delay)
        } else {
            Then::LogOnly
        }
    };
    if keys::lookup_would_resend(db, provider, w).await? {
        return keys::hand_over(db, None, w, keys::NO_LOOKUP).await;
    }
    let request = request_for(w);
    let log_id = start_call(db, None, w, Interaction::RefundLookup).await?;
    let (lookup, duration) = timed(provider.lookup(&request)).await;
    let (outcome, not_found, then) = match lookup {
        Lookup::Found(outcome) => {
            tracing::info!(refund = %w.id, code = %outcome.code, "reconciliation found the refund");
            let then = final_answer(outcome.code);
            (outcome, false, then)
        }
        Lookup::Unknown(outcome) => (outcome, false, Then::LogOnly),
        Lookup::NotFound(outcome) => (outcome, true, Then::LogOnly),
    };
    finish_call(db, None, w, &log_id, &outcome, not_found, duration, then).await?;
    if not_found {
        // The request never arrived: sending it again with the same key is safe.
        let log_id = start_call(db, None, w, Interaction::ReferencedRefund).await?;
        let (outcome, duration) = timed(provider.refund(&request)).await;
        tracing::info!(refund = %w.id, code = %outcome.code, "reconciliation sent the refund again");
        let then = final_answer(outcome.code);
        finish_call(db, None, w, &log_id, &outcome, false, duration, then).await?;
    }
    Ok(())
}

async fn follow_settlement(
    db: &Db,
    provider: &dyn Provider,
    w: &RefundWork,
) -> Result<(), JobError> {
    let log_id = start_call(db, None, w, Interaction::RefundLookup).await?;
    let (lookup, duration) = timed(provider.lookup(&request_for(w))).await;
    match lookup {
        Lookup::Found(outcome)
            if outcome.code == SfResultCode::Success && !outcome.settles_later =>
        {
            finish_pending(db, w, &log_id, &outcome, true, duration).await?;
        }
        Lookup::Found(outcome) if outcome.code.is_failure() => {
            finish_pending(db, w, &log_id, &outcome, false, duration).await?;
        }
        Lookup::Found(outcome) | Lookup::NotFound(outcome) | Lookup::Unknown(outcome) => {
            finish_call(
                db,
                None,
                w,
                &log_id,
                &outcome,
                false,
                duration,
                Then::LogOnly,
            )
            .await?;
        }
    }
    Ok(())
}

async fn hand_over(db: &Db, w: &RefundWork, now: i64) -> Result<(), JobError> {
    let pe_id = SfId::generate(ObjectType::ProcessException).into_string();
    let message = format!(
        "{} {} ({}) is unknown; its money stays reserved until a person settles it",
        sql::HAND_OVER_MESSAGE,
        w.id,
        format_money(w.amount)
    );
    let description = format!(
        "The provider could not confirm refund {} after {} lookups. Check the provider's dashboard for \
         idempotency key {} and settle the refund by hand: set its Status to Processed (refunded) or Canceled (not).",
        w.id, w.lookups, w.id
    );
    let mut tx = db.begin().await?;
    sql::hand_over_reconciliation(
        &mut tx,
        w.id.as_str(),
        &NewProcessException::about_refund(w, &pe_id, &message, &description, now),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(refund = %w.id, "reconciliation gave up; handed to a person");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A lookup that errors and one that panics end only themselves: the others finish,
    /// each failure is counted once, and nothing stays counted as in flight.
    #[tokio::test]
    async fn a_failing_or_panicking_lookup_ends_only_itself() {
        let stats = ReconcileStats::default();
        let mut lookups = Lookups::new(8, Duration::from_secs(60), stats.clone());
        let (release, released) = watch::channel(false);
        for n in 0..4 {
            let mut released = released.clone();
            assert!(lookups.start(&format!("ok-{n}"), async move {
                let _ = released.wait_for(|r| *r).await;
                Ok(true)
            }));
        }
        assert!(lookups.start("errs", async {
            Err(JobError::Failed("the database went away".into()))
        }));
        assert!(lookups.start("panics", async {
            panic!("a bug in one lookup");
        }));
        assert_eq!(stats.counts().in_flight, 6);
        // The two failures end while the others are still waiting.
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while stats.counts().failures < 2 {
                lookups.join_next().await;
            }
        })
        .await;
        assert!(ended.is_ok(), "the failures ended");
        assert_eq!(lookups.len(), 4, "the other lookups still run");
        assert_eq!(stats.counts().in_flight, 4);
        release.send(true).unwrap();
        let mut taken = 0;
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(t) = lookups.join_next().await {
                taken += usize::from(t);
            }
        })
        .await
        .expect("the other lookups finished");
        assert_eq!(taken, 4);
        let counts = stats.counts();
        assert_eq!((counts.failures, counts.in_flight), (2, 0), "{counts:?}");
        assert!(lookups.refunds.is_empty());
        // The two that failed rest; the others may run again at once.
        assert!(!lookups.start("errs", async { Ok(true) }));
        assert!(!lookups.start("panics", async { Ok(true) }));
        assert!(lookups.start("ok-0", async { Ok(true) }));
        assert_eq!(lookups.skipped(), 3);
    }

    /// A failed refund's rest ends: then it is tried again.
    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_rests_then_runs_again() {
        let stats = ReconcileStats::default();
        let mut lookups = Lookups::new(4, Duration::from_millis(500), stats.clone());
        assert!(lookups.start("a", async { Err(JobError::Failed("no".into())) }));
        assert_eq!(lookups.join_next().await, Some(true));
        assert!(!lookups.start("a", async { Ok(true) }), "resting");
        tokio::time::sleep(Duration::from_millis(499)).await;
        assert!(!lookups.start("a", async { Ok(true) }), "still resting");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(lookups.skipped(), 0);
        assert!(lookups.start("a", async { Ok(true) }), "rested");
    }

    /// No more than the limit at once, and never one refund twice at once.
    #[tokio::test]
    async fn bounded_and_one_lookup_per_refund() {
        let mut lookups = Lookups::new(2, Duration::from_secs(60), ReconcileStats::default());
        let (release, released) = watch::channel(false);
        let wait = |mut r: watch::Receiver<bool>| async move {
            let _ = r.wait_for(|v| *v).await;
            Ok(true)
        };
        assert!(lookups.start("a", wait(released.clone())));
        assert!(
            !lookups.start("a", wait(released.clone())),
            "a is in flight already"
        );
        assert!(lookups.start("b", wait(released.clone())));
        assert_eq!(lookups.free(), 0);
        assert!(!lookups.start("c", wait(released.clone())), "full");
        release.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while lookups.join_next().await.is_some() {}
        })
        .await
        .expect("both finished");
        assert_eq!(lookups.free(), 2);
        assert!(
            lookups.start("a", wait(released.clone())),
            "a may run again"
        );
    }
}
