//! Plain text, Markdown and CSV: charset detection, then text or
//! header-labelled rows.

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{Encoding, UTF_8};

use super::{DocKind, ExtractError, Extracted, Section};

/// Decodes text of unknown encoding: a BOM wins (UTF-8, UTF-16LE/BE), then
/// valid UTF-8, then chardetng's guess among legacy encodings (Windows-1252
/// for Western European text). Undecodable bytes become U+FFFD rather than
/// failing the document.
pub(super) fn decode(bytes: &[u8]) -> String {
    if let Some((encoding, bom_len)) = Encoding::for_bom(bytes) {
        let body = bytes.get(bom_len..).unwrap_or_default();
        return encoding.decode_without_bom_handling(body).0.into_owned();
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_owned();
    }
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    detector.feed(bytes, true);
    // No TLD hint: uploads carry no origin; UTF-8 was ruled out above.
    let encoding = detector.guess(None, Utf8Detection::Deny);
    let encoding = if encoding == UTF_8 {
        encoding_rs::WINDOWS_1252
    } else {
        encoding
    };
    encoding.decode_without_bom_handling(bytes).0.into_owned()
}

pub(super) fn extract_plain(bytes: &[u8]) -> Extracted {
    Extracted {
        sections: vec![Section {
            text: decode(bytes),
            page: None,
            sheet: None,
        }],
        pages: None,
        sheets: None,
    }
}

/// A reader of `text` as hand-made CSV: no header row assumed, ragged rows
/// allowed (their readers cope with any width), the delimiter guessed.
pub(super) fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(guess_delimiter(text))
        .from_reader(text.as_bytes())
}

pub(super) fn extract_csv(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let text = decode(bytes);
    let mut reader = csv_reader(&text);
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| ExtractError::damaged(DocKind::Csv, e))?;
        rows.push(record.iter().map(str::to_owned).collect::<Vec<_>>());
    }
    Ok(Extracted {
        sections: vec![Section {
            text: labelled_rows(rows),
            page: None,
            sheet: None,
        }],
        pages: None,
        sheets: None,
    })
}

/// Comma, semicolon (Excel in most European locales) or tab, whichever is
/// most frequent outside quotes on the first line.
fn guess_delimiter(text: &str) -> u8 {
    let first_line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for c in first_line.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            for (d, n) in &mut counts {
                if c == char::from(*d) {
                    *n += 1;
                }
            }
        }
    }
    // Ties keep the earliest, so comma is the default.
    counts
        .iter()
        .fold(
            (b',', 0),
            |best, &(d, n)| if n > best.1 { (d, n) } else { best },
        )
        .0
}

/// Words separated by single spaces, without leading or trailing
/// whitespace; `cell` itself when it already is (most are).
fn collapse_whitespace(cell: String) -> String {
    let mut after_space = true;
    let collapsed = cell.chars().all(|c| {
        let ok = !c.is_whitespace() || (c == ' ' && !after_space);
        after_space = c.is_whitespace();
        ok
    }) && (!after_space || cell.is_empty());
    if collapsed {
        cell
    } else {
        cell.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Renders table rows so each stays meaningful once chunked on its own:
/// "Header1: value; Header2: value", one row a line. The first row with any
/// non-blank cell is the header; a blank header cell becomes "Column N".
/// A table with only a header row renders it as is.
///
/// Rows are written straight into the text, a cell copied only when its
/// whitespace needs collapsing: a sheet has thousands of cells.
pub(super) fn labelled_rows(rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut rows = rows
        .into_iter()
        // Line breaks inside a cell would break "one row a line".
        .map(|row| row.into_iter().map(collapse_whitespace).collect::<Vec<_>>())
        .filter(|row| row.iter().any(|c| !c.is_empty()));
    let Some(header) = rows.next() else {
        return String::new();
    };
    let mut out = String::new();
    let mut any_data = false;
    for row in rows {
        if !out.is_empty() {
            out.push('\n');
        }
        let cells = row
            .iter()
            .enumerate()
            .filter(|(_, value)| !value.is_empty());
        for (n, (i, value)) in cells.enumerate() {
            if n > 0 {
                out.push_str("; ");
            }
            match header.get(i).filter(|h| !h.is_empty()) {
                Some(label) => out.push_str(label),
                None => {
                    out.push_str("Column ");
                    out.push_str(&(i + 1).to_string());
                }
            }
            out.push_str(": ");
            out.push_str(value);
        }
        any_data = true;
    }
    if !any_data {
        let labels: Vec<&str> = header
            .iter()
            .map(String::as_str)
            .filter(|h| !h.is_empty())
            .collect();
        return labels.join("; ");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::collapse_whitespace;

    #[test]
    fn cells_collapse_as_split_whitespace_joins_them() {
        for cell in [
            "",
            " ",
            "a",
            "a b",
            " a",
            "a ",
            "a  b",
            "a\nb",
            "a\tb",
            "\u{a0}a",
            "a\u{3000}b",
            "Basic\nplan",
            "  many   words  here ",
            "x y z",
            "é ü",
        ] {
            let expected = cell.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(collapse_whitespace(cell.to_owned()), expected, "{cell:?}");
        }
    }
}
