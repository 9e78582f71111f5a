//! Sparse BM25 vectors computed locally: no model, no API key.
//!
//! A term's dimension is the FNV-1a 32-bit hash of its UTF-8 bytes, stable
//! across processes and releases (never `std`'s randomly seeded hasher), so
//! vectors written by one release are searchable by the next. Document-side
//! weights are BM25's saturated term frequency with length normalisation;
//! query-side weights are 1 per distinct term. The inverse document
//! frequency is applied by the store at query time (Qdrant's `Idf` modifier
//! on the sparse vector), so the product of the two is the BM25 score.

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
/// The longest stopword, in bytes: longer tokens skip the lookup.
const MAX_STOPWORD_LEN: usize = 8;

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

/// A word of at most 8 bytes as a number that sorts as the word does
/// (big-endian, zero-padded: no token holds a zero byte, and a non-ASCII
/// byte matches no stopword's), so the stopword lookup compares integers
/// instead of strings.
const fn stopword_key(word: &[u8]) -> u64 {
    let mut key = 0u64;
    let mut i = 0;
    while i < MAX_STOPWORD_LEN {
        key <<= 8;
        if i < word.len() {
            key |= word[i] as u64;
        }
        i += 1;
    }
    key
}

const STOPWORD_KEYS: [u64; STOPWORDS.len()] = {
    let mut keys = [0; STOPWORDS.len()];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = stopword_key(STOPWORDS[i].as_bytes());
        i += 1;
    }
    keys
};

/// Splits on anything that is not a Unicode letter or digit.
fn raw_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// Whether the bytes of a lower-cased token are a stopword's.
fn is_stopword(lower: &[u8]) -> bool {
    lower.len() <= MAX_STOPWORD_LEN && STOPWORD_KEYS.binary_search(&stopword_key(lower)).is_ok()
}

/// Whether a lower-cased token counts: two to 64 characters, not a stopword.
fn keeps(lower: &str) -> bool {
    let chars = lower.chars().count();
    (MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&chars) && !is_stopword(lower.as_bytes())
}

/// Lower-cased tokens of `text`: split on anything that is not a Unicode
/// letter or digit, without stopwords and tokens of fewer than two
/// characters. The definition the vectors follow; [`encode_document`] and
/// [`encode_query`] compute the same terms without a string per token.
pub fn tokenize(text: &str) -> Vec<String> {
    raw_tokens(text)
        .map(str::to_lowercase)
        .filter(|t| keeps(t))
        .collect()
}

/// The stable 32-bit dimension of a token (FNV-1a).
pub fn term_index(token: &str) -> u32 {
    fnv1a(token.bytes())
}

fn fnv1a(bytes: impl Iterator<Item = u8>) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.fold(OFFSET, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// `term_index` of every token of `tokenize(text)`, in order. An ASCII
/// token (nearly every one) is lower-cased as it is hashed, with no string
/// of its own: a string per token was the largest cost of indexing a
/// spreadsheet. Any other token goes through `str::to_lowercase`, whose
/// rules (a word-final sigma, say) the stored vectors depend on.
fn term_indices(text: &str) -> Vec<u32> {
    let mut indices = Vec::new();
    for token in raw_tokens(text) {
        let bytes = token.as_bytes();
        if !token.is_ascii() {
            let lower = token.to_lowercase();
            if keeps(&lower) {
                indices.push(term_index(&lower));
            }
            continue;
        }
        if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&bytes.len()) {
            continue;
        }
        if bytes.len() <= MAX_STOPWORD_LEN {
            let mut buf = [0u8; MAX_STOPWORD_LEN];
            let lower = &mut buf[..bytes.len()];
            lower.copy_from_slice(bytes);
            lower.make_ascii_lowercase();
            if is_stopword(lower) {
                continue;
            }
        }
        indices.push(fnv1a(bytes.iter().map(u8::to_ascii_lowercase)));
    }
    indices
}

/// Term frequencies by dimension, in ascending order of dimension. Two
/// tokens hashing to the same dimension (rare) simply count together.
fn term_frequencies(mut indices: Vec<u32>) -> Vec<(u32, u32)> {
    indices.sort_unstable();
    let mut tf: Vec<(u32, u32)> = Vec::new();
    for index in indices {
        match tf.last_mut() {
            Some((last, n)) if *last == index => *n += 1,
            _ => tf.push((index, 1)),
        }
    }
    tf
}

/// The document-side BM25 vector of a chunk of text.
pub fn encode_document(text: &str) -> SparseVector {
    let indices = term_indices(text);
    let len = indices.len();
    document_vector(term_frequencies(indices), len)
}

/// BM25 document weights of term counts (ascending dimensions) of a chunk
/// of `len` tokens.
fn document_vector(tf: impl IntoIterator<Item = (u32, u32)>, len: usize) -> SparseVector {
    let norm = K1 * (1.0 - B + B * len as f32 / AVG_LEN);
    let (indices, values) = tf
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
    let (indices, values) = term_frequencies(term_indices(text))
        .into_iter()
        .map(|(index, _)| (index, 1.0))
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
        assert!(STOPWORD_KEYS.windows(2).all(|w| w[0] < w[1]));
        assert!(
            STOPWORDS
                .iter()
                .all(|w| w.is_ascii() && w.len() <= MAX_STOPWORD_LEN)
        );
    }

    /// The vectors as `tokenize` defines them, the way they were first
    /// computed (a string per token, a map of counts), weighted alike.
    fn reference_document(text: &str) -> SparseVector {
        let tokens = tokenize(text);
        let mut tf = std::collections::BTreeMap::new();
        for token in &tokens {
            *tf.entry(term_index(token)).or_insert(0u32) += 1;
        }
        document_vector(tf, tokens.len())
    }

    #[test]
    fn encoding_without_token_strings_gives_the_same_vectors() {
        // Stopwords in any case, lengths around the limits, digits, accents,
        // a word-final sigma, characters whose lower case is ASCII (the
        // Kelvin sign) or longer (dotted I), scripts without case.
        let long = "x".repeat(MAX_TOKEN_CHARS);
        let samples = [
            "The Refund-policy: 30 días, x ÜBER naïve! THE the ThE",
            "ΟΔΟΣ ΟΔΟΣΟΣ σίγμα ΣΑΣ",
            "\u{212A}elvin O\u{212A} İstanbul İI ǅemal ß STRASSE",
            "客服 退款政策 。 返品 ＡＢＣ ｆｕｌｌ１２",
            "a1 b 22 THROUGH through Through7 itself ITSELF themselves",
            "تم إرجاع المبلغ ١٢٣ — ok",
        ];
        let mut texts: Vec<String> = samples.iter().map(|s| (*s).to_owned()).collect();
        texts.push(format!(
            "{long} {long}y Ā{long} {}",
            "é".repeat(MAX_TOKEN_CHARS)
        ));
        // Pseudo-random mixes of those pieces and separators.
        let pieces: Vec<&str> = samples
            .iter()
            .flat_map(|s| s.split(' '))
            .chain(["", "-", "\n", "A", "Σ", "é", "\u{212A}", "1"])
            .collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..500 {
            let mut text = String::new();
            for _ in 0..12 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(pieces[usize::try_from(seed % pieces.len() as u64).unwrap_or(0)]);
                if seed.is_multiple_of(3) {
                    text.push(' ');
                }
            }
            texts.push(text);
        }
        for text in &texts {
            assert_eq!(encode_document(text), reference_document(text), "{text:?}");
            let expected: Vec<u32> = tokenize(text).iter().map(|t| term_index(t)).collect();
            assert_eq!(term_indices(text), expected, "{text:?}");
        }
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
