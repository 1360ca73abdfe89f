//! The ensure-refunds job (SPEC §3): plan the refunds once, then ask each provider.
//!
//! Planning is one fenced transaction: pay the fee invoices from the credit memo, allocate
//! the rest, reserve every leg by conditional update, take each leg's credit-memo part off
//! the credit memo, and write every leg as a `Draft` refund. After it commits, the refunds
//! are fixed (a rescued run only drives the drafts that are left) and the order's next
//! operation may plan, around these reservations, while this one calls its providers.

use std::collections::HashMap;

use async_trait::async_trait;
use refunds_domain::admission::Held;
use refunds_domain::{
    allocate, plan_credit_memo, AllocationRequest, ObjectType, SequenceItem, SfId, SfResultCode,
    SummarySlot,
};
use refunds_gateway::{Outcome, Provider, Registry};
use refunds_store::admission;
use refunds_store::now_ms;
use refunds_store::refunds::{
    self as sql, NewProcessException, NewRefund, PaymentFunds, RefundWork,
};
use std::sync::Arc;

use crate::keys::{self, Resend};
use crate::settle::{
    finish_call_completing, format_amount, gateway_config, request_for, settle_with, start_call,
    write_initiated, Call, Interaction, Then,
};
use crate::{ms, timed, EnsureRefunds, Job, JobContext, JobError, QueueConfig, ENSURE_REFUNDS};

pub struct EnsureRefundsJob {
    config: QueueConfig,
    registry: Registry,
}

impl EnsureRefundsJob {
    pub fn new(config: QueueConfig, registry: Registry) -> EnsureRefundsJob {
        EnsureRefundsJob { config, registry }
    }

    /// Plans the operation's refunds in one transaction (unless an earlier run did): the
    /// allocation, the reservations, the Draft refunds, and each one's first provider call
    /// as an `Initiated` log row. Answers the log row of each refund's first call, by
    /// refund id (empty when an earlier run planned).
    async fn plan(
        &self,
        ctx: &JobContext,
        req: &EnsureRefunds,
    ) -> Result<HashMap<String, String>, JobError> {
        let op_id = ctx.op.id.as_str();
        let now = now_ms();
        let mut first_calls = HashMap::new();
        if ctx.op.planned {
            return Ok(first_calls);
        }
        let mut tx = ctx.fenced().await?;
        let funds = sql::order_funds(&mut tx, &req.order_summary_id, true)
            .await?
            .ok_or_else(|| {
                JobError::Failed(format!(
                    "order summary {} no longer exists",
                    req.order_summary_id
                ))
            })?;

        // What the admission set aside becomes this plan's: the reservations below take
        // its place, and the plan takes no more than it (money of its own: a later
        // operation was admitted against the rest).
        let held = ctx.op.held.as_ref();
        if let Some(held) = held {
            admission::take_for_plan(&mut tx, op_id, held, now).await?;
        }
        let mut credit_memo_part = 0;
        if let Some(cm_id) = &req.credit_memo_id {
            let cm = sql::credit_memo(&mut tx, cm_id)
                .await?
                .ok_or_else(|| JobError::Failed(format!("credit memo {cm_id} no longer exists")))?;
            let invoices = sql::invoices(&mut tx, &req.invoices_to_pay).await?;
            let owed: Vec<i64> = invoices.iter().map(|i| i.balance).collect();
            let held = held.map(|h| Held {
                credit_memo: h.credit_memo.as_ref().map_or(0, |(_, amount)| *amount),
                refund: h.amount,
            });
            let (payments, part) =
                plan_credit_memo(cm.balance, &owed, req.excess_funds_amount, held);
            for (invoice, pay) in invoices.iter().zip(payments) {
                if pay > 0 {
                    let app_id = SfId::generate(ObjectType::CreditMemoInvApplication).into_string();
                    sql::apply_credit_memo(
                        &mut tx,
                        &app_id,
                        cm_id,
                        &invoice.id,
                        pay,
                        op_id,
                        &funds.currency,
                        now,
                    )
                    .await?;
                }
            }
            credit_memo_part = part;
        }

        let payments_of: Vec<Vec<&PaymentFunds>> = funds
            .summaries
            .iter()
            .map(|s| {
                funds
                    .payments
                    .iter()
                    .filter(|p| p.summary_id == s.id)
                    .collect()
            })
            .collect();
        let slots: Vec<SummarySlot> = funds
            .summaries
            .iter()
            .zip(&payments_of)
            .map(|(s, ps)| SummarySlot {
                available: s.available,
                payments: ps.iter().map(|p| p.refundable).collect(),
            })
            .collect();
        let index: HashMap<&str, usize> = funds
            .summaries
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let sequences: Vec<SequenceItem> = req
            .sequences
            .iter()
            .filter_map(|s| {
                index
                    .get(s.order_payment_summary_id.as_str())
                    .map(|&summary| SequenceItem {
                        summary,
                        amount: s.amount,
                    })
            })
            .collect();
        let allocation = allocate(&AllocationRequest {
            credit_memo_amount: credit_memo_part,
            excess_amount: req.excess_funds_amount,
            sequences: &sequences,
            allow_partial: req.allow_partial,
            summaries: &slots,
            rule: self.config.allocation_rule,
        });

        for (n, leg) in allocation.legs.iter().enumerate() {
            let summary = &funds.summaries[leg.summary];
            let payment = payments_of[leg.summary][leg.payment];
            sql::reserve(&mut tx, &summary.id, &payment.id, leg.amount, now).await?;
            if leg.from_credit_memo > 0 {
                if let Some(cm_id) = &req.credit_memo_id {
                    sql::take_from_credit_memo(&mut tx, cm_id, leg.from_credit_memo, now).await?;
                }
            }
            let refund_id = SfId::generate(ObjectType::Refund).into_string();
            sql::insert_refund(
                &mut tx,
                &NewRefund {
                    id: &refund_id,
                    operation_id: op_id,
                    leg: i64::try_from(n).unwrap_or(i64::MAX) + 1,
                    summary_id: &summary.id,
                    payment_id: &payment.id,
                    gateway_id: &payment.gateway_id,
                    amount: leg.amount,
                    credit_memo_id: req
                        .credit_memo_id
                        .as_deref()
                        .filter(|_| leg.from_credit_memo > 0),
                    credit_memo_amount: leg.from_credit_memo,
                    currency: &funds.currency,
                    attempts: 1,
                    now,
                },
            )
            .await?;
            let log_id = SfId::generate(ObjectType::PaymentGatewayLog).into_string();
            let call = Call {
                refund_id: &refund_id,
                payment_ref: payment.payment_ref.as_deref(),
                amount: leg.amount,
                currency: &funds.currency,
                summary_id: &summary.id,
                gateway_id: &payment.gateway_id,
            };
            write_initiated(&mut tx, &log_id, Interaction::ReferencedRefund, &call, now).await?;
            first_calls.insert(refund_id, log_id);
        }

        let short_cm = allocation.unallocated_credit_memo;
        let short_excess = allocation.unallocated_excess;
        let partial_by_request = req.allow_partial && !req.sequences.is_empty();
        if short_cm + short_excess > 0 && !partial_by_request {
            let pe_id = SfId::generate(ObjectType::ProcessException).into_string();
            let message = format!(
                "Only part of the refund could be allocated: {} is not available to refund on the order's payments",
                format_amount(short_cm + short_excess, &funds.currency)
            );
            let description = format!(
                "{} stays on the credit memo and {} of excess funds was not refunded.",
                format_amount(short_cm, &funds.currency),
                format_amount(short_excess, &funds.currency)
            );
            let attached = req.credit_memo_id.as_deref();
            let exception = NewProcessException::high(
                &pe_id,
                &message,
                &description,
                attached.unwrap_or(&req.order_summary_id),
                &req.order_summary_id,
                op_id,
                now,
            );
            sql::insert_process_exception(&mut tx, &exception).await?;
        }
        sql::mark_planned(&mut tx, op_id, now).await?;
        tx.commit().await?;
        tracing::info!(
            operation = op_id,
            legs = allocation.legs.len(),
            "refunds planned"
        );
        Ok(first_calls)
    }

    fn provider_for(&self, w: &RefundWork) -> Result<Arc<dyn Provider>, String> {
        if w.gateway_status != refunds_domain::GatewayStatus::Active {
            return Err(format!(
                "payment gateway {} is {}",
                w.gateway_id, w.gateway_status
            ));
        }
        self.registry
            .provider(&gateway_config(w))
            .map_err(|e| e.to_string())
    }

    /// Asks the provider for one refund until the answer is final or unknown. `first_call`
    /// is the `Initiated` log row the plan wrote for its first call (the attempt is already
    /// counted); without one, each call writes its own first. For the operation's `last`
    /// refund, the transaction that records the final answer also completes the operation.
    async fn drive(
        &self,
        ctx: &JobContext,
        w: &RefundWork,
        mut first_call: Option<String>,
        last: bool,
    ) -> Result<(), JobError> {
        let completes = last.then_some(ctx);
        let run = Some(&ctx.op);
        let provider = match self.provider_for(w) {
            Ok(p) => p,
            Err(why) => {
                let log_id = call_log(ctx, w, first_call).await?;
                let outcome = Outcome::bare(SfResultCode::PermanentFail, why);
                let then = Then::Settle { poll_at: None };
                let call = (w, log_id.as_str(), &outcome, false, 0);
                finish_call_completing(&ctx.db, run, call, then, completes).await?;
                return Ok(());
            }
        };
        // A refund this run just planned was never sent, so its key cannot be forgotten.
        if first_call.is_none()
            && keys::before_resend(&ctx.db, run, &self.config, &*provider, w).await? == Resend::Done
        {
            return Ok(());
        }
        let request = request_for(w);
        // An earlier run called the provider for this refund (and died before recording
        // the answer): that request may have arrived, so failing to reach the provider now
        // proves nothing, and the refund is looked up rather than released. (A first call
        // the plan wrote down is counted already, and is this run's.)
        let counted_here = i64::from(first_call.is_some());
        let sent_before = w.attempts > counted_here;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let log_id = call_log(ctx, w, first_call.take()).await?;
            let (outcome, duration) = timed(provider.refund(&request)).await;
            tracing::info!(
                operation = %w.operation_id, refund = %w.id, amount = w.amount.minor(), attempt,
                code = %outcome.code, duration_ms = duration, "provider refund call"
            );
            let then = match outcome.code {
                SfResultCode::SystemError if attempt < self.config.provider_attempts => {
                    Then::LogOnly
                }
                SfResultCode::Indeterminate => {
                    Then::Reconcile(now_ms().saturating_add(ms(self.config.reconcile_delay)))
                }
                SfResultCode::SystemError if sent_before => {
                    Then::Reconcile(now_ms().saturating_add(ms(self.config.reconcile_delay)))
                }
                _ => settle_with(&*provider, self.config.reconcile_delay),
            };
            let call = (w, log_id.as_str(), &outcome, false, duration);
            finish_call_completing(&ctx.db, run, call, then, completes).await?;
            if then != Then::LogOnly {
                return Ok(());
            }
            let pause = self.config.provider_backoff * 2u32.saturating_pow(attempt - 1);
            tokio::time::sleep(pause).await;
        }
    }
}

/// The `Initiated` log row of the call about to be made for `w`: the one its plan wrote
/// (`planned`, its attempt already counted), or one written now.
async fn call_log(
    ctx: &JobContext,
    w: &RefundWork,
    planned: Option<String>,
) -> Result<String, JobError> {
    match planned {
        Some(log_id) => Ok(log_id),
        None => start_call(&ctx.db, Some(&ctx.op), w, Interaction::ReferencedRefund).await,
    }
}

#[async_trait]
impl Job for EnsureRefundsJob {
    fn job_type(&self) -> &'static str {
        ENSURE_REFUNDS
    }

    async fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let req: EnsureRefunds =
            serde_json::from_str(&ctx.op.payload).map_err(|e| JobError::Payload(e.to_string()))?;
        let mut first_calls = self.plan(ctx, &req).await?;
        let drafts = sql::drafts_of_operation(&ctx.db, &ctx.op.id).await?;
        let last = drafts.len().saturating_sub(1);
        for (i, w) in drafts.iter().enumerate() {
            let first_call = first_calls.remove(w.id.as_str());
            self.drive(ctx, w, first_call, i == last).await?;
        }
        Ok(())
    }

    /// The operation failed for good. Its refunds still `Draft` keep their money reserved
    /// and go to reconciliation: each is looked up with its provider by its idempotency
    /// key, settled if the provider has it, and sent again with the same key if it never
    /// arrived — the refund the caller asked for still happens, once. A process exception
    /// on the order summary says what failed and what was handed over.
    async fn give_up(&self, ctx: &JobContext, error: &str) -> Result<(), JobError> {
        let op_id = ctx.op.id.as_str();
        let order_id = serde_json::from_str::<EnsureRefunds>(&ctx.op.payload)
            .map(|req| req.order_summary_id)
            .unwrap_or_else(|_| ctx.op.parent_key.clone());
        let drafts = sql::drafts_of_operation(&ctx.db, op_id).await?;
        let now = now_ms();
        let left: Vec<String> = drafts
            .iter()
            .map(|w| format!("{} ({})", w.id, crate::settle::format_money(w.amount)))
            .collect();
        let error: String = error.chars().take(200).collect();
        let message = format!("Background operation {op_id} failed: {error}");
        let description = if left.is_empty() {
            format!("Operation {op_id} failed after its retries and left no refund unfinished.")
        } else {
            format!(
                "Operation {op_id} failed after its retries. Its unfinished refunds {} keep their money reserved \
                 and are being looked up with their providers by idempotency key: each is settled if the \
                 provider has it, or sent again with the same key if it never arrived.",
                left.join(", ")
            )
        };
        let pe_id = SfId::generate(ObjectType::ProcessException).into_string();
        let mut tx = ctx.fenced().await?;
        for w in &drafts {
            sql::start_reconciliation(&mut tx, w.id.as_str(), now, now).await?;
        }
        let exception =
            NewProcessException::high(&pe_id, &message, &description, op_id, &order_id, op_id, now);
        sql::insert_process_exception(&mut tx, &exception).await?;
        tx.commit().await?;
        tracing::warn!(
            operation = op_id,
            unfinished = drafts.len(),
            "operation failed for good; its unfinished refunds go to reconciliation"
        );
        Ok(())
    }
}
