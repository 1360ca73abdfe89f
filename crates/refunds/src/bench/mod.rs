//! `refunds bench`: measures the service beside the machine's own limits, in one run, on one
//! database, and prints a table and JSON.
//!
//! The service is measured as users run it: `refunds serve` child processes (this binary,
//! from [`std::env::current_exe`]) on a scratch database (a fresh SQLite file, or a
//! PostgreSQL database created for the run and dropped after it), driven over HTTP by an
//! in-process load generator, and observed through the database: the operations'
//! `SubmittedAt`, `StartedAt` and `FinishedAt`, and the gateway log's call durations.
//!
//! The phases, in order (each bounded in time; one that runs out reports "did not finish
//! within N s" and what it reached, then the run goes on):
//! 1. [`baseline`]: one-row durable insert transactions at 1, 16 and 64 clients, straight
//!    to the database; every rate below is also given as a ratio to the 64-client figure;
//! 2. ensure-refunds-async bursts at 1, 16 and 64 clients with the workers running;
//! 3. a backlog of 1,000 operations built with the workers off (`serve --workers 0`),
//!    then drained by a `serve` with workers: completions/s, CPU time per 1,000;
//! 4. sustained throughput: requests offered at the rate the service completes them, the
//!    rate found by short probes that start from phase 3's rate;
//! 5. enqueue → start latency at half that rate;
//! 6. a 200 ms provider (the built-in simulator's latency) with many workers: completions/s
//!    and the peak of provider calls in flight;
//! 7. SIGKILL of a `serve` in the middle of provider calls and a restart: seconds until
//!    the killed process's operations run again;
//! 8. a backlog of 100,000 operations, built and drained like phase 3, and the peak
//!    resident memory of the `serve` that drains it.
//!
//! Nothing here is part of the service: it only starts it, talks to it, and reads its
//! database.

mod baseline;
mod load;
mod observe;
mod phases;
mod report;
mod scratch;
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

/// The flags of `refunds bench`. Sizes and durations left out take the full run's
/// defaults, or `--quick`'s.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// `sqlite` (a fresh file in a temporary directory) or `postgres` (a scratch database
    /// created on the --postgres-url server and dropped afterwards).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    database: String,
    /// The PostgreSQL server for `--database postgres`; its user must be allowed to create
    /// databases.
    #[arg(
        long,
        env = "REFUNDS_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Small sizes and short durations: a check that every phase works, in well under a
    /// minute. Its figures are not the service's.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file (`-`: to stdout, after the table).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Orders loaded (one 10,000.00 payment each); requests go to them in turn.
    #[arg(long)]
    orders: Option<usize>,
    /// Seconds each baseline level runs.
    #[arg(long)]
    baseline_secs: Option<f64>,
    /// Seconds each enqueue burst runs.
    #[arg(long)]
    burst_secs: Option<f64>,
    /// The small backlog (operations).
    #[arg(long)]
    backlog_small: Option<u64>,
    /// The large backlog (operations).
    #[arg(long)]
    backlog_large: Option<u64>,
    /// Seconds of each probe that looks for the sustainable rate.
    #[arg(long)]
    probe_secs: Option<f64>,
    /// Seconds the sustainable rate is offered.
    #[arg(long)]
    sustained_secs: Option<f64>,
    /// Seconds the half rate is offered for the enqueue → start latency.
    #[arg(long)]
    latency_secs: Option<f64>,
    /// Operations drained through the slow provider.
    #[arg(long)]
    slow_operations: Option<u64>,
    /// Workers of the `serve` that drains them.
    #[arg(long)]
    slow_workers: Option<usize>,
    /// The slow provider's latency (the built-in simulator's `--simulator-latency-ms`).
    #[arg(long, default_value_t = 200)]
    slow_latency_ms: u64,
    /// Workers of every other `serve` (serve's default).
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// `--lease-ms` of every `serve` (serve's default; `--quick`: 2000).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// The bound of every wait for a queue to drain, in seconds.
    #[arg(long)]
    drain_timeout_secs: Option<u64>,
    /// The bound of building a backlog, in seconds.
    #[arg(long)]
    build_timeout_secs: Option<u64>,
}

/// What a run does, resolved from the flags; recorded in the report.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub orders: usize,
    pub baseline_secs: f64,
    pub burst_secs: f64,
    pub backlog_small: u64,
    pub backlog_large: u64,
    pub probe_secs: f64,
    pub sustained_secs: f64,
    pub latency_secs: f64,
    pub slow_operations: u64,
    pub slow_workers: usize,
    pub slow_latency_ms: u64,
    pub workers: usize,
    pub lease_ms: u64,
    /// The provider latency while a `serve` is killed, so that its calls are in flight.
    pub kill_latency_ms: u64,
    pub drain_timeout_secs: u64,
    pub build_timeout_secs: u64,
    /// Concurrent clients that build backlogs and load orders.
    pub build_clients: usize,
}

impl Settings {
    fn resolve(a: &BenchArgs) -> anyhow::Result<Settings> {
        let q = a.quick;
        let pick =
            |flag: Option<f64>, full: f64, quick: f64| flag.unwrap_or(if q { quick } else { full });
        let s = Settings {
            quick: q,
            orders: a.orders.unwrap_or(if q { 100 } else { 1000 }),
            baseline_secs: pick(a.baseline_secs, 3.0, 0.5),
            burst_secs: pick(a.burst_secs, 5.0, 0.5),
            backlog_small: a.backlog_small.unwrap_or(if q { 200 } else { 1000 }),
            backlog_large: a.backlog_large.unwrap_or(if q { 1000 } else { 100_000 }),
            probe_secs: pick(a.probe_secs, 5.0, 0.5),
            sustained_secs: pick(a.sustained_secs, 60.0, 2.0),
            latency_secs: pick(a.latency_secs, 10.0, 1.0),
            slow_operations: a.slow_operations.unwrap_or(if q { 300 } else { 10_000 }),
            slow_workers: a.slow_workers.unwrap_or(if q { 100 } else { 1000 }),
            slow_latency_ms: a.slow_latency_ms,
            workers: a.workers,
            lease_ms: a.lease_ms.unwrap_or(if q { 2000 } else { 30_000 }),
            kill_latency_ms: 2000,
            drain_timeout_secs: a.drain_timeout_secs.unwrap_or(if q { 30 } else { 180 }),
            build_timeout_secs: a.build_timeout_secs.unwrap_or(if q { 30 } else { 600 }),
            build_clients: 64,
        };
        anyhow::ensure!(s.orders > 0, "--orders must be at least 1");
        anyhow::ensure!(s.workers > 0, "--workers must be at least 1");
        anyhow::ensure!(s.slow_workers > 0, "--slow-workers must be at least 1");
        anyhow::ensure!(s.lease_ms >= 100, "--lease-ms must be at least 100");
        for (name, secs) in [
            ("--baseline-secs", s.baseline_secs),
            ("--burst-secs", s.burst_secs),
            ("--probe-secs", s.probe_secs),
            ("--sustained-secs", s.sustained_secs),
            ("--latency-secs", s.latency_secs),
        ] {
            anyhow::ensure!(
                secs.is_finite() && secs > 0.0 && secs <= 3600.0,
                "{name} must be more than 0 and at most 3600"
            );
        }
        anyhow::ensure!(
            s.backlog_small > 0 && s.backlog_large > 0 && s.slow_operations > 0,
            "backlogs must hold at least one operation"
        );
        Ok(s)
    }

    fn drain_bound(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    fn build_bound(&self) -> Duration {
        Duration::from_secs(self.build_timeout_secs)
    }
}

/// Runs the bench and prints its figures; the scratch database is dropped whatever happens.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(&args)?;
    let exe = std::env::current_exe().context("cannot find this program's own executable")?;
    let dir = tempfile::Builder::new()
        .prefix("refunds-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let scratch = match args.database.as_str() {
        "postgres" => scratch::Scratch::postgres(&args.postgres_url).await?,
        _ => scratch::Scratch::sqlite(dir.path()),
    };
    let started = Instant::now();
    let outcome = phases::run_all(&exe, dir.path(), &scratch, &settings).await;
    scratch.drop_database().await;
    let mut report = outcome?;
    report.seconds = started.elapsed().as_secs_f64();
    print!("{}", report::table(&report));
    let json = serde_json::to_string_pretty(&report).context("cannot write the report")?;
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => println!("{json}"),
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {}
    }
    Ok(())
}
