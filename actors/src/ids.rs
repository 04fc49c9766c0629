//! Typed, prefixed identifiers. A bare `String` never crosses a module
//! boundary as an id: `MessageId("msg_…")`, `TenantId("tnt_…")`.
//!
//! Ids are UUIDv7 (time ordered, so keyset pagination by id follows creation
//! order) in lowercase hex behind a short prefix.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Parse an id received from outside; `None` unless it has the
            /// prefix followed by 32 lowercase hex digits.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let ok = rest.len() == 32
                    && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                ok.then(|| Self(s.to_owned()))
            }

            /// Trust a value read back from Herald's own store.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A message accepted by Herald.
    MessageId,
    "msg_"
);
prefixed_id!(
    /// A tenant (an API customer).
    TenantId,
    "tnt_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_order() {
        let a = MessageId::generate();
        let b = MessageId::generate();
        assert!(a.as_str().starts_with("msg_"));
        assert_eq!(MessageId::parse(a.as_str()), Some(a.clone()));
        assert!(a < b, "v7 ids are time ordered");
    }

    #[test]
    fn foreign_strings_are_refused() {
        assert_eq!(MessageId::parse("msg_123"), None);
        assert_eq!(
            MessageId::parse("tnt_0192f0c1a2b37c4d8e9f0a1b2c3d4e5f"),
            None
        );
        assert_eq!(
            MessageId::parse("msg_0192F0C1A2B37C4D8E9F0A1B2C3D4E5F"),
            None,
            "uppercase is not ours"
        );
        assert!(TenantId::parse("tnt_0192f0c1a2b37c4d8e9f0a1b2c3d4e5f").is_some());
    }
}
