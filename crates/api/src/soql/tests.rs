//! The parser (accepted forms, precedence, each rejection) and name resolution.

use super::parse::{datetime, parse, Expr, Lit, Path, Soql};
use super::*;
use refunds_store::query::Op;

fn ok(text: &str) -> Soql {
    parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e:?}"))
}

fn field(p: &Path) -> String {
    match &p.relationship {
        Some(r) => format!("{}.{}", r.text, p.field.text),
        None => p.field.text.clone(),
    }
}

/// A compact spelling of a condition tree, to compare shapes in tables.
fn shape(e: &Expr) -> String {
    match e {
        Expr::And(parts) => format!(
            "and({})",
            parts.iter().map(shape).collect::<Vec<_>>().join(", ")
        ),
        Expr::Or(parts) => format!(
            "or({})",
            parts.iter().map(shape).collect::<Vec<_>>().join(", ")
        ),
        Expr::Compare { path, op, value } => format!("{}{op:?}{value:?}", field(path)),
        Expr::In { path, values } => format!("{} in {values:?}", field(path)),
    }
}

fn filter_shape(text: &str) -> String {
    shape(ok(text).filter.as_ref().expect("a WHERE clause"))
}

#[test]
fn accepted_forms() {
    let q = ok("SELECT Id, Status FROM Refund");
    assert_eq!(
        q.select.iter().map(field).collect::<Vec<_>>(),
        ["Id", "Status"]
    );
    assert_eq!(q.object.text, "Refund");
    assert_eq!((q.filter, q.order, q.limit), (None, None, None));

    let q =
        ok("select id from refund where status = 'Processed' order by createddate desc limit 5");
    assert_eq!(q.limit, Some(5));
    let (path, descending) = q.order.expect("order");
    assert_eq!((field(&path), descending), ("createddate".into(), true));

    let q = ok("SELECT Id FROM Refund ORDER BY Amount ASC");
    assert!(!q.order.expect("order").1);
    let q = ok("SELECT Id FROM Refund ORDER BY Amount LIMIT 0");
    assert_eq!(q.limit, Some(0));

    let q = ok("SELECT Id, OrderPaymentSummary.OrderSummaryId FROM PaymentGatewayLog");
    assert_eq!(field(&q.select[1]), "OrderPaymentSummary.OrderSummaryId");

    // Whitespace of any kind (a URL's `+` arrives as a space, `%0A` as a newline).
    ok("SELECT\n\tId ,Status\r\nFROM   Refund");
}

#[test]
fn literals() {
    let cases: &[(&str, Lit)] = &[
        ("'Processed'", Lit::Text("Processed".into())),
        (r"'it\'s'", Lit::Text("it's".into())),
        (
            r"'a\\b\nc\u00e9\t\'\u0041'",
            Lit::Text("a\\b\ncé\t'A".into()),
        ),
        ("''", Lit::Text(String::new())),
        ("10.5", Lit::Number("10.5".into())),
        ("-3", Lit::Number("-3".into())),
        ("0007", Lit::Number("0007".into())),
        ("null", Lit::Null),
        ("NULL", Lit::Null),
        ("true", Lit::Bool(true)),
        ("False", Lit::Bool(false)),
        ("2026-11-28T16:00:00Z", Lit::DateTime(1_795_881_600_000)),
        (
            "2026-11-28T16:00:00.000+0000",
            Lit::DateTime(1_795_881_600_000),
        ),
        (
            "2026-11-28T16:00:00.123+00:00",
            Lit::DateTime(1_795_881_600_123),
        ),
        (
            "2026-11-28T17:30:00+01:30",
            Lit::DateTime(1_795_881_600_000),
        ),
        ("2026-11-28T14:00:00-0200", Lit::DateTime(1_795_881_600_000)),
    ];
    for (text, want) in cases {
        let q = parse(&format!("SELECT Id FROM Refund WHERE Status = {text}"));
        match q.map(|q| q.filter) {
            Ok(Some(Expr::Compare { value, .. })) => assert_eq!(&value, want, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn datetimes_round_trip_with_the_rendered_form() {
    for ms in [0, 951_782_400_000, 1_795_881_600_123, -86_400_000] {
        assert_eq!(datetime(&render::datetime(ms)), Some(ms), "{ms}");
    }
    for bad in [
        "2026-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-28T24:00:00Z",
        "2026-11-28T16:00:60Z",
        "2026-11-28T16:00:00",
        "2026-11-28T16:00:00.1234Z",
        "2026-11-28T16:00:00+2400",
        "2026-11-28T16:00:00+00:0",
        "2026-11-28T16:00:00ZZ",
    ] {
        assert_eq!(datetime(bad), None, "{bad}");
        assert!(
            parse(&format!("SELECT Id FROM Refund WHERE CreatedDate > {bad}")).is_err(),
            "{bad}"
        );
    }
    assert_eq!(datetime("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
}

#[test]
fn and_binds_tighter_than_or_and_parentheses_group() {
    let cases = [
        (
            "a = 1 OR b = 2 AND c = 3",
            "or(aEqNumber(\"1\"), and(bEqNumber(\"2\"), cEqNumber(\"3\")))",
        ),
        (
            "a = 1 AND b = 2 OR c = 3",
            "or(and(aEqNumber(\"1\"), bEqNumber(\"2\")), cEqNumber(\"3\"))",
        ),
        (
            "(a = 1 OR b = 2) AND c = 3",
            "and(or(aEqNumber(\"1\"), bEqNumber(\"2\")), cEqNumber(\"3\"))",
        ),
        (
            "a = 1 and (b = 2 or (c = 3))",
            "and(aEqNumber(\"1\"), or(bEqNumber(\"2\"), cEqNumber(\"3\")))",
        ),
        (
            "a = 1 AND b = 2 AND c = 3",
            "and(aEqNumber(\"1\"), bEqNumber(\"2\"), cEqNumber(\"3\"))",
        ),
        (
            "a != null OR b IN ('x', null)",
            "or(aNeNull, b in [Text(\"x\"), Null])",
        ),
        (
            "a<1 OR a<=2 OR a>3 OR a>=4",
            "or(aLtNumber(\"1\"), aLeNumber(\"2\"), aGtNumber(\"3\"), aGeNumber(\"4\"))",
        ),
    ];
    for (condition, want) in cases {
        assert_eq!(
            filter_shape(&format!("SELECT Id FROM Refund WHERE {condition}")),
            want,
            "{condition}"
        );
    }
    assert_eq!(
        ok("SELECT Id FROM Refund WHERE a = 1").filter,
        Some(Expr::Compare {
            path: Path {
                relationship: None,
                field: parse::Name {
                    text: "a".into(),
                    at: 28
                }
            },
            op: Op::Eq,
            value: Lit::Number("1".into())
        })
    );
}

#[test]
fn everything_outside_the_subset_is_a_syntax_error() {
    let cases: &[(&str, &str)] = &[
        ("", "<EOF>"),
        ("garbage", "'garbage'"),
        ("SELECT * FROM Refund", "'*'"),
        ("SELECT Id", "<EOF>"),
        ("SELECT Id Refund", "'Refund'"),
        ("SELECT FROM Refund", "'FROM'"),
        ("SELECT Id, FROM Refund", "'FROM'"),
        ("SELECT Id FROM", "<EOF>"),
        ("SELECT Id FROM Refund WHERE", "<EOF>"),
        (
            "SELECT Id FROM Refund WHERE Status = 'open",
            "unterminated string",
        ),
        (
            r"SELECT Id FROM Refund WHERE Status = 'x\'",
            "unterminated string",
        ),
        (r"SELECT Id FROM Refund WHERE Status = 'a\qb'", "escape"),
        (r"SELECT Id FROM Refund WHERE Status = '\u00g1'", "unicode"),
        ("SELECT Id FROM Refund WHERE Status = ", "<EOF>"),
        ("SELECT Id FROM Refund WHERE Status 'x'", "'x'"),
        ("SELECT Id FROM Refund WHERE Status == 'x'", "'='"),
        ("SELECT Id FROM Refund WHERE Status <> 'x'", "'>'"),
        ("SELECT Id FROM Refund WHERE Status LIKE 'x%'", "'LIKE'"),
        ("SELECT Id FROM Refund WHERE NOT Status = 'x'", "'NOT'"),
        ("SELECT Id FROM Refund WHERE Status IN ()", "')'"),
        ("SELECT Id FROM Refund WHERE Status IN ('a' 'b')", "'b'"),
        ("SELECT Id FROM Refund WHERE Status IN 'a'", "'a'"),
        ("SELECT Id FROM Refund WHERE (Status = 'a'", "<EOF>"),
        ("SELECT Id FROM Refund WHERE Status = 'a')", "')'"),
        ("SELECT Id FROM Refund WHERE Status = 'a' AND", "<EOF>"),
        ("SELECT Id FROM Refund WHERE Status = :status", "':'"),
        (
            "SELECT Id FROM Refund WHERE Status = 'x'; DROP TABLE refunds; --",
            "';'",
        ),
        // SOQL escapes a quote with a backslash, so SQL's `''` is two strings in a row.
        (
            "SELECT Id FROM Refund WHERE Status = 'x'' OR 1=1 --'",
            "' OR 1=1 --'",
        ),
        ("SELECT Id FROM Refund WHERE Amount = 1e5", "'1e5'"),
        ("SELECT Id FROM Refund WHERE Amount = .5", "'.'"),
        ("SELECT Id FROM Refund WHERE Amount = 5.", "'5.'"),
        (
            "SELECT Id FROM Refund WHERE CreatedDate > 2026-11-28",
            "'2026-11-28'",
        ),
        ("SELECT Id FROM Refund WHERE CreatedDate > TODAY", "'TODAY'"),
        ("SELECT Id FROM Refund LIMIT -1", "non-negative integer"),
        ("SELECT Id FROM Refund LIMIT 1.5", "non-negative integer"),
        (
            "SELECT Id FROM Refund LIMIT 99999999999999999999999",
            "non-negative integer",
        ),
        ("SELECT Id FROM Refund LIMIT", "<EOF>"),
        ("SELECT Id FROM Refund LIMIT 'x'", "'x'"),
        ("SELECT Id FROM Refund LIMIT 5 OFFSET 5", "'OFFSET'"),
        ("SELECT Id FROM Refund ORDER Id", "'Id'"),
        (
            "SELECT Id FROM Refund ORDER BY Id DESC NULLS LAST",
            "'NULLS'",
        ),
        ("SELECT Id FROM Refund ORDER BY Id, Status", "','"),
        ("SELECT Id FROM Refund LIMIT 5 ORDER BY Id", "'ORDER'"),
        ("SELECT COUNT() FROM Refund", "'('"),
        ("SELECT Id, (SELECT Id FROM Refunds) FROM Refund", "'('"),
        ("SELECT Id FROM Refund r", "'r'"),
        ("SELECT Id FROM Refund GROUP BY Status", "'GROUP'"),
        ("SELECT a.b.c FROM Refund", "one-level"),
        ("SELECT a. FROM Refund", "'FROM'"),
        ("SELECT Id FROM Refund WHERE Status = \"x\"", "'\"'"),
    ];
    for (text, want) in cases {
        match parse(text) {
            Ok(q) => panic!("{text:?} parsed: {q:?}"),
            Err(e) => assert!(
                e.message.contains(want),
                "{text:?}: {:?} should mention {want}",
                e.message
            ),
        }
    }
}

#[test]
fn syntax_errors_point_at_row_and_column_without_echoing_the_query() {
    let text = "SELECT Id\nFROM Refund WHERE * = 1";
    let e = syntax(text, &parse(text).expect_err("error"));
    assert_eq!(e.code, "MALFORMED_QUERY");
    assert_eq!(e.message, "ERROR at Row:2:Column:19\nunexpected token: '*'");
}

fn resolved(text: &str) -> Result<store::Query, ApiError> {
    resolve(&ok(text))
}

fn rejected(text: &str) -> (&'static str, String) {
    match resolved(text) {
        Ok(q) => panic!("{text:?} resolved: {q:?}"),
        Err(e) => (e.code, e.message),
    }
}

#[test]
fn names_resolve_case_insensitively_through_reference_fields() {
    let q = resolved(
        "select id, orderpaymentsummary.ordersummaryid, referencedentity.amount from paymentgatewaylog \
         where orderpaymentsummary.ordersummaryid = null order by referencedentity.createddate",
    )
    .expect("resolves");
    assert_eq!(q.object.ty, ObjectType::PaymentGatewayLog);
    let labels: Vec<String> = q.select.iter().map(label).collect();
    assert_eq!(
        labels,
        [
            "Id",
            "OrderPaymentSummary.OrderSummaryId",
            "ReferencedEntity.Amount"
        ]
    );
    assert_eq!(
        q.select[2].relationship().map(|r| r.parent.ty),
        Some(ObjectType::Refund)
    );
    assert!(resolved("SELECT Id FROM Refund WHERE OrderPaymentSummary.CapturedAmount > 0").is_ok());
    assert!(resolved("SELECT Id FROM Invoice WHERE ReferenceEntity.OrderNumber = 'T-1'").is_ok());
}

#[test]
fn resolution_errors_use_salesforce_codes() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "SELECT Id FROM Account",
            "INVALID_TYPE",
            "sObject type 'Account' is not supported",
        ),
        (
            "SELECT Id, Foo FROM Refund",
            "INVALID_FIELD",
            "No such column 'Foo' on entity 'Refund'",
        ),
        (
            "SELECT Id FROM Refund WHERE Foo = 'x'",
            "INVALID_FIELD",
            "No such column 'Foo' on entity 'Refund'",
        ),
        (
            "SELECT Id FROM Refund ORDER BY Foo",
            "INVALID_FIELD",
            "No such column 'Foo'",
        ),
        (
            "SELECT Foo.Id FROM Refund",
            "INVALID_FIELD",
            "Didn't understand relationship 'Foo'",
        ),
        (
            "SELECT Status.Id FROM Refund",
            "INVALID_FIELD",
            "Didn't understand relationship 'Status'",
        ),
        (
            "SELECT OrderPaymentSummary FROM Refund",
            "INVALID_FIELD",
            "No such column 'OrderPaymentSummary'",
        ),
        (
            "SELECT OrderPaymentSummary.Foo FROM Refund",
            "INVALID_FIELD",
            "No such column 'Foo' on entity 'OrderPaymentSummary'",
        ),
        (
            "SELECT Id, id FROM Refund",
            "MALFORMED_QUERY",
            "duplicate field selected: Id",
        ),
        (
            "SELECT Id FROM Refund WHERE Amount > null",
            "MALFORMED_QUERY",
            "null can only be compared",
        ),
        (
            "SELECT Id FROM Refund WHERE Status = 5",
            "MALFORMED_QUERY",
            "field 'Status' must be of type string and should be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Refund WHERE Status = true",
            "MALFORMED_QUERY",
            "must be of type string",
        ),
        (
            "SELECT Id FROM Refund WHERE Amount = '5'",
            "MALFORMED_QUERY",
            "field 'Amount' must be of type double and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Refund WHERE CreatedDate > '2026-11-28T16:00:00Z'",
            "MALFORMED_QUERY",
            "must be of type dateTime",
        ),
        (
            "SELECT Id FROM Refund WHERE CreatedDate > 5",
            "MALFORMED_QUERY",
            "dateTime",
        ),
        (
            "SELECT Id FROM PaymentGatewayLog WHERE DurationMs = 'x'",
            "MALFORMED_QUERY",
            "must be of type integer",
        ),
        (
            "SELECT Id FROM Refund WHERE OrderPaymentSummary.OrderSummaryId = 5",
            "MALFORMED_QUERY",
            "field 'OrderPaymentSummary.OrderSummaryId' must be of type id",
        ),
        (
            "SELECT Id FROM Refund WHERE Id = 'abc'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "invalid ID field: abc",
        ),
        (
            "SELECT Id FROM Refund WHERE Id IN ('0Rf000000000001', '''; DROP TABLE refunds; --')",
            "MALFORMED_QUERY",
            "",
        ),
        (
            r"SELECT Id FROM Refund WHERE Id IN ('\'; DROP TABLE refunds; --')",
            "INVALID_QUERY_FILTER_OPERATOR",
            "invalid ID field: '; DROP TABLE refunds; --",
        ),
        (
            "SELECT Id FROM Refund WHERE Amount = 123456789012345678901234567890123456789012",
            "MALFORMED_QUERY",
            "number out of range",
        ),
    ];
    for (text, code, message) in cases {
        let (got_code, got_message) = match parse(text) {
            Ok(q) => match resolve(&q) {
                Ok(q) => panic!("{text:?} resolved: {q:?}"),
                Err(e) => (e.code, e.message),
            },
            Err(e) => ("MALFORMED_QUERY", e.message),
        };
        assert_eq!(got_code, *code, "{text}: {got_message}");
        assert!(got_message.contains(message), "{text}: {got_message}");
    }
    // Ids are accepted in both lengths.
    let id = refunds_domain::SfId::generate(ObjectType::Refund).into_string();
    assert!(resolved(&format!("SELECT Id FROM Refund WHERE Id = '{}'", &id[..15])).is_ok());
    assert_eq!(
        rejected("SELECT Id FROM Refund WHERE Id = ''").0,
        "INVALID_QUERY_FILTER_OPERATOR"
    );
}
