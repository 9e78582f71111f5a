//! Identifiers. Stored as strings (`_id` is the hex form of an ObjectId) so
//! that JSON, BSON and logs all show the same value.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($name:ident) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new() -> Self {
                Self(bson::oid::ObjectId::new().to_hex())
            }
            /// Wraps an id taken from trusted storage or a verified token.
            pub fn from_trusted(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(TenantId);
string_id!(UserId);
string_id!(JobId);

/// True when `raw` has the shape of our ids; anything else cannot exist, so
/// callers answer 404 without a database round trip.
pub fn looks_like_id(raw: &str) -> bool {
    raw.len() == 24 && raw.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Generates a fresh id string for collections without a dedicated newtype.
pub fn new_id() -> String {
    bson::oid::ObjectId::new().to_hex()
}
