//! PDF text, page by page, with pdf-extract (which panics on some malformed
//! files: callers go through `extract_isolated`).

use pdf_extract::{Document, PlainTextOutput};

use super::{DocKind, ExtractError, Extracted, Section};

pub(super) fn extract(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let mut doc = Document::load_mem(bytes).map_err(load_error)?;
    if doc.is_encrypted() {
        // Many PDFs are "encrypted" with an empty user password only to set
        // permissions; those open like any other.
        doc.decrypt("").map_err(|_| ExtractError::Encrypted)?;
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(ExtractError::damaged(DocKind::Pdf, "it has no pages"));
    }
    let mut sections = Vec::new();
    let mut failed = None;
    // Pages are read one by one (rather than with
    // `extract_text_from_mem_by_pages`, which stops at the first bad page) so
    // one damaged page does not lose the rest of the document.
    for &number in pages.keys() {
        let mut text = String::new();
        let result = {
            let mut output = PlainTextOutput::new(&mut text);
            pdf_extract::output_doc_page(&doc, &mut output, number)
        };
        match result {
            Ok(()) => sections.push(Section {
                text,
                page: Some(number),
                sheet: None,
            }),
            Err(e) => {
                tracing::debug!(page = number, error = %e, "PDF page unreadable");
                failed.get_or_insert(e.to_string());
            }
        }
    }
    // All pages unreadable is a damaged file, not a scanned one.
    if sections.is_empty()
        && let Some(detail) = failed
    {
        return Err(ExtractError::damaged(DocKind::Pdf, detail));
    }
    Ok(Extracted {
        sections,
        pages: Some(u32::try_from(pages.len()).unwrap_or(u32::MAX)),
        sheets: None,
    })
}

fn load_error(e: pdf_extract::Error) -> ExtractError {
    use pdf_extract::Error;
    match e {
        Error::Decryption(_) | Error::InvalidPassword | Error::AlreadyEncrypted => {
            ExtractError::Encrypted
        }
        other => ExtractError::damaged(DocKind::Pdf, other),
    }
}
