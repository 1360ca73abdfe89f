//! Several nodes on one PostgreSQL database: one `refunds serve` that runs the API alone
//! (`--workers 0`) and two `refunds worker` processes, against `refunds simulator` over
//! real HTTP with latency, so refunds are in flight when one worker is SIGKILLed mid-run.
//! Every accepted operation finishes exactly once and the books equal the ledger.
//!
//! PostgreSQL only (SQLite has one worker process by design): skipped with a notice
//! without `REFUNDS_TEST_POSTGRES_URL`, a failure under `CI=true`.
//! `REFUNDS_NODES_SEED=<n>` replays a run's amounts (the seed is printed).

mod common;

use std::time::{Duration, Instant};

use common::books::{self, Api, NODE_ARGS, NODE_ENV};
use common::{cli_on, spawn_serve_on};
use rand::rngs::StdRng;
use rand::SeedableRng;
use refunds_testkit::{Backend, TestDb};

const ORDERS: usize = 12;
const REQUESTS_PER_ORDER: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_and_doubles_nothing() {
    let seed = books::env_number("REFUNDS_NODES_SEED").unwrap_or_else(rand::random);
    eprintln!("nodes: seed {seed} (replay: REFUNDS_NODES_SEED={seed})");
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger.db");
    let mut sim = books::simulator(&ledger, 300).await;
    let credentials = cli_on(&db.url, &["clients", "create", "nodes", "--admin"]);
    let mut args = NODE_ARGS.to_vec();
    args.extend(["--workers", "0"]);
    let http = reqwest::Client::new();
    let server = spawn_serve_on(&db.url, "http://127.0.0.1", &args, &NODE_ENV, &http).await;
    let api = Api::login(&server.base, &credentials).await;
    let charges = books::orders(&api, &sim.base, ORDERS, "nodes").await;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops = Vec::new();
    for _ in 0..REQUESTS_PER_ORDER {
        for c in &charges {
            let amount = books::amount(&mut rng);
            let (status, answer) = api.ensure(&c.order, &amount).await.expect("an answer");
            assert_eq!(status, 201, "{amount}: {answer}");
            ops.push(
                answer["backgroundOperationId"]
                    .as_str()
                    .expect("an operation")
                    .to_string(),
            );
        }
    }
    // Nothing runs before the workers start: serve has none.
    let queued = api
        .get(&format!("/sobjects/BackgroundOperation/{}", ops[0]))
        .await;
    assert_eq!(queued["Status"], "New", "{queued}");

    let mut doomed = books::worker(&db.url, &dir.path().join("worker-1.log"));
    let survivor = books::worker(&db.url, &dir.path().join("worker-2.log"));
    // Mid-run: some operations done, others queued, refunds waiting for the provider.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut complete = 0;
        for op in &ops {
            let bo = api
                .get(&format!("/sobjects/BackgroundOperation/{op}"))
                .await;
            complete += usize::from(bo["Status"] == "Complete");
        }
        if complete > 0 && api.drafts().await > 0 {
            assert!(
                complete < ops.len(),
                "seed {seed}: all done before the kill"
            );
            break;
        }
        assert!(Instant::now() < deadline, "seed {seed}: nothing completes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.child.kill().expect("SIGKILL a worker");
    doomed.child.wait().expect("reap the worker");

    books::wait_final(
        &api,
        &db.db,
        &ops,
        &charges,
        Duration::from_secs(90),
        seed,
        false,
    )
    .await;
    sim.child.kill().expect("stop the simulator");
    sim.child.wait().expect("reap the simulator");
    books::assert_books_equal_ledger(&api, &charges, &ledger, seed).await;
    drop((survivor, server));
}
