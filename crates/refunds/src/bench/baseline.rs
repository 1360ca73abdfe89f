//! The physical baseline: what the database itself does with one-row durable insert
//! transactions at 1, 16 and 64 concurrent clients, each client on its own connection, with
//! the statement pgbench's history insert runs (`INSERT INTO pgbench_history (tid, bid, aid,
//! delta, mtime) VALUES (…)`, here with the time in milliseconds), each in its own
//! transaction.
//!
//! PostgreSQL runs it as pgbench would: concurrent sessions with `synchronous_commit = on`,
//! so its own group commit shares the flushes. SQLite admits one writer at a time and has
//! no group commit: its figure at any client count is the rate of individually durable
//! transactions (WAL, `synchronous = FULL`). Clients queue for the write lock in a fair
//! lock of the bench rather than in SQLite's busy handler, whose sleeps (up to 100 ms)
//! would measure the handler instead of the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::{AnyConnection, Connection, Executor};
use tokio::sync::Mutex;

pub const CLIENTS: [usize; 3] = [1, 16, 64];

const TABLE: &str = "CREATE TABLE IF NOT EXISTS bench_history (tid BIGINT NOT NULL, \
    bid BIGINT NOT NULL, aid BIGINT NOT NULL, delta BIGINT NOT NULL, mtime BIGINT NOT NULL, \
    filler TEXT)";
pub const STATEMENT: &str =
    "INSERT INTO bench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, $5)";

#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub statement: &'static str,
    /// How the database makes a commit durable, as it reports it.
    pub durability: String,
    pub levels: Vec<Level>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Level {
    pub clients: usize,
    pub transactions: u64,
    pub seconds: f64,
    pub per_second: f64,
}

impl Baseline {
    /// The 64-client figure, the denominator of every ratio.
    pub fn reference(&self) -> f64 {
        self.levels.last().map_or(0.0, |l| l.per_second)
    }
}

async fn connect(url: &str, sqlite: bool) -> anyhow::Result<AnyConnection> {
    let mut conn = AnyConnection::connect(url)
        .await
        .context("cannot open a baseline connection")?;
    let setup = if sqlite {
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;"
    } else {
        "SET synchronous_commit = on"
    };
    conn.execute(setup).await?;
    Ok(conn)
}

async fn durability(conn: &mut AnyConnection, sqlite: bool) -> anyhow::Result<String> {
    let text = if sqlite {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await?;
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await?;
        let sync = match sync {
            0 => "OFF",
            1 => "NORMAL",
            2 => "FULL",
            3 => "EXTRA",
            _ => "unknown",
        };
        format!("journal_mode={mode}, synchronous={sync}")
    } else {
        let commit: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut *conn)
            .await?;
        let fsync: String = sqlx::query_scalar("SHOW fsync")
            .fetch_one(&mut *conn)
            .await?;
        format!("synchronous_commit={commit}, fsync={fsync}")
    };
    Ok(text)
}

/// Runs each level for `secs` and answers the rates.
pub async fn measure(url: &str, sqlite: bool, secs: f64) -> anyhow::Result<Baseline> {
    let mut conn = connect(url, sqlite).await?;
    conn.execute(TABLE).await?;
    let durability = durability(&mut conn, sqlite).await?;
    let _ = conn.close().await;
    let mut levels = Vec::new();
    for clients in CLIENTS {
        levels.push(level(url, sqlite, clients, Duration::from_secs_f64(secs)).await?);
    }
    Ok(Baseline {
        statement: STATEMENT,
        durability,
        levels,
    })
}

async fn level(url: &str, sqlite: bool, clients: usize, run: Duration) -> anyhow::Result<Level> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(connect(url, sqlite).await?);
    }
    let writer = Arc::new(Mutex::new(()));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + run;
    let mut tasks = tokio::task::JoinSet::new();
    for (client, mut conn) in conns.into_iter().enumerate() {
        let (writer, done) = (writer.clone(), done.clone());
        tasks.spawn(async move {
            let mut n: i64 = 0;
            while Instant::now() < deadline {
                let gate = if sqlite {
                    Some(writer.lock().await)
                } else {
                    None
                };
                sqlx::query(STATEMENT)
                    .bind(i64::try_from(client).unwrap_or(0))
                    .bind(n % 10)
                    .bind(n)
                    .bind(n % 5000 - 2500)
                    .bind(refunds_store::now_ms())
                    .execute(&mut conn)
                    .await?;
                drop(gate);
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            let _ = conn.close().await;
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a baseline client stopped")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let transactions = done.load(Ordering::Relaxed);
    tracing::info!(clients, transactions, seconds, "baseline level");
    Ok(Level {
        clients,
        transactions,
        seconds,
        per_second: transactions as f64 / seconds,
    })
}
