//! A background operation's `Status`: Salesforce's whole BackgroundOperation picklist and
//! the moves between its values that the queue makes.
//!
//! ```text
//!   New ──claim──▶ Running ──done──────────────▶ Complete
//!    │               │  ▲ └─failed, no retry left─▶ Error
//!    │               │  └─rescue (lease expired)
//!    │               └─failed, retry left──▶ Scheduled ──claim (due)──▶ Running
//!    └─cancel──▶ Canceled
//! ```
//!
//! `Waiting` and `Merged` are Salesforce values this service does not produce; they are
//! named so that a stored or requested value is always one of the picklist's.

use std::fmt;

/// One value of the BackgroundOperation `Status` picklist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationStatus {
    New,
    Scheduled,
    Waiting,
    Running,
    Complete,
    Error,
    Canceled,
    Merged,
}

/// A move the state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a background operation cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: OperationStatus,
    pub to: OperationStatus,
}

/// A status text that is not on the picklist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a BackgroundOperation status")]
pub struct UnknownStatus(pub String);

impl OperationStatus {
    pub const ALL: [OperationStatus; 8] = [
        OperationStatus::New,
        OperationStatus::Scheduled,
        OperationStatus::Waiting,
        OperationStatus::Running,
        OperationStatus::Complete,
        OperationStatus::Error,
        OperationStatus::Canceled,
        OperationStatus::Merged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::New => "New",
            OperationStatus::Scheduled => "Scheduled",
            OperationStatus::Waiting => "Waiting",
            OperationStatus::Running => "Running",
            OperationStatus::Complete => "Complete",
            OperationStatus::Error => "Error",
            OperationStatus::Canceled => "Canceled",
            OperationStatus::Merged => "Merged",
        }
    }

    pub fn parse(text: &str) -> Result<OperationStatus, UnknownStatus> {
        OperationStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownStatus(text.to_string()))
    }

    /// Whether the operation still has work to do (a poller keeps polling).
    pub fn is_unfinished(self) -> bool {
        matches!(
            self,
            OperationStatus::New
                | OperationStatus::Scheduled
                | OperationStatus::Waiting
                | OperationStatus::Running
        )
    }

    /// The statuses an operation may be in to move to `to`: the one rule, which the
    /// queue's conditional SQL is written from.
    pub fn sources(to: OperationStatus) -> &'static [OperationStatus] {
        use OperationStatus::*;
        match to {
            // A claim takes a new or due operation; a rescue takes over a running one.
            Running => &[New, Scheduled, Running],
            Complete | Scheduled | Error => &[Running],
            Canceled => &[New],
            New | Waiting | Merged => &[],
        }
    }

    /// Checks one move.
    pub fn transition(self, to: OperationStatus) -> Result<OperationStatus, TransitionError> {
        if OperationStatus::sources(to).contains(&self) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// `status IN (…)` of the statuses `to` may be reached from, for conditional SQL.
    pub fn sql_sources(to: OperationStatus) -> String {
        let list: Vec<String> = OperationStatus::sources(to)
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("status IN ({})", list.join(", "))
    }
}

impl fmt::Display for OperationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::OperationStatus::{self, *};

    #[test]
    fn every_picklist_value_round_trips() {
        for s in OperationStatus::ALL {
            assert_eq!(OperationStatus::parse(s.as_str()), Ok(s));
        }
        assert!(OperationStatus::parse("Failed").is_err());
        assert!(
            OperationStatus::parse("new").is_err(),
            "the picklist is exact"
        );
    }

    #[test]
    fn allowed_moves_are_exactly_the_queues() {
        let allowed = [
            (New, Running),
            (New, Canceled),
            (Scheduled, Running),
            (Running, Running),
            (Running, Complete),
            (Running, Scheduled),
            (Running, Error),
        ];
        for from in OperationStatus::ALL {
            for to in OperationStatus::ALL {
                let ok = allowed.contains(&(from, to));
                assert_eq!(from.transition(to).is_ok(), ok, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn final_statuses_go_nowhere() {
        for from in [Complete, Error, Canceled, Merged] {
            assert!(!from.is_unfinished());
            for to in OperationStatus::ALL {
                assert!(from.transition(to).is_err(), "{from} -> {to}");
            }
        }
        assert!(Scheduled.is_unfinished(), "a scheduled retry is not an end");
    }

    #[test]
    fn sql_lists_the_sources() {
        assert_eq!(
            OperationStatus::sql_sources(Running),
            "status IN ('New', 'Scheduled', 'Running')"
        );
        assert_eq!(OperationStatus::sql_sources(Canceled), "status IN ('New')");
    }
}
