//! A scratch database per test, for the store's tests that run on both backends: a temp
//! SQLite file, or a database created on the PostgreSQL server at
//! `REFUNDS_TEST_POSTGRES_URL` and dropped again afterwards. Without that variable the
//! PostgreSQL half of a test prints a notice and is skipped — unless `CI=true`, where a
//! missing server fails the test.

use refunds_domain::{ObjectType, SfId};
use refunds_store::{Backend, Db};
use sqlx::Connection;

/// A fresh, migrated database, dropped again by [`Scratch::finish`] (or, if the test
/// panicked before it got there, when the value is dropped).
pub struct Scratch {
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    /// The server URL and the scratch database's name (PostgreSQL).
    pg: Option<(String, String)>,
}

/// A scratch database on `backend`; `None` when PostgreSQL is not configured (outside CI).
pub async fn scratch(backend: Backend) -> Option<Scratch> {
    let scratch = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite:{}", dir.path().join("s.db").display());
            Scratch {
                db: Db::connect(&url).await.expect("open sqlite"),
                _dir: Some(dir),
                pg: None,
            }
        }
        Backend::Postgres => {
            let admin = match std::env::var("REFUNDS_TEST_POSTGRES_URL") {
                Ok(url) if !url.is_empty() => url,
                _ => {
                    assert!(
                        std::env::var("CI").map_or(true, |v| v != "true"),
                        "CI=true but REFUNDS_TEST_POSTGRES_URL is not set"
                    );
                    eprintln!(
                        "notice: REFUNDS_TEST_POSTGRES_URL is not set; skipping a PostgreSQL test"
                    );
                    return None;
                }
            };
            // Generated ids are unique within the process, and alphanumeric.
            let name = format!(
                "refunds_checks_{}",
                SfId::generate(ObjectType::Refund).as_str().to_lowercase()
            );
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create database");
            conn.close().await.ok();
            let db = Db::connect(&with_database(&admin, &name))
                .await
                .expect("open postgres");
            Scratch {
                db,
                _dir: None,
                pg: Some((admin, name)),
            }
        }
    };
    scratch.db.migrate().await.expect("migrate");
    Some(scratch)
}

/// The server URL `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host}/{name}?{q}"),
        None => format!("{host}/{name}"),
    }
}

async fn drop_database(admin: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

impl Scratch {
    /// Closes the database and, on PostgreSQL, drops it.
    pub async fn finish(mut self) {
        self.db.close().await;
        if let Some((admin, name)) = self.pg.take() {
            drop_database(&admin, &name).await.expect("drop database");
        }
    }
}

impl Drop for Scratch {
    /// A test that failed before [`Scratch::finish`] still drops its PostgreSQL database:
    /// from a thread of its own, with a runtime of its own (`drop` is not async), and
    /// without panicking again.
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(drop_database(&admin, &name))
                .map_err(|e| format!("{name}: {e}"))
        })
        .join();
        if let Ok(Err(why)) = dropped {
            eprintln!("warning: scratch database not dropped: {why}");
        }
    }
}
