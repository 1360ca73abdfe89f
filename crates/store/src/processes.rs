//! Which processes run workers, so a dead one's operations are taken over in seconds, not
//! after their leases.
//!
//! SQLite is for one process: the one that runs workers holds an exclusive lock on a file
//! next to the database (`<database>-workers.lock`, released by the operating system when
//! the process ends, however it ends), so a second cannot start on the same file; holding
//! it, every `Running` operation in the file belongs to a process that is gone, and all of
//! them are taken over at once. Commands that only read or write records never take it.
//!
//! PostgreSQL: each process registers and heartbeats on the database's clock (never its
//! own); any process finding another silent for longer than the silence limit expires the
//! leases it held, so they are rescued at the next claim, and removes it.

use std::fs::{File, TryLockError};
use std::path::PathBuf;

use crate::dialect::clock::POSTGRES_NOW_MS as DB_NOW;
use crate::{Backend, Db, Result, StoreError, Tx};

/// Held while this process runs workers on a SQLite file; dropping it (or the process
/// ending) lets another start.
#[derive(Debug)]
pub struct WorkerLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file of a SQLite database URL (`sqlite://PATH?…`).
fn lock_path(url: &str) -> PathBuf {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    PathBuf::from(format!("{path}-workers.lock"))
}

/// Takes the SQLite file's worker lock, or fails with [`StoreError::WorkersRunning`] if
/// another process holds it.
pub fn lock_sqlite_workers(db: &Db) -> Result<WorkerLock> {
    let path = lock_path(db.url());
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::WorkerLock(format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(WorkerLock { _file: file, path }),
        Err(TryLockError::WouldBlock) => {
            Err(StoreError::WorkersRunning(path.display().to_string()))
        }
        Err(TryLockError::Error(e)) => {
            Err(StoreError::WorkerLock(format!("{}: {e}", path.display())))
        }
    }
}

/// With the SQLite worker lock held: every running operation's worker is gone, so every
/// lease ends now and the next claim rescues them all. Answers how many.
pub async fn take_over_every_lease(db: &Db, _lock: &WorkerLock) -> Result<u64> {
    let mut tx = db.begin().await?;
    let r = sqlx::query(
        "UPDATE background_operations SET lease_expires_at = 0 WHERE status = 'Running'",
    )
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected())
}

/// PostgreSQL: registers `process` (or renews its heartbeat), on the database's clock.
pub async fn heartbeat(db: &Db, process: &str) -> Result<()> {
    if db.backend() != Backend::Postgres {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO queue_processes (id, started_at, heartbeat_at) VALUES ($1, {DB_NOW}, {DB_NOW}) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = {DB_NOW}"
    ))
    .bind(process)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// PostgreSQL: the processes silent for longer than `silence_ms` (on the database's clock)
/// are removed and the leases of their running operations end now, so the next claim
/// rescues them. Answers how many operations were freed.
pub async fn rescue_silent(db: &Db, silence_ms: i64) -> Result<u64> {
    if db.backend() != Backend::Postgres {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let gone: Vec<String> = sqlx::query_scalar(&format!(
        "DELETE FROM queue_processes WHERE heartbeat_at < {DB_NOW} - $1 RETURNING id"
    ))
    .bind(silence_ms)
    .fetch_all(tx.conn())
    .await?;
    let mut freed = 0;
    for process in &gone {
        freed += release_leases_of(&mut tx, process).await?;
    }
    tx.commit().await?;
    Ok(freed)
}

async fn release_leases_of(tx: &mut Tx, process: &str) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE background_operations SET lease_expires_at = 0 WHERE status = 'Running' AND lease_owner = $1",
    )
    .bind(process)
    .execute(tx.conn())
    .await?
    .rows_affected())
}

/// On the way out: the leases `process` still holds end now (another process rescues
/// those operations at once) and, on PostgreSQL, it is no longer registered.
pub async fn leave(db: &Db, process: &str) -> Result<u64> {
    let mut tx = db.begin().await?;
    let freed = release_leases_of(&mut tx, process).await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("DELETE FROM queue_processes WHERE id = $1")
            .bind(process)
            .execute(tx.conn())
            .await?;
    }
    tx.commit().await?;
    Ok(freed)
}
