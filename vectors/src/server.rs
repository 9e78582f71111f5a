//! The server store: a Qdrant server over gRPC (`qdrant-client`).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeleteCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter,
    KeywordIndexParamsBuilder, Modifier, PointStruct, Query, QueryPointsBuilder, ScoredPoint,
    SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector,
    VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use uuid::Uuid;

use crate::{
    CollectionSpec, DENSE_VECTOR, Hit, Named, Point, PointPayload, SPARSE_VECTOR, Scope,
    SearchQuery, UPSERT_BATCH, VectorError, VectorStore, check_sparse, hybrid_search, keys,
    validate_collection_name,
};

/// A Qdrant server shared by every process.
pub struct ServerStore {
    client: Qdrant,
    url: String,
}

impl std::fmt::Debug for ServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn server_error(context: &str) -> impl Fn(QdrantError) -> VectorError + '_ {
    move |e| VectorError::Server(format!("{context}: {e}"))
}

fn is_not_found(e: &QdrantError) -> bool {
    matches!(e, QdrantError::ResponseError { status } if status.code() == tonic::Code::NotFound)
}

impl ServerStore {
    /// Connects to the gRPC endpoint at `url` (e.g. `http://localhost:6334`)
    /// and checks that the server answers.
    pub async fn connect(url: &str, api_key: Option<&str>) -> Result<Self, VectorError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key.filter(|k| !k.is_empty()))
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .skip_compatibility_check()
            .build()
            .map_err(|e| VectorError::Server(format!("invalid QDRANT_URL '{url}': {e}")))?;
        let health = client
            .health_check()
            .await
            .map_err(|e| VectorError::Server(format!("cannot reach Qdrant at {url}: {e}")))?;
        tracing::info!(url, version = %health.version, "connected to Qdrant");
        Ok(Self {
            client,
            url: url.to_owned(),
        })
    }

    async fn existing_dense_dim(&self, name: &str) -> Result<Option<usize>, VectorError> {
        let info = self
            .client
            .collection_info(name)
            .await
            .map_err(server_error("cannot read the collection"))?;
        let vectors = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        Ok(match vectors {
            Some(VectorsConfigKind::ParamsMap(map)) => {
                map.map.get(DENSE_VECTOR).map(|p| p.size as usize)
            }
            Some(VectorsConfigKind::Params(p)) => Some(p.size as usize),
            None => None,
        })
    }

    async fn delete(&self, collection: &str, filter: Filter) -> Result<(), VectorError> {
        validate_collection_name(collection)?;
        self.client
            .delete_points(
                DeletePointsBuilder::new(collection)
                    .points(filter)
                    .wait(true),
            )
            .await
            .map_err(|e| not_found_or(collection, e, "delete failed"))?;
        Ok(())
    }

    async fn search_one(
        &self,
        collection: &str,
        vector: Named,
        filter: Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, VectorError> {
        let (using, input) = match vector {
            Named::Sparse(sparse) => {
                check_sparse(&sparse)?;
                (
                    SPARSE_VECTOR,
                    VectorInput::new_sparse(sparse.indices, sparse.values),
                )
            }
            Named::Dense(dense) => (DENSE_VECTOR, VectorInput::new_dense(dense)),
        };
        let response = self
            .client
            .query(
                QueryPointsBuilder::new(collection)
                    .query(Query::new_nearest(input))
                    .using(using)
                    .filter(filter)
                    .limit(limit as u64)
                    .with_payload(true),
            )
            .await
            .map_err(|e| not_found_or(collection, e, "search failed"))?;
        response.result.into_iter().map(to_hit).collect()
    }
}

fn not_found_or(collection: &str, e: QdrantError, context: &str) -> VectorError {
    if is_not_found(&e) {
        VectorError::CollectionNotFound(collection.to_owned())
    } else {
        VectorError::Server(format!("{context}: {e}"))
    }
}

fn filter(scope: &Scope<'_>) -> Filter {
    Filter::must(
        scope
            .conditions()
            .into_iter()
            .map(|(key, value)| Condition::matches(key, value.to_owned())),
    )
}

fn to_server_point(point: Point) -> Result<PointStruct, VectorError> {
    check_sparse(&point.sparse)?;
    let mut vectors: HashMap<String, Vector> = HashMap::from([(
        SPARSE_VECTOR.to_owned(),
        Vector::new_sparse(point.sparse.indices, point.sparse.values),
    )]);
    if let Some(dense) = point.dense {
        vectors.insert(DENSE_VECTOR.to_owned(), Vector::new_dense(dense));
    }
    let payload = match serde_json::to_value(&point.payload) {
        Ok(serde_json::Value::Object(map)) => Payload::from(map),
        Ok(_) => {
            return Err(VectorError::Malformed(
                "payload is not an object".to_owned(),
            ));
        }
        Err(e) => return Err(VectorError::Malformed(e.to_string())),
    };
    Ok(PointStruct::new(point.id.to_string(), vectors, payload))
}

fn to_hit(point: ScoredPoint) -> Result<Hit, VectorError> {
    let id = match point.id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Uuid(id)) => Uuid::parse_str(&id)
            .map_err(|e| VectorError::Malformed(format!("point id '{id}': {e}")))?,
        Some(PointIdOptions::Num(n)) => {
            return Err(VectorError::Malformed(format!(
                "unexpected numeric point id {n}"
            )));
        }
        None => return Err(VectorError::Malformed("a point without id".to_owned())),
    };
    let payload: PointPayload = Payload::from(point.payload)
        .deserialize()
        .map_err(|e| VectorError::Malformed(format!("point {id}: {e}")))?;
    Ok(Hit {
        id,
        score: point.score,
        payload,
    })
}

#[async_trait]
impl VectorStore for ServerStore {
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), VectorError> {
        let name = spec.name.as_str();
        validate_collection_name(name)?;
        let exists = self
            .client
            .collection_exists(name)
            .await
            .map_err(server_error("cannot check the collection"))?;
        if !exists {
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(
                SPARSE_VECTOR,
                SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
            );
            let mut create = CreateCollectionBuilder::new(name).sparse_vectors_config(sparse);
            if let Some(dim) = spec.dense_dim {
                let mut dense = VectorsConfigBuilder::default();
                dense.add_named_vector_params(
                    DENSE_VECTOR,
                    VectorParamsBuilder::new(dim as u64, Distance::Cosine),
                );
                create = create.vectors_config(dense);
            }
            if let Err(e) = self.client.create_collection(create).await {
                // Another process may have created it meanwhile.
                let exists_now = self
                    .client
                    .collection_exists(name)
                    .await
                    .map_err(server_error("cannot check the collection"))?;
                if !exists_now {
                    return Err(server_error("cannot create the collection")(e));
                }
            } else {
                tracing::info!(collection = name, dense_dim = ?spec.dense_dim, "vector collection created");
            }
        }
        let existing = self.existing_dense_dim(name).await?;
        if existing != spec.dense_dim {
            let describe = |dim: Option<usize>| match dim {
                Some(dim) => format!("dense vectors of {dim} dimensions"),
                None => "no dense vectors".to_owned(),
            };
            return Err(VectorError::CollectionMismatch {
                name: name.to_owned(),
                existing: describe(existing),
                requested: describe(spec.dense_dim),
            });
        }
        // Idempotent: an existing index is left as it is.
        for key in [keys::TENANT_ID, keys::AGENT_ID, keys::DOCUMENT_ID] {
            let mut index =
                CreateFieldIndexCollectionBuilder::new(name, key, FieldType::Keyword).wait(true);
            if key == keys::TENANT_ID {
                index =
                    index.field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true));
            }
            self.client
                .create_field_index(index)
                .await
                .map_err(server_error("cannot create a payload index"))?;
        }
        Ok(())
    }

    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<(), VectorError> {
        validate_collection_name(collection)?;
        let mut points = points.into_iter().peekable();
        while points.peek().is_some() {
            let batch = points
                .by_ref()
                .take(UPSERT_BATCH)
                .map(to_server_point)
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .upsert_points(UpsertPointsBuilder::new(collection, batch).wait(true))
                .await
                .map_err(|e| not_found_or(collection, e, "upsert failed"))?;
        }
        Ok(())
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
        });
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
        });
        self.delete(collection, filter).await
    }

    async fn count(
        &self,
        collection: &str,
        tenant_id: &str,
        document_id: Option<&str>,
    ) -> Result<u64, VectorError> {
        validate_collection_name(collection)?;
        let filter = filter(&Scope {
            tenant_id,
            agent_id: None,
            document_id,
        });
        let response = self
            .client
            .count(
                CountPointsBuilder::new(collection)
                    .filter(filter)
                    .exact(true),
            )
            .await
            .map_err(|e| not_found_or(collection, e, "count failed"))?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    async fn search(&self, collection: &str, query: &SearchQuery) -> Result<Vec<Hit>, VectorError> {
        validate_collection_name(collection)?;
        let filter = filter(&query.scope());
        let limit = query.candidates();
        hybrid_search(query, |vector| {
            self.search_one(collection, vector, filter.clone(), limit)
        })
        .await
    }

    async fn drop_collection(&self, collection: &str) -> Result<(), VectorError> {
        validate_collection_name(collection)?;
        match self
            .client
            .delete_collection(DeleteCollectionBuilder::new(collection))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(server_error("cannot delete the collection")(e)),
        }
    }
}
