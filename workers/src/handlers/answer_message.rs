//! `answer_message`: the reply to a customer's message, queued by the
//! inbound job with no record (see [`AnswerMessage`]). It answers as
//! `generate_reply` does; a suspended tenant's reply becomes a recorded
//! `generate_reply`, which holds it until reactivation.

use serde_json::{Value, json};

use aigentable_jobs::types::{AnswerMessage, GenerateReply};
use aigentable_platform::analytics::facts;

use crate::handlers::generate_reply::{Asked, Tenancy, answer_in_conversation};
use crate::runner::{Handle, JobContext, JobError};

impl Handle for AnswerMessage {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let tenant = match Tenancy::of(&ctx).await? {
            Tenancy::Active(tenant) => tenant,
            Tenancy::Gone => return Ok(Tenancy::gone()),
            Tenancy::Suspended => {
                if let Some(fact) = &self.fact {
                    facts::record_quietly(&ctx.state.platform.db, fact).await;
                }
                let held = ctx
                    .enqueue_follow_up(GenerateReply::to_message(
                        &self.agent_id,
                        &self.conversation_id,
                        &self.message_id,
                    ))
                    .await?;
                tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, conversation_id = %self.conversation_id, held_by = %held.id, "reply held: the tenant is suspended");
                return Ok(json!({ "heldBy": held.id }));
            }
        };
        let mut asked = Asked::new(
            &self.agent_id,
            &self.conversation_id,
            Some(&self.message_id),
            &tenant,
        );
        asked.known = self.conversation.as_deref();
        asked.carried = self.fact.as_deref();
        let answered = answer_in_conversation(&asked, &ctx).await;
        // Whatever came of the reply, the customer's message counts.
        asked.record_carried(&ctx).await;
        answered
    }
}
