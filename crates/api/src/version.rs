//! API versions: `v48.0` … `v67.0`, and the fields each version knows.

use crate::error::ApiError;

pub const OLDEST: u32 = 48;
pub const NEWEST: u32 = 67;

/// A supported API version (its major number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32);

impl ApiVersion {
    /// Parses the path segment (`v58.0`); anything else is an unknown resource.
    pub fn parse(segment: &str) -> Result<ApiVersion, ApiError> {
        let major = segment
            .strip_prefix('v')
            .and_then(|v| v.strip_suffix(".0"))
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|v| (OLDEST..=NEWEST).contains(v));
        major.map(ApiVersion).ok_or_else(ApiError::not_found)
    }

    pub fn segment(self) -> String {
        format!("v{}.0", self.0)
    }

    /// Salesforce's release name for the version (`Spring '20` is 48.0).
    pub fn label(self) -> String {
        let k = self.0.saturating_sub(OLDEST);
        let season = ["Spring", "Summer", "Winter"][(k % 3) as usize];
        format!("{season} '{}", 20 + (k + 1) / 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_48_to_67_exist() {
        assert_eq!(ApiVersion::parse("v48.0").unwrap(), ApiVersion(48));
        assert_eq!(ApiVersion::parse("v67.0").unwrap(), ApiVersion(67));
        for bad in [
            "v47.0", "v68.0", "58.0", "v58", "v58.1", "v.0", "v+58.0", "v058x.0",
        ] {
            assert!(ApiVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_follow_the_release_calendar() {
        assert_eq!(ApiVersion(48).label(), "Spring '20");
        assert_eq!(ApiVersion(50).label(), "Winter '21");
        assert_eq!(ApiVersion(67).label(), "Summer '26");
    }
}
