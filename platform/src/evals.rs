//! Scoring of evaluation runs: how well an agent's answer to a case found
//! the expected documents, said the expected facts and stayed with what its
//! passages say. Pure functions, so that a score can be checked by hand.

use std::collections::HashSet;

use crate::model::eval::{CaseResult, EvalCase, EvalTotals};

/// A retrieved passage, in rank order.
#[derive(Debug, Clone)]
pub struct Passage {
    pub document_id: String,
    pub document_name: String,
    pub text: String,
}

/// What the agent answered to one case.
#[derive(Debug, Clone)]
pub struct Answered {
    pub answer: String,
    pub passages: Vec<Passage>,
    pub fallback: bool,
    pub latency_ms: u64,
    pub tokens: Option<u32>,
}

/// A sentence counts as backed by a passage when at least this share of
/// its content words occur in that one passage.
pub const GROUNDED_OVERLAP: f64 = 0.6;

/// Words that carry no claim: a sentence made only of them is not scored.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "did", "do", "does", "for", "found", "from", "had", "has", "have",
    "here", "how", "i", "if", "in", "into", "is", "it", "its", "may", "me", "my", "no", "not",
    "of", "on", "or", "our", "so", "some", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "to", "up", "us", "was", "we", "were", "what", "when", "where",
    "which", "who", "will", "with", "would", "you", "your",
];

/// Lowercase words of letters and digits, without stopwords.
fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// Lowercase words, spaces collapsed: how facts are looked for.
fn normalized(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Distinct documents of `passages`, best first.
pub fn ranked_documents(passages: &[Passage]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in passages {
        if !out.contains(&p.document_id) {
            out.push(p.document_id.clone());
        }
    }
    out
}

/// Whether an expected document was retrieved, and 1 / the rank of the
/// first one (0 when none was); `None` without expected documents.
pub fn retrieval(expected: &[String], ranked: &[String]) -> (Option<bool>, Option<f64>) {
    if expected.is_empty() {
        return (None, None);
    }
    let rank = ranked.iter().position(|d| expected.contains(d));
    let rr = rank.map_or(0.0, |r| 1.0 / (r as f64 + 1.0));
    (Some(rank.is_some()), Some(rr))
}

/// The facts the answer contains (words in order, case and punctuation
/// ignored) and those it misses.
pub fn facts(expected: &[String], answer: &str) -> (Vec<String>, Vec<String>) {
    let said = format!(" {} ", normalized(answer));
    expected
        .iter()
        .cloned()
        .partition(|f| said.contains(&format!(" {} ", normalized(f))))
}

/// Share of the expected answer's distinct content words in the answer.
pub fn answer_recall(expected: &str, answer: &str) -> Option<f64> {
    let wanted: HashSet<String> = content_words(expected).into_iter().collect();
    if wanted.is_empty() {
        return None;
    }
    let said: HashSet<String> = content_words(answer).into_iter().collect();
    Some(wanted.intersection(&said).count() as f64 / wanted.len() as f64)
}

/// Share of the answer's sentences with content words that are backed by
/// one passage (its text or its document's name, which quotes cite);
/// `None` when no sentence makes a claim.
pub fn grounding(answer: &str, passages: &[Passage]) -> Option<f64> {
    let vocabularies: Vec<HashSet<String>> = passages
        .iter()
        .map(|p| {
            content_words(&p.text)
                .into_iter()
                .chain(content_words(&p.document_name))
                .collect()
        })
        .collect();
    let mut claims = 0usize;
    let mut backed = 0usize;
    for sentence in sentences(answer) {
        let words = content_words(sentence);
        if words.is_empty() {
            continue;
        }
        claims += 1;
        let is_backed = vocabularies.iter().any(|v| {
            let found = words.iter().filter(|w| v.contains(*w)).count();
            found as f64 >= GROUNDED_OVERLAP * words.len() as f64
        });
        if is_backed {
            backed += 1;
        }
    }
    (claims > 0).then(|| backed as f64 / claims as f64)
}

/// Rounded to four decimals, so that stored and compared scores are stable.
pub fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Scores one case's answer.
pub fn score(case: &EvalCase, answered: &Answered) -> CaseResult {
    let ranked = ranked_documents(&answered.passages);
    let (hit, rr) = retrieval(&case.expected_document_ids, &ranked);
    let (found, missing) = facts(&case.expected_facts, &answered.answer);
    let fact_score = (!case.expected_facts.is_empty())
        .then(|| round(found.len() as f64 / case.expected_facts.len() as f64));
    // A fallback says nothing of the knowledge base: it claims nothing.
    let grounded = if answered.fallback {
        None
    } else {
        grounding(&answered.answer, &answered.passages).map(round)
    };
    CaseResult {
        case_id: case.id.clone(),
        question: case.question.clone(),
        answer: answered.answer.clone(),
        retrieved_document_ids: ranked,
        retrieval_hit: hit,
        reciprocal_rank: rr.map(round),
        facts_found: found,
        facts_missing: missing,
        fact_score,
        answer_recall: case
            .expected_answer
            .as_deref()
            .and_then(|e| answer_recall(e, &answered.answer))
            .map(round),
        grounding: grounded,
        fallback: answered.fallback,
        latency_ms: answered.latency_ms,
        tokens: answered.tokens,
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| round(sum / n as f64))
}

/// Totals of a run: each score averaged over the cases that have it.
pub fn totals(results: &[CaseResult]) -> EvalTotals {
    let n = results.len() as u64;
    EvalTotals {
        cases: n,
        retrieval_hit_rate: mean(
            results
                .iter()
                .filter_map(|r| r.retrieval_hit.map(|h| if h { 1.0 } else { 0.0 })),
        ),
        mrr: mean(results.iter().filter_map(|r| r.reciprocal_rank)),
        fact_score: mean(results.iter().filter_map(|r| r.fact_score)),
        answer_recall: mean(results.iter().filter_map(|r| r.answer_recall)),
        grounding: mean(results.iter().filter_map(|r| r.grounding)),
        fallbacks: results.iter().filter(|r| r.fallback).count() as u64,
        avg_latency_ms: results
            .iter()
            .map(|r| r.latency_ms)
            .sum::<u64>()
            .checked_div(n)
            .unwrap_or(0),
        total_tokens: results.iter().filter_map(|r| r.tokens).map(u64::from).sum(),
    }
}

/// One number per case for comparing runs: the mean of its scores (a hit
/// counts as its reciprocal rank); `None` when it has none.
pub fn case_score(r: &CaseResult) -> Option<f64> {
    mean(
        [
            r.reciprocal_rank,
            r.fact_score,
            r.answer_recall,
            r.grounding,
        ]
        .into_iter()
        .flatten(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(doc: &str, name: &str, text: &str) -> Passage {
        Passage {
            document_id: doc.to_owned(),
            document_name: name.to_owned(),
            text: text.to_owned(),
        }
    }

    fn case(facts: &[&str], docs: &[&str], expected: Option<&str>) -> EvalCase {
        EvalCase {
            id: "c1".to_owned(),
            question: "q".to_owned(),
            expected_answer: expected.map(str::to_owned),
            expected_facts: facts.iter().map(|s| (*s).to_owned()).collect(),
            expected_document_ids: docs.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn reciprocal_rank_is_one_over_the_first_expected_documents_rank() {
        let ranked: Vec<String> = ["d2", "d1", "d3"].map(str::to_owned).to_vec();
        assert_eq!(
            retrieval(&["d1".to_owned()], &ranked),
            (Some(true), Some(0.5))
        );
        assert_eq!(
            retrieval(&["d3".to_owned(), "d1".to_owned()], &ranked),
            (Some(true), Some(0.5))
        );
        assert_eq!(
            retrieval(&["d9".to_owned()], &ranked),
            (Some(false), Some(0.0))
        );
        assert_eq!(retrieval(&[], &ranked), (None, None));
    }

    #[test]
    fn facts_match_words_in_order_ignoring_case_and_punctuation() {
        let (found, missing) = facts(
            &[
                "thirty days".to_owned(),
                "free".to_owned(),
                "two days".to_owned(),
            ],
            "Returns are FREE, within thirty days!",
        );
        assert_eq!(found, vec!["thirty days", "free"]);
        assert_eq!(missing, vec!["two days"]);
        // A fact is whole words: "free" is not in "freedom".
        let (found, _) = facts(&["free".to_owned()], "freedom");
        assert!(found.is_empty());
    }

    #[test]
    fn grounding_counts_sentences_backed_by_one_passage() {
        let passages = [
            passage("d1", "returns.txt", "Returns are free for thirty days."),
            passage("d2", "shipping.txt", "Orders ship within two days."),
        ];
        // Backed, backed, invented: 2 of 3.
        let answer = "Returns are free for thirty days. Orders ship within two days. \
                      We also give a lifetime warranty on everything.";
        assert_eq!(grounding(answer, &passages).map(round), Some(0.6667));
        // A quote, its citation line and a heading of stopwords only.
        let quoted =
            "Here is what I found:\n\nFrom \"returns.txt\":\nReturns are free for thirty days.";
        assert_eq!(grounding(quoted, &passages), Some(1.0));
        assert_eq!(grounding("Here is what I found", &passages), None);
    }

    #[test]
    fn a_case_and_its_totals_score_as_computed_by_hand() {
        let passages = vec![
            passage("d2", "shipping.txt", "Orders ship within two days."),
            passage("d1", "returns.txt", "Returns are free for thirty days."),
        ];
        let answered = Answered {
            answer: "Returns are free for thirty days.".to_owned(),
            passages,
            fallback: false,
            latency_ms: 40,
            tokens: Some(12),
        };
        let right = score(
            &case(
                &["thirty days", "a refund"],
                &["d1"],
                Some("Free returns for thirty days"),
            ),
            &answered,
        );
        assert_eq!(right.retrieved_document_ids, vec!["d2", "d1"]);
        assert_eq!(right.retrieval_hit, Some(true));
        assert_eq!(right.reciprocal_rank, Some(0.5));
        assert_eq!(right.fact_score, Some(0.5));
        assert_eq!(right.facts_missing, vec!["a refund"]);
        // free, returns, thirty, days: all said.
        assert_eq!(right.answer_recall, Some(1.0));
        assert_eq!(right.grounding, Some(1.0));
        let wrong = score(&case(&["ninety days"], &["d9"], None), &answered);
        assert_eq!(wrong.retrieval_hit, Some(false));
        assert_eq!(wrong.reciprocal_rank, Some(0.0));
        assert_eq!(wrong.fact_score, Some(0.0));
        assert_eq!(wrong.answer_recall, None);
        let t = totals(&[right.clone(), wrong.clone()]);
        assert_eq!(t.cases, 2);
        assert_eq!(t.retrieval_hit_rate, Some(0.5));
        assert_eq!(t.mrr, Some(0.25));
        assert_eq!(t.fact_score, Some(0.25));
        assert_eq!(t.answer_recall, Some(1.0));
        assert_eq!(t.avg_latency_ms, 40);
        assert_eq!(t.total_tokens, 24);
        assert_eq!(case_score(&right), Some(0.75));
        assert_eq!(case_score(&wrong), Some(0.3333));
    }
}
