//! Property: whatever mix of admissions, plans, cancellations and failures an order goes
//! through, what its order summary (and each credit memo) holds for admitted operations is
//! exactly the sum of what its unplanned, unfinished operations were admitted with, and
//! never more than the order has available.

use proptest::prelude::*;
use refunds_store::{now_ms, ops};
use refunds_testkit::{Backend, Order, TestApp};
use serde_json::json;

#[derive(Clone, Debug)]
enum Step {
    /// Ask for this many cents of excess funds, with a new credit memo of that many cents
    /// beside it or not.
    Admit { cents: i64, memo: Option<i64> },
    /// Workers run what is claimable (the head of the line plans and completes).
    Run,
    /// Cancel the n-th operation (if it is still New).
    Cancel(usize),
    /// A worker takes the head of the line and its run fails; with a retry left or not.
    Fail { retry: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1i64..4000, proptest::option::of(1i64..3000)).prop_map(|(cents, memo)| Step::Admit { cents, memo }),
        2 => Just(Step::Run),
        1 => (0usize..8).prop_map(Step::Cancel),
        1 => any::<bool>().prop_map(|retry| Step::Fail { retry }),
    ]
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

async fn check(app: &TestApp, order: &Order, memos: &[String]) -> Result<(), TestCaseError> {
    let held = app
        .scalar(&format!(
            "SELECT admitted_amount FROM order_summaries WHERE id = '{}'",
            order.id
        ))
        .await;
    let unplanned = app
        .scalar(
            "SELECT COALESCE(SUM(admitted_amount), 0) FROM background_operations \
             WHERE planned_at IS NULL AND status IN ('New', 'Running', 'Scheduled')",
        )
        .await;
    let elsewhere = app
        .scalar(
            "SELECT COALESCE(SUM(admitted_amount), 0) FROM background_operations \
             WHERE planned_at IS NOT NULL OR status NOT IN ('New', 'Running', 'Scheduled')",
        )
        .await;
    prop_assert_eq!(
        held,
        unplanned,
        "the order holds what its unplanned operations were admitted with"
    );
    prop_assert_eq!(elsewhere, 0, "planned and finished operations hold nothing");
    let available = app
        .scalar(&format!(
            "SELECT SUM(captured_amount - refunded_amount - pending_refund_amount) \
             FROM order_payment_summaries WHERE order_summary_id = '{}'",
            order.id
        ))
        .await;
    prop_assert!(
        held <= available,
        "held {} of {} available",
        held,
        available
    );
    for memo in memos {
        let (memo_held, balance) = (
            app.scalar(&format!(
                "SELECT admitted_amount FROM credit_memos WHERE id = '{memo}'"
            ))
            .await,
            app.scalar(&format!(
                "SELECT balance FROM credit_memos WHERE id = '{memo}'"
            ))
            .await,
        );
        let memo_unplanned = app
            .scalar(&format!(
                "SELECT COALESCE(SUM(admitted_credit_memo_amount), 0) FROM background_operations \
                 WHERE admitted_credit_memo_id = '{memo}' AND planned_at IS NULL \
                   AND status IN ('New', 'Running', 'Scheduled')"
            ))
            .await;
        prop_assert_eq!(memo_held, memo_unplanned, "credit memo {}", memo);
        prop_assert!(
            memo_held <= balance,
            "memo holds {} of its {}",
            memo_held,
            balance
        );
    }
    Ok(())
}

async fn run_case(backend: Backend, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let Some(app) = TestApp::start(backend).await else {
        return Ok(());
    };
    let order = app.order("USD", &["60.00", "40.00"]).await;
    let mut operations = Vec::new();
    let mut memos = Vec::new();
    for step in steps {
        match step {
            Step::Admit { cents, memo } => {
                let mut body = json!({"excessFundsAmount": money(cents)});
                if let Some(m) = memo {
                    let cm = app.credit_memo(&order, &money(m)).await;
                    body["creditMemoId"] = json!(cm);
                    memos.push(cm);
                }
                let (status, answer) = app.post(&TestApp::ensure_path(&order.id), &body).await;
                prop_assert!(status == 201 || status == 400, "{} {}", status, answer);
                if status == 201 {
                    operations.push(
                        answer["backgroundOperationId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    );
                } else {
                    prop_assert_eq!(&answer[0]["errorCode"], "INVALID_INPUT");
                }
            }
            Step::Run => {
                app.runner.run_once().await.expect("run");
            }
            Step::Cancel(n) => {
                if let Some(id) = operations.get(n) {
                    ops::cancel(&app.db, id, now_ms()).await.expect("cancel");
                }
            }
            Step::Fail { retry } => {
                let claimed = ops::claim(&app.db, "doomed", "local", 1, 60_000, now_ms())
                    .await
                    .expect("claim");
                for c in claimed {
                    ops::fail(
                        &app.db,
                        &c.id,
                        c.lease_token,
                        "failed in a test",
                        retry.then_some(0),
                        now_ms(),
                    )
                    .await
                    .expect("fail");
                }
            }
        }
        check(&app, &order, &memos).await?;
    }
    Ok(())
}

fn property(backend: Backend, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(step(), 1..14), |steps| {
            rt.block_on(run_case(backend, steps))
        })
        .expect("the admitted reservation always matches the unplanned operations");
}

#[test]
fn admitted_money_matches_the_unplanned_operations_sqlite() {
    property(Backend::Sqlite, 24);
}

#[test]
fn admitted_money_matches_the_unplanned_operations_postgres() {
    property(Backend::Postgres, 12);
}
