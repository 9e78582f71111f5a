//! Decompression-bomb checks for the ZIP-based formats (.docx, .xlsx,
//! .ods), run before any parser opens the archive.
//!
//! The declared sizes in the central directory are checked first (entry
//! count, total size, per-entry ratio), then every entry is inflated into
//! nothing while counting: the zip crate stops an entry that produces more
//! than it declared, and the count stops the whole at the limit. Parsers
//! (docx-rs reads through an older zip crate that trusts declared sizes)
//! therefore only ever see archives whose real expanded size is known and
//! bounded. The cost is one bounded inflate pass, well under a second for
//! the default limit.

use std::io::{self, Cursor, Read};

use super::{DocKind, ExtractError, ExtractLimits};

/// Entries smaller than this are not ratio-checked: a few KiB of XML
/// compresses far beyond any sane ratio and cannot hurt anyway.
const RATIO_FLOOR: u64 = 1024 * 1024;

pub(super) fn check(
    kind: DocKind,
    bytes: &[u8],
    limits: &ExtractLimits,
) -> Result<(), ExtractError> {
    let mut zip =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| ExtractError::damaged(kind, e))?;
    if zip.len() > limits.max_entries {
        return Err(ExtractError::TooLarge(format!(
            "the file contains {} parts, more than the {} allowed; it may be a decompression bomb",
            zip.len(),
            limits.max_entries
        )));
    }
    let max = limits.max_unpacked_bytes;
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| ExtractError::damaged(kind, e))?;
        let size = entry.size();
        declared = declared.saturating_add(size);
        let packed = entry.compressed_size().max(1);
        if size >= RATIO_FLOOR && size / packed > limits.max_ratio {
            return Err(ExtractError::TooLarge(format!(
                "\"{}\" inside the file is compressed {}:1 (from {} to {}), more than the {}:1 a real document reaches; it looks like a decompression bomb and was not opened",
                entry_name(&entry),
                size / packed,
                human(packed),
                human(size),
                limits.max_ratio
            )));
        }
    }
    if declared > max {
        return Err(too_big(max));
    }
    // Declared sizes can lie: inflate for real, bounded.
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| ExtractError::damaged(kind, e))?;
        let name = entry_name(&entry);
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ExtractError::damaged(kind, format!("\"{name}\": {e}")));
                }
            };
            total += n as u64;
            if total > max {
                return Err(too_big(max));
            }
        }
    }
    Ok(())
}

/// An entry's name for messages, bounded (archives say anything).
fn entry_name<R: Read>(entry: &zip::read::ZipFile<'_, R>) -> String {
    let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
    if name.chars().count() > 80 {
        format!("{}...", name.chars().take(77).collect::<String>())
    } else {
        name
    }
}

pub(super) fn too_big(max: u64) -> ExtractError {
    ExtractError::TooLarge(format!(
        "the file expands to more than {} when unpacked, the limit per document; split it into smaller files",
        human(max)
    ))
}

/// Sizes as people read them: "1.5 MB", "900 KB".
pub(super) fn human(bytes: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if bytes >= MB {
        let tenths = bytes * 10 / MB;
        if tenths.is_multiple_of(10) {
            format!("{} MB", tenths / 10)
        } else {
            format!("{}.{} MB", tenths / 10, tenths % 10)
        }
    } else {
        format!("{} KB", bytes.div_ceil(1024))
    }
}
