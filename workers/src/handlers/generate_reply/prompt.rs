//! What the model is told: the history within its budget, the agent's
//! system prompt with numbered passages, and the retrieval-only quotes.

use std::time::Instant;

use serde_json::{Value, json};

use aigentable_platform::model::Agent;
use aigentable_vectors::Hit;

use super::compose::{Answer, elapsed_ms};

/// History sent with a question, in approximate tokens (characters / 4).
pub const HISTORY_TOKEN_BUDGET: usize = 3_000;
/// Characters of a passage quoted by the retrieval-only responder.
const QUOTE_CHARS: usize = 600;
/// Passages quoted by the retrieval-only responder.
const QUOTE_PASSAGES: usize = 2;

/// Tokens as the budget counts them: about four characters each.
pub fn approx_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

pub(super) fn source_json(hit: &Hit) -> Value {
    json!({
        "documentId": hit.payload.document_id,
        "documentName": hit.payload.document_name,
        "page": hit.payload.page,
        "score": hit.score,
    })
}

/// Where a passage comes from, for prompts and quotes.
fn citation(hit: &Hit) -> String {
    let p = &hit.payload;
    match (&p.page, &p.sheet) {
        (Some(page), _) => format!("{}, page {page}", p.document_name),
        (None, Some(sheet)) => format!("{}, sheet {sheet}", p.document_name),
        (None, None) => p.document_name.clone(),
    }
}

/// The agent's personality and instructions, the rules for grounding, and
/// the numbered passages.
pub fn system_prompt_text(
    name: &str,
    personality: &str,
    instructions: &str,
    passages: &[(String, String)],
) -> String {
    let mut prompt = format!("You are {name}, a customer service assistant.");
    if !personality.trim().is_empty() {
        prompt.push_str(&format!("\nPersonality: {}", personality.trim()));
    }
    if !instructions.trim().is_empty() {
        prompt.push_str(&format!("\nInstructions: {}", instructions.trim()));
    }
    prompt.push_str(
        "\n\nAnswer only from the numbered passages of the company's knowledge base below. \
         If they do not contain the answer, say plainly that you don't know and offer to \
         connect the customer with a person from the team; never invent facts, prices or \
         policies. Keep answers short and in the customer's language.",
    );
    if passages.is_empty() {
        prompt.push_str("\n\nPassages: none matched this question.");
    } else {
        prompt.push_str("\n\nPassages:");
        for (i, (source, text)) in passages.iter().enumerate() {
            prompt.push_str(&format!("\n[{}] ({source}) {}", i + 1, text.trim()));
        }
    }
    prompt
}

pub(super) fn system_prompt(agent: &Agent, hits: &[Hit]) -> String {
    let passages: Vec<(String, String)> = hits
        .iter()
        .map(|h| (citation(h), h.payload.text.clone()))
        .collect();
    system_prompt_text(
        &agent.name,
        &agent.personality,
        &agent.instructions,
        &passages,
    )
}

/// No AI provider: quote the best passages with where they come from, or
/// fall back (and hand over) when nothing matched.
pub(super) fn retrieval_only(agent: &Agent, hits: &[Hit], started: Instant) -> Answer {
    if hits.is_empty() {
        return Answer {
            content: agent.fallback_message.clone(),
            sources: Vec::new(),
            usage: None,
            model: None,
            provider_id: None,
            latency_ms: elapsed_ms(started),
            retrieval_only: true,
            fallback: Some("no passage of the knowledge base matched".to_owned()),
            passages: Vec::new(),
            stopped: false,
        };
    }
    let used = &hits[..hits.len().min(QUOTE_PASSAGES)];
    let quotes: Vec<String> = used
        .iter()
        .map(|h| {
            format!(
                "From \"{}\":\n{}",
                citation(h),
                trim_passage(&h.payload.text, QUOTE_CHARS)
            )
        })
        .collect();
    Answer {
        content: format!("Here is what I found:\n\n{}", quotes.join("\n\n")),
        sources: used.iter().map(source_json).collect(),
        usage: None,
        model: None,
        provider_id: None,
        latency_ms: elapsed_ms(started),
        retrieval_only: true,
        fallback: None,
        passages: Vec::new(),
        stopped: false,
    }
}

/// At most `max` characters, cut after a sentence or else a word, with an
/// ellipsis when shortened.
pub fn trim_passage(text: &str, max: usize) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= max {
        return text;
    }
    let cut: String = text.chars().take(max).collect();
    let sentence_end = cut
        .rfind(['.', '!', '?'])
        .filter(|i| *i > max / 2)
        .map(|i| i + 1);
    let end = sentence_end
        .or_else(|| cut.rfind(' ').filter(|i| *i > max / 2))
        .unwrap_or(cut.len());
    let mut out = cut[..end].trim_end().to_owned();
    if sentence_end.is_none() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_are_trimmed_at_sentences_or_words() {
        assert_eq!(trim_passage("short  text", 100), "short text");
        let long = "First sentence here. Second sentence is a bit longer than the first one.";
        assert_eq!(trim_passage(long, 36), "First sentence here.");
        // A sentence end in the first half would lose too much: cut at a word.
        assert_eq!(
            trim_passage(long, 50),
            "First sentence here. Second sentence is a bit…"
        );
        let words = "alpha beta gamma delta epsilon zeta eta theta";
        let t = trim_passage(words, 20);
        assert!(t.ends_with('…') && t.chars().count() <= 21, "{t}");
    }

    #[test]
    fn prompt_numbers_passages_and_says_to_admit_ignorance() {
        let p = system_prompt_text(
            "Ava",
            "friendly",
            "be brief",
            &[("faq.txt".into(), "Refunds take 5 days.".into())],
        );
        assert!(p.contains("[1] (faq.txt) Refunds take 5 days."));
        assert!(p.contains("don't know"));
        assert!(p.contains("Personality: friendly"));
    }
}
