//! The refund lifecycle: a refund's `Status`, its reconciliation state, and the moves
//! allowed between them; plus the statuses of the records a refund writes beside it
//! (gateway log interactions, process exceptions).
//!
//! ```text
//!            ┌────────────► Processed
//!   Draft ───┼──► Pending ──┤
//!            └────────────► Canceled ◄┘
//! ```
//!
//! A `Draft` refund is reserved money whose provider call has no final answer yet; a
//! `Pending` one was accepted by its provider and waits to settle; `Processed` and
//! `Canceled` are final. Beside the status, a refund waiting for a provider's word has a
//! [`ReconcileState`]: a `Draft` whose outcome is unknown is looked up (`pending`) until it
//! is known or handed to a person (`manual`); a `Pending` refund of a polled provider is
//! looked up until it settles (`settling`). Every status change is the provider's (or a
//! person's) word on the refund, so it ends any reconciliation (`none`).
//!
//! [`RefundState::with_status`] and [`RefundState::with_reconcile`] are the one place
//! these rules live: the store asks them before every write and binds the text they
//! answer with, so a move not listed here is an error, never a row.

use crate::picklist::text_enum;

text_enum! {
    /// Salesforce's `Refund.Status` picklist.
    pub enum RefundStatus ("refund status") {
        Draft => "Draft",
        Pending => "Pending",
        Processed => "Processed",
        Canceled => "Canceled",
    }
}

text_enum! {
    /// Where a refund stands in reconciliation (internal; column `reconcile_state`).
    pub enum ReconcileState ("reconciliation state") {
        /// Not being looked up.
        None => "none",
        /// An unknown outcome (`Draft`), looked up until it is known.
        Pending => "pending",
        /// Accepted and polled (`Pending`) until it settles.
        Settling => "settling",
        /// Unknown for too long (`Draft`): handed to a person, money still reserved.
        Manual => "manual",
    }
}

text_enum! {
    /// Salesforce's `PaymentGatewayLog.InteractionStatus` picklist.
    pub enum InteractionStatus ("gateway log interaction status") {
        /// Written before the provider is called.
        Initiated => "Initiated",
        Success => "Success",
        Failed => "Failed",
        /// The answer did not say what happened (`Indeterminate`).
        Timeout => "Timeout",
        /// Nothing was done (the provider did not know the refund, or the notification
        /// was not applied).
        NoOp => "NoOp",
    }
}

text_enum! {
    /// Salesforce's `ProcessException.Status` picklist.
    pub enum ProcessExceptionStatus ("process exception status") {
        New => "New",
        Triaged => "Triaged",
        Paused => "Paused",
        Resolved => "Resolved",
        Ignored => "Ignored",
        Voided => "Voided",
    }
}

impl ProcessExceptionStatus {
    /// Counted in `OrderSummary.ActiveProcessExceptionCount`: somebody still has to act.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ProcessExceptionStatus::New | ProcessExceptionStatus::Triaged
        )
    }
}

/// A move the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("a {from} refund cannot become {to}")]
    Status {
        from: RefundStatus,
        to: RefundStatus,
    },
    #[error("a {status} refund's reconciliation cannot go from {from} to {to}")]
    Reconcile {
        status: RefundStatus,
        from: ReconcileState,
        to: ReconcileState,
    },
}

impl RefundStatus {
    /// `Processed` and `Canceled` never change again.
    pub fn is_final(self) -> bool {
        matches!(self, RefundStatus::Processed | RefundStatus::Canceled)
    }

    /// The moves the service makes: a provider's final answer settles a `Draft` at once
    /// (`Processed`, `Canceled`) or accepts it to settle later (`Pending`); a `Pending`
    /// refund settles (`Processed`) or fails after all (`Canceled`). Staying is not a
    /// move: settling twice would move the money twice.
    pub fn can_become(self, to: RefundStatus) -> bool {
        use RefundStatus::*;
        matches!(
            (self, to),
            (Draft, Pending | Processed | Canceled) | (Pending, Processed | Canceled)
        )
    }

    pub fn transition(self, to: RefundStatus) -> Result<RefundStatus, LifecycleError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(LifecycleError::Status { from: self, to })
        }
    }
}

impl ReconcileState {
    /// The moves reconciliation makes on a refund whose status stays `status`: an unknown
    /// outcome starts being looked up (`Draft`: none → pending) and is handed to a person
    /// when that takes too long (pending → manual); an accepted refund of a polled
    /// provider is followed until it settles (`Pending`: none → settling). Reconciliation
    /// ends only with a status change (see [`RefundState::with_status`]).
    pub fn can_become(self, to: ReconcileState, status: RefundStatus) -> bool {
        use ReconcileState::*;
        matches!(
            (status, self, to),
            (RefundStatus::Draft, None, Pending)
                | (RefundStatus::Draft, Pending, Manual)
                | (RefundStatus::Pending, None, Settling)
        )
    }
}

/// A refund's place in its lifecycle: its status and its reconciliation state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefundState {
    pub status: RefundStatus,
    pub reconcile: ReconcileState,
}

impl RefundState {
    /// Where every refund starts: `Draft`, not being looked up.
    pub const NEW: RefundState = RefundState {
        status: RefundStatus::Draft,
        reconcile: ReconcileState::None,
    };

    pub fn new(status: RefundStatus, reconcile: ReconcileState) -> RefundState {
        RefundState { status, reconcile }
    }

    /// The combinations the moves can reach (the database holds the same rule as a
    /// constraint): a final refund is never looked up; a `Draft` may be looked up or handed
    /// over; a `Pending` one may be followed until it settles.
    pub fn is_reachable(self) -> bool {
        use ReconcileState as R;
        use RefundStatus as S;
        matches!(
            (self.status, self.reconcile),
            (_, R::None) | (S::Draft, R::Pending | R::Manual) | (S::Pending, R::Settling)
        )
    }

    /// The status moves to `to` (see [`RefundStatus::can_become`]); that ends any
    /// reconciliation, whatever it was.
    pub fn with_status(self, to: RefundStatus) -> Result<RefundState, LifecycleError> {
        Ok(RefundState {
            status: self.status.transition(to)?,
            reconcile: ReconcileState::None,
        })
    }

    /// The reconciliation state moves to `to`, the status stays (see
    /// [`ReconcileState::can_become`]).
    pub fn with_reconcile(self, to: ReconcileState) -> Result<RefundState, LifecycleError> {
        if self.reconcile.can_become(to, self.status) {
            Ok(RefundState {
                status: self.status,
                reconcile: to,
            })
        } else {
            Err(LifecycleError::Reconcile {
                status: self.status,
                from: self.reconcile,
                to,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ReconcileState as R;
    use RefundStatus as S;

    /// Every (from, to) pair of statuses with whether the move is allowed: the whole
    /// table, so a new variant or a changed rule has to be decided here.
    #[test]
    fn status_moves_are_exactly_the_listed_ones() {
        #[rustfmt::skip]
        let table = [
            (S::Draft, S::Draft, false), (S::Draft, S::Pending, true),
            (S::Draft, S::Processed, true), (S::Draft, S::Canceled, true),
            (S::Pending, S::Draft, false), (S::Pending, S::Pending, false),
            (S::Pending, S::Processed, true), (S::Pending, S::Canceled, true),
            (S::Processed, S::Draft, false), (S::Processed, S::Pending, false),
            (S::Processed, S::Processed, false), (S::Processed, S::Canceled, false),
            (S::Canceled, S::Draft, false), (S::Canceled, S::Pending, false),
            (S::Canceled, S::Processed, false), (S::Canceled, S::Canceled, false),
        ];
        assert_eq!(table.len(), S::ALL.len() * S::ALL.len());
        for (from, to, allowed) in table {
            assert_eq!(from.can_become(to), allowed, "{from} -> {to}");
            match from.transition(to) {
                Ok(next) => {
                    assert!(allowed, "{from} -> {to} was let through");
                    assert_eq!(next, to);
                }
                Err(e) => {
                    assert!(!allowed, "{from} -> {to} was refused: {e}");
                    assert_eq!(e, LifecycleError::Status { from, to });
                }
            }
        }
    }

    #[test]
    fn reconcile_moves_are_exactly_the_listed_ones() {
        let allowed = [
            (S::Draft, R::None, R::Pending),
            (S::Draft, R::Pending, R::Manual),
            (S::Pending, R::None, R::Settling),
        ];
        for &status in S::ALL {
            for &from in R::ALL {
                for &to in R::ALL {
                    let want = allowed.contains(&(status, from, to));
                    assert_eq!(
                        from.can_become(to, status),
                        want,
                        "{status}: {from} -> {to}"
                    );
                    let state = RefundState::new(status, from);
                    match state.with_reconcile(to) {
                        Ok(next) => {
                            assert!(want, "{status}: {from} -> {to} was let through");
                            assert_eq!(next, RefundState::new(status, to));
                        }
                        Err(e) => {
                            assert!(!want, "{status}: {from} -> {to} was refused: {e}");
                            assert_eq!(e, LifecycleError::Reconcile { status, from, to });
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_status_change_ends_reconciliation() {
        let cases = [
            (RefundState::new(S::Draft, R::None), S::Processed),
            (RefundState::new(S::Draft, R::Pending), S::Pending),
            (RefundState::new(S::Draft, R::Manual), S::Canceled),
            (RefundState::new(S::Pending, R::Settling), S::Processed),
            (RefundState::new(S::Pending, R::None), S::Canceled),
        ];
        for (state, to) in cases {
            assert_eq!(
                state.with_status(to),
                Ok(RefundState::new(to, R::None)),
                "{state:?} -> {to}"
            );
        }
    }

    #[test]
    fn reachable_combinations() {
        #[rustfmt::skip]
        let reachable = [
            (S::Draft, R::None), (S::Draft, R::Pending), (S::Draft, R::Manual),
            (S::Pending, R::None), (S::Pending, R::Settling),
            (S::Processed, R::None), (S::Canceled, R::None),
        ];
        for &status in S::ALL {
            for &reconcile in R::ALL {
                let state = RefundState::new(status, reconcile);
                assert_eq!(
                    state.is_reachable(),
                    reachable.contains(&(status, reconcile)),
                    "{state:?}"
                );
            }
        }
    }

    #[test]
    fn stored_text_reads_back_and_nothing_else_does() {
        for &s in S::ALL {
            assert_eq!(s.as_str().parse::<S>(), Ok(s));
        }
        for &r in R::ALL {
            assert_eq!(r.as_str().parse::<R>(), Ok(r));
        }
        for &i in InteractionStatus::ALL {
            assert_eq!(i.as_str().parse::<InteractionStatus>(), Ok(i));
        }
        for &p in ProcessExceptionStatus::ALL {
            assert_eq!(p.as_str().parse::<ProcessExceptionStatus>(), Ok(p));
        }
        for bad in ["", "draft", "DRAFT", "Draft ", "Failed", "None"] {
            let e = bad.parse::<S>().unwrap_err();
            assert_eq!(e.kind, "refund status");
            assert_eq!(e.value, bad);
        }
        assert!("None".parse::<R>().is_err());
        assert!("Error".parse::<InteractionStatus>().is_err());
        assert!("new".parse::<ProcessExceptionStatus>().is_err());
    }

    #[test]
    fn active_process_exceptions() {
        let active: Vec<_> = ProcessExceptionStatus::ALL
            .iter()
            .filter(|s| s.is_active())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(active, ["New", "Triaged"]);
    }

    #[derive(Clone, Copy, Debug)]
    enum Move {
        Status(RefundStatus),
        Reconcile(ReconcileState),
    }

    fn any_move() -> impl Strategy<Value = Move> {
        prop_oneof![
            proptest::sample::select(S::ALL).prop_map(Move::Status),
            proptest::sample::select(R::ALL).prop_map(Move::Reconcile),
        ]
    }

    proptest! {
        /// Whatever is attempted, from a new refund: a refused move changes nothing, every
        /// state reached is a reachable one, a final status never changes, and the status
        /// changes at most twice (Draft → Pending → final), so money settles at most once.
        #[test]
        fn any_sequence_of_moves_keeps_the_lifecycle(moves in proptest::collection::vec(any_move(), 0..40)) {
            let mut state = RefundState::NEW;
            let mut status_changes = 0;
            for m in moves {
                let next = match m {
                    Move::Status(to) => state.with_status(to),
                    Move::Reconcile(to) => state.with_reconcile(to),
                };
                match next {
                    Ok(next) => {
                        prop_assert!(next.is_reachable(), "{state:?} -> {next:?}");
                        prop_assert!(!state.status.is_final() || next.status == state.status);
                        if next.status != state.status {
                            status_changes += 1;
                        }
                        state = next;
                    }
                    Err(_) => prop_assert!(state.is_reachable()),
                }
            }
            prop_assert!(status_changes <= 2);
            prop_assert!(state.status != S::Draft || status_changes == 0);
        }
    }
}
