//! The text of a reply while it is written: `message-delta` events to the
//! conversation's room and its widget visitor, or the pieces of an agent
//! test streamed to the api.
//!
//! Pieces are coalesced: the first goes out at once (what the visitor
//! waits for), the next ones at most every [`COALESCE`], so a fast model
//! costs a few events a second, not one per token. A conversation's
//! stream also looks, at most every [`STATUS_CHECK`], whether a human took
//! the conversation over; then the stream stops and the provider's
//! connection is dropped (which ends the generation there too).

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use aigentable_jobs::answer::ReplyTo;
use aigentable_jobs::events::{self, RealtimeEvent, names};
use aigentable_platform::channels::client::Target as ProviderTarget;
use aigentable_platform::model::{ChannelType, Conversation};

use crate::handlers::delivery::provider_client;
use crate::runner::JobContext;

/// The shortest pause between two delta events of one message.
pub const COALESCE: Duration = Duration::from_millis(50);
/// How often a streaming reply looks whether its conversation left the bot.
const STATUS_CHECK: Duration = Duration::from_millis(300);

/// Where the pieces go.
pub(crate) enum Target {
    /// `message-delta` to the conversation's room (staff) and its widget
    /// visitor; `message_id` is the id the reply will be stored with.
    Conversation {
        conversation_id: String,
        message_id: String,
    },
    /// An agent test the api streams as Server-Sent Events.
    Test(ReplyTo),
}

/// Whether the stream may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Go,
    /// The conversation left the bot: stop generating.
    Stop,
}

pub(crate) struct Deltas<'a> {
    ctx: &'a JobContext,
    target: Target,
    /// Where "typing…" can be shown while the model writes.
    typing: Option<TypingHint>,
    pending: String,
    /// Events sent so far: the next event's `index`.
    index: u32,
    next_flush: Instant,
    next_check: Instant,
}

impl<'a> Deltas<'a> {
    pub(crate) fn new(ctx: &'a JobContext, target: Target) -> Self {
        let now = Instant::now();
        Self {
            ctx,
            target,
            typing: None,
            pending: String::new(),
            index: 0,
            next_flush: now,
            next_check: now + STATUS_CHECK,
        }
    }

    /// Shows "typing…" to the customer of `conversation` while the model
    /// writes, where the channel has such a signal (Telegram).
    pub(crate) fn with_typing_for(mut self, conversation: &Conversation) -> Self {
        if conversation.channel_type == ChannelType::Telegram {
            self.typing = Some(TypingHint {
                channel_id: conversation.channel_id.clone(),
                to: conversation.external_user_id.clone(),
            });
        }
        self
    }

    /// The "typing…" signal to send before the model is asked, if any.
    pub(crate) fn typing(&self) -> Option<TypingHint> {
        self.typing.clone()
    }

    /// Whether any text was sent: after that, a broken stream is answered
    /// with a complete message instead of starting the text again.
    pub(crate) fn started(&self) -> bool {
        self.index > 0 || !self.pending.is_empty()
    }

    /// When [`tick`](Self::tick) has something to do: buffered text is
    /// due, or a conversation's status is to be looked at (also while the
    /// model writes nothing, so a takeover is seen during a long pause).
    pub(crate) fn due_at(&self) -> Option<Instant> {
        let flush = (!self.pending.is_empty()).then_some(self.next_flush);
        let check = matches!(self.target, Target::Conversation { .. }).then_some(self.next_check);
        match (flush, check) {
            (Some(f), Some(c)) => Some(f.min(c)),
            (f, c) => f.or(c),
        }
    }

    /// Buffers `text`; sends what is buffered when it is due.
    pub(crate) async fn push(&mut self, text: &str) -> Flow {
        self.pending.push_str(text);
        self.tick().await
    }

    /// Sends what is buffered if it is due, and looks at the conversation
    /// when that is due.
    pub(crate) async fn tick(&mut self) -> Flow {
        let now = Instant::now();
        if !self.pending.is_empty() && now >= self.next_flush {
            self.flush().await;
        }
        if now >= self.next_check {
            self.next_check = now + STATUS_CHECK;
            if !self.conversation_answered_by_the_bot().await {
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    /// Sends what is still buffered: the text is complete.
    pub(crate) async fn finish(&mut self) {
        if !self.pending.is_empty() {
            self.flush().await;
        }
    }

    /// Tells the viewers that the text shown so far will not become a
    /// message (a human took over, or the reply was dropped).
    pub(crate) async fn abandon(&mut self) {
        self.pending.clear();
        if self.index == 0 {
            return;
        }
        if let Target::Conversation {
            conversation_id,
            message_id,
        } = &self.target
        {
            let data = json!({
                "conversationId": conversation_id,
                "messageId": message_id,
                "delta": "",
                "index": self.index,
                "dropped": true,
            });
            self.index += 1;
            self.publish(conversation_id, data).await;
        }
    }

    async fn flush(&mut self) {
        let delta = std::mem::take(&mut self.pending);
        let index = self.index;
        self.index += 1;
        self.next_flush = Instant::now() + COALESCE;
        match &self.target {
            Target::Conversation {
                conversation_id,
                message_id,
            } => {
                let data = json!({
                    "conversationId": conversation_id,
                    "messageId": message_id,
                    "delta": delta,
                    "index": index,
                });
                self.publish(conversation_id, data).await;
            }
            Target::Test(reply_to) => {
                let piece = json!({ "delta": delta, "index": index });
                if let Err(e) = reply_to
                    .send_piece(&self.ctx.state.platform.kv, &piece)
                    .await
                {
                    tracing::debug!(job_id = %self.ctx.job_id, error = %e, "test delta not sent");
                }
            }
        }
    }

    /// A delta is a hint like every realtime event: the stored message is
    /// the truth, so a failed publish is only logged.
    async fn publish(&self, conversation_id: &str, data: serde_json::Value) {
        let event = RealtimeEvent {
            tenant_id: self.ctx.tenant_id.to_string(),
            conversation_id: Some(conversation_id.to_owned()),
            event: names::MESSAGE_DELTA.to_owned(),
            data,
        };
        if let Err(e) = events::publish(&self.ctx.state.platform.kv, &event).await {
            tracing::debug!(job_id = %self.ctx.job_id, conversation_id = %conversation_id, error = %e, "message delta not published");
        }
    }

    /// A conversation that cannot be read counts as answered: the status
    /// is checked again before the reply is stored.
    async fn conversation_answered_by_the_bot(&self) -> bool {
        let Target::Conversation {
            conversation_id, ..
        } = &self.target
        else {
            return true;
        };
        match self
            .ctx
            .state
            .platform
            .db
            .scoped::<Conversation>(&self.ctx.tenant_id)
            .find_by_id(conversation_id)
            .await
        {
            Ok(Some(c)) => c.status.bot_answers(),
            Ok(None) => false,
            Err(_) => true,
        }
    }
}

/// Telegram's "typing…" for one reply: a hint, so a failure is logged
/// and nothing else.
#[derive(Clone)]
pub(crate) struct TypingHint {
    channel_id: String,
    to: String,
}

/// A slow provider API does not hold the reply back for longer.
const TYPING_TIMEOUT: Duration = Duration::from_secs(3);

impl TypingHint {
    pub(crate) async fn show(self, ctx: &JobContext) {
        let shown = tokio::time::timeout(TYPING_TIMEOUT, async {
            let platform = &ctx.state.platform;
            let channel = ctx
                .state
                .channel(&ctx.tenant_id, &self.channel_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the channel no longer exists".to_owned())?;
            let target =
                ProviderTarget::for_channel(&platform.config.channels, &platform.secrets, &channel)
                    .map_err(|e| e.to_string())?;
            provider_client(ctx)
                .send_typing(&target, &self.to)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        let error = match shown {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(_) => "no answer in time".to_owned(),
        };
        tracing::debug!(tenant_id = %ctx.tenant_id, channel_id = %self.channel_id, error = %error, "typing action not shown");
    }
}

/// `text` in pieces that each end a sentence or a line, so an answer that
/// exists whole (retrieval-only) is still shown as it would be written.
/// The pieces joined are `text`.
pub(crate) fn sentences(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let ends =
            c == '\n' || (matches!(c, '.' | '!' | '?') && next.is_some_and(char::is_whitespace));
        if ends {
            // The whitespace after a sentence goes with it.
            let mut end = i + c.len_utf8();
            while let Some(&(j, n)) = chars.peek() {
                if n == ' ' {
                    end = j + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            pieces.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::sentences;

    #[test]
    fn sentences_rejoin_to_the_text() {
        let text =
            "Here is what I found:\n\nFrom \"Policy\":\nRefunds take 14 days. Call us!  Or not? ok";
        let pieces = sentences(text);
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[0], "Here is what I found:\n");
        assert!(pieces.contains(&"Refunds take 14 days. "));
        assert!(pieces.contains(&"Call us!  "));
        assert_eq!(pieces.last(), Some(&"ok"));
        assert!(sentences("").is_empty());
        assert_eq!(sentences("v1.2 is out"), vec!["v1.2 is out"]);
    }
}
