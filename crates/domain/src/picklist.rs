//! Closed sets of text values (Salesforce picklists and our own internal states) as enums
//! whose stored text is fixed: `as_str` writes it, `FromStr` reads it back exactly.

/// A stored or received text that is none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {kind}")]
pub struct UnknownValue {
    /// What the value should have been ("refund status", "provider type").
    pub kind: &'static str,
    pub value: String,
}

/// Declares a `Copy` enum with `ALL`, `as_str`, `Display` and an exact `FromStr`
/// (case-sensitive: stored text is always written by `as_str`, so any other spelling is a
/// corrupt row, not a variant).
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($kind:literal) {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the database and shown by the API.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::picklist::UnknownValue;

            fn from_str(s: &str) -> Result<$name, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::picklist::UnknownValue {
                        kind: $kind,
                        value: s.to_owned(),
                    })
            }
        }
    };
}

pub(crate) use text_enum;
