//! Connecting, migrating and opening transactions.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor};
use tokio::sync::{watch, Mutex, Notify, OwnedMutexGuard};

use crate::dialect::{migrations, session};
use crate::{Result, StoreError};

/// Which database a [`Db`] talks to; chosen once, from the URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "core", include_str!("../migrations/0001_core.sql")),
    (
        2,
        "gateway_settings",
        include_str!("../migrations/0002_gateway_settings.sql"),
    ),
    (3, "auth", include_str!("../migrations/0003_auth.sql")),
    (4, "rescues", include_str!("../migrations/0004_rescues.sql")),
    (5, "roles", include_str!("../migrations/0005_roles.sql")),
    (
        6,
        "queue_lines",
        include_str!("../migrations/0006_queue_lines.sql"),
    ),
    (7, "status_checks", migrations::PER_BACKEND),
    (
        9,
        "gateway_limits",
        include_str!("../migrations/0009_gateway_limits.sql"),
    ),
];

/// A pooled handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    url: String,
    /// SQLite's writer (see [`Writer`]); PostgreSQL needs none.
    writer: Option<Arc<Writer>>,
    /// Wakes this process's workers after an enqueue commits (and, on PostgreSQL, on a
    /// NOTIFY from another process, forwarded by [`Db::forward_wakeups`]).
    wakeup: Arc<Notify>,
}

/// A transaction. On PostgreSQL it is its own database transaction; on SQLite it is a
/// member of a group commit (see [`Writer`]).
pub struct Tx {
    kind: TxKind,
    backend: Backend,
    wake_on_commit: bool,
    wakeup: Arc<Notify>,
}

enum TxKind {
    Postgres(sqlx::Transaction<'static, Any>),
    Sqlite(Member),
}

impl Tx {
    /// The database this transaction runs on: the store's statements pick their dialect
    /// from it, so no caller passes a backend beside a transaction.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection the statements of this transaction run on. Private to the store:
    /// every statement that reads or writes money lives here, behind a named function.
    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        match &mut self.kind {
            TxKind::Postgres(tx) => tx,
            TxKind::Sqlite(member) => member.conn(),
        }
    }

    /// The connection itself, for the store's own tests only (feature `raw-connection`):
    /// they write schemas and rows that no statement of the store writes.
    #[cfg(feature = "raw-connection")]
    pub fn raw_connection(&mut self) -> &mut sqlx::AnyConnection {
        self.conn()
    }

    /// Ask for this process's workers to be woken once (and only if) the commit succeeds.
    pub fn wake_workers_on_commit(&mut self) {
        self.wake_on_commit = true;
    }

    /// Returns once the transaction is durable (on SQLite: once the group it joined has
    /// committed), or with an error if nothing of it was kept.
    pub async fn commit(self) -> Result<()> {
        match self.kind {
            TxKind::Postgres(tx) => tx.commit().await?,
            TxKind::Sqlite(member) => member.commit().await?,
        }
        if self.wake_on_commit {
            self.wakeup.notify_waiters();
            self.wakeup.notify_one();
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        match self.kind {
            TxKind::Postgres(tx) => tx.rollback().await?,
            TxKind::Sqlite(member) => member.rollback().await?,
        }
        Ok(())
    }
}

/// SQLite's single writer, with group commit.
///
/// SQLite allows one writer at a time, so writers queue here, in the process (fair, and
/// no busy-wait sleeps inside SQLite). Whoever holds the gate works inside one shared
/// database transaction, its own work wrapped in a savepoint: a member that fails or rolls
/// back undoes only its savepoint. A member that commits releases its savepoint and waits
/// for the group's COMMIT, which the last member to leave the gate issues when nobody else
/// is queued (or the group is large or old): one fsync then makes every member durable,
/// and no member hears "committed" before that fsync. If the COMMIT fails, every member of
/// the group gets the error, and none of their work was kept.
struct Writer {
    pool: AnyPool,
    gate: Arc<Mutex<Group>>,
    /// Tasks queued for the gate: the member leaving commits only when this is zero.
    queued: AtomicUsize,
    commits: AtomicU64,
    members: AtomicU64,
}

/// A member still waiting for its group's COMMIT after this long finishes the group
/// itself (see [`Member::commit`]).
const RESCUE_AFTER: Duration = Duration::from_millis(100);
/// A group commits anyway once it has this many members waiting...
const GROUP_MAX_MEMBERS: usize = 64;
/// ...or its first member has waited this long, so a steady queue cannot hold a group open.
const GROUP_MAX_WAIT: Duration = Duration::from_millis(10);

/// The gate's state: the open group, if any.
#[derive(Default)]
struct Group {
    open: Option<OpenGroup>,
    next_savepoint: u64,
}

struct OpenGroup {
    conn: PoolConnection<Any>,
    /// Members waiting for the COMMIT, and since when the first of them has waited.
    members: usize,
    waiting_since: Option<Instant>,
    /// The group's outcome, sent once: `Ok` after COMMIT, or why nothing was kept.
    done: watch::Sender<Option<std::result::Result<(), String>>>,
    /// A member was dropped where its savepoint could not be undone: roll it all back.
    abandoned: bool,
}

const ABANDONED: &str = "a transaction of the group was abandoned unfinished";

/// How SQLite's group commit has gone since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommits {
    /// COMMITs issued (each one fsync).
    pub commits: u64,
    /// Transactions those COMMITs made durable.
    pub members: u64,
}

impl Writer {
    async fn begin(self: &Arc<Self>) -> Result<Member> {
        let queued = Queued::new(self);
        let mut guard = self.gate.clone().lock_owned().await;
        drop(queued);
        if guard.open.as_ref().is_some_and(|open| open.abandoned) {
            self.abort(&mut guard, ABANDONED).await;
        }
        if guard.open.is_none() {
            let opened = async {
                let mut conn = self.pool.acquire().await?;
                conn.execute("BEGIN IMMEDIATE").await?;
                Ok::<_, sqlx::Error>(conn)
            }
            .await;
            match opened {
                Ok(conn) => {
                    guard.open = Some(OpenGroup {
                        conn,
                        members: 0,
                        waiting_since: None,
                        done: watch::channel(None).0,
                        abandoned: false,
                    })
                }
                Err(e) => {
                    self.leave(guard).await;
                    return Err(e.into());
                }
            }
        }
        guard.next_savepoint += 1;
        let savepoint = format!("m{}", guard.next_savepoint);
        let started = match guard.open.as_mut() {
            Some(open) => open
                .conn
                .execute(format!("SAVEPOINT {savepoint}").as_str())
                .await
                .map(|_| ()),
            None => Ok(()),
        };
        if let Err(e) = started {
            self.abort(&mut guard, &e.to_string()).await;
            self.leave(guard).await;
            return Err(e.into());
        }
        Ok(Member {
            writer: self.clone(),
            guard: Some(guard),
            savepoint,
        })
    }

    /// Gives up the gate. Whoever leaves last while nobody is queued (or when the group
    /// is full or old) finishes the group: COMMIT if it has members, else ROLLBACK.
    async fn leave(&self, mut guard: OwnedMutexGuard<Group>) {
        if guard.open.as_ref().is_some_and(|open| open.abandoned) {
            self.abort(&mut guard, ABANDONED).await;
        }
        let Some(open) = guard.open.as_ref() else {
            return;
        };
        let idle = self.queued.load(Ordering::SeqCst) == 0;
        let due = open.members >= GROUP_MAX_MEMBERS
            || open
                .waiting_since
                .is_some_and(|t| t.elapsed() >= GROUP_MAX_WAIT);
        if !(idle || due) {
            return;
        }
        let Some(mut open) = guard.open.take() else {
            return;
        };
        if open.members == 0 {
            if open.conn.execute("ROLLBACK").await.is_err() {
                open.conn.close_on_drop();
            }
            return;
        }
        let result = open.conn.execute("COMMIT").await.map(|_| ());
        let outcome = match result {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.members
                    .fetch_add(u64::try_from(open.members).unwrap_or(0), Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, members = open.members, "group commit failed");
                if open.conn.execute("ROLLBACK").await.is_err() {
                    open.conn.close_on_drop();
                }
                Err(e.to_string())
            }
        };
        open.done.send_replace(Some(outcome));
    }

    /// Ends the open group without keeping anything: its members get `why`.
    async fn abort(&self, guard: &mut OwnedMutexGuard<Group>, why: &str) {
        if let Some(mut open) = guard.open.take() {
            tracing::error!(
                error = why,
                members = open.members,
                "group transaction aborted"
            );
            if open.conn.execute("ROLLBACK").await.is_err() {
                open.conn.close_on_drop();
            }
            open.done.send_replace(Some(Err(why.to_string())));
        }
    }

    /// Undoes one member's savepoint and leaves the gate; if the savepoint cannot be
    /// undone, the whole group is aborted rather than committing half a member.
    async fn undo(&self, mut guard: OwnedMutexGuard<Group>, savepoint: &str) -> Result<()> {
        let undone = match guard.open.as_mut() {
            Some(open) => open
                .conn
                .execute(format!("ROLLBACK TO {savepoint}; RELEASE {savepoint}").as_str())
                .await
                .map(|_| ()),
            None => Ok(()),
        };
        if let Err(e) = &undone {
            self.abort(&mut guard, &e.to_string()).await;
        }
        self.leave(guard).await;
        Ok(undone?)
    }
}

/// Counts a task as queued for the gate until it is admitted (or gives up waiting).
struct Queued<'a>(&'a Writer);

impl<'a> Queued<'a> {
    fn new(writer: &'a Writer) -> Queued<'a> {
        writer.queued.fetch_add(1, Ordering::SeqCst);
        Queued(writer)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One transaction inside a group: it holds the gate until it commits or rolls back.
struct Member {
    writer: Arc<Writer>,
    guard: Option<OwnedMutexGuard<Group>>,
    savepoint: String,
}

impl Member {
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        match self.guard.as_mut().and_then(|g| g.open.as_mut()) {
            Some(open) => &mut open.conn,
            // A member exists only while its group is open and it holds the gate.
            None => unreachable!("a transaction without its group"),
        }
    }

    async fn commit(mut self) -> Result<()> {
        let Some(mut guard) = self.guard.take() else {
            return Err(StoreError::GroupCommit("transaction already ended".into()));
        };
        let released = match guard.open.as_mut() {
            Some(open) => open
                .conn
                .execute(format!("RELEASE {}", self.savepoint).as_str())
                .await
                .map(|_| ()),
            None => Err(sqlx::Error::PoolClosed),
        };
        if let Err(e) = released {
            self.writer.undo(guard, &self.savepoint).await.ok();
            return Err(e.into());
        }
        let mut done = match guard.open.as_mut() {
            Some(open) => {
                open.members += 1;
                open.waiting_since.get_or_insert_with(Instant::now);
                open.done.subscribe()
            }
            None => return Err(StoreError::GroupCommit("group closed".into())),
        };
        self.writer.leave(guard).await;
        let outcome = loop {
            if let Some(outcome) = done.borrow_and_update().clone() {
                break Some(outcome);
            }
            tokio::select! {
                changed = done.changed() => if changed.is_err() {
                    break None;
                },
                // The member this one left the COMMIT to has not finished the group (it
                // may have given up waiting in the queue): finish it from here.
                () = tokio::time::sleep(RESCUE_AFTER) => {
                    let guard = self.writer.gate.clone().lock_owned().await;
                    self.writer.leave(guard).await;
                }
            }
        };
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(StoreError::GroupCommit(why)),
            None => Err(StoreError::GroupCommit("no outcome".into())),
        }
    }

    async fn rollback(mut self) -> Result<()> {
        match self.guard.take() {
            Some(guard) => self.writer.undo(guard, &self.savepoint).await,
            None => Ok(()),
        }
    }
}

impl Drop for Member {
    /// Dropped without commit or rollback (an early return, a cancelled request): its
    /// savepoint is undone by a task that inherits the gate, so the group goes on.
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let writer = self.writer.clone();
        let savepoint = std::mem::take(&mut self.savepoint);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = writer.undo(guard, &savepoint).await;
                });
            }
            // No runtime to undo it on (nor to drop a connection on): mark the group
            // abandoned, so that the next writer rolls it back instead of committing this
            // member's work; members waiting for the COMMIT hear that nothing was kept.
            Err(_) => {
                let mut guard = guard;
                if let Some(open) = guard.open.as_mut() {
                    open.abandoned = true;
                    open.done.send_replace(Some(Err(ABANDONED.to_string())));
                }
            }
        }
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
                            conn.execute(session::SQLITE).await?;
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
                            conn.execute(session::POSTGRES).await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
        };
        let writer = (backend == Backend::Sqlite).then(|| {
            Arc::new(Writer {
                pool: pool.clone(),
                gate: Arc::new(Mutex::new(Group::default())),
                queued: AtomicUsize::new(0),
                commits: AtomicU64::new(0),
                members: AtomicU64::new(0),
            })
        });
        Ok(Db {
            pool,
            backend,
            url,
            writer,
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

    /// Opens a read-write transaction. On SQLite it joins the writer's group commit,
    /// whose transaction takes the write lock up front (`BEGIN IMMEDIATE`) so that no two
    /// transactions deadlock upgrading a read lock.
    pub async fn begin(&self) -> Result<Tx> {
        let kind = match &self.writer {
            Some(writer) => TxKind::Sqlite(writer.begin().await?),
            None => TxKind::Postgres(self.pool.begin().await?),
        };
        Ok(Tx {
            kind,
            backend: self.backend,
            wake_on_commit: false,
            wakeup: self.wakeup.clone(),
        })
    }

    /// SQLite's group commits so far (zero on PostgreSQL, which groups its own).
    pub fn group_commits(&self) -> GroupCommits {
        self.writer
            .as_ref()
            .map_or_else(GroupCommits::default, |w| GroupCommits {
                commits: w.commits.load(Ordering::Relaxed),
                members: w.members.load(Ordering::Relaxed),
            })
    }

    /// Applies the embedded migrations that have not run yet. Safe to call from several
    /// processes at once on PostgreSQL (an advisory lock serialises them).
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        migrations::lock(&mut tx).await?;
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
            tx.conn()
                .execute(migrations::sql(*version, sql, self.backend)?)
                .await?;
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

    /// A transaction dropped where it cannot be undone (outside any runtime) is never
    /// committed by a later group: the group it was in is rolled back as a whole.
    #[test]
    fn a_transaction_dropped_outside_the_runtime_is_not_committed_later() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("g.db").display());
        let insert = |db: Db, id: i64| async move {
            let mut tx = db.begin().await.unwrap();
            sqlx::query("INSERT INTO t (id) VALUES ($1)")
                .bind(id)
                .execute(tx.conn())
                .await
                .unwrap();
            tx
        };
        let (db, abandoned) = runtime.block_on(async {
            let db = Db::connect(&url).await.unwrap();
            sqlx::query("CREATE TABLE t (id BIGINT PRIMARY KEY)")
                .execute(db.pool())
                .await
                .unwrap();
            let tx = insert(db.clone(), 1).await;
            (db, tx)
        });
        drop(abandoned); // outside `block_on`: no runtime here
        let ids: Vec<i64> = runtime.block_on(async {
            insert(db.clone(), 2).await.commit().await.unwrap();
            sqlx::query_scalar("SELECT id FROM t ORDER BY id")
                .fetch_all(db.pool())
                .await
                .unwrap()
        });
        assert_eq!(ids, [2]);
    }

    /// A member leaves the COMMIT to a writer it saw queued; that writer never comes (it
    /// gave up waiting). The member finishes the group itself instead of waiting forever.
    #[tokio::test]
    async fn a_group_whose_committer_never_comes_is_committed_anyway() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite:{}", dir.path().join("g.db").display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id BIGINT PRIMARY KEY)")
            .execute(db.pool())
            .await
            .unwrap();
        let writer = db.writer.clone().expect("SQLite has a writer");
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO t (id) VALUES (1)")
            .execute(tx.conn())
            .await
            .unwrap();
        let phantom = Queued::new(&writer);
        tokio::time::timeout(Duration::from_secs(5), tx.commit())
            .await
            .expect("the group was committed, not stranded")
            .expect("commit");
        drop(phantom);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            db.group_commits(),
            GroupCommits {
                commits: 1,
                members: 1
            }
        );
    }

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
