//! Row locks.
//!
//! On PostgreSQL, a statement that decides from what it read (how much an order still has,
//! who is first in a line) locks the rows it read until its transaction ends. On SQLite the
//! store's single writer (see [`crate::db`]) already runs each transaction alone, so no
//! lock is taken and none is needed.

use crate::{Backend, Result, Tx};

/// The clause that locks what a `SELECT` reads: ` FOR UPDATE`, or nothing on SQLite.
pub fn for_update(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    }
}

/// The clause that locks only the rows of `alias` in a join: ` FOR UPDATE OF alias`, or
/// nothing on SQLite.
pub fn for_update_of(backend: Backend, alias: &str) -> String {
    match backend {
        Backend::Postgres => format!(" FOR UPDATE OF {alias}"),
        Backend::Sqlite => String::new(),
    }
}

/// Locks the row of `table` whose `column` is `key` until the transaction ends, and
/// answers whether it exists. On SQLite answers true without reading: the caller's next
/// statements find out whether the row is there.
pub(crate) async fn lock_row(tx: &mut Tx, table: &str, column: &str, key: &str) -> Result<bool> {
    if tx.backend() == Backend::Sqlite {
        return Ok(true);
    }
    Ok(sqlx::query(&format!(
        "SELECT {column} FROM {table} WHERE {column} = $1 FOR UPDATE"
    ))
    .bind(key)
    .fetch_optional(tx.conn())
    .await?
    .is_some())
}
