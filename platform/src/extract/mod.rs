//! Document type detection and text extraction for the knowledge base.
//!
//! The pipeline a worker runs on an uploaded document is:
//!
//! 1. [`sniff`] the file name and bytes: the type is decided by the content
//!    (magic bytes, ZIP entries) *and* the extension, so a renamed or
//!    mislabelled file is refused with a message naming what it really is;
//! 2. [`extract_isolated`] the text, within [`ExtractLimits`], into [`Section`]s that remember their page
//!    (PDF) or sheet (spreadsheets);
//! 3. split the sections with [`crate::chunking::chunk`].
//!
//! Every [`ExtractError`] message is written for end users: it is shown as
//! the reason a document failed. Nothing here touches the network, the
//! database or the file system.

mod archive;
mod docx;
mod pdf;
mod sheets;
mod sniff;
mod table;
mod text;

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

pub use sniff::{SniffStream, sniff};
pub use table::first_table_isolated;

use DocKind as Kind;

/// How long [`extract_isolated`] lets a parser run before giving up on a file.
pub const DEFAULT_EXTRACT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much a document may cost to read. Extraction runs inside the worker
/// process, so this is its memory ceiling: every input a parser expands is
/// bounded before the parser sees it (the file by `DOCUMENT_MAX_BYTES` at
/// upload, a ZIP archive's real unpacked size here, the text produced while
/// it is produced), rather than an address-space rlimit on a child process,
/// which would need a separate executable shipped and found next to every
/// worker (and could not cover the in-process workers the tests run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtractLimits {
    /// How long a parser may run before the file is given up on.
    pub timeout: Duration,
    /// Total unpacked size of a .docx/.xlsx/.ods archive, and of a PDF's
    /// compressed streams (`DOCUMENT_MAX_UNPACKED_BYTES`).
    pub max_unpacked_bytes: u64,
    /// Largest unpacked/packed ratio of one archive entry of 1 MiB or more.
    pub max_ratio: u64,
    /// Entries in one archive.
    pub max_entries: usize,
    /// Text extracted from one document, in UTF-8 bytes
    /// (`DOCUMENT_MAX_TEXT_BYTES`).
    pub max_text_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_EXTRACT_TIMEOUT,
            max_unpacked_bytes: 256 * 1024 * 1024,
            // Office XML compresses 10-30:1; 200:1 only comes from padding.
            max_ratio: 200,
            max_entries: 10_000,
            max_text_bytes: 32 * 1024 * 1024,
        }
    }
}

impl ExtractLimits {
    /// The limits from `DOCUMENT_MAX_UNPACKED_BYTES` and
    /// `DOCUMENT_MAX_TEXT_BYTES`, defaults for the rest.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, crate::config::ConfigError> {
        let number =
            |name: &'static str, default: u64| -> Result<u64, crate::config::ConfigError> {
                let Some(raw) = lookup(name).filter(|v| !v.trim().is_empty()) else {
                    return Ok(default);
                };
                raw.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v >= 1024)
                    .ok_or_else(|| crate::config::ConfigError::Invalid {
                        name,
                        reason: format!("'{raw}' is not a number of bytes of at least 1024"),
                    })
            };
        let d = Self::default();
        Ok(Self {
            max_unpacked_bytes: number("DOCUMENT_MAX_UNPACKED_BYTES", d.max_unpacked_bytes)?,
            max_text_bytes: number("DOCUMENT_MAX_TEXT_BYTES", d.max_text_bytes)?,
            ..d
        })
    }
}

/// A supported document type, as decided by [`sniff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocKind {
    Pdf,
    Docx,
    Txt,
    Markdown,
    Csv,
    Xlsx,
    Xls,
    Ods,
}

impl DocKind {
    /// A short, stable lowercase name (`"pdf"`, `"docx"`, …) for storage,
    /// metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Docx => "docx",
            Self::Txt => "txt",
            Self::Markdown => "md",
            Self::Csv => "csv",
            Self::Xlsx => "xlsx",
            Self::Xls => "xls",
            Self::Ods => "ods",
        }
    }

    /// Whether the text comes out one section per sheet.
    pub fn is_spreadsheet(self) -> bool {
        matches!(self, Self::Xlsx | Self::Xls | Self::Ods)
    }

    /// The name end users know the type by, for messages.
    fn describe(self) -> &'static str {
        match self {
            Self::Pdf => "a PDF document",
            Self::Docx => "a Word document (.docx)",
            Self::Txt => "a text file",
            Self::Markdown => "a Markdown file",
            Self::Csv => "a CSV file",
            Self::Xlsx => "an Excel workbook (.xlsx)",
            Self::Xls => "an Excel 97-2003 workbook (.xls)",
            Self::Ods => "an OpenDocument spreadsheet (.ods)",
        }
    }
}

impl fmt::Display for DocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of text and where it came from in the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub text: String,
    /// 1-based page number, for PDFs.
    pub page: Option<u32>,
    /// Sheet name, for spreadsheets.
    pub sheet: Option<String>,
}

/// The text of a document, in reading order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Never empty, and no section has blank text.
    pub sections: Vec<Section>,
    /// Number of pages, for PDFs (pages without text included).
    pub pages: Option<u32>,
    /// Number of sheets, for spreadsheets (empty sheets included).
    pub sheets: Option<u32>,
}

impl Extracted {
    /// Total number of characters (Unicode scalar values) of text.
    pub fn char_count(&self) -> usize {
        self.sections.iter().map(|s| s.text.chars().count()).sum()
    }
}

/// Why a document was refused or could not be read. The messages are shown
/// to end users as the reason a document failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("\"{file}\": the file is empty")]
    Empty { file: String },
    /// The extension, or the content when there is no extension, is not one
    /// of the supported types.
    #[error(
        "\"{file}\" is not a supported document type (it is {found}); supported are PDF, Word (.docx), text (.txt, .md), CSV, Excel (.xlsx, .xls) and OpenDocument (.ods) spreadsheets"
    )]
    Unsupported { file: String, found: String },
    /// The content does not match the extension.
    #[error("\"{file}\" is named as {expected} but its content is {found}")]
    Mismatch {
        file: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "the PDF is encrypted or password-protected; remove the protection and upload it again"
    )]
    Encrypted,
    /// The parser for the type refused the content.
    #[error("{} is damaged and cannot be read ({detail})", capitalized(.kind.describe()))]
    Damaged { kind: DocKind, detail: String },
    /// The parser crashed or ran out of time; the reason is user-facing.
    #[error("the document could not be read: {0}")]
    Unreadable(String),
    #[error("{}", no_text_message(*.0))]
    NoText(DocKind),
    /// Reading it would cost more than [`ExtractLimits`] allow.
    #[error("{0}")]
    TooLarge(String),
}

impl ExtractError {
    /// True for the errors [`sniff`] returns when the type is not accepted
    /// (the api answers these with 415 Unsupported Media Type).
    pub fn is_unsupported_type(&self) -> bool {
        matches!(self, Self::Unsupported { .. } | Self::Mismatch { .. })
    }

    /// The file's content is not what its name says.
    pub fn is_type_mismatch(&self) -> bool {
        matches!(self, Self::Mismatch { .. })
    }

    fn damaged(kind: DocKind, detail: impl fmt::Display) -> Self {
        Self::Damaged {
            kind,
            detail: detail.to_string(),
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn no_text_message(kind: DocKind) -> &'static str {
    match kind {
        Kind::Pdf => "no text could be extracted (scanned PDF?): the PDF has no text layer",
        _ => "no text could be extracted: the document contains no text",
    }
}

/// Extracts the text of `bytes`, already identified as `kind` by [`sniff`],
/// within the default [`ExtractLimits`].
///
/// Runs on the calling thread and may panic or take very long on hostile
/// input (third-party parsers); workers use [`extract_isolated`].
pub fn extract(kind: DocKind, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    extract_within(kind, bytes, &ExtractLimits::default())
}

/// [`extract`] within `limits`: archives are checked before they are opened
/// and text stops at `max_text_bytes`.
pub fn extract_within(
    kind: DocKind,
    bytes: &[u8],
    limits: &ExtractLimits,
) -> Result<Extracted, ExtractError> {
    match kind {
        Kind::Docx | Kind::Xlsx | Kind::Ods => archive::check(kind, bytes, limits)?,
        Kind::Pdf => pdf::check_streams(bytes, limits.max_unpacked_bytes)?,
        _ => {}
    }
    let mut extracted = match kind {
        Kind::Pdf => pdf::extract(bytes, limits.max_text_bytes)?,
        Kind::Docx => docx::extract(bytes)?,
        Kind::Txt | Kind::Markdown => text::extract_plain(bytes),
        Kind::Csv => text::extract_csv(bytes)?,
        Kind::Xlsx | Kind::Xls | Kind::Ods => sheets::extract(kind, bytes)?,
    };
    check_text_size(&extracted.sections, limits.max_text_bytes)?;
    for section in &mut extracted.sections {
        section.text = tidy(&section.text);
    }
    extracted.sections.retain(|s| !s.text.is_empty());
    if extracted.sections.is_empty() {
        return Err(ExtractError::NoText(kind));
    }
    Ok(extracted)
}

/// Stops a document whose text would flood chunking, embedding and the
/// index (and the worker's memory) with a reason the user can act on.
fn check_text_size(sections: &[Section], max: u64) -> Result<(), ExtractError> {
    let total: u64 = sections.iter().map(|s| s.text.len() as u64).sum();
    if total > max {
        return Err(ExtractError::TooLarge(format!(
            "the document contains more than {} of text, the limit per document; split it into smaller files",
            archive::human(max)
        )));
    }
    Ok(())
}

/// [`extract_within`] on a blocking thread, with panics caught and a time
/// limit, so a malformed file only yields [`ExtractError::Unreadable`].
///
/// pdf-extract panics on malformed PDFs by design, and the other parsers are
/// not guaranteed not to, so every format goes through here. Limits:
/// - a panic still prints its message on stderr through the process-wide
///   panic hook (installing a quieter hook would silence every other panic
///   of the process, so none is installed here);
/// - on timeout the parser thread cannot be killed: it is abandoned and keeps
///   its blocking-pool slot and memory until the parser returns;
/// - a stack overflow aborts the process (it is not a panic).
pub async fn extract_isolated(
    kind: DocKind,
    bytes: Vec<u8>,
    limits: ExtractLimits,
) -> Result<Extracted, ExtractError> {
    isolated(kind, limits.timeout, move || {
        extract_within(kind, &bytes, &limits)
    })
    .await
}

/// Runs a parser of `kind` on a blocking thread, panics caught, within
/// `timeout` (see [`extract_isolated`] for what that cannot cover).
async fn isolated<T: Send + 'static>(
    kind: DocKind,
    timeout: Duration,
    parse: impl FnOnce() -> Result<T, ExtractError> + Send + 'static,
) -> Result<T, ExtractError> {
    let task = tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(parse)));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(result))) => result,
        Ok(Ok(Err(panic))) => {
            tracing::warn!(
                kind = kind.as_str(),
                panic = panic_message(panic.as_ref()),
                "document parser panicked"
            );
            Err(ExtractError::Unreadable(format!(
                "the {} reader failed on this file, which is probably damaged",
                kind.as_str().to_uppercase()
            )))
        }
        // The task was cancelled or panicked outside catch_unwind: only
        // possible while the runtime shuts down.
        Ok(Err(join)) => Err(ExtractError::Unreadable(format!(
            "the reader was interrupted ({join})"
        ))),
        Err(_) => Err(ExtractError::Unreadable(format!(
            "reading it took longer than {} s; the file may be damaged or too complex",
            timeout.as_secs_f64().ceil()
        ))),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

/// Normalises extracted text: line endings to `\n`, no trailing spaces, at
/// most one blank line in a row, no NULs (MongoDB and the embedder would
/// choke on them) and no blank lines at the ends. Chunking relies on blank
/// lines meaning paragraph breaks.
fn tidy(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace(['\r', '\u{c}'], "\n");
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0usize;
    for line in text.split('\n') {
        let line = line.trim_end().replace('\0', "");
        if line.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(&line);
    }
    out
}

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
#[cfg(test)]
mod tests;
