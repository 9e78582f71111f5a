//! Spreadsheets (.xlsx, .xls, .ods) with calamine: one section per sheet of
//! header-labelled rows.

use std::io::Cursor;

use calamine::{Data, Ods, Range, Reader, Xls, Xlsx};

use super::text::labelled_rows;
use super::{DocKind, ExtractError, Extracted, Section};

pub(super) fn extract(kind: DocKind, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let cursor = Cursor::new(bytes);
    let damaged = |e: &dyn std::fmt::Display| ExtractError::damaged(kind, e);
    let ranges = match kind {
        DocKind::Xlsx => read_all(Xlsx::new(cursor).map_err(|e| damaged(&e))?, kind)?,
        DocKind::Xls => read_all(Xls::new(cursor).map_err(|e| damaged(&e))?, kind)?,
        DocKind::Ods => read_all(Ods::new(cursor).map_err(|e| damaged(&e))?, kind)?,
        _ => return Err(damaged(&"not a spreadsheet")),
    };
    let sheets = u32::try_from(ranges.len()).unwrap_or(u32::MAX);
    let sections = ranges
        .into_iter()
        .map(|(name, range)| Section {
            text: labelled_rows(range.rows().map(|row| row.iter().map(cell_text).collect())),
            page: None,
            sheet: Some(name),
        })
        .collect();
    Ok(Extracted {
        sections,
        pages: None,
        sheets: Some(sheets),
    })
}

fn read_all<R, RS>(
    mut workbook: R,
    kind: DocKind,
) -> Result<Vec<(String, Range<Data>)>, ExtractError>
where
    RS: std::io::Read + std::io::Seek,
    R: Reader<RS>,
    R::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    for name in workbook.sheet_names() {
        let range = workbook
            .worksheet_range(&name)
            .map_err(|e| ExtractError::damaged(kind, format!("sheet \"{name}\": {e}")))?;
        out.push((name, range));
    }
    Ok(out)
}

/// Cell values as a person reads them: whole numbers without ".0", dates as
/// ISO dates (calamine alone would print the serial number).
pub(super) fn cell_text(cell: &Data) -> String {
    match cell {
        Data::String(s) => s.clone(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::DateTime(dt) if dt.is_datetime() => {
            let (y, mo, d, h, mi, s, _) = dt.to_ymd_hms_milli();
            if (h, mi, s) == (0, 0, 0) {
                format!("{y:04}-{mo:02}-{d:02}")
            } else if dt.as_f64() < 1.0 {
                format!("{h:02}:{mi:02}:{s:02}")
            } else {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
            }
        }
        other => other.to_string(),
    }
}
