//! Authentication: the OAuth 2.0 token endpoint (`client_credentials` and `password`
//! grants), the bearer check in front of every `/services/data/…` resource, and the role
//! ([`Role`]) each token acts with.
//!
//! Tokens are 256 random bits, handed out once and stored only as SHA-256 hashes; client
//! secrets and passwords are stored as argon2 hashes. Logins are throttled before any
//! secret is checked ([`LoginLimits`]): a login first reserves an attempt on its principal
//! (from its source address and from anywhere) and on its source address, and the
//! reservation counts as a failure until the secret proves right, so concurrent wrong
//! logins cannot outrun the limit. Failures expire one by one after the window, so a lock
//! decays by itself. Argon2 runs under a small concurrency cap, so a flood of wrong
//! secrets costs bounded CPU.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::Engine;
use hmac::{Hmac, Mac};
use refunds_domain::{ObjectType, SfId};
pub use refunds_store::auth::Role;
use refunds_store::{auth as sql, now_ms, Db, StoreError};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};

use crate::error::{json_response, ApiError};
use crate::AppState;

/// The organisation id every answer names (one organisation per installation).
pub const ORG_ID: &str = "00D000000000001AAA";

/// Client ids and usernames longer than this are refused without a look-up.
const MAX_NAME_LEN: usize = 255;

/// How many failed logins are allowed, and how hard secrets may be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures of one client (or user) from one source address within `window`: past
    /// it, that principal is refused from that address.
    pub per_principal_and_source: usize,
    /// Failures of one principal from all addresses within `window`: past it, the
    /// principal is refused from everywhere (a bound on distributed guessing).
    pub per_principal: usize,
    /// Failures from one source address, whatever principal they name.
    pub per_source: usize,
    /// How long a failure counts; each one expires on its own (a sliding window).
    pub window: Duration,
    /// Argon2 verifications running at once in this process.
    pub verify_concurrency: usize,
    /// How long a login waits for the attempts ahead of it to settle before it is refused.
    pub max_wait: Duration,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            per_principal_and_source: 10,
            per_principal: 100,
            per_source: 30,
            window: Duration::from_secs(300),
            verify_concurrency: 2,
            max_wait: Duration::from_secs(10),
        }
    }
}

/// Which kind of secret an argon2 verification checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    ClientSecret,
    Password,
}

/// Counts of argon2 verifications (for tests and operators).
#[derive(Debug, Default)]
struct VerifyStats {
    client_secrets: AtomicU64,
    passwords: AtomicU64,
    running: AtomicUsize,
    peak: AtomicUsize,
}

/// Failures of one key within the window, and attempts in flight on it.
#[derive(Debug, Default)]
struct Bucket {
    failures: VecDeque<Instant>,
    in_flight: usize,
}

#[derive(Debug)]
struct Throttle {
    buckets: HashMap<String, Bucket>,
    next_sweep: Instant,
}

/// What a key of a login attempt stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Source,
    Client,
    User,
}

/// Per-process authentication state: token lifetime, login throttling, the argon2 cap.
#[derive(Debug)]
pub struct Auth {
    pub token_ttl: Duration,
    limits: LoginLimits,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies); nobody's by default.
    trusted_proxies: Vec<IpAddr>,
    throttle: Mutex<Throttle>,
    settled: Notify,
    verifier: Semaphore,
    stats: VerifyStats,
    /// Added to the clock the failure window is judged by ([`Auth::advance_clock`]).
    skew_ms: AtomicU64,
}

/// A reserved login attempt: counted as a failure on each of its keys unless it is
/// settled as a success (dropping it, e.g. when the client goes away, is a failure).
struct Attempt<'a> {
    auth: &'a Auth,
    keys: Vec<(String, Scope, usize)>,
    /// Scopes whose secret proved wrong (the source always counts a failure).
    failed: Vec<Scope>,
    succeeded: bool,
}

impl Attempt<'_> {
    fn fail(mut self, scope: Scope) {
        self.failed.push(scope);
    }

    fn succeed(mut self) {
        self.succeeded = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let now = self.auth.now();
        let mut throttle = self.auth.lock();
        for (key, scope, _) in &self.keys {
            let Some(bucket) = throttle.buckets.get_mut(key) else {
                continue;
            };
            bucket.in_flight = bucket.in_flight.saturating_sub(1);
            if self.succeeded {
                if *scope != Scope::Source {
                    bucket.failures.clear();
                }
            } else if *scope == Scope::Source
                || self.failed.is_empty()
                || self.failed.contains(scope)
            {
                bucket.failures.push_back(now);
            }
        }
        drop(throttle);
        self.auth.settled.notify_waiters();
    }
}

impl Auth {
    pub fn new(token_ttl: Duration) -> Auth {
        Auth::with_limits(token_ttl, LoginLimits::default(), Vec::new())
    }

    pub fn with_limits(
        token_ttl: Duration,
        limits: LoginLimits,
        trusted_proxies: Vec<IpAddr>,
    ) -> Auth {
        Auth {
            token_ttl,
            verifier: Semaphore::new(limits.verify_concurrency.max(1)),
            limits,
            trusted_proxies,
            throttle: Mutex::new(Throttle {
                buckets: HashMap::new(),
                next_sweep: Instant::now(),
            }),
            settled: Notify::new(),
            stats: VerifyStats::default(),
            skew_ms: AtomicU64::new(0),
        }
    }

    /// Moves the clock of the failure window forward, as if `by` had passed (for tests:
    /// a lock's decay is shown without waiting for it).
    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.skew_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn now(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.skew_ms.load(Ordering::SeqCst))
    }

    /// Argon2 verifications so far, of one kind of secret.
    pub fn verifications(&self, kind: SecretKind) -> u64 {
        match kind {
            SecretKind::ClientSecret => self.stats.client_secrets.load(Ordering::SeqCst),
            SecretKind::Password => self.stats.passwords.load(Ordering::SeqCst),
        }
    }

    /// The most argon2 verifications that ever ran at once.
    pub fn peak_concurrent_verifications(&self) -> usize {
        self.stats.peak.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves one attempt on every key, waiting while attempts in flight could still
    /// end as the failures that reach a limit. `None`: a limit is reached (or the wait
    /// ran out), and no secret may be checked.
    async fn reserve(&self, keys: Vec<(String, Scope, usize)>) -> Option<Attempt<'_>> {
        let deadline = tokio::time::Instant::now() + self.limits.max_wait;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let now = self.now();
                let mut throttle = self.lock();
                self.sweep(&mut throttle, now);
                let mut full = false;
                for (key, _, limit) in &keys {
                    let bucket = throttle.buckets.entry(key.clone()).or_default();
                    while bucket
                        .failures
                        .front()
                        .is_some_and(|t| now.duration_since(*t) >= self.limits.window)
                    {
                        bucket.failures.pop_front();
                    }
                    if bucket.failures.len() >= *limit {
                        return None;
                    }
                    full |= bucket.failures.len() + bucket.in_flight >= *limit;
                }
                if !full {
                    for (key, _, _) in &keys {
                        if let Some(bucket) = throttle.buckets.get_mut(key) {
                            bucket.in_flight += 1;
                        }
                    }
                    return Some(Attempt {
                        auth: self,
                        keys,
                        failed: Vec::new(),
                        succeeded: false,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Forgets keys with nothing in flight and no failure left in the window (once a
    /// minute), so the map holds only what recent failures need.
    fn sweep(&self, throttle: &mut Throttle, now: Instant) {
        if now < throttle.next_sweep {
            return;
        }
        let window = self.limits.window;
        throttle.buckets.retain(|_, b| {
            b.in_flight > 0
                || b.failures
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
        });
        throttle.next_sweep = now + Duration::from_secs(60);
    }

    /// Checks a secret against its argon2 hash off the async threads, at most
    /// `verify_concurrency` at a time.
    async fn verify(&self, kind: SecretKind, secret: String, hash: String) -> bool {
        let Ok(_permit) = self.verifier.acquire().await else {
            return false;
        };
        match kind {
            SecretKind::ClientSecret => self.stats.client_secrets.fetch_add(1, Ordering::SeqCst),
            SecretKind::Password => self.stats.passwords.fetch_add(1, Ordering::SeqCst),
        };
        let running = self.stats.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats.peak.fetch_max(running, Ordering::SeqCst);
        let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
            .await
            .unwrap_or(false);
        self.stats.running.fetch_sub(1, Ordering::SeqCst);
        ok
    }

    /// The address a login comes from: the peer, or, when the peer is a trusted proxy,
    /// the nearest address in `X-Forwarded-For` that is not one.
    fn source(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|a| a.trim().parse::<IpAddr>())
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|a| !self.trusted_proxies.contains(a))
                .unwrap_or(peer),
        )
    }
}

/// The peer address of the connection, when the server recorded one.
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peer, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

fn random_hex(bytes: usize) -> String {
    let data: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(data)
}

/// An argon2 hash (PHC string) of a secret or password.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}

/// How a token is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A Salesforce-style user id (prefix `005`).
fn user_id() -> String {
    let base = SfId::generate(ObjectType::ProcessException).into_string();
    SfId::parse(&format!("005{}", &base[3..15]))
        .map(SfId::into_string)
        .unwrap_or(base)
}

/// Creates an API client with a role; `None` if the name is taken. Returns (client_id,
/// secret): the secret exists only in this answer.
pub async fn create_client(
    db: &Db,
    name: &str,
    role: Role,
) -> Result<Option<(String, String)>, StoreError> {
    let client_id = format!("3MVG{}", random_hex(16));
    let secret = random_hex(32);
    let hash = hash_secret(&secret).map_err(StoreError::Corrupt)?;
    let id = SfId::generate(ObjectType::ProcessException).into_string();
    let user_id = user_id();
    let new = sql::NewClient {
        id: &id,
        name,
        client_id: &client_id,
        secret_hash: &hash,
        user_id: &user_id,
        role,
    };
    let created = sql::insert_client(db, &new, now_ms()).await?;
    Ok(created.then_some((client_id, secret)))
}

/// Creates a user with a role and a generated password; `None` if the name is taken.
pub async fn create_user(
    db: &Db,
    username: &str,
    role: Role,
) -> Result<Option<String>, StoreError> {
    let password = random_hex(16);
    let hash = hash_secret(&password).map_err(StoreError::Corrupt)?;
    let created = sql::insert_user(db, &user_id(), username, &hash, role, now_ms()).await?;
    Ok(created.then_some(password))
}

/// Issues a token for a client (and user); returns the token and its issue time.
pub async fn issue_token(
    db: &Db,
    client_id: &str,
    user_id: &str,
    ttl: Duration,
) -> Result<(String, i64), StoreError> {
    let token = format!("{ORG_ID}!{}", random_hex(32));
    let issued = now_ms();
    let expires = issued.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    sql::insert_token(db, &token_hash(&token), client_id, user_id, issued, expires).await?;
    Ok((token, issued))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn invalid_grant() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "authentication failure",
    )
}

/// A hash that matches nothing, verified when the client is unknown so that unknown and
/// known clients take the same time.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_secret(&random_hex(16)).unwrap_or_default())
}

fn too_many_attempts() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "too many failed attempts; try again later",
    )
}

fn invalid_client() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_client",
        "invalid client credentials",
    )
}

/// `POST /services/oauth2/token`.
pub async fn token(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected a form-encoded body",
        );
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let grant = field("grant_type");
    if grant != "client_credentials" && grant != "password" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type not supported",
        );
    }
    let password_grant = grant == "password";
    // A name no principal can have (too long, or holding a NUL, which PostgreSQL cannot
    // even compare) is refused without a look-up.
    let impossible = |name: &str| name.len() > MAX_NAME_LEN || name.contains('\0');
    if impossible(field("client_id")) || impossible(field("username")) {
        return invalid_client();
    }
    let auth = &state.auth;
    let limits = &auth.limits;
    let source = auth
        .source(peer, &headers)
        .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    let mut keys = vec![(format!("source:{source}"), Scope::Source, limits.per_source)];
    let mut principal = |scope: Scope, name: String| {
        keys.push((
            format!("{name}@{source}"),
            scope,
            limits.per_principal_and_source,
        ));
        keys.push((name, scope, limits.per_principal));
    };
    principal(Scope::Client, format!("client:{}", field("client_id")));
    if password_grant {
        principal(Scope::User, format!("user:{}", field("username")));
    }
    // The attempt is reserved before any secret is checked, and counts as a failure
    // unless it proves right: concurrent wrong logins cannot get past the limit.
    let Some(attempt) = auth.reserve(keys).await else {
        return too_many_attempts();
    };
    let client = match sql::client(&state.db, field("client_id")).await {
        Ok(c) => c,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    // An unknown client is checked against a decoy, so it takes as long as a known one.
    let hash = client
        .as_ref()
        .map_or_else(|| decoy_hash().to_string(), |c| c.secret_hash.clone());
    let client_ok = auth
        .verify(
            SecretKind::ClientSecret,
            field("client_secret").to_string(),
            hash,
        )
        .await;
    let Some(client) = client.filter(|_| client_ok) else {
        attempt.fail(Scope::Client);
        return invalid_client();
    };
    let user_id = if password_grant {
        let user = match sql::user(&state.db, field("username")).await {
            Ok(u) => u,
            Err(e) => return ApiError::internal(&e).into_response(),
        };
        let hash = user
            .as_ref()
            .map_or_else(|| decoy_hash().to_string(), |u| u.password_hash.clone());
        let ok = auth
            .verify(SecretKind::Password, field("password").to_string(), hash)
            .await;
        match user.filter(|_| ok) {
            Some(u) => u.id,
            None => {
                attempt.fail(Scope::User);
                return invalid_grant();
            }
        }
    } else {
        client.user_id.clone()
    };
    attempt.succeed();
    let (token, issued) =
        match issue_token(&state.db, &client.client_id, &user_id, auth.token_ttl).await {
            Ok(t) => t,
            Err(e) => return ApiError::internal(&e).into_response(),
        };
    let instance_url = instance_url(&state, &headers);
    let id = format!("{instance_url}/id/{ORG_ID}/{user_id}");
    let signature = Hmac::<Sha256>::new_from_slice(token.as_bytes())
        .map(|mut mac| {
            mac.update(format!("{id}{issued}").as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        })
        .unwrap_or_default();
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "instance_url": instance_url,
            "id": id,
            "token_type": "Bearer",
            "issued_at": issued.to_string(),
            "signature": signature,
        }),
    )
}

/// Where clients should send their requests: the configured public URL, or this request's
/// own scheme and host.
fn instance_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", if state.tls { "https" } else { "http" })
}

fn session_invalid() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_SESSION_ID",
        "Session expired or invalid",
    )
    .into_response()
}

/// Every `/services/data/…` resource (not the version list itself) needs a valid token.
pub async fn require_bearer(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let protected = path
        .strip_prefix("/services/data/")
        .is_some_and(|rest| !rest.is_empty());
    if !protected {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // Auth schemes are case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER`, ….
            let (scheme, credentials) = v.split_once(' ')?;
            (scheme.eq_ignore_ascii_case("Bearer") || scheme.eq_ignore_ascii_case("OAuth"))
                .then_some(credentials)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return session_invalid();
    };
    match sql::token_role(&state.db, &token_hash(token), now_ms()).await {
        Ok(Some(role)) => {
            let mut request = request;
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        Ok(None) => session_invalid(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_only_against_their_own_hash() {
        let hash = hash_secret("s3cret").unwrap();
        assert!(hash.starts_with("$argon2"));
        assert!(verify_secret("s3cret", &hash));
        assert!(!verify_secret("s3cret!", &hash));
        assert!(!verify_secret("s3cret", "not a hash"));
    }

    #[tokio::test]
    async fn reservations_count_as_failures_until_they_succeed() {
        let limits = LoginLimits {
            per_principal_and_source: 3,
            max_wait: Duration::from_millis(50),
            ..LoginLimits::default()
        };
        let auth = Auth::with_limits(Duration::from_secs(60), limits, Vec::new());
        let key = |name: &str| vec![(name.to_string(), Scope::Client, 3)];
        let held: Vec<_> = [
            auth.reserve(key("client:x")).await,
            auth.reserve(key("client:x")).await,
            auth.reserve(key("client:x")).await,
        ]
        .into_iter()
        .map(|a| a.expect("within the limit"))
        .collect();
        // Three in flight could all fail: a fourth waits, and is refused when they do.
        assert!(auth.reserve(key("client:y")).await.is_some(), "per key");
        let waiting = auth.reserve(key("client:x"));
        for attempt in held {
            attempt.fail(Scope::Client);
        }
        assert!(waiting.await.is_none());
        assert_eq!(auth.lock().buckets["client:x"].failures.len(), 3);
    }

    #[tokio::test]
    async fn a_success_clears_the_principal_and_frees_a_waiting_attempt() {
        let auth = Auth::with_limits(Duration::from_secs(60), LoginLimits::default(), Vec::new());
        let keys = |n| {
            vec![
                ("source:a".to_string(), Scope::Source, 30),
                ("client:x".to_string(), Scope::Client, n),
            ]
        };
        auth.reserve(keys(2)).await.unwrap().fail(Scope::Client);
        let first = auth.reserve(keys(2)).await.unwrap();
        let second = auth.reserve(keys(2));
        first.succeed();
        let second = second.await.expect("the success left room");
        drop(second); // dropped unsettled: a failure
        let throttle = auth.lock();
        assert_eq!(throttle.buckets["client:x"].failures.len(), 1);
        assert_eq!(
            throttle.buckets["source:a"].failures.len(),
            2,
            "sources keep theirs"
        );
        assert_eq!(throttle.buckets["client:x"].in_flight, 0);
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let auth = Auth::with_limits(Duration::from_secs(60), LoginLimits::default(), vec![proxy]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.0.0.1".parse().unwrap(),
        );
        let peer: IpAddr = "192.0.2.5".parse().unwrap();
        assert_eq!(auth.source(Some(peer), &headers), Some(peer));
        assert_eq!(
            auth.source(Some(proxy), &headers),
            Some("198.51.100.7".parse().unwrap())
        );
        headers.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(auth.source(Some(proxy), &headers), Some(proxy));
        assert_eq!(auth.source(None, &headers), None);
    }

    #[test]
    fn user_ids_look_like_salesforce_user_ids() {
        let id = user_id();
        assert!(id.starts_with("005") && id.len() == 18, "{id}");
        assert!(SfId::parse(&id).is_ok());
    }
}
