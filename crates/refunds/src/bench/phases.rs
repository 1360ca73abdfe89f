//! The phases of a run, in order (see the module docs of `bench`), each bounded in time.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use refunds_store::now_ms;

use super::baseline::{self, CLIENTS};
use super::load::{self, closed_loop, open_loop, percentile, rate, Api, Load, Orders, Stop};
use super::observe::Observer;
use super::report::{
    Backlog, Bounded, Enqueue, Probe, Recovery, Report, SlowProvider, StartLatency, Sustained,
};
use super::scratch::Scratch;
use super::server::{Options, Serve};
use super::Settings;

/// Requests an open loop keeps unanswered at most.
const MAX_IN_FLIGHT: usize = 1024;
/// Probes that look for the sustainable rate.
const MAX_PROBES: usize = 6;

/// What every phase shares.
struct Bench<'a> {
    exe: &'a Path,
    dir: &'a Path,
    url: &'a str,
    s: &'a Settings,
    http: reqwest::Client,
    observer: Observer,
    /// The API client's id and secret, made with `refunds clients create`.
    credentials: (String, String),
    api: Option<Api>,
}

impl Bench<'_> {
    /// Starts a `serve` and answers it with a logged-in client of it.
    async fn serve(&mut self, workers: usize, latency_ms: u64) -> anyhow::Result<(Serve, Api)> {
        let options = Options {
            workers,
            simulator_latency_ms: latency_ms,
            lease_ms: self.s.lease_ms,
        };
        let serve = Serve::start(self.exe, self.dir, self.url, &options, &self.http).await?;
        let api = match &self.api {
            Some(api) => api.on(&serve.base),
            None => {
                let (id, secret) = &self.credentials;
                let api = Api::login(&self.http, &serve.base, id, secret).await?;
                self.api = Some(api.clone());
                api
            }
        };
        Ok((serve, api))
    }
}

/// A rate as a share of the baseline's 64-client figure.
fn ratio(per_second: f64, reference: f64) -> f64 {
    if reference > 0.0 {
        per_second / reference
    } else {
        0.0
    }
}

/// `refunds clients create` on the scratch database, as a user would.
fn create_client(exe: &Path, url: &str) -> anyhow::Result<(String, String)> {
    let out = Command::new(exe)
        .args([
            "clients",
            "create",
            "bench",
            "--admin",
            "--database-url",
            url,
        ])
        .env("REFUNDS_LOG", "warn")
        .output()
        .context("cannot run refunds clients create")?;
    anyhow::ensure!(
        out.status.success(),
        "refunds clients create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .with_context(|| format!("refunds clients create printed no {key}"))
    };
    Ok((field("client_id")?, field("client_secret")?))
}

pub async fn run_all(
    exe: &Path,
    dir: &Path,
    scratch: &Scratch,
    s: &Settings,
) -> anyhow::Result<Report> {
    let observer = Observer::open(&scratch.url).await?;
    let sqlite = scratch.kind == "sqlite";
    let database_version = observer.version(sqlite).await?;

    tracing::info!("baseline: durable one-row inserts");
    let baseline = baseline::measure(observer.url(), sqlite, s.baseline_secs).await?;
    let reference = baseline.reference();

    // Migrates the scratch database too (the CLI does, as `serve` does).
    let credentials = create_client(exe, &scratch.url)?;
    let mut b = Bench {
        exe,
        dir,
        url: &scratch.url,
        s,
        http: load::http_client()?,
        observer,
        credentials,
        api: None,
    };

    let (serve, api) = b.serve(s.workers, 0).await?;
    tracing::info!(orders = s.orders, "loading orders");
    let orders = Arc::new(api.load_orders(s.orders, 16).await?);
    let enqueue = enqueue_bursts(&b, &api, &orders, reference).await?;
    serve.kill()?;

    let (small, serve, api) =
        backlog(&mut b, &orders, s.backlog_small, s.workers, 0, reference).await?;
    let sustained = sustained(&b, &api, &orders, small.figures.per_second, reference).await?;
    let start_latency = start_latency(&b, &api, &orders, sustained.offered_per_second).await?;
    serve.kill()?;

    let (slow, serve, _) = backlog(
        &mut b,
        &orders,
        s.slow_operations,
        s.slow_workers,
        s.slow_latency_ms,
        reference,
    )
    .await?;
    let peak_calls_in_flight = b.observer.peak_calls_in_flight(slow.since_ms).await?;
    serve.kill()?;
    let slow_provider = SlowProvider {
        latency_ms: s.slow_latency_ms,
        backlog: slow.figures,
        peak_calls_in_flight,
    };

    let recovery = recovery(&mut b, &orders).await?;

    let (large, serve, _) =
        backlog(&mut b, &orders, s.backlog_large, s.workers, 0, reference).await?;
    serve.kill()?;
    b.observer.close().await;

    let small = small.figures;
    let large = large.figures;
    Ok(Report {
        database: scratch.kind.to_string(),
        database_version,
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings: s.clone(),
        reference_per_second: reference,
        large_to_small: if small.per_second > 0.0 {
            large.per_second / small.per_second
        } else {
            0.0
        },
        cpu_seconds_per_1000_refunds: small.cpu_seconds_per_1000,
        peak_rss_mib_large_backlog: large.peak_rss_mib,
        baseline,
        enqueue,
        backlog_small: small,
        sustained,
        start_latency,
        slow_provider,
        recovery,
        backlog_large: large,
        seconds: 0.0,
    })
}

/// ensure-refunds-async at 1, 16 and 64 clients with the workers running; after each
/// level, its operations are drained so the next starts from an empty queue.
async fn enqueue_bursts(
    b: &Bench<'_>,
    api: &Api,
    orders: &Arc<Orders>,
    reference: f64,
) -> anyhow::Result<Vec<Enqueue>> {
    let mut levels = Vec::new();
    for clients in CLIENTS {
        tracing::info!(clients, "enqueue burst, workers on");
        let run = Duration::from_secs_f64(b.s.burst_secs);
        let load = closed_loop(api, orders, clients, Stop::After(run)).await;
        let drained = b.observer.drained(b.s.drain_bound()).await?;
        levels.push(Enqueue {
            clients,
            requests: load.ok,
            errors: load.errors,
            first_error: load.first_error.clone(),
            seconds: load.seconds,
            per_second: load.per_second(),
            ratio: ratio(load.per_second(), reference),
            p50_ms: percentile(&load.latencies_ms, 0.5),
            p99_ms: percentile(&load.latencies_ms, 0.99),
            drain: Bounded::new(drained.finished, b.s.drain_bound().as_secs_f64(), || {
                format!("{} operations left", drained.left)
            }),
            drain_seconds: drained.seconds,
        });
    }
    Ok(levels)
}

/// A backlog's figures, and where its operations begin.
struct BacklogRun {
    figures: Backlog,
    since_ms: i64,
}

/// Builds `operations` through the API of a `serve --workers 0`, then drains them with a
/// `serve` of `workers` (the built-in simulator at `latency_ms`), which it answers still
/// running.
async fn backlog(
    b: &mut Bench<'_>,
    orders: &Arc<Orders>,
    operations: u64,
    workers: usize,
    latency_ms: u64,
    reference: f64,
) -> anyhow::Result<(BacklogRun, Serve, Api)> {
    let queued_at_start = b.observer.unfinished().await?;
    let since_ms = now_ms();
    tracing::info!(operations, "building a backlog, workers off");
    let (builder, api) = b.serve(0, latency_ms).await?;
    let build_bound = b.s.build_bound();
    let built = closed_loop(
        &api,
        orders,
        b.s.build_clients,
        Stop::Count {
            requests: operations,
            bound: build_bound,
        },
    )
    .await;
    let build_peak_rss_mib = builder.peak_rss_mib();
    builder.kill()?;
    // The premise of the phase: nothing ran while the backlog was built.
    let started = b.observer.started_since(since_ms).await?;
    anyhow::ensure!(
        started == 0,
        "{started} operations started while `serve --workers 0` built the backlog"
    );

    tracing::info!(operations = built.ok, workers, latency_ms, "draining it");
    let drain_from_ms = now_ms();
    let (serve, api) = b.serve(workers, latency_ms).await?;
    let drained = b.observer.drained(b.s.drain_bound()).await?;
    let cpu_seconds = serve.cpu_seconds();
    let peak_rss_mib = serve.peak_rss_mib();
    let window = b.observer.window(since_ms).await?;
    let per_second = window.per_second();
    let figures = Backlog {
        queued_at_start,
        operations: built.ok,
        build_per_second: built.per_second(),
        build_errors: built.errors,
        build_first_error: built.first_error.clone(),
        build: Bounded::new(built.finished, build_bound.as_secs_f64(), || {
            format!("{} of {operations} operations accepted", built.ok)
        }),
        build_peak_rss_mib,
        workers,
        completed: window.completed,
        failed: window.failed,
        drain: Bounded::new(drained.finished, b.s.drain_bound().as_secs_f64(), || {
            format!("{} of {} operations completed", window.completed, built.ok)
        }),
        drain_seconds: window.seconds(),
        per_second,
        ratio: ratio(per_second, reference),
        cpu_seconds,
        cpu_seconds_per_1000: cpu_seconds
            .filter(|_| window.completed > 0)
            .map(|cpu| cpu * 1000.0 / window.completed as f64),
        peak_rss_mib,
    };
    Ok((
        BacklogRun {
            figures,
            since_ms: drain_from_ms,
        },
        serve,
        api,
    ))
}

/// Offers `per_second` for `secs` from an empty queue; answers the probe and the load.
async fn probe(
    b: &Bench<'_>,
    api: &Api,
    orders: &Arc<Orders>,
    per_second: f64,
    secs: f64,
) -> anyhow::Result<(Probe, Load)> {
    b.observer.drained(b.s.drain_bound()).await?;
    let before = b.observer.unfinished().await?;
    let from_ms = now_ms();
    let load = open_loop(
        api,
        orders,
        per_second,
        Duration::from_secs_f64(secs),
        MAX_IN_FLIGHT,
    )
    .await;
    let to_ms = now_ms();
    let after = b.observer.unfinished().await?;
    let completed = b.observer.completed_between(from_ms, to_ms).await?;
    let growth = i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(0);
    let allowed = (per_second * 0.5).max(10.0);
    let flat = load.errors == 0
        && load.skipped == 0
        && (growth as f64) <= allowed
        && completed as f64 >= 0.9 * load.ok as f64;
    let probe = Probe {
        offered_per_second: per_second,
        seconds: secs,
        accepted: load.ok,
        errors: load.errors,
        skipped: load.skipped,
        completed_per_second: rate(completed, (to_ms - from_ms) as f64 / 1000.0),
        backlog_growth: growth,
        flat,
    };
    tracing::info!(
        per_second,
        flat,
        growth,
        completed = probe.completed_per_second,
        "probe"
    );
    Ok((probe, load))
}

/// The rate the service keeps up with, found by probes from `start_rate` (raised while the
/// backlog stays flat, lowered when it grows, then bisected), offered for the full run.
async fn sustained(
    b: &Bench<'_>,
    api: &Api,
    orders: &Arc<Orders>,
    start_rate: f64,
    reference: f64,
) -> anyhow::Result<Sustained> {
    let mut probes = Vec::new();
    let mut rate_now = start_rate.max(10.0);
    let (mut best, mut failing): (Option<f64>, Option<f64>) = (None, None);
    for _ in 0..MAX_PROBES {
        let (p, _) = probe(b, api, orders, rate_now, b.s.probe_secs).await?;
        if p.flat {
            best = Some(best.map_or(rate_now, |x| x.max(rate_now)));
            rate_now = failing.map_or(rate_now * 1.25, |f| (rate_now + f) / 2.0);
        } else {
            failing = Some(failing.map_or(rate_now, |x| x.min(rate_now)));
            let lower = (rate_now * 0.7).min(p.completed_per_second.max(1.0));
            rate_now = best.map_or(lower, |x| (x + rate_now) / 2.0);
        }
        probes.push(p);
        if let (Some(lo), Some(hi)) = (best, failing) {
            if hi / lo < 1.1 {
                break;
            }
        }
    }
    let offered_per_second = best.unwrap_or(rate_now);
    tracing::info!(
        offered_per_second,
        secs = b.s.sustained_secs,
        "sustained run"
    );

    b.observer.drained(b.s.drain_bound()).await?;
    let run = Duration::from_secs_f64(b.s.sustained_secs);
    let from_ms = now_ms();
    let sampler = async {
        let mut samples = vec![b.observer.unfinished().await?];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        for _ in 0..(run.as_secs_f64().ceil() as u64) {
            tick.tick().await;
            samples.push(b.observer.unfinished().await?);
        }
        anyhow::Ok(samples)
    };
    let (load, samples) = tokio::join!(
        open_loop(api, orders, offered_per_second, run, MAX_IN_FLIGHT),
        sampler
    );
    let to_ms = now_ms();
    let mut samples = samples?;
    samples.push(b.observer.unfinished().await?);
    let completed = b.observer.completed_between(from_ms, to_ms).await?;
    let seconds = (to_ms - from_ms) as f64 / 1000.0;
    let (start, end) = (
        samples.first().copied().unwrap_or(0),
        samples.last().copied().unwrap_or(0),
    );
    let completed_per_second = rate(completed, seconds);
    Ok(Sustained {
        probes,
        offered_per_second,
        seconds: run.as_secs_f64(),
        offered: load.ok + load.errors + load.skipped,
        accepted: load.ok,
        errors: load.errors,
        first_error: load.first_error.clone(),
        skipped: load.skipped,
        accepted_per_second: rate(load.ok, run.as_secs_f64()),
        completed_per_second,
        ratio: ratio(completed_per_second, reference),
        backlog_max: samples.iter().copied().max().unwrap_or(0),
        flat: end as f64 <= start as f64 + offered_per_second.max(10.0),
        backlog_start: start,
        backlog_end: end,
        backlog_samples: samples,
        p50_ms: percentile(&load.latencies_ms, 0.5),
        p99_ms: percentile(&load.latencies_ms, 0.99),
    })
}

/// `StartedAt − SubmittedAt` of operations offered at half the sustained rate.
async fn start_latency(
    b: &Bench<'_>,
    api: &Api,
    orders: &Arc<Orders>,
    sustained_rate: f64,
) -> anyhow::Result<StartLatency> {
    let per_second = (sustained_rate / 2.0).max(1.0);
    tracing::info!(per_second, "enqueue → start latency");
    b.observer.drained(b.s.drain_bound()).await?;
    let queued_at_start = b.observer.unfinished().await?;
    let from_ms = now_ms();
    let run = Duration::from_secs_f64(b.s.latency_secs);
    let load = open_loop(api, orders, per_second, run, MAX_IN_FLIGHT).await;
    let to_ms = now_ms() + 1;
    let drained = b.observer.drained(b.s.drain_bound()).await?;
    let latencies = b.observer.start_latencies_ms(from_ms, to_ms).await?;
    let some = |p: f64| (!latencies.is_empty()).then(|| percentile(&latencies, p));
    Ok(StartLatency {
        queued_at_start,
        offered_per_second: per_second,
        seconds: run.as_secs_f64(),
        submitted: load.ok,
        operations: latencies.len() as u64,
        p50_ms: some(0.5),
        p99_ms: some(0.99),
        max_ms: some(1.0),
        drain: Bounded::new(drained.finished, b.s.drain_bound().as_secs_f64(), || {
            format!("{} operations had not finished", drained.left)
        }),
    })
}

/// SIGKILL of a `serve` whose workers are all in provider calls, an immediate restart, and
/// the time until the killed process's operations run again.
async fn recovery(b: &mut Bench<'_>, orders: &Arc<Orders>) -> anyhow::Result<Recovery> {
    let (workers, latency_ms) = (b.s.workers, b.s.kill_latency_ms);
    tracing::info!(workers, latency_ms, "SIGKILL during provider calls");
    let queued_at_start = b.observer.unfinished().await?;
    let (serve, api) = b.serve(workers, latency_ms).await?;
    let wanted = workers.min(orders.len()) as u64;
    let sent = closed_loop(
        &api,
        orders,
        workers,
        Stop::Count {
            requests: wanted,
            bound: Duration::from_secs(30),
        },
    )
    .await;
    anyhow::ensure!(
        sent.ok == wanted,
        "the recovery phase could not enqueue its operations: {:?}",
        sent.first_error
    );
    let busy = b
        .observer
        .until(Duration::from_secs(30), || async {
            let running = b.observer.running().await?.len() as u64;
            Ok(wanted.saturating_sub(running))
        })
        .await?;
    let held = b.observer.running().await?;
    anyhow::ensure!(
        busy.finished,
        "only {} of {wanted} operations were running before the kill",
        held.len()
    );
    let kill_ms = now_ms();
    serve.kill()?;
    let (serve, _) = b.serve(workers, latency_ms).await?;
    let restart_seconds = (now_ms() - kill_ms) as f64 / 1000.0;
    let bound = Duration::from_millis(b.s.lease_ms) + Duration::from_secs(30);
    let restarted = b
        .observer
        .until(bound, || b.observer.not_restarted(&held, kill_ms))
        .await?;
    let drained = b.observer.drained(b.s.drain_bound()).await?;
    let (last_start, last_finish) = b.observer.last_start_and_finish(&held).await?;
    serve.kill()?;
    let since_kill = |t: Option<i64>| t.map_or(0.0, |t| (t - kill_ms).max(0) as f64 / 1000.0);
    Ok(Recovery {
        queued_at_start,
        lease_ms: b.s.lease_ms,
        provider_latency_ms: latency_ms,
        operations: held.len() as u64,
        restart_seconds,
        running_again_seconds: since_kill(last_start.filter(|_| restarted.finished)),
        finished_seconds: since_kill(last_finish.filter(|_| drained.finished)),
        restarted: Bounded::new(restarted.finished, bound.as_secs_f64(), || {
            format!("{} of {} had not started again", restarted.left, held.len())
        }),
        drain: Bounded::new(drained.finished, b.s.drain_bound().as_secs_f64(), || {
            format!("{} operations had not finished", drained.left)
        }),
    })
}
