//! Shared Redis connection with a namespace for every key.

use redis::aio::ConnectionManager;

#[derive(Clone)]
pub struct Kv {
    conn: ConnectionManager,
    namespace: String,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Kv {
    pub async fn connect(url: &str, namespace: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_manager().await?;
        Ok(Self {
            conn,
            namespace: namespace.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.namespace.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// A cheap clone of the multiplexed connection.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Sets `key` to `value` for `ttl` unless it is set already (`SET NX
    /// PX`): whether this call set it. Claims and locks are built on it.
    pub async fn set_new(
        &self,
        key: &str,
        value: &str,
        ttl: std::time::Duration,
    ) -> redis::RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut self.conn())
            .await?;
        Ok(set.is_some())
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }
}
