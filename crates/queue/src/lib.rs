//! Background operations: the worker loop that claims them with a lease, and the jobs
//! that run them — the ensure-refunds job and the reconciliation of refunds whose outcome
//! a provider left unknown.
//!
//! Invariants this crate keeps:
//! - no database transaction is open while a provider is called (a provider can take
//!   seconds; a transaction must not);
//! - every write of a run presents the run's lease token (fencing), so a run that lost its
//!   lease to a rescuer cannot finish anything twice;
//! - a refund is written as `Draft`, with its idempotency key, before its provider is
//!   called, so a crash at any point is recovered by asking again with the same key —
//!   and once the provider may have forgotten that key, by looking the refund up by
//!   reference first, never by sending it again on the key's word;
//! - an admitted request's money is its own: [`admit()`] sets it aside in the enqueue
//!   transaction, the plan takes it over, any other ending gives it back;
//! - the operations of one order plan one at a time, in the order they were admitted; a
//!   planned operation's provider calls run beside the next one's plan;
//! - nothing loops and nothing is stranded: a panicking job fails its run, an operation is
//!   rescued at most [`MAX_RESCUES`] times, and one that fails for good hands its unfinished
//!   refunds to reconciliation and raises a process exception.

mod admit;
mod keys;
mod outside;
mod reconcile;
mod refund_job;
mod runner;
mod settle;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use refunds_domain::AllocationRule;
use refunds_store::ops::{self, Admitted, Claimed, NewOperation};
use refunds_store::{Db, StoreError, Tx};
use serde::{Deserialize, Serialize};

pub use admit::{admit, AdmitRequest, Refusal};
pub use outside::{apply_adyen_delivery, settle_refund_by_hand, ByHand, Delivery};
pub use reconcile::{reconcile_due, ReconcileCounts, ReconcileStats};
pub use refund_job::EnsureRefundsJob;
pub use runner::{Runner, Started, MAX_RESCUES};

/// The `Type` of ensure-refunds background operations.
pub const ENSURE_REFUNDS: &str = "EnsureRefunds";

/// Tunables of the workers and the jobs.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Operations run at once by one process.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat; also the operation's `Timeout`.
    pub lease: Duration,
    /// The longest an idle worker sleeps without looking for work (wake-ups usually come sooner).
    pub poll_interval: Duration,
    /// `RetryLimit` and `RetryBackoff` of new operations.
    pub retry_limit: i64,
    pub retry_backoff: Duration,
    /// Provider calls per refund when the provider cannot be reached (SystemError),
    /// and the pause before the first repeat (doubling after).
    pub provider_attempts: u32,
    pub provider_backoff: Duration,
    /// First reconciliation lookup after an unknown outcome, the longest pause between
    /// lookups, and when to stop and ask a person.
    pub reconcile_delay: Duration,
    pub reconcile_max_delay: Duration,
    pub reconcile_give_up: Duration,
    /// Reconciliation lookups one process has in flight at once.
    pub reconcile_concurrency: usize,
    pub allocation_rule: AllocationRule,
    /// On shutdown, how long running operations may take to finish before they are
    /// stopped and their leases handed back.
    pub shutdown_grace: Duration,
    /// PostgreSQL: how often this process heartbeats, and how long another process may be
    /// silent before its running operations are rescued.
    pub process_heartbeat: Duration,
    pub process_silence: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            concurrency: 32,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            retry_limit: 3,
            retry_backoff: Duration::from_millis(1000),
            provider_attempts: 4,
            provider_backoff: Duration::from_millis(200),
            reconcile_delay: Duration::from_millis(5000),
            reconcile_max_delay: Duration::from_secs(3600),
            reconcile_give_up: Duration::from_secs(24 * 3600),
            reconcile_concurrency: 32,
            allocation_rule: AllocationRule::default(),
            shutdown_grace: Duration::from_secs(30),
            process_heartbeat: Duration::from_secs(1),
            process_silence: Duration::from_secs(5),
        }
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Awaits a provider call; answers its result and how long it took, in milliseconds.
pub(crate) async fn timed<T>(call: impl std::future::Future<Output = T>) -> (T, i64) {
    let started = std::time::Instant::now();
    let result = call.await;
    (result, ms(started.elapsed()))
}

/// Delay before the n-th retry of an operation (n ≥ 1): (2^n − 1) × backoff.
pub fn retry_delay_ms(n: i64, backoff_ms: i64) -> i64 {
    let factor = 1i64
        .checked_shl(u32::try_from(n.clamp(0, 40)).unwrap_or(40))
        .unwrap_or(i64::MAX)
        - 1;
    factor.saturating_mul(backoff_ms.max(0))
}

/// Why a run failed. Provider answers are never errors: only internal failures are.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid operation payload: {0}")]
    Payload(String),
    #[error("{0}")]
    Failed(String),
}

impl JobError {
    pub(crate) fn lease_lost(&self) -> bool {
        matches!(self, JobError::Store(StoreError::LeaseLost(_)))
    }
}

/// A run of one operation: what the job may use.
pub struct JobContext {
    pub db: Db,
    pub op: Claimed,
    /// Set once the job has completed the operation in its own last transaction, so the
    /// runner does not spend a transaction on it.
    completed: Arc<AtomicBool>,
}

impl JobContext {
    pub(crate) fn new(db: Db, op: Claimed) -> JobContext {
        JobContext {
            db,
            op,
            completed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the operation `Complete` inside `tx`, the job's last write of this run: the
    /// run's final answer and the operation's completion then commit together. Call
    /// [`JobContext::completed_with`] once `tx` has committed.
    pub(crate) async fn complete_in(&self, tx: &mut Tx) -> Result<(), JobError> {
        ops::complete_in(
            tx,
            &self.op.id,
            self.op.lease_token,
            refunds_store::now_ms(),
        )
        .await?;
        Ok(())
    }

    /// The transaction that called [`JobContext::complete_in`] committed.
    pub(crate) fn completed_with(&self) {
        self.completed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn completion(&self) -> Arc<AtomicBool> {
        self.completed.clone()
    }

    /// Opens a transaction that only commits if this run still holds its lease.
    pub async fn fenced(&self) -> Result<Tx, JobError> {
        let mut tx = self.db.begin().await?;
        ops::fence(
            &mut tx,
            &self.op.id,
            self.op.lease_token,
            refunds_store::now_ms(),
        )
        .await?;
        Ok(tx)
    }
}

/// A kind of background operation.
#[async_trait]
pub trait Job: Send + Sync + 'static {
    /// The operation `Type` this job runs.
    fn job_type(&self) -> &'static str;
    async fn run(&self, ctx: &JobContext) -> Result<(), JobError>;

    /// Called once, with the lease still held, when a run failed with no retry left:
    /// the job hands over what it leaves unfinished and says so where a person will see
    /// it. Does nothing unless a job says otherwise.
    async fn give_up(&self, _ctx: &JobContext, _error: &str) -> Result<(), JobError> {
        Ok(())
    }
}

/// The validated request an ensure-refunds operation carries (amounts in minor units).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsureRefunds {
    pub order_summary_id: String,
    pub credit_memo_id: Option<String>,
    pub excess_funds_amount: i64,
    pub invoices_to_pay: Vec<String>,
    pub sequences: Vec<SequencePayload>,
    pub allow_partial: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencePayload {
    pub order_payment_summary_id: String,
    /// `None`: as much as possible.
    pub amount: Option<i64>,
}

/// Enqueues an ensure-refunds operation in the caller's transaction, with what its
/// admission set aside (see [`admit()`]).
pub(crate) async fn enqueue_with(
    tx: &mut Tx,
    config: &QueueConfig,
    operation_id: &str,
    request: &EnsureRefunds,
    admitted: Option<Admitted<'_>>,
    now: i64,
) -> Result<(), StoreError> {
    let payload = serde_json::to_string(request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    ops::enqueue(
        tx,
        &NewOperation {
            id: operation_id,
            name: &format!("Ensure refunds for {}", request.order_summary_id),
            ty: ENSURE_REFUNDS,
            parent_key: &request.order_summary_id,
            payload: &payload,
            retry_limit: config.retry_limit,
            retry_backoff_ms: ms(config.retry_backoff),
            timeout_ms: ms(config.lease),
            now,
            admitted,
        },
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_plus_one() {
        assert_eq!(retry_delay_ms(1, 1000), 1000);
        assert_eq!(retry_delay_ms(2, 1000), 3000);
        assert_eq!(retry_delay_ms(3, 1000), 7000);
        assert_eq!(retry_delay_ms(4, 250), 3750);
        assert_eq!(retry_delay_ms(0, 1000), 0);
        assert!(
            retry_delay_ms(100, i64::MAX) > 0,
            "saturates instead of overflowing"
        );
    }
}
