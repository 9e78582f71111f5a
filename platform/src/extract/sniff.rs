//! Deciding a document's type from its name and its bytes.

use std::io::{Cursor, Read};

use super::{DocKind, ExtractError};

/// What the bytes are, whatever the name says.
#[derive(Debug, PartialEq)]
enum Content {
    Pdf,
    Docx,
    Xlsx,
    Ods,
    /// An OLE compound file that is not a Word or PowerPoint one: what
    /// Excel 97-2003 writes.
    Xls,
    Text,
    /// Anything else, described for the user ("a PNG image").
    Other(String),
}

impl Content {
    fn describe(&self) -> String {
        match self {
            Self::Pdf => DocKind::Pdf.describe().to_owned(),
            Self::Docx => DocKind::Docx.describe().to_owned(),
            Self::Xlsx => DocKind::Xlsx.describe().to_owned(),
            Self::Ods => DocKind::Ods.describe().to_owned(),
            Self::Xls => DocKind::Xls.describe().to_owned(),
            Self::Text => "plain text".to_owned(),
            Self::Other(found) => found.clone(),
        }
    }

    /// The kind to extract as when the name says nothing (no extension).
    fn kind(&self) -> Option<DocKind> {
        match self {
            Self::Pdf => Some(DocKind::Pdf),
            Self::Docx => Some(DocKind::Docx),
            Self::Xlsx => Some(DocKind::Xlsx),
            Self::Ods => Some(DocKind::Ods),
            Self::Xls => Some(DocKind::Xls),
            Self::Text => Some(DocKind::Txt),
            Self::Other(_) => None,
        }
    }
}

/// Decides the type of an uploaded file from its content (magic bytes, ZIP
/// entries, text-ness) and its extension, which must agree.
///
/// A file without an extension is accepted as whatever supported type its
/// content is. A spreadsheet saved under another spreadsheet extension (an
/// .xlsx named .xls) is read as what it really is. Errors name the file and
/// what was found; [`ExtractError::is_unsupported_type`] tells them apart from
/// the empty file.
pub fn sniff(filename: &str, bytes: &[u8]) -> Result<DocKind, ExtractError> {
    let file = display_name(filename);
    if bytes.is_empty() {
        return Err(ExtractError::Empty { file });
    }
    let content = classify(bytes);
    let Some(ext) = extension(filename) else {
        return content.kind().ok_or_else(|| ExtractError::Unsupported {
            file,
            found: content.describe(),
        });
    };
    let named = match ext.as_str() {
        "pdf" => DocKind::Pdf,
        "docx" => DocKind::Docx,
        "txt" | "text" => DocKind::Txt,
        "md" | "markdown" => DocKind::Markdown,
        "csv" => DocKind::Csv,
        "xlsx" => DocKind::Xlsx,
        "xls" => DocKind::Xls,
        "ods" => DocKind::Ods,
        _ => {
            return Err(ExtractError::Unsupported {
                found: format!("a .{ext} file containing {}", content.describe()),
                file,
            });
        }
    };
    let accepted = match (named, &content) {
        (DocKind::Pdf, Content::Pdf) | (DocKind::Docx, Content::Docx) => Some(named),
        (DocKind::Txt | DocKind::Markdown | DocKind::Csv, Content::Text) => Some(named),
        (
            DocKind::Xlsx | DocKind::Xls | DocKind::Ods,
            Content::Xlsx | Content::Xls | Content::Ods,
        ) => content.kind(),
        _ => None,
    };
    accepted.ok_or_else(|| ExtractError::Mismatch {
        file,
        expected: named.describe(),
        found: content.describe(),
    })
}

/// The name as shown in messages: the last path component, bounded, since
/// browsers and clients send anything.
fn display_name(filename: &str) -> String {
    let base = filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(filename)
        .trim();
    let base = if base.is_empty() { "(unnamed)" } else { base };
    if base.chars().count() > 120 {
        let short: String = base.chars().take(117).collect();
        format!("{short}...")
    } else {
        base.to_owned()
    }
}

/// The lowercased extension, if the name has one (".bashrc" has none).
fn extension(filename: &str) -> Option<String> {
    let base = filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(filename)
        .trim();
    let (stem, ext) = base.rsplit_once('.')?;
    if stem.is_empty() || ext.is_empty() {
        return None;
    }
    Some(ext.to_ascii_lowercase())
}

const OLE_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

fn classify(bytes: &[u8]) -> Content {
    // Readers accept the header anywhere in the first KiB, and some
    // generators put junk before it.
    let head = &bytes[..bytes.len().min(1024)];
    if find(head, b"%PDF-").is_some() {
        return Content::Pdf;
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return classify_zip(bytes);
    }
    if bytes.starts_with(OLE_MAGIC) {
        return classify_ole(bytes);
    }
    // Text first: infer also "recognises" text (a Markdown file opening
    // with `<div>` as HTML, `#!` as a shell script) and has two-byte magic
    // numbers ("MZ") that ordinary text can start with.
    if looks_like_text(bytes) {
        return Content::Text;
    }
    match infer::get(bytes) {
        // A type and a MIME type are enough for the user to recognise it.
        Some(t) => Content::Other(format!("a .{} file ({})", t.extension(), t.mime_type())),
        None => Content::Other("binary data, not text".to_owned()),
    }
}

/// Office Open XML and OpenDocument files are ZIP archives told apart by
/// their entries.
fn classify_zip(bytes: &[u8]) -> Content {
    let Ok(mut zip) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return Content::Other("a damaged ZIP archive".to_owned());
    };
    let names: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .map(|n| n.into_owned())
        .collect();
    let has = |name: &str| names.iter().any(|n| n == name);
    if has("word/document.xml") {
        return Content::Docx;
    }
    if has("xl/workbook.xml") {
        return Content::Xlsx;
    }
    if has("ppt/presentation.xml") {
        return Content::Other("a PowerPoint presentation (.pptx)".to_owned());
    }
    if has("mimetype") {
        // The first entry of an OpenDocument file, stored uncompressed; a
        // few hundred bytes at most.
        let mut mime = String::new();
        if let Ok(entry) = zip.by_name("mimetype") {
            let _ = entry.take(256).read_to_string(&mut mime);
        }
        match mime.trim() {
            "application/vnd.oasis.opendocument.spreadsheet" => return Content::Ods,
            "application/vnd.oasis.opendocument.text" => {
                return Content::Other("an OpenDocument text document (.odt)".to_owned());
            }
            "application/vnd.oasis.opendocument.presentation" => {
                return Content::Other("an OpenDocument presentation (.odp)".to_owned());
            }
            _ => {}
        }
    }
    Content::Other("a ZIP archive that is not a Word, Excel or OpenDocument file".to_owned())
}

/// Word 97-2003 and PowerPoint 97-2003 files are OLE compound files too; their
/// main stream names (UTF-16 in the directory) tell them apart without
/// parsing the container.
fn classify_ole(bytes: &[u8]) -> Content {
    let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    if find(bytes, &utf16("WordDocument")).is_some() {
        Content::Other("a Word 97-2003 document (.doc); save it as .docx or PDF".to_owned())
    } else if find(bytes, &utf16("PowerPoint Document")).is_some() {
        Content::Other("a PowerPoint 97-2003 presentation (.ppt)".to_owned())
    } else {
        Content::Xls
    }
}

/// Text if it has a Unicode BOM, or no NUL bytes and few control characters
/// in its first 8 KiB. Bytes 0x80-0xFF are fine: legacy 8-bit encodings are
/// decoded later by charset detection.
fn looks_like_text(bytes: &[u8]) -> bool {
    if encoding_rs::Encoding::for_bom(bytes).is_some() {
        return true;
    }
    let sample = &bytes[..bytes.len().min(8192)];
    if sample.contains(&0) {
        return false;
    }
    let control = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0C | 0x1B))
        .count();
    control * 100 <= sample.len()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
