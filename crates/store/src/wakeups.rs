//! Wake-ups of idle workers when work arrives.
//!
//! Within a process, a committed enqueue wakes the workers through the [`Db`]'s in-process
//! signal ([`Db::wakeup`], fired by [`crate::Tx::commit`] when the transaction asked for it).
//! Across processes (PostgreSQL only), the enqueue statement also sends a `NOTIFY` on
//! [`WAKE_CHANNEL`], delivered only if it commits; [`Db::forward_wakeups`] listens on the
//! channel and fires the same signal. Nothing depends on a wake-up arriving: an idle
//! worker also sleeps only until the next operation is due, and polls.

use std::time::Duration;

use tokio::sync::watch;

use crate::{Backend, Db};

/// The PostgreSQL channel a committed enqueue notifies, so idle workers wake at once.
pub const WAKE_CHANNEL: &str = "refunds_background_operations";

/// How long a failed listener waits before it connects again.
const RECONNECT_AFTER: Duration = Duration::from_secs(5);

impl Db {
    /// Until `shutdown` turns true, turns the `NOTIFY`s of every process's enqueues into
    /// wake-ups of this process's workers. Returns at once on SQLite, whose writers all
    /// live in this process. A lost listener connection is opened again; while it is
    /// down, polling still finds the work.
    pub async fn forward_wakeups(self, mut shutdown: watch::Receiver<bool>) {
        if self.backend() != Backend::Postgres {
            return;
        }
        let wakeup = self.wakeup();
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect(self.url()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for new operations; polling only");
                    if stopped_while_waiting(&mut shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            if let Err(e) = listener.listen(WAKE_CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; polling only");
                if stopped_while_waiting(&mut shutdown).await {
                    return;
                }
                continue;
            }
            loop {
                tokio::select! {
                    n = listener.recv() => match n {
                        Ok(_) => wakeup.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                            break;
                        }
                    },
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// Waits [`RECONNECT_AFTER`] before the next attempt; true if `shutdown` turned true
/// meanwhile (the wait ends then).
async fn stopped_while_waiting(shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(RECONNECT_AFTER) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}
