//! Filtered reads over one object and its parents: the storage half of the SOQL `query`
//! resource.
//!
//! The API parses SOQL and resolves names; this module owns what a comparison means in
//! storage terms (ids in their 18-char form, money as minor units of each row's currency,
//! datetimes as epoch milliseconds) and turns a [`Query`] into one SELECT. That SELECT's
//! text holds only names from [`crate::schema`], aliases and keywords of our own, and `$n`
//! placeholders: every value — the client's literals and our own constants alike — is
//! bound, so no request text can ever become SQL.

mod number;
mod sql;

use refunds_domain::SfId;
use sqlx::any::AnyRow;
use sqlx::Row as _;

use crate::records::{decode, Record, Value};
use crate::schema::{object_def, FieldDef, FieldKind, ObjectDef};
use crate::{Db, Result, StoreError};

pub use number::Number;
use sql::{bound, compile, Compiled};

/// A parent reached through a reference field: `OrderPaymentSummary` via
/// `OrderPaymentSummaryId`.
#[derive(Clone, Copy, Debug)]
pub struct Relationship {
    pub name: &'static str,
    pub field: &'static FieldDef,
    pub parent: &'static ObjectDef,
}

impl Relationship {
    /// The relationship named `name` (case-insensitive) on `def`: a reference field
    /// spelled `{name}Id`, as Salesforce derives relationship names of standard fields.
    pub fn find(def: &'static ObjectDef, name: &str) -> Option<Relationship> {
        def.fields.iter().find_map(|field| {
            let FieldKind::Reference(ty) = field.kind else {
                return None;
            };
            let rel = field.name.strip_suffix("Id")?;
            rel.eq_ignore_ascii_case(name).then(|| Relationship {
                name: rel,
                field,
                parent: object_def(ty),
            })
        })
    }

    pub fn same(&self, other: &Relationship) -> bool {
        std::ptr::eq(self.field, other.field)
    }
}

/// A field of the queried object, or of one of its parents.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    relationship: Option<Relationship>,
    field: &'static FieldDef,
}

impl Column {
    pub fn own(def: &'static ObjectDef, name: &str) -> Option<Column> {
        def.field(name).map(|field| Column {
            relationship: None,
            field,
        })
    }

    pub fn via(relationship: Relationship, name: &str) -> Option<Column> {
        relationship.parent.field(name).map(|field| Column {
            relationship: Some(relationship),
            field,
        })
    }

    pub fn field(&self) -> &'static FieldDef {
        self.field
    }

    pub fn relationship(&self) -> Option<Relationship> {
        self.relationship
    }

    /// The same field reached the same way.
    pub fn same(&self, other: &Column) -> bool {
        std::ptr::eq(self.field, other.field)
            && match (&self.relationship, &other.relationship) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same(b),
                _ => false,
            }
    }

    pub fn is_null(self, negated: bool) -> Filter {
        Filter::Null {
            column: self,
            negated,
        }
    }

    /// `self op literal`, with the literal converted to the field's stored form; fails
    /// when the literal's type does not fit the field.
    pub fn compare(self, op: Op, literal: Literal) -> Result<Filter, Mismatch> {
        Ok(Filter::Compare(Comparison {
            column: self,
            op,
            value: self.typed(literal)?,
        }))
    }

    /// `self IN (literals)`: equal to any of them (none: matches nothing). Compiled as one
    /// flat SQL `IN` list, so its length adds nothing to SQLite's expression depth.
    pub fn one_of(self, literals: Vec<Literal>) -> Result<Filter, Mismatch> {
        let values = literals
            .into_iter()
            .map(|l| self.typed(l).map(Typed))
            .collect::<Result<_, _>>()?;
        Ok(Filter::In {
            column: self,
            values,
        })
    }

    fn typed(self, literal: Literal) -> Result<TypedValue, Mismatch> {
        Ok(match (self.field.kind, literal) {
            (FieldKind::Id | FieldKind::Reference(_), Literal::Text(s)) => match SfId::parse(&s) {
                // Stored ids are 18 chars; a 15-char id names the same record.
                Ok(id) => TypedValue::Id(id.into_string()),
                Err(_) => return Err(Mismatch::InvalidId(s)),
            },
            (FieldKind::Text | FieldKind::Picklist(_), Literal::Text(s)) => TypedValue::Text(s),
            (FieldKind::Money, Literal::Number(n)) => TypedValue::Money(n),
            (FieldKind::Int, Literal::Number(n)) => TypedValue::Whole(n),
            (FieldKind::DateTime, Literal::DateTime(ms)) => TypedValue::Instant(ms),
            (kind, _) => return Err(Mismatch::Type(kind)),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A literal as the query wrote it, before it meets a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Literal {
    Text(String),
    Number(Number),
    /// Milliseconds since the Unix epoch.
    DateTime(i64),
    Boolean(bool),
}

/// Why a literal cannot be compared with a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The field holds values of this kind; the literal is of another type.
    Type(FieldKind),
    /// The field holds ids and the literal is not one.
    InvalidId(String),
}

/// A literal converted to its field's stored form.
#[derive(Clone, Debug)]
pub struct Typed(TypedValue);

#[derive(Clone, Debug)]
enum TypedValue {
    /// Compared case-insensitively, as SOQL compares strings.
    Text(String),
    Id(String),
    Instant(i64),
    Whole(Number),
    /// Scaled to minor units with each row's currency.
    Money(Number),
}

/// A comparison whose literal already fits its field (built by [`Column::compare`]).
#[derive(Clone, Debug)]
pub struct Comparison {
    column: Column,
    op: Op,
    value: TypedValue,
}

#[derive(Clone, Debug)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Null {
        column: Column,
        negated: bool,
    },
    Compare(Comparison),
    /// Equal to one of the values (built by [`Column::one_of`]).
    In {
        column: Column,
        values: Vec<Typed>,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct Order {
    pub column: Column,
    pub descending: bool,
}

/// A resolved query over `object`; columns must belong to it (or to its parents).
#[derive(Clone, Debug)]
pub struct Query {
    pub object: &'static ObjectDef,
    pub select: Vec<Column>,
    pub filter: Option<Filter>,
    pub order: Option<Order>,
    pub limit: Option<u64>,
}

/// One answer row: the record with its selected fields (and always its Id), and each
/// parent the SELECT list reaches (`None` when the reference is empty).
#[derive(Clone, Debug)]
pub struct Row {
    pub record: Record,
    pub parents: Vec<(Relationship, Option<Record>)>,
}

/// At most one batch of an answer.
#[derive(Clone, Debug)]
pub struct Page {
    /// Every matching row (up to the query's LIMIT), also those beyond this batch.
    pub total_size: u64,
    /// Whether `rows` holds them all.
    pub done: bool,
    pub rows: Vec<Row>,
}

fn decode_row(row: &AnyRow, compiled: &Compiled) -> Result<Row> {
    let mut i = 0;
    let mut records = Vec::with_capacity(compiled.parts.len());
    for part in &compiled.parts {
        let source = &compiled.sources[part.source];
        let mut values = Vec::with_capacity(part.fields.len());
        for field in &part.fields {
            values.push((*field, decode(row, i, field.kind)?));
            i += 1;
        }
        let currency = if source.def.has_currency() {
            i += 1;
            row.try_get::<Option<String>, _>(i - 1)?
        } else {
            None
        };
        let present = values.first().is_some_and(|(_, v)| *v != Value::Null);
        let record = present.then_some(Record {
            ty: source.def.ty,
            values,
            currency,
        });
        records.push((source.relationship, record));
    }
    let mut records = records.into_iter();
    let record = records
        .next()
        .and_then(|(_, r)| r)
        .ok_or_else(|| StoreError::Corrupt("a query row without an id".into()))?;
    let parents = records
        .filter_map(|(rel, r)| rel.map(|rel| (rel, r)))
        .collect();
    Ok(Row { record, parents })
}

/// Runs `query`, answering at most `batch` rows after skipping the first `offset` (a
/// `queryMore` page). One row beyond the batch is fetched to learn whether the answer is
/// complete; only when it is not, or on a later page, are the matches counted.
pub async fn run(db: &Db, query: &Query, offset: u64, batch: u64) -> Result<Page> {
    let remaining = query.limit.map(|limit| limit.saturating_sub(offset));
    let fetch = match remaining {
        Some(left) if left <= batch => left,
        _ => batch.saturating_add(1),
    };
    let compiled = compile(query, db.backend(), fetch, offset)?;
    let rows = bound(&compiled.sql, &compiled.binds)
        .fetch_all(db.pool())
        .await?;
    let mut rows: Vec<Row> = rows
        .iter()
        .map(|r| decode_row(r, &compiled))
        .collect::<Result<_>>()?;
    let returned = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    let done = returned <= batch;
    if done && offset == 0 {
        return Ok(Page {
            total_size: returned,
            done,
            rows,
        });
    }
    rows.truncate(usize::try_from(batch).unwrap_or(usize::MAX));
    let count: i64 = bound(&compiled.count_sql, &compiled.binds[..compiled.count_binds])
        .fetch_one(db.pool())
        .await?
        .try_get(0)?;
    let count = u64::try_from(count).unwrap_or(0);
    Ok(Page {
        total_size: query.limit.map_or(count, |limit| count.min(limit)),
        done,
        rows,
    })
}
