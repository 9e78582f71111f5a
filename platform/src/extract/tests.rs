//! Extraction tests on real files generated here (lopdf, docx-rs,
//! rust_xlsxwriter, zip) and on damaged and mislabelled ones.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::fixtures::*;
use super::*;

// ---------------------------------------------------------------- fixtures

async fn isolated(kind: DocKind, bytes: Vec<u8>) -> Result<Extracted, ExtractError> {
    let limits = ExtractLimits {
        timeout: Duration::from_secs(30),
        ..ExtractLimits::default()
    };
    extract_isolated(kind, bytes, limits).await
}

// ------------------------------------------------------------------- sniff

#[test]
fn sniff_accepts_each_supported_type() {
    assert_eq!(sniff("report.pdf", &three_page_pdf()), Ok(DocKind::Pdf));
    assert_eq!(sniff("Policy.DOCX", &docx_fixture()), Ok(DocKind::Docx));
    assert_eq!(sniff("prices.xlsx", &xlsx_fixture()), Ok(DocKind::Xlsx));
    assert_eq!(sniff("stock.ods", &ods_fixture()), Ok(DocKind::Ods));
    assert_eq!(sniff("notes.txt", b"hello"), Ok(DocKind::Txt));
    assert_eq!(
        sniff("README.md", b"# Title\n\ntext"),
        Ok(DocKind::Markdown)
    );
    assert_eq!(sniff("data.csv", b"a,b\n1,2\n"), Ok(DocKind::Csv));
    assert_eq!(sniff("latin.txt", b"caf\xe9 cr\xe8me"), Ok(DocKind::Txt));
    assert_eq!(sniff("utf16.txt", b"\xff\xfeh\0i\0"), Ok(DocKind::Txt));
    // An OLE compound file that is no Word/PowerPoint file: Excel 97-2003.
    let mut ole = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    ole.extend(noise(600, 3).iter().map(|b| b | 1));
    assert_eq!(sniff("old.xls", &ole), Ok(DocKind::Xls));
}

#[test]
fn sniff_uses_content_when_there_is_no_extension_and_real_spreadsheet_type() {
    assert_eq!(sniff("upload", &three_page_pdf()), Ok(DocKind::Pdf));
    assert_eq!(sniff("C:\\docs\\notes", b"plain words"), Ok(DocKind::Txt));
    // An .xlsx saved as .xls is read as what it is.
    assert_eq!(sniff("prices.xls", &xlsx_fixture()), Ok(DocKind::Xlsx));
}

#[test]
fn sniff_accepts_text_that_looks_like_other_formats() {
    for text in [
        "<div align=\"center\">\n# Project\n</div>",
        "<?xml version=\"1.0\"?><note>text</note>",
        "#!/bin/sh\necho hi",
        "MZ sales report for March",
        "ID3 tags explained",
    ] {
        assert_eq!(
            sniff("readme.md", text.as_bytes()),
            Ok(DocKind::Markdown),
            "{text}"
        );
    }
}

#[test]
fn sniff_refuses_empty_file() {
    let err = sniff("empty.pdf", b"").unwrap_err();
    assert_eq!(err.to_string(), "\"empty.pdf\": the file is empty");
    assert!(!err.is_unsupported_type());
}

#[test]
fn sniff_refuses_zip_that_is_not_a_word_document() {
    let zip = zip_of(&[("hello.txt", b"hi")]);
    let err = sniff("contract.docx", &zip).unwrap_err();
    assert!(err.is_unsupported_type());
    let msg = err.to_string();
    assert!(msg.contains("\"contract.docx\""), "{msg}");
    assert!(msg.contains("a Word document"), "{msg}");
    assert!(msg.contains("a ZIP archive that is not a Word"), "{msg}");
}

#[test]
fn sniff_refuses_pdf_named_docx_and_zip_named_pdf() {
    let msg = sniff("letter.docx", &three_page_pdf())
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "\"letter.docx\" is named as a Word document (.docx) but its content is a PDF document"
    );
    let msg = sniff("scan.pdf", &docx_fixture()).unwrap_err().to_string();
    assert_eq!(
        msg,
        "\"scan.pdf\" is named as a PDF document but its content is a Word document (.docx)"
    );
}

#[test]
fn sniff_refuses_binary_named_txt() {
    let mut bytes = b"\x7fELF\x02\x01\x01\0".to_vec();
    bytes.extend(noise(2000, 7));
    let err = sniff("notes.txt", &bytes).unwrap_err();
    assert!(err.is_unsupported_type());
    assert!(
        err.to_string()
            .contains("\"notes.txt\" is named as a text file"),
        "{err}"
    );

    let err = sniff("notes.txt", &noise(4096, 11)).unwrap_err();
    assert!(err.to_string().contains("binary data, not text"), "{err}");
}

#[test]
fn sniff_names_recognised_unsupported_content() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";
    let msg = sniff("photo.png", png).unwrap_err().to_string();
    assert!(
        msg.contains("\"photo.png\" is not a supported document type"),
        "{msg}"
    );
    assert!(msg.contains("image/png"), "{msg}");
    let msg = sniff("photo.txt", png).unwrap_err().to_string();
    assert!(msg.contains("image/png"), "{msg}");
    let msg = sniff("blob", &noise(100, 5)).unwrap_err().to_string();
    assert!(msg.contains("not a supported document type"), "{msg}");
}

#[test]
fn sniff_tells_legacy_word_from_excel() {
    let mut doc = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    doc.extend(vec![0u8; 100]);
    doc.extend("WordDocument".encode_utf16().flat_map(u16::to_le_bytes));
    let msg = sniff("old.xls", &doc).unwrap_err().to_string();
    assert!(msg.contains("Word 97-2003 document (.doc)"), "{msg}");
    let msg = sniff("old.doc", &doc).unwrap_err().to_string();
    assert!(msg.contains("not a supported document type"), "{msg}");
}

#[test]
fn sniff_bounds_the_name_in_messages() {
    let name = format!("{}.docx", "x".repeat(500));
    let msg = sniff(&name, &three_page_pdf()).unwrap_err().to_string();
    assert!(msg.len() < 300, "{msg}");
    let msg = sniff("/etc/secret/dir/file.docx", &three_page_pdf())
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("\"file.docx\""), "{msg}");
}

// ----------------------------------------------------------------- extract

#[tokio::test]
async fn pdf_text_comes_out_per_page() {
    let out = isolated(DocKind::Pdf, three_page_pdf()).await.unwrap();
    assert_eq!(out.pages, Some(3));
    assert_eq!(out.sheets, None);
    let pages: Vec<Option<u32>> = out.sections.iter().map(|s| s.page).collect();
    assert_eq!(pages, [Some(1), Some(2), Some(3)]);
    let text = |i: usize| {
        out.sections[i]
            .text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(text(0).contains("Refund policy overview."), "{}", text(0));
    assert!(
        text(0).contains("Refunds are issued within 14 days."),
        "{}",
        text(0)
    );
    assert!(!text(0).contains("Shipping"));
    assert!(
        text(1).contains("Shipping takes 3 to 5 business days."),
        "{}",
        text(1)
    );
    assert!(
        text(2).contains("Contact support at the help desk."),
        "{}",
        text(2)
    );
}

/// Pages whose fonts differ under the same resource name, share one font
/// object under different names, or define a font inline: our pdf-extract
/// patch builds a font once per object for the whole document, and must
/// still read each page with the font that page names.
fn pdf_with_fonts() -> Vec<u8> {
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let plain = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    // Code 97 ("a") drawn as the glyph "b".
    let a_as_b = dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        "Encoding" => dictionary! {
            "BaseEncoding" => "WinAnsiEncoding",
            "Differences" => vec![97.into(), Object::Name(b"b".to_vec())],
        },
    };
    let differences = doc.add_object(a_as_b.clone());
    // A ToUnicode map for code 97 only: "a" reads as "X", the other codes
    // through the encoding.
    let cmap = b"/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
        1 begincodespacerange\n<00> <FF>\nendcodespacerange\n\
        1 beginbfchar\n<61> <0058>\nendbfchar\nendcmap\nend\nend\n";
    let to_unicode = doc.add_object(Stream::new(dictionary! {}, cmap.to_vec()));
    let mapped = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding", "ToUnicode" => to_unicode,
    });
    let pages: Vec<(lopdf::Dictionary, &[u8])> = vec![
        (
            dictionary! { "F1" => plain },
            b"BT /F1 12 Tf 72 720 Td (abc) Tj ET",
        ),
        (
            dictionary! { "F1" => differences },
            b"BT /F1 12 Tf 72 720 Td (abc) Tj ET",
        ),
        (
            dictionary! { "F1" => differences, "F2" => plain },
            b"BT /F2 12 Tf 72 720 Td (abc) Tj /F1 12 Tf 0 -20 Td (abc) Tj ET",
        ),
        (
            dictionary! { "F1" => mapped },
            b"BT /F1 12 Tf 72 720 Td (abc) Tj ET",
        ),
        (
            dictionary! { "F9" => plain },
            b"BT /F9 12 Tf 72 720 Td (caf\\351 \\200 \\222s) Tj ET",
        ),
        (
            dictionary! { "F1" => a_as_b },
            b"BT /F1 12 Tf 72 720 Td (inline a) Tj ET",
        ),
    ];
    let mut kids: Vec<Object> = Vec::new();
    for (fonts, content) in pages {
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.to_vec()));
        kids.push(
            doc.add_object(dictionary! {
                "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
                "Resources" => dictionary! { "Font" => fonts },
                "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
            })
            .into(),
        );
    }
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Count" => 6, "Kids" => kids }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

#[tokio::test]
async fn pdf_pages_are_read_with_the_fonts_they_name() {
    let out = isolated(DocKind::Pdf, pdf_with_fonts()).await.unwrap();
    let pages: Vec<String> = out
        .sections
        .iter()
        .map(|s| s.text.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        pages,
        ["abc", "bbc", "abc bbc", "Xbc", "café € ’s", "inline b"],
        "one text per page"
    );
}

#[tokio::test]
async fn pdf_blank_pages_are_counted_but_yield_no_section() {
    let pdf = pdf_with_pages(&[&["First page."], &[], &["Third page."]]);
    let out = isolated(DocKind::Pdf, pdf).await.unwrap();
    assert_eq!(out.pages, Some(3));
    let pages: Vec<Option<u32>> = out.sections.iter().map(|s| s.page).collect();
    assert_eq!(pages, [Some(1), Some(3)]);
}

#[tokio::test]
async fn pdf_without_text_is_reported_as_scanned() {
    let pdf = pdf_with_pages(&[&[], &[]]);
    let err = isolated(DocKind::Pdf, pdf).await.unwrap_err();
    assert_eq!(err, ExtractError::NoText(DocKind::Pdf));
    assert!(
        err.to_string()
            .starts_with("no text could be extracted (scanned PDF?)"),
        "{err}"
    );
}

fn encrypt_pdf(pdf: &[u8], user_password: &str) -> Vec<u8> {
    use lopdf::{Document, EncryptionState, EncryptionVersion, Object, Permissions};
    let mut doc = Document::load_mem(pdf).unwrap();
    let id = Object::string_literal(b"0123456789abcdef".to_vec());
    doc.trailer.set("ID", vec![id.clone(), id]);
    let state = EncryptionState::try_from(EncryptionVersion::V2 {
        document: &doc,
        owner_password: "owner",
        user_password,
        key_length: 128,
        permissions: Permissions::default(),
    })
    .unwrap();
    doc.encrypt(&state).unwrap();
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

#[tokio::test]
async fn password_protected_pdf_is_refused_as_encrypted() {
    let pdf = encrypt_pdf(&three_page_pdf(), "secret");
    assert_eq!(sniff("locked.pdf", &pdf), Ok(DocKind::Pdf));
    let err = isolated(DocKind::Pdf, pdf).await.unwrap_err();
    assert_eq!(err, ExtractError::Encrypted);
    assert!(err.to_string().contains("password-protected"), "{err}");
}

#[tokio::test]
async fn pdf_encrypted_with_an_empty_password_opens() {
    let pdf = encrypt_pdf(&three_page_pdf(), "");
    let out = isolated(DocKind::Pdf, pdf).await.unwrap();
    assert_eq!(out.pages, Some(3));
    assert!(
        out.sections[1].text.contains("Shipping takes"),
        "{:?}",
        out.sections
    );
}

#[tokio::test]
async fn truncated_pdf_is_an_error() {
    let pdf = three_page_pdf();
    for cut in [10, pdf.len() / 3, pdf.len() / 2] {
        let truncated = pdf[..cut].to_vec();
        assert_eq!(sniff("cut.pdf", &truncated), Ok(DocKind::Pdf));
        let result = isolated(DocKind::Pdf, truncated).await;
        assert!(result.is_err(), "cut at {cut}: {result:?}");
    }
}

#[tokio::test]
async fn corrupted_pdf_is_an_error() {
    for seed in 1..=5 {
        let mut bytes = b"%PDF-1.7\n".to_vec();
        bytes.extend(noise(20_000, seed));
        let err = isolated(DocKind::Pdf, bytes).await.unwrap_err();
        assert!(
            matches!(
                err,
                ExtractError::Damaged {
                    kind: DocKind::Pdf,
                    ..
                } | ExtractError::Unreadable(_)
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("PDF") || err.to_string().contains("could not be read"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_panicking_parser_only_yields_unreadable() {
    // `Tf` with a number for the font name: pdf-extract unwraps it and
    // panics. The panic message on stderr is expected.
    let pdf = pdf_with_contents(&[b"BT 5 12 Tf (x) Tj ET".to_vec()]);
    let err = isolated(DocKind::Pdf, pdf).await.unwrap_err();
    let ExtractError::Unreadable(reason) = &err else {
        panic!("expected Unreadable, got {err:?}");
    };
    assert!(reason.contains("probably damaged"), "{reason}");
}

#[tokio::test]
async fn a_slow_parse_times_out() {
    let big = "word ".repeat(4_000_000).into_bytes();
    let limits = ExtractLimits {
        timeout: Duration::from_millis(1),
        ..ExtractLimits::default()
    };
    let err = extract_isolated(DocKind::Txt, big, limits)
        .await
        .unwrap_err();
    let ExtractError::Unreadable(reason) = &err else {
        panic!("expected Unreadable, got {err:?}");
    };
    assert!(reason.contains("took longer than"), "{reason}");
}

#[tokio::test]
async fn docx_paragraphs_and_tables_in_order() {
    let out = isolated(DocKind::Docx, docx_fixture()).await.unwrap();
    assert_eq!(out.sections.len(), 1);
    assert_eq!(
        out.sections[0].text,
        "Opening hours\n\nWe are open Monday to Friday.\n\nDay | Hours\nSaturday | 10-14\n\nCafé crème costs 3 €."
    );
    assert_eq!((out.pages, out.sheets), (None, None));
}

#[tokio::test]
async fn zip_read_as_docx_is_damaged_not_a_panic() {
    let err = isolated(DocKind::Docx, zip_of(&[("a.txt", b"a")]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExtractError::Damaged {
                kind: DocKind::Docx,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("A Word document (.docx) is damaged"),
        "{err}"
    );
    let err = isolated(DocKind::Docx, noise(3000, 9)).await.unwrap_err();
    assert!(matches!(err, ExtractError::Damaged { .. }), "{err:?}");
}

#[tokio::test]
async fn xlsx_sheets_as_labelled_rows() {
    let out = isolated(DocKind::Xlsx, xlsx_fixture()).await.unwrap();
    assert_eq!(out.sheets, Some(3));
    let sheets: Vec<&str> = out
        .sections
        .iter()
        .filter_map(|s| s.sheet.as_deref())
        .collect();
    assert_eq!(sheets, ["Prices", "FAQ"]);
    assert_eq!(
        out.sections[0].text,
        "Product: Basic plan; Price: 10; Since: 2024-03-15\nProduct: Pro plan; Price: 24.5"
    );
    assert_eq!(
        out.sections[1].text,
        "Question: Do you ship abroad?; Answer: Yes, to the EU."
    );
}

#[tokio::test]
async fn ods_sheets_as_labelled_rows() {
    let out = isolated(DocKind::Ods, ods_fixture()).await.unwrap();
    assert_eq!(out.sheets, Some(1));
    assert_eq!(out.sections[0].sheet.as_deref(), Some("Stock"));
    assert_eq!(out.sections[0].text, "Item: Chairs; Count: 12");
}

#[tokio::test]
async fn damaged_spreadsheets_are_errors() {
    let mut ole = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    ole.extend(noise(5000, 13));
    for (kind, bytes) in [
        (DocKind::Xls, ole),
        (DocKind::Xlsx, zip_of(&[("a.txt", b"a")])),
        (
            DocKind::Ods,
            zip_of(&[(
                "mimetype",
                b"application/vnd.oasis.opendocument.spreadsheet",
            )]),
        ),
        (DocKind::Xlsx, xlsx_fixture()[..2000].to_vec()),
    ] {
        let err = isolated(kind, bytes).await.unwrap_err();
        assert!(
            matches!(
                err,
                ExtractError::Damaged { .. } | ExtractError::Unreadable(_)
            ),
            "{kind}: {err:?}"
        );
    }
}

#[test]
fn csv_rows_are_labelled_with_the_header() {
    let csv =
        "\n\nName,Email,Plan\nAda,ada@example.com,Pro\n\"Lovelace, B\",,\"Basic\nplan\"\n,,\n";
    let out = extract(DocKind::Csv, csv.as_bytes()).unwrap();
    assert_eq!(
        out.sections[0].text,
        "Name: Ada; Email: ada@example.com; Plan: Pro\nName: Lovelace, B; Plan: Basic plan"
    );
}

#[test]
fn csv_with_semicolons_ragged_rows_and_latin1() {
    let csv = b"Produit;Prix\ncaf\xe9;2,5;extra\nth\xe9\n";
    let out = extract(DocKind::Csv, csv).unwrap();
    assert_eq!(
        out.sections[0].text,
        "Produit: café; Prix: 2,5; Column 3: extra\nProduit: thé"
    );
    // A header alone is still text.
    let out = extract(DocKind::Csv, b"only,a,header\n").unwrap();
    assert_eq!(out.sections[0].text, "only; a; header");
}

#[test]
fn text_encodings_decode() {
    let cases: [(&[u8], &str); 5] = [
        (b"caf\xe9 cr\xe8me", "café crème"),
        ("café crème".as_bytes(), "café crème"),
        (b"\xef\xbb\xbfcaf\xc3\xa9", "café"),
        (b"\xff\xfec\0a\0f\0\xe9\0", "café"),
        (b"\xfe\xff\0c\0a\0f\0\xe9", "café"),
    ];
    for (bytes, expected) in cases {
        assert_eq!(sniff("t.txt", bytes), Ok(DocKind::Txt), "{bytes:?}");
        let out = extract(DocKind::Txt, bytes).unwrap();
        assert_eq!(out.sections[0].text, expected, "{bytes:?}");
    }
    // Windows-1252 specifics: curly quotes and the euro sign.
    let out = extract(
        DocKind::Txt,
        b"\x93Pr\xeat\x94 costs 5 \x80 \x96 Fa\xe7ade.",
    )
    .unwrap();
    assert_eq!(out.sections[0].text, "“Prêt” costs 5 € – Façade.");
}

#[test]
fn text_is_tidied() {
    let out = extract(
        DocKind::Markdown,
        b"# Title  \r\n\r\n\r\n\r\nPara\0 one\rline two\n\n\n",
    )
    .unwrap();
    assert_eq!(out.sections[0].text, "# Title\n\nPara one\nline two");
}

#[test]
fn blank_text_is_no_text() {
    let err = extract(DocKind::Txt, b" \n\t\n").unwrap_err();
    assert_eq!(err, ExtractError::NoText(DocKind::Txt));
    assert_eq!(
        err.to_string(),
        "no text could be extracted: the document contains no text"
    );
    assert_eq!(
        extract(DocKind::Csv, b",,\n,,\n").unwrap_err(),
        ExtractError::NoText(DocKind::Csv)
    );
}

#[tokio::test]
async fn extracted_sections_chunk_with_their_location() {
    let out = isolated(DocKind::Pdf, three_page_pdf()).await.unwrap();
    let chunks = crate::chunking::chunk(&out.sections, crate::chunking::ChunkOptions::default());
    let pages: Vec<Option<u32>> = chunks.iter().map(|c| c.page).collect();
    assert_eq!(pages, [Some(1), Some(2), Some(3)]);
}

// --------------------------------------------------------- streamed sniff

fn sniff_streamed(name: &str, bytes: &[u8], chunk: usize) -> Result<DocKind, ExtractError> {
    let mut s = SniffStream::new();
    for part in bytes.chunks(chunk.max(1)) {
        s.feed(part);
    }
    s.finish(name)
}

#[test]
fn streamed_sniff_agrees_with_whole_file_sniff() {
    let mut ole_xls = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    ole_xls.extend(noise(600, 3).iter().map(|b| b | 1));
    let mut ole_doc = ole_xls.clone();
    ole_doc.extend(noise(300_000, 4).iter().map(|b| b | 1));
    ole_doc.extend("WordDocument".encode_utf16().flat_map(u16::to_le_bytes));
    ole_doc.extend(noise(3_000_000, 5).iter().map(|b| b | 1));
    // A Word document with a big picture: its middle is never buffered.
    let big_docx = {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(docx_fixture())).unwrap();
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for i in 0..zip.len() {
            out.raw_copy_file(zip.by_index(i).unwrap()).unwrap();
        }
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        out.start_file("word/media/image1.png", stored).unwrap();
        std::io::Write::write_all(&mut out, &noise(5_000_000, 9)).unwrap();
        out.finish().unwrap().into_inner()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("report.pdf", three_page_pdf()),
        ("policy.docx", docx_fixture()),
        ("big.docx", big_docx.clone()),
        ("big.pdf", big_docx),
        ("prices.xlsx", xlsx_fixture()),
        ("prices.xls", xlsx_fixture()),
        ("stock.ods", ods_fixture()),
        ("notes.txt", b"hello".to_vec()),
        ("notes.md", "word ".repeat(200_000).into_bytes()),
        ("old.xls", ole_xls),
        ("old.xls", ole_doc),
        ("contract.docx", zip_of(&[("hello.txt", b"hi")])),
        ("photo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
        ("notes.txt", noise(100_000, 11)),
        ("empty.txt", Vec::new()),
        ("upload", ods_fixture()),
    ];
    for (name, bytes) in &cases {
        let whole = sniff(name, bytes);
        for chunk in [1usize, 7, 4096, 65_536, 1 << 20, bytes.len()] {
            if chunk == 1 && bytes.len() > 100_000 {
                continue;
            }
            assert_eq!(
                sniff_streamed(name, bytes, chunk),
                whole,
                "{name} ({} bytes) in chunks of {chunk}",
                bytes.len()
            );
        }
    }
    assert_eq!(sniff("big.docx", &cases[2].1), Ok(DocKind::Docx));
}

// -------------------------------------------------- decompression bombs

fn limits() -> ExtractLimits {
    ExtractLimits::default()
}

#[test]
fn a_gigabyte_of_zeros_in_a_docx_is_refused_unopened() {
    let bomb = docx_bomb(1024 * 1024 * 1024);
    assert!(bomb.len() < 4 * 1024 * 1024, "{}", bomb.len());
    assert_eq!(sniff("bomb.docx", &bomb), Ok(DocKind::Docx));
    let started = std::time::Instant::now();
    let err = extract_within(DocKind::Docx, &bomb, &limits()).unwrap_err();
    let ExtractError::TooLarge(msg) = &err else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert!(msg.contains("\"word/document.xml\""), "{msg}");
    assert!(msg.contains("decompression bomb"), "{msg}");
    assert!(msg.contains("1024 MB"), "{msg}");
    // Refused from the central directory, nothing inflated.
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_archive_over_the_total_unpacked_limit_is_refused() {
    // Text-like content that compresses about 3:1, well under the ratio.
    let text: Vec<u8> = noise(3 * 1024 * 1024, 21)
        .iter()
        .map(|b| b"abcdefgh"[usize::from(*b & 7)])
        .collect();
    let zip = {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let deflated = zip::write::SimpleFileOptions::default();
        out.start_file("word/document.xml", deflated).unwrap();
        std::io::Write::write_all(&mut out, &text).unwrap();
        out.finish().unwrap().into_inner()
    };
    let small = ExtractLimits {
        max_unpacked_bytes: 2 * 1024 * 1024,
        ..limits()
    };
    let err = extract_within(DocKind::Docx, &zip, &small).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the file expands to more than 2 MB when unpacked, the limit per document; split it into smaller files"
    );
}

#[test]
fn an_archive_lying_about_its_sizes_is_caught_while_inflating() {
    // 64 MiB of zeros declared as 100 bytes: the central directory looks
    // harmless, the inflate pass is what stops it.
    let liar = with_declared_size(docx_bomb(64 * 1024 * 1024), "word/document.xml", 100);
    let zip = zip::ZipArchive::new(std::io::Cursor::new(liar.clone())).unwrap();
    assert_eq!(zip.len(), 2);
    let err = extract_within(DocKind::Docx, &liar, &limits()).unwrap_err();
    assert!(
        matches!(
            err,
            ExtractError::TooLarge(_) | ExtractError::Damaged { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("word/document.xml"), "{err}");
}

#[test]
fn an_archive_with_too_many_parts_is_refused() {
    let names: Vec<String> = (0..12).map(|i| format!("part{i}.xml")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"<a/>"[..])).collect();
    let zip = zip_of(&entries);
    let few = ExtractLimits {
        max_entries: 10,
        ..limits()
    };
    let err = extract_within(DocKind::Xlsx, &zip, &few).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the file contains 12 parts, more than the 10 allowed"),
        "{err}"
    );
}

#[test]
fn real_office_files_pass_the_archive_checks() {
    for (kind, bytes) in [
        (DocKind::Docx, docx_fixture()),
        (DocKind::Xlsx, xlsx_fixture()),
        (DocKind::Ods, ods_fixture()),
    ] {
        let tight = ExtractLimits {
            max_unpacked_bytes: 256 * 1024,
            max_entries: 50,
            ..limits()
        };
        assert!(extract_within(kind, &bytes, &tight).is_ok(), "{kind}");
    }
}

// ----------------------------------------------------------- text ceiling

#[tokio::test]
async fn text_beyond_the_ceiling_fails_the_document_cleanly() {
    let small = ExtractLimits {
        max_text_bytes: 4096,
        ..limits()
    };
    let text = "All work and no play. ".repeat(1000).into_bytes();
    let err = extract_isolated(DocKind::Txt, text, small)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the document contains more than 4 KB of text, the limit per document; split it into smaller files"
    );
    let line = "A line of text that repeats on every page of this PDF.";
    let page: Vec<&str> = vec![line; 20];
    let pages: Vec<&[&str]> = vec![&page; 30];
    let pdf = pdf_with_pages(&pages);
    let err = extract_isolated(DocKind::Pdf, pdf.clone(), small)
        .await
        .unwrap_err();
    assert!(matches!(err, ExtractError::TooLarge(_)), "{err:?}");
    // The same files within the default ceiling read fine.
    assert_eq!(
        extract_isolated(DocKind::Pdf, pdf, limits())
            .await
            .unwrap()
            .pages,
        Some(30)
    );
}

#[test]
fn a_pdf_whose_streams_expand_past_the_limit_is_refused_before_parsing() {
    let mut content = b"BT /F1 12 Tf 72 720 Td (Packed page) Tj ET\n".to_vec();
    content.extend(vec![b' '; 4 * 1024 * 1024]);
    let mut doc = lopdf::Document::load_mem(&pdf_with_contents(&[content])).unwrap();
    doc.compress();
    let mut packed = Vec::new();
    doc.save_to(&mut packed).unwrap();
    assert!(packed.len() < 100_000, "{}", packed.len());
    let small = ExtractLimits {
        max_unpacked_bytes: 1024 * 1024,
        ..limits()
    };
    let err = extract_within(DocKind::Pdf, &packed, &small).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the file expands to more than 1 MB when unpacked, the limit per document; split it into smaller files"
    );
    let read = extract_within(DocKind::Pdf, &packed, &limits()).unwrap();
    assert!(read.sections[0].text.contains("Packed page"), "{read:?}");
}
