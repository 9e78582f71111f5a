//! Which vector collection a tenant's knowledge is searched in.
//!
//! One collection per embedding model and dimension (named by the vectors
//! crate's `CollectionSpec`), shared by tenants (every point carries its
//! tenant). A tenant's record says which collection is `active` (searched)
//! and, while its documents are being re-indexed for a new embedding
//! model, the `target` they are written to; when the last document is in,
//! the target becomes active. Without a record the tenant is on the BM25
//! collection.

use bson::doc;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use aigentable_vectors::{CollectionSpec, Hit, SearchQuery, VectorError, VectorStore};

use super::{LlmClient, LlmConfig};
use crate::Platform;
use crate::db::{Db, DbError, DbResult, TenantOwned};
use crate::ids::TenantId;
use crate::model::AiProvider;

pub const COLLECTION: &str = "knowledge_indexes";

/// A vector collection and the embedding model whose vectors it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexedModel {
    pub collection: String,
    /// `None`: BM25 only.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub dims: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeIndex {
    /// The tenant id: one record per tenant.
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub active: IndexedModel,
    #[serde(default)]
    pub target: Option<IndexedModel>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl TenantOwned for KnowledgeIndex {
    const COLLECTION: &'static str = COLLECTION;
    const LIVE_CONFIG: bool = true;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

impl IndexedModel {
    /// The BM25-only collection every tenant starts on.
    pub fn sparse() -> Self {
        Self {
            collection: CollectionSpec::sparse_only().name,
            model: None,
            dims: None,
        }
    }

    pub fn spec(&self) -> CollectionSpec {
        CollectionSpec {
            name: self.collection.clone(),
            dense_dim: self.dims.and_then(|d| usize::try_from(d).ok()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
}

/// Top passages of the tenant's knowledge (agent-filtered when given), in
/// the tenant's searched collection: BM25 always, fused with the query's
/// dense vector when that collection holds an embedding model's vectors.
/// The api (with a Qdrant server) and the workers both search through here.
pub async fn search(
    platform: &Platform,
    store: &dyn VectorStore,
    tenant: &TenantId,
    agent_id: Option<&str>,
    query: &str,
    limit: usize,
) -> Result<Vec<Hit>, SearchError> {
    let active = platform
        .live
        .index(&platform.db, tenant)
        .await?
        .map_or_else(IndexedModel::sparse, |r| r.active.clone());
    let spec = active.spec();
    store.ensure_collection(&spec).await?;
    let mut search = SearchQuery::new(tenant.as_str(), query.to_owned(), limit);
    if let Some(agent) = agent_id {
        search = search.agent(agent.to_owned());
    }
    if let Some(vector) = query_vector(platform, &platform.config.llm, tenant, &active, query).await
    {
        search = search.dense(vector);
    }
    Ok(store.search(&spec.name, &search).await?)
}

pub async fn load(db: &Db, tenant: &TenantId) -> DbResult<Option<KnowledgeIndex>> {
    db.scoped::<KnowledgeIndex>(tenant)
        .find_by_id(tenant.as_str())
        .await
}

/// Writes `active` and `target`, creating the record when missing.
pub async fn save(
    db: &Db,
    tenant: &TenantId,
    active: &IndexedModel,
    target: Option<&IndexedModel>,
) -> DbResult<KnowledgeIndex> {
    let indexes = db.scoped::<KnowledgeIndex>(tenant);
    let set = doc! {
        "active": bson::to_bson(active).map_err(|e| DbError::Codec(e.to_string()))?,
        "target": bson::to_bson(&target).map_err(|e| DbError::Codec(e.to_string()))?,
        "updatedAt": bson::DateTime::now(),
    };
    for _ in 0..2 {
        if let Some(updated) = indexes
            .update_by_id(tenant.as_str(), doc! { "$set": set.clone() })
            .await?
        {
            return Ok(updated);
        }
        let record = KnowledgeIndex {
            id: tenant.to_string(),
            tenant_id: tenant.clone(),
            active: active.clone(),
            target: target.cloned(),
            updated_at: Utc::now(),
        };
        match indexes.insert(&record).await {
            Ok(()) => return Ok(record),
            // Created by another process meanwhile: update that one.
            Err(DbError::Duplicate) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(DbError::Duplicate)
}

/// The tenant's default provider when it has an embedding model.
pub async fn embedding_provider(db: &Db, tenant: &TenantId) -> DbResult<Option<AiProvider>> {
    Ok(super::resolve_provider(db, tenant, None)
        .await?
        .filter(|p| p.embedding_model().is_some()))
}

/// The query's dense vector for searching `active`, embedded with the
/// tenant's default provider when it still uses the collection's model.
/// `None` (BM25 alone) without a model, when the provider changed, or when
/// the call fails: search keeps working, just without the dense half.
pub async fn query_vector(
    platform: &Platform,
    config: &LlmConfig,
    tenant: &TenantId,
    active: &IndexedModel,
    query: &str,
) -> Option<Vec<f32>> {
    let model = active.model.as_deref()?;
    let provider = match embedding_provider(&platform.db, tenant).await {
        Ok(p) => p?,
        Err(e) => {
            tracing::warn!(tenant_id = %tenant, error = %e, "could not load the embedding provider");
            return None;
        }
    };
    if provider.embedding_model() != Some(model) {
        return None;
    }
    let client = match LlmClient::from_provider(
        &provider,
        &platform.secrets,
        &platform.egress,
        config.timeout,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(tenant_id = %tenant, provider_id = %provider.id, error = %e, "query embedding skipped");
            return None;
        }
    };
    match client.embed_with_usage(&[query.to_owned()]).await {
        Ok(out) => {
            if let Err(e) = crate::usage::record_tokens(
                platform,
                tenant,
                None,
                Some(&provider.id),
                &out.model,
                "embedding",
                &out.usage,
            )
            .await
            {
                tracing::warn!(tenant_id = %tenant, error = %e, "could not record embedding usage");
            }
            let vector = out.vectors.into_iter().next()?;
            let fits = active
                .dims
                .is_none_or(|d| usize::try_from(d).is_ok_and(|d| d == vector.len()));
            fits.then_some(vector)
        }
        Err(e) => {
            tracing::warn!(tenant_id = %tenant, provider_id = %provider.id, error = %e, "query embedding failed; searching with BM25 alone");
            None
        }
    }
}
