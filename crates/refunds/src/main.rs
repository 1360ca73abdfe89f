//! The `refunds` binary: command line, configuration and wiring. No business logic lives
//! here.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use refunds_api::auth::Role;
use refunds_api::{router, AppState};
use refunds_domain::AllocationRule;
use refunds_gateway::{HostPolicy, Registry, SimulatorConfig};
use refunds_queue::{QueueConfig, Runner};
use refunds_store::Db;
use tokio::sync::watch;

mod bench;

#[derive(Parser)]
#[command(
    name = "refunds",
    version,
    about = "Ensures refunds: a Salesforce-compatible refund service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the workers in one process.
    Serve {
        #[arg(long, env = "REFUNDS_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Lifetime of access tokens.
        #[arg(long, env = "REFUNDS_TOKEN_TTL_SECS", default_value_t = 7200)]
        token_ttl_secs: u64,
        /// The instance_url handed to clients (default: the scheme and host they called).
        #[arg(long, env = "REFUNDS_PUBLIC_URL")]
        public_url: Option<String>,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key).
        #[arg(long, env = "REFUNDS_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, env = "REFUNDS_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Reverse proxies (comma-separated addresses) whose X-Forwarded-For names the
        /// client for login throttling; by default nobody's is believed.
        #[arg(long, env = "REFUNDS_TRUSTED_PROXIES", value_delimiter = ',')]
        trusted_proxies: Vec<std::net::IpAddr>,
        #[command(flatten)]
        http: refunds_api::server::HttpArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Run workers only (several processes may share one PostgreSQL database).
    Worker {
        #[command(flatten)]
        common: Common,
    },
    /// Run the payment-provider simulator: Stripe's refund API with a persistent ledger.
    Simulator {
        #[arg(
            long,
            env = "REFUNDS_SIMULATOR_LISTEN",
            default_value = "127.0.0.1:12111"
        )]
        listen: SocketAddr,
        /// SQLite file holding the simulated provider's refunds (kept across restarts).
        #[arg(
            long,
            env = "REFUNDS_SIMULATOR_LEDGER",
            default_value = "simulator-ledger.db"
        )]
        ledger: std::path::PathBuf,
        /// Latency added to every refund request.
        #[arg(long, env = "REFUNDS_SIMULATOR_LATENCY_MS", default_value_t = 0)]
        latency_ms: u64,
        /// Forget an idempotency key this long after its first use (default: never;
        /// Stripe forgets after 24 h).
        #[arg(long, env = "REFUNDS_SIMULATOR_KEY_LIFETIME_MS")]
        key_lifetime_ms: Option<u64>,
    },
    /// Manage API clients (OAuth client id and secret).
    Clients {
        #[command(subcommand)]
        action: ClientAction,
        #[command(flatten)]
        database: Database,
    },
    /// Manage users (for the OAuth password grant).
    Users {
        #[command(subcommand)]
        action: UserAction,
        #[command(flatten)]
        database: Database,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: Database,
    },
    /// Measure the service beside the machine's own limits: `serve` child processes on a
    /// scratch database, a table of figures and JSON.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum ClientAction {
    /// Create a client; prints its client_id and client_secret (the secret only this once).
    Create {
        name: String,
        /// An administrative client: may also create and change payment gateways.
        #[arg(long)]
        admin: bool,
    },
    /// Revoke a client and every token it holds.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user; prints the username and a generated password (only this once).
    Create {
        username: String,
        /// An administrative user: may also create and change payment gateways.
        #[arg(long)]
        admin: bool,
    },
}

/// Where the data lives; every command that touches it takes `--database-url`.
#[derive(Args)]
struct Database {
    /// `sqlite:PATH` (created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "REFUNDS_DATABASE_URL",
        default_value = "sqlite:refunds.db",
        global = true
    )]
    database_url: String,
}

impl Database {
    /// Connects and applies any migration not applied yet.
    async fn open(&self) -> anyhow::Result<Db> {
        let db = Db::connect(&self.database_url)
            .await
            .context("cannot open the database")?;
        db.migrate().await.context("cannot migrate the database")?;
        Ok(db)
    }
}

#[derive(Args)]
struct Common {
    #[command(flatten)]
    database: Database,
    /// Background operations run at once by this process. `serve --workers 0` runs the HTTP
    /// API alone: operations queue up until a process with workers runs.
    #[arg(long, env = "REFUNDS_WORKERS", default_value_t = 32)]
    workers: usize,
    /// `smallest-covering` (current Salesforce rule) or `largest-first` (older Flow rule).
    #[arg(long, env = "REFUNDS_ALLOCATION", default_value = "smallest-covering")]
    allocation: String,
    /// A worker's lease on an operation; a silent worker's operations are rescued after it.
    #[arg(long, env = "REFUNDS_LEASE_MS", default_value_t = 30_000)]
    lease_ms: u64,
    /// RetryLimit of new operations (retries after an internal error).
    #[arg(long, env = "REFUNDS_RETRY_LIMIT", default_value_t = 3)]
    retry_limit: i64,
    /// RetryBackoff of new operations: the n-th retry waits (2^n - 1) x this.
    #[arg(long, env = "REFUNDS_RETRY_BACKOFF_MS", default_value_t = 1_000)]
    retry_backoff_ms: u64,
    /// Provider calls per refund while the provider cannot be reached.
    #[arg(long, env = "REFUNDS_PROVIDER_ATTEMPTS", default_value_t = 4)]
    provider_attempts: u32,
    /// Pause before repeating a call that could not reach the provider (doubles each time).
    #[arg(long, env = "REFUNDS_PROVIDER_BACKOFF_MS", default_value_t = 200)]
    provider_backoff_ms: u64,
    /// First lookup of a refund whose outcome is unknown.
    #[arg(long, env = "REFUNDS_RECONCILE_DELAY_MS", default_value_t = 5_000)]
    reconcile_delay_ms: u64,
    /// Reconciliation lookups this process has in flight at once.
    #[arg(long, env = "REFUNDS_RECONCILE_CONCURRENCY", default_value_t = 32)]
    reconcile_concurrency: usize,
    /// When to stop looking up an unknown refund and raise a process exception.
    #[arg(
        long,
        env = "REFUNDS_RECONCILE_GIVE_UP_MS",
        default_value_t = 86_400_000
    )]
    reconcile_give_up_ms: u64,
    /// On SIGTERM, how long running operations may take to finish; the rest are stopped
    /// and their leases handed back for another process to take over.
    #[arg(long, env = "REFUNDS_SHUTDOWN_GRACE_MS", default_value_t = 30_000)]
    shutdown_grace_ms: u64,
    /// Latency added to every call of the built-in simulator provider.
    #[arg(long, env = "REFUNDS_SIMULATOR_LATENCY_MS", default_value_t = 0)]
    simulator_latency_ms: u64,
    /// How long the built-in simulator remembers an idempotency key (default: for ever);
    /// a refund first sent longer ago is looked up before it is sent again.
    #[arg(long, env = "REFUNDS_SIMULATOR_KEY_LIFETIME_MS")]
    simulator_key_lifetime_ms: Option<u64>,
    /// Serve Prometheus metrics at `/metrics` on this address (its own listener, without
    /// a token: keep it internal). Off unless given.
    #[arg(long, env = "REFUNDS_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Hosts payment gateways may call (comma-separated; `*.example.com` for a suffix,
    /// addresses or networks such as 127.0.0.1 or 10.0.0.0/8 for non-public addresses).
    #[arg(
        long,
        env = "REFUNDS_GATEWAY_HOSTS",
        default_value = refunds_gateway::DEFAULT_GATEWAY_HOSTS
    )]
    gateway_hosts: HostPolicy,
}

impl Common {
    fn queue_config(&self) -> anyhow::Result<QueueConfig> {
        let allocation: AllocationRule = self.allocation.parse().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(self.lease_ms >= 100, "--lease-ms must be at least 100");
        anyhow::ensure!(
            self.reconcile_concurrency > 0,
            "--reconcile-concurrency must be at least 1"
        );
        Ok(QueueConfig {
            concurrency: self.workers.max(1),
            lease: Duration::from_millis(self.lease_ms),
            retry_limit: self.retry_limit.max(0),
            retry_backoff: Duration::from_millis(self.retry_backoff_ms),
            provider_attempts: self.provider_attempts.max(1),
            provider_backoff: Duration::from_millis(self.provider_backoff_ms),
            reconcile_delay: Duration::from_millis(self.reconcile_delay_ms),
            reconcile_give_up: Duration::from_millis(self.reconcile_give_up_ms),
            reconcile_concurrency: self.reconcile_concurrency,
            allocation_rule: allocation,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            ..QueueConfig::default()
        })
    }

    /// Starts the metrics listener if one was asked for; it stops with `shutdown`.
    async fn serve_metrics(
        &self,
        db: &Db,
        runner: &Runner,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let Some(addr) = self.metrics_listen else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics at /metrics");
        let mut stop = shutdown.clone();
        let app = refunds_api::metrics::router(db.clone(), runner.reconcile_stats());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
        Ok(())
    }

    fn registry(&self) -> anyhow::Result<Registry> {
        Registry::new(
            SimulatorConfig {
                latency: Duration::from_millis(self.simulator_latency_ms),
                key_lifetime: self.simulator_key_lifetime_ms.map(Duration::from_millis),
            },
            self.gateway_hosts.clone(),
        )
        .context("cannot set up the payment providers")
    }
}

fn role(admin: bool) -> Role {
    if admin {
        Role::Admin
    } else {
        Role::Standard
    }
}

fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: finishing work in flight");
        let _ = tx.send(true);
    });
    rx
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Simulator {
            listen,
            ledger,
            latency_ms,
            key_lifetime_ms,
        } => {
            let simulator =
                refunds_simulator::Simulator::open(&ledger, Duration::from_millis(latency_ms))
                    .await
                    .with_context(|| format!("cannot open the ledger {}", ledger.display()))?
                    .with_key_lifetime(key_lifetime_ms.map(Duration::from_millis));
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(address = %listener.local_addr()?, ledger = %ledger.display(), "simulator is serving the Stripe refund API");
            let mut stop = shutdown_signal();
            axum::serve(listener, simulator.router())
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await?;
        }
        Command::Clients { action, database } => {
            let db = database.open().await?;
            match action {
                ClientAction::Create { name, admin } => {
                    match refunds_api::auth::create_client(&db, &name, role(admin)).await? {
                        Some((client_id, secret)) => {
                            println!("client_id={client_id}\nclient_secret={secret}")
                        }
                        None => anyhow::bail!("a client named {name} already exists"),
                    }
                }
                ClientAction::Revoke { name } => {
                    anyhow::ensure!(
                        refunds_store::auth::revoke_client(&db, &name, refunds_store::now_ms())
                            .await?,
                        "there is no client named {name}"
                    );
                    println!("revoked {name}");
                }
            }
        }
        Command::Users { action, database } => {
            let db = database.open().await?;
            match action {
                UserAction::Create { username, admin } => {
                    match refunds_api::auth::create_user(&db, &username, role(admin)).await? {
                        Some(password) => println!("username={username}\npassword={password}"),
                        None => anyhow::bail!("a user named {username} already exists"),
                    }
                }
            }
        }
        Command::Migrate { database } => {
            database.open().await?;
            println!("database migrated");
        }
        Command::Bench(args) => bench::run(args).await?,
        Command::Worker { common } => {
            anyhow::ensure!(common.workers > 0, "--workers must be at least 1");
            let db = common.database.open().await?;
            let shutdown = shutdown_signal();
            let runner = Runner::new(db.clone(), common.queue_config()?, common.registry()?);
            common.serve_metrics(&db, &runner, &shutdown).await?;
            tracing::info!(worker = runner.worker_id(), "worker started");
            runner.run(shutdown).await?;
        }
        Command::Serve {
            listen,
            token_ttl_secs,
            public_url,
            tls_cert,
            tls_key,
            http,
            trusted_proxies,
            common,
        } => {
            let limits = http.limits().map_err(anyhow::Error::msg)?;
            let tls = match (&tls_cert, &tls_key) {
                (Some(cert), Some(key)) => {
                    Some(refunds_api::tls::config(cert, key).map_err(anyhow::Error::msg)?)
                }
                _ => None,
            };
            let db = common.database.open().await?;
            let queue = common.queue_config()?;
            let shutdown = shutdown_signal();
            let registry = common.registry()?;
            // Gateways written before the security rules (or under a longer host list)
            // keep existing; name each one that breaks them.
            let violations = refunds_api::security::scan(&db, registry.hosts())
                .await
                .context("cannot check the payment gateways")?;
            refunds_api::security::warn(&violations);
            let runner = Runner::new(db.clone(), queue.clone(), registry);
            common.serve_metrics(&db, &runner, &shutdown).await?;
            // `--workers 0` serves the API alone: no worker lock, no claims.
            let workers = if common.workers > 0 {
                // Fails here, before serving, if another process runs workers on this SQLite file.
                let runner = runner.start().await?;
                Some(tokio::spawn(runner.run(shutdown.clone())))
            } else {
                None
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(
                address = %listener.local_addr()?, backend = ?db.backend(), https = tls.is_some(),
                "refunds is serving"
            );
            let state = AppState {
                auth: std::sync::Arc::new(refunds_api::auth::Auth::with_limits(
                    Duration::from_secs(token_ttl_secs),
                    refunds_api::auth::LoginLimits::default(),
                    trusted_proxies,
                )),
                public_url,
                tls: tls.is_some(),
                gateway_hosts: std::sync::Arc::new(common.gateway_hosts.clone()),
                gateway_violations: std::sync::Arc::new(violations),
                ..AppState::new(db, queue)
            };
            refunds_api::server::serve(listener, router(state), limits, tls, shutdown.clone())
                .await;
            if let Some(workers) = workers {
                workers.await??;
            }
        }
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REFUNDS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        // stdout is for what a command answers (`clients create` prints credentials that
        // scripts read); logs go to stderr, coloured only on a terminal.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    if let Err(e) = result {
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
