//! SQLite's group commit: concurrent transactions share one COMMIT, every one of them is
//! durable when it hears so, a member that fails or rolls back takes only its own work
//! with it, and a failed COMMIT fails every member. (A group whose expected committer never
//! comes is tested in `db.rs`.)

use std::path::Path;
use std::time::Duration;

use refunds_store::{Db, StoreError};

async fn open(path: &Path) -> Db {
    let db = Db::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("connect");
    sqlx::query("CREATE TABLE IF NOT EXISTS t (id BIGINT PRIMARY KEY)")
        .execute(db.pool())
        .await
        .expect("table");
    db
}

async fn insert(db: &Db, id: i64) -> refunds_store::Tx {
    let mut tx = db.begin().await.expect("begin");
    sqlx::query("INSERT INTO t (id) VALUES ($1)")
        .bind(id)
        .execute(tx.raw_connection())
        .await
        .expect("insert");
    tx
}

async fn ids(db: &Db) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM t ORDER BY id")
        .fetch_all(db.pool())
        .await
        .expect("select")
}

/// Lets tasks spawned just before reach the writer's queue.
async fn let_them_queue() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writers_share_a_commit_and_all_of_them_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let db = open(&path).await;
    let before = db.group_commits();
    let first = insert(&db, 0).await;
    let tasks: Vec<_> = (1..=40)
        .map(|id| {
            let db = db.clone();
            tokio::spawn(async move { insert(&db, id).await.commit().await })
        })
        .collect();
    let_them_queue().await;
    first.commit().await.expect("first commits with the group");
    for task in tasks {
        task.await.unwrap().expect("commit");
    }
    let after = db.group_commits();
    assert_eq!(after.members - before.members, 41);
    assert!(
        after.commits - before.commits <= 2,
        "41 queued writers, {} COMMITs",
        after.commits - before.commits
    );
    db.close().await;
    // Durable: a new connection to the file sees every row.
    let reopened = open(&path).await;
    assert_eq!(ids(&reopened).await, (0..=40).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_fails_or_rolls_back_takes_only_its_own_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("g.db")).await;
    let first = insert(&db, 1).await;
    let task = |db: &Db, work: u8| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = insert(&db, i64::from(work)).await;
            match work {
                2 | 6 => tx.commit().await,
                3 => tx.rollback().await,
                4 => {
                    drop(tx); // an early return: neither commit nor rollback
                    Ok(())
                }
                _ => {
                    let duplicate = sqlx::query("INSERT INTO t (id) VALUES (1)")
                        .execute(tx.raw_connection())
                        .await;
                    assert!(duplicate.is_err(), "id 1 is taken within the group");
                    Ok(()) // dropped after the failed statement
                }
            }
        })
    };
    let tasks: Vec<_> = [2, 3, 4, 5, 6].map(|work| task(&db, work)).into();
    let_them_queue().await;
    first.commit().await.expect("commit");
    for task in tasks {
        task.await.unwrap().expect("each task ends as planned");
    }
    // Dropped members are undone by a task that inherits the gate; the next writer
    // queues behind it.
    insert(&db, 7).await.commit().await.expect("commit");
    assert_eq!(ids(&db).await, [1, 2, 6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_every_member_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("g.db")).await;
    sqlx::query(
        "CREATE TABLE child (id BIGINT PRIMARY KEY, parent BIGINT REFERENCES t (id) \
         DEFERRABLE INITIALLY DEFERRED)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let first = insert(&db, 1).await;
    let orphan = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = db.begin().await?;
            // Checked only at COMMIT: the whole group's COMMIT fails.
            sqlx::query("INSERT INTO child (id, parent) VALUES (1, 999)")
                .execute(tx.raw_connection())
                .await?;
            tx.commit().await
        })
    };
    let_them_queue().await;
    let first = first.commit().await;
    let orphan = orphan.await.unwrap();
    assert!(
        matches!(first, Err(StoreError::GroupCommit(_))),
        "{first:?}"
    );
    assert!(
        matches!(orphan, Err(StoreError::GroupCommit(_))),
        "{orphan:?}"
    );
    assert_eq!(
        ids(&db).await,
        Vec::<i64>::new(),
        "nothing of the group kept"
    );
    insert(&db, 2)
        .await
        .commit()
        .await
        .expect("the writer goes on");
    assert_eq!(ids(&db).await, [2]);
}
