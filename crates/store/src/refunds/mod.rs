//! SQL of the refund job, one module per thing it serves, all re-exported here:
//!
//! - [`planning`]: an order's funds, credit memos, invoices, reservations, Draft refunds;
//! - [`work`]: [`RefundWork`], the typed refund row every later step reads;
//! - [`gateway_log`]: one row per provider call, before the call and with its answer;
//! - [`settlement`]: a refund leaving `Draft` and its money becoming refunded or released;
//! - [`reconciliation`]: lookups of unknown outcomes, and the hand-over to a person;
//! - [`exceptions`]: process exceptions, raised once and resolved on a later settlement.
//!
//! Every statement that moves money is conditional: a reservation only happens while
//! enough is available, a refund only leaves `Draft` once. A caller that breaks the rules
//! gets an error, never a wrong balance.
//!
//! A refund's status and reconciliation state change only here, and each such statement
//! first asks the domain's lifecycle (`RefundState::with_status` / `with_reconcile`) for
//! the move from the state its `WHERE` requires, then binds the texts it answers with:
//! a move the lifecycle does not list is a `StoreError::Lifecycle`, never a row.

pub mod exceptions;
pub mod gateway_log;
pub mod planning;
pub mod reconciliation;
pub mod settlement;
pub mod work;

pub use exceptions::*;
pub use gateway_log::*;
pub use planning::*;
pub use reconciliation::*;
pub use settlement::*;
pub use work::*;
