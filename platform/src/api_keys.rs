//! API keys: long-lived credentials a tenant admin makes for an app.
//!
//! A key is `ak_live_` followed by 40 random alphanumerics (about 238 bits).
//! Only HMAC-SHA256 of the whole key is stored (keyed with a secret derived
//! from `DATA_ENCRYPTION_KEY`, so a database dump alone cannot test
//! guesses), with the visible prefix and the last four characters for
//! display. A fast keyed hash is enough for random keys of this entropy: a
//! slow password hash would protect nothing more and cost every request.
//!
//! Every request with a key reads the key's document (one indexed lookup),
//! so a revocation stored by one api replica is seen by all of them at once.

use bson::doc;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::db::{Db, DbError, DbResult, TenantOwned};
use crate::ids::{TenantId, UserId};

pub const COLLECTION: &str = "api_keys";

/// What every key starts with (recognisable in logs and secret scanners).
pub const KEY_PREFIX: &str = "ak_live_";
/// Random characters after the prefix.
const RANDOM_LEN: usize = 40;
/// Characters of the random part shown in listings after the prefix.
const VISIBLE_LEN: usize = 4;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    /// Scopes, e.g. `conversations:read`.
    pub permissions: Vec<String>,
    /// Requests per hour.
    pub rate_limit: u32,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// `ak_live_` and the first four random characters.
    pub prefix: String,
    pub last4: String,
    /// Hex HMAC-SHA256 of the whole key; never leaves the backend.
    pub key_hash: String,
    pub created_by: UserId,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub usage_count: i64,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TenantOwned for ApiKey {
    const COLLECTION: &'static str = COLLECTION;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

/// A fresh key (shown once) and what is stored of it.
pub struct NewKey {
    pub secret: String,
    pub prefix: String,
    pub last4: String,
    pub key_hash: String,
}

/// The keyed hash of a key. The HMAC key is derived from the data
/// encryption key with a fixed label, so the two are never the same bytes.
pub fn hash_key(data_key: &[u8; 32], key: &str) -> String {
    let derived = match HmacSha256::new_from_slice(data_key) {
        Ok(mut mac) => {
            mac.update(b"aigentable:api-keys:v1");
            mac.finalize().into_bytes()
        }
        // HMAC accepts keys of any length.
        Err(_) => return String::new(),
    };
    match HmacSha256::new_from_slice(&derived) {
        Ok(mut mac) => {
            mac.update(key.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

pub fn generate(data_key: &[u8; 32]) -> NewKey {
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(RANDOM_LEN)
        .map(char::from)
        .collect();
    let secret = format!("{KEY_PREFIX}{random}");
    NewKey {
        prefix: format!("{KEY_PREFIX}{}", &random[..VISIBLE_LEN]),
        last4: random[RANDOM_LEN - 4..].to_owned(),
        key_hash: hash_key(data_key, &secret),
        secret,
    }
}

/// Whether `raw` has the shape of one of our keys (anything else is refused
/// without a database round trip).
pub fn looks_like_key(raw: &str) -> bool {
    raw.strip_prefix(KEY_PREFIX)
        .is_some_and(|r| r.len() == RANDOM_LEN && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The lookup by hash (every keyed request) and the tenant's listing.
pub async fn ensure_indexes(db: &Db) -> DbResult<()> {
    let unique = mongodb::options::IndexOptions::builder()
        .unique(true)
        .build();
    db.ensure_index(COLLECTION, doc! { "keyHash": 1 }, Some(unique))
        .await?;
    db.ensure_index(COLLECTION, doc! { "tenantId": 1, "createdAt": -1 }, None)
        .await
}

/// The stored key with this hash, in any tenant (the key names its tenant).
pub async fn find_by_hash(db: &Db, key_hash: &str) -> DbResult<Option<ApiKey>> {
    Ok(db
        .unscoped::<ApiKey>(COLLECTION)
        .find_one(doc! { "keyHash": key_hash })
        .await?)
}

/// Counts one use (`lastUsedAt`, `usageCount`).
pub async fn record_use(db: &Db, key: &ApiKey, at: DateTime<Utc>) -> DbResult<()> {
    db.unscoped::<ApiKey>(COLLECTION)
        .update_one(
            doc! { "_id": &key.id, "tenantId": key.tenant_id.as_str() },
            doc! {
                "$set": { "lastUsedAt": bson::DateTime::from_chrono(at) },
                "$inc": { "usageCount": 1_i64 },
            },
        )
        .await
        .map_err(DbError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_prefix_and_hash_with_the_server_secret() {
        let k = generate(&[1u8; 32]);
        assert!(looks_like_key(&k.secret), "{}", k.secret);
        assert!(k.secret.starts_with(&k.prefix));
        assert!(k.secret.ends_with(&k.last4));
        assert_eq!(k.key_hash, hash_key(&[1u8; 32], &k.secret));
        assert_ne!(k.key_hash, hash_key(&[2u8; 32], &k.secret));
        assert_eq!(k.key_hash.len(), 64);
        assert_ne!(generate(&[1u8; 32]).secret, k.secret);
        assert!(!looks_like_key("ak_live_short"));
        assert!(!looks_like_key(&k.secret.replace("ak_live_", "ak_test_")));
    }
}
