//! Deciding a document's type from its name and its bytes, either whole
//! ([`sniff`], the worker) or as they stream in ([`SniffStream`], the api,
//! which never holds a whole upload in memory).

use std::io::{self, Cursor, Read, Seek, SeekFrom};

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
    if bytes.is_empty() {
        return Err(ExtractError::Empty {
            file: display_name(filename),
        });
    }
    let content = classify(
        bytes,
        || classify_zip(Cursor::new(bytes)),
        || {
            ole_content(
                find(bytes, &utf16(WORD_STREAM)),
                find(bytes, &utf16(PPT_STREAM)),
            )
        },
    );
    decide(filename, &content)
}

/// How much of the start of a streamed file [`SniffStream`] keeps: the
/// text test reads 8 KiB, the PDF header is in the first KiB and an
/// OpenDocument `mimetype` entry within the first hundred bytes.
const HEAD_BYTES: usize = 64 * 1024;
/// How much of the end of a streamed file [`SniffStream`] keeps: a ZIP's
/// central directory (the list of its entries) is at the end, about 80
/// bytes per entry, so 1 MiB holds more entries than
/// [`super::ExtractLimits::max_entries`] lets through anyway.
const TAIL_BYTES: usize = 1024 * 1024;

const WORD_STREAM: &str = "WordDocument";
const PPT_STREAM: &str = "PowerPoint Document";

/// [`sniff`] for a file that arrives in chunks, holding at most
/// `HEAD_BYTES + 2 * TAIL_BYTES` of it: the start (magic bytes, text test),
/// the end (a ZIP's central directory, read through the zip crate as if it
/// were the whole file) and, for OLE compound files, whether the Word or
/// PowerPoint stream names went by.
///
/// For ZIP-based types the entries are read from the central directory
/// only; the worker runs [`sniff`] on the whole file and checks the archive
/// (`ExtractLimits`) before any parser reads it, so a file whose end and
/// body disagree fails there with a reason.
#[derive(Debug, Default)]
pub struct SniffStream {
    head: Vec<u8>,
    tail: Vec<u8>,
    len: u64,
    /// The last bytes of the previous chunk, so a stream name split across
    /// two chunks is still found.
    carry: Vec<u8>,
    word: bool,
    ppt: bool,
}

impl SniffStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        if chunk.len() >= TAIL_BYTES {
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk[chunk.len() - TAIL_BYTES..]);
        } else {
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > 2 * TAIL_BYTES {
                self.tail.drain(..self.tail.len() - TAIL_BYTES);
            }
        }
        self.len += chunk.len() as u64;
        if self.head.starts_with(OLE_MAGIC) && !(self.word && self.ppt) {
            let word = utf16(WORD_STREAM);
            let ppt = utf16(PPT_STREAM);
            let keep = ppt.len().max(word.len()) - 1;
            let mut window = std::mem::take(&mut self.carry);
            window.extend_from_slice(chunk);
            self.word |= find(&window, &word).is_some();
            self.ppt |= find(&window, &ppt).is_some();
            self.carry = window[window.len().saturating_sub(keep)..].to_vec();
        }
    }

    /// The type of everything fed, decided like [`sniff`] decides it.
    pub fn finish(&self, filename: &str) -> Result<DocKind, ExtractError> {
        if self.len == 0 {
            return Err(ExtractError::Empty {
                file: display_name(filename),
            });
        }
        let tail_len = self.tail.len().min(TAIL_BYTES);
        let partial = PartialFile {
            head: &self.head,
            tail: &self.tail[self.tail.len() - tail_len..],
            len: self.len,
            pos: 0,
        };
        let content = classify(
            &self.head,
            || classify_zip(partial),
            || ole_content(self.word.then_some(0), self.ppt.then_some(0)),
        );
        decide(filename, &content)
    }
}

/// A file of which only the start and the end are known, readable and
/// seekable like the whole file; reading the unknown middle is an error
/// (the zip crate then reports the archive as unreadable).
struct PartialFile<'a> {
    head: &'a [u8],
    tail: &'a [u8],
    len: u64,
    pos: u64,
}

impl Read for PartialFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let tail_start = self.len - self.tail.len() as u64;
        let (source, offset) = if self.pos < self.head.len() as u64 {
            (self.head, self.pos)
        } else if self.pos >= tail_start {
            (self.tail, self.pos - tail_start)
        } else {
            return Err(io::Error::other(
                "the middle of the file was not kept for sniffing",
            ));
        };
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        let n = buf.len().min(source.len() - offset);
        buf[..n].copy_from_slice(&source[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PartialFile<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}

/// The type the name and the content agree on, or why not.
fn decide(filename: &str, content: &Content) -> Result<DocKind, ExtractError> {
    let file = display_name(filename);
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
    let accepted = match (named, content) {
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

/// What `head` (the start of the file, at least its first 8 KiB when it is
/// longer) is; ZIP archives and OLE compound files are told apart by
/// `zip` and `ole`, which see more of the file.
fn classify(head: &[u8], zip: impl FnOnce() -> Content, ole: impl FnOnce() -> Content) -> Content {
    // Readers accept the header anywhere in the first KiB, and some
    // generators put junk before it.
    let first_kib = &head[..head.len().min(1024)];
    if find(first_kib, b"%PDF-").is_some() {
        return Content::Pdf;
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return zip();
    }
    if head.starts_with(OLE_MAGIC) {
        return ole();
    }
    // Text first: infer also "recognises" text (a Markdown file opening
    // with `<div>` as HTML, `#!` as a shell script) and has two-byte magic
    // numbers ("MZ") that ordinary text can start with.
    if looks_like_text(head) {
        return Content::Text;
    }
    match infer::get(head) {
        // A type and a MIME type are enough for the user to recognise it.
        Some(t) => Content::Other(format!("a .{} file ({})", t.extension(), t.mime_type())),
        None => Content::Other("binary data, not text".to_owned()),
    }
}

/// Office Open XML and OpenDocument files are ZIP archives told apart by
/// their entries.
fn classify_zip(file: impl Read + Seek) -> Content {
    let Ok(mut zip) = zip::ZipArchive::new(file) else {
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
/// main stream names (UTF-16 in the directory, found anywhere in the file)
/// tell them apart without parsing the container.
fn ole_content(word: Option<usize>, ppt: Option<usize>) -> Content {
    if word.is_some() {
        Content::Other("a Word 97-2003 document (.doc); save it as .docx or PDF".to_owned())
    } else if ppt.is_some() {
        Content::Other("a PowerPoint 97-2003 presentation (.ppt)".to_owned())
    } else {
        Content::Xls
    }
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
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
