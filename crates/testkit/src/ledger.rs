//! The books against `refunds simulator`'s ledger: the checks shared by the tests that end by
//! comparing what the service recorded with what the provider paid (provider faults, several
//! nodes, the crash loop). Each takes the records as the service's API answers them, so a test
//! in process and a test of the real binaries read them the same way.

use std::collections::HashMap;

use refunds_simulator::LedgerRefund;
use serde_json::{json, Value};

/// Minor units of a USD money value as the API renders it (`12.34` → 1234), read from its
/// text, never through a float.
pub fn minor(v: &Value) -> i64 {
    let text = v.to_string();
    let (whole, frac) = text.split_once('.').unwrap_or((&text, "0"));
    let frac = format!("{frac:0<2}");
    whole.parse::<i64>().expect("whole") * 100 + frac[..2].parse::<i64>().expect("cents")
}

/// No refund was made twice: every `metadata[refund_id]` stands in the ledger once.
pub fn assert_each_made_once(ledger: &[LedgerRefund], seed: u64) {
    let mut made: HashMap<&str, usize> = HashMap::new();
    for row in ledger {
        let id = row
            .refund_id
            .as_deref()
            .expect("every refund names its refund_id");
        *made.entry(id).or_default() += 1;
    }
    for (id, times) in &made {
        assert_eq!(*times, 1, "seed {seed}: {id} was made {times} times");
    }
}

/// One final refund (its `Refund` record) against the ledger: `Processed` is paid there with
/// the same amount and reference, `Canceled` is not paid; anything else is not final. Answers
/// whether it is `Processed`.
pub fn assert_refund_matches(ledger: &[LedgerRefund], refund: &Value, seed: u64) -> bool {
    let id = refund["Id"].as_str().expect("Id");
    let row = ledger.iter().find(|r| r.refund_id.as_deref() == Some(id));
    let paid = row.is_some_and(|r| r.status == "succeeded");
    match refund["Status"].as_str() {
        Some("Processed") => {
            let row =
                row.unwrap_or_else(|| panic!("seed {seed}: {id} Processed, not in the ledger"));
            assert!(paid, "seed {seed}: {id} Processed but {}", row.status);
            assert_eq!(row.amount, minor(&refund["Amount"]), "seed {seed}: {id}");
            assert_eq!(
                refund["GatewayRefNumber"],
                json!(row.id),
                "seed {seed}: {id}"
            );
            true
        }
        Some("Canceled") => {
            assert!(!paid, "seed {seed}: {id} Canceled but paid: {row:?}");
            false
        }
        other => panic!("seed {seed}: {id} left {other:?}"),
    }
}

/// One charge's payment summary (its `OrderPaymentSummary` record) against the ledger: what
/// the provider paid on the charge is the summary's `RefundedAmount`, and nothing stays
/// reserved. Answers what was paid.
pub fn assert_charge_matches(
    ledger: &[LedgerRefund],
    charge: &str,
    summary: &Value,
    seed: u64,
) -> i64 {
    let paid: i64 = ledger
        .iter()
        .filter(|r| r.payment.as_deref() == Some(charge) && r.status == "succeeded")
        .map(|r| r.amount)
        .sum();
    assert_eq!(
        minor(&summary["RefundedAmount"]),
        paid,
        "seed {seed}: {charge} refunded here vs at the provider"
    );
    assert_eq!(
        minor(&summary["PendingRefundAmount"]),
        0,
        "seed {seed}: {charge} still reserved"
    );
    paid
}
