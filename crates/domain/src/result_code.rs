//! The seven Salesforce result codes every provider answer is mapped to.

use std::fmt;
use std::str::FromStr;

/// What a provider interaction amounted to, in Salesforce's vocabulary
/// (`commercepayments.SalesforceResultCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SfResultCode {
    Success,
    Decline,
    RequiresReview,
    Indeterminate,
    PermanentFail,
    SystemError,
    ValidationError,
}

impl SfResultCode {
    pub const ALL: [SfResultCode; 7] = [
        SfResultCode::Success,
        SfResultCode::Decline,
        SfResultCode::RequiresReview,
        SfResultCode::Indeterminate,
        SfResultCode::PermanentFail,
        SfResultCode::SystemError,
        SfResultCode::ValidationError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SfResultCode::Success => "Success",
            SfResultCode::Decline => "Decline",
            SfResultCode::RequiresReview => "RequiresReview",
            SfResultCode::Indeterminate => "Indeterminate",
            SfResultCode::PermanentFail => "PermanentFail",
            SfResultCode::SystemError => "SystemError",
            SfResultCode::ValidationError => "ValidationError",
        }
    }

    /// A final failure: the money did not move and will not move for this key.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            SfResultCode::Decline
                | SfResultCode::PermanentFail
                | SfResultCode::ValidationError
                | SfResultCode::RequiresReview
        )
    }
}

impl fmt::Display for SfResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SfResultCode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SfResultCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown result code {s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name() {
        for code in SfResultCode::ALL {
            assert_eq!(code.as_str().parse::<SfResultCode>().unwrap(), code);
        }
        assert!("Sucess".parse::<SfResultCode>().is_err());
    }

    #[test]
    fn only_final_failures_release_money() {
        assert!(!SfResultCode::Success.is_failure());
        assert!(!SfResultCode::Indeterminate.is_failure());
        assert!(!SfResultCode::SystemError.is_failure());
        assert!(SfResultCode::Decline.is_failure());
        assert!(SfResultCode::RequiresReview.is_failure());
    }
}
