//! Real documents generated in code, for tests here and in the end-to-end
//! suite (feature `fixtures`): PDFs with lopdf, Word files with docx-rs,
//! workbooks with rust_xlsxwriter, and raw ZIPs.
// Fixture builders run on constant input; a failure is a bug in the test.
#![allow(clippy::unwrap_used)]

use std::io::{Cursor, Write};

/// A valid PDF with one page per entry of `pages`, each line set in
/// Helvetica (a standard Type1 font, no embedding needed).
pub fn pdf_with_pages(pages: &[&[&str]]) -> Vec<u8> {
    let contents: Vec<Vec<u8>> = pages
        .iter()
        .map(|lines| {
            let mut ops = String::from("BT /F1 12 Tf 72 720 Td 14 TL\n");
            for line in *lines {
                ops.push_str(&format!("({line}) Tj T*\n"));
            }
            ops.push_str("ET\n");
            ops.into_bytes()
        })
        .collect();
    pdf_with_contents(&contents)
}

/// A PDF whose pages have the given raw content streams.
pub fn pdf_with_contents(contents: &[Vec<u8>]) -> Vec<u8> {
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut kids: Vec<Object> = Vec::new();
    for content in contents {
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.clone()));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        });
        kids.push(page_id.into());
    }
    let count = i64::try_from(kids.len()).unwrap();
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => count,
        }),
    );
    let catalog_id = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

pub fn three_page_pdf() -> Vec<u8> {
    pdf_with_pages(&[
        &[
            "Refund policy overview.",
            "Refunds are issued within 14 days.",
        ],
        &["Shipping takes 3 to 5 business days."],
        &["Contact support at the help desk."],
    ])
}

pub fn docx_fixture() -> Vec<u8> {
    use docx_rs::{Docx, Paragraph, Run, Table, TableCell, TableRow};
    let cell =
        |t: &str| TableCell::new().add_paragraph(Paragraph::new().add_run(Run::new().add_text(t)));
    let mut out = Cursor::new(Vec::new());
    Docx::new()
        .add_paragraph(Paragraph::new().add_run(Run::new().add_text("Opening hours")))
        .add_paragraph(
            Paragraph::new()
                .add_run(Run::new().add_text("We are open "))
                .add_run(Run::new().add_text("Monday to Friday.").bold()),
        )
        .add_table(Table::new(vec![
            TableRow::new(vec![cell("Day"), cell("Hours")]),
            TableRow::new(vec![cell("Saturday"), cell("10-14")]),
        ]))
        .add_paragraph(Paragraph::new().add_run(Run::new().add_text("Café crème costs 3 €.")))
        .build()
        .pack(&mut out)
        .unwrap();
    out.into_inner()
}

pub fn xlsx_fixture() -> Vec<u8> {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let mut wb = Workbook::new();
    let prices = wb.add_worksheet().set_name("Prices").unwrap();
    prices.write_string(0, 0, "Product").unwrap();
    prices.write_string(0, 1, "Price").unwrap();
    prices.write_string(0, 2, "Since").unwrap();
    prices.write_string(1, 0, "Basic plan").unwrap();
    prices.write_number(1, 1, 10).unwrap();
    let date = ExcelDateTime::from_ymd(2024, 3, 15).unwrap();
    prices
        .write_datetime_with_format(1, 2, &date, &Format::new().set_num_format("yyyy-mm-dd"))
        .unwrap();
    prices.write_string(2, 0, "Pro plan").unwrap();
    prices.write_number(2, 1, 24.5).unwrap();
    wb.add_worksheet().set_name("Empty").unwrap();
    let faq = wb.add_worksheet().set_name("FAQ").unwrap();
    // The header is the first non-empty row, wherever it is.
    faq.write_string(2, 1, "Question").unwrap();
    faq.write_string(2, 2, "Answer").unwrap();
    faq.write_string(3, 1, "Do you ship abroad?").unwrap();
    faq.write_string(3, 2, "Yes, to the EU.").unwrap();
    wb.save_to_buffer().unwrap()
}

pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(*name, stored).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A minimal OpenDocument spreadsheet, written by hand (no ODS writer crate
/// is needed for two sheets).
pub fn ods_fixture() -> Vec<u8> {
    let content = r#"<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">
<office:body><office:spreadsheet>
<table:table table:name="Stock">
<table:table-row><table:table-cell office:value-type="string"><text:p>Item</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>Count</text:p></table:table-cell></table:table-row>
<table:table-row><table:table-cell office:value-type="string"><text:p>Chairs</text:p></table:table-cell><table:table-cell office:value-type="float" office:value="12"><text:p>12</text:p></table:table-cell></table:table-row>
</table:table>
</office:spreadsheet></office:body></office:document-content>"#;
    let manifest = r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">
<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>
<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
</manifest:manifest>"#;
    zip_of(&[
        (
            "mimetype",
            b"application/vnd.oasis.opendocument.spreadsheet",
        ),
        ("META-INF/manifest.xml", manifest.as_bytes()),
        ("content.xml", content.as_bytes()),
    ])
}

/// Deterministic noise (xorshift), so failures reproduce.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// A .docx whose `word/document.xml` is `unpacked` bytes of zeros, deflated
/// (1 GiB packs to about 1 MiB): a decompression bomb, built in memory.
pub fn docx_bomb(unpacked: u64) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let deflated = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(unpacked >= u64::from(u32::MAX));
    zip.start_file("[Content_Types].xml", deflated).unwrap();
    zip.write_all(br#"<?xml version="1.0"?><Types/>"#).unwrap();
    zip.start_file("word/document.xml", deflated).unwrap();
    let zeros = vec![0u8; 1024 * 1024];
    let mut left = unpacked;
    while left > 0 {
        let n = left.min(zeros.len() as u64);
        zip.write_all(&zeros[..n as usize]).unwrap();
        left -= n;
    }
    zip.finish().unwrap().into_inner()
}

/// `zip` with the declared (central directory and local header)
/// uncompressed size of `entry` replaced by `size`: an archive that lies.
pub fn with_declared_size(mut zip: Vec<u8>, entry: &str, size: u32) -> Vec<u8> {
    let name = entry.as_bytes();
    let mut i = 0;
    while i + 46 <= zip.len() {
        let sig = &zip[i..i + 4];
        let (header, name_at) = match sig {
            b"PK\x03\x04" => (30, 26),
            b"PK\x01\x02" => (46, 28),
            _ => {
                i += 1;
                continue;
            }
        };
        let len = usize::from(u16::from_le_bytes([zip[i + name_at], zip[i + name_at + 1]]));
        if zip.get(i + header..i + header + len) == Some(name) {
            let at = if header == 30 { i + 22 } else { i + 24 };
            zip[at..at + 4].copy_from_slice(&size.to_le_bytes());
        }
        i += 4;
    }
    zip
}
