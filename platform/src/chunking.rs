//! Splitting extracted text into overlapping chunks for embedding and
//! retrieval.
//!
//! Each section is split on its own, so a chunk never mixes two PDF pages or
//! two sheets and can say where it came from. Within a section a window of
//! about [`ChunkOptions::target_chars`] characters is cut at the best
//! boundary available in it: a blank line (paragraph), then a line break,
//! then a sentence end (`.`, `!`, `?` followed by whitespace), then any
//! whitespace; a word is only cut when it alone is longer than the window.
//! Consecutive chunks share about [`ChunkOptions::overlap_chars`] characters,
//! starting at a sentence or word boundary, so a fact straddling a cut is
//! whole in at least one chunk. A sheet's rows are records of their own:
//! its chunks are runs of whole rows (a row is cut only when it alone is
//! longer than the window) and do not repeat the previous chunk's last row.
//!
//! Positions and lengths count Unicode scalar values (`char`s), never bytes,
//! so no chunk can end inside a multi-byte character. The output depends
//! only on the input.

use crate::extract::Section;

/// Sizes for [`chunk`], in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkOptions {
    /// The longest a chunk may be (about 300 tokens by default). Values
    /// below 16 are raised to 16.
    pub target_chars: usize,
    /// How much of the end of a chunk the next one repeats, at most. Capped
    /// at a third of `target_chars` so every chunk moves well forward.
    pub overlap_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            target_chars: 1200,
            overlap_chars: 200,
        }
    }
}

/// A piece of a section's text, ready to embed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// 0-based position among all the chunks of the document.
    pub index: usize,
    /// Index of the section it comes from.
    pub section: usize,
    /// Never empty; no leading or trailing whitespace.
    pub text: String,
    pub page: Option<u32>,
    pub sheet: Option<String>,
    /// `text` is the section's characters `char_start..char_end`.
    pub char_start: usize,
    pub char_end: usize,
}

const MIN_TARGET: usize = 16;

/// Splits sections into chunks, in order.
pub fn chunk(sections: &[Section], options: ChunkOptions) -> Vec<Chunk> {
    let target = options.target_chars.max(MIN_TARGET);
    let overlap = options.overlap_chars.min(target / 3);
    let mut chunks = Vec::new();
    for (section_index, section) in sections.iter().enumerate() {
        let chars: Vec<char> = section.text.chars().collect();
        let overlap = if section.sheet.is_some() { 0 } else { overlap };
        for (start, end) in windows(&chars, target, overlap) {
            chunks.push(Chunk {
                index: chunks.len(),
                section: section_index,
                text: chars[start..end].iter().collect(),
                page: section.page,
                sheet: section.sheet.clone(),
                char_start: start,
                char_end: end,
            });
        }
    }
    chunks
}

/// A rough token count (a quarter of the characters, rounded up): close
/// enough for English with common embedding tokenizers to size prompts.
pub fn approx_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// The `(start, end)` character ranges of the chunks of one text.
fn windows(chars: &[char], target: usize, overlap: usize) -> Vec<(usize, usize)> {
    let n = chars.len();
    let mut out = Vec::new();
    let mut start = skip_whitespace(chars, 0);
    // End of the previous chunk: a chunk must reach past it to add anything.
    let mut floor = 0;
    while start < n {
        let (start_used, end) = if start.saturating_add(target) >= n {
            (start, n)
        } else if let Some(end) = break_point(chars, start, floor, target) {
            (start, end)
        } else {
            // The overlap left no room for a boundary before the window
            // ends (a long word follows): give it up rather than cut a word.
            let fresh = skip_whitespace(chars, floor.max(start));
            if fresh.saturating_add(target) >= n {
                (fresh, n)
            } else {
                // Only a word longer than the whole window gets cut.
                let end = break_point(chars, fresh, floor, target).unwrap_or(fresh + target);
                (fresh, end)
            }
        };
        let end = trim_end(chars, start_used, end);
        out.push((start_used, end));
        if skip_whitespace(chars, end) >= n {
            break;
        }
        start = skip_whitespace(chars, overlap_start(chars, start_used, end, overlap));
        floor = end;
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    Word,
    Sentence,
    Line,
    Paragraph,
}

/// The best place to end a chunk that starts at `start`: a position `p` in
/// `(max(start, floor), start + target]` (`start + target < chars.len()`)
/// where the text before `p` ends a paragraph, line, sentence or word.
/// The second half of the window is searched first so chunks do not come
/// out tiny; the first half only when the second has no boundary at all.
/// Within a half the highest level wins, then the latest position.
fn break_point(chars: &[char], start: usize, floor: usize, target: usize) -> Option<usize> {
    let hard_end = start + target;
    let lowest = start.max(floor) + 1;
    let half = (start + target / 2).max(lowest);
    best_boundary(chars, (half..=hard_end).rev())
        .or_else(|| best_boundary(chars, (lowest..half).rev()))
}

/// The first position of `positions` with the highest boundary level.
fn best_boundary(chars: &[char], positions: impl Iterator<Item = usize>) -> Option<usize> {
    let mut best: Option<(Boundary, usize)> = None;
    for p in positions {
        let Some(level) = boundary_at(chars, p) else {
            continue;
        };
        if best.is_none_or(|(b, _)| level > b) {
            best = Some((level, p));
            if level == Boundary::Paragraph {
                break;
            }
        }
    }
    best.map(|(_, p)| p)
}

/// What ends just before `p`, if `p` is between two words.
fn boundary_at(chars: &[char], p: usize) -> Option<Boundary> {
    let before = *chars.get(p.checked_sub(1)?)?;
    let at = *chars.get(p)?;
    if before.is_whitespace() {
        return None;
    }
    if !at.is_whitespace() {
        // Chinese and Japanese full stops need no space after them.
        return matches!(before, '。' | '！' | '？').then_some(Boundary::Sentence);
    }
    let newlines = chars[p..]
        .iter()
        .take_while(|c| c.is_whitespace())
        .filter(|&&c| c == '\n')
        .count();
    Some(match newlines {
        0 if ends_sentence(chars, p) => Boundary::Sentence,
        0 => Boundary::Word,
        1 => Boundary::Line,
        _ => Boundary::Paragraph,
    })
}

/// Whether the text before `p` ends with `.`, `!`, `?` or `…`, possibly
/// followed by a closing quote or bracket.
fn ends_sentence(chars: &[char], p: usize) -> bool {
    let is_end = |c: char| matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？');
    let is_close = |c: char| matches!(c, '"' | '\'' | ')' | ']' | '»' | '”' | '’');
    match p.checked_sub(1).and_then(|i| chars.get(i)) {
        Some(&c) if is_end(c) => true,
        Some(&c) if is_close(c) => p
            .checked_sub(2)
            .and_then(|i| chars.get(i))
            .is_some_and(|&c| is_end(c)),
        _ => false,
    }
}

/// Where the chunk after `start..end` begins: among the last `overlap`
/// characters, the start of the word after the highest-level boundary
/// (paragraph, line, sentence, word), the earliest of that level so the
/// overlap is as long as allowed; `end` (no overlap) when there is none.
fn overlap_start(chars: &[char], start: usize, end: usize, overlap: usize) -> usize {
    let lowest = end.saturating_sub(overlap).max(start + 1);
    let mut best: Option<(Boundary, usize)> = None;
    for p in lowest..end {
        if chars[p].is_whitespace() || !chars[p - 1].is_whitespace() {
            continue;
        }
        // The boundary before this word is at the end of the previous word.
        let mut q = p;
        while q > start && chars[q - 1].is_whitespace() {
            q -= 1;
        }
        let level = boundary_at(chars, q).unwrap_or(Boundary::Word);
        if best.is_none_or(|(b, _)| level > b) {
            best = Some((level, p));
        }
    }
    best.map_or(end, |(_, p)| p)
}

fn skip_whitespace(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

fn trim_end(chars: &[char], start: usize, mut end: usize) -> usize {
    while end > start && chars[end - 1].is_whitespace() {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn section(text: &str) -> Section {
        Section {
            text: text.to_owned(),
            page: None,
            sheet: None,
        }
    }

    fn opts(target_chars: usize, overlap_chars: usize) -> ChunkOptions {
        ChunkOptions {
            target_chars,
            overlap_chars,
        }
    }

    /// Invariants every chunking must satisfy, whatever the text.
    fn check_invariants(text: &str, chunks: &[Chunk], o: ChunkOptions) {
        let chars: Vec<char> = text.chars().collect();
        let target = o.target_chars.max(MIN_TARGET);
        let mut covered = vec![false; chars.len()];
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.index, i);
            assert!(!c.text.is_empty(), "empty chunk {i}");
            assert_eq!(c.text, c.text.trim(), "chunk {i} not trimmed");
            assert!(c.char_end - c.char_start <= target, "chunk {i} too long");
            let slice: String = chars[c.char_start..c.char_end].iter().collect();
            assert_eq!(c.text, slice, "chunk {i} text is not its range");
            covered[c.char_start..c.char_end]
                .iter_mut()
                .for_each(|v| *v = true);
            if i > 0 {
                let prev = &chunks[i - 1];
                assert!(c.char_start > prev.char_start, "no progress at {i}");
                assert!(c.char_end > prev.char_end, "chunk {i} adds nothing");
                assert!(
                    c.char_start <= prev.char_end + 1
                        || chars[prev.char_end..c.char_start]
                            .iter()
                            .all(|c| c.is_whitespace()),
                    "gap before {i}"
                );
            }
        }
        for (i, ch) in chars.iter().enumerate() {
            assert!(
                covered[i] || ch.is_whitespace(),
                "char {i} ({ch:?}) not covered"
            );
        }
    }

    fn prose(sentences: usize) -> String {
        let mut text = String::new();
        for i in 0..sentences {
            text.push_str(&format!(
                "Sentence number {i} talks about refunds and shipping. "
            ));
            if i % 7 == 6 {
                text.push_str("\n\n");
            }
        }
        text
    }

    #[test]
    fn short_text_is_one_chunk() {
        let chunks = chunk(&[section("  Hello world.\n")], ChunkOptions::default());
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "Hello world.");
        assert_eq!((chunks[0].char_start, chunks[0].char_end), (2, 14));
    }

    #[test]
    fn blank_sections_give_no_chunks() {
        assert!(chunk(&[section(""), section(" \n\n\t")], ChunkOptions::default()).is_empty());
        assert!(chunk(&[], ChunkOptions::default()).is_empty());
    }

    #[test]
    fn default_sizes() {
        assert_eq!(ChunkOptions::default(), opts(1200, 200));
    }

    #[test]
    fn consecutive_chunks_overlap() {
        let text = prose(200);
        let o = ChunkOptions::default();
        let chunks = chunk(&[section(&text)], o);
        assert!(chunks.len() > 5);
        check_invariants(&text, &chunks, o);
        for pair in chunks.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                b.char_start < a.char_end,
                "no overlap between {} and {}",
                a.index,
                b.index
            );
            let shared = a.char_end - b.char_start;
            assert!(shared <= 200, "overlap {shared} too long");
            assert!(shared >= 20, "overlap {shared} too short");
            // The shared text is the end of one chunk and the start of the next.
            let tail: String = a.text.chars().skip(b.char_start - a.char_start).collect();
            assert!(b.text.starts_with(tail.trim_end()));
        }
    }

    #[test]
    fn no_overlap_when_zero() {
        let text = prose(100);
        let o = opts(500, 0);
        let chunks = chunk(&[section(&text)], o);
        check_invariants(&text, &chunks, o);
        for pair in chunks.windows(2) {
            assert!(pair[1].char_start >= pair[0].char_end);
        }
    }

    #[test]
    fn chunks_end_at_sentence_ends_and_start_at_sentence_starts() {
        let text = prose(300);
        let chunks = chunk(&[section(&text)], ChunkOptions::default());
        for c in &chunks {
            assert!(
                c.text.ends_with('.'),
                "chunk {} ends mid-sentence: {:?}",
                c.index,
                &c.text[c.text.len() - 20..]
            );
            assert!(
                c.text.starts_with("Sentence number"),
                "chunk {} starts mid-sentence: {:?}",
                c.index,
                &c.text[..20]
            );
        }
    }

    #[test]
    fn paragraph_breaks_win_over_sentence_ends() {
        // A paragraph ends at 70% of the window; sentence ends come later.
        let first = "Alpha beta gamma. ".repeat(39); // 702 chars
        let second = "Delta epsilon zeta. ".repeat(60);
        let text = format!("{}\n\n{}", first.trim_end(), second);
        let chunks = chunk(&[section(&text)], opts(1000, 0));
        assert_eq!(chunks[0].text, first.trim_end());
        assert!(chunks[1].text.starts_with("Delta"));
    }

    #[test]
    fn line_breaks_win_over_sentence_ends() {
        let rows: Vec<String> = (0..100)
            .map(|i| format!("Name: user {i}. Plan: pro. Seats: {i}"))
            .collect();
        let text = rows.join("\n");
        let chunks = chunk(&[section(&text)], opts(300, 60));
        check_invariants(&text, &chunks, opts(300, 60));
        for c in &chunks {
            assert!(c.text.starts_with("Name: user"), "{:?}", c.text);
            assert!(
                c.text.split('\n').next_back().unwrap().contains("Seats:"),
                "{:?}",
                c.text
            );
        }
    }

    #[test]
    fn words_are_never_cut() {
        let text = "lorem ipsum dolor sit amet consectetur adipiscing elit ".repeat(50);
        let o = opts(97, 30);
        let chunks = chunk(&[section(&text)], o);
        check_invariants(&text, &chunks, o);
        let words = [
            "lorem",
            "ipsum",
            "dolor",
            "sit",
            "amet",
            "consectetur",
            "adipiscing",
            "elit",
        ];
        for c in &chunks {
            for w in c.text.split_whitespace() {
                assert!(words.contains(&w), "cut word {w:?} in chunk {}", c.index);
            }
        }
    }

    #[test]
    fn a_word_longer_than_the_window_is_cut() {
        let word = "x".repeat(2500);
        let text = format!("Before it. {word} After it.");
        let o = opts(1000, 200);
        let chunks = chunk(&[section(&text)], o);
        check_invariants(&text, &chunks, o);
        assert_eq!(chunks[0].text, "Before it.");
        assert!(chunks.iter().any(|c| c.text.len() == 1000));
        assert_eq!(
            chunks.last().unwrap().text.split_whitespace().last(),
            Some("it.")
        );
    }

    #[test]
    fn a_word_shorter_than_the_window_is_not_cut_by_the_overlap() {
        // The word fits a window on its own but not after an overlap.
        let word = "y".repeat(90);
        let text = format!(
            "{} {word} tail words here.",
            "short words ".repeat(8).trim_end()
        );
        let o = opts(100, 33);
        let chunks = chunk(&[section(&text)], o);
        check_invariants(&text, &chunks, o);
        assert!(chunks.iter().any(|c| c.text.contains(&word)), "{chunks:#?}");
    }

    #[test]
    fn multibyte_text_is_safe() {
        let text = "Crème brûlée 🍮 costs 5 €. Ça va? Ünïcödé ñandú 👩‍👩‍👧 family! 日本語の文章です。次の文。 ".repeat(40);
        for (target, overlap) in [(16, 5), (37, 10), (100, 30), (1200, 200)] {
            let o = opts(target, overlap);
            let chunks = chunk(&[section(&text)], o);
            check_invariants(&text, &chunks, o);
        }
    }

    #[test]
    fn random_texts_keep_the_invariants() {
        let alphabet: Vec<char> = "ab cd. ef!\ngh?\n\n é😀 ij\tklmnopqrstuvwxyz,"
            .chars()
            .collect();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..200 {
            let len = (round * 37) % 3000;
            let text: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let o = opts(16 + round % 300, round % 120);
            let chunks = chunk(&[section(&text)], o);
            check_invariants(&text, &chunks, o);
        }
    }

    #[test]
    fn sections_keep_location_and_index_runs_across_them() {
        let sections = vec![
            Section {
                text: prose(40),
                page: Some(1),
                sheet: None,
            },
            Section {
                text: "Row one".to_owned(),
                page: None,
                sheet: Some("Prices".to_owned()),
            },
        ];
        let chunks = chunk(&sections, opts(600, 100));
        let last = chunks.last().unwrap();
        assert_eq!(last.sheet.as_deref(), Some("Prices"));
        assert_eq!((last.section, last.char_start, last.char_end), (1, 0, 7));
        assert!(
            chunks[..chunks.len() - 1]
                .iter()
                .all(|c| c.page == Some(1) && c.section == 0)
        );
        let indexes: Vec<usize> = chunks.iter().map(|c| c.index).collect();
        assert_eq!(indexes, (0..chunks.len()).collect::<Vec<_>>());
    }

    #[test]
    fn sheet_chunks_are_runs_of_whole_rows_without_overlap() {
        let rows: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    "Product: item {i}; Price: {}; Notes: in stock since March",
                    i * 3
                )
            })
            .collect();
        let text = rows.join("\n");
        let sheet = Section {
            text: text.clone(),
            page: None,
            sheet: Some("Prices".to_owned()),
        };
        let o = opts(600, 200);
        let chunks = chunk(&[sheet], o);
        assert!(chunks.len() > 1);
        let mut seen = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.text.chars().count() <= 600);
            if i > 0 {
                assert!(c.char_start >= chunks[i - 1].char_end, "no row is repeated");
            }
            for line in c.text.lines() {
                assert!(rows.iter().any(|r| r == line), "whole rows only: {line:?}");
                seen.push(line.to_owned());
            }
        }
        assert_eq!(seen, rows, "every row once, in order");
        // Prose keeps its overlap.
        let prose_chunks = chunk(&[section(&prose(60))], o);
        assert!(
            prose_chunks
                .windows(2)
                .any(|w| w[1].char_start < w[0].char_end)
        );
    }

    #[test]
    fn deterministic() {
        let text = prose(150);
        let a = chunk(&[section(&text)], ChunkOptions::default());
        let b = chunk(&[section(&text)], ChunkOptions::default());
        assert_eq!(a, b);
    }

    #[test]
    fn tiny_or_absurd_options_still_work() {
        let text = prose(20);
        for o in [opts(0, 0), opts(1, 1000), opts(16, 16), opts(usize::MAX, 0)] {
            let chunks = chunk(&[section(&text)], o);
            check_invariants(&text, &chunks, o);
        }
    }

    #[test]
    fn approx_tokens_is_a_quarter_of_the_chars() {
        assert_eq!(approx_tokens(""), 0);
        assert_eq!(approx_tokens("abcd"), 1);
        assert_eq!(approx_tokens("abcde"), 2);
        assert_eq!(approx_tokens("éééé"), 1);
    }
}
