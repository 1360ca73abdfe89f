//! `GET /metrics` in Prometheus' text format, on its own listener (`--metrics-listen`), so
//! it can stay on an internal network without a token: counts of operations and refunds
//! by state, open process exceptions, the queue's lag, and SQLite's group commits (from the
//! database), and what this process's reconciler has done (its own counters).

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use refunds_queue::{ReconcileCounts, ReconcileStats};
use refunds_store::{now_ms, stats, Db};

#[derive(Clone)]
struct Sources {
    db: Db,
    reconciler: ReconcileStats,
}

/// The router of the metrics listener: `reconciler` is the process's runner's
/// (`Runner::reconcile_stats`).
pub fn router(db: Db, reconciler: ReconcileStats) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Sources { db, reconciler })
}

async fn metrics(State(Sources { db, reconciler }): State<Sources>) -> Response {
    match stats::snapshot(&db, now_ms()).await {
        Ok(snapshot) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(&snapshot, db.group_commits(), reconciler.counts()),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the metrics");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// One metric: its help and type lines, then one sample per label value (or one sample).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(Option<(&str, &str)>, i64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (label, value) in samples {
        match label {
            Some((key, v)) => {
                let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {value}", escape(v));
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labelled<'a>(
    key: &'a str,
    counts: &'a [(String, i64)],
) -> Vec<(Option<(&'a str, &'a str)>, i64)> {
    counts
        .iter()
        .map(|(v, n)| (Some((key, v.as_str())), *n))
        .collect()
}

pub fn render(
    s: &stats::Snapshot,
    groups: refunds_store::GroupCommits,
    reconciler: ReconcileCounts,
) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "refunds_background_operations",
        "gauge",
        "Background operations by status.",
        &labelled("status", &s.operations),
    );
    family(
        &mut out,
        "refunds_refunds",
        "gauge",
        "Refunds by status.",
        &labelled("status", &s.refunds),
    );
    family(
        &mut out,
        "refunds_refunds_awaiting_provider",
        "gauge",
        "Refunds whose outcome is looked up (pending), polled (settling) or handed to a person (manual).",
        &labelled("state", &s.reconciling),
    );
    family(
        &mut out,
        "refunds_process_exceptions_open",
        "gauge",
        "Process exceptions not yet resolved or voided.",
        &[(None, s.open_exceptions)],
    );
    let _ = writeln!(
        out,
        "# HELP refunds_queue_lag_seconds How long the operation claimable the longest has waited.\n\
         # TYPE refunds_queue_lag_seconds gauge\nrefunds_queue_lag_seconds {:.3}",
        s.queue_lag_ms as f64 / 1000.0
    );
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    family(
        &mut out,
        "refunds_sqlite_commits_total",
        "counter",
        "SQLite COMMITs (one fsync each) issued by this process.",
        &[(None, to_i64(groups.commits))],
    );
    family(
        &mut out,
        "refunds_sqlite_committed_transactions_total",
        "counter",
        "Transactions those COMMITs made durable (several share one with group commit).",
        &[(None, to_i64(groups.members))],
    );
    family(
        &mut out,
        "refunds_reconcile_lookups_in_flight",
        "gauge",
        "Reconciliation lookups this process is running now.",
        &[(None, to_i64(reconciler.in_flight))],
    );
    family(
        &mut out,
        "refunds_reconcile_lookups_total",
        "counter",
        "Provider lookups by this process's reconciler, by what they answered: found, not_found (never received), unknown (the lookup failed).",
        &[
            (Some(("result", "found")), to_i64(reconciler.found)),
            (Some(("result", "not_found")), to_i64(reconciler.not_found)),
            (Some(("result", "unknown")), to_i64(reconciler.unknown)),
        ],
    );
    family(
        &mut out,
        "refunds_reconcile_failures_total",
        "counter",
        "Reconciliation lookups of this process that ended in an internal error or a panic.",
        &[(None, to_i64(reconciler.failures))],
    );
    out
}
