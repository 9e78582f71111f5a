//! `POST /agents/{id}/test?stream=true`: the agent's answer as
//! Server-Sent Events while the worker writes it.
//!
//! The worker sends the pieces of the answer, then the answer, to the
//! test's [`ReplyTo`]; this reads both in one Redis round trip per look
//! and turns them into `delta` events and one final `answer` (or `error`)
//! event. Looks come every few milliseconds while pieces flow and back
//! off to [`MAX_PAUSE`] while nothing does.

use std::convert::Infallible;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use salvo::prelude::*;
use salvo::sse::{SseEvent, SseKeepAlive};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use aigentable_jobs::answer::{Answered, ReplyTo};
use aigentable_jobs::types::generate_reply;
use aigentable_platform::Kv;

use super::test::{TEST_WAIT, TestAnswer};
use crate::error::ApiError;

const MIN_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, Deserialize)]
struct Piece {
    delta: String,
    index: u64,
}

struct Reader {
    kv: Kv,
    reply_to: ReplyTo,
    job_id: String,
    deadline: Instant,
    pause: Duration,
    /// The answer came (or the stream failed): the events still to send
    /// are the last ones.
    done: bool,
}

/// Answers `res` with the event stream of the test `job_id`.
pub(super) fn stream_answer(res: &mut Response, kv: Kv, reply_to: ReplyTo, job_id: String) {
    let reader = Reader {
        kv,
        reply_to,
        job_id,
        deadline: Instant::now() + TEST_WAIT,
        pause: MIN_PAUSE,
        done: false,
    };
    let events = stream::unfold(reader, |mut r| async move {
        if r.done {
            return None;
        }
        let batch = r.next_batch().await;
        Some((stream::iter(batch), r))
    })
    .flatten()
    .map(Ok::<_, Infallible>);
    SseKeepAlive::new(events).stream(res);
}

impl Reader {
    /// The events of the next look: pieces, then the end when it came.
    /// Waits until there is at least one event.
    async fn next_batch(&mut self) -> Vec<SseEvent> {
        loop {
            let polled = self
                .reply_to
                .poll_stream::<Piece, generate_reply::TestAnswer>(&self.kv)
                .await;
            let (pieces, answer) = match polled {
                Ok(p) => p,
                Err(e) => {
                    self.done = true;
                    tracing::warn!(job_id = %self.job_id, error = %e, "agent test stream could not be read");
                    return vec![error_event(&ApiError::internal(e))];
                }
            };
            let mut events: Vec<SseEvent> = pieces.into_iter().map(delta_event).collect();
            if let Some(answer) = answer {
                // Pieces are sent before the answer; more than one look's
                // worth may still wait behind it.
                events.extend(self.rest_of_the_pieces().await);
                events.push(self.answer_event(answer));
                self.done = true;
                return events;
            }
            if !events.is_empty() {
                self.pause = MIN_PAUSE;
                return events;
            }
            if Instant::now() >= self.deadline {
                self.done = true;
                return vec![error_event(&ApiError::Timeout(format!(
                    "the agent did not answer within {} s; the test goes on as job {} (GET /api/v1/jobs/{})",
                    TEST_WAIT.as_secs(),
                    self.job_id,
                    self.job_id
                )))];
            }
            tokio::time::sleep(self.pause).await;
            self.pause = (self.pause * 2).min(MAX_PAUSE);
        }
    }

    async fn rest_of_the_pieces(&self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        loop {
            match self.reply_to.poll_stream::<Piece, Value>(&self.kv).await {
                Ok((pieces, _)) if !pieces.is_empty() => {
                    events.extend(pieces.into_iter().map(delta_event));
                }
                _ => return events,
            }
        }
    }

    fn answer_event(&self, answered: Answered<generate_reply::TestAnswer>) -> SseEvent {
        match answered {
            Ok(answer) => {
                let body = TestAnswer::new(answer, self.job_id.clone());
                SseEvent::default()
                    .name("answer")
                    .json(&body)
                    .unwrap_or_else(|_| SseEvent::default().name("answer").text("{}"))
            }
            Err(message) => error_event(&ApiError::Unavailable(message)),
        }
    }
}

fn delta_event(piece: Piece) -> SseEvent {
    SseEvent::default()
        .name("delta")
        .text(json!({ "delta": piece.delta, "index": piece.index }).to_string())
}

/// The error body every other response has, as the stream's last event.
fn error_event(e: &ApiError) -> SseEvent {
    SseEvent::default()
        .name("error")
        .text(serde_json::to_string(&e.body()).unwrap_or_else(|_| "{}".to_owned()))
}
