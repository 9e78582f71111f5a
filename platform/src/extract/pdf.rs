//! PDF text, page by page, with pdf-extract (which panics on some malformed
//! files: callers go through `extract_isolated`).

use std::io::Read;

use pdf_extract::{Document, PageReader, PlainTextOutput};

use super::{DocKind, ExtractError, Extracted, Section};

/// Inflates every Flate-compressed stream of the raw file into nothing,
/// counting, and refuses the file when they expand to more than
/// `max_unpacked` bytes. This runs before lopdf sees the file because
/// lopdf inflates object streams while loading and page contents and fonts
/// while reading, each whole into memory: a PDF is an archive too. Streams
/// are found by their `stream` keyword rather than through the parser (a
/// zlib stream ends by itself, and anything that is not one fails on its
/// first bytes).
pub(super) fn check_streams(bytes: &[u8], max_unpacked: u64) -> Result<(), ExtractError> {
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut from = 0;
    while let Some(found) = find(&bytes[from..], b"stream") {
        let keyword = from + found;
        from = keyword + b"stream".len();
        if keyword >= 3 && &bytes[keyword - 3..keyword] == b"end" {
            continue;
        }
        let data = match &bytes[from..] {
            [b'\r', b'\n', ..] => from + 2,
            [b'\n' | b'\r', ..] => from + 1,
            _ => continue,
        };
        let mut inflate = flate2::read::ZlibDecoder::new(&bytes[data..]);
        while let Ok(n @ 1..) = inflate.read(&mut buf) {
            total += n as u64;
            if total > max_unpacked {
                return Err(super::archive::too_big(max_unpacked));
            }
        }
        // Skip the compressed data: its bytes may spell "stream" too.
        from = data + usize::try_from(inflate.total_in()).unwrap_or(0);
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Stops once the pages read so far hold more than `max_text` bytes, so a
/// PDF cannot grow the text without bound.
pub(super) fn extract(bytes: &[u8], max_text: u64) -> Result<Extracted, ExtractError> {
    let mut doc = Document::load_mem(bytes).map_err(load_error)?;
    if doc.is_encrypted() {
        // Many PDFs are "encrypted" with an empty user password only to set
        // permissions; those open like any other.
        doc.decrypt("").map_err(|_| ExtractError::Encrypted)?;
    }
    // Pages are read one by one (rather than with
    // `extract_text_from_mem_by_pages`, which stops at the first bad page) so
    // one damaged page does not lose the rest of the document; the reader
    // (our patch of pdf-extract) builds each font once for all of them.
    let mut reader = PageReader::new(&doc);
    let numbers: Vec<u32> = reader.page_numbers().collect();
    if numbers.is_empty() {
        return Err(ExtractError::damaged(DocKind::Pdf, "it has no pages"));
    }
    let mut sections: Vec<Section> = Vec::new();
    let mut text_bytes: u64 = 0;
    let mut failed = None;
    for &number in &numbers {
        let mut text = String::new();
        let result = {
            let mut output = PlainTextOutput::new(&mut text);
            reader.output_page(&mut output, number)
        };
        match result {
            Ok(()) => {
                text_bytes += text.len() as u64;
                sections.push(Section {
                    text,
                    page: Some(number),
                    sheet: None,
                });
                if text_bytes > max_text {
                    // The caller words the error.
                    break;
                }
            }
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
        pages: Some(u32::try_from(numbers.len()).unwrap_or(u32::MAX)),
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
