//! Compiling a [`Query`] into one parameterised SELECT (and its COUNT).
//!
//! Whatever the API's parser accepts must run on both databases, so the SQL's shape does not
//! grow with the query's length: an `IN` list is one flat SQL `IN (…)` (per currency
//! exponent for money), and an `AND`/`OR` chain a balanced tree of pairs, log2(n) deep.
//! SQLite limits an expression's depth to 1,000 and its parameters to 32,766; the parser's
//! bounds (500 conditions, 100 levels, 4,000 values) keep every accepted query well within.

use std::fmt::Write as _;

use sqlx::any::AnyArguments;
use sqlx::Any;

use super::number::{exponents, Scaled};
use super::{Column, Comparison, Filter, Op, Order, Query, Relationship, Typed, TypedValue};
use crate::lists::in_list;
use crate::schema::{FieldDef, FieldKind, ObjectDef};
use crate::{Backend, Result, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Bind {
    Text(String),
    Int(i64),
}

/// One table (the queried object's or a parent's) as a derived table whose columns are
/// `f{i}` for field `i` of its definition plus `cur`. Field SQL may be an expression over
/// bare column names; inside its own derived table no name is ambiguous, whatever is
/// joined to it.
pub(super) struct Source {
    alias: String,
    pub(super) def: &'static ObjectDef,
    pub(super) relationship: Option<Relationship>,
    used: Vec<usize>,
}

impl Source {
    fn new(alias: String, def: &'static ObjectDef, relationship: Option<Relationship>) -> Source {
        Source {
            alias,
            def,
            relationship,
            used: vec![0],
        }
    }

    fn use_field(&mut self, field: &'static FieldDef) -> Result<String> {
        let index = self
            .def
            .fields
            .iter()
            .position(|f| std::ptr::eq(f, field))
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "query field {} is not a field of {}",
                    field.name, self.def.ty
                ))
            })?;
        if !self.used.contains(&index) {
            self.used.push(index);
        }
        Ok(format!("{}.f{index}", self.alias))
    }

    fn derived_table(&self) -> String {
        let mut cols: Vec<String> = self
            .used
            .iter()
            .map(|&i| format!("{} AS f{i}", self.def.fields[i].sql))
            .collect();
        if self.def.has_currency() {
            cols.push("currency_iso_code AS cur".into());
        }
        format!(
            "(SELECT {} FROM {}) {}",
            cols.join(", "),
            self.def.table,
            self.alias
        )
    }
}

/// What one part of a result row holds, in SELECT-list order.
pub(super) struct Part {
    pub(super) source: usize,
    pub(super) fields: Vec<&'static FieldDef>,
}

/// A query as SQL: the rows, and their count without ORDER BY and LIMIT.
pub(super) struct Compiled {
    pub(super) sql: String,
    pub(super) count_sql: String,
    pub(super) binds: Vec<Bind>,
    pub(super) count_binds: usize,
    pub(super) parts: Vec<Part>,
    pub(super) sources: Vec<Source>,
}

struct Compiler {
    backend: Backend,
    binds: Vec<Bind>,
    sources: Vec<Source>,
    /// Placeholders of the currency groups' codes, bound on first use.
    currency_groups: Option<Vec<(u32, Vec<String>)>>,
}

const FALSE: &str = "(1 = 0)";
const TRUE: &str = "(1 = 1)";

impl Compiler {
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    fn source_of(&mut self, column: &Column) -> Result<usize> {
        let Some(rel) = column.relationship else {
            return Ok(0);
        };
        if let Some(i) = self
            .sources
            .iter()
            .position(|s| s.relationship.is_some_and(|r| r.same(&rel)))
        {
            return Ok(i);
        }
        self.sources[0].use_field(rel.field)?;
        let alias = format!("p{}", self.sources.len());
        self.sources.push(Source::new(alias, rel.parent, Some(rel)));
        Ok(self.sources.len() - 1)
    }

    /// The column's SQL and its row's currency column.
    fn column(&mut self, column: &Column) -> Result<(String, String)> {
        let source = self.source_of(column)?;
        let expr = self.sources[source].use_field(column.field)?;
        Ok((expr, format!("{}.cur", self.sources[source].alias)))
    }

    /// Salesforce orders text by code point (of the upper-cased text).
    fn binary(&self, expr: String) -> String {
        crate::dialect::text::by_code_point(self.backend, expr)
    }

    fn groups(&mut self) -> Vec<(u32, Vec<String>)> {
        if let Some(groups) = &self.currency_groups {
            return groups.clone();
        }
        let groups: Vec<(u32, Vec<String>)> = exponents()
            .groups
            .iter()
            .map(|(exponent, codes)| {
                let params: Vec<String> = codes
                    .iter()
                    .map(|c| self.bind(Bind::Text(c.clone())))
                    .collect();
                (*exponent, params)
            })
            .collect();
        self.currency_groups = Some(groups.clone());
        groups
    }

    /// `CASE` over the currency groups of the row's currency, one branch per exponent.
    fn per_currency(
        &mut self,
        cur: &str,
        mut branch: impl FnMut(&mut Self, u32) -> String,
    ) -> String {
        let mut sql = String::from("(CASE");
        for (exponent, params) in self.groups() {
            let then = branch(self, exponent);
            let _ = write!(sql, " WHEN {} THEN {then}", in_list(cur, params));
        }
        let otherwise = branch(self, exponents().default);
        let _ = write!(sql, " ELSE {otherwise} END)");
        sql
    }

    fn filter(&mut self, filter: &Filter) -> Result<String> {
        Ok(match filter {
            Filter::And(parts) | Filter::Or(parts) if parts.is_empty() => {
                if matches!(filter, Filter::And(_)) {
                    TRUE
                } else {
                    FALSE
                }
                .to_string()
            }
            Filter::And(parts) | Filter::Or(parts) => {
                let joiner = if matches!(filter, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = parts
                    .iter()
                    .map(|p| self.filter(p))
                    .collect::<Result<_>>()?;
                balanced(&parts, joiner)
            }
            Filter::In { column, values } => self.one_of(column, values)?,
            Filter::Null { column, negated } => {
                let (expr, _) = self.column(column)?;
                let not = if *negated { "NOT " } else { "" };
                format!("{expr} IS {not}NULL")
            }
            Filter::Compare(c) => self.comparison(c)?,
        })
    }

    fn comparison(&mut self, c: &Comparison) -> Result<String> {
        let (expr, cur) = self.column(&c.column)?;
        let op = c.op;
        let plain = match &c.value {
            TypedValue::Text(s) => {
                let p = self.bind(Bind::Text(s.clone()));
                let left = format!("UPPER({expr})");
                let left = if matches!(op, Op::Eq | Op::Ne) {
                    left
                } else {
                    self.binary(left)
                };
                format!("{left} {} UPPER({p})", op.sql())
            }
            TypedValue::Id(id) => {
                let p = self.bind(Bind::Text(id.clone()));
                let left = if matches!(op, Op::Eq | Op::Ne) {
                    expr.clone()
                } else {
                    self.binary(expr.clone())
                };
                format!("{left} {} {p}", op.sql())
            }
            TypedValue::Instant(ms) => {
                let p = self.bind(Bind::Int(*ms));
                format!("{expr} {} {p}", op.sql())
            }
            TypedValue::Whole(n) => return Ok(self.numeric(&expr, op, n.scaled(0))),
            TypedValue::Money(n) => {
                let n = *n;
                return Ok(self.per_currency(&cur, |this, exponent| {
                    this.numeric(&expr, op, n.scaled(exponent))
                }));
            }
        };
        Ok(or_null(plain, &expr, op))
    }

    /// `column IN (…)` as flat SQL `IN` lists: one for text, ids and datetimes; for money
    /// one per currency exponent, of the values that are whole minor units there.
    fn one_of(&mut self, column: &Column, values: &[Typed]) -> Result<String> {
        let (expr, cur) = self.column(column)?;
        let mut texts = Vec::new();
        let mut ids = Vec::new();
        let mut instants = Vec::new();
        let mut wholes = Vec::new();
        let mut money = Vec::new();
        for Typed(value) in values {
            match value {
                TypedValue::Text(s) => texts.push(s.clone()),
                TypedValue::Id(s) => ids.push(s.clone()),
                TypedValue::Instant(ms) => instants.push(*ms),
                TypedValue::Whole(n) => wholes.push(*n),
                TypedValue::Money(n) => money.push(*n),
            }
        }
        let mut any = Vec::new();
        if !texts.is_empty() {
            let params: Vec<String> = texts
                .into_iter()
                .map(|s| format!("UPPER({})", self.bind(Bind::Text(s))))
                .collect();
            any.push(in_list(&format!("UPPER({expr})"), params));
        }
        if !ids.is_empty() {
            let params: Vec<String> = ids.into_iter().map(|s| self.bind(Bind::Text(s))).collect();
            any.push(in_list(&expr, params));
        }
        let exact = |values: &[super::Number], exponent: u32| -> Vec<i64> {
            values
                .iter()
                .filter_map(|n| match n.scaled(exponent) {
                    Scaled::Exact(minor) => Some(minor),
                    _ => None,
                })
                .collect()
        };
        instants.extend(exact(&wholes, 0));
        if !instants.is_empty() {
            any.push(self.int_list(&expr, instants));
        }
        if !money.is_empty() {
            any.push(self.per_currency(&cur, |this, exponent| {
                this.int_list(&expr, exact(&money, exponent))
            }));
        }
        Ok(if any.is_empty() {
            FALSE.to_string()
        } else {
            balanced(&any, " OR ")
        })
    }

    fn int_list(&mut self, expr: &str, values: Vec<i64>) -> String {
        if values.is_empty() {
            return FALSE.to_string();
        }
        let params: Vec<String> = values
            .into_iter()
            .map(|n| self.bind(Bind::Int(n)))
            .collect();
        in_list(expr, params)
    }

    /// `expr op value` for an integer column and a value that may fall between integers
    /// or outside i64.
    fn numeric(&mut self, expr: &str, op: Op, value: Scaled) -> String {
        let never_equal = |op: Op| if op == Op::Ne { TRUE } else { FALSE }.to_string();
        match value {
            Scaled::Exact(n) => {
                let p = self.bind(Bind::Int(n));
                or_null(format!("{expr} {} {p}", op.sql()), expr, op)
            }
            Scaled::Between(floor) => match op {
                Op::Eq | Op::Ne => never_equal(op),
                Op::Lt | Op::Le => format!("{expr} <= {}", self.bind(Bind::Int(floor))),
                Op::Gt | Op::Ge => format!("{expr} > {}", self.bind(Bind::Int(floor))),
            },
            Scaled::Above => match op {
                Op::Eq | Op::Ne => never_equal(op),
                Op::Lt | Op::Le => format!("{expr} IS NOT NULL"),
                Op::Gt | Op::Ge => FALSE.to_string(),
            },
            Scaled::Below => match op {
                Op::Eq | Op::Ne => never_equal(op),
                Op::Lt | Op::Le => FALSE.to_string(),
                Op::Gt | Op::Ge => format!("{expr} IS NOT NULL"),
            },
        }
    }

    /// ORDER BY keys. Nulls sort first in both directions, as in SOQL; text sorts by its
    /// upper-cased code points; money by its value (minor units scaled by each row's
    /// exponent, as quotient and remainder so that no product can overflow).
    fn order(&mut self, order: &Order) -> Result<Vec<String>> {
        let (expr, cur) = self.column(&order.column)?;
        let dir = if order.descending { "DESC" } else { "ASC" };
        let mut keys = vec![format!("CASE WHEN {expr} IS NULL THEN 0 ELSE 1 END")];
        match order.column.field.kind {
            FieldKind::Text | FieldKind::Picklist(_) => {
                keys.push(format!("{} {dir}", self.binary(format!("UPPER({expr})"))));
            }
            FieldKind::Id | FieldKind::Reference(_) => {
                keys.push(format!("{} {dir}", self.binary(expr)));
            }
            FieldKind::Int | FieldKind::DateTime => keys.push(format!("{expr} {dir}")),
            FieldKind::Money => {
                let max = exponents().max;
                let unit = self.per_currency(&cur, |this, e| {
                    this.bind(Bind::Int(10i64.checked_pow(e).unwrap_or(i64::MAX)))
                });
                let spread = self.per_currency(&cur, |this, e| {
                    this.bind(Bind::Int(10i64.checked_pow(max - e).unwrap_or(i64::MAX)))
                });
                keys.push(format!("{expr} / {unit} {dir}"));
                keys.push(format!("({expr} % {unit}) * {spread} {dir}"));
            }
        }
        Ok(keys)
    }
}

/// `parts` joined by `joiner` as a balanced tree of parenthesised pairs: a chain of n
/// conditions nests log2(n) deep instead of n, under SQLite's expression-depth limit
/// (1000) and PostgreSQL's stack for whatever the parser accepts.
fn balanced(parts: &[String], joiner: &str) -> String {
    match parts {
        [] => TRUE.to_string(),
        [one] => one.clone(),
        _ => {
            let (left, right) = parts.split_at(parts.len() / 2);
            format!(
                "({}{joiner}{})",
                balanced(left, joiner),
                balanced(right, joiner)
            )
        }
    }
}

/// SOQL's `!=` keeps rows whose field is null (null is a value there, not "unknown").
fn or_null(condition: String, expr: &str, op: Op) -> String {
    if op == Op::Ne {
        format!("({condition} OR {expr} IS NULL)")
    } else {
        condition
    }
}

pub(super) fn compile(
    query: &Query,
    backend: Backend,
    limit: u64,
    offset: u64,
) -> Result<Compiled> {
    let mut c = Compiler {
        backend,
        binds: Vec::new(),
        sources: vec![Source::new("t0".into(), query.object, None)],
        currency_groups: None,
    };
    // Parts of the answer: the record's own fields (Id first, for its URL), then one part
    // per parent that the SELECT list reaches, in order of first mention.
    let mut parts = vec![Part {
        source: 0,
        fields: vec![&query.object.fields[0]],
    }];
    for column in &query.select {
        let source = c.source_of(column)?;
        let part = match parts.iter().position(|p| p.source == source) {
            Some(i) => i,
            None => {
                let parent = c.sources[source].def;
                parts.push(Part {
                    source,
                    fields: vec![&parent.fields[0]],
                });
                parts.len() - 1
            }
        };
        if !parts[part]
            .fields
            .iter()
            .any(|f| std::ptr::eq(*f, column.field))
        {
            parts[part].fields.push(column.field);
        }
    }
    let mut select = Vec::new();
    for part in &parts {
        for field in &part.fields {
            select.push(c.sources[part.source].use_field(field)?);
        }
        if c.sources[part.source].def.has_currency() {
            select.push(format!("{}.cur", c.sources[part.source].alias));
        }
    }
    let condition = match &query.filter {
        Some(f) => c.filter(f)?,
        None => TRUE.to_string(),
    };
    let count_binds = c.binds.len();
    let mut keys = match &query.order {
        Some(order) => c.order(order)?,
        None => Vec::new(),
    };
    // Ids grow with creation time: the final key makes every order total and repeatable.
    keys.push(c.binary("t0.f0".into()));
    let limit = c.bind(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    let offset = c.bind(Bind::Int(i64::try_from(offset).unwrap_or(i64::MAX)));

    let mut from = c.sources[0].derived_table();
    for source in &c.sources[1..] {
        let Some(rel) = source.relationship else {
            continue;
        };
        let index = query
            .object
            .fields
            .iter()
            .position(|f| std::ptr::eq(f, rel.field))
            .ok_or_else(|| StoreError::Corrupt(format!("{} is not a reference", rel.name)))?;
        let _ = write!(
            from,
            " LEFT JOIN {} ON {}.f0 = t0.f{index}",
            source.derived_table(),
            source.alias
        );
    }
    Ok(Compiled {
        sql: format!(
            "SELECT {} FROM {from} WHERE {condition} ORDER BY {} LIMIT {limit} OFFSET {offset}",
            select.join(", "),
            keys.join(", ")
        ),
        count_sql: format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {from} WHERE {condition}"),
        binds: c.binds,
        count_binds,
        parts,
        sources: c.sources,
    })
}

pub(super) fn bound<'q>(
    sql: &'q str,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, Any, AnyArguments<'q>> {
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = match bind {
            Bind::Text(s) => query.bind(s.as_str()),
            Bind::Int(i) => query.bind(*i),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{Literal, Number};
    use crate::schema::object_def;
    use refunds_domain::{ObjectType, SfId};

    fn refund(name: &str) -> Column {
        Column::own(object_def(ObjectType::Refund), name).expect("refund field")
    }

    fn text(column: Column, op: Op, s: &str) -> Filter {
        column
            .compare(op, Literal::Text(s.into()))
            .expect("comparable")
    }

    fn query(filter: Filter) -> Query {
        Query {
            object: object_def(ObjectType::Refund),
            select: vec![refund("Id"), refund("Status")],
            filter: Some(filter),
            order: None,
            limit: None,
        }
    }

    #[test]
    fn literals_are_bound_never_spliced() {
        let hostile = "x' OR 1=1 --'; DROP TABLE refunds; --";
        let filter = Filter::Or(vec![
            text(refund("Status"), Op::Eq, hostile),
            text(refund("GatewayRefNumber"), Op::Lt, hostile),
        ]);
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let compiled = compile(&query(filter.clone()), backend, 10, 0).expect("compiles");
            assert!(!compiled.sql.contains("DROP"), "{}", compiled.sql);
            assert!(!compiled.sql.contains("1=1"), "{}", compiled.sql);
            assert!(!compiled.count_sql.contains("DROP"));
            assert_eq!(
                compiled.binds,
                vec![
                    Bind::Text(hostile.into()),
                    Bind::Text(hostile.into()),
                    Bind::Int(10),
                    Bind::Int(0)
                ]
            );
            assert_eq!(compiled.count_binds, 2);
            assert!(
                compiled.sql.contains("UPPER(t0.f4) = UPPER($1)"),
                "{}",
                compiled.sql
            );
        }
    }

    /// The deepest nesting of parentheses in `sql`.
    fn paren_depth(sql: &str) -> usize {
        let (mut depth, mut deepest) = (0usize, 0usize);
        for c in sql.chars() {
            match c {
                '(' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest
    }

    #[test]
    fn long_chains_nest_logarithmically_and_in_lists_stay_flat() {
        let chain: Vec<Filter> = (0..500)
            .map(|i| text(refund("Status"), Op::Eq, &format!("s{i}")))
            .collect();
        for filter in [Filter::Or(chain.clone()), Filter::And(chain)] {
            let compiled = compile(&query(filter), Backend::Sqlite, 10, 0).expect("compiles");
            // ⌈log2(500)⌉ = 9 levels of pairs, plus the SELECT's own parentheses
            assert!(paren_depth(&compiled.sql) <= 14, "{}", compiled.sql);
            assert_eq!(compiled.binds.len(), 502);
        }
        let values: Vec<Literal> = (0..1000).map(|i| Literal::Text(format!("v{i}"))).collect();
        let listed = refund("Status").one_of(values).expect("comparable");
        let compiled = compile(&query(listed), Backend::Postgres, 10, 0).expect("compiles");
        assert_eq!(compiled.sql.matches(" IN (").count(), 1, "{}", compiled.sql);
        assert!(paren_depth(&compiled.sql) <= 5, "{}", compiled.sql);
        assert_eq!(compiled.binds.len(), 1002);
        // Money: one list per currency exponent, each of the values exact there.
        let amounts: Vec<Literal> = ["1.5", "2", "0.001"]
            .iter()
            .map(|n| Literal::Number(Number::parse(n).expect("number")))
            .collect();
        let listed = refund("Amount").one_of(amounts).expect("comparable");
        let compiled = compile(&query(listed), Backend::Sqlite, 10, 0).expect("compiles");
        assert!(compiled.binds.contains(&Bind::Int(150)), "USD cents");
        assert!(compiled.binds.contains(&Bind::Int(2)), "JPY yen");
        assert!(
            !compiled.binds.contains(&Bind::Int(15)),
            "1.5 is no whole yen"
        );
    }

    #[test]
    fn ids_are_stored_as_18_chars_and_invalid_ids_do_not_compile() {
        let id = SfId::generate(ObjectType::OrderPaymentSummary).into_string();
        let filter = text(refund("OrderPaymentSummaryId"), Op::Eq, &id[..15]);
        let compiled = compile(&query(filter), Backend::Sqlite, 1, 0).expect("compiles");
        assert_eq!(compiled.binds[0], Bind::Text(id));
        assert_eq!(
            refund("Id")
                .compare(Op::Eq, Literal::Text("'; DROP".into()))
                .err(),
            Some(crate::query::Mismatch::InvalidId("'; DROP".into()))
        );
        assert_eq!(
            refund("Amount")
                .compare(Op::Eq, Literal::Text("5".into()))
                .err(),
            Some(crate::query::Mismatch::Type(FieldKind::Money))
        );
    }

    #[test]
    fn money_compares_per_currency_exponent() {
        let amount = refund("Amount");
        let number = Number::parse("10.5").expect("number");
        let filter = amount.compare(Op::Eq, Literal::Number(number)).expect("ok");
        let compiled = compile(&query(filter), Backend::Postgres, 5, 0).expect("compiles");
        // JPY rows: 10.5 is no whole number of yen, so `=` is false there; USD rows
        // compare with 1050 cents; BHD with 10500 fils.
        assert!(
            compiled.sql.contains("(CASE WHEN t0.cur IN ("),
            "{}",
            compiled.sql
        );
        assert!(compiled.sql.contains("THEN (1 = 0)"), "{}", compiled.sql);
        assert!(compiled.binds.contains(&Bind::Int(1050)));
        assert!(compiled.binds.contains(&Bind::Int(10_500)));
        assert!(compiled.binds.contains(&Bind::Text("JPY".into())));
        assert!(!compiled.binds.contains(&Bind::Text("USD".into())));
    }

    #[test]
    fn parents_are_joined_once_and_not_equal_keeps_nulls() {
        let def = object_def(ObjectType::PaymentGatewayLog);
        let rel = Relationship::find(def, "orderpaymentsummary").expect("relationship");
        assert_eq!(rel.name, "OrderPaymentSummary");
        let parent = Column::via(rel, "OrderSummaryId").expect("parent field");
        let message = Column::own(def, "GatewayMessage").expect("field");
        let q = Query {
            object: def,
            select: vec![Column::own(def, "Id").expect("id"), parent],
            filter: Some(Filter::And(vec![
                text(
                    parent,
                    Op::Ne,
                    &SfId::generate(ObjectType::OrderSummary).into_string(),
                ),
                text(message, Op::Ne, "x"),
            ])),
            order: Some(Order {
                column: parent,
                descending: true,
            }),
            limit: Some(3),
        };
        let compiled = compile(&q, Backend::Sqlite, 3, 0).expect("compiles");
        assert_eq!(
            compiled.sql.matches("LEFT JOIN").count(),
            1,
            "{}",
            compiled.sql
        );
        assert!(
            compiled.sql.contains("(p1.f1 <> $1 OR p1.f1 IS NULL)"),
            "{}",
            compiled.sql
        );
        assert!(
            compiled
                .sql
                .contains("ORDER BY CASE WHEN p1.f1 IS NULL THEN 0 ELSE 1 END, p1.f1 DESC, t0.f0"),
            "{}",
            compiled.sql
        );
        assert_eq!(compiled.parts.len(), 2);
        assert!(Relationship::find(def, "GatewayMessage").is_none());
    }
}
