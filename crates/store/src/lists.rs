//! The one place `IN` lists and placeholder lists are spelled.

use sqlx::any::AnyRow;

use crate::{Result, Tx};

/// `$first, $first+1, …`: `n` numbered placeholders.
pub(crate) fn placeholders(first: usize, n: usize) -> impl Iterator<Item = String> {
    (first..first + n).map(|i| format!("${i}"))
}

/// `expr IN (a, b, …)` over `items` (placeholders already bound, or literals from the
/// schema). The caller makes sure there is at least one item: `IN ()` is not SQL.
pub(crate) fn in_list<I, S>(expr: &str, items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut sql = format!("{expr} IN (");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(item.as_ref());
    }
    sql.push(')');
    sql
}

/// The rows `select` (`SELECT … FROM table`) reads whose `id` is one of `ids`, followed by
/// `then` (an `ORDER BY`, or nothing), in the caller's transaction; none without ids.
pub(crate) async fn rows_with_ids(
    tx: &mut Tx,
    select: &str,
    then: &str,
    ids: &[String],
) -> Result<Vec<AnyRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "{select} WHERE {}{then}",
        in_list("id", placeholders(1, ids.len()))
    );
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(id.as_str());
    }
    Ok(query.fetch_all(tx.conn()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(placeholders(3, 3).collect::<Vec<_>>(), ["$3", "$4", "$5"]);
        assert_eq!(placeholders(1, 0).count(), 0);
    }

    #[test]
    fn an_in_list_joins_its_items() {
        assert_eq!(in_list("id", placeholders(1, 2)), "id IN ($1, $2)");
        assert_eq!(in_list("UPPER(x)", ["'A'"]), "UPPER(x) IN ('A')");
    }
}
