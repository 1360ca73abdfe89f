//! `refunds serve` as a child process of the bench: started from this very executable on a
//! free port, its log in the run's directory, its CPU time and peak memory read from
//! `/proc`, and SIGKILL to stop it (every phase stops a `serve` only once nothing it
//! acknowledged is unwritten, except the phase that kills one on purpose).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How a `serve` is started.
#[derive(Clone, Debug)]
pub struct Options {
    pub workers: usize,
    pub simulator_latency_ms: u64,
    pub lease_ms: u64,
}

/// A running `serve`, killed when dropped.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: PathBuf,
    /// From spawn until `/healthz` answered 200.
    pub start_seconds: f64,
}

/// How long a `serve` may take to answer `/healthz`.
const START_BOUND: Duration = Duration::from_secs(60);

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Serve {
    pub async fn start(
        exe: &Path,
        dir: &Path,
        database_url: &str,
        options: &Options,
        http: &reqwest::Client,
    ) -> anyhow::Result<Serve> {
        let port = free_port()?;
        let log = dir.join(format!("serve-{port}.log"));
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let started = Instant::now();
        let child = Command::new(exe)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", database_url])
            .args(["--workers", &options.workers.to_string()])
            .args([
                "--simulator-latency-ms",
                &options.simulator_latency_ms.to_string(),
            ])
            .args(["--lease-ms", &options.lease_ms.to_string()])
            .env("REFUNDS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("cannot start refunds serve")?;
        let mut serve = Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            start_seconds: 0.0,
        };
        let deadline = started + START_BOUND;
        loop {
            if let Some(status) = serve.child.try_wait()? {
                anyhow::bail!("refunds serve exited with {status}: {}", serve.log_tail());
            }
            let health = http
                .get(format!("{}/healthz", serve.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == 200) {
                serve.start_seconds = started.elapsed().as_secs_f64();
                tracing::info!(
                    pid = serve.pid(),
                    workers = options.workers,
                    latency_ms = options.simulator_latency_ms,
                    "serve is up"
                );
                return Ok(serve);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "refunds serve did not answer /healthz within {} s: {}",
                START_BOUND.as_secs(),
                serve.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU seconds the process has used (Linux; `None` elsewhere).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        cpu_seconds_of(&stat)
    }

    /// The process's peak resident memory so far, `VmHWM` (Linux; `None` elsewhere).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        peak_rss_mib_of(&status)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().context("cannot kill refunds serve")?;
        self.child.wait().context("cannot reap refunds serve")?;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("its log ({}) ends:\n{tail}", self.log.display())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Linux reports process times in clock ticks of USER_HZ, which is 100 on every
/// architecture it runs on today.
const TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` of a `/proc/PID/stat` line, in seconds. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

fn peak_rss_mib_of(status: &str) -> Option<f64> {
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat =
            "4242 (refunds (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0 1 2 3";
        assert_eq!(cpu_seconds_of(stat), Some(3.25));
        assert_eq!(cpu_seconds_of("4242 (refunds) S 1"), None);
    }

    #[test]
    fn peak_memory_is_read_from_vmhwm() {
        let status =
            "Name:\trefunds\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(peak_rss_mib_of(status), Some(50.0));
        assert_eq!(peak_rss_mib_of("Name:\trefunds\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_seconds_of(&stat).is_some());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(peak_rss_mib_of(&status).unwrap() > 0.0);
    }
}
