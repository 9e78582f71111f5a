//! The embedded store: Qdrant Edge shards under `<data_dir>/vectors/`.
//!
//! Layout: `<data_dir>/vectors/LOCK` (the ownership lock) and one Edge
//! shard per collection in `<data_dir>/vectors/collections/<name>/`.
//!
//! Qdrant Edge is synchronous, so every call runs on tokio's blocking pool.
//! Writes to one shard are serialised (Edge's `flush` expects no concurrent
//! update). Each call's writes are durable before `upsert` or a delete
//! returns: Edge writes every update to its write-ahead log first, and the
//! call syncs that log. The segments themselves are flushed at most every
//! [`EmbeddedStore::SEGMENT_FLUSH_INTERVAL`] (and when the store is dropped); a shard
//! loaded after a crash replays the log past its last flush (the vendored
//! Edge, vendor/README.md). Searches and counts run concurrently with
//! writes.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeOptimizersConfig, EdgeShard,
    EdgeSparseVectorParams, EdgeVectorParams, FieldCondition, FieldIndexOperations, Filter,
    JsonPath, Match, Modifier, NamedQuery, OperationError, Payload, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointInsertOperations, PointOperations, PointStructPersisted,
    QueryEnum, QueryRequest, ScoredPoint, ScoringQuery, UpdateOperation, ValueVariants, Vector,
    VectorInternal, VectorStructInternal, VectorStructPersisted, WithPayloadInterface, WithVector,
};

use crate::{
    CollectionSpec, DENSE_VECTOR, Hit, Named, Point, PointPayload, SPARSE_VECTOR, Scope,
    SearchQuery, UPSERT_BATCH, VectorError, VectorStore, check_sparse, fuse, hybrid_vectors, keys,
    validate_collection_name,
};

/// Sparse vectors (KB) an appendable segment holds before [`Shard::write_all`]
/// has Edge's optimizer turn it into an immutable, indexed one: Edge's
/// default, about 25,000 points of BM25 vectors. It was 1,000 while
/// Edge's appendable sparse index rewrote a term's whole posting list on
/// every insert (0.14 ms per point for the first 1,600 points, 0.84 ms past
/// 5,600); the vendored patch (vendor/README.md) made inserts cost the same
/// at any size, and each seal costs seconds, so seals are now rare.
const INDEXING_THRESHOLD_KB: usize = 10_000;
/// Segments the optimizer keeps before merging: high, so that the merges
/// that rewrite everything are rare.
const SEGMENTS: usize = 32;

fn optimizers() -> EdgeOptimizersConfig {
    EdgeOptimizersConfig {
        indexing_threshold: Some(INDEXING_THRESHOLD_KB),
        default_segment_number: Some(SEGMENTS),
        ..EdgeOptimizersConfig::default()
    }
}

/// The file Edge writes its configuration to when it creates a shard.
const EDGE_CONFIG_FILE: &str = "edge_config.json";

/// Qdrant Edge under a data directory, owned by this process until the
/// store is dropped.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    shards: Mutex<HashMap<String, Arc<Shard>>>,
    /// Held open (and locked) for the life of the store. Declared last so
    /// that the shards are flushed and closed before the lock is released.
    _lock: File,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

struct Shard {
    edge: EdgeShard,
    /// Serialises updates and flushes; holds when the segments were last
    /// flushed.
    writes: Mutex<Instant>,
    dense_dim: Option<usize>,
}

fn edge_error(context: &str) -> impl Fn(OperationError) -> VectorError + '_ {
    move |e| VectorError::Embedded(format!("{context}: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VectorError> + Send + 'static,
) -> Result<T, VectorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VectorError::Embedded(format!("the vector store task failed: {e}")))?
}

impl EmbeddedStore {
    /// How long a shard's segments may hold writes that only its write-ahead
    /// log has on disk. A segment flush writes out every changed file and
    /// syncs each one (48 syncs for a Word document's points, a third to a
    /// half of its indexing time); the log is one file. Qdrant's own
    /// default; it also bounds what a load replays after a crash.
    pub const SEGMENT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

    /// Opens (creating when missing) the store under `<data_dir>/vectors/`
    /// and takes ownership of it. Fails with [`VectorError::Locked`] when
    /// another process (or another store in this process) owns it.
    pub async fn open(data_dir: &Path) -> Result<Self, VectorError> {
        let data_dir = data_dir.to_owned();
        let inner = blocking(move || Inner::open(&data_dir)).await?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Where the store keeps its files (`<data_dir>/vectors`).
    pub fn path(&self) -> &Path {
        &self.inner.root
    }

    async fn shard_async(&self, name: &str) -> Result<Arc<Shard>, VectorError> {
        if let Some(shard) = self.inner.open_shard(name) {
            return Ok(shard);
        }
        let inner = self.inner.clone();
        let name = name.to_owned();
        blocking(move || inner.shard(&name)).await
    }

    async fn delete(&self, collection: &str, filter: Filter) -> Result<(), VectorError> {
        let shard = self.shard_async(collection).await?;
        blocking(move || {
            shard.write(UpdateOperation::PointOperation(
                PointOperations::DeletePointsByFilter(filter),
            ))
        })
        .await
    }
}

impl Inner {
    fn open(data_dir: &Path) -> Result<Self, VectorError> {
        let root = data_dir.join("vectors");
        let collections = root.join("collections");
        fs::create_dir_all(&collections).map_err(|e| VectorError::io(&collections, e))?;
        let lock_path = root.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| VectorError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(VectorError::Locked(format!(
                    "the embedded vector store at {} is owned by another process (the workers); \
                     set QDRANT_URL to share a Qdrant server between processes",
                    root.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(VectorError::io(&lock_path, e)),
        }
        tracing::info!(path = %root.display(), "embedded vector store opened");
        Ok(Self {
            root,
            shards: Mutex::new(HashMap::new()),
            _lock: lock,
        })
    }

    fn shard_path(&self, name: &str) -> PathBuf {
        self.root.join("collections").join(name)
    }

    /// The shard `name` when it is open and the map is free this instant,
    /// found without the blocking pool. The map stays locked while a shard
    /// loads from disk, so an async caller never waits for it: it goes to
    /// the blocking pool ([`Inner::shard`]) instead.
    fn open_shard(&self, name: &str) -> Option<Arc<Shard>> {
        self.shards.try_lock().ok()?.get(name).cloned()
    }

    /// The open shard of a collection, loading it from disk on first use.
    fn shard(&self, name: &str) -> Result<Arc<Shard>, VectorError> {
        validate_collection_name(name)?;
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shard) = shards.get(name) {
            return Ok(shard.clone());
        }
        let path = self.shard_path(name);
        if !path.join(EDGE_CONFIG_FILE).exists() {
            return Err(VectorError::CollectionNotFound(name.to_owned()));
        }
        let shard = Arc::new(load_shard(&path, name)?);
        shards.insert(name.to_owned(), shard.clone());
        Ok(shard)
    }

    fn ensure(&self, spec: &CollectionSpec) -> Result<(), VectorError> {
        validate_collection_name(&spec.name)?;
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let shard = match shards.get(&spec.name) {
            Some(shard) => shard.clone(),
            None => {
                let path = self.shard_path(&spec.name);
                let shard = if path.join(EDGE_CONFIG_FILE).exists() {
                    load_shard(&path, &spec.name)?
                } else {
                    create_shard(&path, spec)?
                };
                let shard = Arc::new(shard);
                shards.insert(spec.name.clone(), shard.clone());
                shard
            }
        };
        if shard.dense_dim != spec.dense_dim {
            return Err(VectorError::CollectionMismatch {
                name: spec.name.clone(),
                existing: describe_dim(shard.dense_dim),
                requested: describe_dim(spec.dense_dim),
            });
        }
        Ok(())
    }

    fn drop_collection(&self, name: &str) -> Result<(), VectorError> {
        validate_collection_name(name)?;
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        // Dropping the last handle flushes the shard; in-flight operations
        // holding another handle fail once the files are gone.
        drop(shards.remove(name));
        let path = self.shard_path(name);
        match fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VectorError::io(&path, e)),
        }
    }
}

fn describe_dim(dim: Option<usize>) -> String {
    match dim {
        Some(dim) => format!("dense vectors of {dim} dimensions"),
        None => "no dense vectors".to_owned(),
    }
}

fn create_shard(path: &Path, spec: &CollectionSpec) -> Result<Shard, VectorError> {
    fs::create_dir_all(path).map_err(|e| VectorError::io(path, e))?;
    let mut config = EdgeConfig::builder()
        .optimizers(optimizers())
        .sparse_vector(
            SPARSE_VECTOR,
            EdgeSparseVectorParams::builder()
                .modifier(Modifier::Idf)
                .build(),
        );
    if let Some(dim) = spec.dense_dim {
        if dim == 0 {
            return Err(VectorError::InvalidVector(
                "a dense dimension must be at least 1".to_owned(),
            ));
        }
        config = config.vector(
            DENSE_VECTOR,
            EdgeVectorParams::builder(dim, Distance::Cosine).build(),
        );
    }
    let edge = EdgeShard::new(path, config.build())
        .map_err(edge_error(&format!("cannot create {}", path.display())))?;
    for key in [keys::TENANT_ID, keys::AGENT_ID, keys::DOCUMENT_ID] {
        edge.update(UpdateOperation::FieldIndexOperation(
            FieldIndexOperations::CreateIndex(CreateIndex {
                field_name: json_path(key)?,
                field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)),
            }),
        ))
        .map_err(edge_error("cannot create a payload index"))?;
    }
    edge.flush();
    tracing::info!(collection = %spec.name, dense_dim = ?spec.dense_dim, "vector collection created");
    Ok(Shard {
        edge,
        writes: Mutex::new(Instant::now()),
        dense_dim: spec.dense_dim,
    })
}

fn load_shard(path: &Path, name: &str) -> Result<Shard, VectorError> {
    let edge = EdgeShard::load(path, None)
        .map_err(edge_error(&format!("cannot load {}", path.display())))?;
    // Shards created before the optimizer was configured get it too.
    if edge.config().optimizers != optimizers() {
        edge.set_optimizers_config(optimizers())
            .map_err(edge_error("cannot configure the optimizer"))?;
    }
    let (has_sparse, dense_dim) = {
        let config = edge.config();
        (
            config.sparse_vectors.contains_key(SPARSE_VECTOR),
            config.vectors.get(DENSE_VECTOR).map(|v| v.size),
        )
    };
    if !has_sparse {
        return Err(VectorError::Embedded(format!(
            "the files of collection '{name}' at {} have no '{SPARSE_VECTOR}' vector; \
             they were not written by this store",
            path.display()
        )));
    }
    Ok(Shard {
        edge,
        writes: Mutex::new(Instant::now()),
        dense_dim,
    })
}

fn json_path(key: &str) -> Result<JsonPath, VectorError> {
    key.parse()
        .map_err(|()| VectorError::Embedded(format!("invalid payload key '{key}'")))
}

fn filter(scope: &Scope<'_>) -> Result<Filter, VectorError> {
    let must = scope
        .conditions()
        .into_iter()
        .map(|(key, value)| {
            Ok(Condition::Field(FieldCondition::new_match(
                json_path(key)?,
                Match::new_value(ValueVariants::String(value.to_owned())),
            )))
        })
        .collect::<Result<Vec<_>, VectorError>>()?;
    Ok(Filter {
        should: None,
        min_should: None,
        must: Some(must),
        must_not: None,
    })
}

fn to_edge_point(
    point: Point,
    dense_dim: Option<usize>,
) -> Result<PointStructPersisted, VectorError> {
    check_sparse(&point.sparse)?;
    let sparse = Vector::new_sparse(point.sparse.indices, point.sparse.values)
        .map_err(|e| VectorError::InvalidVector(e.to_string()))?;
    let mut vectors = HashMap::from([(SPARSE_VECTOR.to_owned(), sparse.0)]);
    if let Some(dense) = point.dense {
        match dense_dim {
            Some(dim) if dim == dense.len() => {}
            Some(dim) => {
                return Err(VectorError::InvalidVector(format!(
                    "dense vector has {} dimensions, the collection expects {dim}",
                    dense.len()
                )));
            }
            None => {
                return Err(VectorError::InvalidVector(
                    "a dense vector was given for a collection without dense vectors".to_owned(),
                ));
            }
        }
        vectors.insert(DENSE_VECTOR.to_owned(), VectorInternal::Dense(dense));
    }
    let payload = match serde_json::to_value(&point.payload) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => {
            return Err(VectorError::Malformed(
                "payload is not an object".to_owned(),
            ));
        }
        Err(e) => return Err(VectorError::Malformed(e.to_string())),
    };
    Ok(PointStructPersisted {
        id: PointId::Uuid(point.id),
        vector: VectorStructPersisted::from(VectorStructInternal::Named(vectors)),
        payload: Some(Payload(payload)),
    })
}

fn to_hit(point: ScoredPoint) -> Result<Hit, VectorError> {
    let id = match point.id {
        PointId::Uuid(id) => id,
        PointId::NumId(n) => {
            return Err(VectorError::Malformed(format!(
                "unexpected numeric point id {n}"
            )));
        }
    };
    let payload = point
        .payload
        .ok_or_else(|| VectorError::Malformed(format!("point {id} has no payload")))?;
    let payload: PointPayload = serde_json::from_value(serde_json::Value::Object(payload.0))
        .map_err(|e| VectorError::Malformed(format!("point {id}: {e}")))?;
    Ok(Hit {
        id,
        score: point.score,
        payload,
    })
}

impl Shard {
    fn write(&self, operation: UpdateOperation) -> Result<(), VectorError> {
        self.write_all(vec![operation])
    }

    /// Applies the operations in order and syncs the write-ahead log once,
    /// so the call's writes are durable when it returns. The segments are
    /// flushed instead (which syncs the log too) when the optimizer rewrote
    /// them or the last flush is [`EmbeddedStore::SEGMENT_FLUSH_INTERVAL`]
    /// old.
    fn write_all(&self, operations: Vec<UpdateOperation>) -> Result<(), VectorError> {
        let mut flushed_at = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        for operation in operations {
            self.edge
                .update(operation)
                .map_err(edge_error("update failed"))?;
        }
        // Plans nothing (a look at the segments' sizes) until the
        // appendable segment passes the threshold.
        let optimized = self
            .edge
            .optimize()
            .map_err(edge_error("optimization failed"))?;
        if optimized || flushed_at.elapsed() >= EmbeddedStore::SEGMENT_FLUSH_INTERVAL {
            self.edge.flush();
            *flushed_at = Instant::now();
        } else {
            self.edge
                .flush_wal()
                .map_err(edge_error("cannot sync the write-ahead log"))?;
        }
        Ok(())
    }

    fn search(&self, vector: Named, filter: Filter, limit: usize) -> Result<Vec<Hit>, VectorError> {
        let (name, vector) = match vector {
            Named::Sparse(sparse) => {
                check_sparse(&sparse)?;
                let v = Vector::new_sparse(sparse.indices, sparse.values)
                    .map_err(|e| VectorError::InvalidVector(e.to_string()))?;
                (SPARSE_VECTOR, v.0)
            }
            Named::Dense(dense) => match self.dense_dim {
                Some(dim) if dim == dense.len() => (DENSE_VECTOR, VectorInternal::Dense(dense)),
                Some(dim) => {
                    return Err(VectorError::InvalidVector(format!(
                        "the dense query has {} dimensions, the collection expects {dim}",
                        dense.len()
                    )));
                }
                None => {
                    return Err(VectorError::InvalidVector(
                        "a dense query was given for a collection without dense vectors".to_owned(),
                    ));
                }
            },
        };
        let request = QueryRequest {
            prefetches: Vec::new(),
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                vector, name,
            )))),
            filter: Some(filter),
            score_threshold: None,
            limit,
            offset: 0,
            params: None,
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(true),
        };
        self.edge
            .query(request)
            .map_err(edge_error("search failed"))?
            .into_iter()
            .map(to_hit)
            .collect()
    }
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), VectorError> {
        // Every search ensures its collection first: an open one that
        // matches needs no trip to the blocking pool.
        if self
            .inner
            .open_shard(&spec.name)
            .is_some_and(|shard| shard.dense_dim == spec.dense_dim)
        {
            return Ok(());
        }
        let spec = spec.clone();
        let inner = self.inner.clone();
        blocking(move || inner.ensure(&spec)).await
    }

    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        let shard = self.shard_async(collection).await?;
        blocking(move || {
            // Every point is checked before any is written.
            let points = points
                .into_iter()
                .map(|p| to_edge_point(p, shard.dense_dim))
                .collect::<Result<Vec<_>, _>>()?;
            let mut points = points.into_iter().peekable();
            let mut operations = Vec::new();
            while points.peek().is_some() {
                let batch: Vec<_> = points.by_ref().take(UPSERT_BATCH).collect();
                operations.push(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(batch)),
                ));
            }
            shard.write_all(operations)
        })
        .await
    }

    async fn delete_document(
        &self,
        collection: &str,
        tenant_id: &str,
        document_id: &str,
    ) -> Result<(), VectorError> {
        let filter = filter(&Scope {
            tenant_id,
            agent_id: None,
            document_id: Some(document_id),
        })?;
        self.delete(collection, filter).await
    }

    async fn delete_agent(
        &self,
        collection: &str,
        tenant_id: &str,
        agent_id: &str,
    ) -> Result<(), VectorError> {
        let filter = filter(&Scope {
            tenant_id,
            agent_id: Some(agent_id),
            document_id: None,
        })?;
        self.delete(collection, filter).await
    }

    async fn count(
        &self,
        collection: &str,
        tenant_id: &str,
        document_id: Option<&str>,
    ) -> Result<u64, VectorError> {
        let filter = filter(&Scope {
            tenant_id,
            agent_id: None,
            document_id,
        })?;
        let shard = self.shard_async(collection).await?;
        blocking(move || {
            let count = shard
                .edge
                .count(CountRequest {
                    filter: Some(filter),
                    exact: true,
                })
                .map_err(edge_error("count failed"))?;
            Ok(count as u64)
        })
        .await
    }

    async fn search(&self, collection: &str, query: &SearchQuery) -> Result<Vec<Hit>, VectorError> {
        let shard = self.shard_async(collection).await?;
        let filter = filter(&query.scope())?;
        let limit = query.candidates();
        let vectors = hybrid_vectors(query);
        if vectors.is_empty() {
            return Ok(Vec::new());
        }
        // One trip to the blocking pool for both searches: a search of a
        // small collection takes less time than the handoff.
        let lists = blocking(move || {
            vectors
                .into_iter()
                .map(|vector| shard.search(vector, filter.clone(), limit))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        Ok(fuse(query, &lists))
    }

    async fn drop_collection(&self, collection: &str) -> Result<(), VectorError> {
        let inner = self.inner.clone();
        let name = collection.to_owned();
        blocking(move || inner.drop_collection(&name)).await
    }
}
