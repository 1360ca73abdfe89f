//! Storage for `refunds`: one database holds the business records (order summaries,
//! payments, credit memos, refunds, gateway logs, process exceptions) *and* the queue of
//! background operations, so an operation commits in the same transaction as the checks
//! that admitted it.
//!
//! Both backends, SQLite (embedded default) and PostgreSQL, go through sqlx's `Any`
//! driver with runtime-checked queries. The SQL is written once in the dialect both speak
//! (`$n` parameters, `RETURNING`, `ON CONFLICT`, BIGINT minor units and millisecond
//! timestamps); the few pieces that must differ (row locks, the claim, the wake-up
//! `NOTIFY`, the database clock, byte-order collation, migrations) live in [`dialect`],
//! one module per concern, chosen by the [`Backend`] a [`Tx`] or [`Db`] carries.
//!
//! The store is sealed: a [`Tx`]'s connection is private, so every statement that reads
//! or writes money is a named function here, and the crates above (`queue`, `api`) do
//! not depend on sqlx. Wake-ups of idle workers sit behind [`Db`] too ([`wakeups`]).
//!
//! This crate never decides business rules (what to refund, how much): it offers the
//! statements, each guarded so that a wrong caller cannot break an invariant — a reservation
//! is a conditional update, every write of a running operation is fenced by its lease.

pub mod admission;
pub mod auth;
pub mod db;
pub mod dialect;
pub mod keys;
mod lists;
pub mod ops;
pub mod processes;
pub mod query;
pub mod records;
pub mod refunds;
pub mod schema;
pub mod stats;
pub mod wakeups;

pub use db::{now_ms, Backend, Db, GroupCommits, Tx};
pub use schema::{FieldDef, FieldKind, ObjectDef};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("unsupported database url (expected sqlite:… or postgres://…)")]
    UnsupportedUrl,
    /// The operation's lease was taken over by another worker (or it finished): this
    /// worker must stop writing for it.
    #[error("lease on background operation {0} was lost")]
    LeaseLost(String),
    /// A row that must exist (by an invariant of the caller) does not.
    #[error("{0} not found")]
    Missing(String),
    /// Stored data that violates the schema's own rules.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A write the refund lifecycle does not allow (see `refunds_domain::lifecycle`).
    #[error(transparent)]
    Lifecycle(#[from] refunds_domain::LifecycleError),
    /// The shared SQLite commit this transaction joined failed: nothing of it was kept.
    #[error("group commit failed: {0}")]
    GroupCommit(String),
    /// Another process already runs workers on this SQLite file.
    #[error("another process already runs workers on this database (it holds {0})")]
    WorkersRunning(String),
    /// The SQLite worker lock file could not be opened or locked.
    #[error("cannot take the worker lock {0}")]
    WorkerLock(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
