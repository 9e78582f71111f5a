//! Ingestion benchmark: the knowledge base's real path from file bytes to
//! searchable points, without the network or a provider:
//!
//! ```sh
//! cargo run --release -p aigentable-tests --bin ingest_bench -- [--scale 1] [--dir DIR] [--parallel 2] [--reindex]
//! cargo run --release -p aigentable-tests --bin ingest_bench -- --write-corpus DIR [--scale 1]
//! ```
//!
//! The corpus is generated in memory (multi-page PDFs with the shared
//! `extract::fixtures` builder, Word documents with paragraphs and tables
//! from docx-rs, workbooks with several sheets of rows from
//! rust_xlsxwriter), or, with `--dir`, every file of a directory (so it can
//! be run on the same files as another pipeline; kinds are told by
//! content, as uploads are). `--write-corpus DIR` writes the generated
//! corpus to a directory and stops: `tests/python/ingest_reference.py`
//! runs the Python pipeline on it, and `--dir` this one. Each file goes through what the
//! `ingest_document` job runs: `sniff`, `extract_isolated` (a blocking
//! thread with panic isolation and a time limit), chunking and BM25
//! vectors on the blocking pool, then the document's points handed to the
//! store [`INDEX_BATCH`] at a time, after its earlier points are deleted
//! when the job would delete them (`--reindex`: the documents were indexed
//! before; by default a first upload, which deletes nothing). The store is the embedded one (Qdrant
//! Edge) in a temporary directory, or the Qdrant server at `QDRANT_URL`
//! (in a collection of its own, dropped at the end). Dense embeddings are
//! left out: they depend on the provider's latency, not on this code.
//!
//! `--parallel` documents are ingested at once (default: the ingest
//! queue's concurrency per worker process). Reported per kind: documents,
//! input size, pages or sheets, chunks, the seconds each stage took summed
//! over the documents, the wall-clock time and the throughput over it
//! (pages/s for PDF, MB/s of input for the others).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;

use aigentable_jobs::Queue;
use aigentable_platform::chunking::{ChunkOptions, chunk};
use aigentable_platform::extract::{DocKind, ExtractLimits, extract_isolated, fixtures, sniff};
use aigentable_vectors::{
    CollectionSpec, EmbeddedStore, INDEX_BATCH, Point, PointPayload, ServerStore, VectorStore,
};
use aigentable_workers::handlers::ingest_document::replaces_earlier_points;

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
    dir: Option<PathBuf>,
    parallel: usize,
    /// Measure a re-processing (earlier points deleted first), not a first upload.
    reindex: bool,
    /// Write the generated corpus here and stop, so that another pipeline
    /// (and `--dir`) can take the same files.
    write_corpus: Option<PathBuf>,
}

const USAGE: &str = "usage: ingest_bench [--scale N] [--dir DIR] [--parallel N] [--reindex] | --write-corpus DIR [--scale N]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        scale: 1,
        dir: None,
        parallel: Queue::Ingest.default_concurrency(),
        reindex: false,
        write_corpus: None,
    };
    let mut it = std::env::args().skip(1);
    let number = |name: &str, value: Option<String>| -> anyhow::Result<usize> {
        Ok(value
            .with_context(|| format!("{name} needs a value; {USAGE}"))?
            .parse::<usize>()
            .with_context(|| format!("{name} must be a number"))?
            .max(1))
    };
    let path = |name: &str, value: Option<String>| -> anyhow::Result<Option<PathBuf>> {
        let value = value.with_context(|| format!("{name} needs a value; {USAGE}"))?;
        Ok(Some(PathBuf::from(value)))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale" => args.scale = number("--scale", it.next())?,
            "--parallel" => args.parallel = number("--parallel", it.next())?,
            "--reindex" => args.reindex = true,
            "--dir" => args.dir = path("--dir", it.next())?,
            "--write-corpus" => args.write_corpus = path("--write-corpus", it.next())?,
            other => bail!("unknown argument {other}; {USAGE}"),
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

/// What one document cost, stage by stage.
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
    /// Handing the new points to the store, [`INDEX_BATCH`] per call.
    upsert: Duration,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.documents += other.documents;
        self.bytes += other.bytes;
        self.units += other.units;
        self.chunks += other.chunks;
        self.extract += other.extract;
        self.chunk_bm25 += other.chunk_bm25;
        self.delete += other.delete;
        self.upsert += other.upsert;
    }
}

/// The ingest job's path for one file.
async fn ingest(
    store: Arc<dyn VectorStore>,
    collection: String,
    name: String,
    id: usize,
    bytes: Vec<u8>,
    indexed_before: bool,
) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        documents: 1,
        bytes: bytes.len(),
        ..Tally::default()
    };
    let started = Instant::now();
    let kind = sniff(&name, &bytes)?;
    let extracted = extract_isolated(kind, bytes, ExtractLimits::default()).await?;
    tally.extract = started.elapsed();
    tally.units = u64::from(extracted.pages.or(extracted.sheets).unwrap_or(0));

    let started = Instant::now();
    let document_id = format!("doc{id}");
    let points: Vec<Point> = {
        let document_id = document_id.clone();
        tokio::task::spawn_blocking(move || {
            chunk(&extracted.sections, ChunkOptions::default())
                .into_iter()
                .map(|c| {
                    Point::new(
                        PointPayload {
                            tenant_id: "bench".to_owned(),
                            agent_id: None,
                            document_id: document_id.clone(),
                            document_name: name.clone(),
                            chunk_index: u32::try_from(c.index).unwrap_or(u32::MAX),
                            page: c.page,
                            sheet: c.sheet,
                            text: c.text,
                        },
                        None,
                    )
                })
                .collect()
        })
        .await?
    };
    tally.chunk_bm25 = started.elapsed();
    tally.chunks = points.len();

    let started = Instant::now();
    if replaces_earlier_points(indexed_before, true) {
        store
            .delete_document(&collection, "bench", &document_id)
            .await?;
    }
    tally.delete = started.elapsed();
    let started = Instant::now();
    for batch in points.chunks(INDEX_BATCH) {
        store.upsert(&collection, batch.to_vec()).await?;
    }
    tally.upsert = started.elapsed();
    Ok(tally)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Named files.
type Files = Vec<(String, Vec<u8>)>;
/// Files by kind, labelled.
type Corpus = Vec<(String, Files)>;

/// The generated corpus, by kind.
fn generated(scale: usize) -> anyhow::Result<Corpus> {
    let mut text = Text(0x9e37_79b9_7f4a_7c15);
    let named = |ext: &str, files: Vec<Vec<u8>>| -> Files {
        files
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| (format!("file{i}.{ext}"), bytes))
            .collect()
    };
    let pdfs: Vec<Vec<u8>> = (0..8 * scale).map(|_| pdf(&mut text, 25)).collect();
    let docxs: Vec<Vec<u8>> = (0..8 * scale)
        .map(|_| docx(&mut text, 400))
        .collect::<anyhow::Result<_>>()?;
    let xlsxs: Vec<Vec<u8>> = (0..8 * scale)
        .map(|_| xlsx(&mut text, 3, 1500))
        .collect::<anyhow::Result<_>>()?;
    Ok(vec![
        ("PDF".to_owned(), named("pdf", pdfs)),
        ("DOCX".to_owned(), named("docx", docxs)),
        ("XLSX".to_owned(), named("xlsx", xlsxs)),
    ])
}

/// Every regular file of `dir` (not recursive), grouped by the kind its
/// content says, in name order; files no ingestion would take are named
/// and skipped.
fn from_dir(dir: &std::path::Path) -> anyhow::Result<Corpus> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut kinds: Vec<(DocKind, Files)> = Vec::new();
    for path in paths {
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match sniff(&name, &bytes) {
            Ok(kind) => match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, files)) => files.push((name, bytes)),
                None => kinds.push((kind, vec![(name, bytes)])),
            },
            Err(e) => eprintln!("skipped {}: {e}", path.display()),
        }
    }
    if kinds.is_empty() {
        bail!("{} holds no file ingestion takes", dir.display());
    }
    Ok(kinds
        .into_iter()
        .map(|(kind, files)| (kind.as_str().to_uppercase(), files))
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the api and workers binaries do: the same allocator behaviour.
    aigentable_allocator::return_large_blocks();
    let args = parse_args()?;
    if let Some(out) = &args.write_corpus {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut written = 0;
        for (_, files) in generated(args.scale)? {
            for (name, bytes) in files {
                let path = out.join(&name);
                std::fs::write(&path, &bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                written += 1;
            }
        }
        println!(
            "wrote {written} files of the scale-{} corpus to {}",
            args.scale,
            out.display()
        );
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!(
        "aigentable-ingest-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let qdrant_url = std::env::var("QDRANT_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let (store, spec, where_): (Arc<dyn VectorStore>, CollectionSpec, String) = match &qdrant_url {
        Some(url) => {
            let api_key = std::env::var("QDRANT_API_KEY").ok();
            let store = ServerStore::connect(url, api_key.as_deref()).await?;
            // A collection of its own: nothing of a real deployment is
            // touched, and the figures start from an empty collection.
            let mut spec = CollectionSpec::sparse_only();
            spec.name = format!("ingest_bench_{}", uuid::Uuid::new_v4().simple());
            (Arc::new(store), spec, format!("the Qdrant server at {url}"))
        }
        None => {
            std::fs::create_dir_all(&dir)?;
            let store = EmbeddedStore::open(&dir).await?;
            (
                Arc::new(store),
                CollectionSpec::sparse_only(),
                "the embedded store (Qdrant Edge)".to_owned(),
            )
        }
    };
    store.ensure_collection(&spec).await?;

    let corpus = match &args.dir {
        Some(dir) => {
            println!("reading {}...", dir.display());
            from_dir(dir)?
        }
        None => {
            println!("generating the corpus (scale {})...", args.scale);
            generated(args.scale)?
        }
    };
    println!(
        "ingesting into {where_}, {} document(s) at a time, {}, {} core(s)",
        args.parallel,
        if args.reindex {
            "re-processing (earlier points deleted first)"
        } else {
            "first uploads"
        },
        std::thread::available_parallelism().map_or(1, usize::from)
    );

    let mut id = 0;
    let mut results = Vec::new();
    for (label, files) in corpus {
        let started = Instant::now();
        let jobs = files.into_iter().map(|(name, bytes)| {
            id += 1;
            let (store, collection, label) = (store.clone(), spec.name.clone(), label.clone());
            let reindex = args.reindex;
            async move {
                let context = format!("{label} document {name}");
                ingest(store, collection, name, id, bytes, reindex)
                    .await
                    .context(context)
            }
        });
        let mut tally = Tally::default();
        {
            let mut running = futures::stream::iter(jobs).buffer_unordered(args.parallel);
            while let Some(one) = running.next().await {
                tally.add(&one?);
            }
        }
        results.push((label, tally, started.elapsed()));
    }
    let indexed = store.count(&spec.name, "bench", None).await?;

    println!();
    println!(
        "| kind | documents | input | pages / sheets | chunks | points already stored | extract s | chunk + BM25 s | delete old s | upsert s | wall clock s | throughput |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut before = 0usize;
    for (label, t, wall) in &results {
        let mb = t.bytes as f64 / (1024.0 * 1024.0);
        let wall = secs(*wall);
        let throughput = if label == "PDF" {
            format!("{:.0} pages/s", t.units as f64 / wall)
        } else {
            format!("{:.2} MB/s", mb / wall)
        };
        let units = match (label.as_str(), t.units) {
            ("PDF", n) => format!("{n} pages"),
            (_, 0) => "–".to_owned(),
            (_, n) => format!("{n} sheets"),
        };
        println!(
            "| {label} | {} | {mb:.1} MB | {units} | {} | {before} | {:.2} | {:.2} | {:.2} | {:.2} | {wall:.2} | {throughput} ({:.0} chunks/s) |",
            t.documents,
            t.chunks,
            secs(t.extract),
            secs(t.chunk_bm25),
            secs(t.delete),
            secs(t.upsert),
            t.chunks as f64 / wall,
        );
        before += t.chunks;
    }
    let chunks: usize = results.iter().map(|(_, t, _)| t.chunks).sum();
    let counted = indexed == chunks as u64;
    if qdrant_url.is_some() {
        let _ = store.drop_collection(&spec.name).await;
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    if !counted {
        bail!("the store holds {indexed} points, {chunks} were written");
    }
    println!("\n{indexed} points in the store; all counted.");
    Ok(())
}
