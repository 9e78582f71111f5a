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
