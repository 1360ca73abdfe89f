//! The admission rule: what an ensure-refunds request may take, computed once for the
//! API's checks (at admission, against what earlier admissions have not set aside) and for
//! the job's plan (against what this operation's admission set aside).
//!
//! A request with a credit memo takes the memo's whole usable balance: its fee invoices
//! are paid from it first (oldest first, each as far as the balance reaches) and the rest
//! is refunded, together with any excess funds. The refund must fit in what the order's
//! payment summaries have available.

/// Fee invoices paid from `balance`, in the order given, each as far as the balance
/// reaches: what each gets, and what is left for the refund.
pub fn pay_invoices(balance: i64, invoices: &[i64]) -> (Vec<i64>, i64) {
    let mut left = balance.max(0);
    let payments = invoices
        .iter()
        .map(|&owed| {
            let pay = owed.max(0).min(left);
            left -= pay;
            pay
        })
        .collect();
    (payments, left)
}

/// What a request asks for, against what it may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionRequest<'a> {
    /// The credit memo's balance this request may use (`None`: no credit memo).
    pub credit_memo: Option<i64>,
    /// Balances of the fee invoices to pay from the credit memo, in payment order.
    pub invoices: &'a [i64],
    /// Excess funds asked for (0: none).
    pub excess: i64,
    /// What the order's payment summaries have available for this request.
    pub available: i64,
}

/// What an admitted request takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Paid to each fee invoice, in the request's order.
    pub invoice_payments: Vec<i64>,
    /// Refunded from the credit memo.
    pub credit_memo_part: i64,
    /// Taken from the credit memo in all (invoices and refund).
    pub credit_memo_taken: i64,
    /// Refunded in all (credit memo part and excess funds): set aside on the order.
    pub refund: i64,
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("the credit memo has no balance left to refund")]
    NoCreditMemoBalance,
    #[error("the requested amount is too large")]
    TooLarge,
    #[error("the amount to refund ({requested}) exceeds what is available ({available})")]
    ExceedsAvailable { requested: i64, available: i64 },
}

/// The rule: admits the request or says why not.
pub fn admit(req: &AdmissionRequest<'_>) -> Result<Admission, AdmissionError> {
    let balance = req.credit_memo.unwrap_or(0).max(0);
    if req.credit_memo.is_some() && balance == 0 && req.excess == 0 {
        return Err(AdmissionError::NoCreditMemoBalance);
    }
    let (invoice_payments, credit_memo_part) = pay_invoices(balance, req.invoices);
    let refund = credit_memo_part
        .checked_add(req.excess.max(0))
        .ok_or(AdmissionError::TooLarge)?;
    if refund > req.available {
        return Err(AdmissionError::ExceedsAvailable {
            requested: refund,
            available: req.available.max(0),
        });
    }
    Ok(Admission {
        invoice_payments,
        credit_memo_part,
        credit_memo_taken: balance,
        refund,
    })
}

/// What an operation's admission set aside, as its plan uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Of the credit memo's balance (invoices and refund).
    pub credit_memo: i64,
    /// Of the order's money: the whole refund (credit memo part and excess funds).
    pub refund: i64,
}

/// What a plan takes from its credit memo, by the same rule as [`admit`]: the fee invoices
/// are paid first from what the credit memo may give, and the rest is refunded. What it may
/// give is its `balance`, but no more than the admission set aside; and the refunded part is
/// no more than the admission set aside on the order beyond the `excess` funds. `held` is
/// `None` for an operation admitted before admissions set money aside: then the balance
/// alone bounds it. Answers what each invoice is paid and the credit memo's part of the
/// refund.
pub fn plan_credit_memo(
    balance: i64,
    invoices: &[i64],
    excess: i64,
    held: Option<Held>,
) -> (Vec<i64>, i64) {
    let budget = match held {
        Some(h) => balance.min(h.credit_memo),
        None => balance,
    };
    let (payments, left) = pay_invoices(budget, invoices);
    let part = match held {
        Some(h) => left.min(h.refund.saturating_sub(excess).max(0)),
        None => left,
    };
    (payments, part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(
        credit_memo: Option<i64>,
        invoices: &[i64],
        excess: i64,
        available: i64,
    ) -> Result<Admission, AdmissionError> {
        admit(&AdmissionRequest {
            credit_memo,
            invoices,
            excess,
            available,
        })
    }

    #[test]
    fn a_plan_takes_no_more_than_its_admission_set_aside() {
        let held = Held {
            credit_memo: 5000,
            refund: 4250,
        };
        // As admitted: the same invoice payments and credit memo part.
        assert_eq!(
            plan_credit_memo(5000, &[1000], 250, Some(held)),
            (vec![1000], 4000)
        );
        // The balance grew since (a memo edited upward): the plan still takes what was held.
        assert_eq!(
            plan_credit_memo(9000, &[1000], 250, Some(held)),
            (vec![1000], 4000)
        );
        // The balance shrank: the plan takes what is there.
        assert_eq!(
            plan_credit_memo(3000, &[1000], 250, Some(held)),
            (vec![1000], 2000)
        );
        // Admitted before admissions set money aside: the balance alone bounds it.
        assert_eq!(
            plan_credit_memo(3000, &[1000], 250, None),
            (vec![1000], 2000)
        );
    }

    #[test]
    fn invoices_are_paid_first_then_the_rest_is_refunded() {
        let a = req(Some(5000), &[1000, 3000, 2000], 0, 10_000).unwrap();
        assert_eq!(a.invoice_payments, vec![1000, 3000, 1000]);
        assert_eq!(a.credit_memo_part, 0);
        assert_eq!(a.credit_memo_taken, 5000);
        let a = req(Some(5000), &[1000], 250, 10_000).unwrap();
        assert_eq!((a.credit_memo_part, a.refund), (4000, 4250));
    }

    #[test]
    fn the_refund_fits_in_what_is_available_at_and_past_the_edge() {
        assert_eq!(req(None, &[], 1000, 1000).unwrap().refund, 1000);
        assert_eq!(
            req(None, &[], 1001, 1000),
            Err(AdmissionError::ExceedsAvailable {
                requested: 1001,
                available: 1000
            })
        );
        assert_eq!(req(Some(600), &[], 400, 1000).unwrap().refund, 1000);
        assert!(req(Some(601), &[], 400, 1000).is_err());
    }

    #[test]
    fn an_empty_credit_memo_needs_excess_funds() {
        assert_eq!(
            req(Some(0), &[], 0, 1000),
            Err(AdmissionError::NoCreditMemoBalance)
        );
        assert_eq!(req(Some(0), &[], 10, 1000).unwrap().refund, 10);
        assert_eq!(
            req(Some(i64::MAX), &[], i64::MAX, i64::MAX),
            Err(AdmissionError::TooLarge)
        );
    }

    proptest! {
        #[test]
        fn never_more_than_the_memo_or_what_is_available(
            memo in proptest::option::of(0i64..1_000_000),
            invoices in proptest::collection::vec(0i64..500_000, 0..5),
            excess in 0i64..1_000_000,
            available in 0i64..2_000_000,
        ) {
            if let Ok(a) = req(memo, &invoices, excess, available) {
                let paid: i64 = a.invoice_payments.iter().sum();
                prop_assert_eq!(paid + a.credit_memo_part, a.credit_memo_taken);
                prop_assert_eq!(a.credit_memo_taken, memo.unwrap_or(0));
                prop_assert!(a.refund <= available);
                prop_assert_eq!(a.refund, a.credit_memo_part + excess);
                for (p, owed) in a.invoice_payments.iter().zip(&invoices) {
                    prop_assert!(*p >= 0 && p <= owed);
                }
            }
        }
    }
}
