//! Word (.docx) text with docx-rs: paragraphs in order, table cells too.

use docx_rs::{
    DocumentChild, InsertChild, MoveToChild, Paragraph, ParagraphChild, Run, RunChild,
    StructuredDataTag, StructuredDataTagChild, Table, TableCellContent, TableChild, TableRowChild,
};

use super::{DocKind, ExtractError, Extracted, Section};

pub(super) fn extract(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let docx = docx_rs::read_docx(bytes).map_err(|e| ExtractError::damaged(DocKind::Docx, e))?;
    let mut blocks = Vec::new();
    for child in &docx.document.children {
        match child {
            DocumentChild::Paragraph(p) => blocks.push(paragraph_text(p)),
            DocumentChild::Table(t) => blocks.push(table_text(t)),
            DocumentChild::StructuredDataTag(sdt) => blocks.extend(sdt_blocks(sdt)),
            _ => {}
        }
    }
    blocks.retain(|b| !b.trim().is_empty());
    Ok(Extracted {
        // A blank line between paragraphs: the chunker splits there first.
        sections: vec![Section {
            text: blocks.join("\n\n"),
            page: None,
            sheet: None,
        }],
        pages: None,
        sheets: None,
    })
}

/// The visible text of a paragraph. Unlike `Paragraph::raw_text`, this keeps
/// hyperlink and content-control text; deleted and moved-away text is left
/// out like there.
fn paragraph_text(p: &Paragraph) -> String {
    let mut out = String::new();
    push_children(&p.children, &mut out);
    out
}

fn push_children(children: &[ParagraphChild], out: &mut String) {
    for child in children {
        match child {
            ParagraphChild::Run(run) => push_run(run, out),
            ParagraphChild::Insert(ins) => {
                for c in &ins.children {
                    if let InsertChild::Run(run) = c {
                        push_run(run, out);
                    }
                }
            }
            ParagraphChild::MoveTo(mv) => {
                for c in &mv.children {
                    if let MoveToChild::Run(run) = c {
                        push_run(run, out);
                    }
                }
            }
            ParagraphChild::Hyperlink(link) => push_children(&link.children, out),
            ParagraphChild::StructuredDataTag(sdt) => {
                for c in &sdt.children {
                    match c {
                        StructuredDataTagChild::Run(run) => push_run(run, out),
                        StructuredDataTagChild::Paragraph(p) => out.push_str(&paragraph_text(p)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn push_run(run: &Run, out: &mut String) {
    for c in &run.children {
        match c {
            RunChild::Text(t) => out.push_str(&t.text),
            RunChild::Tab(_) | RunChild::PTab(_) => out.push('\t'),
            RunChild::Break(_) | RunChild::CarriageReturn(_) => out.push('\n'),
            _ => {}
        }
    }
}

/// One line per row, cells separated by " | " (nested tables flattened into
/// their cell).
fn table_text(table: &Table) -> String {
    let mut lines = Vec::new();
    for TableChild::TableRow(row) in &table.rows {
        let mut cells = Vec::new();
        for TableRowChild::TableCell(cell) in &row.cells {
            let mut parts = Vec::new();
            for content in &cell.children {
                match content {
                    TableCellContent::Paragraph(p) => parts.push(paragraph_text(p)),
                    TableCellContent::Table(t) => parts.push(table_text(t)),
                    TableCellContent::StructuredDataTag(sdt) => parts.extend(sdt_blocks(sdt)),
                    TableCellContent::TableOfContents(_) => {}
                }
            }
            let text = parts
                .join(" ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if !text.is_empty() {
                cells.push(text);
            }
        }
        if !cells.is_empty() {
            lines.push(cells.join(" | "));
        }
    }
    lines.join("\n")
}

/// Block-level content controls wrap whole paragraphs and tables.
fn sdt_blocks(sdt: &StructuredDataTag) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut inline = String::new();
    for child in &sdt.children {
        match child {
            StructuredDataTagChild::Paragraph(p) => blocks.push(paragraph_text(p)),
            StructuredDataTagChild::Table(t) => blocks.push(table_text(t)),
            StructuredDataTagChild::StructuredDataTag(inner) => blocks.extend(sdt_blocks(inner)),
            StructuredDataTagChild::Run(run) => push_run(run, &mut inline),
            _ => {}
        }
    }
    if !inline.is_empty() {
        blocks.push(inline);
    }
    blocks
}
