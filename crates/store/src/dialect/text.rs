//! Ordering and comparing text by code point.
//!
//! Salesforce orders text by code point (of the upper-cased text). That is SQLite's default;
//! PostgreSQL would use the database's locale unless told otherwise.

use crate::Backend;

/// `expr`, compared by code point on either backend.
pub fn by_code_point(backend: Backend, expr: String) -> String {
    match backend {
        Backend::Postgres => format!("{expr} COLLATE \"C\""),
        Backend::Sqlite => expr,
    }
}
