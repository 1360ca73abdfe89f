//! The SOQL `query` resource: `GET /services/data/v{ver}/query?q=…` (also `/query/`, as
//! simple-salesforce and rustforce send it).
//!
//! [`parse`] reads the text; this module resolves names against the store's schema and
//! answers Salesforce's error codes; the store turns the resolved query into SQL with every
//! literal bound. The answer is `{"totalSize", "done", "records"}` with each record shaped
//! as the sObject resource shapes it, parents nested under their relationship name.

mod parse;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
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

/// Records in one answer, Salesforce's default batch size. There is no `queryMore`
/// cursor: a larger result answers its first batch with `done: false`.
pub const MAX_RECORDS: u64 = 2000;

#[derive(Deserialize)]
pub struct QueryParams {
    q: Option<String>,
}

pub async fn query(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<QueryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(version) = path?;
    let version = ApiVersion::parse(&version)?;
    // (the Query extractor decodes form-style, so `+` is already a space here)
    let Query(params) = params?;
    let text = params
        .q
        .as_deref()
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| malformed("A query string has to be specified"))?;
    let soql = parse::parse(text).map_err(|e| syntax(text, &e))?;
    let query = resolve(&soql)?;
    let page = store::run(&state.db, &query, MAX_RECORDS).await?;
    let records: Vec<Value> = page
        .rows
        .iter()
        .map(|row| render_row(row, &query.select, version))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"totalSize": page.total_size, "done": page.done, "records": records}),
    ))
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
            let mut any = Vec::with_capacity(values.len());
            for value in values {
                any.push(match literal(value)? {
                    None => column.is_null(false),
                    Some(lit) => column
                        .compare(store::Op::Eq, lit)
                        .map_err(|m| mismatch(&column, m))?,
                });
            }
            Filter::Or(any)
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
