//! `GET /metrics` (the metrics listener's router) on SQLite and PostgreSQL: counts by
//! state after real flows, open process exceptions, the queue's lag, the text format.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use refunds_testkit::{backend_tests, Backend, TestApp};
use serde_json::json;
use tower::ServiceExt;

/// The metrics text, and the value of each sample line by its name and labels.
async fn scrape(app: &TestApp) -> (String, std::collections::HashMap<String, f64>) {
    let response = refunds_api::metrics::router(app.db.clone(), app.runner.reconcile_stats())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            (name.to_string(), value.parse::<f64>().expect("a number"))
        })
        .collect();
    (text, samples)
}

/// The value of one series; a series that is missing fails the test (it is not zero: a
/// renamed or dropped series must not pass for an empty one).
fn series_value(text: &str, samples: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    match samples.get(name) {
        Some(value) => *value,
        None => panic!("no series {name} in the metrics:\n{text}"),
    }
}

async fn counts_by_state_after_real_flows(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (text, samples) = scrape(&app).await;
    let sample = |name: &str| series_value(&text, &samples, name);
    assert_eq!(sample("refunds_process_exceptions_open"), 0.0, "{text}");
    assert_eq!(sample("refunds_queue_lag_seconds"), 0.0, "{text}");
    for family in [
        "refunds_background_operations",
        "refunds_refunds",
        "refunds_refunds_awaiting_provider",
        "refunds_sqlite_commits_total",
        "refunds_reconcile_lookups_in_flight",
        "refunds_reconcile_lookups_total",
        "refunds_reconcile_failures_total",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{text}");
    }

    // One refund processed, one declined by the simulator (10.91): a process exception.
    let order = app.order("USD", &["100.00"]).await;
    app.ensure(&order, json!({"excessFundsAmount": 12.34}))
        .await;
    app.ensure(&order, json!({"excessFundsAmount": 10.91}))
        .await;
    app.settle().await;
    // And one waiting: enqueued, not run.
    let other = app.order("USD", &["50.00"]).await;
    app.ensure(&other, json!({"excessFundsAmount": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    let (text, samples) = scrape(&app).await;
    let sample = |name: &str| series_value(&text, &samples, name);
    for (name, expected) in [
        (r#"refunds_background_operations{status="Complete"}"#, 2.0),
        (r#"refunds_background_operations{status="New"}"#, 1.0),
        (r#"refunds_refunds{status="Processed"}"#, 1.0),
        (r#"refunds_refunds{status="Canceled"}"#, 1.0),
        ("refunds_process_exceptions_open", 1.0),
    ] {
        assert_eq!(sample(name), expected, "{name}: {text}");
    }
    assert!(sample("refunds_queue_lag_seconds") >= 0.02, "{text}");
    let commits = sample("refunds_sqlite_commits_total");
    let members = sample("refunds_sqlite_committed_transactions_total");
    match backend {
        Backend::Sqlite => assert!(commits >= 1.0 && members >= commits, "{text}"),
        Backend::Postgres => assert_eq!((commits, members), (0.0, 0.0), "{text}"),
    }
}

backend_tests!(counts_by_state_after_real_flows);
