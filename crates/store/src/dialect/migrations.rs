//! The migrations whose SQL differs per backend, and the lock that serialises migrating.

use crate::{Backend, Result, StoreError, Tx};

/// The SQL of a migration listed in `crate::db`'s list as `PER_BACKEND` is written once per
/// backend, in [`BACKEND_MIGRATIONS`] (SQLite cannot add a `CHECK` to an existing table,
/// so it gets triggers instead).
pub(crate) const PER_BACKEND: &str = "";

const BACKEND_MIGRATIONS: &[(i64, Backend, &str)] = &[
    (
        7,
        Backend::Sqlite,
        include_str!("../../migrations/0007_status_checks.sqlite.sql"),
    ),
    (
        7,
        Backend::Postgres,
        include_str!("../../migrations/0007_status_checks.postgres.sql"),
    ),
];

/// The SQL migration `version` runs on `backend`.
pub(crate) fn sql(version: i64, shared: &'static str, backend: Backend) -> Result<&'static str> {
    if shared != PER_BACKEND {
        return Ok(shared);
    }
    BACKEND_MIGRATIONS
        .iter()
        .find(|(v, b, _)| *v == version && *b == backend)
        .map(|(_, _, sql)| *sql)
        .ok_or_else(|| StoreError::Missing(format!("{backend:?} SQL of migration {version}")))
}

/// Serialises migrations across processes until the transaction ends: an advisory lock on
/// PostgreSQL (several processes may start at once); on SQLite the single writer is alone.
pub(crate) async fn lock(tx: &mut Tx) -> Result<()> {
    if tx.backend() == Backend::Postgres {
        // (wrapped: the Any driver cannot decode PostgreSQL's `void`)
        sqlx::query("SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_xact_lock(724081)) AS l")
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}
