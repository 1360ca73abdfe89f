//! `refunds simulator`: a stand-in payment provider that speaks the subset of Stripe's
//! refund API the Stripe adapter uses, with a ledger in a SQLite file that survives
//! restarts. Demos and the reliability tests point a `ProviderType: Stripe` gateway at it.
//!
//! Outcomes follow the last two digits of the amount in minor units (SPEC §4), expressed
//! the way Stripe would answer:
//!
//! | digits | answer |
//! |---|---|
//! | 91 | 402 `card_error` / `card_declined` (Decline) |
//! | 92 | 400 `invalid_request_error` / `charge_disputed` (PermanentFail) |
//! | 93 | 400 `invalid_request_error` / `amount_too_large` (ValidationError) |
//! | 94 | 400 `invalid_request_error` / `refund_requires_review` (RequiresReview) |
//! | 95 | 429 `rate_limit_error` on the first two attempts of a key, then success |
//! | 96 | first attempt: the refund is made, then the connection is cut mid-answer |
//! | 97 | first attempt: nothing is recorded and no answer comes (the caller times out) |
//! | 98 | `pending`, `succeeded` when next read |
//! | 99 | `pending`, `failed` when next read |
//! | other | `succeeded` |
//!
//! A repeated `Idempotency-Key` replays the first recorded answer and moves no money; with
//! other parameters than its first use it is refused, as Stripe refuses it: 400
//! `idempotency_error`. With a key lifetime ([`Simulator::with_key_lifetime`],
//! `refunds simulator --key-lifetime-ms`) a key is forgotten that long after its first use,
//! as Stripe forgets keys after 24 hours: a request sent again under it is a new refund.
//! Lists (`GET /v1/refunds?charge=…`) page as Stripe's do (`limit`, `has_more`,
//! `starting_after`) and show every refund with its `metadata`, forgotten keys or not.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// One refund of the ledger, as the checks of the tests read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRefund {
    pub id: String,
    pub idempotency_key: String,
    /// The charge or payment intent refunded.
    pub payment: Option<String>,
    pub amount: i64,
    /// `succeeded`, `pending` or `failed`.
    pub status: String,
    /// `metadata[refund_id]` as sent.
    pub refund_id: Option<String>,
}

#[derive(Clone)]
pub struct Simulator {
    ledger: SqlitePool,
    latency: Duration,
    key_lifetime: Option<Duration>,
}

/// How long a "request that never arrived" keeps the caller waiting.
const LOST_REQUEST_STALL: Duration = Duration::from_secs(120);

impl Simulator {
    /// Opens (creating if needed) the ledger file.
    pub async fn open(ledger: &Path, latency: Duration) -> Result<Simulator, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(ledger)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS refunds (id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, \
             charge TEXT, payment_intent TEXT, amount INTEGER NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL, \
             final_status TEXT NOT NULL, failure_reason TEXT, metadata TEXT NOT NULL, created INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS attempts (idempotency_key TEXT PRIMARY KEY, count INTEGER NOT NULL, \
             status INTEGER, body TEXT, params TEXT)",
        )
        .execute(&pool)
        .await?;
        // (a ledger written before keys remembered their parameters)
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('attempts')")
                .fetch_all(&pool)
                .await?;
        if !columns.iter().any(|c| c == "params") {
            sqlx::query("ALTER TABLE attempts ADD COLUMN params TEXT")
                .execute(&pool)
                .await?;
        }
        // (… and before they remembered when they were first used; such keys never expire)
        if !columns.iter().any(|c| c == "first_used") {
            sqlx::query("ALTER TABLE attempts ADD COLUMN first_used INTEGER")
                .execute(&pool)
                .await?;
        }
        Ok(Simulator {
            ledger: pool,
            latency,
            key_lifetime: None,
        })
    }

    /// Forgets an idempotency key this long after its first use, as Stripe does after
    /// 24 hours (`None`, the default: never). A request sent again under a forgotten key
    /// is a new refund; the refunds made under it stay in the ledger and in its lists.
    pub fn with_key_lifetime(mut self, lifetime: Option<Duration>) -> Simulator {
        self.key_lifetime = lifetime;
        self
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/refunds", post(create).get(list))
            .route("/v1/refunds/{id}", get(retrieve))
            .with_state(self)
    }

    /// Every refund in the ledger, oldest first, for checks.
    pub async fn refunds(&self) -> Result<Vec<LedgerRefund>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, idempotency_key, charge, payment_intent, amount, status, metadata FROM refunds \
             ORDER BY created, id",
        )
        .fetch_all(&self.ledger)
        .await?;
        rows.iter()
            .map(|r| {
                let metadata: String = r.try_get("metadata")?;
                let metadata = serde_json::from_str::<Value>(&metadata).unwrap_or(json!({}));
                Ok(LedgerRefund {
                    id: r.try_get("id")?,
                    idempotency_key: r.try_get("idempotency_key")?,
                    payment: r
                        .try_get::<Option<String>, _>("charge")?
                        .or(r.try_get::<Option<String>, _>("payment_intent")?),
                    amount: r.try_get("amount")?,
                    status: r.try_get("status")?,
                    refund_id: metadata
                        .get("refund_id")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
            })
            .collect()
    }

    /// Refunds with money moved (`succeeded`) and their total, for checks.
    pub async fn settled(&self) -> Result<(i64, i64), sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM refunds WHERE status = 'succeeded'",
        )
        .fetch_one(&self.ledger)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}

fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> (StatusCode, Value) {
    (
        status,
        json!({"error": {"type": kind, "code": code, "message": message}}),
    )
}

fn reply((status, body): (StatusCode, Value)) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn authorised(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| !k.trim().is_empty())
}

fn unauthorised() -> Response {
    reply(error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        None,
        "You did not provide an API key.",
    ))
}

fn refund_json(row: &sqlx::sqlite::SqliteRow) -> Result<Value, sqlx::Error> {
    let metadata: String = row.try_get("metadata")?;
    Ok(json!({
        "id": row.try_get::<String, _>("id")?,
        "object": "refund",
        "amount": row.try_get::<i64, _>("amount")?,
        "charge": row.try_get::<Option<String>, _>("charge")?,
        "payment_intent": row.try_get::<Option<String>, _>("payment_intent")?,
        "currency": row.try_get::<String, _>("currency")?,
        "status": row.try_get::<String, _>("status")?,
        "failure_reason": row.try_get::<Option<String>, _>("failure_reason")?,
        "metadata": serde_json::from_str::<Value>(&metadata).unwrap_or(json!({})),
        "created": row.try_get::<i64, _>("created")?,
    }))
}

fn internal(e: sqlx::Error) -> Response {
    tracing::error!(error = %e, "simulator ledger error");
    reply(error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        None,
        "ledger error",
    ))
}

async fn create(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    if !sim.latency.is_zero() {
        tokio::time::sleep(sim.latency).await;
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (charge, intent) = (field("charge"), field("payment_intent"));
    if charge.is_none() && intent.is_none() {
        return reply(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_missing"),
            "Must provide charge or payment_intent.",
        ));
    }
    let Some(amount) = field("amount")
        .and_then(|a| a.parse::<i64>().ok())
        .filter(|a| *a > 0)
    else {
        return reply(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_invalid_integer"),
            "Invalid amount.",
        ));
    };
    let metadata: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_string(), Value::String(v.clone())))
        })
        .collect();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("auto_{:016x}", rand::random::<u64>()));
    match handle_create(
        &sim,
        &key,
        charge,
        intent,
        amount,
        field("currency"),
        &metadata,
    )
    .await
    {
        Ok(response) => response,
        Err(e) => internal(e),
    }
}

async fn handle_create(
    sim: &Simulator,
    key: &str,
    charge: Option<String>,
    intent: Option<String>,
    amount: i64,
    currency: Option<String>,
    metadata: &serde_json::Map<String, Value>,
) -> Result<Response, sqlx::Error> {
    let mut tx = sim.ledger.begin().await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if let Some(lifetime) = sim.key_lifetime {
        let lifetime = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
        let forgotten = sqlx::query(
            "DELETE FROM attempts WHERE idempotency_key = $1 AND first_used IS NOT NULL AND first_used <= $2",
        )
        .bind(key)
        .bind(now_ms.saturating_sub(lifetime))
        .execute(&mut *tx)
        .await?;
        if forgotten.rows_affected() > 0 {
            // The refund made under the key stays; only the key is free again.
            sqlx::query(
                "UPDATE refunds SET idempotency_key = idempotency_key || ' (forgotten, ' || id || ')' \
                 WHERE idempotency_key = $1",
            )
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
    }
    // What the key was first used with: the same key with anything else is refused.
    let params = json!({
        "charge": charge, "payment_intent": intent, "amount": amount,
        "currency": currency, "metadata": metadata,
    })
    .to_string();
    let first: Option<Option<String>> =
        sqlx::query_scalar("SELECT params FROM attempts WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(Some(first)) = first {
        if first != params {
            tx.commit().await?;
            return Ok(reply(error(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                None,
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            )));
        }
    }
    let attempt: i64 = sqlx::query_scalar(
        "INSERT INTO attempts (idempotency_key, count, params, first_used) VALUES ($1, 1, $2, $3) \
         ON CONFLICT (idempotency_key) DO UPDATE SET count = count + 1 RETURNING count",
    )
    .bind(key)
    .bind(&params)
    .bind(now_ms)
    .fetch_one(&mut *tx)
    .await?;
    let stored = sqlx::query(
        "SELECT status, body FROM attempts WHERE idempotency_key = $1 AND status IS NOT NULL",
    )
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = stored {
        tx.commit().await?;
        let status: i64 = row.try_get(0)?;
        let body: String = row.try_get(1)?;
        let status =
            StatusCode::from_u16(u16::try_from(status).unwrap_or(500)).unwrap_or(StatusCode::OK);
        return Ok((status, [("content-type", "application/json")], body).into_response());
    }
    let outcome = match amount.rem_euclid(100) {
        91 => Some(error(
            StatusCode::PAYMENT_REQUIRED,
            "card_error",
            Some("card_declined"),
            "Your card was declined.",
        )),
        92 => Some(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("charge_disputed"),
            "The charge is disputed and cannot be refunded.",
        )),
        93 => Some(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("amount_too_large"),
            "Refund amount is greater than the unrefunded amount on the charge.",
        )),
        94 => Some(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("refund_requires_review"),
            "The refund needs manual review.",
        )),
        95 if attempt <= 2 => {
            tx.commit().await?;
            return Ok(reply(error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                None,
                "Too many requests.",
            )));
        }
        97 if attempt == 1 => {
            tx.commit().await?;
            // The request is "lost": nothing is recorded and the caller hears nothing.
            tokio::time::sleep(LOST_REQUEST_STALL).await;
            return Ok(StatusCode::GATEWAY_TIMEOUT.into_response());
        }
        _ => None,
    };
    let (status, body) = match outcome {
        Some(failure) => failure,
        None => {
            let (first, last, reason) = match amount.rem_euclid(100) {
                98 => ("pending", "succeeded", None),
                99 => ("pending", "failed", Some("expired_or_canceled_card")),
                _ => ("succeeded", "succeeded", None),
            };
            let id = format!("re_sim{:016x}", rand::random::<u64>());
            let created = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
            sqlx::query(
                "INSERT INTO refunds (id, idempotency_key, charge, payment_intent, amount, currency, status, final_status, \
                 failure_reason, metadata, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&id)
            .bind(key)
            .bind(&charge)
            .bind(&intent)
            .bind(amount)
            .bind(currency.as_deref().unwrap_or("usd"))
            .bind(first)
            .bind(last)
            .bind(reason)
            .bind(Value::Object(metadata.clone()).to_string())
            .bind(created)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query("SELECT * FROM refunds WHERE id = $1")
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
            let mut body = refund_json(&row)?;
            // A pending refund does not show its future failure yet.
            body["failure_reason"] = Value::Null;
            (StatusCode::OK, body)
        }
    };
    sqlx::query("UPDATE attempts SET status = $1, body = $2 WHERE idempotency_key = $3")
        .bind(i64::from(status.as_u16()))
        .bind(body.to_string())
        .bind(key)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if amount.rem_euclid(100) == 96 && attempt == 1 {
        // The refund is made and stored; the answer breaks off after the headers.
        let broken = futures_util::stream::once(async {
            Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("connection cut"))
        });
        return Ok((
            status,
            [("content-type", "application/json")],
            Body::from_stream(broken),
        )
            .into_response());
    }
    Ok(reply((status, body)))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    charge: Option<String>,
    payment_intent: Option<String>,
    limit: Option<i64>,
    starting_after: Option<String>,
}

/// A read first moves pending refunds to their final status, as time would.
async fn list(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    let filter = "($1 IS NULL OR charge = $1) AND ($2 IS NULL OR payment_intent = $2)";
    let settled = sqlx::query(&format!(
        "UPDATE refunds SET status = final_status WHERE status = 'pending' AND {filter}"
    ))
    .bind(&q.charge)
    .bind(&q.payment_intent)
    .execute(&sim.ledger)
    .await;
    if let Err(e) = settled {
        return internal(e);
    }
    // Newest first, as Stripe lists; `starting_after` continues after that refund, and one
    // row more than asked for tells whether there is a next page.
    let rows = sqlx::query(&format!(
        "SELECT * FROM refunds WHERE {filter} AND ($3 IS NULL OR (created, id) < \
         (SELECT created, id FROM refunds WHERE id = $3)) ORDER BY created DESC, id DESC LIMIT $4"
    ))
    .bind(&q.charge)
    .bind(&q.payment_intent)
    .bind(&q.starting_after)
    .bind(limit + 1)
    .fetch_all(&sim.ledger)
    .await;
    match rows.and_then(|rows| rows.iter().map(refund_json).collect::<Result<Vec<_>, _>>()) {
        Ok(mut data) => {
            let has_more = data.len() > usize::try_from(limit).unwrap_or(usize::MAX);
            data.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            reply((
                StatusCode::OK,
                json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/refunds"}),
            ))
        }
        Err(e) => internal(e),
    }
}

async fn retrieve(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    let settled = sqlx::query(
        "UPDATE refunds SET status = final_status WHERE id = $1 AND status = 'pending'",
    )
    .bind(&id)
    .execute(&sim.ledger)
    .await;
    if let Err(e) = settled {
        return internal(e);
    }
    let row = sqlx::query("SELECT * FROM refunds WHERE id = $1")
        .bind(&id)
        .fetch_optional(&sim.ledger)
        .await;
    match row.and_then(|r| r.as_ref().map(refund_json).transpose()) {
        Ok(Some(body)) => reply((StatusCode::OK, body)),
        Ok(None) => reply(error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            "No such refund.",
        )),
        Err(e) => internal(e),
    }
}
