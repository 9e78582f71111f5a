//! `/api/v1/documents`: the knowledge base. Uploads are stored in GridFS
//! and indexed by an `ingest_document` job; deletes purge vectors and files
//! through a `purge_document` job.

use bson::{Document, doc};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::Serialize;

use aigentable_jobs::events;
use aigentable_jobs::types::{IngestDocument, PurgeDocument};
use aigentable_jobs::{JobRecord, JobStatus, Requester};
use aigentable_platform::domain::{Name, regex_escape};
use aigentable_platform::extract::SniffStream;
use aigentable_platform::ids::{looks_like_id, new_id};
use aigentable_platform::model::{Agent, DocumentStatus, KnowledgeDocument};
use aigentable_platform::{Platform, files};

use crate::accepted::AcceptedJob;
use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::{pagination, path_id, query_enum, query_string};
use crate::guard::{Caller, caller};
use crate::state::{AppState, app};
use crate::views::Pagination;

/// Files per upload request.
pub const MAX_FILES: usize = 20;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentView {
    pub id: String,
    pub name: String,
    /// `pdf`, `docx`, `txt`, `md`, `csv`, `xlsx`, `xls` or `ods`.
    pub kind: String,
    pub mime_type: String,
    pub size: i64,
    pub agent_id: Option<String>,
    pub category: Option<String>,
    /// `UPLOADED`, `QUEUED`, `PARSING`, `CHUNKING`, `EMBEDDING`, `INDEXING`,
    /// `READY`, `FAILED` or `DELETING`.
    pub status: String,
    /// Why the document failed, in plain words.
    pub error: Option<String>,
    pub pages: Option<u32>,
    pub sheets: Option<u32>,
    pub chunk_count: u32,
    pub chunks_done: u32,
    /// 0 to 100.
    pub progress: u8,
    /// The job processing it, if any.
    pub job_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

impl From<&KnowledgeDocument> for DocumentView {
    fn from(d: &KnowledgeDocument) -> Self {
        Self {
            id: d.id.clone(),
            name: d.name.clone(),
            kind: d.kind.clone(),
            mime_type: d.mime_type.clone(),
            size: d.size,
            agent_id: d.agent_id.clone(),
            category: d.category.clone(),
            status: d.status.as_str().to_owned(),
            error: d.error.clone(),
            pages: d.pages,
            sheets: d.sheets,
            chunk_count: d.chunk_count,
            chunks_done: d.chunks_done,
            progress: d.progress,
            job_id: d.job_id.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            processed_at: d.processed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    pub documents: Vec<DocumentView>,
    pub pagination: Pagination,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadAccepted {
    pub message: String,
    /// The created documents, each with the id of its `ingest_document` job.
    pub documents: Vec<DocumentView>,
    /// One `ingest_document` job per document, in the same order: an
    /// upload of several files is the one 202 that accepts several jobs.
    pub jobs: Vec<AcceptedJob>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentJobAccepted {
    #[serde(flatten)]
    pub accepted: AcceptedJob,
    /// Also follow it with `document-updated` events.
    pub document: DocumentView,
}

fn mime_of(kind: &str) -> &'static str {
    match kind {
        "pdf" => "application/pdf",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xls" => "application/vnd.ms-excel",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        _ => "text/plain",
    }
}

async fn agent_exists(platform: &Platform, who: &Caller, agent_id: &str) -> ApiResult<bool> {
    Ok(looks_like_id(agent_id)
        && platform
            .db
            .scoped::<Agent>(&who.tenant_id)
            .find_by_id(agent_id)
            .await?
            .is_some())
}

/// Parts per upload request besides the files (`agentId`, `category` and
/// whatever else a client sends, which is skipped).
const MAX_OTHER_PARTS: usize = 16;
/// Largest text field (`agentId`, `category`).
const MAX_TEXT_FIELD: u64 = 1024;

/// A file streamed into GridFS that passed the checks.
struct Received {
    name: String,
    kind: String,
    file: files::StoredFile,
}

/// What the multipart body said besides the files.
#[derive(Default)]
struct UploadFields {
    agent_id: Option<String>,
    category: Option<String>,
}

/// Upload documents (multipart: `files`, `agentId`, `category`): 202 with the
/// created documents and their jobs. Each file streams into storage as it
/// arrives (never whole in memory) while its size is counted and its type
/// sniffed (content and extension); one refused file refuses the request
/// and deletes what it had stored, so nothing half-uploaded is left.
#[endpoint(tags("documents"), security(("bearerAuth" = [])), status_codes(202, 400, 404, 413, 415))]
pub async fn upload(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<UploadAccepted>> {
    let who = caller(depot)?.clone();
    let state = app(depot);
    let platform = &state.platform;
    let boundary = crate::extract::multipart_boundary(
        req,
        "upload documents as multipart/form-data with one or more `files`",
    )?;
    // Nothing stored by this request outlives a failure: an unfinished
    // GridFS upload deletes its chunks when dropped, finished files are held
    // here until their document record exists.
    let mut unclaimed = files::Unclaimed::new(&platform.db);
    let received = receive(req, &who, platform, boundary, &mut unclaimed).await;
    let (fields, received) = match received {
        Ok(r) => r,
        Err(e) => {
            unclaimed.discard().await;
            return Err(e);
        }
    };
    let adding = crate::plan_limits::Adding::Documents {
        count: u64::try_from(received.len()).unwrap_or(u64::MAX),
        bytes: received.iter().map(|f| f.file.size).sum(),
    };
    if let Err(e) = crate::plan_limits::ensure_room(state, &who, adding).await {
        unclaimed.discard().await;
        return Err(e);
    }
    let agent_id = fields.agent_id;
    let category = fields.category;

    let mut created = Vec::with_capacity(received.len());
    let mut jobs = Vec::with_capacity(received.len());
    for file in received {
        let now = Utc::now();
        let mut document = KnowledgeDocument {
            id: new_id(),
            tenant_id: who.tenant_id.clone(),
            agent_id: agent_id.clone(),
            name: file.name,
            mime_type: mime_of(&file.kind).to_owned(),
            kind: file.kind,
            size: i64::try_from(file.file.size).unwrap_or(i64::MAX),
            category: category.clone(),
            status: DocumentStatus::Queued,
            error: None,
            pages: None,
            sheets: None,
            chunk_count: 0,
            chunks_done: 0,
            progress: 0,
            file_id: file.file.id,
            sha256: file.file.sha256,
            job_id: None,
            uploaded_by: who.user_id().to_string(),
            created_at: now,
            updated_at: now,
            processed_at: None,
        };
        let documents = platform.db.scoped::<KnowledgeDocument>(&who.tenant_id);
        documents.insert(&document).await?;
        unclaimed.claim(&document.file_id);
        let job = state
            .jobs
            .enqueue(
                &who.tenant_id,
                Requester::User(who.user_id().clone()),
                IngestDocument {
                    document_id: document.id.clone(),
                    agent_id: agent_id.clone(),
                    reindex_for: None,
                },
            )
            .await?;
        document.job_id = Some(job.id.clone());
        documents
            .update_by_id(&document.id, doc! { "$set": { "jobId": &job.id } })
            .await?;
        tracing::info!(document_id = %document.id, tenant_id = %who.tenant_id, job_id = %job.id, kind = %document.kind, size = document.size, "document uploaded");
        events::document_updated(&platform.kv, &document).await;
        created.push(DocumentView::from(&document));
        jobs.push(AcceptedJob::from(&job));
    }
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(UploadAccepted {
        message: format!(
            "{} document(s) uploaded and queued for processing",
            created.len()
        ),
        documents: created,
        jobs,
    }))
}

/// Reads the multipart body part by part, streaming each file into GridFS
/// (held in `unclaimed`), and checks the fields. Memory per request: one
/// body chunk, the GridFS chunk being filled and the sniffer's head and
/// tail windows, whatever the files' sizes.
async fn receive(
    req: &mut Request,
    who: &Caller,
    platform: &Platform,
    boundary: String,
    unclaimed: &mut files::Unclaimed,
) -> ApiResult<(UploadFields, Vec<Received>)> {
    let per_file = platform.config.document_max_bytes;
    let body_limit = per_file
        .saturating_mul(MAX_FILES as u64)
        .saturating_add(1024 * 1024);
    let constraints = multra::Constraints::new()
        .max_fields(MAX_FILES + MAX_OTHER_PARTS)
        .size_limit(
            multra::SizeLimit::new()
                .whole_stream(body_limit)
                // Files are counted below, to name the file in the error;
                // this only backs that up.
                .per_field(per_file.saturating_add(64 * 1024))
                .for_field("agentId", MAX_TEXT_FIELD)
                .for_field("category", MAX_TEXT_FIELD),
        );
    let body = req
        .take_body()
        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) });
    let mut multipart = multra::Multipart::with_constraints(body, boundary, constraints);
    let read_error = |e| read_error(e, body_limit);
    let mut fields = UploadFields::default();
    let mut received: Vec<Received> = Vec::new();
    let mut agent_checked = false;
    let outcome = loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break Ok(()),
            Err(e) => break Err(read_error(e)),
        };
        let part = Part {
            who,
            platform,
            per_file,
            body_limit,
        };
        if let Err(e) = part
            .take(
                field,
                &mut fields,
                &mut received,
                &mut agent_checked,
                unclaimed,
            )
            .await
        {
            break Err(e);
        }
    };
    if let Err(e) = outcome {
        // Read the rest of the body (bounded by the stream limit, kept
        // nowhere) so the client gets the answer rather than a connection
        // reset mid-upload.
        let drain = async { while let Ok(Some(_)) = multipart.next_field().await {} };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), drain).await;
        return Err(e);
    }
    if received.is_empty() {
        return Err(ApiError::field("files", "must contain at least one file"));
    }
    if !agent_checked {
        check_agent(platform, who, fields.agent_id.as_deref()).await?;
    }
    Ok((fields, received))
}

/// Why the multipart body could not be read, as the client's error.
fn read_error(e: multra::Error, body_limit: u64) -> ApiError {
    match e {
        multra::Error::StreamSizeExceeded { .. } => ApiError::PayloadTooLarge {
            limit: usize::try_from(body_limit).unwrap_or(usize::MAX),
        },
        multra::Error::FieldCountExceeded { .. } => {
            ApiError::field("files", format!("at most {MAX_FILES} files per upload"))
        }
        multra::Error::FieldSizeExceeded { field_name, .. } => {
            ApiError::field(field_name.as_deref().unwrap_or("files"), "is too long")
        }
        other => ApiError::bad_request(format!("the upload could not be read: {other}")),
    }
}

/// What handling one multipart part needs.
struct Part<'a> {
    who: &'a Caller,
    platform: &'a Platform,
    per_file: u64,
    body_limit: u64,
}

impl Part<'_> {
    async fn take(
        &self,
        mut field: multra::Field<'_>,
        fields: &mut UploadFields,
        received: &mut Vec<Received>,
        agent_checked: &mut bool,
        unclaimed: &mut files::Unclaimed,
    ) -> ApiResult<()> {
        let (who, platform) = (self.who, self.platform);
        let read_error = |e| read_error(e, self.body_limit);
        let part = field.name().unwrap_or_default().to_owned();
        match part.as_str() {
            "files" if field.file_name().is_some() => {
                if received.len() == MAX_FILES {
                    return Err(ApiError::field(
                        "files",
                        format!("at most {MAX_FILES} files per upload"),
                    ));
                }
                // An unknown agent is refused before any file is stored
                // when the client sends it first, as browsers do.
                if !*agent_checked {
                    check_agent(platform, who, fields.agent_id.as_deref()).await?;
                    *agent_checked = true;
                }
                let name = field
                    .file_name()
                    .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "upload".to_owned());
                let mut gridfs = files::Upload::begin(&platform.db, &who.tenant_id, &name)
                    .await
                    .map_err(ApiError::internal)?;
                let mut sniffer = SniffStream::new();
                loop {
                    let chunk = match field.chunk().await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => break,
                        // The parser's own bound, passed by this file.
                        Err(multra::Error::FieldSizeExceeded { .. }) => {
                            gridfs.abort().await;
                            return Err(ApiError::FileTooLarge {
                                file: name,
                                limit: usize::try_from(self.per_file).unwrap_or(usize::MAX),
                            });
                        }
                        Err(e) => {
                            gridfs.abort().await;
                            return Err(read_error(e));
                        }
                    };
                    if sniffer.len() + chunk.len() as u64 > self.per_file {
                        gridfs.abort().await;
                        return Err(ApiError::FileTooLarge {
                            file: name,
                            limit: usize::try_from(self.per_file).unwrap_or(usize::MAX),
                        });
                    }
                    sniffer.feed(&chunk);
                    if let Err(e) = gridfs.write(&chunk).await {
                        gridfs.abort().await;
                        return Err(ApiError::internal(e));
                    }
                }
                let kind = match sniffer.finish(&name) {
                    Ok(kind) => kind,
                    Err(e) => {
                        gridfs.abort().await;
                        return Err(if e.is_type_mismatch() {
                            ApiError::because(Reason::FileTypeMismatch, e.to_string())
                        } else if e.is_unsupported_type() {
                            ApiError::UnsupportedMediaType(e.to_string())
                        } else {
                            ApiError::field("files", e)
                        });
                    }
                };
                let file = gridfs.finish().await.map_err(ApiError::internal)?;
                unclaimed.hold(&file.id);
                received.push(Received {
                    name,
                    kind: kind.as_str().to_owned(),
                    file,
                });
            }
            "agentId" => {
                let text = field.text().await.map_err(read_error)?;
                fields.agent_id = Some(text.trim().to_owned()).filter(|v| !v.is_empty());
                *agent_checked = false;
            }
            "category" => {
                let text = field.text().await.map_err(read_error)?;
                fields.category = match text.trim() {
                    "" => None,
                    c => Some(Name::parse("category", c, 50)?.into_inner()),
                };
            }
            // Anything else is skipped (read past without being kept).
            _ => {}
        }
        Ok(())
    }
}

async fn check_agent(platform: &Platform, who: &Caller, agent_id: Option<&str>) -> ApiResult<()> {
    match agent_id {
        Some(agent) if !agent_exists(platform, who, agent).await? => {
            Err(ApiError::NotFound("agent"))
        }
        _ => Ok(()),
    }
}

const STATUSES: &str = "UPLOADED, QUEUED, PARSING, CHUNKING, EMBEDDING, INDEXING, READY or FAILED";

/// List documents (page, limit, agentId, status, category, search by name).
#[endpoint(
    tags("documents"),
    security(("bearerAuth" = [])),
    parameters(
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
        ("agentId" = Option<String>, Query, description = "Documents of one agent"),
        ("status" = Option<String>, Query, description = "UPLOADED, QUEUED, PARSING, CHUNKING, EMBEDDING, INDEXING, READY or FAILED"),
        ("category" = Option<String>, Query, description = "Exact category"),
        ("search" = Option<String>, Query, description = "Matches the file name"),
    )
)]
pub async fn list(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<DocumentList>> {
    let who = caller(depot)?;
    let page = pagination(req)?;
    let mut filter = doc! { "status": { "$ne": DocumentStatus::Deleting.as_str() } };
    if let Some(agent) = query_string(req, "agentId", 64)? {
        filter.insert("agentId", agent);
    }
    match query_enum::<DocumentStatus>(req, "status", STATUSES)? {
        // Deleted documents are not listed, whatever the filter.
        Some(DocumentStatus::Deleting) => {
            return Err(ApiError::field("status", format!("must be {STATUSES}")));
        }
        Some(status) => {
            filter.insert("status", status.as_str());
        }
        None => {}
    }
    if let Some(category) = query_string(req, "category", 50)? {
        filter.insert("category", category);
    }
    if let Some(search) = query_string(req, "search", 100)? {
        filter.insert(
            "name",
            doc! { "$regex": regex_escape(&search), "$options": "i" },
        );
    }
    let (documents, total) = app(depot)
        .platform
        .db
        .scoped::<KnowledgeDocument>(&who.tenant_id)
        .find_page(filter, doc! { "createdAt": -1, "_id": -1 }, page)
        .await?;
    Ok(Json(DocumentList {
        documents: documents.iter().map(DocumentView::from).collect(),
        pagination: Pagination::new(page, total),
    }))
}

async fn load(depot: &Depot, who: &Caller, id: &str) -> ApiResult<KnowledgeDocument> {
    app(depot)
        .platform
        .db
        .scoped::<KnowledgeDocument>(&who.tenant_id)
        .find_one(doc! { "_id": id, "status": { "$ne": DocumentStatus::Deleting.as_str() } })
        .await?
        .ok_or(ApiError::NotFound("document"))
}

/// One document with its processing state.
#[endpoint(tags("documents"), security(("bearerAuth" = [])), parameters(("id" = String, Path, description = "Document id")))]
pub async fn get(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<DocumentView>> {
    let who = caller(depot)?;
    let id = path_id(req, "document")?;
    Ok(Json((&load(depot, who, &id).await?).into()))
}

/// Delete a document: it disappears at once; its vectors and file are purged
/// by a job (202).
#[endpoint(tags("documents"), security(("bearerAuth" = [])), status_codes(202, 404), parameters(("id" = String, Path, description = "Document id")))]
pub async fn delete(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<DocumentJobAccepted>> {
    let who = caller(depot)?;
    let id = path_id(req, "document")?;
    load(depot, who, &id).await?;
    let (marked, job) = delete_and_purge(app(depot), who, &id)
        .await?
        .ok_or(ApiError::NotFound("document"))?;
    tracing::info!(document_id = %id, tenant_id = %who.tenant_id, job_id = %job.id, "document deleted");
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(DocumentJobAccepted {
        accepted: (&job).into(),
        document: (&marked).into(),
    }))
}

/// Marks a document `DELETING` (it disappears from lists at once), queues
/// the purge of its vectors and file, and tells the browsers. `None` when
/// the document does not exist. Returns the marked document and the job id.
pub(crate) async fn delete_and_purge(
    state: &AppState,
    who: &Caller,
    id: &str,
) -> ApiResult<Option<(KnowledgeDocument, JobRecord)>> {
    let Some(marked) = state
        .platform
        .db
        .scoped::<KnowledgeDocument>(&who.tenant_id)
        .update_by_id(
            id,
            doc! { "$set": { "status": DocumentStatus::Deleting.as_str(), "updatedAt": bson::DateTime::now() } },
        )
        .await?
    else {
        return Ok(None);
    };
    let job = state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            PurgeDocument {
                document_id: marked.id.clone(),
            },
        )
        .await?;
    events::document_updated(&state.platform.kv, &marked).await;
    Ok(Some((marked, job)))
}

/// Re-index a document (202). Idempotent: its old vectors are replaced, and
/// a request while it is already being processed returns that job.
#[endpoint(tags("documents"), security(("bearerAuth" = [])), status_codes(202, 404), parameters(("id" = String, Path, description = "Document id")))]
pub async fn process(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<DocumentJobAccepted>> {
    let who = caller(depot)?;
    let id = path_id(req, "document")?;
    let current = load(depot, who, &id).await?;
    let state = app(depot);
    let job = state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            IngestDocument {
                document_id: id.clone(),
                agent_id: current.agent_id.clone(),
                reindex_for: None,
            },
        )
        .await?;
    let mut set: Document = doc! { "jobId": &job.id, "updatedAt": bson::DateTime::now() };
    if job.status == JobStatus::Queued && job.attempts == 0 {
        set.insert("status", DocumentStatus::Queued.as_str());
        set.insert("progress", 0);
        set.insert("chunksDone", 0);
        set.insert("error", bson::Bson::Null);
    }
    let updated = state
        .platform
        .db
        .scoped::<KnowledgeDocument>(&who.tenant_id)
        .update_by_id(&id, doc! { "$set": set })
        .await?
        .ok_or(ApiError::NotFound("document"))?;
    events::document_updated(&state.platform.kv, &updated).await;
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(DocumentJobAccepted {
        accepted: (&job).into(),
        document: (&updated).into(),
    }))
}

/// Every route of a knowledge document (`upload` before `{id}`).
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("documents").get(list))
        .push(Router::with_path("documents/upload").post(upload))
        .push(Router::with_path("documents/{id}").get(get).delete(delete))
        .push(Router::with_path("documents/{id}/process").post(process))
}
