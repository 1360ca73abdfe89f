//! The queue's two dialect pieces: how a claim takes rows, and how an enqueue wakes other
//! processes.

use crate::Backend;

/// The claim statement: `pick` selects the ids to claim, `set` is the `SET …` that claims
/// them, `guard` re-checks on SQLite what `pick` required, and `returning` lists the
/// claimed columns (unqualified).
///
/// On PostgreSQL the picked rows are locked with `FOR UPDATE SKIP LOCKED`, so two workers
/// never claim one row and neither waits for the other. SQLite runs one writer at a time,
/// so the select and the update cannot interleave.
pub fn claim(backend: Backend, pick: &str, set: &str, guard: &str, returning: &[&str]) -> String {
    match backend {
        Backend::Postgres => {
            // `picked` has an `id` too, so the table's columns are qualified.
            let returning = returning
                .iter()
                .map(|c| format!("background_operations.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "WITH picked AS ({pick} FOR UPDATE SKIP LOCKED) \
                 UPDATE background_operations {set} FROM picked \
                 WHERE background_operations.id = picked.id RETURNING {returning}"
            )
        }
        Backend::Sqlite => format!(
            "UPDATE background_operations {set} WHERE id IN ({pick}) AND {guard} RETURNING {}",
            returning.join(", ")
        ),
    }
}

/// The enqueue statement: `insert` as is on SQLite; on PostgreSQL wrapped so that the same
/// statement sends a `NOTIFY` on the channel bound as parameter `$channel` (delivered only
/// if the transaction commits). The Any driver cannot decode PostgreSQL's `void`, so the
/// wrapper answers a count.
pub fn insert_and_notify(backend: Backend, insert: &str, channel: usize) -> String {
    match backend {
        Backend::Postgres => format!(
            "WITH op AS ({insert} RETURNING id) \
             SELECT CAST(COUNT(*) AS BIGINT) FROM op, (SELECT pg_notify(${channel}, '')) AS n"
        ),
        Backend::Sqlite => insert.to_string(),
    }
}

/// Whether the enqueue statement of [`insert_and_notify`] takes the channel parameter.
pub fn notifies(backend: Backend) -> bool {
    backend == Backend::Postgres
}
