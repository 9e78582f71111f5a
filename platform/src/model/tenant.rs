use bson::doc;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError, DbResult};
use crate::domain::TenantStatus;
use crate::ids::TenantId;

pub const COLLECTION: &str = "tenants";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantSettings {
    pub timezone: String,
    pub default_language: String,
    /// Shown to customers when no human or agent can answer.
    #[serde(default)]
    pub business_hours: Option<String>,
    #[serde(default)]
    pub support_email: Option<String>,
    /// What a reply left in doubt by a crash becomes.
    #[serde(default)]
    pub delivery_guarantee: DeliveryGuarantee,
}

/// A reply whose send was interrupted (the worker died around the provider
/// call) may or may not have reached the customer; none of the providers
/// takes an idempotency key, so the platform must pick a side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryGuarantee {
    /// Sent again: a rare duplicate beats a customer left unanswered.
    #[default]
    AtLeastOnce,
    /// Never sent again: marked failed and handed to staff.
    AtMostOnce,
}

impl DeliveryGuarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtLeastOnce => "atLeastOnce",
            Self::AtMostOnce => "atMostOnce",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "atLeastOnce" => Some(Self::AtLeastOnce),
            "atMostOnce" => Some(Self::AtMostOnce),
            _ => None,
        }
    }
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            timezone: "UTC".to_owned(),
            default_language: "en".to_owned(),
            business_hours: None,
            support_email: None,
            delivery_guarantee: DeliveryGuarantee::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    #[serde(rename = "_id")]
    pub id: TenantId,
    pub name: String,
    pub plan: String,
    pub status: TenantStatus,
    #[serde(default)]
    pub settings: TenantSettings,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    pub fn new(name: String, plan: String) -> Self {
        let now = Utc::now();
        Self {
            id: TenantId::new(),
            name,
            plan,
            status: TenantStatus::Active,
            settings: TenantSettings::default(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// Tenants are the root of scoping, so their repository is keyed by id.
pub struct Tenants<'a>(pub &'a Db);

impl Tenants<'_> {
    fn coll(&self) -> mongodb::Collection<Tenant> {
        self.0.unscoped(COLLECTION)
    }

    pub async fn insert(&self, tenant: &Tenant) -> DbResult<()> {
        self.coll()
            .insert_one(tenant)
            .await
            .map_err(DbError::from_write)?;
        self.0.announce_config(&tenant.id).await;
        Ok(())
    }

    pub async fn get(&self, id: &TenantId) -> DbResult<Option<Tenant>> {
        Ok(self.coll().find_one(doc! { "_id": id.as_str() }).await?)
    }

    pub async fn update(&self, id: &TenantId, set: bson::Document) -> DbResult<Option<Tenant>> {
        let mut set = set;
        set.insert("updatedAt", bson::DateTime::now());
        let updated = self
            .coll()
            .find_one_and_update(doc! { "_id": id.as_str() }, doc! { "$set": set })
            .return_document(mongodb::options::ReturnDocument::After)
            .await?;
        // A suspension or a plan change reaches every process's cache.
        self.0.announce_config(id).await;
        Ok(updated)
    }

    pub async fn delete(&self, id: &TenantId) -> DbResult<bool> {
        let deleted = self
            .coll()
            .delete_one(doc! { "_id": id.as_str() })
            .await?
            .deleted_count
            == 1;
        self.0.announce_config(id).await;
        Ok(deleted)
    }

    /// All tenants, newest first: for platform administrators only.
    pub async fn list_all(&self, page: crate::db::PageRequest) -> DbResult<(Vec<Tenant>, u64)> {
        use futures::TryStreamExt;
        let total = self.coll().count_documents(doc! {}).await?;
        let items = self
            .coll()
            .find(doc! {})
            .sort(doc! { "createdAt": -1 })
            .skip(page.skip())
            .limit(i64::try_from(page.limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        Ok((items, total))
    }
}
