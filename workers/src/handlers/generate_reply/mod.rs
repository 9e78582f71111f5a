//! `generate_reply`: answers a customer message, or an agent test, from
//! the agent's knowledge.
//!
//! Replies in one conversation are generated one at a time (a Redis lock
//! per conversation) and only for the latest customer message: when the
//! customer sent several messages in a row, the last one is answered with
//! the others in the history, so replies go out in order and never twice
//! (the reply's dedup key `reply:{inboundId}` is unique as well).
//!
//! With an AI provider (the agent's, else the tenant's default) the answer
//! comes from a chat completion grounded on the top passages; without one,
//! the retrieval-only responder quotes the best passages. When neither can
//! answer, the agent's fallback message goes out and the conversation is
//! handed to a human (`WAITING`).
//!
//! - [`conversation`]: a customer's message, stored and delivered;
//! - [`test_answer`]: an agent test, answered to the waiting api;
//! - [`compose`]: retrieval, then the provider or the retrieval-only answer;
//! - [`deltas`]: the answer's text while it is written (`message-delta`);
//! - [`prompt`]: history budget, system prompt, quotes;
//! - [`provider`]: provider calls with retries, token usage.

pub(crate) mod compose;
mod conversation;
pub(crate) mod deltas;
mod prompt;
mod provider;
mod test_answer;

pub(crate) use conversation::{Asked, answer as answer_in_conversation, enqueue_delivery};

use std::sync::Arc;

use serde_json::Value;

use aigentable_jobs::types::GenerateReply;
use aigentable_jobs::types::generate_reply::ReplyMode;
use aigentable_platform::domain::TenantStatus;
use aigentable_platform::model::Tenant;

use crate::runner::{Handle, JobContext, JobError};

impl Handle for GenerateReply {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        match &self.mode {
            ReplyMode::Conversation {
                conversation_id,
                message_id,
            } => {
                let tenant = match Tenancy::of(&ctx).await? {
                    Tenancy::Active(tenant) => tenant,
                    Tenancy::Gone => return Ok(Tenancy::gone()),
                    Tenancy::Suspended => {
                        tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, conversation_id = %conversation_id, "reply held: the tenant is suspended");
                        return Ok(aigentable_jobs::held::held_result());
                    }
                };
                let asked = conversation::Asked::new(
                    &self.agent_id,
                    conversation_id,
                    message_id.as_deref(),
                    &tenant,
                );
                conversation::answer(&asked, &ctx).await
            }
            ReplyMode::Test {
                test_input,
                history,
                reply_to,
                stream,
            } => {
                let streamed_to = reply_to.as_ref().filter(|_| *stream);
                test_answer::answer(
                    &self.agent_id,
                    test_input,
                    history,
                    reply_to.as_ref(),
                    streamed_to,
                    &ctx,
                )
                .await
            }
        }
    }
}

/// Whether a tenant's bot answers now; read once per reply, for the
/// suspension and the plan's caps.
pub(crate) enum Tenancy {
    Active(Arc<Tenant>),
    Suspended,
    Gone,
}

impl Tenancy {
    pub(crate) async fn of(ctx: &JobContext) -> Result<Self, JobError> {
        let platform = &ctx.state.platform;
        let tenant = platform
            .live
            .tenant(&platform.db, &ctx.tenant_id)
            .await
            .map_err(JobError::transient)?;
        Ok(match tenant {
            None => Tenancy::Gone,
            Some(t) if t.status == TenantStatus::Suspended => Tenancy::Suspended,
            Some(t) => Tenancy::Active(t),
        })
    }

    pub(crate) fn gone() -> Value {
        serde_json::json!({ "skipped": "the tenant no longer exists" })
    }
}
