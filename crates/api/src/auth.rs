//! Authentication: the OAuth 2.0 token endpoint (`client_credentials` and `password`
//! grants) and the bearer check in front of every `/services/data/…` resource.
//!
//! Tokens are 256 random bits, handed out once and stored only as SHA-256 hashes; client
//! secrets and passwords are stored as argon2 hashes. Failed logins are counted per client
//! and per user; past the limit, logins are refused without checking the secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::Engine;
use hmac::{Hmac, Mac};
use refunds_domain::{ObjectType, SfId};
use refunds_store::{auth as sql, now_ms, Db, StoreError};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{json_response, ApiError};
use crate::AppState;

/// The organisation id every answer names (one organisation per installation).
pub const ORG_ID: &str = "00D000000000001AAA";

/// Failed logins allowed per client or user within [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Per-process authentication state: token lifetime and the failed-login counters.
#[derive(Debug)]
pub struct Auth {
    pub token_ttl: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Auth {
    pub fn new(token_ttl: Duration) -> Auth {
        Auth {
            token_ttl,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn locked_out(&self, key: &str) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(key)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn failed(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures
            .entry(key.to_string())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
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

/// Creates an API client; `None` if the name is taken. Returns (client_id, secret): the
/// secret exists only in this answer.
pub async fn create_client(db: &Db, name: &str) -> Result<Option<(String, String)>, StoreError> {
    let client_id = format!("3MVG{}", random_hex(16));
    let secret = random_hex(32);
    let hash = hash_secret(&secret).map_err(StoreError::Corrupt)?;
    let id = SfId::generate(ObjectType::ProcessException).into_string();
    let created =
        sql::insert_client(db, &id, name, &client_id, &hash, &user_id(), now_ms()).await?;
    Ok(created.then_some((client_id, secret)))
}

/// Creates a user with a generated password; `None` if the name is taken.
pub async fn create_user(db: &Db, username: &str) -> Result<Option<String>, StoreError> {
    let password = random_hex(16);
    let hash = hash_secret(&password).map_err(StoreError::Corrupt)?;
    let created = sql::insert_user(db, &user_id(), username, &hash, now_ms()).await?;
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

/// Runs argon2 off the async threads: it is deliberately slow.
async fn verify(secret: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
        .await
        .unwrap_or(false)
}

/// A hash that matches nothing, verified when the client is unknown so that unknown and
/// known clients take the same time.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_secret(&random_hex(16)).unwrap_or_default())
}

/// `POST /services/oauth2/token`.
pub async fn token(
    State(state): State<AppState>,
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
    let client_key = format!("client:{}", field("client_id"));
    let user_key = format!("user:{}", field("username"));
    if state.auth.locked_out(&client_key)
        || (grant == "password" && state.auth.locked_out(&user_key))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "too many failed attempts; try again later",
        );
    }
    let client = match sql::client(&state.db, field("client_id")).await {
        Ok(c) => c,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let client_ok = match &client {
        Some(c) => verify(field("client_secret").to_string(), c.secret_hash.clone()).await,
        None => {
            // Spend the same time as a real check, then refuse.
            let _ = verify(field("client_secret").to_string(), decoy_hash().to_string()).await;
            false
        }
    };
    let Some(client) = client.filter(|_| client_ok) else {
        state.auth.failed(&client_key);
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "invalid client credentials",
        );
    };
    let user_id = if grant == "password" {
        let user = match sql::user(&state.db, field("username")).await {
            Ok(u) => u,
            Err(e) => return ApiError::internal(&e).into_response(),
        };
        let hash = user
            .as_ref()
            .map_or_else(|| decoy_hash().to_string(), |u| u.password_hash.clone());
        let ok = verify(field("password").to_string(), hash).await && user.is_some();
        match user.filter(|_| ok) {
            Some(u) => u.id,
            None => {
                state.auth.failed(&user_key);
                return invalid_grant();
            }
        }
    } else {
        client.user_id.clone()
    };
    state.auth.succeeded(&client_key);
    state.auth.succeeded(&user_key);
    let (token, issued) =
        match issue_token(&state.db, &client.client_id, &user_id, state.auth.token_ttl).await {
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
    match sql::token_valid(&state.db, &token_hash(token), now_ms()).await {
        Ok(true) => next.run(request).await,
        Ok(false) => session_invalid(),
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

    #[test]
    fn lockout_after_too_many_failures() {
        let auth = Auth::new(Duration::from_secs(60));
        for _ in 0..MAX_FAILURES - 1 {
            auth.failed("client:x");
        }
        assert!(!auth.locked_out("client:x"));
        auth.failed("client:x");
        assert!(auth.locked_out("client:x"));
        assert!(!auth.locked_out("client:y"), "per client");
        auth.succeeded("client:x");
        assert!(!auth.locked_out("client:x"));
    }

    #[test]
    fn user_ids_look_like_salesforce_user_ids() {
        let id = user_id();
        assert!(id.starts_with("005") && id.len() == 18, "{id}");
        assert!(SfId::parse(&id).is_ok());
    }
}
