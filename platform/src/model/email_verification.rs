use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::TenantOwned;
use crate::ids::{TenantId, UserId};

pub const COLLECTION: &str = "email_verifications";

/// A single-use token proving that a user reads the mailbox they asked to
/// move their account to. Only its SHA-256 is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailVerification {
    /// Hex SHA-256 of the token.
    #[serde(rename = "_id")]
    pub token_hash: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The address being verified (the user's `pendingEmail` when sent).
    pub email: String,
    #[serde(with = "crate::model::bson_datetime")]
    pub expires_at: DateTime<Utc>,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub used_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
}

impl TenantOwned for EmailVerification {
    const COLLECTION: &'static str = COLLECTION;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}
