//! API clients, users and access tokens. Only hashes are stored: argon2 for client secrets
//! and passwords (computed by the caller), SHA-256 for tokens. Each client and user has a
//! [`Role`]; a token's role is looked up with the token, so it is always the principal's
//! current one.

use sqlx::Row;

use crate::{Db, Result, StoreError};

/// What a principal may do. `Admin` may also create and change payment gateways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Standard,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standard => "standard",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Result<Role> {
        match text {
            "standard" => Ok(Role::Standard),
            "admin" => Ok(Role::Admin),
            other => Err(StoreError::Corrupt(format!(
                "unknown principal role {other:?}"
            ))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: String,
    pub secret_hash: String,
    pub user_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub password_hash: String,
}

/// An API client to insert (the secret only as its argon2 hash).
#[derive(Clone, Copy, Debug)]
pub struct NewClient<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub client_id: &'a str,
    pub secret_hash: &'a str,
    pub user_id: &'a str,
    pub role: Role,
}

/// Inserts a client; false if the name is taken.
pub async fn insert_client(db: &Db, client: &NewClient<'_>, now: i64) -> Result<bool> {
    let mut tx = db.begin().await?;
    let r = sqlx::query(
        "INSERT INTO api_clients (id, name, client_id, secret_hash, user_id, role, created_date) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
    )
    .bind(client.id)
    .bind(client.name)
    .bind(client.client_id)
    .bind(client.secret_hash)
    .bind(client.user_id)
    .bind(client.role.as_str())
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

/// Revokes a client and every token it was given. False if there is no such client.
pub async fn revoke_client(db: &Db, name: &str, now: i64) -> Result<bool> {
    let mut tx = db.begin().await?;
    let client_id: Option<String> = sqlx::query_scalar(
        "UPDATE api_clients SET revoked_at = $1 WHERE name = $2 RETURNING client_id",
    )
    .bind(now)
    .bind(name)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(client_id) = &client_id {
        sqlx::query("DELETE FROM access_tokens WHERE client_id = $1")
            .bind(client_id)
            .execute(tx.conn())
            .await?;
    }
    tx.commit().await?;
    Ok(client_id.is_some())
}

/// An active (not revoked) client.
pub async fn client(db: &Db, client_id: &str) -> Result<Option<ClientRow>> {
    let row = sqlx::query("SELECT client_id, secret_hash, user_id FROM api_clients WHERE client_id = $1 AND revoked_at IS NULL")
        .bind(client_id)
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| {
        Ok(ClientRow {
            client_id: r.try_get("client_id")?,
            secret_hash: r.try_get("secret_hash")?,
            user_id: r.try_get("user_id")?,
        })
    })
    .transpose()
}

pub async fn insert_user(
    db: &Db,
    id: &str,
    username: &str,
    password_hash: &str,
    role: Role,
    now: i64,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let r = sqlx::query(
        "INSERT INTO api_users (id, username, password_hash, role, created_date) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING",
    )
    .bind(id)
    .bind(username)
    .bind(password_hash)
    .bind(role.as_str())
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

pub async fn user(db: &Db, username: &str) -> Result<Option<UserRow>> {
    let row = sqlx::query("SELECT id, password_hash FROM api_users WHERE username = $1")
        .bind(username)
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| {
        Ok(UserRow {
            id: r.try_get("id")?,
            password_hash: r.try_get("password_hash")?,
        })
    })
    .transpose()
}

pub async fn insert_token(
    db: &Db,
    token_hash: &str,
    client_id: &str,
    user_id: &str,
    issued_at: i64,
    expires_at: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    // Expired tokens are swept as new ones are issued, so the table stays small.
    sqlx::query("DELETE FROM access_tokens WHERE expires_at < $1")
        .bind(issued_at)
        .execute(tx.conn())
        .await?;
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, client_id, user_id, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(client_id)
    .bind(user_id)
    .bind(issued_at)
    .bind(expires_at)
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// The role of a token that is known, unexpired, and whose client is not revoked; `None`
/// otherwise. A token from the password grant acts with its user's role, one from the
/// client-credentials grant with its client's.
pub async fn token_role(db: &Db, token_hash: &str, now: i64) -> Result<Option<Role>> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT COALESCE(u.role, c.role) FROM access_tokens t \
         JOIN api_clients c ON c.client_id = t.client_id \
         LEFT JOIN api_users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.expires_at > $2 AND c.revoked_at IS NULL",
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    role.as_deref().map(Role::parse).transpose()
}

/// Whether a token hash is known, unexpired, and its client not revoked.
pub async fn token_valid(db: &Db, token_hash: &str, now: i64) -> Result<bool> {
    Ok(token_role(db, token_hash, now).await?.is_some())
}

/// The fields of a payment gateway that the security rules are about (where it sends a
/// secret, and which variables it names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySecurity {
    pub id: String,
    pub name: String,
    pub provider_type: String,
    pub base_url: Option<String>,
    pub merchant_credential_env: Option<String>,
    pub webhook_hmac_key_env: Option<String>,
}

/// Every payment gateway's security-relevant fields, oldest first (checked at start-up).
pub async fn gateways_security(db: &Db) -> Result<Vec<GatewaySecurity>> {
    let rows = sqlx::query(
        "SELECT id, payment_gateway_name, provider_type, base_url, merchant_credential_env, \
         webhook_hmac_key_env FROM payment_gateways ORDER BY created_date, id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(GatewaySecurity {
                id: r.try_get("id")?,
                name: r.try_get("payment_gateway_name")?,
                provider_type: r.try_get("provider_type")?,
                base_url: r.try_get("base_url")?,
                merchant_credential_env: r.try_get("merchant_credential_env")?,
                webhook_hmac_key_env: r.try_get("webhook_hmac_key_env")?,
            })
        })
        .collect()
}
