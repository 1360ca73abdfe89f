//! Connecting, migrating and opening transactions.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::{Any, AnyPool, Executor};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use crate::{Result, StoreError};

/// Which database a [`Db`] talks to; chosen once, from the URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL channel a committed enqueue notifies, so idle workers wake at once.
pub const WAKE_CHANNEL: &str = "refunds_background_operations";

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "core", include_str!("../migrations/0001_core.sql")),
    (
        2,
        "gateway_settings",
        include_str!("../migrations/0002_gateway_settings.sql"),
    ),
    (3, "auth", include_str!("../migrations/0003_auth.sql")),
];

/// A pooled handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    url: String,
    /// SQLite allows one writer at a time. Queueing writers here, in the process, is
    /// fair and costs nothing; letting them collide inside SQLite would mean busy-wait
    /// sleeps. PostgreSQL needs no gate.
    write_gate: Option<Arc<Mutex<()>>>,
    /// Wakes this process's workers after an enqueue commits (and, on PostgreSQL, on a
    /// NOTIFY from another process, forwarded by the queue's listener).
    wakeup: Arc<Notify>,
}

/// A transaction; on SQLite it also holds the write gate until it ends.
pub struct Tx {
    inner: sqlx::Transaction<'static, Any>,
    _gate: Option<OwnedMutexGuard<()>>,
    wake_on_commit: bool,
    wakeup: Arc<Notify>,
}

impl Tx {
    pub fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.inner
    }

    /// Ask for this process's workers to be woken once (and only if) the commit succeeds.
    pub fn wake_workers_on_commit(&mut self) {
        self.wake_on_commit = true;
    }

    pub async fn commit(self) -> Result<()> {
        self.inner.commit().await?;
        if self.wake_on_commit {
            self.wakeup.notify_waiters();
            self.wakeup.notify_one();
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        self.inner.rollback().await?;
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Db {
    /// Connects to `url` (`sqlite:PATH`, `sqlite://PATH`, or `postgres://…`). A SQLite file
    /// is created if missing and runs in WAL mode with `synchronous=FULL`, so a commit
    /// survives a machine crash; PostgreSQL sessions are pinned to `synchronous_commit=on`.
    pub async fn connect(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalise_url(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("SET synchronous_commit = on").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
        };
        Ok(Db {
            pool,
            backend,
            url,
            write_gate: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            wakeup: Arc::new(Notify::new()),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The normalised connection URL (PostgreSQL listeners open their own connection).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn wakeup(&self) -> Arc<Notify> {
        self.wakeup.clone()
    }

    /// Opens a read-write transaction. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`) so two transactions never deadlock upgrading a read lock.
    pub async fn begin(&self) -> Result<Tx> {
        let gate = match &self.write_gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        };
        let inner = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx {
            inner,
            _gate: gate,
            wake_on_commit: false,
            wakeup: self.wakeup.clone(),
        })
    }

    /// Applies the embedded migrations that have not run yet. Safe to call from several
    /// processes at once on PostgreSQL (an advisory lock serialises them).
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            // (wrapped: the Any driver cannot decode PostgreSQL's `void`)
            sqlx::query(
                "SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_xact_lock(724081)) AS l",
            )
            .execute(tx.conn())
            .await?;
        }
        tx.conn()
            .execute(
                "CREATE TABLE IF NOT EXISTS refunds_schema_migrations \
                 (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .await?;
        for (version, name, sql) in MIGRATIONS {
            let done: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM refunds_schema_migrations WHERE version = $1",
            )
            .bind(*version)
            .fetch_optional(tx.conn())
            .await?;
            if done.is_some() {
                continue;
            }
            tx.conn().execute(*sql).await?;
            sqlx::query("INSERT INTO refunds_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(*version)
                .bind(*name)
                .bind(now_ms())
                .execute(tx.conn())
                .await?;
            tracing::info!(version, name, "applied migration");
        }
        tx.commit().await
    }

    /// True once every embedded migration has been applied (used by `/healthz`).
    pub async fn is_migrated(&self) -> bool {
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        let applied: std::result::Result<Option<i64>, _> = sqlx::query_scalar(
            "SELECT CAST(MAX(version) AS BIGINT) FROM refunds_schema_migrations",
        )
        .fetch_one(&self.pool)
        .await;
        matches!(applied, Ok(Some(v)) if v >= latest)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn normalise_url(url: &str) -> Result<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_string()));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let url = if rest.contains("mode=") {
            format!("sqlite://{rest}")
        } else if rest.contains('?') {
            format!("sqlite://{rest}&mode=rwc")
        } else {
            format!("sqlite://{rest}?mode=rwc")
        };
        return Ok((Backend::Sqlite, url));
    }
    Err(StoreError::UnsupportedUrl)
}

/// Fails with [`StoreError::Missing`] unless exactly one row was touched.
pub(crate) fn expect_one(result: AnyQueryResult, what: impl FnOnce() -> String) -> Result<()> {
    if result.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Missing(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend_and_sqlite_files_are_created() {
        assert_eq!(
            normalise_url("sqlite:refunds.db").unwrap(),
            (Backend::Sqlite, "sqlite://refunds.db?mode=rwc".to_string())
        );
        assert_eq!(
            normalise_url("sqlite:///tmp/x.db").unwrap(),
            (Backend::Sqlite, "sqlite:///tmp/x.db?mode=rwc".to_string())
        );
        assert_eq!(
            normalise_url("postgres://u@h/db").unwrap().0,
            Backend::Postgres
        );
        assert!(normalise_url("mysql://h/db").is_err());
    }
}
