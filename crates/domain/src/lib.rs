//! Pure domain of `refunds`: Salesforce-style ids, money in integer minor units, the
//! allocation rule that splits a refund across payment summaries and payments, the refund
//! lifecycle (statuses and their allowed moves, in `lifecycle`), and the result codes
//! providers answer with.
//!
//! This crate owns no I/O. It must never depend on tokio, sqlx, axum or an HTTP client,
//! and it must never build a money amount from a floating-point number.

pub mod admission;
pub mod allocation;
pub mod id;
pub mod lifecycle;
pub mod money;
pub mod operation;
pub mod picklist;
pub mod provider;
pub mod result_code;

pub use admission::{
    admit, pay_invoices, plan_credit_memo, Admission, AdmissionError, AdmissionRequest,
};
pub use allocation::{
    allocate, pick, Allocation, AllocationRequest, AllocationRule, Leg, SequenceItem, SummarySlot,
};
pub use id::{IdError, ObjectType, SfId};
pub use lifecycle::{
    InteractionStatus, LifecycleError, ProcessExceptionStatus, ReconcileState, RefundState,
    RefundStatus,
};
pub use money::{Currency, Money, MoneyError};
pub use operation::{OperationStatus, TransitionError, UnknownStatus};
pub use picklist::UnknownValue;
pub use provider::{GatewayStatus, ProviderType};
pub use result_code::SfResultCode;
