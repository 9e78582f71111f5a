use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::TenantOwned;
use crate::ids::{TenantId, UserId};

pub const COLLECTION: &str = "password_resets";

/// A single-use reset token. Only its SHA-256 is stored, so a database leak
/// does not leak usable tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordReset {
    /// Hex SHA-256 of the token.
    #[serde(rename = "_id")]
    pub token_hash: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    #[serde(with = "crate::model::bson_datetime")]
    pub expires_at: DateTime<Utc>,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub used_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
}

impl TenantOwned for PasswordReset {
    const COLLECTION: &'static str = COLLECTION;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}
