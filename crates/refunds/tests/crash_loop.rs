//! A crash loop: `refunds serve` is SIGKILLed at seeded random moments during a mixed load
//! of refunds (several orders, several requests each, amounts that pick the simulator's
//! answers) against `refunds simulator` over real HTTP, and started again each time, on a
//! SQLite file and on a PostgreSQL scratch database. Afterwards every operation answered
//! 201 exists and is Complete, no refund was paid twice, and the books equal the ledger.
//!
//! Small by default (3 kills, 30 requests); `REFUNDS_CRASH_KILLS` and `REFUNDS_CRASH_OPS`
//! run a bigger loop, `REFUNDS_CRASH_SEED=<n>` replays a run's choices (the seed is printed).

mod common;

use std::time::Duration;

use common::books::{self, Api, NODE_ARGS, NODE_ENV};
use common::{cli_on, spawn_serve_on, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use refunds_testkit::{Backend, TestDb};
use tokio::sync::watch;

/// The serving process as the load sees it: its generation (one per start) and its API,
/// `None` while it is down.
type Current = (u64, Option<Api>);

async fn start(url: &str, credentials: &str) -> (Server, Api) {
    let http = reqwest::Client::new();
    let server = spawn_serve_on(url, "http://127.0.0.1", &NODE_ARGS, &NODE_ENV, &http).await;
    let api = Api::login(&server.base, credentials).await;
    (server, api)
}

async fn crash_loop(backend: Backend) {
    let seed = books::env_number("REFUNDS_CRASH_SEED").unwrap_or_else(rand::random);
    let kills = books::env_number("REFUNDS_CRASH_KILLS").unwrap_or(3);
    let ops = books::env_number("REFUNDS_CRASH_OPS").unwrap_or(30);
    eprintln!(
        "crash loop on {backend:?}: seed {seed}, {kills} kills, {ops} requests (replay: REFUNDS_CRASH_SEED={seed})"
    );
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger.db");
    let mut sim = books::simulator(&ledger, 100).await;
    let credentials = cli_on(&db.url, &["clients", "create", "crash", "--admin"]);
    let (mut server, api) = start(&db.url, &credentials).await;
    let orders = usize::try_from(ops / 5 + 1).expect("orders");
    let charges = books::orders(&api, &sim.base, orders, "crash").await;

    let mut rng = StdRng::seed_from_u64(seed);
    let requests: Vec<(usize, String)> = (0..ops)
        .map(|_| (rng.random_range(0..charges.len()), books::amount(&mut rng)))
        .collect();
    let mut kill_after: Vec<u64> = (0..kills).map(|_| rng.random_range(0..ops)).collect();
    kill_after.sort_unstable();
    let delays: Vec<u64> = (0..kills).map(|_| rng.random_range(0..300)).collect();

    let (current, mut seen) = watch::channel::<Current>((0, Some(api)));
    let (sent, mut progress) = watch::channel(0u64);
    let targets: Vec<(String, String)> = requests
        .iter()
        .map(|(i, amount)| (charges[*i].order.clone(), amount.clone()))
        .collect();
    // The load: one request after another; one that gets no answer (the process died
    // under it) is not acknowledged, and the next waits for the next process.
    let load = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut refused = 0;
        for (n, (order, amount)) in targets.iter().enumerate() {
            let (generation, api) = seen
                .wait_for(|(_, api)| api.is_some())
                .await
                .expect("the test runs")
                .clone();
            let api = api.expect("up");
            match api.ensure(order, amount).await {
                Ok((201, answer)) => acknowledged.push(
                    answer["backgroundOperationId"]
                        .as_str()
                        .expect("an operation")
                        .to_string(),
                ),
                Ok((status, answer)) => {
                    assert!(status < 500, "{status}: {answer}");
                    refused += 1;
                }
                Err(_) => {
                    let _ = seen
                        .wait_for(|(g, api)| *g > generation && api.is_some())
                        .await;
                }
            }
            sent.send_replace(n as u64 + 1);
        }
        (acknowledged, refused)
    });

    // Draft refunds (planned, their provider answer not yet recorded) at each kill; one
    // still Draft at several kills counts at each.
    let mut in_flight = 0;
    for (after, delay) in kill_after.iter().zip(&delays) {
        progress
            .wait_for(|n| n >= after)
            .await
            .expect("the load runs");
        // The random moment: up to 300 ms on, while requests and refunds are in flight.
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        let (generation, api) = current.borrow().clone();
        in_flight += api.expect("up").drafts().await;
        current.send_replace((generation, None));
        server.child.kill().expect("SIGKILL serve");
        server.child.wait().expect("reap serve");
        let (next, api) = start(&db.url, &credentials).await;
        server = next;
        current.send_replace((generation + 1, Some(api)));
    }
    let (acknowledged, refused) = tokio::time::timeout(Duration::from_secs(120), load)
        .await
        .expect("the load finishes")
        .expect("the load");
    eprintln!(
        "seed {seed}: {} acknowledged, {refused} refused, {} lost to a kill",
        acknowledged.len(),
        ops as usize - acknowledged.len() - refused
    );
    assert!(
        !acknowledged.is_empty(),
        "seed {seed}: nothing was accepted"
    );
    eprintln!("seed {seed}: {in_flight} Draft refunds counted at the kills");
    assert!(
        kills == 0 || in_flight > 0,
        "seed {seed}: no kill interrupted a refund"
    );

    let api = current.borrow().1.clone().expect("serve is up");
    // A process killed more than MAX_RESCUES times under one operation fails it for good
    // (it could be what kills the process); only a loop of that many kills may do so.
    let given_up = books::wait_final(
        &api,
        &db.db,
        &acknowledged,
        &charges,
        Duration::from_secs(60 + ops),
        seed,
        kills > u64::try_from(refunds_queue::MAX_RESCUES).expect("a count"),
    )
    .await;
    eprintln!("seed {seed}: {given_up} operations failed by the rescue limit, the rest Complete");
    sim.child.kill().expect("stop the simulator");
    sim.child.wait().expect("reap the simulator");
    books::assert_books_equal_ledger(&api, &charges, &ledger, seed).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    crash_loop(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    crash_loop(Backend::Postgres).await
}
