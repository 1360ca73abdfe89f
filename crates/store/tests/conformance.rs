//! Storage conformance: every guarded statement of the store refuses what it must, and a
//! refusal changes nothing.
//!
//! The store's invariants rest on conditional statements — a reservation only while the
//! money is there, a refund leaving `Draft` once, a write of a run only with its lease —
//! each answering an error, `false`, `None` or zero rows when its condition does not hold.
//! Every test here drives such a statement past its limit and asserts both halves: the
//! refusal itself (of the kind the caller acts on: `StoreError::Missing`,
//! `StoreError::LeaseLost`, `false`, `None`), and that the books read back exactly as
//! before — the balances by name ([`Books`]), and every row of every table the store
//! writes ([`Scratch::rows`]). Where the statement refuses before anything of it is
//! written, the test commits the transaction anyway, so that what was kept is only what
//! the statement wrote; where a function writes a first statement before a later one
//! refuses, the test rolls back, as every caller does on the error (`?`). Each limit is
//! also met exactly once, so that a guard that refused everything would fail too.
//!
//! The last tests race two transactions over one row ([`race`]): on PostgreSQL the
//! second has read what was committed before the first wrote and waits on the first's
//! row lock, so its guard must refuse on the row as the first left it (a guard written as
//! a read followed by an unconditional write would let both through); on SQLite, whose
//! single writer runs them one after the other, the same bodies check the sequential
//! order.
//!
//! Fixtures are built as the service builds them: the order's records with
//! `records::insert` (an order summary, a payment gateway, an order payment summary with
//! its Processed payments, a credit memo and an invoice), operations with `ops::enqueue`
//! (after `admission::admit_on_*`, as the admit step does), refunds as a plan writes them
//! (`refunds::reserve`, `take_from_credit_memo`, `insert_refund`).
//!
//! Every test runs on both databases, with one body (`on_both!`): `<test>::sqlite` on a
//! temp SQLite file, `<test>::postgres` on a scratch database created on the server at
//! `REFUNDS_TEST_POSTGRES_URL` and dropped afterwards (see `common`). Without that
//! variable the PostgreSQL half prints a notice and passes as skipped, unless `CI=true`,
//! where it fails.

mod common;

use common::{scratch, Scratch};
use refunds_domain::{InteractionStatus, ObjectType, ReconcileState, RefundStatus, SfId};
use refunds_store::admission::{self, Held};
use refunds_store::auth::{self, NewClient, Role};
use refunds_store::ops::{self, Admitted, Claimed, NewOperation};
use refunds_store::records::{self, Value};
use refunds_store::refunds::{
    self as sql, NewLog, NewProcessException, NewRefund, ProviderAnswer, RefundWork, Settlement,
};
use refunds_store::{now_ms, Backend, StoreError, Tx};

/// Every table a statement of the store writes.
const TABLES: &[&str] = &[
    "order_summaries",
    "payment_gateways",
    "order_payment_summaries",
    "payments",
    "invoices",
    "credit_memos",
    "credit_memo_inv_applications",
    "background_operations",
    "queue_lines",
    "idempotency_keys",
    "refunds",
    "refund_line_payments",
    "payment_gateway_logs",
    "process_exceptions",
    "api_clients",
    "api_users",
    "access_tokens",
    "queue_processes",
];

/// The lease of a claim, long enough never to run out by itself during a test.
const LEASE_MS: i64 = 600_000;

impl Scratch {
    async fn begin(&self) -> Tx {
        self.db.begin().await.expect("begin")
    }

    /// One integer from `sql`, whose `$1` is `id`.
    async fn int(&self, sql: &str, id: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(&format!("SELECT CAST(({sql}) AS BIGINT)"))
            .bind(id)
            .fetch_one(self.db.pool())
            .await
            .expect(sql)
    }

    /// One text (or NULL) from `sql`, whose `$1` is `id`.
    async fn text(&self, sql: &str, id: &str) -> Option<String> {
        sqlx::query_scalar::<_, Option<String>>(sql)
            .bind(id)
            .fetch_one(self.db.pool())
            .await
            .expect(sql)
    }

    async fn columns(&self, table: &str) -> Vec<String> {
        let sql = match self.db.backend() {
            Backend::Sqlite => "SELECT name FROM pragma_table_info($1) ORDER BY cid",
            Backend::Postgres => {
                "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
            }
        };
        let columns: Vec<String> = sqlx::query_scalar(sql)
            .bind(table)
            .fetch_all(self.db.pool())
            .await
            .expect("columns");
        assert!(!columns.is_empty(), "no table {table}");
        columns
    }

    /// Every row of every table the store writes, each column as `name=value`, in a
    /// fixed order: two reads are equal only if nothing at all was written in between.
    async fn rows(&self) -> Vec<String> {
        let mut rows = Vec::new();
        for table in TABLES {
            let row = self
                .columns(table)
                .await
                .iter()
                .map(|c| format!("'{c}=' || COALESCE(CAST(\"{c}\" AS TEXT), 'NULL')"))
                .collect::<Vec<_>>()
                .join(" || ' ' || ");
            let sql = format!("SELECT '{table}: ' || {row} FROM {table} ORDER BY 1");
            let mut read: Vec<String> = sqlx::query_scalar(&sql)
                .fetch_all(self.db.pool())
                .await
                .expect(&sql);
            rows.append(&mut read);
        }
        rows
    }

    /// The balances of the order's records, by name.
    async fn books(&self, o: &Order) -> Books {
        let summary =
            |column: &str| format!("SELECT {column} FROM order_payment_summaries WHERE id = $1");
        let payment = |column: &str| format!("SELECT {column} FROM payments WHERE id = $1");
        Books {
            summary_refunded: self.int(&summary("refunded_amount"), &o.summary).await,
            summary_pending: self
                .int(&summary("pending_refund_amount"), &o.summary)
                .await,
            a_applied: self.int(&payment("total_refund_applied"), &o.a).await,
            a_pending: self.int(&payment("pending_refund_amount"), &o.a).await,
            b_applied: self.int(&payment("total_refund_applied"), &o.b).await,
            b_pending: self.int(&payment("pending_refund_amount"), &o.b).await,
            c_pending: self.int(&payment("pending_refund_amount"), &o.c).await,
            memo_balance: self
                .int("SELECT balance FROM credit_memos WHERE id = $1", &o.memo)
                .await,
            memo_admitted: self
                .int(
                    "SELECT admitted_amount FROM credit_memos WHERE id = $1",
                    &o.memo,
                )
                .await,
            invoice_balance: self
                .int("SELECT balance FROM invoices WHERE id = $1", &o.invoice)
                .await,
            order_admitted: self
                .int(
                    "SELECT admitted_amount FROM order_summaries WHERE id = $1",
                    &o.order,
                )
                .await,
            active_exceptions: self
                .int(
                    "SELECT active_process_exception_count FROM order_summaries WHERE id = $1",
                    &o.order,
                )
                .await,
            exceptions: self
                .int(
                    "SELECT COUNT(*) FROM process_exceptions WHERE order_summary_id = $1",
                    &o.order,
                )
                .await,
            lines: self
                .int(
                    "SELECT COUNT(*) FROM refund_line_payments WHERE payment_id = $1",
                    &o.a,
                )
                .await,
            applications: self
                .int(
                    "SELECT COUNT(*) FROM credit_memo_inv_applications WHERE credit_memo_id = $1",
                    &o.memo,
                )
                .await,
        }
    }

    /// An operation's status, lease token, holder and what its admission still holds.
    async fn operation(&self, id: &str) -> Operation {
        let column = |c: &str| format!("SELECT {c} FROM background_operations WHERE id = $1");
        Operation {
            status: self.text(&column("status"), id).await.expect("status"),
            lease_token: self.int(&column("lease_token"), id).await,
            lease_owner: self.text(&column("lease_owner"), id).await,
            admitted: self.int(&column("admitted_amount"), id).await,
            admitted_credit_memo: self.int(&column("admitted_credit_memo_amount"), id).await,
        }
    }

    async fn refund_status(&self, id: &str) -> (String, String) {
        let status = self
            .text("SELECT status FROM refunds WHERE id = $1", id)
            .await;
        let state = self
            .text("SELECT reconcile_state FROM refunds WHERE id = $1", id)
            .await;
        (status.expect("status"), state.expect("state"))
    }

    async fn work(&self, refund_id: &str) -> RefundWork {
        sql::find_refund_work(&self.db, refund_id)
            .await
            .expect("read refund")
            .expect("refund exists")
    }

    async fn claim(&self, worker: &str) -> Vec<Claimed> {
        ops::claim(&self.db, worker, "http://worker", 10, LEASE_MS, now_ms())
            .await
            .expect("claim")
    }
}

/// The money of one order, as its records hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Books {
    summary_refunded: i64,
    summary_pending: i64,
    a_applied: i64,
    a_pending: i64,
    b_applied: i64,
    b_pending: i64,
    c_pending: i64,
    memo_balance: i64,
    memo_admitted: i64,
    invoice_balance: i64,
    order_admitted: i64,
    active_exceptions: i64,
    exceptions: i64,
    lines: i64,
    applications: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Operation {
    status: String,
    lease_token: i64,
    lease_owner: Option<String>,
    admitted: i64,
    admitted_credit_memo: i64,
}

/// One MANAGED order in EUR: a summary that captured 1000 through payments `a` (600) and
/// `b` (400), a payment `c` of 300 that is not Processed, a credit memo of 300 and an
/// invoice of 100.
struct Order {
    order: String,
    summary: String,
    gateway: String,
    a: String,
    b: String,
    c: String,
    memo: String,
    invoice: String,
}

fn id(ty: ObjectType) -> String {
    SfId::generate(ty).into_string()
}

fn text(v: &str) -> Value {
    Value::Text(v.to_string())
}

async fn order(s: &Scratch) -> Order {
    let o = Order {
        order: id(ObjectType::OrderSummary),
        summary: id(ObjectType::OrderPaymentSummary),
        gateway: id(ObjectType::PaymentGateway),
        a: id(ObjectType::Payment),
        b: id(ObjectType::Payment),
        c: id(ObjectType::Payment),
        memo: id(ObjectType::CreditMemo),
        invoice: id(ObjectType::Invoice),
    };
    let now = Value::Int(now_ms());
    let eur = text("EUR");
    let mut tx = s.begin().await;
    let records = [
        (
            ObjectType::OrderSummary,
            vec![
                ("id", text(&o.order)),
                ("order_number", text("O-1")),
                ("order_life_cycle_type", text("MANAGED")),
                ("status", text("Created")),
                ("grand_total_amount", Value::Int(1000)),
            ],
        ),
        (
            ObjectType::PaymentGateway,
            vec![
                ("id", text(&o.gateway)),
                ("payment_gateway_name", text("Simulator")),
                ("provider_type", text("Simulator")),
                ("status", text("Active")),
            ],
        ),
        (
            ObjectType::OrderPaymentSummary,
            vec![
                ("id", text(&o.summary)),
                ("order_summary_id", text(&o.order)),
                ("authorization_amount", Value::Int(1000)),
                ("captured_amount", Value::Int(1000)),
            ],
        ),
        (ObjectType::Payment, payment(&o, &o.a, 600, "Processed")),
        (ObjectType::Payment, payment(&o, &o.b, 400, "Processed")),
        (ObjectType::Payment, payment(&o, &o.c, 300, "Draft")),
        (
            ObjectType::CreditMemo,
            vec![
                ("id", text(&o.memo)),
                ("reference_entity_id", text(&o.order)),
                ("total_amount_with_tax", Value::Int(300)),
                ("balance", Value::Int(300)),
                ("status", text("Posted")),
            ],
        ),
        (
            ObjectType::Invoice,
            vec![
                ("id", text(&o.invoice)),
                ("reference_entity_id", text(&o.order)),
                ("total_amount_with_tax", Value::Int(100)),
                ("balance", Value::Int(100)),
                ("status", text("Posted")),
            ],
        ),
    ];
    for (ty, mut values) in records {
        if ty != ObjectType::PaymentGateway {
            values.push(("currency_iso_code", eur.clone()));
        }
        values.push(("created_date", now.clone()));
        values.push(("last_modified_date", now.clone()));
        records::insert(&mut tx, ty, &values)
            .await
            .unwrap_or_else(|e| panic!("insert {ty}: {e}"));
    }
    tx.commit().await.expect("commit the order");
    o
}

fn payment(o: &Order, id: &str, amount: i64, status: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("id", text(id)),
        ("order_payment_summary_id", text(&o.summary)),
        ("payment_gateway_id", text(&o.gateway)),
        ("amount", Value::Int(amount)),
        ("type", text("Capture")),
        ("status", text(status)),
        ("gateway_ref_number", text(&format!("ch_{id}"))),
    ]
}

/// Enqueues an ensure-refunds operation on the order as the admit step does: what it sets
/// aside (on the order, and of the credit memo's balance) is admitted first, by the
/// conditional statements, in the enqueue's transaction. `None`: nothing set aside.
async fn enqueue(s: &Scratch, o: &Order, admitted: Option<(i64, i64)>) -> String {
    let op = id(ObjectType::BackgroundOperation);
    let mut tx = s.begin().await;
    // As admission does: the order's funds read with its row locked.
    assert!(sql::order_funds(&mut tx, &o.order, true)
        .await
        .expect("lock")
        .is_some());
    if let Some((amount, memo)) = admitted {
        if amount > 0 {
            assert!(admission::admit_on_order(&mut tx, &o.order, amount)
                .await
                .expect("admit on the order"));
        }
        if memo > 0 {
            assert!(admission::admit_on_credit_memo(&mut tx, &o.memo, memo)
                .await
                .expect("admit on the credit memo"));
        }
    }
    ops::enqueue(
        &mut tx,
        &NewOperation {
            id: &op,
            name: "Ensure refunds",
            ty: "EnsureRefunds",
            parent_key: &o.order,
            payload: "{}",
            retry_limit: 3,
            retry_backoff_ms: 1000,
            timeout_ms: LEASE_MS,
            now: now_ms(),
            admitted: admitted.map(|(amount, memo)| Admitted {
                amount,
                credit_memo: Some((o.memo.as_str(), memo)),
            }),
        },
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit the enqueue");
    op
}

/// Writes one leg of `op` as a plan does: `amount` reserved on the summary and payment
/// `a`, `from_memo` of it taken off the credit memo, and the `Draft` refund.
async fn draft(
    s: &Scratch,
    o: &Order,
    op: &str,
    leg: i64,
    amount: i64,
    from_memo: i64,
) -> RefundWork {
    let refund = id(ObjectType::Refund);
    let now = now_ms();
    let mut tx = s.begin().await;
    sql::reserve(&mut tx, &o.summary, &o.a, amount, now)
        .await
        .expect("reserve");
    if from_memo > 0 {
        sql::take_from_credit_memo(&mut tx, &o.memo, from_memo, now)
            .await
            .expect("take from the credit memo");
    }
    sql::insert_refund(
        &mut tx,
        &NewRefund {
            id: &refund,
            operation_id: op,
            leg,
            summary_id: &o.summary,
            payment_id: &o.a,
            gateway_id: &o.gateway,
            amount,
            credit_memo_id: (from_memo > 0).then_some(o.memo.as_str()),
            credit_memo_amount: from_memo,
            currency: "EUR",
            attempts: 0,
            now,
        },
    )
    .await
    .expect("insert refund");
    tx.commit().await.expect("commit the plan");
    s.work(&refund).await
}

/// Commits `first` — a transaction that has written but not committed — while `second`
/// runs in a transaction of its own, and answers what `second` answered. On PostgreSQL
/// `first` commits only once `second` waits on the rows `first` holds, so that `second`
/// read (or decided on) what was committed before `first`: its guard must then refuse
/// on the row as `first` left it. On SQLite the single writer runs `second` after
/// `first` has finished, so the same test checks the sequential order.
async fn race<T, F>(s: &Scratch, first: Tx, second: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let second = tokio::spawn(second);
    if s.db.backend() == Backend::Postgres {
        let waiting = "SELECT COUNT(*) FROM pg_stat_activity \
                       WHERE datname = current_database() AND wait_event_type = 'Lock'";
        let since = std::time::Instant::now();
        while sqlx::query_scalar::<_, i64>(waiting)
            .fetch_one(s.db.pool())
            .await
            .expect("pg_stat_activity")
            == 0
        {
            assert!(
                since.elapsed() < std::time::Duration::from_secs(10),
                "the second transaction never waited for the first"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    first.commit().await.expect("commit the first");
    second.await.expect("the second transaction")
}

fn answer(status: InteractionStatus, code: &'static str) -> ProviderAnswer<'static> {
    ProviderAnswer {
        interaction_status: status,
        sf_result_code: code,
        gateway_result_code: Some(code),
        gateway_message: None,
        gateway_ref_number: Some("re_1"),
        gateway_date: None,
        request: None,
        response: None,
        duration_ms: 1,
    }
}

fn success() -> ProviderAnswer<'static> {
    answer(InteractionStatus::Success, "Success")
}

fn failure() -> ProviderAnswer<'static> {
    answer(InteractionStatus::Failed, "PermanentFail")
}

fn exception<'a>(w: &'a RefundWork, id: &'a str) -> NewProcessException<'a> {
    NewProcessException::about_refund(w, id, "Refund failed", "The provider refused it.", now_ms())
}

fn line_id() -> String {
    id(ObjectType::RefundLinePayment)
}

fn exception_id() -> String {
    id(ObjectType::ProcessException)
}

fn is_missing(e: &StoreError, what: &str) -> bool {
    matches!(e, StoreError::Missing(m) if m.contains(what))
}

fn is_lease_lost(e: &StoreError, op: &str) -> bool {
    matches!(e, StoreError::LeaseLost(id) if id == op)
}

// --- Reservations and balances -------------------------------------------------------

/// `reserve` takes only what both the summary and the payment still have: past the
/// summary's available amount, past the payment's, or on a payment that is not Processed
/// it is refused and the books read back as before; within it, PendingRefundAmount rises
/// by exactly the amount on the summary and that payment, nowhere else; and what is left
/// is then exactly what may still be reserved.
async fn a_reservation_beyond_what_is_available_is_refused(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let before = s.books(&o).await;
    let rows = s.rows().await;

    // Past the summary (1000 available): refused by its first statement, so nothing of
    // it is kept even when the transaction commits.
    let mut tx = s.begin().await;
    let e = sql::reserve(&mut tx, &o.summary, &o.a, 1001, now_ms())
        .await
        .expect_err("1001 of a summary that has 1000");
    assert!(is_missing(&e, &o.summary), "{e}");
    tx.commit().await.expect("commit");
    assert_eq!(s.books(&o).await, before);
    assert_eq!(s.rows().await, rows);

    // Past payment a (600), which the summary still has; and on payment c, which is not
    // Processed: refused by the payment's statement, after the summary's, so the caller
    // rolls back (as `?` does).
    for (payment, amount) in [(&o.a, 601), (&o.c, 100)] {
        let mut tx = s.begin().await;
        let e = sql::reserve(&mut tx, &o.summary, payment, amount, now_ms())
            .await
            .expect_err("more than the payment has");
        assert!(is_missing(&e, payment), "{e}");
        tx.rollback().await.expect("rollback");
        assert_eq!(s.books(&o).await, before, "{amount} on {payment}");
        assert_eq!(s.rows().await, rows);
    }

    // Within: exactly 600 more pending, on the summary and on a.
    let mut tx = s.begin().await;
    sql::reserve(&mut tx, &o.summary, &o.a, 600, now_ms())
        .await
        .expect("600 of payment a");
    tx.commit().await.expect("commit");
    let after = s.books(&o).await;
    assert_eq!(
        after,
        Books {
            summary_pending: 600,
            a_pending: 600,
            ..before
        }
    );
    // (The rows see this write: their equality elsewhere is not that of empty reads.)
    let written = s.rows().await;
    assert_ne!(written, rows);
    assert!(written.iter().any(|r| r.starts_with("payments: ")
        && r.contains(&format!("id={} ", o.a))
        && r.contains(" pending_refund_amount=600 ")));

    // The summary has 400 left: 401 is refused (even committed, nothing is kept), 400
    // fits on b, and then not one unit more.
    let rows = s.rows().await;
    let mut tx = s.begin().await;
    let e = sql::reserve(&mut tx, &o.summary, &o.b, 401, now_ms())
        .await
        .expect_err("401 of the 400 left");
    assert!(is_missing(&e, &o.summary), "{e}");
    tx.commit().await.expect("commit");
    assert_eq!(s.books(&o).await, after);
    assert_eq!(s.rows().await, rows);
    let mut tx = s.begin().await;
    sql::reserve(&mut tx, &o.summary, &o.b, 400, now_ms())
        .await
        .expect("the 400 left, on b");
    tx.commit().await.expect("commit");
    let full = s.books(&o).await;
    assert_eq!(
        full,
        Books {
            summary_pending: 1000,
            b_pending: 400,
            ..after
        }
    );
    let rows = s.rows().await;
    let mut tx = s.begin().await;
    let e = sql::reserve(&mut tx, &o.summary, &o.b, 1, now_ms())
        .await
        .expect_err("one more unit");
    assert!(is_missing(&e, &o.summary), "{e}");
    tx.commit().await.expect("commit");
    assert_eq!(s.books(&o).await, full);
    assert_eq!(s.rows().await, rows);
    s.finish().await;
}

/// `take_from_credit_memo` lowers the balance only while it covers the amount: past it
/// the memo is refused and unchanged, the whole balance can be taken, and then nothing.
async fn money_taken_from_a_credit_memo_beyond_its_balance_is_refused(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let before = s.books(&o).await;
    for (amount, left) in [(301, 300), (300, 0), (1, 0)] {
        let rows = s.rows().await;
        let mut tx = s.begin().await;
        let taken = sql::take_from_credit_memo(&mut tx, &o.memo, amount, now_ms()).await;
        tx.commit().await.expect("commit");
        let books = s.books(&o).await;
        assert_eq!(
            books,
            Books {
                memo_balance: left,
                ..before
            },
            "{amount}"
        );
        match taken {
            Ok(()) => assert_eq!(amount, 300, "{amount} of what was left was taken"),
            Err(e) => {
                assert!(is_missing(&e, &o.memo), "{e}");
                assert_ne!(amount, 300, "the whole balance was refused");
                assert_eq!(s.rows().await, rows, "a refused take changed a row");
            }
        }
    }
    s.finish().await;
}

/// `apply_credit_memo` pays an invoice only up to the invoice's balance (and the memo's):
/// past it, refused, and once rolled back the memo keeps its balance and no application
/// is recorded; the exact balance is paid once, and then nothing more.
async fn an_invoice_is_paid_from_a_credit_memo_only_up_to_its_balance(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let apply = |amount: i64| {
        let (s, o, op) = (&s, &o, &op);
        async move {
            let mut tx = s.begin().await;
            let applied = sql::apply_credit_memo(
                &mut tx,
                &id(ObjectType::CreditMemoInvApplication),
                &o.memo,
                &o.invoice,
                amount,
                op,
                "EUR",
                now_ms(),
            )
            .await;
            match &applied {
                Ok(()) => tx.commit().await.expect("commit"),
                // The memo's statement ran first: the caller rolls back.
                Err(_) => tx.rollback().await.expect("rollback"),
            }
            applied
        }
    };
    let before = s.books(&o).await;
    let rows = s.rows().await;
    let e = apply(101).await.expect_err("101 of an invoice of 100");
    assert!(is_missing(&e, &o.invoice), "{e}");
    assert_eq!(s.books(&o).await, before);
    assert_eq!(s.rows().await, rows);

    apply(100).await.expect("the invoice's balance");
    let paid = s.books(&o).await;
    assert_eq!(
        paid,
        Books {
            memo_balance: 200,
            invoice_balance: 0,
            applications: 1,
            ..before
        }
    );
    let rows = s.rows().await;
    let e = apply(1).await.expect_err("a paid invoice");
    assert!(is_missing(&e, &o.invoice), "{e}");
    assert_eq!(s.books(&o).await, paid);
    assert_eq!(s.rows().await, rows);
    s.finish().await;
}

// --- Admission -----------------------------------------------------------------------

/// `admit_on_order` sets money aside only while the order's summaries have it beyond what
/// is reserved and what earlier admissions hold: past that, `false` and nothing changed;
/// exactly what is left is admitted, and then not one unit more.
async fn an_admission_beyond_what_the_order_has_left_is_refused(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    // 100 reserved: 900 left for admissions.
    let mut tx = s.begin().await;
    sql::reserve(&mut tx, &o.summary, &o.a, 100, now_ms())
        .await
        .expect("reserve");
    tx.commit().await.expect("commit");
    let before = s.books(&o).await;
    // (amount, admitted, total set aside after it)
    for (amount, admitted, held) in [
        (901, false, 0),
        (600, true, 600),
        (301, false, 600),
        (300, true, 900),
        (1, false, 900),
    ] {
        let rows = s.rows().await;
        let mut tx = s.begin().await;
        let answer = admission::admit_on_order(&mut tx, &o.order, amount)
            .await
            .expect("admit");
        tx.commit().await.expect("commit");
        assert_eq!(answer, admitted, "{amount} with {held} held");
        assert_eq!(
            s.books(&o).await,
            Books {
                order_admitted: held,
                ..before
            },
            "{amount}"
        );
        if !admitted {
            assert_eq!(
                s.rows().await,
                rows,
                "a refused admission of {amount} changed a row"
            );
        }
    }
    s.finish().await;
}

/// `admit_on_credit_memo` sets a memo's balance aside only while the balance covers it
/// beyond earlier admissions (and after what was taken off it): past that, `false` and
/// nothing changed.
async fn an_admission_beyond_the_credit_memo_balance_is_refused(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    // 50 taken off the memo: 250 left to admit.
    let mut tx = s.begin().await;
    sql::take_from_credit_memo(&mut tx, &o.memo, 50, now_ms())
        .await
        .expect("take");
    tx.commit().await.expect("commit");
    let before = s.books(&o).await;
    for (amount, admitted, held) in [
        (251, false, 0),
        (200, true, 200),
        (51, false, 200),
        (50, true, 250),
        (1, false, 250),
    ] {
        let rows = s.rows().await;
        let mut tx = s.begin().await;
        let answer = admission::admit_on_credit_memo(&mut tx, &o.memo, amount)
            .await
            .expect("admit");
        tx.commit().await.expect("commit");
        assert_eq!(answer, admitted, "{amount} with {held} held");
        assert_eq!(
            s.books(&o).await,
            Books {
                memo_admitted: held,
                ..before
            },
            "{amount}"
        );
        if !admitted {
            assert_eq!(
                s.rows().await,
                rows,
                "a refused admission of {amount} changed a row"
            );
        }
    }
    s.finish().await;
}

/// Canceling a New operation gives back exactly what its admission set aside, on the
/// order and on the credit memo, and no more (another operation's admission stays); a
/// second cancel answers false, and neither it nor a second release changes anything.
async fn canceling_an_admitted_operation_gives_its_money_back_exactly_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let first = enqueue(&s, &o, Some((500, 200))).await;
    let second = enqueue(&s, &o, Some((100, 50))).await;
    let before = s.books(&o).await;
    assert_eq!((before.order_admitted, before.memo_admitted), (600, 250));

    assert!(ops::cancel(&s.db, &first, now_ms()).await.expect("cancel"));
    let after = s.books(&o).await;
    assert_eq!(
        after,
        Books {
            order_admitted: 100,
            memo_admitted: 50,
            ..before
        }
    );
    let op = s.operation(&first).await;
    assert_eq!(
        (op.status.as_str(), op.admitted, op.admitted_credit_memo),
        ("Canceled", 0, 0)
    );
    assert_eq!(s.operation(&second).await.admitted, 100);

    let rows = s.rows().await;
    assert!(!ops::cancel(&s.db, &first, now_ms())
        .await
        .expect("cancel again"));
    assert_eq!(s.books(&o).await, after);
    assert_eq!(s.rows().await, rows);
    // Nor does a release once more (the operation holds nothing now).
    let mut tx = s.begin().await;
    admission::release(&mut tx, &first, now_ms())
        .await
        .expect("release again");
    tx.commit().await.expect("commit");
    assert_eq!(s.books(&o).await, after);
    assert_eq!(s.rows().await, rows);
    s.finish().await;
}

/// An operation that ends before it planned (completed, here) gives its admission back
/// once: a second completion or a failure with the old token is `LeaseLost`, a cancel is
/// false, and none of them gives anything back again.
async fn an_operation_that_ends_before_planning_gives_its_admission_back_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, Some((500, 200))).await;
    let _other = enqueue(&s, &o, Some((100, 50))).await;
    let run = s.claim("worker-a").await;
    assert_eq!(run.len(), 1, "only the first of the line is claimed");
    assert_eq!(run[0].id, op);
    let before = s.books(&o).await;
    ops::complete(&s.db, &op, run[0].lease_token, now_ms())
        .await
        .expect("complete");
    let after = s.books(&o).await;
    assert_eq!(
        after,
        Books {
            order_admitted: 100,
            memo_admitted: 50,
            ..before
        }
    );
    let rows = s.rows().await;
    let token = run[0].lease_token;
    let e = ops::complete(&s.db, &op, token, now_ms())
        .await
        .expect_err("complete twice");
    assert!(is_lease_lost(&e, &op), "{e}");
    let e = ops::fail(&s.db, &op, token, "late", None, now_ms())
        .await
        .expect_err("fail after complete");
    assert!(is_lease_lost(&e, &op), "{e}");
    assert!(!ops::cancel(&s.db, &op, now_ms()).await.expect("cancel"));
    assert_eq!(s.books(&o).await, after);
    assert_eq!(s.rows().await, rows);
    s.finish().await;
}

/// What an admission set aside, as the claim read it, is handed to the plan once and
/// only as held: `take_for_plan` with another amount (on the order or the credit memo)
/// is `Missing` and changes nothing, the held amounts go over once, a second hand-over is
/// `Missing`, and the operation that planned gives nothing back on a release or when it
/// ends.
async fn an_admission_handed_to_a_plan_is_not_given_back_again(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, Some((500, 200))).await;
    let _other = enqueue(&s, &o, Some((100, 50))).await;
    let run = s.claim("worker-a").await;
    assert_eq!(run.len(), 1);
    let token = run[0].lease_token;
    let held = run[0].held.clone().expect("the claim reads what is held");
    assert_eq!(
        held,
        Held {
            order_id: o.order.clone(),
            amount: 500,
            credit_memo: Some((o.memo.clone(), 200)),
        }
    );
    let before = s.books(&o).await;
    let rows = s.rows().await;
    let hand_over = |held: Held| {
        let (s, op) = (&s, &op);
        async move {
            let mut tx = s.begin().await;
            ops::fence(&mut tx, op, token, now_ms())
                .await
                .expect("fence");
            let taken = admission::take_for_plan(&mut tx, op, &held, now_ms()).await;
            if taken.is_ok() {
                sql::mark_planned(&mut tx, op, now_ms())
                    .await
                    .expect("mark planned");
                tx.commit().await.expect("commit the plan");
            } else {
                // (The fence wrote its timestamp: the plan is rolled back, as on `?`.)
                tx.rollback().await.expect("rollback");
            }
            taken
        }
    };
    for wrong in [
        Held {
            amount: 501,
            ..held.clone()
        },
        Held {
            amount: 499,
            ..held.clone()
        },
        Held {
            credit_memo: Some((o.memo.clone(), 150)),
            ..held.clone()
        },
    ] {
        let e = hand_over(wrong.clone())
            .await
            .expect_err("another amount than held");
        assert!(is_missing(&e, &op), "{wrong:?}: {e}");
        assert_eq!(s.books(&o).await, before, "{wrong:?}");
        assert_eq!(s.rows().await, rows, "{wrong:?}");
    }

    hand_over(held.clone()).await.expect("take for the plan");
    let planned = s.books(&o).await;
    assert_eq!(
        planned,
        Books {
            order_admitted: 100,
            memo_admitted: 50,
            ..before
        }
    );

    let rows = s.rows().await;
    let mut tx = s.begin().await;
    let e = admission::take_for_plan(&mut tx, &op, &held, now_ms())
        .await
        .expect_err("handed over twice");
    // Refused by its first statement: nothing of it is kept even committed.
    tx.commit().await.expect("commit");
    assert!(is_missing(&e, &op), "{e}");
    assert_eq!(s.books(&o).await, planned);
    assert_eq!(s.rows().await, rows);

    // Nor does a release of the planned operation give anything back, nor its end.
    let mut tx = s.begin().await;
    admission::release(&mut tx, &op, now_ms())
        .await
        .expect("release after the plan");
    tx.commit().await.expect("commit");
    assert_eq!(s.rows().await, rows);
    ops::complete(&s.db, &op, token, now_ms())
        .await
        .expect("complete");
    assert_eq!(s.books(&o).await, planned, "a planned operation gave back");
    s.finish().await;
}

// --- Settlement ----------------------------------------------------------------------

/// `settle_success` on a refund that already left `Draft` answers false and moves no
/// money a second time, whether the caller's copy of the refund is stale or fresh, and
/// whatever settlement it asks for.
async fn a_second_success_on_a_settled_refund_moves_no_money(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let w = draft(&s, &o, &op, 1, 400, 100).await;
    let before = s.books(&o).await;
    let mut tx = s.begin().await;
    assert!(sql::settle_success(
        &mut tx,
        &w,
        &success(),
        Settlement::Now,
        &line_id(),
        now_ms()
    )
    .await
    .expect("settle"));
    tx.commit().await.expect("commit");
    let settled = s.books(&o).await;
    assert_eq!(
        settled,
        Books {
            summary_refunded: 400,
            summary_pending: 0,
            a_applied: 400,
            a_pending: 0,
            lines: 1,
            ..before
        }
    );
    assert_eq!(
        s.refund_status(w.id.as_str()).await.0,
        RefundStatus::Processed.as_str()
    );

    let rows = s.rows().await;
    let fresh = s.work(w.id.as_str()).await;
    for (copy, settlement) in [
        (&w, Settlement::Now),
        (&fresh, Settlement::Now),
        (&w, Settlement::Notified),
        (&fresh, Settlement::PollAt(now_ms())),
    ] {
        let mut tx = s.begin().await;
        let again =
            sql::settle_success(&mut tx, copy, &success(), settlement, &line_id(), now_ms())
                .await
                .expect("settle again");
        tx.commit().await.expect("commit");
        assert!(!again, "settled twice ({settlement:?})");
        assert_eq!(s.books(&o).await, settled);
        assert_eq!(s.rows().await, rows);
    }
    s.finish().await;
}

/// `settle_failure` after a success answers false: the reservation is not released, the
/// credit memo not credited, no exception raised.
async fn a_failure_after_a_success_moves_no_money(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let w = draft(&s, &o, &op, 1, 400, 100).await;
    let mut tx = s.begin().await;
    assert!(sql::settle_success(
        &mut tx,
        &w,
        &success(),
        Settlement::Now,
        &line_id(),
        now_ms()
    )
    .await
    .expect("settle"));
    tx.commit().await.expect("commit");
    let settled = s.books(&o).await;
    let rows = s.rows().await;
    let pe = exception_id();
    let mut tx = s.begin().await;
    let failed = sql::settle_failure(&mut tx, &w, &failure(), &exception(&w, &pe), now_ms())
        .await
        .expect("fail after success");
    tx.commit().await.expect("commit");
    assert!(!failed);
    assert_eq!(s.books(&o).await, settled);
    assert_eq!(s.rows().await, rows);
    s.finish().await;
}

/// A failure releases the reservation and credits the memo back once: a second failure,
/// or a success after it, answers false and moves nothing.
async fn a_failed_refund_is_released_only_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let w = draft(&s, &o, &op, 1, 400, 100).await;
    let before = s.books(&o).await;
    let pe = exception_id();
    let mut tx = s.begin().await;
    assert!(
        sql::settle_failure(&mut tx, &w, &failure(), &exception(&w, &pe), now_ms())
            .await
            .expect("fail")
    );
    tx.commit().await.expect("commit");
    let failed = s.books(&o).await;
    assert_eq!(
        failed,
        Books {
            summary_pending: 0,
            a_pending: 0,
            memo_balance: 300,
            active_exceptions: 1,
            exceptions: 1,
            ..before
        }
    );
    assert_eq!(
        s.refund_status(w.id.as_str()).await.0,
        RefundStatus::Canceled.as_str()
    );

    let rows = s.rows().await;
    let pe = exception_id();
    let mut tx = s.begin().await;
    let again = sql::settle_failure(&mut tx, &w, &failure(), &exception(&w, &pe), now_ms())
        .await
        .expect("fail again");
    let success_after = sql::settle_success(
        &mut tx,
        &w,
        &success(),
        Settlement::Now,
        &line_id(),
        now_ms(),
    )
    .await
    .expect("succeed after failing");
    tx.commit().await.expect("commit");
    assert!(!again && !success_after);
    assert_eq!(s.books(&o).await, failed);
    assert_eq!(s.rows().await, rows);
    s.finish().await;
}

/// A success that settles later leaves `Draft` once and keeps the money reserved; only
/// `finish_pending` moves it, once: a second finish, of either outcome, answers false.
async fn a_pending_refund_moves_its_money_once_when_it_finishes(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let w = draft(&s, &o, &op, 1, 400, 100).await;
    let before = s.books(&o).await;
    let mut tx = s.begin().await;
    assert!(sql::settle_success(
        &mut tx,
        &w,
        &success(),
        Settlement::Notified,
        &line_id(),
        now_ms()
    )
    .await
    .expect("accepted"));
    tx.commit().await.expect("commit");
    assert_eq!(s.books(&o).await, before, "a Pending refund moved money");
    assert_eq!(
        s.refund_status(w.id.as_str()).await.0,
        RefundStatus::Pending.as_str()
    );
    let rows = s.rows().await;
    let mut tx = s.begin().await;
    let again = sql::settle_success(
        &mut tx,
        &w,
        &success(),
        Settlement::Now,
        &line_id(),
        now_ms(),
    )
    .await
    .expect("settle a Pending refund as if Draft");
    tx.commit().await.expect("commit");
    assert!(!again);
    assert_eq!(s.rows().await, rows);

    let pending = s.work(w.id.as_str()).await;
    let pe = exception_id();
    let mut tx = s.begin().await;
    assert!(sql::finish_pending(
        &mut tx,
        &pending,
        &success(),
        true,
        &line_id(),
        &exception(&pending, &pe),
        now_ms()
    )
    .await
    .expect("finish"));
    tx.commit().await.expect("commit");
    let settled = s.books(&o).await;
    assert_eq!(
        settled,
        Books {
            summary_refunded: 400,
            summary_pending: 0,
            a_applied: 400,
            a_pending: 0,
            lines: 1,
            ..before
        }
    );

    let rows = s.rows().await;
    for outcome in [true, false] {
        let pe = exception_id();
        let mut tx = s.begin().await;
        let again = sql::finish_pending(
            &mut tx,
            &pending,
            &if outcome { success() } else { failure() },
            outcome,
            &line_id(),
            &exception(&pending, &pe),
            now_ms(),
        )
        .await
        .expect("finish again");
        tx.commit().await.expect("commit");
        assert!(!again, "finished twice (success: {outcome})");
        assert_eq!(s.books(&o).await, settled);
        assert_eq!(s.rows().await, rows);
    }
    s.finish().await;
}

/// `finish_pending` on a refund that is not `Pending` — still `Draft`, `Processed`, or
/// `Canceled` — answers false and moves nothing, for either outcome.
async fn finishing_a_refund_that_is_not_pending_is_refused(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let drafted = draft(&s, &o, &op, 1, 100, 0).await;
    let processed = draft(&s, &o, &op, 2, 100, 0).await;
    let canceled = draft(&s, &o, &op, 3, 100, 50).await;
    let mut tx = s.begin().await;
    assert!(sql::settle_success(
        &mut tx,
        &processed,
        &success(),
        Settlement::Now,
        &line_id(),
        now_ms()
    )
    .await
    .expect("settle"));
    let pe = exception_id();
    assert!(sql::settle_failure(
        &mut tx,
        &canceled,
        &failure(),
        &exception(&canceled, &pe),
        now_ms()
    )
    .await
    .expect("fail"));
    tx.commit().await.expect("commit");
    let books = s.books(&o).await;
    let rows = s.rows().await;
    for w in [&drafted, &processed, &canceled] {
        let w = s.work(w.id.as_str()).await;
        for outcome in [true, false] {
            let pe = exception_id();
            let mut tx = s.begin().await;
            let finished = sql::finish_pending(
                &mut tx,
                &w,
                &success(),
                outcome,
                &line_id(),
                &exception(&w, &pe),
                now_ms(),
            )
            .await
            .expect("finish");
            tx.commit().await.expect("commit");
            assert!(!finished, "a {} refund was finished", w.status);
            assert_eq!(s.books(&o).await, books);
            assert_eq!(s.rows().await, rows);
        }
    }
    assert_eq!(
        s.refund_status(drafted.id.as_str()).await.0,
        RefundStatus::Draft.as_str()
    );
    s.finish().await;
}

// --- Reconciliation ------------------------------------------------------------------

/// A due lookup is taken by one worker: `take_reconciliation` for the same lookup a
/// second time answers false, and the lookup count and next lookup stay the first
/// taker's.
async fn a_due_lookup_is_taken_only_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let w = draft(&s, &o, &op, 1, 100, 0).await;
    let due_at = now_ms();
    let mut tx = s.begin().await;
    sql::start_reconciliation(&mut tx, w.id.as_str(), due_at, due_at)
        .await
        .expect("start");
    tx.commit().await.expect("commit");
    let due = sql::due_reconciliations(&s.db, now_ms(), 10)
        .await
        .expect("due");
    assert_eq!(due.iter().map(|d| &d.id).collect::<Vec<_>>(), [&w.id]);
    let seen = due[0].lookups;
    let next = now_ms() + 60_000;
    let mut tx = s.begin().await;
    assert!(
        sql::take_reconciliation(&mut tx, w.id.as_str(), seen, next, now_ms())
            .await
            .expect("take")
    );
    tx.commit().await.expect("commit");
    let rows = s.rows().await;
    let mut tx = s.begin().await;
    let again = sql::take_reconciliation(&mut tx, w.id.as_str(), seen, next + 1, now_ms())
        .await
        .expect("take again");
    tx.commit().await.expect("commit");
    assert!(!again, "a lookup was taken twice");
    assert_eq!(s.rows().await, rows);
    let lookups = "SELECT lookups FROM refunds WHERE id = $1";
    let next_at = "SELECT next_lookup_at FROM refunds WHERE id = $1";
    assert_eq!(s.int(lookups, w.id.as_str()).await, seen + 1);
    assert_eq!(s.int(next_at, w.id.as_str()).await, next);
    s.finish().await;
}

/// A refund that is not under reconciliation (a `Draft` not being looked up, a settled
/// one) has no lookup to take: `take_reconciliation` answers false and changes nothing.
async fn a_refund_not_under_reconciliation_has_no_lookup_to_take(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let drafted = draft(&s, &o, &op, 1, 100, 0).await;
    let processed = draft(&s, &o, &op, 2, 100, 0).await;
    let mut tx = s.begin().await;
    assert!(sql::settle_success(
        &mut tx,
        &processed,
        &success(),
        Settlement::Now,
        &line_id(),
        now_ms()
    )
    .await
    .expect("settle"));
    tx.commit().await.expect("commit");
    let rows = s.rows().await;
    for w in [&drafted, &processed] {
        let mut tx = s.begin().await;
        let taken = sql::take_reconciliation(&mut tx, w.id.as_str(), 0, now_ms(), now_ms())
            .await
            .expect("take");
        tx.commit().await.expect("commit");
        assert!(!taken, "took a lookup of {}", w.id);
        assert_eq!(s.rows().await, rows);
    }
    s.finish().await;
}

/// Reconciliation starts only on a `Draft` that is not under it yet: a second start, or
/// one on a settled refund, is `Missing` and changes nothing.
async fn reconciliation_starts_once_and_only_on_a_draft(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let drafted = draft(&s, &o, &op, 1, 100, 0).await;
    let processed = draft(&s, &o, &op, 2, 100, 0).await;
    let first = now_ms();
    let mut tx = s.begin().await;
    sql::start_reconciliation(&mut tx, drafted.id.as_str(), first, first)
        .await
        .expect("start");
    assert!(sql::settle_success(
        &mut tx,
        &processed,
        &success(),
        Settlement::Now,
        &line_id(),
        now_ms()
    )
    .await
    .expect("settle"));
    tx.commit().await.expect("commit");
    let rows = s.rows().await;
    for w in [&drafted, &processed] {
        let mut tx = s.begin().await;
        let later = first + 1000;
        let e = sql::start_reconciliation(&mut tx, w.id.as_str(), later, later)
            .await
            .expect_err("start again");
        tx.commit().await.expect("commit");
        assert!(is_missing(&e, w.id.as_str()), "{e}");
        assert_eq!(s.rows().await, rows);
    }
    assert_eq!(
        s.refund_status(drafted.id.as_str()).await,
        (
            RefundStatus::Draft.as_str().into(),
            ReconcileState::Pending.as_str().into()
        )
    );
    s.finish().await;
}

/// Only a refund being looked up is handed to a person, once: a hand-over of a `Draft`
/// not under reconciliation, or a second hand-over, is `Missing`, raises no exception and
/// changes nothing.
async fn only_a_refund_being_looked_up_is_handed_over_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let w = draft(&s, &o, &op, 1, 100, 0).await;
    let hand_over = || {
        let (s, w) = (&s, &w);
        async move {
            let pe = exception_id();
            let mut tx = s.begin().await;
            let handed =
                sql::hand_over_reconciliation(&mut tx, w.id.as_str(), &exception(w, &pe), now_ms())
                    .await;
            // A refusal is its first statement's: nothing of it is kept even committed.
            tx.commit().await.expect("commit");
            handed
        }
    };
    let rows = s.rows().await;
    let e = hand_over().await.expect_err("a refund not being looked up");
    assert!(is_missing(&e, w.id.as_str()), "{e}");
    assert_eq!(s.rows().await, rows);

    let mut tx = s.begin().await;
    sql::start_reconciliation(&mut tx, w.id.as_str(), now_ms(), now_ms())
        .await
        .expect("start");
    tx.commit().await.expect("commit");
    let before = s.books(&o).await;
    hand_over().await.expect("hand over");
    let handed = s.books(&o).await;
    assert_eq!(
        handed,
        Books {
            active_exceptions: before.active_exceptions + 1,
            exceptions: before.exceptions + 1,
            ..before
        }
    );
    assert_eq!(
        s.refund_status(w.id.as_str()).await,
        (
            RefundStatus::Draft.as_str().into(),
            ReconcileState::Manual.as_str().into()
        )
    );
    let rows = s.rows().await;
    let e = hand_over().await.expect_err("handed over twice");
    assert!(is_missing(&e, w.id.as_str()), "{e}");
    assert_eq!(s.books(&o).await, handed);
    assert_eq!(s.rows().await, rows);
    s.finish().await;
}

// --- The queue: leases, lines, cancel ------------------------------------------------

/// `fence` with a wrong token, a stale one (after the lease was taken over), or on an
/// operation that is not running is `LeaseLost`, and the row is as it was; the holder's
/// token passes.
async fn a_fence_without_the_lease_is_lease_lost(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let run = s.claim("worker-a").await;
    assert_eq!(run.len(), 1);
    let first = run[0].lease_token;
    let fence = |token: i64, id: String| {
        let s = &s;
        async move {
            let mut tx = s.begin().await;
            let fenced = ops::fence(&mut tx, &id, token, now_ms()).await;
            tx.commit().await.expect("commit");
            fenced
        }
    };
    let rows = s.rows().await;
    for token in [first + 1, first - 1] {
        let e = fence(token, op.clone()).await.expect_err("a wrong token");
        assert!(is_lease_lost(&e, &op), "{e}");
        assert_eq!(s.rows().await, rows, "a fence with token {token} wrote");
    }

    ops::expire_lease(&s.db, &op).await.expect("expire");
    let rescue = s.claim("worker-b").await;
    assert_eq!(rescue.len(), 1);
    let second = rescue[0].lease_token;
    assert!(second > first, "a rescue bumps the token");
    let rows = s.rows().await;
    let e = fence(first, op.clone()).await.expect_err("a stale token");
    assert!(is_lease_lost(&e, &op), "{e}");
    assert_eq!(s.rows().await, rows);

    // Not running: a New operation (its token is 0) is fenced by nobody.
    let waiting = enqueue(&s, &o, None).await;
    let rows = s.rows().await;
    let e = fence(0, waiting.clone())
        .await
        .expect_err("a New operation");
    assert!(is_lease_lost(&e, &waiting), "{e}");
    assert_eq!(s.rows().await, rows);

    fence(second, op.clone()).await.expect("the holder's token");
    s.finish().await;
}

/// After a take-over, the worker that lost the lease can neither complete nor fail the
/// run (with or without a retry) nor renew it: each is refused, and the new holder's run
/// — its status, token, holder and admission — is untouched.
async fn a_stale_worker_cannot_end_or_renew_the_new_holders_run(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, Some((500, 200))).await;
    let stale = s.claim("worker-a").await[0].lease_token;
    ops::expire_lease(&s.db, &op).await.expect("expire");
    let fresh = s.claim("worker-b").await[0].lease_token;
    let held = s.operation(&op).await;
    assert_eq!(
        held,
        Operation {
            status: "Running".into(),
            lease_token: fresh,
            lease_owner: Some("worker-b".into()),
            admitted: 500,
            admitted_credit_memo: 200,
        }
    );
    let books = s.books(&o).await;
    let rows = s.rows().await;
    let e = ops::complete(&s.db, &op, stale, now_ms())
        .await
        .expect_err("complete");
    assert!(is_lease_lost(&e, &op), "{e}");
    let e = ops::fail(&s.db, &op, stale, "stale", None, now_ms())
        .await
        .expect_err("fail");
    assert!(is_lease_lost(&e, &op), "{e}");
    let e = ops::fail(&s.db, &op, stale, "stale", Some(1000), now_ms())
        .await
        .expect_err("fail with a retry");
    assert!(is_lease_lost(&e, &op), "{e}");
    assert!(!ops::heartbeat(&s.db, &op, stale, LEASE_MS, now_ms())
        .await
        .expect("heartbeat"));
    assert_eq!(s.operation(&op).await, held);
    assert_eq!(s.books(&o).await, books);
    assert_eq!(s.rows().await, rows);

    // The holder's token still works.
    assert!(ops::heartbeat(&s.db, &op, fresh, LEASE_MS, now_ms())
        .await
        .expect("heartbeat"));
    ops::complete(&s.db, &op, fresh, now_ms())
        .await
        .expect("the holder completes");
    s.finish().await;
}

/// A Running operation cannot be canceled: `cancel` answers false and its run and its
/// admission are as they were; neither can one that finished, and an operation that is not
/// running has no lease to expire.
async fn a_running_operation_cannot_be_canceled(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, Some((500, 200))).await;
    let token = s.claim("worker-a").await[0].lease_token;
    let books = s.books(&o).await;
    let rows = s.rows().await;
    assert!(!ops::cancel(&s.db, &op, now_ms()).await.expect("cancel"));
    assert_eq!(s.operation(&op).await.status, "Running");
    assert_eq!(s.books(&o).await, books);
    assert_eq!(s.rows().await, rows);

    ops::complete(&s.db, &op, token, now_ms())
        .await
        .expect("complete");
    let books = s.books(&o).await;
    let rows = s.rows().await;
    assert!(!ops::cancel(&s.db, &op, now_ms()).await.expect("cancel"));
    let e = ops::expire_lease(&s.db, &op)
        .await
        .expect_err("expire a finished operation's lease");
    assert!(is_missing(&e, &op), "{e}");
    assert_eq!(s.books(&o).await, books);
    assert_eq!(s.rows().await, rows);
    s.finish().await;
}

/// Only the first unplanned operation of a line is claimed, and a live lease is not
/// taken over: a claim then takes nothing and changes nothing. Once the first has
/// planned, the next is claimed; a plan is recorded once (`mark_planned` again is
/// `Missing`).
async fn only_the_first_of_a_line_is_claimed_and_a_live_lease_is_kept(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let first = enqueue(&s, &o, None).await;
    let second = enqueue(&s, &o, None).await;
    let run = s.claim("worker-a").await;
    assert_eq!(run.iter().map(|c| &c.id).collect::<Vec<_>>(), [&first]);
    let rows = s.rows().await;
    assert!(
        s.claim("worker-b").await.is_empty(),
        "claimed past the line or a live lease"
    );
    assert_eq!(s.rows().await, rows);

    let mut tx = s.begin().await;
    ops::fence(&mut tx, &first, run[0].lease_token, now_ms())
        .await
        .expect("fence");
    sql::mark_planned(&mut tx, &first, now_ms())
        .await
        .expect("plan");
    tx.commit().await.expect("commit");
    let rows = s.rows().await;
    let mut tx = s.begin().await;
    let e = sql::mark_planned(&mut tx, &first, now_ms())
        .await
        .expect_err("planned twice");
    tx.commit().await.expect("commit");
    assert!(is_missing(&e, &first), "{e}");
    assert_eq!(s.rows().await, rows);

    let next = s.claim("worker-b").await;
    assert_eq!(next.iter().map(|c| &c.id).collect::<Vec<_>>(), [&second]);
    s.finish().await;
}

// --- Records -------------------------------------------------------------------------

/// An `Idempotency-Key` is remembered once: a second request's `remember` answers false
/// and the key keeps the first request's hash and operation.
async fn an_idempotency_key_is_remembered_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let mut tx = s.begin().await;
    assert!(
        records::remember_idempotency_key(&mut tx, "key-1", "hash-1", "op-1", now_ms())
            .await
            .expect("remember")
    );
    tx.commit().await.expect("commit");
    let rows = s.rows().await;
    let mut tx = s.begin().await;
    let again = records::remember_idempotency_key(&mut tx, "key-1", "hash-2", "op-2", now_ms())
        .await
        .expect("remember again");
    tx.commit().await.expect("commit");
    assert!(!again);
    assert_eq!(s.rows().await, rows);
    let mut tx = s.begin().await;
    let kept = records::idempotency_key(&mut tx, "key-1", 0)
        .await
        .expect("look up")
        .expect("kept");
    tx.commit().await.expect("commit");
    assert_eq!(
        (kept.request_hash.as_str(), kept.operation_id.as_str()),
        ("hash-1", "op-1")
    );
    s.finish().await;
}

/// A payment that already belongs to a summary is not taken by another: creating a
/// summary over it answers false, and once rolled back there is no new summary and the
/// other payments are still free; over free payments only, it succeeds.
async fn a_payment_of_one_summary_is_not_taken_by_another(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let free = id(ObjectType::Payment);
    let mut tx = s.begin().await;
    let mut values = payment(&o, &free, 250, "Processed");
    values[1].1 = Value::Null;
    values.push(("currency_iso_code", text("EUR")));
    values.push(("created_date", Value::Int(now_ms())));
    values.push(("last_modified_date", Value::Int(now_ms())));
    records::insert(&mut tx, ObjectType::Payment, &values)
        .await
        .expect("a free payment");
    tx.commit().await.expect("commit");
    let rows = s.rows().await;
    let create = |ids: Vec<String>| {
        let (s, o) = (&s, &o);
        async move {
            let mut tx = s.begin().await;
            let heads = records::payment_heads(&mut tx, &ids).await.expect("heads");
            let summary = id(ObjectType::OrderPaymentSummary);
            let created = records::create_order_payment_summary(
                &mut tx,
                &summary,
                &o.order,
                &heads,
                "EUR",
                now_ms(),
            )
            .await
            .expect("create");
            if created {
                tx.commit().await.expect("commit");
            } else {
                // The summary and the free payments were written first: the caller rolls back.
                tx.rollback().await.expect("rollback");
            }
            created
        }
    };
    assert!(!create(vec![free.clone(), o.a.clone()]).await);
    assert_eq!(s.rows().await, rows);
    assert!(create(vec![free.clone()]).await);
    let summary = s
        .text(
            "SELECT order_payment_summary_id FROM payments WHERE id = $1",
            &free,
        )
        .await;
    assert!(summary.is_some_and(|id| id != o.summary));
    s.finish().await;
}

/// Resolving a process exception twice lowers the order's active count once; an
/// exception that does not exist answers false and changes no count.
async fn a_process_exception_leaves_the_active_count_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let pe = exception_id();
    let now = now_ms();
    let mut tx = s.begin().await;
    sql::insert_process_exception(
        &mut tx,
        &NewProcessException::high(&pe, "m", "d", &o.order, &o.order, "op", now),
    )
    .await
    .expect("raise");
    tx.commit().await.expect("commit");
    let before = s.books(&o).await;
    assert_eq!(before.active_exceptions, 1);
    let set = |id: String, status: &'static str| {
        let s = &s;
        async move {
            let mut tx = s.begin().await;
            let found = records::set_process_exception_status(&mut tx, &id, status, now)
                .await
                .expect("set status");
            tx.commit().await.expect("commit");
            found
        }
    };
    assert!(set(pe.clone(), "Resolved").await);
    let resolved = s.books(&o).await;
    assert_eq!(
        resolved,
        Books {
            active_exceptions: 0,
            ..before
        }
    );
    let rows = s.rows().await;
    assert!(set(pe.clone(), "Resolved").await);
    assert!(set(pe.clone(), "Voided").await);
    assert!(!set(exception_id(), "Resolved").await);
    assert_eq!(s.books(&o).await, resolved);
    // Only the exception's own status moved (Voided); no count did.
    let status = s
        .text("SELECT status FROM process_exceptions WHERE id = $1", &pe)
        .await;
    assert_eq!(status.as_deref(), Some("Voided"));
    assert!(set(pe.clone(), "Resolved").await);
    assert_eq!(s.rows().await, rows);
    s.finish().await;
}

/// A provider call is counted, and its log completed, only on rows that exist: on a
/// missing refund or log row each is `Missing` and writes nothing.
async fn a_call_is_recorded_only_against_rows_that_exist(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let rows = s.rows().await;
    let missing_refund = id(ObjectType::Refund);
    let missing_log = id(ObjectType::PaymentGatewayLog);
    let mut tx = s.begin().await;
    let e = sql::count_attempt(&mut tx, &missing_refund, now_ms())
        .await
        .expect_err("count a missing refund");
    assert!(is_missing(&e, &missing_refund), "{e}");
    let e = sql::finish_log(&mut tx, &missing_log, &o.summary, &success(), now_ms())
        .await
        .expect_err("finish a missing log");
    assert!(is_missing(&e, &missing_log), "{e}");
    tx.commit().await.expect("commit");
    assert_eq!(s.rows().await, rows);

    // Control: on rows that exist, both write.
    let op = enqueue(&s, &o, None).await;
    let w = draft(&s, &o, &op, 1, 100, 0).await;
    let log = id(ObjectType::PaymentGatewayLog);
    let mut tx = s.begin().await;
    sql::count_attempt(&mut tx, w.id.as_str(), now_ms())
        .await
        .expect("count");
    sql::insert_log(
        &mut tx,
        &NewLog {
            id: &log,
            interaction_type: "ReferencedRefund",
            interaction_status: InteractionStatus::Initiated,
            sf_ref_number: w.id.as_str(),
            request: None,
            refund_id: w.id.as_str(),
            summary_id: &o.summary,
            gateway_id: &o.gateway,
            is_notification: false,
            currency: "EUR",
            now: now_ms(),
        },
    )
    .await
    .expect("log");
    sql::finish_log(&mut tx, &log, &o.summary, &success(), now_ms())
        .await
        .expect("finish the log");
    tx.commit().await.expect("commit");
    assert_eq!(s.work(w.id.as_str()).await.attempts, 1);
    s.finish().await;
}

/// Principals are unique by name: a second client or user of a name answers false and
/// changes nothing; revoking a client that does not exist answers false.
async fn a_principal_name_is_taken_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let client = |n: u8| NewClient {
        id: if n == 1 { "c-1" } else { "c-2" },
        name: "shop",
        client_id: if n == 1 { "client-1" } else { "client-2" },
        secret_hash: "hash",
        user_id: "u-1",
        role: Role::Standard,
    };
    assert!(auth::insert_client(&s.db, &client(1), now_ms())
        .await
        .expect("client"));
    assert!(
        auth::insert_user(&s.db, "u-1", "alice", "hash", Role::Standard, now_ms())
            .await
            .expect("user")
    );
    let rows = s.rows().await;
    assert!(!auth::insert_client(&s.db, &client(2), now_ms())
        .await
        .expect("client again"));
    assert!(
        !auth::insert_user(&s.db, "u-2", "alice", "other", Role::Admin, now_ms())
            .await
            .expect("user again")
    );
    assert!(!auth::revoke_client(&s.db, "nobody", now_ms())
        .await
        .expect("revoke"));
    assert_eq!(s.rows().await, rows);
    let kept = auth::client(&s.db, "client-1").await.expect("client");
    assert!(kept.is_some());
    assert!(auth::client(&s.db, "client-2")
        .await
        .expect("client")
        .is_none());
    s.finish().await;
}

// --- Concurrent transactions ---------------------------------------------------------

/// Two admissions on one order that each fit what it has, but not together: the second
/// (here without the order's lock, so only its conditional statement stands between
/// them) answers false once the first commits, and only the first is set aside.
async fn concurrent_admissions_never_both_take_the_last_money(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let before = s.books(&o).await;
    let mut first = s.begin().await;
    assert!(admission::admit_on_order(&mut first, &o.order, 600)
        .await
        .expect("first"));
    let (db, order) = (s.db.clone(), o.order.clone());
    let second = race(&s, first, async move {
        let mut tx = db.begin().await.expect("begin");
        let admitted = admission::admit_on_order(&mut tx, &order, 600)
            .await
            .expect("second");
        tx.commit().await.expect("commit");
        admitted
    })
    .await;
    assert!(!second, "both admissions took the order's money");
    assert_eq!(
        s.books(&o).await,
        Books {
            order_admitted: 600,
            ..before
        }
    );
    s.finish().await;
}

/// Two releases of one operation's admission at once (each read what it held before the
/// other wrote): it is given back once, and the second is refused (`Missing`, rolled
/// back) or finds nothing left to give — although the order and the memo hold enough for
/// the other operations that a second give-back would go through. Once with a part of
/// the credit memo held, once without (where only the order's amount tells the two apart).
async fn concurrent_releases_of_one_admission_give_it_back_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let with_memo = enqueue(&s, &o, Some((300, 100))).await;
    let without_memo = enqueue(&s, &o, Some((300, 0))).await;
    let _other = enqueue(&s, &o, Some((400, 200))).await;
    // What the order and the memo hold once each operation gave back once.
    for (op, held) in [(&with_memo, (700, 200)), (&without_memo, (400, 200))] {
        let mut first = s.begin().await;
        admission::release(&mut first, op, now_ms())
            .await
            .expect("first release");
        let (db, id) = (s.db.clone(), op.clone());
        let second = race(&s, first, async move {
            let mut tx = db.begin().await.expect("begin");
            let released = admission::release(&mut tx, &id, now_ms()).await;
            match &released {
                Ok(()) => tx.commit().await.expect("commit"),
                Err(_) => tx.rollback().await.expect("rollback"),
            }
            released
        })
        .await;
        if let Err(e) = &second {
            assert!(is_missing(e, op), "{e}");
        }
        let books = s.books(&o).await;
        assert_eq!(
            (books.order_admitted, books.memo_admitted),
            held,
            "{op} was given back twice ({second:?})"
        );
        assert_eq!(s.operation(op).await.admitted, 0);
    }
    s.finish().await;
}

/// Two answers for one `Draft` refund at once (a worker's call and a notification): one
/// settles it, the other answers false, and the money moves once.
async fn concurrent_settlements_of_one_refund_move_its_money_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let op = enqueue(&s, &o, None).await;
    let w = draft(&s, &o, &op, 1, 400, 100).await;
    let before = s.books(&o).await;
    let mut first = s.begin().await;
    assert!(sql::settle_success(
        &mut first,
        &w,
        &success(),
        Settlement::Now,
        &line_id(),
        now_ms()
    )
    .await
    .expect("first"));
    let db = s.db.clone();
    let stale = w.clone();
    let second = race(&s, first, async move {
        let pe = exception_id();
        let mut tx = db.begin().await.expect("begin");
        let failed = sql::settle_failure(
            &mut tx,
            &stale,
            &failure(),
            &exception(&stale, &pe),
            now_ms(),
        )
        .await
        .expect("second");
        tx.commit().await.expect("commit");
        failed
    })
    .await;
    assert!(!second, "a refund was settled twice");
    assert_eq!(
        s.books(&o).await,
        Books {
            summary_refunded: 400,
            summary_pending: 0,
            a_applied: 400,
            a_pending: 0,
            lines: 1,
            ..before
        }
    );
    s.finish().await;
}

/// Runs each `async fn(Backend)` above once per database: `<name>::sqlite` and
/// `<name>::postgres`.
/// No statement that moves money takes a negative or zero amount: each would move money the
/// other way (a negative reservation releases someone else's, a negative admission lets
/// later ones take more, a negative take raises a memo above its total). Each is refused by
/// its first statement, so nothing is kept even when the transaction commits.
async fn a_negative_or_zero_amount_moves_no_money(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    // Something reserved and admitted, that a negative amount could give back.
    let mut tx = s.begin().await;
    sql::reserve(&mut tx, &o.summary, &o.a, 100, now_ms())
        .await
        .expect("reserve");
    assert!(admission::admit_on_order(&mut tx, &o.order, 200)
        .await
        .expect("admit"));
    assert!(admission::admit_on_credit_memo(&mut tx, &o.memo, 50)
        .await
        .expect("admit on memo"));
    tx.commit().await.expect("commit");
    let before = s.books(&o).await;
    let rows = s.rows().await;
    let op = "0BO000000000000001";
    for amount in [-50, 0] {
        let mut tx = s.begin().await;
        let e = sql::reserve(&mut tx, &o.summary, &o.a, amount, now_ms())
            .await
            .expect_err("a reservation of nothing or less");
        assert!(is_missing(&e, &o.summary), "{amount}: {e}");
        let e = sql::take_from_credit_memo(&mut tx, &o.memo, amount, now_ms())
            .await
            .expect_err("a take of nothing or less");
        assert!(is_missing(&e, &o.memo), "{amount}: {e}");
        let e = sql::apply_credit_memo(
            &mut tx,
            &id(ObjectType::CreditMemoInvApplication),
            &o.memo,
            &o.invoice,
            amount,
            op,
            "EUR",
            now_ms(),
        )
        .await
        .expect_err("an application of nothing or less");
        assert!(is_missing(&e, &o.memo), "{amount}: {e}");
        assert!(!admission::admit_on_order(&mut tx, &o.order, amount)
            .await
            .expect("admit"));
        assert!(!admission::admit_on_credit_memo(&mut tx, &o.memo, amount)
            .await
            .expect("admit on memo"));
        tx.commit().await.expect("commit");
        assert_eq!(s.books(&o).await, before, "{amount}");
        assert_eq!(s.rows().await, rows, "{amount}");
    }
    s.finish().await;
}

/// Two transactions resolving one process exception at once lower the order's active count
/// once: the second waits for the first (PostgreSQL's row lock; SQLite's single writer)
/// and then sees it resolved.
async fn concurrent_resolutions_of_one_exception_count_once(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let o = order(&s).await;
    let (pe, other) = (exception_id(), exception_id());
    let now = now_ms();
    let mut tx = s.begin().await;
    for id in [&pe, &other] {
        sql::insert_process_exception(
            &mut tx,
            &NewProcessException::high(id, "m", "d", &o.order, &o.order, "op", now),
        )
        .await
        .expect("raise");
    }
    tx.commit().await.expect("commit");
    assert_eq!(s.books(&o).await.active_exceptions, 2);
    let mut first = s.begin().await;
    assert!(
        records::set_process_exception_status(&mut first, &pe, "Resolved", now)
            .await
            .expect("first resolution")
    );
    let (db, id) = (s.db.clone(), pe.clone());
    let second = race(&s, first, async move {
        let mut tx = db.begin().await.expect("begin");
        let found = records::set_process_exception_status(&mut tx, &id, "Voided", now)
            .await
            .expect("second resolution");
        tx.commit().await.expect("commit");
        found
    })
    .await;
    assert!(second);
    assert_eq!(
        s.books(&o).await.active_exceptions,
        1,
        "the other exception is still open"
    );
    s.finish().await;
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(refunds_store::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(refunds_store::Backend::Postgres).await
                }
            }
        )*
    };
}

on_both!(
    a_reservation_beyond_what_is_available_is_refused,
    a_negative_or_zero_amount_moves_no_money,
    money_taken_from_a_credit_memo_beyond_its_balance_is_refused,
    an_invoice_is_paid_from_a_credit_memo_only_up_to_its_balance,
    an_admission_beyond_what_the_order_has_left_is_refused,
    an_admission_beyond_the_credit_memo_balance_is_refused,
    canceling_an_admitted_operation_gives_its_money_back_exactly_once,
    an_operation_that_ends_before_planning_gives_its_admission_back_once,
    an_admission_handed_to_a_plan_is_not_given_back_again,
    a_second_success_on_a_settled_refund_moves_no_money,
    a_failure_after_a_success_moves_no_money,
    a_failed_refund_is_released_only_once,
    a_pending_refund_moves_its_money_once_when_it_finishes,
    finishing_a_refund_that_is_not_pending_is_refused,
    a_due_lookup_is_taken_only_once,
    a_refund_not_under_reconciliation_has_no_lookup_to_take,
    reconciliation_starts_once_and_only_on_a_draft,
    only_a_refund_being_looked_up_is_handed_over_once,
    a_fence_without_the_lease_is_lease_lost,
    a_stale_worker_cannot_end_or_renew_the_new_holders_run,
    a_running_operation_cannot_be_canceled,
    only_the_first_of_a_line_is_claimed_and_a_live_lease_is_kept,
    an_idempotency_key_is_remembered_once,
    a_payment_of_one_summary_is_not_taken_by_another,
    a_process_exception_leaves_the_active_count_once,
    a_call_is_recorded_only_against_rows_that_exist,
    a_principal_name_is_taken_once,
    concurrent_admissions_never_both_take_the_last_money,
    concurrent_releases_of_one_admission_give_it_back_once,
    concurrent_settlements_of_one_refund_move_its_money_once,
    concurrent_resolutions_of_one_exception_count_once,
);
