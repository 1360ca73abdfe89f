//! `GET /openapi.json` against the router: every documented operation is routed, and
//! schemathesis (PyPI, pinned, installed into `target/` on the first run) drives the
//! served API from the document — valid and hostile cases generated from the schema —
//! requiring no 5xx and answers that match it. Without Python 3 and its `venv` the
//! schemathesis test is skipped with a notice, except under `CI=true`, where that fails.
//!
//! Its seed is printed; replay with `REFUNDS_SCHEMATHESIS_SEED=<n>`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::http::{Method, StatusCode};
use common::raw;
use refunds_api::server::{serve, HttpLimits};
use refunds_testkit::{backend_tests, Backend, TestApp};

const SCHEMATHESIS: &str = "schemathesis==4.32.5";

async fn every_documented_operation_is_routed(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let order = app.order("USD", &["10.00"]).await;
    let answer = raw(&app, Method::GET, "/openapi.json", None, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let spec = answer.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{}", paths.len());
    for (template, item) in paths {
        let path = template
            .replace("{version}", "v58.0")
            .replace("{type}", "OrderSummary")
            .replace("{id}", &order.id)
            .replace("{locator}", "01gX-0");
        for (method, op) in item.as_object().expect("path item") {
            let method: Method = method.to_uppercase().parse().expect("a method");
            let answer = raw(&app, method.clone(), &path, Some(b"{}".to_vec()), &[]).await;
            assert_ne!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
            assert!(
                answer.status.as_u16() < 500,
                "{method} {path}: {}",
                answer.text
            );
            let documented = op["responses"]
                .as_object()
                .expect("responses")
                .contains_key(answer.status.as_str());
            assert!(
                documented || op["responses"]["default"].is_object(),
                "{method} {path}: {} is not documented",
                answer.status
            );
            assert!(op["summary"].is_string(), "{method} {template}");
        }
    }
}

backend_tests!(every_documented_operation_is_routed);

/// Whether a venv can be made here; if not the test is skipped, or fails under CI.
fn python_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "python3 with venv is required under CI=true"
        );
        eprintln!("skipped: python3 with venv is not installed");
    }
    ok
}

fn run(command: &mut Command) {
    let output = command.output().expect("start the command");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The pinned schemathesis in `target/tmp/schemathesis-venv`, installed once.
fn schemathesis() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let marker = dir.join("installed.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(SCHEMATHESIS) {
        run(Command::new("python3").arg("-m").arg("venv").arg(&dir));
        run(Command::new(dir.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SCHEMATHESIS,
        ]));
        std::fs::write(&marker, SCHEMATHESIS).expect("write the marker");
    }
    dir.join("bin/schemathesis")
}

/// The seed CI replays (see below).
const CI_SEED: u64 = 20261201;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_and_no_answer_outside_the_schema() {
    if !python_available() {
        return;
    }
    let program = tokio::task::spawn_blocking(schemathesis)
        .await
        .expect("install schemathesis");
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::start(backend).await else {
            continue;
        };
        app.order("USD", &["10.00"]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(serve(
            listener,
            app.router.clone(),
            HttpLimits::default(),
            None,
            shutdown,
        ));
        // A developer's run explores with a new seed each time; CI (CI=true) replays a fixed
        // one unless told otherwise, so a red CI run is always reproducible from its log.
        let seed: u64 = std::env::var("REFUNDS_SCHEMATHESIS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    CI_SEED
                } else {
                    rand::random::<u32>().into()
                }
            });
        println!("schemathesis on {backend:?}: seed {seed}");
        // (coreutils' `timeout` ends a run that hangs)
        // schemathesis keeps a cache of what it found in its working directory: in target/.
        let workdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-run");
        std::fs::create_dir_all(&workdir).expect("schemathesis working directory");
        let mut command = Command::new("timeout");
        command
            .current_dir(&workdir)
            .arg("600")
            .arg(&program)
            .arg("run")
            .arg(format!("http://{addr}/openapi.json"))
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,content_type_conformance",
                "--max-examples",
                "15",
                "--seed",
                &seed.to_string(),
                "--header",
                &format!("Authorization: Bearer {}", app.token),
                "--no-color",
            ]);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("schemathesis joins")
            .expect("schemathesis runs");
        let report = String::from_utf8_lossy(&output.stdout);
        let summary: Vec<&str> = report.lines().rev().take(40).collect();
        for line in summary.iter().rev() {
            println!("{line}");
        }
        assert!(
            output.status.success(),
            "schemathesis on {backend:?} (seed {seed}) found failures:\n{report}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
