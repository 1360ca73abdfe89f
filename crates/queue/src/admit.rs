//! The admit step of ensure-refunds (SPEC §1.1): every check that reads the database, the
//! money the request sets aside, and the enqueue, in the caller's transaction, so a 201
//! means the request was valid against what was committed and its money is its own.
//!
//! The rule of what a request may take is `refunds_domain::admit`, shared with the plan.
//! Here it is applied to what earlier admissions have not set aside yet, under the order's
//! lock, and what it admits is set aside by conditional statements.

use std::collections::HashSet;

use refunds_domain::{AdmissionError, AdmissionRequest, Currency, Money, MoneyError, SfId};
use refunds_store::admission;
use refunds_store::ops::Admitted;
use refunds_store::refunds as sql;
use refunds_store::{StoreError, Tx};

use crate::{enqueue_with, EnsureRefunds, QueueConfig, SequencePayload};

/// A request whose shape is valid; amounts as the decimal text the client sent (their
/// currency is the order's, known only once it is read).
#[derive(Clone, Debug)]
pub struct AdmitRequest {
    pub order_id: SfId,
    pub credit_memo_id: Option<SfId>,
    pub excess_funds: Option<String>,
    pub invoices: Vec<SfId>,
    pub sequences: Vec<(SfId, String)>,
    pub allow_partial: bool,
}

/// Why a request is not admitted (a client's mistake, answered as such), or the store
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("order summary not found")]
    OrderNotFound,
    #[error("order summary {0} is UNMANAGED")]
    Unmanaged(String),
    #[error("credit memo {credit_memo} does not belong to order summary {order}")]
    CreditMemoNotOnOrder { credit_memo: String, order: String },
    #[error("credit memo {credit_memo} has status {status}")]
    CreditMemoUnrefundable { credit_memo: String, status: String },
    #[error("credit memo {0} has no balance left to refund")]
    NoCreditMemoBalance(String),
    #[error("invoice {invoice} does not belong to order summary {order}")]
    InvoiceNotOnOrder { invoice: String, order: String },
    #[error("order payment summary {summary} does not belong to order summary {order}")]
    SummaryNotOnOrder { summary: String, order: String },
    #[error("{field} {text}: {error}")]
    Amount {
        field: &'static str,
        text: String,
        error: MoneyError,
        currency: Currency,
    },
    #[error("excessFundsAmount must be greater than 0")]
    NotPositive,
    #[error("sequences.amount must not be negative")]
    Negative,
    #[error("the requested amount is too large")]
    TooLarge,
    #[error("the order's available amounts are too large to add up")]
    AvailableTooLarge,
    #[error("the amount to refund ({requested}) exceeds what is available ({available})")]
    ExceedsAvailable {
        requested: i64,
        available: i64,
        currency: Currency,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn amount(field: &'static str, text: &str, currency: Currency) -> Result<i64, Refusal> {
    Money::parse(text, currency)
        .map(|m| m.minor())
        .map_err(|error| Refusal::Amount {
            field,
            text: text.to_string(),
            error,
            currency,
        })
}

/// Checks the request against the database, sets its money aside and enqueues it as
/// `operation_id`: answers the request the job will run.
pub async fn admit(
    tx: &mut Tx,
    config: &QueueConfig,
    operation_id: &str,
    input: AdmitRequest,
    now: i64,
) -> Result<EnsureRefunds, Refusal> {
    let order_id = input.order_id.as_str();
    // One read of the order and its money (the request's other checks all need it), with
    // the order's lock: what this admission reads cannot change before it commits.
    let funds = sql::order_funds(tx, order_id, true)
        .await?
        .ok_or(Refusal::OrderNotFound)?;
    if funds.life_cycle_type == "UNMANAGED" {
        return Err(Refusal::Unmanaged(order_id.to_string()));
    }
    let currency =
        Currency::parse(&funds.currency).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let excess = match &input.excess_funds {
        None => 0,
        Some(text) => {
            let minor = amount("excessFundsAmount", text, currency)?;
            if minor <= 0 {
                return Err(Refusal::NotPositive);
            }
            minor
        }
    };
    let order_held = funds.admitted;
    let mut memo_balance = None;
    let mut invoice_balances = Vec::new();
    if let Some(cm_id) = &input.credit_memo_id {
        let cm = sql::credit_memo(tx, cm_id.as_str())
            .await?
            .filter(|cm| cm.reference_entity_id == order_id)
            .ok_or_else(|| Refusal::CreditMemoNotOnOrder {
                credit_memo: cm_id.to_string(),
                order: order_id.to_string(),
            })?;
        if cm.status == "Canceled" || cm.status == "Error" {
            return Err(Refusal::CreditMemoUnrefundable {
                credit_memo: cm_id.to_string(),
                status: cm.status,
            });
        }
        // What earlier admissions of this memo have not claimed.
        let usable = cm.balance.saturating_sub(cm.admitted).max(0);
        if usable == 0 && input.excess_funds.is_none() {
            return Err(Refusal::NoCreditMemoBalance(cm_id.to_string()));
        }
        let mut wanted: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for id in &input.invoices {
            if seen.insert(id.as_str()) {
                wanted.push(id.as_str().to_string());
            }
        }
        let invoices = sql::invoices(tx, &wanted).await?;
        if let Some(missing) = wanted.iter().find(|id| {
            !invoices
                .iter()
                .any(|i| &i.id == *id && i.reference_entity_id == order_id)
        }) {
            return Err(Refusal::InvoiceNotOnOrder {
                invoice: missing.clone(),
                order: order_id.to_string(),
            });
        }
        invoice_balances = invoices.iter().map(|i| i.balance).collect();
        memo_balance = Some(usable);
    }

    let mut sequences = Vec::with_capacity(input.sequences.len());
    for (ops, text) in &input.sequences {
        if !funds.summaries.iter().any(|s| s.id == ops.as_str()) {
            return Err(Refusal::SummaryNotOnOrder {
                summary: ops.to_string(),
                order: order_id.to_string(),
            });
        }
        let minor = amount("sequences.amount", text, currency)?;
        if minor < 0 {
            return Err(Refusal::Negative);
        }
        sequences.push(SequencePayload {
            order_payment_summary_id: ops.as_str().to_string(),
            amount: (minor > 0).then_some(minor),
        });
    }

    let available = funds
        .summaries
        .iter()
        .try_fold(0i64, |sum, s| sum.checked_add(s.available))
        .ok_or(Refusal::AvailableTooLarge)?
        .saturating_sub(order_held)
        .max(0);
    let admitted = refunds_domain::admit(&AdmissionRequest {
        credit_memo: memo_balance,
        invoices: &invoice_balances,
        excess,
        available,
    })
    .map_err(|e| match e {
        AdmissionError::NoCreditMemoBalance => Refusal::NoCreditMemoBalance(
            input
                .credit_memo_id
                .as_ref()
                .map(SfId::to_string)
                .unwrap_or_default(),
        ),
        AdmissionError::TooLarge => Refusal::TooLarge,
        AdmissionError::ExceedsAvailable {
            requested,
            available,
        } => Refusal::ExceedsAvailable {
            requested,
            available,
            currency,
        },
    })?;
    // Set aside by conditional statements: a concurrent admission that got there first
    // (possible only without the order's lock) makes this one fail, never both pass.
    if admitted.refund > 0 && !admission::admit_on_order(tx, order_id, admitted.refund).await? {
        return Err(Refusal::ExceedsAvailable {
            requested: admitted.refund,
            available,
            currency,
        });
    }
    let memo = input.credit_memo_id.as_ref().map(SfId::as_str);
    if let Some(cm_id) = memo {
        if admitted.credit_memo_taken > 0
            && !admission::admit_on_credit_memo(tx, cm_id, admitted.credit_memo_taken).await?
        {
            return Err(Refusal::NoCreditMemoBalance(cm_id.to_string()));
        }
    }
    let request = EnsureRefunds {
        order_summary_id: order_id.to_string(),
        credit_memo_id: memo.map(str::to_string),
        excess_funds_amount: excess,
        invoices_to_pay: input
            .invoices
            .iter()
            .map(|i| i.as_str().to_string())
            .collect(),
        sequences,
        allow_partial: input.allow_partial,
    };
    let held = Admitted {
        amount: admitted.refund,
        credit_memo: memo.map(|id| (id, admitted.credit_memo_taken)),
    };
    enqueue_with(tx, config, operation_id, &request, Some(held), now).await?;
    Ok(request)
}
