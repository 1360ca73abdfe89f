//! The figures of a run: one JSON document (every figure, with how it was reached) and
//! the table printed from it.

use std::fmt::Write as _;

use serde::Serialize;

use super::baseline::Baseline;
use super::Settings;

#[derive(Debug, Serialize)]
pub struct Report {
    /// `sqlite` or `postgres`.
    pub database: String,
    /// The database engine's own version string.
    pub database_version: String,
    /// `release` or `debug`: figures of a debug build are not the service's.
    pub build: &'static str,
    pub cpus: usize,
    pub settings: Settings,
    pub baseline: Baseline,
    /// The 64-client baseline figure, the denominator of every `ratio`.
    pub reference_per_second: f64,
    pub enqueue: Vec<Enqueue>,
    pub backlog_small: Backlog,
    pub sustained: Sustained,
    pub start_latency: StartLatency,
    pub slow_provider: SlowProvider,
    pub recovery: Recovery,
    pub backlog_large: Backlog,
    /// `backlog_large` completions/s over `backlog_small`'s.
    pub large_to_small: f64,
    /// CPU seconds of `serve` per 1,000 refunds, draining the small backlog.
    pub cpu_seconds_per_1000_refunds: Option<f64>,
    /// Peak resident memory (VmHWM) of the `serve` draining the large backlog, MiB.
    pub peak_rss_mib_large_backlog: Option<f64>,
    /// The whole run, wall clock.
    pub seconds: f64,
}

/// The end of a bounded phase: finished, or "did not finish within N s" and what it reached.
#[derive(Clone, Debug, Serialize)]
pub struct Bounded {
    pub finished: bool,
    pub bound_seconds: f64,
    pub note: Option<String>,
}

impl Bounded {
    pub fn new(finished: bool, bound_seconds: f64, reached: impl FnOnce() -> String) -> Bounded {
        Bounded {
            finished,
            bound_seconds,
            note: (!finished)
                .then(|| format!("did not finish within {bound_seconds:.0} s: {}", reached())),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Enqueue {
    pub clients: usize,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub per_second: f64,
    pub ratio: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The wait, after the burst, for its operations to finish.
    pub drain: Bounded,
    pub drain_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Backlog {
    /// Operations of earlier phases still unfinished when this one began (they compete
    /// with this phase's own; 0 unless an earlier drain ran out of time).
    pub queued_at_start: u64,
    pub operations: u64,
    /// Built through the API by `serve --workers 0`.
    pub build_per_second: f64,
    pub build_errors: u64,
    pub build_first_error: Option<String>,
    pub build: Bounded,
    pub build_peak_rss_mib: Option<f64>,
    /// Then drained by a `serve` with workers.
    pub workers: usize,
    pub completed: u64,
    pub failed: u64,
    pub drain: Bounded,
    /// From the first operation's start to the last one's finish.
    pub drain_seconds: f64,
    pub per_second: f64,
    pub ratio: f64,
    /// CPU time of the draining `serve` from its start to the end of the drain.
    pub cpu_seconds: Option<f64>,
    pub cpu_seconds_per_1000: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Probe {
    pub offered_per_second: f64,
    pub seconds: f64,
    pub accepted: u64,
    pub errors: u64,
    pub skipped: u64,
    pub completed_per_second: f64,
    /// Unfinished operations at the end minus at the start.
    pub backlog_growth: i64,
    pub flat: bool,
}

#[derive(Debug, Serialize)]
pub struct Sustained {
    /// How the rate was found, probe by probe.
    pub probes: Vec<Probe>,
    pub offered_per_second: f64,
    pub seconds: f64,
    pub offered: u64,
    pub accepted: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub skipped: u64,
    pub accepted_per_second: f64,
    /// Operations finished during the run, per second.
    pub completed_per_second: f64,
    pub ratio: f64,
    /// Unfinished operations, sampled each second.
    pub backlog_samples: Vec<u64>,
    pub backlog_start: u64,
    pub backlog_end: u64,
    pub backlog_max: u64,
    /// The backlog ended no more than one second's worth of requests above where it began.
    pub flat: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct StartLatency {
    pub queued_at_start: u64,
    pub offered_per_second: f64,
    pub seconds: f64,
    /// Operations accepted during the run.
    pub submitted: u64,
    /// Of those, the ones that had started by the end of the drain: their
    /// `StartedAt − SubmittedAt` makes the percentiles (none when nothing started).
    pub operations: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub drain: Bounded,
}

#[derive(Debug, Serialize)]
pub struct SlowProvider {
    pub latency_ms: u64,
    #[serde(flatten)]
    pub backlog: Backlog,
    /// The most provider calls in flight at once, from the gateway log.
    pub peak_calls_in_flight: u64,
}

#[derive(Debug, Serialize)]
pub struct Recovery {
    pub queued_at_start: u64,
    pub lease_ms: u64,
    pub provider_latency_ms: u64,
    /// Operations the killed process was running (its workers were all in provider calls).
    pub operations: u64,
    /// From SIGKILL until the restarted `serve` answered `/healthz`.
    pub restart_seconds: f64,
    /// From SIGKILL until every one of them had started again.
    pub running_again_seconds: f64,
    /// From SIGKILL until every one of them had finished.
    pub finished_seconds: f64,
    pub restarted: Bounded,
    pub drain: Bounded,
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}{unit}"))
}

fn ratio(r: f64) -> String {
    format!("{r:.2}×")
}

fn status(b: &Bounded) -> String {
    b.note.clone().unwrap_or_default()
}

/// The table: one line per figure, its ratio to the baseline where it is a rate.
pub fn table(r: &Report) -> String {
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let mut row = |what: String, value: String, ratio: String, note: String| {
        rows.push((what, value, ratio, note))
    };
    for l in &r.baseline.levels {
        row(
            format!("baseline: durable 1-row inserts, {} clients", l.clients),
            format!("{:.0}/s", l.per_second),
            self::ratio(l.per_second / r.reference_per_second.max(f64::MIN_POSITIVE)),
            String::new(),
        );
    }
    for e in &r.enqueue {
        row(
            format!("ensure-refunds, workers on, {} clients", e.clients),
            format!(
                "{:.0}/s  p50 {:.1} ms  p99 {:.1} ms",
                e.per_second, e.p50_ms, e.p99_ms
            ),
            ratio(e.ratio),
            errors_note(e.errors, &e.first_error, &e.drain),
        );
    }
    for b in [&r.backlog_small, &r.backlog_large] {
        row(
            format!("completed, backlog of {}", b.operations),
            format!("{:.0}/s ({} done)", b.per_second, b.completed),
            ratio(b.ratio),
            backlog_note(b),
        );
    }
    let s = &r.sustained;
    row(
        format!("sustained, {:.0} s offered", s.seconds),
        format!(
            "{:.0}/s offered, {:.0}/s completed, backlog {}→{} (max {})",
            s.offered_per_second,
            s.completed_per_second,
            s.backlog_start,
            s.backlog_end,
            s.backlog_max
        ),
        ratio(s.ratio),
        if s.flat { "flat" } else { "backlog grew" }.to_string(),
    );
    let l = &r.start_latency;
    row(
        format!("enqueue → start at {:.0}/s", l.offered_per_second),
        match (l.p50_ms, l.p99_ms) {
            (Some(p50), Some(p99)) => format!("p50 {p50:.0} ms  p99 {p99:.0} ms"),
            _ => format!("none started ({} submitted)", l.submitted),
        },
        String::new(),
        notes(&[queued_note(l.queued_at_start), status(&l.drain)]),
    );
    let p = &r.slow_provider;
    row(
        format!(
            "completed, {} ms provider, {} workers",
            p.latency_ms, p.backlog.workers
        ),
        format!(
            "{:.0}/s, peak {} calls in flight",
            p.backlog.per_second, p.peak_calls_in_flight
        ),
        ratio(p.backlog.ratio),
        backlog_note(&p.backlog),
    );
    row(
        "serve CPU per 1,000 refunds".to_string(),
        opt(r.cpu_seconds_per_1000_refunds, " s"),
        String::new(),
        String::new(),
    );
    row(
        format!("serve peak RSS, {} queued", r.backlog_large.operations),
        opt(r.peak_rss_mib_large_backlog, " MiB"),
        String::new(),
        String::new(),
    );
    let k = &r.recovery;
    row(
        format!("SIGKILL → running again ({} operations)", k.operations),
        format!(
            "{:.2} s (restart {:.2} s, all finished {:.2} s)",
            k.running_again_seconds, k.restart_seconds, k.finished_seconds
        ),
        String::new(),
        notes(&[
            queued_note(k.queued_at_start),
            status(&k.restarted),
            status(&k.drain),
        ]),
    );
    let width = |f: fn(&(String, String, String, String)) -> &String| {
        rows.iter().map(|r| f(r).chars().count()).max().unwrap_or(0)
    };
    let (w0, w1, w2) = (width(|r| &r.0), width(|r| &r.1), width(|r| &r.2));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "refunds bench — {} ({}), {} build, {} CPUs{}; ratios are to the 64-client baseline ({:.0}/s)",
        r.database,
        r.database_version,
        r.build,
        r.cpus,
        if r.settings.quick { ", --quick" } else { "" },
        r.reference_per_second
    );
    for (a, b, c, d) in &rows {
        let line = format!("{a:<w0$}  {b:<w1$}  {c:>w2$}  {d}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(
        out,
        "backlog of {} vs {}: {:.2}×; whole run {:.0} s",
        r.backlog_large.operations, r.backlog_small.operations, r.large_to_small, r.seconds
    );
    out
}

fn notes(parts: &[String]) -> String {
    parts.join(" ").trim().to_string()
}

fn queued_note(queued: u64) -> String {
    if queued > 0 {
        format!("began with {queued} operations of earlier phases unfinished;")
    } else {
        String::new()
    }
}

fn backlog_note(b: &Backlog) -> String {
    notes(&[
        queued_note(b.queued_at_start),
        status(&b.build),
        status(&b.drain),
    ])
}

fn errors_note(errors: u64, first: &Option<String>, drain: &Bounded) -> String {
    let mut note = status(drain);
    if errors > 0 {
        let _ = write!(
            note,
            " {errors} errors, first: {}",
            first.as_deref().unwrap_or("")
        );
    }
    note.trim().to_string()
}
