//! Logged-out tokens, kept in Redis until they would have expired anyway so
//! that every api replica rejects them.

use chrono::Utc;

use crate::kv::Kv;

pub async fn revoke(kv: &Kv, jti: &str, exp: i64) -> redis::RedisResult<()> {
    let ttl = (exp - Utc::now().timestamp()).max(1);
    let ttl = u64::try_from(ttl).unwrap_or(1);
    let mut conn = kv.conn();
    redis::cmd("SET")
        .arg(kv.key(&["revoked", jti]))
        .arg(1)
        .arg("EX")
        .arg(ttl)
        .query_async::<()>(&mut conn)
        .await
}

pub async fn is_revoked(kv: &Kv, jti: &str) -> redis::RedisResult<bool> {
    let mut conn = kv.conn();
    redis::cmd("EXISTS")
        .arg(kv.key(&["revoked", jti]))
        .query_async::<bool>(&mut conn)
        .await
}

/// Whose live (Socket.IO) sessions end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "scope", rename_all = "camelCase")]
pub enum SessionScope {
    /// One access token (logout).
    #[serde(rename_all = "camelCase")]
    Token { jti: String },
    /// Every session of a user (password change, deactivation, deletion, role change).
    #[serde(rename_all = "camelCase")]
    User { user_id: String },
    /// Every session acting on a tenant, platform administrators excepted (suspension).
    #[serde(rename_all = "camelCase")]
    Tenant { tenant_id: String },
    /// Every widget visitor of a channel (channel deleted or deactivated).
    #[serde(rename_all = "camelCase")]
    Channel { channel_id: String },
}

/// Why a session ended; sent to the client in the `session-revoked` event.
pub mod reasons {
    pub const LOGGED_OUT: &str = "logged-out";
    pub const PASSWORD_CHANGED: &str = "password-changed";
    pub const EMAIL_CHANGED: &str = "email-changed";
    pub const ACCOUNT_DEACTIVATED: &str = "account-deactivated";
    pub const ACCOUNT_DELETED: &str = "account-deleted";
    pub const ROLE_CHANGED: &str = "role-changed";
    pub const TENANT_SUSPENDED: &str = "tenant-suspended";
    pub const CHANNEL_DISABLED: &str = "channel-disabled";
    pub const EXPIRED: &str = "expired";
    /// A socket action found the caller no longer authorised.
    pub const REVOKED: &str = "revoked";
}

/// A revocation broadcast to every api replica, each of which disconnects
/// its own matching sockets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRevocation {
    #[serde(flatten)]
    pub scope: SessionScope,
    pub reason: String,
}

/// The Redis pub/sub channel of session revocations.
pub fn sessions_channel(namespace: &str) -> String {
    format!("{namespace}:session-revocations")
}

/// Tells every api replica to end the matching live sessions.
pub async fn publish(kv: &Kv, scope: SessionScope, reason: &str) -> redis::RedisResult<()> {
    let message = SessionRevocation {
        scope,
        reason: reason.to_owned(),
    };
    let payload = serde_json::to_string(&message).unwrap_or_default();
    let mut conn = kv.conn();
    redis::cmd("PUBLISH")
        .arg(sessions_channel(kv.namespace()))
        .arg(payload)
        .query_async::<()>(&mut conn)
        .await
}

/// Like [`publish`], for callers whose own change is already stored: a
/// failure is logged, and the sockets still fail their next action's re-check.
pub async fn announce(kv: &Kv, scope: SessionScope, reason: &str) {
    if let Err(e) = publish(kv, scope, reason).await {
        tracing::warn!(error = %e, reason, "session revocation not broadcast; sockets re-check on their next action");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_round_trip_as_tagged_json() {
        let r = SessionRevocation {
            scope: SessionScope::User {
                user_id: "u1".into(),
            },
            reason: reasons::ROLE_CHANGED.into(),
        };
        let text = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"scope":"user","userId":"u1","reason":"role-changed"}"#
        );
        assert_eq!(
            serde_json::from_str::<SessionRevocation>(&text).ok(),
            Some(r)
        );
    }
}
