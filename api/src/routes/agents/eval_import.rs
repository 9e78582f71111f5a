//! `POST /agents/{id}/evals/import`: an evaluation set from a CSV file or
//! an Excel workbook (multipart `file`, optional `name`). The columns are
//! named by the first row (`platform::eval_import`); documents may be
//! given by id or by name. Cases are validated as `POST /evals` validates
//! them, with errors naming the row.

use bson::doc;
use futures::TryStreamExt;
use salvo::prelude::*;

use aigentable_platform::domain::Name;
use aigentable_platform::eval_import::{ImportedCase, cases_from_rows};
use aigentable_platform::extract::{self, DocKind, ExtractLimits};
use aigentable_platform::ids::looks_like_id;
use aigentable_platform::model::{DocumentStatus, KnowledgeDocument};

use super::evals::{EvalCaseInput, EvalSetView, MAX_CASES, agent_of, insert_set, parse_cases};
use crate::error::{ApiError, ApiResult};
use crate::extract::multipart_boundary;
use crate::guard::{Caller, caller};
use crate::state::{AppState, app};

/// The largest file accepted: 200 cases fit in far less.
pub const MAX_IMPORT_BYTES: usize = 1024 * 1024;
const MAX_NAME_BYTES: u64 = 1024;

/// A spreadsheet this small unpacks to little; anything past these limits
/// is a crafted archive, refused before it is opened.
fn limits() -> ExtractLimits {
    ExtractLimits {
        timeout: std::time::Duration::from_secs(10),
        max_unpacked_bytes: 32 * 1024 * 1024,
        max_entries: 1_000,
        ..ExtractLimits::default()
    }
}

struct Upload {
    file_name: String,
    bytes: Vec<u8>,
    name: Option<String>,
}

/// Import an evaluation set from a CSV or XLSX file (201 with the set).
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    status_codes(201, 400, 404, 413, 415),
    parameters(("id" = String, Path, description = "Agent id"))
)]
pub async fn import_set(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<EvalSetView>> {
    let who = caller(depot)?;
    let state = app(depot);
    let agent = agent_of(state, who, req).await?;
    let upload = read_upload(req).await?;
    let kind = extract::sniff(&upload.file_name, &upload.bytes)
        .map_err(|e| ApiError::UnsupportedMediaType(e.to_string()))?;
    if !matches!(kind, DocKind::Csv | DocKind::Xlsx) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "\"{}\" is {}; import evaluation cases from a CSV file or an Excel workbook (.xlsx)",
            upload.file_name,
            kind.as_str()
        )));
    }
    // The header row, then at most MAX_CASES cases.
    let rows = extract::first_table_isolated(kind, upload.bytes, limits(), MAX_CASES + 1)
        .await
        .map_err(|e| ApiError::field("file", e))?;
    let imported = cases_from_rows(&rows).map_err(|e| ApiError::field("file", e))?;
    let input = resolve_documents(state, who, imported.as_slice()).await?;
    let rows_of: Vec<usize> = imported.iter().map(|c| c.row).collect();
    let place = |i: usize, field: &str| {
        format!(
            "file row {}, {field}",
            rows_of.get(i).copied().unwrap_or(i + 2)
        )
    };
    let cases = parse_cases(state, who, &input, &[], &place).await?;
    let default_name = upload
        .file_name
        .rsplit_once('.')
        .map_or(upload.file_name.as_str(), |(stem, _)| stem)
        .to_owned();
    let name =
        Name::parse("name", upload.name.as_deref().unwrap_or(&default_name), 100)?.into_inner();
    let set = insert_set(state, who, &agent, name, cases).await?;
    res.status_code(StatusCode::CREATED);
    Ok(Json((&set).into()))
}

/// The `file` part (whole, at most [`MAX_IMPORT_BYTES`]) and the `name`.
async fn read_upload(req: &mut Request) -> ApiResult<Upload> {
    let boundary = multipart_boundary(
        req,
        "send the cases as multipart/form-data with a `file` (CSV or .xlsx)",
    )?;
    let whole = MAX_IMPORT_BYTES as u64 + 64 * 1024;
    let constraints = multra::Constraints::new().max_fields(4).size_limit(
        multra::SizeLimit::new()
            .whole_stream(whole)
            .per_field(MAX_IMPORT_BYTES as u64)
            .for_field("name", MAX_NAME_BYTES),
    );
    let body = req
        .take_body()
        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) });
    let mut multipart = multra::Multipart::with_constraints(body, boundary, constraints);
    let read_error = |e: multra::Error| match e {
        multra::Error::FieldSizeExceeded {
            field_name: Some(f),
            ..
        } if f == "name" => ApiError::field("name", "is too long"),
        multra::Error::StreamSizeExceeded { .. } | multra::Error::FieldSizeExceeded { .. } => {
            ApiError::FileTooLarge {
                file: "file".to_owned(),
                limit: MAX_IMPORT_BYTES,
            }
        }
        multra::Error::FieldCountExceeded { .. } => {
            ApiError::bad_request("send one `file` and optionally a `name`")
        }
        other => ApiError::bad_request(format!("the upload could not be read: {other}")),
    };
    let mut file: Option<(String, Vec<u8>)> = None;
    let mut name = None;
    while let Some(field) = multipart.next_field().await.map_err(read_error)? {
        match field.name().unwrap_or_default() {
            "file" if file.is_none() => {
                let file_name = field
                    .file_name()
                    .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "cases".to_owned());
                let bytes = field.bytes().await.map_err(read_error)?;
                file = Some((file_name, bytes.to_vec()));
            }
            "name" => name = Some(field.text().await.map_err(read_error)?),
            other => {
                return Err(ApiError::field(
                    other,
                    "is not a field of an import (send `file` and optionally `name`)",
                ));
            }
        }
    }
    let (file_name, bytes) = file.ok_or_else(|| ApiError::field("file", "is required"))?;
    Ok(Upload {
        file_name,
        bytes,
        name,
    })
}

/// The imported cases as `POST /evals` input, expected documents given by
/// name turned into ids (a name that matches nothing stays as written, so
/// the validation names it).
async fn resolve_documents(
    state: &AppState,
    who: &Caller,
    imported: &[ImportedCase],
) -> ApiResult<Vec<EvalCaseInput>> {
    let names: Vec<&str> = imported
        .iter()
        .flat_map(|c| c.expected_documents.iter())
        .map(String::as_str)
        .filter(|d| !looks_like_id(d))
        .collect();
    let by_name: Vec<(String, String)> = if names.is_empty() {
        Vec::new()
    } else {
        state
            .platform
            .db
            .scoped::<KnowledgeDocument>(&who.tenant_id)
            .find_sorted(
                doc! { "name": { "$in": &names }, "status": { "$ne": DocumentStatus::Deleting.as_str() } },
                doc! { "createdAt": -1 },
                1_000,
            )
            .await?
            .into_iter()
            .map(|d| (d.name, d.id))
            .collect()
    };
    Ok(imported
        .iter()
        .map(|c| EvalCaseInput {
            id: None,
            question: c.question.clone(),
            expected_answer: c.expected_answer.clone(),
            expected_facts: c.expected_facts.clone(),
            expected_document_ids: c
                .expected_documents
                .iter()
                .map(|d| {
                    by_name
                        .iter()
                        .find(|(name, _)| name == d)
                        .map_or_else(|| d.clone(), |(_, id)| id.clone())
                })
                .collect(),
        })
        .collect())
}
