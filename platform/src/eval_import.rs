//! Evaluation cases from a table (CSV or a workbook's first sheet): the
//! first row names the columns, each later row is a case.
//!
//! | column (any case, spaces or `_` ignored) | case field |
//! |---|---|
//! | `question` | the question (required) |
//! | `expected answer`, `answer` | what a right answer says |
//! | `expected facts`, `facts` | phrases, separated by `;`, `|` or new lines |
//! | `expected documents`, `documents`, `sources` | document ids or names, separated the same way or by `,` |
//!
//! Other columns (notes, owners) are ignored.

/// One case as the table gave it; `row` is its 1-based row in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedCase {
    pub row: usize,
    pub question: String,
    pub expected_answer: Option<String>,
    pub expected_facts: Vec<String>,
    /// Ids or names, as written: the caller resolves them.
    pub expected_documents: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error(
        "the file is empty: its first row must name the columns (question, expected answer, expected facts, expected documents)"
    )]
    Empty,
    #[error(
        "the first row names no `question` column (found: {0}); name the columns question, expected answer, expected facts, expected documents"
    )]
    NoQuestionColumn(String),
    #[error("the file has a header row but no cases")]
    NoCases,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Question,
    Answer,
    Facts,
    Documents,
    Ignored,
}

fn column(header: &str) -> Column {
    let key: String = header
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    match key.as_str() {
        "question" | "questions" => Column::Question,
        "expectedanswer" | "answer" => Column::Answer,
        "expectedfacts" | "facts" => Column::Facts,
        "expecteddocuments" | "expecteddocumentids" | "documents" | "documentids" | "sources" => {
            Column::Documents
        }
        _ => Column::Ignored,
    }
}

fn split(cell: &str, separators: &[char]) -> Vec<String> {
    cell.split(|c| separators.contains(&c))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The cases of `rows` (numbered as in the file; the first is the header).
/// Rows without a question are cases without one: the caller's validation
/// names their row.
pub fn cases_from_rows(rows: &[(usize, Vec<String>)]) -> Result<Vec<ImportedCase>, ImportError> {
    let Some(((_, header), body)) = rows.split_first() else {
        return Err(ImportError::Empty);
    };
    let columns: Vec<Column> = header.iter().map(|h| column(h)).collect();
    if !columns.contains(&Column::Question) {
        let found: Vec<&str> = header
            .iter()
            .map(String::as_str)
            .filter(|h| !h.is_empty())
            .collect();
        return Err(ImportError::NoQuestionColumn(found.join(", ")));
    }
    let cases: Vec<ImportedCase> = body
        .iter()
        // Blank rows (spacing in a hand-made sheet) carry nothing.
        .filter(|(_, cells)| cells.iter().any(|c| !c.trim().is_empty()))
        .map(|(row, cells)| {
            let mut case = ImportedCase {
                row: *row,
                question: String::new(),
                expected_answer: None,
                expected_facts: Vec::new(),
                expected_documents: Vec::new(),
            };
            for (cell, col) in cells.iter().zip(&columns) {
                let cell = cell.trim();
                match col {
                    Column::Question if case.question.is_empty() => {
                        cell.clone_into(&mut case.question)
                    }
                    Column::Answer if !cell.is_empty() => {
                        case.expected_answer = Some(cell.to_owned());
                    }
                    Column::Facts => case.expected_facts.extend(split(cell, &[';', '|', '\n'])),
                    Column::Documents => case
                        .expected_documents
                        .extend(split(cell, &[';', '|', '\n', ','])),
                    _ => {}
                }
            }
            case
        })
        .collect();
    if cases.is_empty() {
        return Err(ImportError::NoCases);
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: &[&[&str]]) -> Vec<(usize, Vec<String>)> {
        t.iter()
            .enumerate()
            .map(|(i, r)| (i + 1, r.iter().map(|c| (*c).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn headers_name_the_columns_in_any_order_and_case() {
        let t = rows(&[
            &[
                "Notes",
                "Expected_Facts",
                "QUESTION",
                "Expected answer",
                "Sources",
            ],
            &[
                "x",
                "nine; six |Monday",
                "When do you open?",
                "At nine.",
                "doc-a, Hours.pdf",
            ],
            &["", "", "", "", ""],
            &["", "", "Returns?", "", ""],
        ]);
        let cases = cases_from_rows(&t);
        assert_eq!(
            cases,
            Ok(vec![
                ImportedCase {
                    row: 2,
                    question: "When do you open?".into(),
                    expected_answer: Some("At nine.".into()),
                    expected_facts: vec!["nine".into(), "six".into(), "Monday".into()],
                    expected_documents: vec!["doc-a".into(), "Hours.pdf".into()],
                },
                ImportedCase {
                    row: 4,
                    question: "Returns?".into(),
                    expected_answer: None,
                    expected_facts: vec![],
                    expected_documents: vec![],
                },
            ])
        );
    }

    #[test]
    fn a_table_without_a_question_column_or_cases_is_refused() {
        assert_eq!(cases_from_rows(&[]), Err(ImportError::Empty));
        assert_eq!(
            cases_from_rows(&rows(&[&["Q", "answer"], &["a", "b"]])),
            Err(ImportError::NoQuestionColumn("Q, answer".into()))
        );
        assert_eq!(
            cases_from_rows(&rows(&[&["question"]])),
            Err(ImportError::NoCases)
        );
    }
}
