//! The real binary as the tests run it: a `refunds serve` child process on a free port,
//! its CLI, and the `key=value` lines the CLI answers.

#![allow(dead_code)] // each test binary uses its own part of this

pub mod books;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn database_url(db: &Path) -> String {
    format!("sqlite:{}", db.display())
}

/// Starts `refunds serve` on `db` with `args` added (e.g. `--tls-cert`), answering at
/// `base` (`http(s)://host:port`, the port free). Waits until `/healthz` answers through
/// `client`.
pub async fn spawn_serve(
    db: &Path,
    scheme_host: &str,
    args: &[&str],
    env: &[(&str, &str)],
    client: &reqwest::Client,
) -> Server {
    spawn_serve_on(&database_url(db), scheme_host, args, env, client).await
}

/// [`spawn_serve`] on a database given by its URL (SQLite or PostgreSQL).
pub async fn spawn_serve_on(
    url: &str,
    scheme_host: &str,
    args: &[&str],
    env: &[(&str, &str)],
    client: &reqwest::Client,
) -> Server {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refunds"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env("REFUNDS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let server = Server {
        child: cmd.spawn().expect("start refunds serve"),
        base: format!("{scheme_host}:{port}"),
        token: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{}/healthz", server.base)).send().await {
            if r.status() == 200 {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a CLI command against `db` and answers its stdout; it must succeed.
pub fn cli(db: &Path, args: &[&str]) -> String {
    cli_on(&database_url(db), args)
}

/// [`cli`] on a database given by its URL.
pub fn cli_on(url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_refunds"))
        .args(args)
        .arg("--database-url")
        .arg(url)
        .env("REFUNDS_LOG", "warn")
        .output()
        .expect("run the refunds CLI");
    assert!(
        out.status.success(),
        "refunds {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The value of a `key=value` line.
pub fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {text:?}"))
        .to_string()
}

/// A bearer token for an API client, by the client_credentials grant.
pub async fn client_token(client: &reqwest::Client, base: &str, credentials: &str) -> String {
    let answer = token_answer(client, base, credentials).await;
    answer["access_token"].as_str().expect("token").to_string()
}

/// The token endpoint's answer to the client_credentials grant.
pub async fn token_answer(
    client: &reqwest::Client,
    base: &str,
    credentials: &str,
) -> serde_json::Value {
    client
        .post(format!("{base}/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &field(credentials, "client_id")),
            ("client_secret", &field(credentials, "client_secret")),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A self-signed certificate for `localhost`, written as `cert.pem` and `key.pem` in `dir`;
/// answers the certificate's PEM.
pub fn localhost_certificate(dir: &Path) -> String {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = certified.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    pem
}

/// A reqwest client that trusts exactly `pem`.
pub fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// `refunds simulator` on `port`, its ledger in `ledger` (it survives a kill), with `extra`
/// flags.
pub fn simulator(port: u16, ledger: &Path, extra: &[&str]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_refunds"))
        .args(["simulator", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--ledger")
        .arg(ledger)
        .args(extra)
        .env("REFUNDS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start refunds simulator");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        token: String::new(),
    }
}
