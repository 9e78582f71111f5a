//! The one request/answer channel between the api and a worker, for the
//! few requests where the api waits for a job's result (knowledge search
//! when only the workers hold the vectors, an agent test with
//! `?wait=true`).
//!
//! The api creates a [`ReplyTo`], puts it in the job and [`ReplyTo::wait`]s;
//! the worker [`ReplyTo::send`]s exactly one [`Answered`]. The answer's type
//! is the job's [`Ask::Answer`], so both sides agree at compile time. The
//! list expires a minute after the answer, so an answer nobody waits for
//! any more costs nothing.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use aigentable_platform::Kv;

use crate::Job;

/// How long an unread answer stays in Redis.
const ANSWER_TTL_SECS: u64 = 60;
/// The longest pause between two looks at the list while waiting.
const MAX_POLL: Duration = Duration::from_millis(25);

/// A job whose result someone may be waiting for.
pub trait Ask: Job {
    type Answer: Serialize + DeserializeOwned + Send;

    /// Where to answer, when someone waits.
    fn reply_to(&self) -> Option<&ReplyTo>;
}

/// What the worker sends back: the answer, or why there is none, in words
/// a user can read.
pub type Answered<T> = Result<T, String>;

/// The Redis list the answer to one request goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplyTo(String);

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unreadable answer: {0}")]
    Decode(#[from] serde_json::Error),
}

impl ReplyTo {
    /// A fresh list for one request; `purpose` names it in Redis
    /// (`{ns}:answer:{purpose}:{id}`).
    pub fn new(kv: &Kv, purpose: &str) -> Self {
        Self(kv.key(&["answer", purpose, &ulid::Ulid::generate().to_string()]))
    }

    /// The worker's side: one answer, kept for a minute.
    pub async fn send<T: Serialize>(
        &self,
        kv: &Kv,
        answer: &Answered<T>,
    ) -> Result<(), AnswerError> {
        let body = serde_json::to_string(answer)?;
        let mut conn = kv.conn();
        redis::pipe()
            .cmd("RPUSH")
            .arg(&self.0)
            .arg(body)
            .ignore()
            .cmd("EXPIRE")
            .arg(&self.0)
            .arg(ANSWER_TTL_SECS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    fn pieces_key(&self) -> String {
        format!("{}:pieces", self.0)
    }

    /// The worker's side of a streamed answer: one piece of it, before the
    /// answer itself ([`send`](Self::send)) ends the stream.
    pub async fn send_piece<T: Serialize>(&self, kv: &Kv, piece: &T) -> Result<(), AnswerError> {
        let body = serde_json::to_string(piece)?;
        let key = self.pieces_key();
        let mut conn = kv.conn();
        redis::pipe()
            .cmd("RPUSH")
            .arg(&key)
            .arg(body)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ANSWER_TTL_SECS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The api's side of a streamed answer, in one round trip: the pieces
    /// sent since the last look (oldest first), then the answer if it came.
    /// Pieces are sent before the answer, so none is left behind it.
    pub async fn poll_stream<P: DeserializeOwned, T: DeserializeOwned>(
        &self,
        kv: &Kv,
    ) -> Result<(Vec<P>, Option<Answered<T>>), AnswerError> {
        const MAX_PIECES: usize = 256;
        let mut conn = kv.conn();
        let (pieces, answer): (Option<Vec<String>>, Option<String>) = redis::pipe()
            .cmd("LPOP")
            .arg(self.pieces_key())
            .arg(MAX_PIECES)
            .cmd("LPOP")
            .arg(&self.0)
            .query_async(&mut conn)
            .await?;
        let pieces = pieces
            .unwrap_or_default()
            .iter()
            .map(|p| serde_json::from_str(p))
            .collect::<Result<Vec<P>, _>>()?;
        let answer = answer.map(|a| serde_json::from_str(&a)).transpose()?;
        Ok((pieces, answer))
    }

    /// The api's side: the answer, or `None` after `timeout`. Polls with
    /// short, growing pauses, because a blocking pop would hold the shared
    /// multiplexed connection for everyone else.
    pub async fn wait<T: DeserializeOwned>(
        &self,
        kv: &Kv,
        timeout: Duration,
    ) -> Result<Option<Answered<T>>, AnswerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let mut conn = kv.conn();
            let popped: Option<String> = redis::cmd("LPOP")
                .arg(&self.0)
                .query_async(&mut conn)
                .await?;
            if let Some(raw) = popped {
                return Ok(Some(serde_json::from_str(&raw)?));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}
