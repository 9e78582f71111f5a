r"""The Python ingestion pipeline that issue 14 compares against, on a
directory of files (for example `ingest_bench --write-corpus DIR`):

    pip install pypdf python-docx openpyxl langchain-text-splitters qdrant-client
    python3 tests/python/ingest_reference.py DIR [--memory]

Per file, as `ingest_bench --dir DIR` does in Rust: extract the text
(pypdf page by page, python-docx paragraphs and tables, openpyxl rows in
read-only mode), split it (LangChain's RecursiveCharacterTextSplitter,
1,200 characters with 200 of overlap, as our chunker's defaults), compute
BM25 sparse vectors as ours are (FNV-1a term ids, k1 1.2, b 0.75, average
length 256, our stopwords; tokens split by Python's `\w+`) and upsert them into qdrant-client's local
mode in batches: an on-disk collection, the embedded store's counterpart,
or with `--memory` one held in memory (faster; nothing kept).
One document at a time, as one Python process runs. Prints one line per
kind in the units `ingest_bench` uses (pages/s for PDF, MiB/s of input for
the others).
"""

import os
import re
import sys
import tempfile
import time
import uuid

import docx
import openpyxl
import pypdf
from langchain_text_splitters import RecursiveCharacterTextSplitter
from qdrant_client import QdrantClient, models

STOPWORDS = set(
    """a about after all also am an and any are as at be because been before
    being but by can could did do does doing for from had has have having he
    her here hers him his how i if in into is it its itself just me more most
    my no nor not of off on once only or other our ours out over own same she
    should so some such than that the their theirs them then there these they
    this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours""".split()
)
K1, B, AVG_LEN = 1.2, 0.75, 256.0
TOKEN = re.compile(r"\w+")
BATCH = 256
MIB = 1024.0 * 1024.0


def fnv1a(token: str) -> int:
    h = 0x811C9DC5
    for byte in token.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def bm25(text: str) -> models.SparseVector:
    tokens = [
        t
        for t in TOKEN.findall(text.lower())
        if 2 <= len(t) <= 64 and t not in STOPWORDS
    ]
    counts = {}
    for t in tokens:
        i = fnv1a(t)
        counts[i] = counts.get(i, 0) + 1
    norm = K1 * (1 - B + B * len(tokens) / AVG_LEN)
    indices = sorted(counts)
    values = [counts[i] * (K1 + 1) / (counts[i] + norm) for i in indices]
    return models.SparseVector(indices=indices, values=values)


def kind_of(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"PK"):
        return "XLSX" if path.lower().endswith(".xlsx") else "DOCX"
    return ""


def extract(path: str, kind: str):
    """The texts to split, and the pages (PDF) or sheets (XLSX) read."""
    if kind == "PDF":
        reader = pypdf.PdfReader(path)
        return [page.extract_text() or "" for page in reader.pages], len(reader.pages)
    if kind == "DOCX":
        document = docx.Document(path)
        parts = [p.text for p in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                parts.append(" | ".join(cell.text for cell in row.cells))
        return ["\n".join(parts)], 0
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    texts = []
    for sheet in book.worksheets:
        rows = sheet.iter_rows(values_only=True)
        header = [str(v) if v is not None else "" for v in next(rows, ())]
        lines = []
        for row in rows:
            lines.append(
                "; ".join(
                    f"{h}: {v}" for h, v in zip(header, row) if v is not None
                )
            )
        texts.append(f"{sheet.title}\n" + "\n".join(lines))
    count = len(book.worksheets)
    book.close()
    return texts, count


def main() -> None:
    args = sys.argv[1:]
    in_memory = "--memory" in args
    args = [a for a in args if a != "--memory"]
    if len(args) != 1:
        sys.exit("usage: ingest_reference.py DIR [--memory]")
    folder = args[0]
    paths = sorted(
        os.path.join(folder, n)
        for n in os.listdir(folder)
        if os.path.isfile(os.path.join(folder, n))
    )
    splitter = RecursiveCharacterTextSplitter(chunk_size=1200, chunk_overlap=200)
    with tempfile.TemporaryDirectory() as store_dir:
        client = (
            QdrantClient(location=":memory:")
            if in_memory
            else QdrantClient(path=store_dir)
        )
        client.create_collection(
            "reference",
            vectors_config={},
            sparse_vectors_config={
                "bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)
            },
        )
        totals = {}
        for path in paths:
            kind = kind_of(path)
            if not kind:
                print(f"skipped {path}", file=sys.stderr)
                continue
            started = time.perf_counter()
            texts, units = extract(path, kind)
            chunks = [c for t in texts for c in splitter.split_text(t)]
            points = [
                models.PointStruct(
                    id=str(uuid.uuid4()),
                    vector={"bm25": bm25(c)},
                    payload={"document": os.path.basename(path), "chunk": i, "text": c},
                )
                for i, c in enumerate(chunks)
            ]
            for i in range(0, len(points), BATCH):
                client.upsert("reference", points[i : i + BATCH])
            t = totals.setdefault(kind, [0, 0, 0, 0, 0.0])
            t[0] += 1
            t[1] += os.path.getsize(path)
            t[2] += units
            t[3] += len(chunks)
            t[4] += time.perf_counter() - started
        client.close()
    for kind, (docs, size, units, chunks, wall) in totals.items():
        rate = (
            f"{units / wall:.0f} pages/s"
            if kind == "PDF"
            else f"{size / MIB / wall:.2f} MB/s"
        )
        print(
            f"{kind}: {docs} documents, {size / MIB:.1f} MiB, {units} pages/sheets, "
            f"{chunks} chunks, {wall:.2f} s: {rate}"
        )


if __name__ == "__main__":
    main()
