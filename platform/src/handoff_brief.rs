//! Handoff briefs: what the person taking a conversation over needs first
//! (what the customer wants, what the bot already said, how the customer
//! feels, the documents involved), written by the `summarize_handoff` job
//! after every handoff.
//!
//! With an AI provider the summary, intent and sentiment come from one chat
//! completion ([`llm_messages`], [`parse_llm`]); without one, or when its
//! answer is unusable, the brief is extractive: the customer's own words and
//! the bot's last answer, and the sentiment from VADER (a lexicon and rule
//! model that needs no provider). The sources always come from the bot's
//! stored replies, so they name only documents that were really used.

use bson::doc;
use chrono::Utc;

use crate::db::{Db, DbError, DbResult};
use crate::ids::TenantId;
use crate::llm::ChatMessage;
use crate::model::conversation::{
    BriefMethod, BriefSource, Handoff, HandoffBrief, Message, MessageDirection, SenderType,
    Sentiment,
};
use crate::model::{Conversation, MessageStatus};

/// The system prompt of a brief's chat completion.
pub const INSTRUCTIONS: &str = "You brief a customer-service employee who is taking a \
conversation over from a chatbot. Answer with one JSON object and nothing else: {\"summary\": \
two or three sentences on what happened and what the bot already said, \"intent\": what the \
customer wants, in one sentence, \"sentiment\": \"positive\", \"neutral\" or \"negative\"}. \
Use only what the transcript says.";

/// Messages a brief is written from (the newest ones).
pub const RECENT_MESSAGES: u64 = 20;
/// Most sources listed.
const MAX_SOURCES: usize = 5;
/// Longest intent and quoted message, in characters.
const MAX_INTENT: usize = 200;
const MAX_QUOTE: usize = 280;
/// VADER's own thresholds for a positive or negative compound score.
const VADER_THRESHOLD: f64 = 0.05;

/// Phrases with which customers ask for a person. Matched on whole words,
/// case-insensitive.
const ASKS_FOR_A_PERSON: &[&str] = &[
    "talk to a human",
    "speak to a human",
    "speak with a human",
    "talk to a person",
    "speak to a person",
    "speak with a person",
    "real person",
    "human agent",
    "live agent",
    "talk to an agent",
    "speak to an agent",
    "speak with an agent",
    "talk to someone",
    "speak to someone",
    "speak with someone",
    "customer service representative",
    "a representative",
    "an operator",
    "to a manager",
    "with a manager",
    "connect me to",
    "transfer me to",
];

/// Whether a customer's message asks to be answered by a person.
pub fn asks_for_a_person(text: &str) -> bool {
    let normalized: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let padded = format!(
        " {} ",
        normalized.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    ASKS_FOR_A_PERSON
        .iter()
        .any(|phrase| padded.contains(&format!(" {phrase} ")))
}

/// The conversation's recent messages, oldest first, with what the brief
/// reads out of them.
pub struct Transcript {
    messages: Vec<Message>,
}

impl Transcript {
    /// `newest_first` as [`crate::conversations::recent_messages`] answers.
    pub fn new(mut newest_first: Vec<Message>) -> Self {
        newest_first.reverse();
        Self {
            messages: newest_first,
        }
    }

    fn customer(&self) -> impl DoubleEndedIterator<Item = &Message> {
        self.messages
            .iter()
            .filter(|m| m.direction == MessageDirection::Inbound && !m.content.trim().is_empty())
    }

    fn bot(&self) -> impl DoubleEndedIterator<Item = &Message> {
        self.messages.iter().filter(|m| {
            m.direction == MessageDirection::Outbound
                && m.sender_type == SenderType::Agent
                && m.status != MessageStatus::Dropped
        })
    }

    /// What the customer wants: their latest message that asks something
    /// (a question, or not a mere thanks or greeting) other than for a
    /// person, else their latest.
    pub fn intent(&self) -> String {
        let asks = self.customer().rev().find(|m| {
            let t = m.content.trim();
            (t.contains('?') || t.split_whitespace().count() >= 4) && !asks_for_a_person(t)
        });
        asks.or_else(|| self.customer().next_back())
            .map(|m| first_sentence(&m.content, MAX_INTENT))
            .unwrap_or_else(|| "Not stated yet.".to_owned())
    }

    /// The customer's mood over their last three messages, the latest
    /// counting most.
    pub fn sentiment(&self) -> Sentiment {
        let analyzer = vader_sentimental::SentimentIntensityAnalyzer::new();
        let recent: Vec<&Message> = self.customer().rev().take(3).collect();
        if recent.is_empty() {
            return Sentiment::Neutral;
        }
        let (mut total, mut weights) = (0.0, 0.0);
        for (i, m) in recent.iter().enumerate() {
            let weight = 1.0 / (i as f64 + 1.0);
            total += analyzer.polarity_scores(&m.content).compound * weight;
            weights += weight;
        }
        classify(total / weights)
    }

    /// The documents the bot's replies cited, first cited first.
    pub fn sources(&self) -> Vec<BriefSource> {
        let mut out: Vec<BriefSource> = Vec::new();
        for m in self.bot() {
            let Ok(sources) = m.metadata.get_array("sources") else {
                continue;
            };
            for s in sources.iter().filter_map(bson::Bson::as_document) {
                let (Ok(id), Ok(name)) = (s.get_str("documentId"), s.get_str("documentName"))
                else {
                    continue;
                };
                if out.len() < MAX_SOURCES && !out.iter().any(|o| o.document_id == id) {
                    out.push(BriefSource {
                        document_id: id.to_owned(),
                        document_name: name.to_owned(),
                    });
                }
            }
        }
        out
    }

    /// The brief a provider wrote, with the sources the bot cited.
    pub fn written(&self, by: LlmBrief) -> HandoffBrief {
        HandoffBrief {
            summary: by.summary,
            intent: by.intent,
            sentiment: by.sentiment,
            sources: self.sources(),
            method: BriefMethod::Llm,
            created_at: Utc::now(),
        }
    }

    /// A brief from the conversation's own words.
    pub fn extractive(&self, handoff: &Handoff) -> HandoffBrief {
        let customer: Vec<&Message> = self.customer().collect();
        let mut summary = match customer.last() {
            Some(last) => format!(
                "The customer wrote {} message{}; the last: \"{}\".",
                customer.len(),
                if customer.len() == 1 { "" } else { "s" },
                clip(last.content.trim(), MAX_QUOTE)
            ),
            None => "The customer has not written yet.".to_owned(),
        };
        match self.bot().next_back() {
            Some(reply) => summary.push_str(&format!(
                " The bot last answered: \"{}\".",
                clip(reply.content.trim(), MAX_QUOTE)
            )),
            None => summary.push_str(" The bot had not answered."),
        }
        summary.push_str(&format!(" {}", handoff.note));
        HandoffBrief {
            summary,
            intent: self.intent(),
            sentiment: self.sentiment(),
            sources: self.sources(),
            method: BriefMethod::Extractive,
            created_at: Utc::now(),
        }
    }

    /// The chat completion that writes the brief: the transcript and the
    /// handoff's reason, asking for JSON only.
    pub fn llm_messages(&self, handoff: &Handoff) -> Vec<ChatMessage> {
        let mut transcript = String::new();
        for m in &self.messages {
            let who = match (m.direction, m.sender_type) {
                (MessageDirection::Inbound, _) => "Customer",
                (_, SenderType::Agent) => "Bot",
                (_, SenderType::Human) => "Staff",
                _ => "System",
            };
            transcript.push_str(&format!("{who}: {}\n", clip(m.content.trim(), 1_000)));
        }
        vec![
            ChatMessage::system(INSTRUCTIONS),
            ChatMessage::user(format!(
                "Why it was handed over: {}\n\nTranscript, oldest first:\n{transcript}",
                handoff.note
            )),
        ]
    }
}

/// A compound VADER score as a sentiment.
pub fn classify(compound: f64) -> Sentiment {
    if compound >= VADER_THRESHOLD {
        Sentiment::Positive
    } else if compound <= -VADER_THRESHOLD {
        Sentiment::Negative
    } else {
        Sentiment::Neutral
    }
}

/// What a provider's brief gave: summary, intent and sentiment.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmBrief {
    pub summary: String,
    pub intent: String,
    pub sentiment: Sentiment,
}

/// Reads the provider's answer: the JSON object in it (code fences and text
/// around it tolerated). `None` when a field is missing or empty.
pub fn parse_llm(text: &str) -> Option<LlmBrief> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let value: serde_json::Value = serde_json::from_str(text.get(start..=end)?).ok()?;
    let field = |name: &str| {
        value[name]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let sentiment = match field("sentiment")?.to_lowercase().as_str() {
        "positive" => Sentiment::Positive,
        "negative" => Sentiment::Negative,
        _ => Sentiment::Neutral,
    };
    Some(LlmBrief {
        summary: clip(&field("summary")?, 2_000),
        intent: clip(&field("intent")?, MAX_INTENT),
        sentiment,
    })
}

/// Stores `brief` on the conversation's handoff, unless that handoff has
/// been replaced or cleared meanwhile (then `None`).
pub async fn store(
    db: &Db,
    tenant: &TenantId,
    conversation_id: &str,
    handoff_at: chrono::DateTime<Utc>,
    brief: &HandoffBrief,
) -> DbResult<Option<Conversation>> {
    let brief = bson::to_bson(brief).map_err(|e| DbError::Codec(e.to_string()))?;
    db.scoped::<Conversation>(tenant)
        .update_one(
            doc! {
                "_id": conversation_id,
                "handoff.createdAt": bson::DateTime::from_chrono(handoff_at),
            },
            doc! { "$set": { "handoff.brief": brief } },
        )
        .await
}

fn first_sentence(text: &str, max: usize) -> String {
    let t = text.trim();
    let end = t
        .char_indices()
        .find(|(i, c)| matches!(c, '?' | '!' | '.' | '\n') && *i > 10)
        .map_or(t.len(), |(i, c)| i + c.len_utf8());
    clip(t[..end].trim(), max)
}

/// At most `max` characters, cut at a character boundary with an ellipsis.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conversation::HandoffReason;

    fn message(direction: MessageDirection, sender: SenderType, content: &str) -> Message {
        Message {
            id: crate::ids::new_id(),
            tenant_id: TenantId::from_trusted("t".to_owned()),
            conversation_id: "c".to_owned(),
            channel_id: "ch".to_owned(),
            direction,
            sender_type: sender,
            sender_id: None,
            content: content.to_owned(),
            status: MessageStatus::Sent,
            external_message_id: None,
            error: None,
            reply_to: None,
            dedup_key: None,
            metadata: bson::Document::new(),
            billed_tokens: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn customers_asking_for_a_person_are_recognized() {
        for yes in [
            "I want to talk to a human!",
            "Can I speak with someone please",
            "Is there a REAL person there?",
            "connect me to support",
        ] {
            assert!(asks_for_a_person(yes), "{yes}");
        }
        for no in [
            "Where is my order?",
            "humanity is great",
            "my agent number is 5",
        ] {
            assert!(!asks_for_a_person(no), "{no}");
        }
    }

    #[test]
    fn an_extractive_brief_reads_the_customers_words_the_bots_answer_and_sources() {
        let mut reply = message(
            MessageDirection::Outbound,
            SenderType::Agent,
            "Returns are free for 30 days.",
        );
        reply.metadata = bson::doc! { "sources": [
            { "documentId": "d1", "documentName": "returns.pdf", "score": 0.9 },
            { "documentId": "d1", "documentName": "returns.pdf", "score": 0.8 },
            { "documentId": "d2", "documentName": "shipping.pdf", "score": 0.7 },
        ] };
        // Newest first, as the repository answers.
        let transcript = Transcript::new(vec![
            message(
                MessageDirection::Inbound,
                SenderType::Customer,
                "This is terrible, the parcel arrived broken and nobody helps me!",
            ),
            reply,
            message(
                MessageDirection::Inbound,
                SenderType::Customer,
                "Can I return a broken blender?",
            ),
        ]);
        let handoff = Handoff::new(
            HandoffReason::CustomerRequest,
            "The customer asked for a person.".to_owned(),
            None,
        );
        let brief = transcript.extractive(&handoff);
        assert_eq!(brief.method, BriefMethod::Extractive);
        assert_eq!(
            brief.intent,
            "This is terrible, the parcel arrived broken and nobody helps me!"
        );
        assert_eq!(brief.sentiment, Sentiment::Negative);
        assert_eq!(
            brief
                .sources
                .iter()
                .map(|s| s.document_name.as_str())
                .collect::<Vec<_>>(),
            vec!["returns.pdf", "shipping.pdf"],
            "each document once, in citing order"
        );
        assert!(brief.summary.contains("2 messages"), "{}", brief.summary);
        assert!(
            brief.summary.contains("Returns are free for 30 days."),
            "{}",
            brief.summary
        );
        assert!(brief.summary.ends_with("The customer asked for a person."));
    }

    #[test]
    fn sentiment_follows_the_latest_messages() {
        let happy = Transcript::new(vec![message(
            MessageDirection::Inbound,
            SenderType::Customer,
            "Thanks a lot, that is great!",
        )]);
        assert_eq!(happy.sentiment(), Sentiment::Positive);
        let plain = Transcript::new(vec![message(
            MessageDirection::Inbound,
            SenderType::Customer,
            "What time do you open on Monday?",
        )]);
        assert_eq!(plain.sentiment(), Sentiment::Neutral);
        assert_eq!(Transcript::new(Vec::new()).sentiment(), Sentiment::Neutral);
    }

    #[test]
    fn a_providers_brief_is_read_from_the_json_in_its_answer() {
        let parsed = parse_llm(
            "```json\n{\"summary\": \"Wants a refund.\", \"intent\": \"Refund a blender\", \"sentiment\": \"NEGATIVE\"}\n```",
        );
        assert_eq!(
            parsed,
            Some(LlmBrief {
                summary: "Wants a refund.".to_owned(),
                intent: "Refund a blender".to_owned(),
                sentiment: Sentiment::Negative,
            })
        );
        assert_eq!(parse_llm("no json here"), None);
        assert_eq!(
            parse_llm("{\"summary\": \"\", \"intent\": \"x\", \"sentiment\": \"neutral\"}"),
            None
        );
    }
}
