//! Published Salesforce clients, unchanged, against the real binary: jsforce 3 (Node.js),
//! simple-salesforce 1.12 (Python, over TLS) and the Postman collection in
//! `examples/postman` run by newman 6. (rustforce runs in `serve.rs`.)
//!
//! Each client runs its own script under `tests/clients/`, which asserts what it sees and
//! prints a summary; the test then checks that summary against the service itself. The
//! clients are installed by the test, pinned by `package-lock.json` and `requirements.txt`,
//! into `target/` (once; again only when the pins change). A machine without Node.js or
//! Python skips these tests, except under `CI=true`, where that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{cli, client_token, field, Server};
use serde_json::Value;

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

/// Whether `program --version` runs; if not, the test is skipped (or fails under CI).
fn have(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{program} is required under CI=true"
        );
        eprintln!("skipped: {program} is not installed");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Installs into `dir` unless `dir/.pins` already equals `pins` (the lock file's text).
fn install_once(dir: &Path, pins: &str, install: impl FnOnce(&Path)) {
    let stamp = dir.join(".pins");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    install(dir);
    std::fs::write(stamp, pins).unwrap();
}

/// `node_modules` with jsforce and newman, from the lock file.
fn node_modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clients-node");
        let lock = std::fs::read_to_string(format!("{CLIENTS}/package-lock.json")).unwrap();
        install_once(&dir, &lock, |dir| {
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(format!("{CLIENTS}/{file}"), dir.join(file)).unwrap();
            }
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
                .current_dir(dir));
        });
        dir.join("node_modules")
    })
}

/// A virtualenv's python with simple-salesforce, from `requirements.txt`.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clients-venv");
        let requirements = format!("{CLIENTS}/requirements.txt");
        let pins = std::fs::read_to_string(&requirements).unwrap();
        install_once(&dir, &pins, |dir| {
            run(Command::new("python3").arg("-m").arg("venv").arg(dir));
            run(Command::new(dir.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements));
        });
        dir.join("bin/python")
    })
}

/// A server on a new database, with an API client and a user made by the CLI.
struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
    client: String,
    user: String,
    /// `clients create … --admin`: creates the payment gateway.
    admin: String,
    http: reqwest::Client,
    ca: Option<PathBuf>,
}

async fn setup(tls: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("refunds.db");
    let (http, ca, scheme_host, args) = if tls {
        let pem = common::localhost_certificate(dir.path());
        let args = vec![
            "--tls-cert".to_string(),
            dir.path().join("cert.pem").display().to_string(),
            "--tls-key".to_string(),
            dir.path().join("key.pem").display().to_string(),
        ];
        let ca = dir.path().join("cert.pem");
        (common::trusting(&pem), Some(ca), "https://localhost", args)
    } else {
        (reqwest::Client::new(), None, "http://127.0.0.1", Vec::new())
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = common::spawn_serve(&db, scheme_host, &args, &[], &http).await;
    // A standard client and user load orders and ensure refunds; only the administrative
    // client may create the payment gateway.
    let client = cli(&db, &["clients", "create", "compat"]);
    let user = cli(&db, &["users", "create", "ops@example.com"]);
    let admin = cli(&db, &["clients", "create", "gateways", "--admin"]);
    Setup {
        _dir: dir,
        server,
        client,
        user,
        admin,
        http,
        ca,
    }
}

impl Setup {
    /// The variables every client script reads.
    fn env(&self, cmd: &mut Command) {
        cmd.env("REFUNDS_URL", &self.server.base)
            .env("REFUNDS_CLIENT_ID", field(&self.client, "client_id"))
            .env(
                "REFUNDS_CLIENT_SECRET",
                field(&self.client, "client_secret"),
            )
            .env("REFUNDS_USERNAME", field(&self.user, "username"))
            .env("REFUNDS_PASSWORD", field(&self.user, "password"))
            .env("REFUNDS_ADMIN_CLIENT_ID", field(&self.admin, "client_id"))
            .env(
                "REFUNDS_ADMIN_CLIENT_SECRET",
                field(&self.admin, "client_secret"),
            );
        if let Some(ca) = &self.ca {
            cmd.env("REFUNDS_CA", ca);
        }
    }

    /// Runs SOQL with a token of our own, to check what a client reported.
    async fn query(&self, soql: &str) -> Value {
        let token = client_token(&self.http, &self.server.base, &self.client).await;
        let answer = self
            .http
            .get(format!("{}/services/data/v58.0/query", self.server.base))
            .query(&[("q", soql)])
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.json().await.unwrap()
    }

    /// Checks a client's summary line against the service: the refund it saw is there,
    /// processed, for `amount`, once, with one successful gateway call; the operation is
    /// complete; the bulk records were all created.
    async fn check(&self, summary: &Value, amount: &str, bulk: usize) {
        let order = summary["order"].as_str().expect("order");
        let refunds = self
            .query(&format!(
                "SELECT Id, Status, Amount FROM Refund WHERE OrderPaymentSummary.OrderSummaryId = '{order}'"
            ))
            .await;
        assert_eq!(refunds["totalSize"], 1, "{refunds}");
        let refund = &refunds["records"][0];
        assert_eq!(refund["Id"], summary["refund"]);
        assert_eq!(refund["Status"], "Processed");
        assert_eq!(refund["Amount"].to_string(), amount);
        assert_eq!(summary["amount"].as_f64(), refund["Amount"].as_f64());
        let logs = self
            .query(&format!(
                "SELECT Id FROM PaymentGatewayLog WHERE InteractionStatus = 'Success' AND ReferencedEntityId = '{}'",
                refund["Id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(logs["totalSize"], 1, "{logs}");
        let op = summary["operation"].as_str().expect("operation");
        let ops = self
            .query(&format!(
                "SELECT Id FROM BackgroundOperation WHERE Id = '{op}' AND Status = 'Complete'"
            ))
            .await;
        assert_eq!(ops["totalSize"], 1, "{ops}");
        let orders = self.query("SELECT Id FROM OrderSummary").await;
        assert_eq!(orders["totalSize"], bulk + 1);
    }
}

/// The last line of a script's stdout, as JSON.
fn summary(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().expect("a summary line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Runs a client's flow script; checks its summary, then checks it against the service:
/// a refund of `amount`, and `bulk` more order summaries made to read across batches.
async fn drive(setup: &Setup, mut cmd: Command, amount: &str, bulk: usize) {
    setup.env(&mut cmd);
    let summary = summary(&run(&mut cmd));
    assert_eq!(
        summary["errors"],
        serde_json::json!([
            "INSUFFICIENT_ACCESS_OR_READONLY",
            "INVALID_FIELD",
            "INVALID_SESSION_ID"
        ])
    );
    assert_eq!(
        summary["bulk"],
        bulk + 1,
        "every order summary, read in batches"
    );
    setup.check(&summary, amount, bulk).await;
}

#[tokio::test]
async fn jsforce_drives_the_whole_flow() {
    if !have("node") || !have("npm") {
        return;
    }
    let modules = node_modules();
    let setup = setup(false).await;
    let mut cmd = Command::new("node");
    cmd.arg(format!("{CLIENTS}/jsforce_flow.js"))
        .env("NODE_PATH", modules);
    drive(&setup, cmd, "45.50", 205).await;
}

#[tokio::test]
async fn simple_salesforce_drives_the_whole_flow_over_tls() {
    if !have("python3") {
        return;
    }
    let python = python();
    let setup = setup(true).await;
    let mut cmd = Command::new(python);
    cmd.arg(format!("{CLIENTS}/simple_salesforce_flow.py"));
    drive(&setup, cmd, "12.34", 204).await;
}

/// The shipped collection runs green under newman, every assertion in it ran, and what it
/// did is in the service.
#[tokio::test]
async fn the_postman_collection_runs_with_newman() {
    if !have("node") || !have("npm") {
        return;
    }
    let newman = node_modules().join(".bin/newman");
    let setup = setup(false).await;
    let report = setup._dir.path().join("newman.json");
    let collection = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/postman/refunds.postman_collection.json"
    );
    let vars = [
        ("baseUrl", setup.server.base.clone()),
        ("clientId", field(&setup.client, "client_id")),
        ("clientSecret", field(&setup.client, "client_secret")),
        ("username", field(&setup.user, "username")),
        ("password", field(&setup.user, "password")),
        ("adminClientId", field(&setup.admin, "client_id")),
        ("adminClientSecret", field(&setup.admin, "client_secret")),
    ];
    let mut cmd = Command::new(newman);
    cmd.args([
        "run",
        collection,
        "--color",
        "off",
        "--reporters",
        "cli,json",
    ])
    .arg("--reporter-json-export")
    .arg(&report);
    for (key, value) in &vars {
        cmd.arg("--env-var").arg(format!("{key}={value}"));
    }
    run(&mut cmd);

    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let stats = &report["run"]["stats"];
    assert_eq!(stats["assertions"]["failed"], 0, "{stats}");
    assert!(
        stats["assertions"]["total"].as_u64() >= Some(15),
        "every assertion ran: {stats}"
    );
    let orders = setup.query("SELECT Id FROM OrderSummary").await;
    let order = orders["records"][0]["Id"].as_str().unwrap();
    let refunds = setup
        .query(&format!(
            "SELECT Id, Status, Amount FROM Refund WHERE OrderPaymentSummary.OrderSummaryId = '{order}'"
        ))
        .await;
    assert_eq!(refunds["totalSize"], 1, "{refunds}");
    assert_eq!(refunds["records"][0]["Status"], "Processed");
    assert_eq!(refunds["records"][0]["Amount"].to_string(), "25.00");
}
