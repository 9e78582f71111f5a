//! The knowledge-base vector store: document chunks as points with a sparse
//! BM25 vector (always) and a dense embedding (when an embedding model is
//! configured), searched by hybrid retrieval.
//!
//! # Design
//!
//! - One trait, [`VectorStore`], two implementations chosen by [`connect`]:
//!   - [`ServerStore`]: a Qdrant server through `qdrant-client` (gRPC) when
//!     `QDRANT_URL` is set. The production path: any number of api and
//!     worker processes share it.
//!   - [`EmbeddedStore`]: the default, Qdrant Edge (in-process) with its
//!     files under `<DATA_DIR>/vectors/`. Only one process may own it (the
//!     workers): it takes an exclusive OS lock on `<DATA_DIR>/vectors/LOCK`,
//!     and a second process gets [`VectorError::Locked`] telling it to set
//!     `QDRANT_URL`.
//! - Every point carries its tenant, agent (optional), document, chunk
//!   index, page or sheet, the document name and the chunk text
//!   ([`PointPayload`], stored with camelCase keys: `tenantId`, `agentId`,
//!   `documentId`, ...). Point ids are UUID v5 of tenant, document and chunk
//!   index ([`point_id`]), so re-indexing a document overwrites its points.
//! - Every search and count is filtered by tenant, and by agent and
//!   document when given; deletes are by document or by agent, always within
//!   one tenant. The agent filter is an exact match: points indexed without
//!   an agent are not found by a search for a given agent.
//! - One collection per embedding model and dimension
//!   ([`CollectionSpec::sparse_only`], [`CollectionSpec::for_model`]):
//!   changing the model re-indexes into a new collection, the caller
//!   switches over when that is done and may then
//!   [`drop`](VectorStore::drop_collection) the old one.
//! - Hybrid retrieval: the sparse BM25 vector ([`bm25`], computed locally,
//!   no API key) and, when the query carries one, the dense vector are
//!   searched separately (each for a few times `limit` candidates, with the
//!   same filter) and fused with reciprocal rank fusion ([`fusion::rrf`],
//!   k = 60). Hit scores are therefore always RRF scores.
//! - IDF: both stores declare the sparse vector `bm25` with Qdrant's `Idf`
//!   modifier (the server since 1.10; Qdrant Edge 0.7.2 applies it in its
//!   search too), so sparse scores are full BM25: the stored saturated term
//!   frequencies times the collection's inverse document frequencies. The
//!   document frequencies are counted over the whole collection (all
//!   tenants); only these counts, never content, cross tenants.
//! - Dense vectors use cosine distance under the name `dense`.
//! - Writes are batched ([`UPSERT_BATCH`] points per request) and wait for
//!   the store to apply them (`wait=true` on the server; the embedded store
//!   syncs its write-ahead log once per `upsert` call, after all its
//!   batches).
//!
//! Limits of the embedded store (Qdrant Edge 0.7.2), acceptable for one
//! host and modest corpora, the reason production sets `QDRANT_URL`:
//! - Edge runs no background optimizer: the embedded store runs it after
//!   each write call, which seals an appendable segment into an indexed
//!   one once it holds 10,000 KB of sparse vectors (Edge's default, about
//!   25,000 points; each seal takes seconds) and vacuums segments with many
//!   deleted points. Inserts into an appendable segment cost the same at
//!   any size only thanks to the vendored patch (`vendor/README.md`).
//! - Edge writes every update to its write-ahead log (`wal/` in the
//!   collection's directory). As published, 0.7.2 never read it back nor
//!   truncated it; the vendored patch replays it when a shard is loaded
//!   and acknowledges it after each flush of the segments, so a write is
//!   durable once the log is synced (each call) and the log keeps one
//!   closed 32 MB file at most. The segments are flushed at most every
//!   [`EmbeddedStore::SEGMENT_FLUSH_INTERVAL`].
//!
//! Nothing here reads the environment: the caller passes `QDRANT_URL`,
//! `QDRANT_API_KEY` and `DATA_DIR`.

pub mod bm25;
mod embedded;
pub mod fusion;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use bm25::SparseVector;
pub use embedded::EmbeddedStore;
pub use server::ServerStore;

/// Name of the sparse BM25 vector in every collection.
pub const SPARSE_VECTOR: &str = "bm25";
/// Name of the dense vector in collections of an embedding model.
pub const DENSE_VECTOR: &str = "dense";
/// Points per upsert request.
pub const UPSERT_BATCH: usize = 128;
/// Points an ingestion hands to [`VectorStore::upsert`] per call: a call
/// is one flush of the embedded store, so a document's points go in a few
/// large calls rather than many small ones.
pub const INDEX_BATCH: usize = 2048;
/// The collection of sparse-only points (no embedding model configured).
pub const SPARSE_ONLY_COLLECTION: &str = "chunks_bm25";
/// Longest accepted collection name.
pub const MAX_COLLECTION_NAME: usize = 64;

/// Payload keys, as stored.
pub mod keys {
    pub const TENANT_ID: &str = "tenantId";
    pub const AGENT_ID: &str = "agentId";
    pub const DOCUMENT_ID: &str = "documentId";
}

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// The embedded store is owned by another process.
    #[error("{0}")]
    Locked(String),
    #[error(
        "invalid vector collection name '{0}': use 1 to 64 letters, digits, '_' or '-', starting with a letter or digit"
    )]
    InvalidCollectionName(String),
    #[error("vector collection '{0}' does not exist")]
    CollectionNotFound(String),
    #[error("vector collection '{name}' already exists with {existing}, not {requested}")]
    CollectionMismatch {
        name: String,
        existing: String,
        requested: String,
    },
    #[error("invalid vector: {0}")]
    InvalidVector(String),
    #[error("vector store I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded vector store error: {0}")]
    Embedded(String),
    #[error("Qdrant server error: {0}")]
    Server(String),
    #[error("malformed point in the vector store: {0}")]
    Malformed(String),
}

impl VectorError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// What every point carries besides its vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointPayload {
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub document_id: String,
    pub document_name: String,
    pub chunk_index: u32,
    /// 1-based page of PDFs and similar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Worksheet of spreadsheets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    pub text: String,
}

/// One chunk to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: Uuid,
    pub payload: PointPayload,
    pub sparse: SparseVector,
    pub dense: Option<Vec<f32>>,
}

impl Point {
    /// A point with its deterministic id and the BM25 vector of its text.
    pub fn new(payload: PointPayload, dense: Option<Vec<f32>>) -> Self {
        Self {
            id: point_id(
                &payload.tenant_id,
                &payload.document_id,
                payload.chunk_index,
            ),
            sparse: bm25::encode_document(&payload.text),
            payload,
            dense,
        }
    }
}

/// Namespace of point ids (UUID v5); never change it, or re-indexing stops
/// overwriting existing points.
const POINT_NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_51d2_8a57_4c2b_9d0e_3b7a_51c4_e8a1);

/// The id of a document's chunk: the same for every re-indexing.
pub fn point_id(tenant_id: &str, document_id: &str, chunk_index: u32) -> Uuid {
    let name = format!("{tenant_id}\u{1f}{document_id}\u{1f}{chunk_index}");
    Uuid::new_v5(&POINT_NAMESPACE, name.as_bytes())
}

/// A collection: its name and, for an embedding model, the dense dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSpec {
    pub name: String,
    pub dense_dim: Option<usize>,
}

impl CollectionSpec {
    /// The collection without dense vectors (`chunks_bm25`).
    pub fn sparse_only() -> Self {
        Self {
            name: SPARSE_ONLY_COLLECTION.to_owned(),
            dense_dim: None,
        }
    }

    /// The collection of an embedding model: `chunks_<model>_<dim>`, the
    /// model name lower-cased with anything but letters and digits turned
    /// into `_` (and shortened to fit the name limit).
    pub fn for_model(model: &str, dim: usize) -> Self {
        let mut slug = String::new();
        for c in model.chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.is_empty() && !slug.ends_with('_') {
                slug.push('_');
            }
        }
        let suffix = format!("_{dim}");
        let room = MAX_COLLECTION_NAME - "chunks_".len() - suffix.len();
        slug.truncate(room);
        let slug = slug.trim_end_matches('_');
        let slug = if slug.is_empty() { "model" } else { slug };
        Self {
            name: format!("chunks_{slug}{suffix}"),
            dense_dim: Some(dim),
        }
    }
}

/// Collection names are directory names of the embedded store, so both
/// stores accept only `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.
pub fn validate_collection_name(name: &str) -> Result<(), VectorError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_COLLECTION_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(VectorError::InvalidCollectionName(name.to_owned()))
    }
}

/// A hybrid search, always within one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub tenant_id: String,
    pub agent_id: Option<String>,
    pub document_id: Option<String>,
    pub text: String,
    /// The query-side BM25 vector of `text` (see [`SearchQuery::new`]).
    pub sparse: SparseVector,
    /// The query's embedding, in collections of an embedding model.
    pub dense: Option<Vec<f32>>,
    pub limit: usize,
}

impl SearchQuery {
    /// A sparse-only query for `text` within a tenant.
    pub fn new(tenant_id: impl Into<String>, text: impl Into<String>, limit: usize) -> Self {
        let text = text.into();
        Self {
            tenant_id: tenant_id.into(),
            agent_id: None,
            document_id: None,
            sparse: bm25::encode_query(&text),
            text,
            dense: None,
            limit,
        }
    }

    pub fn agent(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }

    pub fn document(mut self, document_id: impl Into<String>) -> Self {
        self.document_id = Some(document_id.into());
        self
    }

    pub fn dense(mut self, vector: Vec<f32>) -> Self {
        self.dense = Some(vector);
        self
    }

    pub(crate) fn scope(&self) -> Scope<'_> {
        Scope {
            tenant_id: &self.tenant_id,
            agent_id: self.agent_id.as_deref(),
            document_id: self.document_id.as_deref(),
        }
    }

    /// Candidates fetched from each list before fusion.
    pub(crate) fn candidates(&self) -> usize {
        self.limit.saturating_mul(4).clamp(40, 1000).max(self.limit)
    }
}

/// A search result: the chunk and its fused (RRF) score.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    pub score: f32,
    pub payload: PointPayload,
}

/// The filter every operation applies: a tenant, optionally narrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub tenant_id: &'a str,
    pub agent_id: Option<&'a str>,
    pub document_id: Option<&'a str>,
}

impl<'a> Scope<'a> {
    pub(crate) fn conditions(&self) -> Vec<(&'static str, &'a str)> {
        let mut conditions = vec![(keys::TENANT_ID, self.tenant_id)];
        if let Some(agent) = self.agent_id {
            conditions.push((keys::AGENT_ID, agent));
        }
        if let Some(document) = self.document_id {
            conditions.push((keys::DOCUMENT_ID, document));
        }
        conditions
    }
}

#[async_trait]
pub trait VectorStore: Send + Sync + std::fmt::Debug {
    /// Creates the collection when missing; fails when it exists with
    /// another dense dimension.
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), VectorError>;

    /// Inserts or overwrites points, in batches of [`UPSERT_BATCH`].
    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<(), VectorError>;

    /// Removes every chunk of a document.
    async fn delete_document(
        &self,
        collection: &str,
        tenant_id: &str,
        document_id: &str,
    ) -> Result<(), VectorError>;

    /// Removes every chunk indexed for an agent.
    async fn delete_agent(
        &self,
        collection: &str,
        tenant_id: &str,
        agent_id: &str,
    ) -> Result<(), VectorError>;

    /// Points of a tenant, or of one of its documents.
    async fn count(
        &self,
        collection: &str,
        tenant_id: &str,
        document_id: Option<&str>,
    ) -> Result<u64, VectorError>;

    /// Hybrid search (see the crate documentation), best hits first.
    async fn search(&self, collection: &str, query: &SearchQuery) -> Result<Vec<Hit>, VectorError>;

    /// Removes a whole collection (e.g. the previous model's after a
    /// switch-over). Missing collections are not an error.
    async fn drop_collection(&self, collection: &str) -> Result<(), VectorError>;
}

/// The store of this process: the Qdrant server at `qdrant_url` when set
/// (checked to answer), otherwise the embedded store under
/// `<data_dir>/vectors/` (owned by this process until it is dropped).
pub async fn connect(
    qdrant_url: Option<&str>,
    api_key: Option<&str>,
    data_dir: &Path,
) -> Result<Arc<dyn VectorStore>, VectorError> {
    match qdrant_url.map(str::trim).filter(|url| !url.is_empty()) {
        Some(url) => Ok(Arc::new(ServerStore::connect(url, api_key).await?)),
        None => Ok(Arc::new(EmbeddedStore::open(data_dir).await?)),
    }
}

/// Runs the sparse search and, when the query has a dense vector, the
/// dense search, and fuses both lists.
pub(crate) async fn hybrid_search<F, Fut>(
    query: &SearchQuery,
    search_one: F,
) -> Result<Vec<Hit>, VectorError>
where
    F: Fn(Named) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Hit>, VectorError>>,
{
    let mut lists = Vec::with_capacity(2);
    for vector in hybrid_vectors(query) {
        lists.push(search_one(vector).await?);
    }
    Ok(fuse(query, &lists))
}

/// The searches a hybrid query runs, one list each: the sparse one unless
/// its vector is empty, the dense one when it has a dense vector; none
/// when it asks for no hit.
pub(crate) fn hybrid_vectors(query: &SearchQuery) -> Vec<Named> {
    let mut vectors = Vec::with_capacity(2);
    if query.limit == 0 {
        return vectors;
    }
    if !query.sparse.is_empty() {
        vectors.push(Named::Sparse(query.sparse.clone()));
    }
    if let Some(dense) = &query.dense {
        vectors.push(Named::Dense(dense.clone()));
    }
    vectors
}

/// The hits of a hybrid query, from the lists of [`hybrid_vectors`].
pub(crate) fn fuse(query: &SearchQuery, lists: &[Vec<Hit>]) -> Vec<Hit> {
    fusion::rrf(lists, fusion::RRF_K, query.limit)
}

/// One of a point's named vectors, as a query.
#[derive(Debug, Clone)]
pub(crate) enum Named {
    Sparse(SparseVector),
    Dense(Vec<f32>),
}

pub(crate) fn check_sparse(v: &SparseVector) -> Result<(), VectorError> {
    if v.indices.len() != v.values.len() {
        return Err(VectorError::InvalidVector(format!(
            "sparse vector has {} indices but {} values",
            v.indices.len(),
            v.values.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_deterministic_and_distinct() {
        let a = point_id("t1", "d1", 0);
        assert_eq!(a, point_id("t1", "d1", 0));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, point_id("t1", "d1", 1));
        assert_ne!(a, point_id("t2", "d1", 0));
        assert_ne!(point_id("t1", "d11", 0), point_id("t1", "d1", 10));
    }

    #[test]
    fn collection_names() {
        assert_eq!(CollectionSpec::sparse_only().name, "chunks_bm25");
        let spec = CollectionSpec::for_model("text-embedding-3-small", 1536);
        assert_eq!(spec.name, "chunks_text_embedding_3_small_1536");
        assert_eq!(spec.dense_dim, Some(1536));
        assert_eq!(
            CollectionSpec::for_model("BAAI/bge-m3", 1024).name,
            "chunks_baai_bge_m3_1024"
        );
        assert_eq!(CollectionSpec::for_model("//", 8).name, "chunks_model_8");
        let long = CollectionSpec::for_model(&"x".repeat(200), 3072);
        assert!(long.name.len() <= MAX_COLLECTION_NAME);
        for spec in [long, spec, CollectionSpec::sparse_only()] {
            validate_collection_name(&spec.name).expect("valid");
        }
        for bad in ["", "../x", "a b", "_x", &"y".repeat(65)] {
            assert!(validate_collection_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payload_uses_camel_case_and_omits_absent_fields() {
        let payload = PointPayload {
            tenant_id: "t".into(),
            agent_id: None,
            document_id: "d".into(),
            document_name: "faq.pdf".into(),
            chunk_index: 3,
            page: Some(2),
            sheet: None,
            text: "hello".into(),
        };
        let json = serde_json::to_value(&payload).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "tenantId": "t", "documentId": "d", "documentName": "faq.pdf",
                "chunkIndex": 3, "page": 2, "text": "hello"
            })
        );
        let back: PointPayload = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, payload);
    }
}
