//! The rows of a table a user hands in (a CSV file, or the first sheet of
//! a workbook) as text cells, for imports that read columns by header.
//! Each row comes with its 1-based number in the file (the line a CSV
//! record starts on, the sheet's row), so errors can point at it.

use std::io::Cursor;

use calamine::{Reader, Xlsx};

use super::sheets::cell_text;
use super::text::{csv_reader, decode};
use super::{DocKind, ExtractError, ExtractLimits, archive, isolated};

/// The rows of `bytes` (CSV or XLSX, as sniffed), at most `max_rows`
/// (more is an error, so nothing is dropped silently), parsed on a blocking
/// thread within `limits` like a document.
pub async fn first_table_isolated(
    kind: DocKind,
    bytes: Vec<u8>,
    limits: ExtractLimits,
    max_rows: usize,
) -> Result<Vec<(usize, Vec<String>)>, ExtractError> {
    isolated(kind, limits.timeout, move || {
        first_table(kind, &bytes, &limits, max_rows)
    })
    .await
}

fn first_table(
    kind: DocKind,
    bytes: &[u8],
    limits: &ExtractLimits,
    max_rows: usize,
) -> Result<Vec<(usize, Vec<String>)>, ExtractError> {
    let too_many = || ExtractError::TooLarge(format!("the file has more than {max_rows} rows"));
    let mut rows = Vec::new();
    match kind {
        DocKind::Csv => {
            let text = decode(bytes);
            let bytes = text.as_bytes();
            // The reader's own line count skips blank lines, and a record's
            // offset is where the blank lines before it begin: lines are
            // counted here, once over the text.
            let (mut counted_to, mut line) = (0usize, 1usize);
            for record in csv_reader(&text).records() {
                let record = record.map_err(|e| ExtractError::damaged(kind, e))?;
                if rows.len() == max_rows {
                    return Err(too_many());
                }
                let mut at = record
                    .position()
                    .map_or(counted_to, |p| {
                        usize::try_from(p.byte()).unwrap_or(usize::MAX)
                    })
                    .clamp(counted_to, bytes.len());
                while bytes.get(at).is_some_and(|b| matches!(b, b'\n' | b'\r')) {
                    at += 1;
                }
                line += bytes[counted_to..at]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count();
                counted_to = at;
                rows.push((line, record.iter().map(|c| c.trim().to_owned()).collect()));
            }
        }
        DocKind::Xlsx => {
            archive::check(kind, bytes, limits)?;
            let mut workbook =
                Xlsx::new(Cursor::new(bytes)).map_err(|e| ExtractError::damaged(kind, e))?;
            let range = workbook
                .worksheet_range_at(0)
                .ok_or_else(|| ExtractError::damaged(kind, "the workbook has no sheet"))?
                .map_err(|e| ExtractError::damaged(kind, e))?;
            let first = range.start().map_or(0, |(r, _)| r as usize);
            for (i, row) in range.rows().enumerate() {
                if rows.len() == max_rows {
                    return Err(too_many());
                }
                rows.push((
                    first + i + 1,
                    row.iter().map(|c| cell_text(c).trim().to_owned()).collect(),
                ));
            }
        }
        other => {
            return Err(ExtractError::Unsupported {
                file: String::new(),
                found: other.describe().to_owned(),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_trimmed_and_quotes_kept_together() {
        let csv = b"question;expected answer\n\n When do you open? ;\"At nine; daily\"\n";
        let rows = first_table(DocKind::Csv, csv, &ExtractLimits::default(), 10);
        assert_eq!(
            rows,
            Ok(vec![
                (1, vec!["question".to_owned(), "expected answer".to_owned()]),
                (
                    3,
                    vec!["When do you open?".to_owned(), "At nine; daily".to_owned()]
                ),
            ])
        );
        let many = "q\n".repeat(5);
        assert!(matches!(
            first_table(DocKind::Csv, many.as_bytes(), &ExtractLimits::default(), 3),
            Err(ExtractError::TooLarge(_))
        ));
    }
}
