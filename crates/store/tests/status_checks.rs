//! The status columns hold only their enum's values, and a refund only the lifecycle
//! combinations its moves reach (migration 0007: CHECK constraints on PostgreSQL,
//! triggers on SQLite); the worker's rows read back as typed values, and a row that does
//! not parse is refused as corrupt. Each test runs on SQLite, and on PostgreSQL when
//! `REFUNDS_TEST_POSTGRES_URL` is set (required when `CI=true`).

use refunds_domain::{
    Currency, GatewayStatus, InteractionStatus, Money, ObjectType, ProcessExceptionStatus,
    ProviderType, ReconcileState, RefundState, RefundStatus, SfId,
};
use refunds_store::schema::{self, object_def};
use refunds_store::FieldKind;
use refunds_store::{Backend, StoreError};

mod common;

use common::{scratch, Scratch};

/// Plain SQL on the scratch database, outside the store's statements.
impl Scratch {
    async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        sqlx::query(sql)
            .execute(self.db.pool())
            .await
            .map(|r| r.rows_affected())
    }

    async fn text(&self, sql: &str) -> String {
        sqlx::query_scalar(sql)
            .fetch_one(self.db.pool())
            .await
            .expect(sql)
    }
}

/// Ids of one order with a gateway, a payment, an operation, a Draft refund, a gateway
/// log and a process exception, written with plain SQL (what the checks see, not what
/// the service would write).
struct Rows {
    refund: SfId,
    operation: SfId,
    summary: SfId,
    payment: SfId,
    gateway: SfId,
    order: SfId,
    log: SfId,
    exception: SfId,
}

async fn rows(s: &Scratch, provider_type: &str) -> Rows {
    let ids = Rows {
        refund: SfId::generate(ObjectType::Refund),
        operation: SfId::generate(ObjectType::BackgroundOperation),
        summary: SfId::generate(ObjectType::OrderPaymentSummary),
        payment: SfId::generate(ObjectType::Payment),
        gateway: SfId::generate(ObjectType::PaymentGateway),
        order: SfId::generate(ObjectType::OrderSummary),
        log: SfId::generate(ObjectType::PaymentGatewayLog),
        exception: SfId::generate(ObjectType::ProcessException),
    };
    let Rows {
        refund,
        operation,
        summary,
        payment,
        gateway,
        order,
        log,
        exception,
    } = &ids;
    for sql in [
        format!(
            "INSERT INTO order_summaries (id, order_number, order_life_cycle_type, status, grand_total_amount, \
             currency_iso_code, created_date, last_modified_date) VALUES ('{order}', 'O-1', 'MANAGED', 'Created', \
             1000, 'EUR', 1, 1)"
        ),
        format!(
            "INSERT INTO payment_gateways (id, payment_gateway_name, provider_type, status, created_date, \
             last_modified_date) VALUES ('{gateway}', 'g', '{provider_type}', 'Active', 1, 1)"
        ),
        format!(
            "INSERT INTO order_payment_summaries (id, order_summary_id, captured_amount, pending_refund_amount, \
             currency_iso_code, created_date, last_modified_date) VALUES ('{summary}', '{order}', 1000, 250, 'EUR', 1, 1)"
        ),
        format!(
            "INSERT INTO payments (id, order_payment_summary_id, payment_gateway_id, amount, type, status, \
             gateway_ref_number, pending_refund_amount, currency_iso_code, created_date, last_modified_date) \
             VALUES ('{payment}', '{summary}', '{gateway}', 1000, 'Capture', 'Processed', 'ch_1', 250, 'EUR', 1, 1)"
        ),
        format!(
            "INSERT INTO background_operations (id, name, type, status, parent_key, payload, submitted_at, \
             retry_limit, retry_backoff, process_after, timeout, created_date, last_modified_date) \
             VALUES ('{operation}', 'op', 'EnsureRefunds', 'Running', '{order}', '{{}}', 1, 3, 1000, 1, 60000, 1, 1)"
        ),
        format!(
            "INSERT INTO refunds (id, background_operation_id, leg, order_payment_summary_id, payment_id, \
             payment_gateway_id, amount, credit_memo_amount, status, type, processing_mode, client_context, \
             currency_iso_code, created_date, last_modified_date) VALUES ('{refund}', '{operation}', 0, '{summary}', \
             '{payment}', '{gateway}', 250, 50, 'Draft', 'Referenced', 'Salesforce', 'ctx', 'EUR', 1, 1)"
        ),
        format!(
            "INSERT INTO payment_gateway_logs (id, interaction_type, interaction_status, is_notification, \
             currency_iso_code, created_date, last_modified_date) VALUES ('{log}', 'ReferencedRefund', 'Initiated', \
             'No', 'EUR', 1, 1)"
        ),
        format!(
            "INSERT INTO process_exceptions (id, category, exception_type, status, priority, message, \
             order_summary_id, created_date, last_modified_date) VALUES ('{exception}', 'Payment', \
             'OM Refund Failed', 'New', 'High', 'm', '{order}', 1, 1)"
        ),
    ] {
        s.exec(&sql).await.expect(&sql);
    }
    ids
}

/// A status column, the row of it the test writes, and every value its enum has.
struct Column {
    table: &'static str,
    column: &'static str,
    id: String,
    values: Vec<&'static str>,
}

fn columns(r: &Rows) -> Vec<Column> {
    vec![
        Column {
            table: "refunds",
            column: "status",
            id: r.refund.to_string(),
            // With the reconciliation state `none`, which every status may have; Draft
            // last, as the reconciliation states below need it.
            values: ["Pending", "Processed", "Canceled", "Draft"].to_vec(),
        },
        Column {
            table: "refunds",
            column: "reconcile_state",
            id: r.refund.to_string(),
            // A Draft refund may be in any state but `settling` (see the lifecycle test).
            values: ReconcileState::ALL
                .iter()
                .filter(|&&s| RefundState::new(RefundStatus::Draft, s).is_reachable())
                .map(|s| s.as_str())
                .collect(),
        },
        Column {
            table: "background_operations",
            column: "status",
            id: r.operation.to_string(),
            // Salesforce's whole BackgroundOperation picklist, used or not.
            values: vec![
                "New",
                "Scheduled",
                "Waiting",
                "Running",
                "Complete",
                "Error",
                "Canceled",
                "Merged",
            ],
        },
        Column {
            table: "payment_gateway_logs",
            column: "interaction_status",
            id: r.log.to_string(),
            values: InteractionStatus::ALL.iter().map(|s| s.as_str()).collect(),
        },
        Column {
            table: "process_exceptions",
            column: "status",
            id: r.exception.to_string(),
            values: ProcessExceptionStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect(),
        },
    ]
}

/// Every enum value can be written to its column; anything else — a near miss in case or
/// spacing, a value of another picklist, the empty string — is refused and leaves the row
/// as it was.
async fn status_columns_take_only_their_values(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let r = rows(&s, "Simulator").await;
    for c in columns(&r) {
        let (table, column, id) = (c.table, c.column, &c.id);
        let read = format!("SELECT {column} FROM {table} WHERE id = '{id}'");
        for value in &c.values {
            let sql = format!("UPDATE {table} SET {column} = '{value}' WHERE id = '{id}'");
            assert_eq!(s.exec(&sql).await.expect(&sql), 1, "{sql}");
            assert_eq!(&s.text(&read).await, value);
        }
        let before = s.text(&read).await;
        let lower = c.values[0].to_lowercase();
        let upper = c.values[0].to_uppercase();
        let padded = format!("{} ", c.values[0]);
        for bad in [
            lower.as_str(),
            upper.as_str(),
            padded.as_str(),
            "",
            "Failed!",
            "Bogus",
        ] {
            if c.values.contains(&bad) {
                continue;
            }
            let sql = format!("UPDATE {table} SET {column} = '{bad}' WHERE id = '{id}'");
            let e = s.exec(&sql).await.expect_err(&sql);
            assert!(
                e.to_string().contains(&format!("{table}_{column}_check")),
                "{sql}: {e}"
            );
            assert_eq!(s.text(&read).await, before, "{sql} changed the row");
        }
    }
    // INSERT is checked too, not only UPDATE.
    let bad_insert = format!(
        "INSERT INTO payment_gateway_logs (id, interaction_type, interaction_status, is_notification, \
         currency_iso_code, created_date, last_modified_date) VALUES ('{}', 'ReferencedRefund', 'Pending', \
         'No', 'EUR', 1, 1)",
        SfId::generate(ObjectType::PaymentGatewayLog)
    );
    let e = s.exec(&bad_insert).await.expect_err("a bad log status");
    assert!(
        e.to_string()
            .contains("payment_gateway_logs_interaction_status_check"),
        "{e}"
    );
    let bad_insert = format!(
        "INSERT INTO process_exceptions (id, category, exception_type, status, priority, message, \
         order_summary_id, created_date, last_modified_date) VALUES ('{}', 'Payment', 'OM Refund Failed', \
         'Open', 'High', 'm', '{}', 1, 1)",
        SfId::generate(ObjectType::ProcessException),
        r.order
    );
    let e = s
        .exec(&bad_insert)
        .await
        .expect_err("a bad exception status");
    assert!(
        e.to_string().contains("process_exceptions_status_check"),
        "{e}"
    );
    let logs = s
        .text("SELECT CAST(COUNT(*) AS TEXT) FROM payment_gateway_logs")
        .await;
    assert_eq!(logs, "1", "a refused insert left a row");
    s.finish().await;
}

/// The database holds the lifecycle's own rule: every (status, reconciliation state) pair
/// the domain calls reachable can be stored, every other one is refused.
async fn refunds_hold_only_reachable_lifecycle_states(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let r = rows(&s, "Simulator").await;
    let id = &r.refund;
    for &status in RefundStatus::ALL {
        for &reconcile in ReconcileState::ALL {
            // From a state every pair can be reached from in one statement.
            s.exec(&format!(
                "UPDATE refunds SET status = 'Draft', reconcile_state = 'none' WHERE id = '{id}'"
            ))
            .await
            .expect("reset");
            let sql = format!(
                "UPDATE refunds SET status = '{status}', reconcile_state = '{reconcile}' WHERE id = '{id}'"
            );
            let state = RefundState::new(status, reconcile);
            match s.exec(&sql).await {
                Ok(n) => {
                    assert!(state.is_reachable(), "{state:?} was stored");
                    assert_eq!(n, 1);
                }
                Err(e) => {
                    assert!(!state.is_reachable(), "{state:?} was refused: {e}");
                    assert!(e.to_string().contains("refunds_lifecycle_check"), "{e}");
                }
            }
        }
    }
    s.finish().await;
}

/// Takes migration 0007 back (its constraints or triggers, and its record), so that the
/// next `migrate` runs it again on whatever the tables hold then.
async fn forget_0007(s: &Scratch, backend: Backend) {
    let sql: Vec<String> = match backend {
        Backend::Postgres => [
            ("refunds", "refunds_status_check"),
            ("refunds", "refunds_reconcile_state_check"),
            ("refunds", "refunds_lifecycle_check"),
            (
                "background_operations",
                "background_operations_status_check",
            ),
            (
                "payment_gateway_logs",
                "payment_gateway_logs_interaction_status_check",
            ),
            ("process_exceptions", "process_exceptions_status_check"),
        ]
        .iter()
        .map(|(t, c)| format!("ALTER TABLE {t} DROP CONSTRAINT {c}"))
        .collect(),
        Backend::Sqlite => [
            "refunds_status_check",
            "refunds_reconcile_state_check",
            "refunds_lifecycle_check",
            "background_operations_status_check",
            "payment_gateway_logs_interaction_status_check",
            "process_exceptions_status_check",
        ]
        .iter()
        .flat_map(|c| {
            [
                format!("DROP TRIGGER {c}_insert"),
                format!("DROP TRIGGER {c}_update"),
            ]
        })
        .collect(),
    };
    for q in sql {
        s.exec(&q).await.expect(&q);
    }
    s.exec("DELETE FROM refunds_schema_migrations WHERE version = 7")
        .await
        .expect("forget 0007");
}

/// The SQL the migration runs on existing rows: one that already breaks a rule fails it
/// (PostgreSQL's VALIDATE, SQLite's touching UPDATE), and the same database without that
/// row migrates.
async fn the_migration_refuses_existing_bad_rows(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let r = rows(&s, "Simulator").await;
    forget_0007(&s, backend).await;
    let bad = format!(
        "UPDATE background_operations SET status = 'Failed' WHERE id = '{}'",
        r.operation
    );
    assert_eq!(s.exec(&bad).await.expect("unchecked now"), 1);
    let e = s.db.migrate().await.expect_err("a bad row fails 0007");
    assert!(
        e.to_string().contains("background_operations_status_check"),
        "{e}"
    );
    // Nothing of the failed migration stayed: the bad row is still writable, 0007 is
    // not recorded.
    assert_eq!(
        s.text("SELECT CAST(COUNT(*) AS TEXT) FROM refunds_schema_migrations WHERE version = 7")
            .await,
        "0"
    );
    s.exec(&format!(
        "UPDATE background_operations SET status = 'Error' WHERE id = '{}'",
        r.operation
    ))
    .await
    .expect("fix the row");
    s.db.migrate().await.expect("0007 applies to good rows");
    let e = s.exec(&bad).await.expect_err("checked again");
    assert!(
        e.to_string().contains("background_operations_status_check"),
        "{e}"
    );
    s.finish().await;
}

/// The worker's row reads into typed values: ids of their kind, money in the refund's
/// currency, the status enums and the provider.
async fn refund_work_reads_typed(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let r = rows(&s, "Stripe").await;
    let w = refunds_store::refunds::find_refund_work(&s.db, r.refund.as_str())
        .await
        .expect("read")
        .expect("found");
    let eur = Currency::parse("EUR").unwrap();
    assert_eq!(w.id, r.refund);
    assert_eq!(w.operation_id, r.operation);
    assert_eq!(w.order_summary_id, r.order);
    assert_eq!(w.summary_id, r.summary);
    assert_eq!(w.payment_id, r.payment);
    assert_eq!(w.gateway_id, r.gateway);
    assert_eq!(w.amount, Money::from_minor(250, eur));
    assert_eq!(w.credit_memo_amount, Money::from_minor(50, eur));
    assert_eq!(w.credit_memo_id, None);
    assert_eq!(w.status, RefundStatus::Draft);
    assert_eq!(w.reconcile_state, ReconcileState::None);
    assert_eq!(w.state(), RefundState::NEW);
    assert_eq!(w.provider_type, ProviderType::Stripe);
    assert_eq!(w.gateway_status, GatewayStatus::Active);
    assert_eq!(w.payment_ref.as_deref(), Some("ch_1"));
    s.finish().await;
}

/// A row the types cannot hold is an error naming the refund, not a guess: a provider
/// type no adapter has, an unknown currency.
async fn a_row_that_does_not_parse_is_corrupt(backend: Backend) {
    let Some(s) = scratch(backend).await else {
        return;
    };
    let r = rows(&s, "PayPal").await;
    let read = || refunds_store::refunds::find_refund_work(&s.db, r.refund.as_str());
    match read().await {
        Err(StoreError::Corrupt(why)) => {
            assert!(why.contains(r.refund.as_str()), "{why}");
            assert!(why.contains("PayPal"), "{why}");
        }
        other => panic!("an unknown provider type was read as {other:?}"),
    }
    s.exec(&format!(
        "UPDATE payment_gateways SET provider_type = 'Adyen' WHERE id = '{}'",
        r.gateway
    ))
    .await
    .expect("fix the gateway");
    assert!(read().await.expect("readable now").is_some());
    s.exec(&format!(
        "UPDATE refunds SET currency_iso_code = 'XYZ' WHERE id = '{}'",
        r.refund
    ))
    .await
    .expect("corrupt the currency");
    match read().await {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("XYZ"), "{why}"),
        other => panic!("an unknown currency was read as {other:?}"),
    }
    // An id stored in its 15-char spelling would parse, into another text than the one
    // every statement keyed by it must match.
    let short = &r.refund.as_str()[..15];
    s.exec(&format!(
        "UPDATE refunds SET id = '{short}', currency_iso_code = 'EUR' WHERE id = '{}'",
        r.refund
    ))
    .await
    .expect("store the short spelling");
    match refunds_store::refunds::find_refund_work(&s.db, short).await {
        Err(StoreError::Corrupt(why)) => assert!(why.contains(short), "{why}"),
        other => panic!("a non-canonical id was read as {other:?}"),
    }
    s.finish().await;
}

/// The picklists the API accepts on ingest are the enums the store reads back, so that
/// nothing the API lets in is a corrupt row later.
#[test]
fn ingest_picklists_are_the_domain_enums() {
    let picklist = |ty: ObjectType, field: &str| match object_def(ty).field(field).map(|f| f.kind) {
        Some(FieldKind::Picklist(values)) => values.to_vec(),
        other => panic!("{ty}.{field} is not a picklist: {other:?}"),
    };
    let providers: Vec<&str> = ProviderType::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        picklist(ObjectType::PaymentGateway, "ProviderType"),
        providers
    );
    let gateway_statuses: Vec<&str> = GatewayStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        picklist(ObjectType::PaymentGateway, "Status"),
        gateway_statuses
    );
    let exception_statuses: Vec<&str> = ProcessExceptionStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        picklist(ObjectType::ProcessException, "Status"),
        exception_statuses
    );
    assert_eq!(
        schema::PROCESS_EXCEPTION_STATUSES,
        exception_statuses.as_slice()
    );
    let active: Vec<&str> = ProcessExceptionStatus::ALL
        .iter()
        .filter(|s| s.is_active())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(schema::ACTIVE_PROCESS_EXCEPTION_STATUSES, active.as_slice());
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
    status_columns_take_only_their_values,
    refunds_hold_only_reachable_lifecycle_states,
    the_migration_refuses_existing_bad_rows,
    refund_work_reads_typed,
    a_row_that_does_not_parse_is_corrupt,
);
