//! The database's own clock.
//!
//! Processes judge each other's heartbeats by one clock, the database's, never by their
//! own (which may drift apart). Only PostgreSQL needs it: on SQLite all workers live in one
//! process.

/// PostgreSQL's wall clock now, in milliseconds since the epoch, as a `BIGINT`
/// (`clock_timestamp()`, not the transaction's start time).
pub const POSTGRES_NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
