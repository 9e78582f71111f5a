//! Ingestion benchmark: the knowledge base's real path from file bytes to
//! searchable points, without the network or a provider:
//!
//! ```sh
//! cargo run --release -p aigentable-tests --bin ingest_bench -- [--scale 1]
//! ```
//!
//! A corpus is generated in memory: multi-page PDFs (with the shared
//! `extract::fixtures` builder), Word documents with paragraphs and tables
//! (docx-rs) and workbooks with several sheets of rows (rust_xlsxwriter).
//! Each file goes through what the `ingest_document` job runs: `sniff`,
//! `extract_isolated` (a blocking thread with panic isolation and a time
//! limit), chunking, BM25 vectors (`Point::new`) and upserts of 128 points
//! into the embedded vector store (Qdrant Edge, flushed after each batch)
//! in a temporary directory. Dense embeddings are left out: they depend on
//! the provider's latency, not on this code.
//!
//! Reported per kind: documents, input size, pages or sheets, chunks,
//! seconds per stage and throughput (pages/s for PDF, MB/s of input for
//! DOCX and XLSX). One document at a time, as one ingest worker slot runs
//! them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use aigentable_platform::chunking::{ChunkOptions, chunk};
use aigentable_platform::extract::{ExtractLimits, extract_isolated, fixtures, sniff};
use aigentable_vectors::{CollectionSpec, EmbeddedStore, Point, PointPayload, VectorStore};

const WORDS: &[&str] = &[
    "refund",
    "shipping",
    "warranty",
    "invoice",
    "customer",
    "support",
    "delivery",
    "account",
    "payment",
    "order",
    "return",
    "policy",
    "service",
    "product",
    "subscription",
    "billing",
    "address",
    "tracking",
    "discount",
    "exchange",
    "repair",
    "battery",
    "charger",
    "manual",
    "installation",
    "contract",
    "renewal",
    "cancellation",
    "priority",
    "schedule",
    "holiday",
    "weekday",
    "warehouse",
    "courier",
    "package",
    "receipt",
    "balance",
    "credit",
    "transfer",
    "password",
];

/// Deterministic pseudo-random text (xorshift), so runs are comparable.
struct Text(u64);

impl Text {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn word(&mut self) -> &'static str {
        let i = usize::try_from(self.next() % WORDS.len() as u64).unwrap_or(0);
        WORDS[i]
    }

    fn sentence(&mut self, words: usize) -> String {
        let mut s = String::new();
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.word());
        }
        let n = self.next() % 1000;
        s.push_str(&format!(" {n}."));
        s
    }
}

struct Args {
    scale: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { scale: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale" => {
                args.scale = it
                    .next()
                    .context("--scale needs a value")?
                    .parse::<usize>()
                    .context("--scale must be a number")?
                    .max(1);
            }
            other => bail!("unknown argument {other}; usage: ingest_bench [--scale N]"),
        }
    }
    Ok(args)
}

/// A PDF of `pages` pages of 40 lines of about 70 characters.
fn pdf(text: &mut Text, pages: usize) -> Vec<u8> {
    let lines: Vec<Vec<String>> = (0..pages)
        .map(|_| (0..40).map(|_| text.sentence(9)).collect())
        .collect();
    let refs: Vec<Vec<&str>> = lines
        .iter()
        .map(|p| p.iter().map(String::as_str).collect())
        .collect();
    let pages: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
    fixtures::pdf_with_pages(&pages)
}

/// A Word document: headed sections of paragraphs, with a table every ten.
fn docx(text: &mut Text, paragraphs: usize) -> anyhow::Result<Vec<u8>> {
    use docx_rs::{Docx, Paragraph, Run, Table, TableCell, TableRow};
    let mut doc = Docx::new();
    for i in 0..paragraphs {
        if i % 10 == 0 {
            doc = doc.add_paragraph(
                Paragraph::new().add_run(Run::new().add_text(format!("Section {}", i / 10)).bold()),
            );
            let cell = |t: String| {
                TableCell::new().add_paragraph(Paragraph::new().add_run(Run::new().add_text(t)))
            };
            let rows = (0..4)
                .map(|_| TableRow::new(vec![cell(text.sentence(2)), cell(text.sentence(4))]))
                .collect();
            doc = doc.add_table(Table::new(rows));
        }
        let body = (0..5)
            .map(|_| text.sentence(12))
            .collect::<Vec<_>>()
            .join(" ");
        doc = doc.add_paragraph(Paragraph::new().add_run(Run::new().add_text(body)));
    }
    let mut out = std::io::Cursor::new(Vec::new());
    doc.build().pack(&mut out).context("docx")?;
    Ok(out.into_inner())
}

/// A workbook of `sheets` sheets with a header and `rows` rows of six
/// columns (text, numbers, a date).
fn xlsx(text: &mut Text, sheets: usize, rows: u32) -> anyhow::Result<Vec<u8>> {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let mut wb = Workbook::new();
    let date_format = Format::new().set_num_format("yyyy-mm-dd");
    for s in 0..sheets {
        let sheet = wb.add_worksheet().set_name(format!("Sheet {s}"))?;
        for (c, h) in ["Product", "Description", "Price", "Stock", "Since", "Notes"]
            .iter()
            .enumerate()
        {
            sheet.write_string(0, u16::try_from(c)?, *h)?;
        }
        for r in 1..=rows {
            sheet.write_string(r, 0, text.sentence(2))?;
            sheet.write_string(r, 1, text.sentence(8))?;
            sheet.write_number(r, 2, (text.next() % 10_000) as f64 / 100.0)?;
            sheet.write_number(r, 3, (text.next() % 500) as f64)?;
            let day = u8::try_from(1 + text.next() % 28)?;
            let date = ExcelDateTime::from_ymd(2024, 3, day)?;
            sheet.write_datetime_with_format(r, 4, &date, &date_format)?;
            sheet.write_string(r, 5, text.sentence(5))?;
        }
    }
    Ok(wb.save_to_buffer()?)
}

#[derive(Default)]
struct Tally {
    documents: usize,
    bytes: usize,
    units: u64,
    chunks: usize,
    extract: Duration,
    chunk_bm25: Duration,
    /// Removing the document's previous points (the job always does).
    delete: Duration,
    /// Upserting the new points, 128 per flushed batch.
    upsert: Duration,
}

impl Tally {
    fn total(&self) -> Duration {
        self.extract + self.chunk_bm25 + self.delete + self.upsert
    }
}

/// The ingest job's path for one file; returns pages or sheets.
async fn ingest(
    store: &EmbeddedStore,
    collection: &str,
    name: &str,
    id: usize,
    bytes: Vec<u8>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    tally.documents += 1;
    tally.bytes += bytes.len();
    let started = Instant::now();
    let kind = sniff(name, &bytes)?;
    let extracted = extract_isolated(kind, bytes, ExtractLimits::default()).await?;
    tally.extract += started.elapsed();
    tally.units += u64::from(extracted.pages.or(extracted.sheets).unwrap_or(0));

    let started = Instant::now();
    let chunks = chunk(&extracted.sections, ChunkOptions::default());
    let document_id = format!("doc{id}");
    let points: Vec<Point> = chunks
        .into_iter()
        .map(|c| {
            Point::new(
                PointPayload {
                    tenant_id: "bench".to_owned(),
                    agent_id: None,
                    document_id: document_id.clone(),
                    document_name: name.to_owned(),
                    chunk_index: u32::try_from(c.index).unwrap_or(u32::MAX),
                    page: c.page,
                    sheet: c.sheet,
                    text: c.text,
                },
                None,
            )
        })
        .collect();
    tally.chunk_bm25 += started.elapsed();
    tally.chunks += points.len();

    let started = Instant::now();
    store
        .delete_document(collection, "bench", &document_id)
        .await?;
    tally.delete += started.elapsed();
    let started = Instant::now();
    for batch in points.chunks(aigentable_vectors::UPSERT_BATCH) {
        store.upsert(collection, batch.to_vec()).await?;
    }
    tally.upsert += started.elapsed();
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = std::env::temp_dir().join(format!(
        "aigentable-ingest-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let store = EmbeddedStore::open(&dir).await?;
    let spec = CollectionSpec::sparse_only();
    store.ensure_collection(&spec).await?;

    let mut text = Text(0x9e37_79b9_7f4a_7c15);
    let scale = args.scale;
    println!("generating the corpus (scale {scale})...");
    let pdfs: Vec<Vec<u8>> = (0..8 * scale).map(|_| pdf(&mut text, 25)).collect();
    let docxs: Vec<Vec<u8>> = (0..8 * scale)
        .map(|_| docx(&mut text, 400))
        .collect::<anyhow::Result<_>>()?;
    let xlsxs: Vec<Vec<u8>> = (0..8 * scale)
        .map(|_| xlsx(&mut text, 3, 1500))
        .collect::<anyhow::Result<_>>()?;

    let mut id = 0;
    let mut results = Vec::new();
    for (label, ext, files) in [
        ("PDF", "pdf", pdfs),
        ("DOCX", "docx", docxs),
        ("XLSX", "xlsx", xlsxs),
    ] {
        let mut tally = Tally::default();
        for bytes in files {
            id += 1;
            ingest(
                &store,
                &spec.name,
                &format!("file{id}.{ext}"),
                id,
                bytes,
                &mut tally,
            )
            .await
            .with_context(|| format!("{label} document {id}"))?;
        }
        results.push((label, tally));
    }
    let indexed = store.count(&spec.name, "bench", None).await?;

    println!();
    println!(
        "| kind | documents | input | pages / sheets | chunks | points already stored | extract s | chunk + BM25 s | delete old s | upsert s | throughput |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut before = 0usize;
    for (label, t) in &results {
        let mb = t.bytes as f64 / (1024.0 * 1024.0);
        let total = secs(t.total());
        let throughput = if *label == "PDF" {
            format!("{:.0} pages/s", t.units as f64 / total)
        } else {
            format!("{:.2} MB/s", mb / total)
        };
        let units = match *label {
            "PDF" => format!("{} pages", t.units),
            "XLSX" => format!("{} sheets", t.units),
            _ => "–".to_owned(),
        };
        println!(
            "| {label} | {} | {mb:.1} MB | {units} | {} | {before} | {:.2} | {:.2} | {:.2} | {:.2} | {throughput} ({:.0} chunks/s) |",
            t.documents,
            t.chunks,
            secs(t.extract),
            secs(t.chunk_bm25),
            secs(t.delete),
            secs(t.upsert),
            t.chunks as f64 / total,
        );
        before += t.chunks;
    }
    let chunks: usize = results.iter().map(|(_, t)| t.chunks).sum();
    if indexed != chunks as u64 {
        bail!("the store holds {indexed} points, {chunks} were written");
    }
    println!("\n{indexed} points in the store; all counted.");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
