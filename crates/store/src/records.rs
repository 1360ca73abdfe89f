//! Generic record reads and inserts, driven by [`crate::schema`].

use refunds_domain::ObjectType;
use sqlx::Row;

use crate::lists::{placeholders, rows_with_ids};
use crate::schema::{object_def, FieldDef, FieldKind};
use crate::{Db, Result, Tx};

/// A stored value, before rendering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Text(String),
    Int(i64),
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// One record with the fields that were asked for, in the order asked.
#[derive(Clone, Debug)]
pub struct Record {
    pub ty: ObjectType,
    pub values: Vec<(&'static FieldDef, Value)>,
    /// The record's currency, when its object has one (money fields render with it).
    pub currency: Option<String>,
}

impl Record {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(f, _)| f.name == name)
            .map(|(_, v)| v)
    }
}

fn select_list(fields: &[&'static FieldDef], has_currency: bool) -> String {
    let mut cols: Vec<&str> = fields.iter().map(|f| f.sql).collect();
    if has_currency {
        cols.push("currency_iso_code");
    }
    cols.join(", ")
}

pub(crate) fn decode(row: &sqlx::any::AnyRow, i: usize, kind: FieldKind) -> Result<Value> {
    Ok(match kind {
        FieldKind::Money | FieldKind::DateTime | FieldKind::Int => {
            match row.try_get::<Option<i64>, _>(i)? {
                Some(v) => Value::Int(v),
                None => Value::Null,
            }
        }
        _ => match row.try_get::<Option<String>, _>(i)? {
            Some(v) => Value::Text(v),
            None => Value::Null,
        },
    })
}

/// Reads one record by id; `fields` of `None` means every field.
pub async fn get(
    db: &Db,
    ty: ObjectType,
    id: &str,
    fields: Option<&[&'static FieldDef]>,
) -> Result<Option<Record>> {
    let def = object_def(ty);
    let all: Vec<&'static FieldDef> = def.fields.iter().collect();
    let fields = fields.unwrap_or(&all);
    let sql = format!(
        "SELECT {} FROM {} WHERE id = $1",
        select_list(fields, def.has_currency()),
        def.table
    );
    let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(db.pool()).await? else {
        return Ok(None);
    };
    let mut values = Vec::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        values.push((*field, decode(&row, i, field.kind)?));
    }
    let currency = if def.has_currency() {
        Some(row.try_get::<String, _>(fields.len())?)
    } else {
        None
    };
    Ok(Some(Record {
        ty,
        values,
        currency,
    }))
}

/// Inserts a record. Column names come from the schema tables only.
pub async fn insert(tx: &mut Tx, ty: ObjectType, values: &[(&'static str, Value)]) -> Result<()> {
    let def = object_def(ty);
    let cols: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        def.table,
        cols.join(", "),
        placeholders(1, values.len()).collect::<Vec<_>>().join(", ")
    );
    let mut query = sqlx::query(&sql);
    for (_, value) in values {
        query = match value {
            Value::Null => query.bind(Option::<String>::None),
            Value::Text(s) => query.bind(s.clone()),
            Value::Int(i) => query.bind(*i),
        };
    }
    query.execute(tx.conn()).await?;
    Ok(())
}

/// The order summary a record belongs to and its currency, for ingest checks.
#[derive(Clone, Debug)]
pub struct OrderSummaryHead {
    pub id: String,
    pub life_cycle_type: String,
    pub currency: String,
}

pub async fn order_summary_head(tx: &mut Tx, id: &str) -> Result<Option<OrderSummaryHead>> {
    let row = sqlx::query(
        "SELECT id, order_life_cycle_type, currency_iso_code FROM order_summaries WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    row.map(|r| {
        Ok(OrderSummaryHead {
            id: r.try_get("id")?,
            life_cycle_type: r.try_get("order_life_cycle_type")?,
            currency: r.try_get("currency_iso_code")?,
        })
    })
    .transpose()
}

/// Whether a record of `ty` with this id exists.
pub async fn exists(tx: &mut Tx, ty: ObjectType, id: &str) -> Result<bool> {
    let sql = format!("SELECT 1 FROM {} WHERE id = $1", object_def(ty).table);
    Ok(sqlx::query(&sql)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .is_some())
}

/// Sets a process exception's status and keeps the order summary's count of active
/// exceptions in step, in the caller's transaction. Returns false if there is no such
/// exception.
pub async fn set_process_exception_status(
    tx: &mut Tx,
    id: &str,
    status: &str,
    now: i64,
) -> Result<bool> {
    // Locked until the transaction ends (PostgreSQL), so two status changes of one exception
    // run one after the other and the order's active count moves once per real change.
    let row = sqlx::query(&format!(
        "SELECT status, order_summary_id FROM process_exceptions WHERE id = $1{}",
        crate::dialect::locks::for_update(tx.backend())
    ))
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else { return Ok(false) };
    let old: String = row.try_get("status")?;
    let order: String = row.try_get("order_summary_id")?;
    let active = |s: &str| crate::schema::ACTIVE_PROCESS_EXCEPTION_STATUSES.contains(&s);
    let delta: i64 = match (active(&old), active(status)) {
        (true, false) => -1,
        (false, true) => 1,
        _ => 0,
    };
    let r = sqlx::query(
        "UPDATE process_exceptions SET status = $1, last_modified_date = $2 WHERE id = $3 AND status = $4",
    )
    .bind(status)
    .bind(now)
    .bind(id)
    .bind(&old)
    .execute(tx.conn())
    .await?;
    crate::db::expect_one(r, || format!("process exception {id} in status {old}"))?;
    if delta != 0 {
        let r = sqlx::query(
            "UPDATE order_summaries SET active_process_exception_count = active_process_exception_count + $1, \
             last_modified_date = $2 WHERE id = $3",
        )
        .bind(delta)
        .bind(now)
        .bind(&order)
        .execute(tx.conn())
        .await?;
        crate::db::expect_one(r, || format!("order summary {order}"))?;
    }
    Ok(true)
}

/// A payment as the `order-payment-summaries` resource checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentHead {
    pub id: String,
    pub summary_id: Option<String>,
    pub amount: i64,
    pub status: String,
    pub currency: String,
}

pub async fn payment_heads(tx: &mut Tx, ids: &[String]) -> Result<Vec<PaymentHead>> {
    rows_with_ids(
        tx,
        "SELECT id, order_payment_summary_id, amount, status, currency_iso_code FROM payments",
        "",
        ids,
    )
    .await?
    .iter()
    .map(|r| {
        Ok(PaymentHead {
            id: r.try_get("id")?,
            summary_id: r.try_get("order_payment_summary_id")?,
            amount: r.try_get("amount")?,
            status: r.try_get("status")?,
            currency: r.try_get("currency_iso_code")?,
        })
    })
    .collect()
}

/// Creates an order payment summary over payments that belong to none yet, rolling their
/// processed amounts into `AuthorizationAmount` and `CapturedAmount`. The payments are
/// claimed with a conditional update, so two concurrent requests cannot both take one.
/// `false` when a payment was taken first by another summary: by then the summary row is
/// written, so the caller must roll the transaction back (the API answers 400 and drops it).
pub async fn create_order_payment_summary(
    tx: &mut Tx,
    id: &str,
    order_id: &str,
    payments: &[PaymentHead],
    currency: &str,
    now: i64,
) -> Result<bool> {
    let captured = payments
        .iter()
        .filter(|p| p.status == "Processed")
        .try_fold(0i64, |acc, p| acc.checked_add(p.amount))
        .ok_or_else(|| crate::StoreError::Corrupt("captured amount overflows".into()))?;
    sqlx::query(
        "INSERT INTO order_payment_summaries (id, order_summary_id, authorization_amount, captured_amount, \
         currency_iso_code, created_date, last_modified_date) VALUES ($1, $2, $3, $3, $4, $5, $5)",
    )
    .bind(id)
    .bind(order_id)
    .bind(captured)
    .bind(currency)
    .bind(now)
    .execute(tx.conn())
    .await?;
    for p in payments {
        let r = sqlx::query(
            "UPDATE payments SET order_payment_summary_id = $1, last_modified_date = $2 \
             WHERE id = $3 AND order_payment_summary_id IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(&p.id)
        .execute(tx.conn())
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A remembered `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub operation_id: String,
}

/// Looks a key up, forgetting it first if it is older than `cutoff`.
pub async fn idempotency_key(
    tx: &mut Tx,
    key: &str,
    cutoff: i64,
) -> Result<Option<IdempotencyRecord>> {
    sqlx::query("DELETE FROM idempotency_keys WHERE idempotency_key = $1 AND created_at < $2")
        .bind(key)
        .bind(cutoff)
        .execute(tx.conn())
        .await?;
    let row = sqlx::query("SELECT request_hash, background_operation_id FROM idempotency_keys WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(tx.conn())
        .await?;
    row.map(|r| {
        Ok(IdempotencyRecord {
            request_hash: r.try_get("request_hash")?,
            operation_id: r.try_get("background_operation_id")?,
        })
    })
    .transpose()
}

/// Remembers a key; false if another request stored it first.
pub async fn remember_idempotency_key(
    tx: &mut Tx,
    key: &str,
    hash: &str,
    operation_id: &str,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO idempotency_keys (idempotency_key, request_hash, background_operation_id, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(key)
    .bind(hash)
    .bind(operation_id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(r.rows_affected() == 1)
}
