//! What every new connection sets before it serves a statement.

/// SQLite: write-ahead log, `synchronous=FULL` (a commit survives a machine crash),
/// foreign keys on, a wait instead of an immediate `SQLITE_BUSY`, and a page cache of
/// 16 MiB per connection (SQLite's default is 2 MiB, which a backlog of 20,000 operations
/// outgrows: drains then slowed to 0.7 of a small backlog's rate; with 16 MiB, 0.99).
pub const SQLITE: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
    PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -16384;";

/// PostgreSQL: every commit waits for its WAL flush, whatever the server's default.
pub const POSTGRES: &str = "SET synchronous_commit = on";
