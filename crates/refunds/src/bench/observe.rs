//! What the bench reads from the service's database (with its own connections, reads only):
//! how many operations are still to run, when they were submitted, started and finished,
//! and how long each provider call took. Timestamps are the service's, in milliseconds of
//! the machine's clock, which the bench shares.

use std::time::{Duration, Instant};

use anyhow::Context;
use refunds_store::Db;
use sqlx::Row;

/// Statuses of an operation not finished yet. (An `Error` operation that waits for a
/// retry counts as finished here: the bench's refunds of one cent never fail.)
const UNFINISHED: &str = "status IN ('New', 'Running', 'Scheduled', 'Waiting')";

/// How often a wait looks.
const POLL: Duration = Duration::from_millis(100);

pub struct Observer {
    db: Db,
}

/// The operations submitted since some instant, by outcome, and their drain window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub completed: u64,
    /// Finished otherwise (`Error`, `Canceled`).
    pub failed: u64,
    pub unfinished: u64,
    /// The first `StartedAt` and the last `FinishedAt` of the completed ones.
    pub first_started_ms: Option<i64>,
    pub last_finished_ms: Option<i64>,
}

impl Window {
    /// Completions per second from the first start to the last finish.
    pub fn per_second(&self) -> f64 {
        match (self.first_started_ms, self.last_finished_ms) {
            (Some(a), Some(b)) if b > a => self.completed as f64 * 1000.0 / (b - a) as f64,
            _ => 0.0,
        }
    }

    pub fn seconds(&self) -> f64 {
        match (self.first_started_ms, self.last_finished_ms) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1000.0,
            _ => 0.0,
        }
    }
}

/// Whether a bounded wait saw what it waited for.
#[derive(Clone, Copy, Debug)]
pub struct Waited {
    pub finished: bool,
    /// What was still missing when it stopped (0 when finished).
    pub left: u64,
    pub seconds: f64,
}

impl Observer {
    pub async fn open(url: &str) -> anyhow::Result<Observer> {
        let db = Db::connect(url)
            .await
            .context("cannot open the bench's database")?;
        Ok(Observer { db })
    }

    /// The normalised URL, for connections of the bench's own.
    pub fn url(&self) -> &str {
        self.db.url()
    }

    /// The database engine's version string.
    pub async fn version(&self, sqlite: bool) -> anyhow::Result<String> {
        let sql = if sqlite {
            "SELECT 'SQLite ' || sqlite_version()"
        } else {
            "SELECT version()"
        };
        Ok(sqlx::query_scalar(sql).fetch_one(self.db.pool()).await?)
    }

    async fn count(&self, sql: &str) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(self.db.pool()).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Operations still to run (an index range per status: cheap while the queue is short).
    pub async fn unfinished(&self) -> anyhow::Result<u64> {
        self.count(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM background_operations WHERE {UNFINISHED}"
        ))
        .await
    }

    pub async fn running(&self) -> anyhow::Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM background_operations WHERE status = 'Running'")
                .fetch_all(self.db.pool())
                .await?,
        )
    }

    /// Waits until no operation is left to run, or `bound` passes.
    pub async fn drained(&self, bound: Duration) -> anyhow::Result<Waited> {
        self.until(bound, || self.unfinished()).await
    }

    /// Polls `left` until it answers 0 or `bound` passes.
    pub async fn until<F, Fut>(&self, bound: Duration, mut left: F) -> anyhow::Result<Waited>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<u64>>,
    {
        let started = Instant::now();
        loop {
            let n = left().await?;
            let seconds = started.elapsed().as_secs_f64();
            if n == 0 {
                return Ok(Waited {
                    finished: true,
                    left: 0,
                    seconds,
                });
            }
            if started.elapsed() >= bound {
                return Ok(Waited {
                    finished: false,
                    left: n,
                    seconds,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The operations submitted at or after `since_ms`.
    pub async fn window(&self, since_ms: i64) -> anyhow::Result<Window> {
        let rows = sqlx::query(
            "SELECT status, CAST(COUNT(*) AS BIGINT), CAST(MIN(started_at) AS BIGINT), \
             CAST(MAX(finished_at) AS BIGINT) FROM background_operations \
             WHERE submitted_at >= $1 GROUP BY status",
        )
        .bind(since_ms)
        .fetch_all(self.db.pool())
        .await?;
        let mut w = Window::default();
        for row in rows {
            let status: String = row.try_get(0)?;
            let n = u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0);
            match status.as_str() {
                "Complete" => {
                    w.completed = n;
                    w.first_started_ms = row.try_get(2)?;
                    w.last_finished_ms = row.try_get(3)?;
                }
                "New" | "Running" | "Scheduled" | "Waiting" => w.unfinished += n,
                _ => w.failed += n,
            }
        }
        Ok(w)
    }

    /// Operations submitted at or after `since_ms` that have started.
    pub async fn started_since(&self, since_ms: i64) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM background_operations \
             WHERE submitted_at >= $1 AND started_at IS NOT NULL",
        )
        .bind(since_ms)
        .fetch_one(self.db.pool())
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Operations completed with `FinishedAt` in `[from_ms, to_ms)`.
    pub async fn completed_between(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM background_operations \
             WHERE status = 'Complete' AND finished_at >= $1 AND finished_at < $2",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_one(self.db.pool())
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// `StartedAt − SubmittedAt` of the operations submitted in `[from_ms, to_ms)` that
    /// started, sorted, in milliseconds.
    pub async fn start_latencies_ms(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<f64>> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT CAST(started_at - submitted_at AS BIGINT) FROM background_operations \
             WHERE submitted_at >= $1 AND submitted_at < $2 AND started_at IS NOT NULL",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.db.pool())
        .await?;
        let mut v: Vec<f64> = rows.into_iter().map(|ms| ms as f64).collect();
        v.sort_by(f64::total_cmp);
        Ok(v)
    }

    /// The most provider refund calls that were in flight at once, among those answered
    /// at or after `since_ms`: each call spans its log row's `duration_ms` up to the moment
    /// its answer was written down.
    pub async fn peak_calls_in_flight(&self, since_ms: i64) -> anyhow::Result<u64> {
        let rows = sqlx::query(
            "SELECT CAST(last_modified_date AS BIGINT), CAST(duration_ms AS BIGINT) \
             FROM payment_gateway_logs WHERE interaction_type = 'ReferencedRefund' \
             AND duration_ms IS NOT NULL AND last_modified_date >= $1",
        )
        .bind(since_ms)
        .fetch_all(self.db.pool())
        .await?;
        let mut spans = Vec::with_capacity(rows.len());
        for row in rows {
            let end: i64 = row.try_get(0)?;
            let duration: i64 = row.try_get(1)?;
            spans.push((end - duration, end));
        }
        Ok(peak_overlap(&spans))
    }

    /// Of `ids`, those that have neither started since `since_ms` nor finished.
    pub async fn not_restarted(&self, ids: &[String], since_ms: i64) -> anyhow::Result<u64> {
        let mut left = 0;
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM background_operations \
                 WHERE id IN ({}) AND (started_at IS NULL OR started_at < $1) AND {UNFINISHED}",
                marks.join(", ")
            );
            let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(since_ms);
            for id in chunk {
                query = query.bind(id);
            }
            left += u64::try_from(query.fetch_one(self.db.pool()).await?).unwrap_or(0);
        }
        Ok(left)
    }

    /// The latest `StartedAt` and `FinishedAt` of `ids`.
    pub async fn last_start_and_finish(
        &self,
        ids: &[String],
    ) -> anyhow::Result<(Option<i64>, Option<i64>)> {
        let (mut start, mut finish) = (None, None);
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 1)).collect();
            let sql = format!(
                "SELECT CAST(MAX(started_at) AS BIGINT), CAST(MAX(finished_at) AS BIGINT) \
                 FROM background_operations WHERE id IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            let row = query.fetch_one(self.db.pool()).await?;
            start = start.max(row.try_get::<Option<i64>, _>(0)?);
            finish = finish.max(row.try_get::<Option<i64>, _>(1)?);
        }
        Ok((start, finish))
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

/// The largest number of half-open spans `[start, end)` that share an instant.
fn peak_overlap(spans: &[(i64, i64)]) -> u64 {
    let mut edges: Vec<(i64, i64)> = Vec::with_capacity(spans.len() * 2);
    for &(start, end) in spans {
        edges.push((start, 1));
        edges.push((end.max(start), -1));
    }
    // At one instant, ends come before starts: a call that ended as another began did not
    // overlap it.
    edges.sort();
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, delta) in edges {
        now += delta;
        peak = peak.max(now);
    }
    u64::try_from(peak).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::peak_overlap;

    #[test]
    fn overlap_counts_spans_sharing_an_instant() {
        assert_eq!(peak_overlap(&[]), 0);
        assert_eq!(peak_overlap(&[(0, 10)]), 1);
        assert_eq!(peak_overlap(&[(0, 10), (5, 15), (9, 20)]), 3);
        // Touching is not overlapping.
        assert_eq!(peak_overlap(&[(0, 10), (10, 20), (20, 30)]), 1);
        assert_eq!(peak_overlap(&[(0, 100), (10, 20), (30, 40), (35, 50)]), 3);
    }
}
