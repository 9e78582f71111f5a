use bson::doc;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbResult, TenantOwned};
use crate::domain::{Email, Role, UserStatus};
use crate::ids::{TenantId, UserId};

pub const COLLECTION: &str = "users";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(rename = "_id")]
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub status: UserStatus,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub last_login_at: Option<DateTime<Utc>>,
    /// Tokens issued before this instant are rejected.
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub password_changed_at: Option<DateTime<Utc>>,
    /// A new address waiting for its owner to confirm it; the account keeps
    /// logging in and receiving resets at `email` until then.
    #[serde(default)]
    pub pending_email: Option<String>,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl TenantOwned for User {
    const COLLECTION: &'static str = COLLECTION;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

impl User {
    pub fn new(
        tenant_id: TenantId,
        email: Email,
        password_hash: String,
        first_name: String,
        last_name: String,
        role: Role,
    ) -> Self {
        let now = Utc::now();
        Self {
            id: UserId::new(),
            tenant_id,
            email,
            password_hash,
            first_name,
            last_name,
            role,
            status: UserStatus::Active,
            last_login_at: None,
            password_changed_at: None,
            pending_email: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Lookups that must cross tenants: an email address is unique platform-wide
/// because login does not know the tenant yet.
pub async fn find_by_email_unscoped(db: &Db, email: &Email) -> DbResult<Option<User>> {
    Ok(db
        .unscoped::<User>(COLLECTION)
        .find_one(doc! { "email": email.as_str() })
        .await?)
}

pub async fn find_by_id_unscoped(db: &Db, id: &UserId) -> DbResult<Option<User>> {
    Ok(db
        .unscoped::<User>(COLLECTION)
        .find_one(doc! { "_id": id.as_str() })
        .await?)
}

pub async fn any_super_admin(db: &Db) -> DbResult<bool> {
    Ok(db
        .unscoped::<User>(COLLECTION)
        .find_one(doc! { "role": Role::SuperAdmin.as_str() })
        .await?
        .is_some())
}
