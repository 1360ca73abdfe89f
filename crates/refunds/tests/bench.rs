//! `refunds bench --quick` end to end, as a user runs it: the real binary, its `serve`
//! children, a real SQLite file (and a PostgreSQL scratch database when
//! `REFUNDS_TEST_POSTGRES_URL` is set). Checks that the JSON holds every figure, non-zero
//! where a working service must produce one, and that the scratch database is gone after.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The runs share two cores with everything else: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// A quick run takes well under a minute; past this it is stuck.
const BOUND: Duration = Duration::from_secs(240);

/// Runs `refunds bench` with `args`, within [`BOUND`]; answers its output and its pid.
fn bench(args: &[&str]) -> (Output, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_refunds"))
        .arg("bench")
        .args(args)
        .env("REFUNDS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start refunds bench");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(BOUND) {
        Ok(output) => (output.expect("refunds bench output"), pid),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("refunds bench did not finish within {} s", BOUND.as_secs());
        }
    }
}

fn quick(dir: &Path, extra: &[&str]) -> (Value, String, u32) {
    let json = dir.join("bench.json");
    let json_arg = json.display().to_string();
    let mut args = vec!["--quick", "--json", &json_arg];
    args.extend_from_slice(extra);
    let (out, pid) = bench(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "refunds bench failed: {stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON file"))
            .expect("the JSON parses");
    (
        report,
        String::from_utf8_lossy(&out.stdout).to_string(),
        pid,
    )
}

/// The value at a dotted path (`enqueue.0.drain`).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |at, key| match key.parse::<usize>() {
            Ok(i) => &at[i],
            Err(_) => &at[key],
        })
}

fn num(v: &Value, path: &str) -> f64 {
    let at = at(v, path);
    at.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in the report: {at}"))
}

fn positive(v: &Value, path: &str) -> f64 {
    let n = num(v, path);
    assert!(n > 0.0, "{path} should be more than 0, is {n}");
    n
}

fn finished(v: &Value, path: &str) {
    let b = at(v, path);
    assert_eq!(b["finished"], true, "{path} did not finish: {}", b["note"]);
    assert!(b["note"].is_null(), "{path}: {}", b["note"]);
}

/// Either finished, or says so: "did not finish within N s" with what it reached.
fn finished_or_said(b: &Value, what: &str) {
    if b["finished"] != true {
        let note = b["note"].as_str().unwrap_or_default();
        assert!(
            note.starts_with("did not finish within "),
            "{what} neither finished nor said why: {b}"
        );
    }
}

fn check(r: &Value, database: &str) {
    assert_eq!(r["database"], database);
    assert_eq!(r["settings"]["quick"], true);
    assert!(r["database_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    let durability = r["baseline"]["durability"].as_str().unwrap_or_default();
    if database == "sqlite" {
        assert_eq!(durability, "journal_mode=wal, synchronous=FULL");
    } else {
        assert!(
            durability.starts_with("synchronous_commit=on, fsync="),
            "{durability}"
        );
    }

    // The baseline at 1, 16 and 64 clients; ratios are to the 64-client figure.
    let levels = r["baseline"]["levels"].as_array().expect("baseline levels");
    let clients: Vec<u64> = levels
        .iter()
        .map(|l| l["clients"].as_u64().unwrap())
        .collect();
    assert_eq!(clients, [1, 16, 64]);
    for i in 0..3 {
        positive(r, &format!("baseline.levels.{i}.transactions"));
        positive(r, &format!("baseline.levels.{i}.per_second"));
    }
    let reference = positive(r, "reference_per_second");
    assert_eq!(reference, num(r, "baseline.levels.2.per_second"));

    // Bursts with the workers on.
    let enqueue = r["enqueue"].as_array().expect("enqueue levels");
    assert_eq!(enqueue.len(), 3);
    for (i, clients) in [1, 16, 64].into_iter().enumerate() {
        let e = &enqueue[i];
        assert_eq!(e["clients"], clients);
        assert_eq!(e["errors"], 0, "{e}");
        let per_second = positive(r, &format!("enqueue.{i}.per_second"));
        let ratio = positive(r, &format!("enqueue.{i}.ratio"));
        assert!((ratio - per_second / reference).abs() < 1e-9);
        let p50 = positive(r, &format!("enqueue.{i}.p50_ms"));
        assert!(num(r, &format!("enqueue.{i}.p99_ms")) >= p50);
        finished(r, &format!("enqueue.{i}.drain"));
    }

    // The small backlog is built and drained whole; CPU time and memory are read.
    for phase in [
        "backlog_small",
        "slow_provider",
        "recovery",
        "start_latency",
        "backlog_large",
    ] {
        assert_eq!(r[phase]["queued_at_start"], 0, "{phase} began with a queue");
    }
    let small = &r["backlog_small"];
    assert_eq!(small["operations"], r["settings"]["backlog_small"]);
    assert_eq!(small["completed"], small["operations"]);
    assert_eq!(small["failed"], 0);
    assert_eq!(small["workers"], 32);
    finished(r, "backlog_small.build");
    finished(r, "backlog_small.drain");
    for figure in [
        "build_per_second",
        "per_second",
        "ratio",
        "drain_seconds",
        "cpu_seconds",
        "cpu_seconds_per_1000",
        "peak_rss_mib",
        "build_peak_rss_mib",
    ] {
        positive(r, &format!("backlog_small.{figure}"));
    }
    assert_eq!(
        num(r, "cpu_seconds_per_1000_refunds"),
        num(r, "backlog_small.cpu_seconds_per_1000")
    );

    // The large backlog is built whole; its drain may run out of time, and then says so.
    let large = &r["backlog_large"];
    assert_eq!(large["operations"], r["settings"]["backlog_large"]);
    finished(r, "backlog_large.build");
    finished_or_said(&large["drain"], "the large backlog's drain");
    positive(r, "backlog_large.completed");
    positive(r, "backlog_large.per_second");
    positive(r, "backlog_large.peak_rss_mib");
    assert_eq!(
        num(r, "peak_rss_mib_large_backlog"),
        num(r, "backlog_large.peak_rss_mib")
    );
    let large_to_small = positive(r, "large_to_small");
    assert!(
        (large_to_small - num(r, "backlog_large.per_second") / num(r, "backlog_small.per_second"))
            .abs()
            < 1e-9
    );

    // Sustained: probes found a rate, it was offered, and operations completed meanwhile.
    let s = &r["sustained"];
    assert!(!s["probes"].as_array().expect("probes").is_empty());
    for figure in [
        "offered_per_second",
        "accepted",
        "accepted_per_second",
        "completed_per_second",
        "ratio",
        "p50_ms",
    ] {
        positive(r, &format!("sustained.{figure}"));
    }
    assert!(
        s["backlog_samples"].as_array().expect("samples").len() as f64
            >= num(r, "sustained.seconds"),
        "a backlog sample each second: {s}"
    );
    assert!(s["flat"].is_boolean());

    // Enqueue → start at half the sustained rate.
    let l = &r["start_latency"];
    let started = positive(r, "start_latency.operations");
    assert!(started <= positive(r, "start_latency.submitted"));
    assert!(
        (num(r, "start_latency.offered_per_second") - num(r, "sustained.offered_per_second") / 2.0)
            .abs()
            < 1e-9
            || num(r, "start_latency.offered_per_second") == 1.0
    );
    let p50 = num(r, "start_latency.p50_ms");
    assert!(p50 >= 0.0 && num(r, "start_latency.p99_ms") >= p50, "{l}");
    finished(r, "start_latency.drain");

    // A 200 ms provider: everything completes, and calls overlapped.
    let p = &r["slow_provider"];
    assert_eq!(p["latency_ms"], 200);
    finished(r, "slow_provider.build");
    finished(r, "slow_provider.drain");
    assert_eq!(p["completed"], p["operations"]);
    positive(r, "slow_provider.per_second");
    let peak = positive(r, "slow_provider.peak_calls_in_flight");
    assert!(
        peak > 1.0 && peak <= num(r, "slow_provider.workers"),
        "calls in flight: {peak} of {} workers",
        p["workers"]
    );

    // SIGKILL and restart: the killed process's operations ran again and finished.
    let k = &r["recovery"];
    assert_eq!(k["operations"], 32, "{k}");
    finished(r, "recovery.restarted");
    finished(r, "recovery.drain");
    positive(r, "recovery.restart_seconds");
    let again = positive(r, "recovery.running_again_seconds");
    assert!(num(r, "recovery.finished_seconds") >= again);

    positive(r, "seconds");
}

fn table_is_printed(stdout: &str) {
    for line in [
        "baseline: durable 1-row inserts, 64 clients",
        "ensure-refunds, workers on, 64 clients",
        "sustained,",
        "enqueue → start",
        "SIGKILL → running again",
        "serve peak RSS",
    ] {
        assert!(stdout.contains(line), "no {line:?} in the table:\n{stdout}");
    }
}

#[test]
fn a_quick_bench_on_sqlite_reports_every_figure() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (report, stdout, _) = quick(dir.path(), &[]);
    check(&report, "sqlite");
    table_is_printed(&stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quick_bench_on_postgres_reports_every_figure_and_drops_its_database() {
    use sqlx::Connection;
    let Ok(url) = std::env::var("REFUNDS_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but REFUNDS_TEST_POSTGRES_URL is not set: PostgreSQL tests are required in CI"
        );
        eprintln!("notice: REFUNDS_TEST_POSTGRES_URL is not set; skipping a PostgreSQL test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (report, stdout, pid) = tokio::task::block_in_place(|| {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        quick(
            dir.path(),
            &["--database", "postgres", "--postgres-url", &url],
        )
    });
    check(&report, "postgres");
    table_is_printed(&stdout);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname LIKE $1")
        .bind(format!("refunds_bench_{pid}_%"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "the scratch database was not dropped");
}

#[test]
fn bad_flags_are_refused_before_anything_runs() {
    for (args, says) in [
        (&["--orders", "0"][..], "--orders must be at least 1"),
        (&["--workers", "0"][..], "--workers must be at least 1"),
        (&["--lease-ms", "99"][..], "--lease-ms must be at least 100"),
        (
            &["--sustained-secs", "0"][..],
            "--sustained-secs must be more than 0",
        ),
        (
            &["--probe-secs", "3601"][..],
            "--probe-secs must be more than 0 and at most 3600",
        ),
        (
            &["--backlog-large", "0"][..],
            "backlogs must hold at least one operation",
        ),
        (&["--database", "mysql"][..], "invalid value 'mysql'"),
    ] {
        let (out, _) = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed figures");
    }
}

/// `serve --workers 0` is how the bench pauses the workers; `worker` without workers is a
/// mistake.
#[test]
fn a_worker_process_still_needs_workers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("w.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_refunds"))
        .args(["worker", "--workers", "0", "--database-url", &url])
        .env("REFUNDS_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--workers must be at least 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
