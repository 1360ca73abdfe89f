//! The worker loop: claim, run with a heartbeat, finish or schedule a retry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use refunds_store::ops::{self, Claimed};
use refunds_store::processes;
use refunds_store::{now_ms, Backend, Db};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::{ms, reconcile, retry_delay_ms, Job, JobContext, JobError, QueueConfig};

/// Rescues (takeovers after a worker stopped renewing its lease) an operation may have
/// before it is given up as failed.
pub const MAX_RESCUES: i64 = 5;

/// Runs background operations for one process.
#[derive(Clone)]
pub struct Runner {
    db: Db,
    config: QueueConfig,
    jobs: Arc<HashMap<&'static str, Arc<dyn Job>>>,
    worker_id: String,
    registry: refunds_gateway::Registry,
    reconcile_stats: reconcile::ReconcileStats,
}

impl Runner {
    pub fn new(db: Db, config: QueueConfig, registry: refunds_gateway::Registry) -> Runner {
        let worker_id = format!(
            "worker-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut runner = Runner {
            db,
            config,
            jobs: Arc::new(HashMap::new()),
            worker_id,
            registry,
            reconcile_stats: reconcile::ReconcileStats::default(),
        };
        let refund_job =
            crate::EnsureRefundsJob::new(runner.config.clone(), runner.registry.clone());
        runner.register(Arc::new(refund_job));
        runner
    }

    /// Adds a job type (tests add their own to exercise the queue itself).
    pub fn register(&mut self, job: Arc<dyn Job>) {
        let mut jobs: HashMap<_, _> = self.jobs.as_ref().clone();
        jobs.insert(job.job_type(), job);
        self.jobs = Arc::new(jobs);
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// What this runner's reconciler has done (shared with every clone), for `/metrics`.
    pub fn reconcile_stats(&self) -> reconcile::ReconcileStats {
        self.reconcile_stats.clone()
    }

    /// Claims what is runnable now (up to the free capacity) and runs it to the end.
    /// Returns how many operations ran. Used by the loop and by tests.
    pub async fn run_once(&self) -> Result<usize, refunds_store::StoreError> {
        let claimed = self.claim(self.config.concurrency).await?;
        let n = claimed.len();
        let mut set = JoinSet::new();
        for op in claimed {
            let this = self.clone();
            set.spawn(async move { this.execute(op).await });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, refunds_store::StoreError> {
        ops::claim(
            &self.db,
            &self.worker_id,
            &format!("refunds://{}", self.worker_id),
            i64::try_from(limit).unwrap_or(i64::MAX),
            ms(self.config.lease),
            now_ms(),
        )
        .await
    }

    /// Takes this process's place among those running workers, then runs until
    /// `shutdown` (see [`Runner::start`] and [`Started::run`]).
    pub async fn run(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), refunds_store::StoreError> {
        self.start().await?.run(shutdown).await
    }

    /// Takes this process's place among those running workers. On SQLite: the file's
    /// worker lock (failing if another process runs workers on it), then every lease is
    /// taken over at once, since their workers are gone. On PostgreSQL: this process is
    /// registered, and heartbeats once it runs.
    pub async fn start(self) -> Result<Started, refunds_store::StoreError> {
        let lock = match self.db.backend() {
            Backend::Sqlite => {
                let lock = processes::lock_sqlite_workers(&self.db)?;
                let taken = processes::take_over_every_lease(&self.db, &lock).await?;
                if taken > 0 {
                    tracing::info!(
                        operations = taken,
                        "took over the operations of a process that is gone"
                    );
                }
                Some(lock)
            }
            Backend::Postgres => {
                processes::heartbeat(&self.db, &self.worker_id).await?;
                None
            }
        };
        Ok(Started {
            runner: self,
            _lock: lock,
        })
    }
}

/// A runner that has taken its place (see [`Runner::start`]).
pub struct Started {
    runner: Runner,
    _lock: Option<processes::WorkerLock>,
}

impl Started {
    /// Runs until `shutdown` turns true: operations up to `concurrency` at once, plus the
    /// reconciliation of unknown refund outcomes (a task of its own, up to
    /// `reconcile_concurrency` lookups at once), and on PostgreSQL this process's
    /// heartbeat and the rescue of processes that fell silent. On shutdown it stops
    /// claiming, lets the operations and lookups in flight finish for up to
    /// `shutdown_grace`, stops the rest, hands back the leases it still holds (another
    /// process rescues those operations at once) and deregisters.
    pub async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), refunds_store::StoreError> {
        let this = &self.runner;
        if this.db.backend() == Backend::Postgres {
            tokio::spawn(this.db.clone().forward_wakeups(shutdown.clone()));
            tokio::spawn(process_heartbeat(
                this.db.clone(),
                this.worker_id.clone(),
                this.config.clone(),
                shutdown.clone(),
            ));
        }
        let mut reconciler = tokio::spawn(reconcile::run(
            this.db.clone(),
            this.config.clone(),
            this.registry.clone(),
            this.reconcile_stats.clone(),
            shutdown.clone(),
        ));
        let concurrency = this.config.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        let wakeup = this.db.wakeup();
        let mut running = JoinSet::new();
        // Whether the last claim took all it asked for, so more work is likely waiting. While
        // it is, free slots are claimed a batch at a time (a quarter of them at least), not
        // one per finished operation: a claim is a write transaction, and with a backlog
        // one per operation would cost as much as the operation's own. Without a backlog
        // a single free slot is claimed at once, so new work starts without delay.
        let mut backlog = false;
        let refill = (concurrency / 4).max(1);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let free = permits.available_permits();
            let batch = if backlog { refill } else { 1 };
            if free >= batch {
                match this.claim(free).await {
                    Ok(ops) => {
                        backlog = ops.len() == free;
                        for op in ops {
                            let Ok(permit) = permits.clone().acquire_owned().await else {
                                break;
                            };
                            let this = this.clone();
                            running.spawn(async move {
                                this.execute(op).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "claiming background operations failed"),
                }
            }
            while running.try_join_next().is_some() {}
            if backlog && permits.available_permits() >= refill {
                continue;
            }
            // Waiting for slots to free up with work queued: a finished operation wakes
            // this loop, and there is no need to ask when the next work is due.
            let sleep = if backlog && !running.is_empty() {
                this.config.poll_interval
            } else {
                this.idle_sleep().await
            };
            tokio::select! {
                _ = wakeup.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        let grace = tokio::time::Instant::now() + this.config.shutdown_grace;
        let drained = tokio::time::timeout_at(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                operations = running.len(),
                "operations still running after the shutdown grace; stopping them"
            );
            running.abort_all();
            while running.join_next().await.is_some() {}
        }
        // The reconciler's lookups get what is left of the same grace.
        match tokio::time::timeout_at(grace, &mut reconciler).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the reconciler stopped unexpectedly"),
            Err(_) => {
                tracing::warn!("lookups still running after the shutdown grace; stopping them");
                reconciler.abort();
            }
        }
        let handed_back = processes::leave(&this.db, &this.worker_id).await?;
        if handed_back > 0 {
            tracing::info!(
                operations = handed_back,
                "handed back the leases of unfinished operations"
            );
        }
        Ok(())
    }
}

impl Runner {
    /// Sleep until the next known due time, but never longer than the poll interval.
    async fn idle_sleep(&self) -> Duration {
        let poll = self.config.poll_interval;
        match ops::next_due(&self.db).await {
            Ok(Some(due)) => {
                let wait = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
                poll.min(Duration::from_millis(wait.max(5)))
            }
            _ => poll,
        }
    }

    /// One run of one claimed operation.
    async fn execute(&self, op: Claimed) {
        let Some(job) = self.jobs.get(op.ty.as_str()).cloned() else {
            tracing::error!(operation = %op.id, ty = %op.ty, "no job registered for this operation type");
            let _ = ops::fail(
                &self.db,
                &op.id,
                op.lease_token,
                "no worker can run this operation type",
                None,
                now_ms(),
            )
            .await;
            return;
        };
        // A run that keeps stopping its worker (killed, out of memory, aborted: anything a
        // panic check cannot catch) would be rescued for ever, holding up its order.
        if op.rescues > MAX_RESCUES {
            let error = format!(
                "its worker stopped {} times while running it; it is not run again",
                op.rescues
            );
            if let Err(e) = self.fail(&*job, &op, &error, None).await {
                tracing::warn!(operation = %op.id, error = %e, "could not record the end of the operation");
            }
            return;
        }
        // Aborted when this run ends in any way (also if its task is cancelled or panics),
        // so a dead run stops renewing its lease and gets rescued.
        let heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            self.db.clone(),
            op.clone(),
            self.config.lease,
        )));
        let ctx = JobContext::new(self.db.clone(), op.clone());
        let completed = ctx.completion();
        let job_for_run = job.clone();
        let started = std::time::Instant::now();
        // In its own task, so that a panic in the job is this run's failure (retried as
        // any error is, up to RetryLimit) instead of a lost worker whose lease expires and
        // whose operation is rescued, to panic again, for ever.
        let mut run = AbortOnDrop(tokio::spawn(async move { job_for_run.run(&ctx).await }));
        let result = match (&mut run.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(JobError::Failed(format!(
                "the worker failed unexpectedly running this operation: {}",
                panic_text(e.into_panic().as_ref())
            ))),
            // Cancelled (the runtime is shutting down): the lease runs out and another
            // worker takes the operation over.
            Err(_) => return,
        };
        drop(heartbeat);
        let now = now_ms();
        let finished = match &result {
            Ok(()) => {
                tracing::info!(operation = %op.id, ms = started.elapsed().as_millis() as u64, "operation complete");
                if completed.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(())
                } else {
                    ops::complete(&self.db, &op.id, op.lease_token, now).await
                }
            }
            Err(e) if e.lease_lost() => {
                tracing::warn!(operation = %op.id, "lease lost; another worker has taken this operation over");
                return;
            }
            Err(e) => {
                let retry = (op.retry_count < op.retry_limit)
                    .then(|| retry_delay_ms(op.retry_count + 1, op.retry_backoff_ms));
                self.fail(&*job, &op, &e.to_string(), retry).await
            }
        };
        if let Err(e) = finished {
            tracing::warn!(operation = %op.id, error = %e, "could not record the end of the operation");
        }
    }

    /// Ends a failed run: a retry later, or (none left) the job hands over what it leaves
    /// unfinished and the operation stays `Error`.
    async fn fail(
        &self,
        job: &dyn Job,
        op: &Claimed,
        error: &str,
        retry: Option<i64>,
    ) -> Result<(), refunds_store::StoreError> {
        tracing::error!(operation = %op.id, error, retry_in_ms = ?retry, "operation failed");
        if retry.is_none() {
            let ctx = JobContext::new(self.db.clone(), op.clone());
            if let Err(g) = job.give_up(&ctx, error).await {
                tracing::error!(operation = %op.id, error = %g, "could not hand over what the failed operation left");
            }
        }
        ops::fail(&self.db, &op.id, op.lease_token, error, retry, now_ms()).await
    }
}

/// What a panic said, if it said it as text.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn heartbeat(db: Db, op: Claimed, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        match ops::heartbeat(&db, &op.id, op.lease_token, ms(lease), now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(operation = %op.id, "heartbeat found the lease gone");
                return;
            }
            Err(e) => tracing::warn!(operation = %op.id, error = %e, "heartbeat failed"),
        }
    }
}

/// PostgreSQL: this process's heartbeat, and the rescue of processes that fell silent
/// (judged on the database's clock), until shutdown.
async fn process_heartbeat(
    db: Db,
    process: String,
    config: QueueConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let wakeup = db.wakeup();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.process_heartbeat) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = processes::heartbeat(&db, &process).await {
            tracing::warn!(error = %e, "process heartbeat failed");
        }
        match processes::rescue_silent(&db, ms(config.process_silence)).await {
            Ok(0) => {}
            Ok(freed) => {
                tracing::warn!(
                    operations = freed,
                    "rescuing the operations of a process that fell silent"
                );
                wakeup.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "looking for silent processes failed"),
        }
    }
}
