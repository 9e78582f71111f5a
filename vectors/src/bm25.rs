//! Sparse BM25 vectors computed locally: no model, no API key.
//!
//! A term's dimension is the FNV-1a 32-bit hash of its UTF-8 bytes, stable
//! across processes and releases (never `std`'s randomly seeded hasher), so
//! vectors written by one release are searchable by the next. Document-side
//! weights are BM25's saturated term frequency with length normalisation;
//! query-side weights are 1 per distinct term. The inverse document
//! frequency is applied by the store at query time (Qdrant's `Idf` modifier
//! on the sparse vector), so the product of the two is the BM25 score.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// BM25 term-frequency saturation.
pub const K1: f32 = 1.2;
/// BM25 length normalisation.
pub const B: f32 = 0.75;
/// The average chunk length in tokens that document lengths are normalised
/// against. A constant (not the corpus average) so that a chunk's vector
/// never changes when other chunks are added.
pub const AVG_LEN: f32 = 256.0;
/// Tokens shorter than this many characters are dropped.
const MIN_TOKEN_CHARS: usize = 2;
/// Tokens longer than this are dropped (hashes, base64, garbage).
const MAX_TOKEN_CHARS: usize = 64;

/// A small English stopword list: words too common to tell chunks apart.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does",
    "doing", "for", "from", "had", "has", "have", "having", "he", "her", "here", "hers", "him",
    "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more",
    "most", "my", "no", "nor", "not", "of", "off", "on", "once", "only", "or", "other", "our",
    "ours", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that",
    "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those", "through",
    "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours",
];

/// A sparse vector: parallel lists of dimensions (sorted, distinct) and
/// weights.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseVector {
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }
}

/// Lower-cased tokens of `text`: split on anything that is not a Unicode
/// letter or digit, without stopwords and tokens of fewer than two
/// characters.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .filter(|t| {
            let chars = t.chars().count();
            (MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&chars)
                && STOPWORDS.binary_search(&t.as_str()).is_err()
        })
        .collect()
}

/// The stable 32-bit dimension of a token (FNV-1a).
pub fn term_index(token: &str) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    token.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// Term frequencies by dimension. Two tokens hashing to the same dimension
/// (rare) simply count together.
fn term_frequencies(tokens: &[String]) -> BTreeMap<u32, u32> {
    let mut tf = BTreeMap::new();
    for token in tokens {
        *tf.entry(term_index(token)).or_insert(0) += 1;
    }
    tf
}

/// The document-side BM25 vector of a chunk of text.
pub fn encode_document(text: &str) -> SparseVector {
    let tokens = tokenize(text);
    let len = tokens.len() as f32;
    let norm = K1 * (1.0 - B + B * len / AVG_LEN);
    let (indices, values) = term_frequencies(&tokens)
        .into_iter()
        .map(|(index, tf)| {
            let tf = tf as f32;
            (index, tf * (K1 + 1.0) / (tf + norm))
        })
        .unzip();
    SparseVector { indices, values }
}

/// The query-side vector of a search text: weight 1 per distinct term.
pub fn encode_query(text: &str) -> SparseVector {
    let (indices, values) = term_frequencies(&tokenize(text))
        .into_keys()
        .map(|index| (index, 1.0))
        .unzip();
    SparseVector { indices, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &SparseVector, b: &SparseVector) -> f32 {
        a.indices
            .iter()
            .zip(&a.values)
            .filter_map(|(i, v)| {
                b.indices
                    .iter()
                    .position(|j| j == i)
                    .map(|p| v * b.values[p])
            })
            .sum()
    }

    #[test]
    fn stopwords_are_sorted_for_binary_search() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tokenizes_unicode_lowercase_without_stopwords() {
        assert_eq!(
            tokenize("The Refund-policy: 30 días, x ÜBER naïve!"),
            vec!["refund", "policy", "30", "días", "über", "naïve"]
        );
        assert!(tokenize("a I of the").is_empty());
    }

    #[test]
    fn term_index_is_stable_fnv1a() {
        // Reference values of 32-bit FNV-1a; these must never change, or
        // stored vectors stop matching queries.
        assert_eq!(term_index(""), 0x811c_9dc5);
        assert_eq!(term_index("a"), 0xe40c_292c);
        assert_eq!(term_index("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn vectors_are_sorted_and_distinct() {
        let v = encode_document("refund refund policy shipping refund policy");
        assert_eq!(v.indices.len(), 3);
        assert!(v.indices.windows(2).all(|w| w[0] < w[1]));
        let q = encode_query("refund refund policy");
        assert_eq!(q.values, vec![1.0, 1.0]);
    }

    #[test]
    fn term_frequency_saturates() {
        let once = encode_document("refund");
        let many = encode_document("refund refund refund refund refund refund");
        assert!(many.values[0] > once.values[0]);
        assert!(many.values[0] < K1 + 1.0);
    }

    #[test]
    fn query_matches_the_chunk_with_its_words_and_ranks_relevance() {
        let chunks = [
            "Our refund policy: refunds are issued within 30 days of purchase. \
             To ask for a refund, contact support.",
            "Shipping takes 3 to 5 business days. We ship worldwide.",
            "A refund may be mentioned here once, among many other words about \
             opening hours, store locations, parking, gift cards and newsletters.",
        ];
        let docs: Vec<_> = chunks.iter().map(|c| encode_document(c)).collect();
        let query = encode_query("How do I get a refund?");
        let scores: Vec<f32> = docs.iter().map(|d| dot(&query, d)).collect();
        assert!(scores[0] > 0.0 && scores[2] > 0.0);
        assert_eq!(scores[1], 0.0);
        assert!(scores[0] > scores[2], "{scores:?}");
        let shipping = encode_query("shipping days");
        assert!(dot(&shipping, &docs[1]) > dot(&shipping, &docs[0]));
    }
}
