//! What every new connection sets before it serves a statement.

/// SQLite: write-ahead log, `synchronous=FULL` (a commit survives a machine crash),
/// foreign keys on, and a wait instead of an immediate `SQLITE_BUSY`.
pub const SQLITE: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
    PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";

/// PostgreSQL: every commit waits for its WAL flush, whatever the server's default.
pub const POSTGRES: &str = "SET synchronous_commit = on";
