//! Money an admission sets aside, from the 201 until the operation plans.
//!
//! An ensure-refunds request is admitted only with money of its own: in its enqueue
//! transaction it adds what it may refund to its order summary's `admitted_amount` (only
//! while the order's payment summaries have that much available beyond what earlier
//! admissions hold) and what it takes from a credit memo to the memo's `admitted_amount`
//! (only while the balance covers it). The operation row records both; planning turns
//! them into leg reservations ([`take_for_plan`]) and every other ending gives them back
//! ([`release`]), each once, by conditional, row-count-checked statements.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::expect_one;
use crate::{Result, Tx};

/// Sets `amount` aside on the order, only while its payment summaries have that much
/// available beyond what is already set aside. False (and nothing changed) if not.
pub async fn admit_on_order(tx: &mut Tx, order_id: &str, amount: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE order_summaries SET admitted_amount = admitted_amount + $1 \
         WHERE id = $2 AND $1 > 0 AND admitted_amount + $1 <= (SELECT COALESCE(SUM(CASE \
             WHEN captured_amount - refunded_amount - pending_refund_amount > 0 \
             THEN captured_amount - refunded_amount - pending_refund_amount ELSE 0 END), 0) \
           FROM order_payment_summaries WHERE order_summary_id = $2)",
    )
    .bind(amount)
    .bind(order_id)
    .execute(tx.conn())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Sets `amount` of a credit memo's balance aside, only while the balance covers it
/// beyond what is already set aside. False (and nothing changed) if not.
pub async fn admit_on_credit_memo(tx: &mut Tx, id: &str, amount: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE credit_memos SET admitted_amount = admitted_amount + $1 \
         WHERE id = $2 AND $1 > 0 AND balance - admitted_amount >= $1",
    )
    .bind(amount)
    .bind(id)
    .execute(tx.conn())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// What an operation's admission set aside, as recorded on its row. `None`: the
/// operation was admitted without setting money aside (before this existed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub order_id: String,
    pub amount: i64,
    pub credit_memo: Option<(String, i64)>,
}

impl Held {
    /// From a row of `background_operations` with `parent_key`, `admitted_amount`,
    /// `admitted_credit_memo_id` and `admitted_credit_memo_amount`; `None` when the
    /// operation was admitted without setting money aside.
    pub(crate) fn from_row(row: &AnyRow) -> Result<Held> {
        Ok(Held {
            order_id: row.try_get("parent_key")?,
            amount: row.try_get("admitted_amount")?,
            credit_memo: match row.try_get::<Option<String>, _>("admitted_credit_memo_id")? {
                Some(id) => Some((
                    id,
                    row.try_get::<Option<i64>, _>("admitted_credit_memo_amount")?
                        .unwrap_or(0),
                )),
                None => None,
            },
        })
    }
}

/// Reads what the operation's admission set aside and gives it back (see [`hand_back`]),
/// when the operation ends before planning. Once: a second call finds nothing held.
/// Answers what was held.
async fn give_back(tx: &mut Tx, operation_id: &str, now: i64) -> Result<Option<Held>> {
    let Some(row) = sqlx::query(
        "SELECT parent_key, admitted_amount, admitted_credit_memo_id, admitted_credit_memo_amount \
         FROM background_operations WHERE id = $1 AND planned_at IS NULL AND admitted_amount IS NOT NULL",
    )
    .bind(operation_id)
    .fetch_optional(tx.conn())
    .await?
    else {
        return Ok(None);
    };
    let held = Held::from_row(&row)?;
    hand_back(tx, operation_id, &held, now).await?;
    Ok(Some(held))
}

/// Clears the operation's record of what its admission set aside (`held`, as read from its
/// row) and gives it back to the order and the credit memo. Once: the first statement only
/// matches while the operation is unplanned and still holds exactly `held`.
async fn hand_back(tx: &mut Tx, operation_id: &str, held: &Held, now: i64) -> Result<()> {
    let r = sqlx::query(
        "UPDATE background_operations SET admitted_amount = 0, admitted_credit_memo_amount = 0 \
         WHERE id = $1 AND planned_at IS NULL AND admitted_amount = $2 \
           AND COALESCE(admitted_credit_memo_amount, 0) = $3",
    )
    .bind(operation_id)
    .bind(held.amount)
    .bind(held.credit_memo.as_ref().map_or(0, |(_, amount)| *amount))
    .execute(tx.conn())
    .await?;
    expect_one(r, || {
        format!("admission of background operation {operation_id}")
    })?;
    if held.amount > 0 {
        let r = sqlx::query(
            "UPDATE order_summaries SET admitted_amount = admitted_amount - $1, last_modified_date = $2 \
             WHERE id = $3 AND admitted_amount >= $1",
        )
        .bind(held.amount)
        .bind(now)
        .bind(&held.order_id)
        .execute(tx.conn())
        .await?;
        expect_one(r, || {
            format!("order summary {} holding {}", held.order_id, held.amount)
        })?;
    }
    if let Some((cm, amount)) = &held.credit_memo {
        if *amount > 0 {
            let r = sqlx::query(
                "UPDATE credit_memos SET admitted_amount = admitted_amount - $1, last_modified_date = $2 \
                 WHERE id = $3 AND admitted_amount >= $1",
            )
            .bind(*amount)
            .bind(now)
            .bind(cm)
            .execute(tx.conn())
            .await?;
            expect_one(r, || format!("credit memo {cm} holding {amount}"))?;
        }
    }
    Ok(())
}

/// The operation ended before planning: what its admission set aside goes back.
pub async fn release(tx: &mut Tx, operation_id: &str, now: i64) -> Result<()> {
    give_back(tx, operation_id, now).await.map(drop)
}

/// In the plan transaction: what the admission set aside (`held`, as the claim read it
/// from the operation's row) is handed over to the plan, which reserves it leg by leg.
/// A second hand-over, or one of an amount the row does not hold, is refused.
pub async fn take_for_plan(tx: &mut Tx, operation_id: &str, held: &Held, now: i64) -> Result<()> {
    hand_back(tx, operation_id, held, now).await
}
