//! An agent test: nothing is stored; the answer is the job's result and,
//! when the api waits for it, is sent to its [`ReplyTo`].

use serde_json::Value;

use aigentable_jobs::Job;
use aigentable_jobs::answer::ReplyTo;
use aigentable_jobs::types::GenerateReply;
use aigentable_jobs::types::generate_reply::{TestAnswer, TestTurn};
use aigentable_platform::llm::{ChatMessage, ChatRole};
use aigentable_platform::model::Agent;

use super::compose::compose;
use super::deltas::{Deltas, Target};
use super::prompt::{HISTORY_TOKEN_BUDGET, approx_tokens};
use crate::runner::{JobContext, JobError};

pub(super) async fn answer(
    agent_id: &str,
    input: &str,
    history: &[TestTurn],
    reply_to: Option<&ReplyTo>,
    streamed_to: Option<&ReplyTo>,
    ctx: &JobContext,
) -> Result<Value, JobError> {
    let outcome = test_answer(agent_id, input, history, streamed_to, ctx).await;
    // A failure that the job will retry is not final: the api keeps waiting.
    let will_retry =
        matches!(outcome, Err(JobError::Transient(_))) && ctx.attempt < GenerateReply::MAX_ATTEMPTS;
    if let Some(reply_to) = reply_to.filter(|_| !will_retry) {
        let answered = match &outcome {
            Ok(a) => Ok(a.clone()),
            Err(e) => Err(e.to_string()),
        };
        reply_to
            .send(&ctx.state.platform.kv, &answered)
            .await
            .map_err(JobError::transient)?;
    }
    let answer = outcome?;
    serde_json::to_value(answer).map_err(JobError::permanent)
}

async fn test_answer(
    agent_id: &str,
    input: &str,
    history: &[TestTurn],
    streamed_to: Option<&ReplyTo>,
    ctx: &JobContext,
) -> Result<TestAnswer, JobError> {
    let input = Some(input.trim())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| JobError::permanent("a test needs a message"))?;
    let agent = ctx
        .state
        .platform
        .db
        .scoped::<Agent>(&ctx.tenant_id)
        .find_by_id(agent_id)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| JobError::permanent("the agent no longer exists"))?;
    let history = test_history(history, input);
    let mut deltas = streamed_to.map(|r| Deltas::new(ctx, Target::Test(r.clone())));
    let answer = compose(ctx, &agent, history, input, "test", deltas.as_mut()).await?;
    tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, agent_id = %agent.id, retrieval_only = answer.retrieval_only, fallback = answer.fallback.is_some(), "agent test answered");
    Ok(answer.test_answer())
}

/// The test's earlier turns within the history budget, newest kept first.
fn test_history(turns: &[TestTurn], question: &str) -> Vec<ChatMessage> {
    let mut budget = HISTORY_TOKEN_BUDGET.saturating_sub(approx_tokens(question));
    let mut kept = Vec::new();
    for turn in turns.iter().rev() {
        let cost = approx_tokens(&turn.content);
        if cost > budget {
            break;
        }
        budget -= cost;
        kept.push(match turn.role {
            ChatRole::Assistant => ChatMessage::assistant(turn.content.clone()),
            // A test's history holds no system turns: the api accepts only
            // the customer's and the agent's.
            ChatRole::User | ChatRole::System => ChatMessage::user(turn.content.clone()),
        });
    }
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use aigentable_jobs::types::generate_reply::TestTurn;
    use aigentable_platform::llm::ChatRole;

    use super::{HISTORY_TOKEN_BUDGET, test_history};

    #[test]
    fn history_keeps_the_newest_turns_within_the_budget() {
        let big = "x".repeat(HISTORY_TOKEN_BUDGET * 4 / 2);
        let turns = vec![
            TestTurn {
                role: ChatRole::User,
                content: big.clone(),
            },
            TestTurn {
                role: ChatRole::Assistant,
                content: big.clone(),
            },
            TestTurn {
                role: ChatRole::User,
                content: "latest".into(),
            },
        ];
        let kept = test_history(&turns, "question");
        assert_eq!(kept.len(), 2, "the oldest turn is over the budget");
        assert_eq!(kept[1].content, "latest");
        assert_eq!(kept[0].role, ChatRole::Assistant);
    }
}
