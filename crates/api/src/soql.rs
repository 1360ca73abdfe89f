//! The SOQL `query` resource: `GET /services/data/v{ver}/query?q=…` (also `/query/`, as
//! simple-salesforce and rustforce send it), or `POST` with the form body `q=…` for a text
//! too long for a URL. The parser bounds the text (see [`parse`]'s constants).
//!
//! [`parse`] reads the text; this module resolves names against the store's schema and
//! answers Salesforce's error codes; the store turns the resolved query into SQL with every
//! literal bound. The answer is `{"totalSize", "done", "records"}` with each record shaped
//! as the sObject resource shapes it, parents nested under their relationship name. An
//! answer larger than one batch (2000 records, or `Sforce-Query-Options: batchSize=N`)
//! also carries `nextRecordsUrl`, `…/query/{locator}`, which answers the next batch.

mod parse;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use refunds_domain::ObjectType;
use refunds_store::query::{
    self as store, Column, Filter, Literal, Mismatch, Number, Order, Relationship, Row,
};
use refunds_store::schema::{object_def, ObjectDef};
use refunds_store::FieldKind;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use self::parse::{Expr, Lit, Soql, SyntaxError};
use crate::error::{json_response, ApiError};
use crate::render;
use crate::version::ApiVersion;
use crate::AppState;

/// Records in one answer unless the client asks for fewer: Salesforce's default batch,
/// and the largest a client may ask for.
pub const MAX_BATCH: u64 = 2000;
/// The smallest batch a client may ask for with `Sforce-Query-Options: batchSize=N`.
pub const MIN_BATCH: u64 = 200;

#[derive(Deserialize)]
pub struct QueryParams {
    q: Option<String>,
}

/// `…/query?q=` (also `/query/` and `/queryAll`: nothing here is ever deleted, so both
/// see the same records).
pub async fn query(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<QueryParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(version) = path?;
    let version = ApiVersion::parse(&version)?;
    // (the Query extractor decodes form-style, so `+` is already a space here)
    let Query(params) = params?;
    first_batch(&state, version, &params, &headers).await
}

/// The first batch of the query `q` names, whether it came in the URL or in a form body.
async fn first_batch(
    state: &AppState,
    version: ApiVersion,
    params: &QueryParams,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let text = params
        .q
        .as_deref()
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| malformed("A query string has to be specified"))?;
    let batch = batch_size(headers)?;
    answer(
        state,
        version,
        Cursor {
            text,
            offset: 0,
            batch,
        },
    )
    .await
}

/// `POST …/query` with a form body `q=…`: the same query, for texts whose URL would pass
/// the request-line limit (65,534 bytes); the text itself may have up to
/// [`parse::MAX_TEXT_CHARS`] characters either way.
pub async fn query_posted(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    form: Result<axum::Form<QueryParams>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ApiError> {
    let Path(version) = path?;
    let version = ApiVersion::parse(&version)?;
    let axum::Form(params) = form.map_err(|e| {
        malformed(format!(
            "The body must be a form with the query as q: {}",
            e.body_text()
        ))
    })?;
    first_batch(&state, version, &params, &headers).await
}

/// `…/query/{locator}`: the next batch of an earlier answer (its `nextRecordsUrl`).
pub async fn query_more(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((version, locator)) = path?;
    let version = ApiVersion::parse(&version)?;
    let decoded = Cursor::decode(&locator)
        .ok_or_else(|| ApiError::bad_request("INVALID_QUERY_LOCATOR", "invalid query locator"))?;
    let cursor = Cursor {
        text: &decoded.0,
        offset: decoded.1,
        batch: decoded.2,
    };
    answer(&state, version, cursor).await
}

/// Where a batch starts. The locator carries the query itself (there is no server-side
/// cursor to expire or to share between processes): each batch runs the query again and
/// skips the rows already answered, in the query's order made total by `Id`.
struct Cursor<'a> {
    text: &'a str,
    offset: u64,
    batch: u64,
}

impl Cursor<'_> {
    /// `01g` + base64url(`{batch}:{query}`) + `-{offset}`: one path segment, shaped like
    /// Salesforce's locators (`01g…-2000`), which clients take apart at the last `/`.
    fn locator(&self) -> String {
        let payload = format!("{}:{}", self.batch, self.text);
        format!("01g{}-{}", URL_SAFE_NO_PAD.encode(payload), self.offset)
    }

    /// The query, the offset and the batch size of a locator.
    fn decode(locator: &str) -> Option<(String, u64, u64)> {
        let (payload, offset) = locator.strip_prefix("01g")?.rsplit_once('-')?;
        let offset = digits(offset)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        let (batch, text) = payload.split_once(':')?;
        let batch = digits(batch).filter(|b| (MIN_BATCH..=MAX_BATCH).contains(b))?;
        Some((text.to_string(), offset, batch))
    }
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `Sforce-Query-Options: batchSize=N` asks for smaller batches; as on Salesforce, the
/// size is kept within 200..=2000. Other options are ignored; a size that is not a whole
/// number is refused.
fn batch_size(headers: &HeaderMap) -> Result<u64, ApiError> {
    let Some(options) = headers.get("sforce-query-options") else {
        return Ok(MAX_BATCH);
    };
    let refuse = || malformed("Sforce-Query-Options: batchSize must be a whole number");
    let options = options.to_str().map_err(|_| refuse())?;
    for option in options.split(',') {
        let Some((name, value)) = option.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("batchSize") {
            let size = digits(value.trim()).ok_or_else(refuse)?;
            return Ok(size.clamp(MIN_BATCH, MAX_BATCH));
        }
    }
    Ok(MAX_BATCH)
}

async fn answer(
    state: &AppState,
    version: ApiVersion,
    cursor: Cursor<'_>,
) -> Result<Response, ApiError> {
    let soql = parse::parse(cursor.text).map_err(|e| syntax(cursor.text, &e))?;
    let query = resolve(&soql)?;
    let page = store::run(&state.db, &query, cursor.offset, cursor.batch).await?;
    let records: Vec<Value> = page
        .rows
        .iter()
        .map(|row| render_row(row, &query.select, version))
        .collect();
    let mut body = Map::new();
    body.insert("totalSize".into(), json!(page.total_size));
    body.insert("done".into(), json!(page.done));
    if !page.done {
        let next = Cursor {
            offset: cursor.offset.saturating_add(cursor.batch),
            ..cursor
        };
        body.insert(
            "nextRecordsUrl".into(),
            json!(format!(
                "/services/data/{}/query/{}",
                version.segment(),
                next.locator()
            )),
        );
    }
    body.insert("records".into(), Value::Array(records));
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("MALFORMED_QUERY", message)
}

/// Salesforce's position line, without echoing the query back.
fn syntax(text: &str, e: &SyntaxError) -> ApiError {
    let before = text.get(..e.at).unwrap_or(text);
    let row = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    malformed(format!("ERROR at Row:{row}:Column:{column}\n{}", e.message))
}

fn invalid_field(message: String) -> ApiError {
    ApiError::bad_request("INVALID_FIELD", message)
}

fn resolve(soql: &Soql) -> Result<store::Query, ApiError> {
    let ty = ObjectType::from_api_name(&soql.object.text).ok_or_else(|| {
        ApiError::bad_request(
            "INVALID_TYPE",
            format!("sObject type '{}' is not supported", soql.object.text),
        )
    })?;
    let def = object_def(ty);
    let mut select: Vec<Column> = Vec::with_capacity(soql.select.len());
    for path in &soql.select {
        let column = column(def, path)?;
        if select.iter().any(|c| c.same(&column)) {
            return Err(malformed(format!(
                "duplicate field selected: {}",
                label(&column)
            )));
        }
        select.push(column);
    }
    let filter = soql.filter.as_ref().map(|e| filter(def, e)).transpose()?;
    let order = match &soql.order {
        Some((path, descending)) => Some(Order {
            column: column(def, path)?,
            descending: *descending,
        }),
        None => None,
    };
    Ok(store::Query {
        object: def,
        select,
        filter,
        order,
        limit: soql.limit,
    })
}

fn column(def: &'static ObjectDef, path: &parse::Path) -> Result<Column, ApiError> {
    let field = &path.field.text;
    let Some(rel) = &path.relationship else {
        return Column::own(def, field).ok_or_else(|| {
            invalid_field(format!("No such column '{field}' on entity '{}'", def.ty))
        });
    };
    let relationship = Relationship::find(def, &rel.text).ok_or_else(|| {
        invalid_field(format!(
            "Didn't understand relationship '{}' in field path",
            rel.text
        ))
    })?;
    Column::via(relationship, field).ok_or_else(|| {
        invalid_field(format!(
            "No such column '{field}' on entity '{}'",
            relationship.parent.ty
        ))
    })
}

/// `Relationship.Field` or `Field`, spelled as the schema spells it.
fn label(column: &Column) -> String {
    match column.relationship() {
        Some(rel) => format!("{}.{}", rel.name, column.field().name),
        None => column.field().name.to_string(),
    }
}

fn filter(def: &'static ObjectDef, expr: &Expr) -> Result<Filter, ApiError> {
    Ok(match expr {
        Expr::And(parts) => Filter::And(
            parts
                .iter()
                .map(|p| filter(def, p))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Or(parts) => Filter::Or(
            parts
                .iter()
                .map(|p| filter(def, p))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Compare { path, op, value } => {
            let column = column(def, path)?;
            match literal(value)? {
                None => match op {
                    store::Op::Eq => column.is_null(false),
                    store::Op::Ne => column.is_null(true),
                    _ => {
                        return Err(malformed(format!(
                            "null can only be compared with = or != (field '{}')",
                            label(&column)
                        )))
                    }
                },
                Some(lit) => column.compare(*op, lit).map_err(|m| mismatch(&column, m))?,
            }
        }
        // `f IN (a, b)` is `f = a OR f = b`, null included as `f = null`.
        Expr::In { path, values } => {
            let column = column(def, path)?;
            let mut literals = Vec::with_capacity(values.len());
            let mut null = false;
            for value in values {
                match literal(value)? {
                    None => null = true,
                    Some(lit) => literals.push(lit),
                }
            }
            let listed = column.one_of(literals).map_err(|m| mismatch(&column, m))?;
            if null {
                Filter::Or(vec![listed, column.is_null(false)])
            } else {
                listed
            }
        }
    })
}

/// The literal for the store; `None` for null.
fn literal(lit: &Lit) -> Result<Option<Literal>, ApiError> {
    Ok(Some(match lit {
        Lit::Null => return Ok(None),
        Lit::Bool(b) => Literal::Boolean(*b),
        Lit::Text(s) => Literal::Text(s.clone()),
        Lit::DateTime(ms) => Literal::DateTime(*ms),
        Lit::Number(text) => Literal::Number(
            Number::parse(text).ok_or_else(|| malformed(format!("number out of range: {text}")))?,
        ),
    }))
}

/// Salesforce's wording for a literal of the wrong type.
fn mismatch(column: &Column, m: Mismatch) -> ApiError {
    match m {
        Mismatch::InvalidId(value) => ApiError::bad_request(
            "INVALID_QUERY_FILTER_OPERATOR",
            format!("invalid ID field: {value}"),
        ),
        Mismatch::Type(kind) => {
            let (wanted, quoted) = match kind {
                FieldKind::Id | FieldKind::Reference(_) => ("id", true),
                FieldKind::Text | FieldKind::Picklist(_) => ("string", true),
                FieldKind::Money => ("double", false),
                FieldKind::Int => ("integer", false),
                FieldKind::DateTime => ("dateTime", false),
            };
            let should = if quoted { "should" } else { "should not" };
            malformed(format!(
                "value of filter criterion for field '{}' must be of type {wanted} and {should} be enclosed in quotes",
                label(column)
            ))
        }
    }
}

/// A record as the sObject resource renders it, narrowed to the SELECT list in its
/// order; a parent's fields nest under the relationship name (null without a parent).
fn render_row(row: &Row, select: &[Column], version: ApiVersion) -> Value {
    let own = render::record(&row.record, version);
    let mut out = Map::new();
    out.insert("attributes".into(), own["attributes"].clone());
    for column in select {
        let Some(rel) = column.relationship() else {
            let name = column.field().name;
            out.insert(name.into(), own[name].clone());
            continue;
        };
        if out.contains_key(rel.name) {
            continue;
        }
        let parent = row
            .parents
            .iter()
            .find(|(r, _)| r.same(&rel))
            .and_then(|(_, record)| record.as_ref());
        let nested = match parent {
            None => Value::Null,
            Some(record) => {
                let rendered = render::record(record, version);
                let mut nested = Map::new();
                nested.insert("attributes".into(), rendered["attributes"].clone());
                for c in select {
                    if c.relationship().is_some_and(|r| r.same(&rel)) {
                        let name = c.field().name;
                        nested.insert(name.into(), rendered[name].clone());
                    }
                }
                Value::Object(nested)
            }
        };
        out.insert(rel.name.into(), nested);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests;
