//! `/api/v1/analytics/...`: the dashboard's numbers for the caller's tenant
//! (overview, conversations, agents, channels), their CSV/XLSX export as a
//! job and its download; customer-satisfaction ratings (staff on a
//! conversation, the visitor through the widget).
//!
//! Every number is defined in the README's Analytics section. Any user of
//! the tenant (`TENANT_ADMIN`, `TENANT_USER`) may read analytics and export
//! them; reports are computed from rollups plus the facts of the hours not
//! rolled up yet (`platform::analytics`).

use std::collections::BTreeMap;

use bson::doc;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use salvo::http::HeaderValue;
use salvo::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use aigentable_jobs::Requester;
use aigentable_jobs::types::ExportAnalytics;
use aigentable_platform::analytics::exports::{
    EXPORT_TTL_DAYS, ExportFormat, ExportRecord, ExportReport, ExportStatus,
};
use aigentable_platform::analytics::facts::{self, hour_of};
use aigentable_platform::analytics::report::{self, Filter, Query as ReportQuery};
use aigentable_platform::analytics::{Grain, local_midnight, timezone};
use aigentable_platform::files;
use aigentable_platform::ids::{TenantId, looks_like_id};
use aigentable_platform::model::tenant::Tenants;
use aigentable_platform::model::{Agent, Channel, Conversation};

use crate::accepted::AcceptedJob;
use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, path_id, query_string, query_token};
use crate::guard::{Caller, caller};
use crate::state::{AppState, app};

/// Longest period a report covers.
const MAX_DAYS: i64 = 366;
/// Default period: the last 30 days.
const DEFAULT_DAYS: i64 = 30;

// ---- response shapes (the platform's report types, described for OpenAPI;
// converted field by field through serde, unknown fields refused, so the
// spec cannot drift from what is sent) ----

/// The numbers of a period, an agent, a channel.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
// No `deny_unknown_fields`: the agent and channel rows flatten it.
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Conversations started (first customer message in the period).
    pub conversations: i64,
    /// Customer messages received plus bot and staff messages sent.
    pub messages: i64,
    pub customer_messages: i64,
    pub bot_messages: i64,
    pub staff_messages: i64,
    /// Mean response time, seconds (bot and staff together).
    pub average_response_time: f64,
    /// 90th percentile response time, seconds (from a fixed-edge histogram).
    pub p90_response_time: f64,
    pub bot_average_response_time: f64,
    pub staff_average_response_time: f64,
    /// Mean first response time, seconds.
    pub first_response_time: f64,
    /// Customer messages (runs of them) that got an answer.
    pub responses: i64,
    pub handoffs: i64,
    /// Handoffs ÷ conversations started (0–1).
    pub handoff_rate: f64,
    /// Conversations resolved or closed.
    pub resolved: i64,
    pub resolved_by_bot: i64,
    /// Resolved by bot ÷ resolved or closed (0–1).
    pub bot_resolution_rate: f64,
    /// Mean time from start to resolution, seconds.
    pub average_resolution_time: f64,
    /// Mean rating 1–5 given in the period; 0 when there is none.
    pub customer_satisfaction: f64,
    pub ratings_count: i64,
    pub delivery_failures: i64,
    /// Failed ÷ outbound messages (0–1).
    pub delivery_failure_rate: f64,
    /// LLM tokens of the bot's replies.
    pub tokens: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeriodInfo {
    /// Start of the period (inclusive), a whole hour.
    pub start_date: DateTime<Utc>,
    /// End of the period (exclusive), a whole hour.
    pub end_date: DateTime<Utc>,
    /// The tenant's IANA timezone, used for days, weeks and months.
    pub timezone: String,
    pub group_by: String,
}

/// Percent change against the previous period of the same length; `null`
/// when the previous period had none.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trend {
    pub total_conversations: Option<f64>,
    pub messages_processed: Option<f64>,
    pub average_response_time: Option<f64>,
    pub customer_satisfaction: Option<f64>,
}

/// The dashboard: the guide's six numbers, then extras.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overview {
    /// Conversations started in the period.
    pub total_conversations: i64,
    /// Agents whose status is `ACTIVE` now.
    pub active_agents: i64,
    /// Mean response time in seconds.
    pub average_response_time: f64,
    /// Mean rating 1–5 in the period; 0 when there is none (`ratingsCount`).
    pub customer_satisfaction: f64,
    /// Conversations started since the tenant's local midnight.
    pub conversations_today: i64,
    /// Customer messages received plus bot and staff messages sent.
    pub messages_processed: i64,
    pub ratings_count: i64,
    pub bot_resolution_rate: f64,
    pub handoff_rate: f64,
    pub first_response_time: f64,
    pub p90_response_time: f64,
    pub trend: Trend,
    /// Every number of the period.
    pub summary: Summary,
    /// The same for the previous period of the same length.
    pub previous: Summary,
    pub period: PeriodInfo,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeriesPoint {
    /// The local date (`2026-03-29`; a week by its Monday, a month by its
    /// first day) or, grouped by hour, the hour in RFC 3339.
    pub period: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Conversations started.
    pub conversations: i64,
    pub resolved: i64,
    pub resolved_by_bot: i64,
    pub handed_off: i64,
    pub messages: i64,
    pub average_response_time: f64,
    pub customer_satisfaction: f64,
    pub ratings_count: i64,
    /// Conversations started per channel type.
    pub by_channel_type: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConversationsReport {
    pub totals: Summary,
    /// Conversations created in the period, by their status now.
    pub by_status: BTreeMap<String, i64>,
    /// Conversations started in the period, by channel type.
    pub by_channel_type: BTreeMap<String, i64>,
    /// One point per hour, day, week or month (empty ones included).
    pub series: Vec<SeriesPoint>,
    pub period: PeriodInfo,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentRow {
    /// `null`: conversations of channels without an agent.
    pub agent_id: Option<String>,
    /// `null` for a deleted agent.
    pub name: Option<String>,
    #[serde(flatten)]
    pub metrics: Summary,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentsReport {
    pub agents: Vec<AgentRow>,
    pub period: PeriodInfo,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelRow {
    pub channel_id: String,
    /// `null` for a deleted channel.
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub channel_type: Option<String>,
    pub inbound_messages: i64,
    pub outbound_messages: i64,
    #[serde(flatten)]
    pub metrics: Summary,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelsReport {
    pub channels: Vec<ChannelRow>,
    pub period: PeriodInfo,
}

/// `202`: the export is being written.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportAccepted {
    /// The `export_analytics` job: progress in `job-updated` events, the
    /// result (`downloadUrl`, `fileName`, `expiresAt`) at `GET /jobs/{jobId}`.
    #[serde(flatten)]
    pub accepted: AcceptedJob,
    pub export_id: String,
    pub status: String,
    /// Where the file can be downloaded once the job succeeded.
    pub download_url: String,
    pub expires_at: DateTime<Utc>,
}

/// `{rating}`: 1 to 5.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatingInput {
    #[salvo(schema(minimum = 1, maximum = 5))]
    pub rating: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RatingView {
    pub conversation_id: String,
    pub rating: i32,
    pub rated_at: DateTime<Utc>,
}

fn reshape<T: Serialize, U: DeserializeOwned>(value: &T) -> ApiResult<U> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(ApiError::internal)
}

// ---- the period and filters ----

fn parse_instant(field: &str, raw: &str, tz: Tz, end: bool) -> ApiResult<DateTime<Utc>> {
    let t = if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        t.with_timezone(&Utc)
    } else {
        let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
            ApiError::field(field, "must be an ISO 8601 date (YYYY-MM-DD) or date-time")
        })?;
        // A date is a whole local day: the end date is included.
        let day = if end {
            day.succ_opt().unwrap_or(day)
        } else {
            day
        };
        local_midnight(tz, day)
    };
    let year = t.format("%Y").to_string().parse::<i32>().unwrap_or(0);
    if !(2000..=2100).contains(&year) {
        return Err(ApiError::field(
            field,
            "must be between the years 2000 and 2100",
        ));
    }
    Ok(t)
}

async fn tenant_tz(state: &AppState, tenant: &TenantId) -> ApiResult<Tz> {
    let t = Tenants(&state.platform.db)
        .get(tenant)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    Ok(timezone(&t.settings.timezone))
}

/// The report query of a request: `startDate`, `endDate` (default the last
/// 30 days), `groupBy` (default `day`), `agentId`, `channelId`.
async fn report_query(req: &Request, state: &AppState, who: &Caller) -> ApiResult<ReportQuery> {
    let tz = tenant_tz(state, &who.tenant_id).await?;
    let now = Utc::now();
    let end = match query_token(req, "endDate", 40)? {
        Some(raw) => parse_instant("endDate", &raw, tz, true)?,
        None => now,
    };
    let start = match query_token(req, "startDate", 40)? {
        Some(raw) => parse_instant("startDate", &raw, tz, false)?,
        None => end - TimeDelta::days(DEFAULT_DAYS),
    };
    // Buckets are whole hours.
    let start = hour_of(start);
    let end = if hour_of(end) == end {
        end
    } else {
        hour_of(end) + TimeDelta::hours(1)
    };
    if start >= end {
        return Err(ApiError::field("startDate", "must be before endDate"));
    }
    if end - start > TimeDelta::days(MAX_DAYS) + TimeDelta::hours(2) {
        return Err(ApiError::field(
            "endDate",
            format!("is too far from startDate: a period covers at most {MAX_DAYS} days"),
        ));
    }
    let grain = match query_token(req, "groupBy", 10)? {
        None => Grain::Day,
        Some(raw) => Grain::parse(&raw)
            .ok_or_else(|| ApiError::field("groupBy", "must be hour, day, week or month"))?,
    };
    let db = &state.platform.db;
    let agent_id = match query_string(req, "agentId", 64)? {
        None => None,
        Some(id) => {
            let found = looks_like_id(&id)
                && db
                    .scoped::<Agent>(&who.tenant_id)
                    .find_by_id(&id)
                    .await?
                    .is_some();
            if !found {
                return Err(ApiError::NotFound("agent"));
            }
            Some(id)
        }
    };
    let channel_id = match query_string(req, "channelId", 64)? {
        None => None,
        Some(id) => {
            let found = looks_like_id(&id)
                && db
                    .scoped::<Channel>(&who.tenant_id)
                    .find_by_id(&id)
                    .await?
                    .is_some();
            if !found {
                return Err(ApiError::NotFound("channel"));
            }
            Some(id)
        }
    };
    Ok(ReportQuery {
        tenant: who.tenant_id.clone(),
        tz,
        start,
        end,
        grain,
        filter: Filter {
            agent_id,
            channel_id,
        },
    })
}

// ---- reports ----

/// The dashboard overview: the guide's six numbers (`totalConversations`,
/// `activeAgents`, `averageResponseTime` in seconds, `customerSatisfaction`,
/// `conversationsToday`, `messagesProcessed`) plus ratings count, bot
/// resolution and handoff rates, trend against the previous period.
#[endpoint(
    tags("analytics"),
    security(("bearerAuth" = [])),
    status_codes(200, 400, 401, 403, 404),
    parameters(
        ("startDate" = Option<String>, Query, description = "ISO 8601 date (a local day) or date-time; default 30 days before endDate"),
        ("endDate" = Option<String>, Query, description = "ISO 8601 date (included) or date-time (excluded); default now; at most 366 days after startDate"),
        ("groupBy" = Option<String>, Query, description = "hour, day (default), week or month"),
        ("agentId" = Option<String>, Query, description = "Only this agent's conversations (404 if not the tenant's)"),
        ("channelId" = Option<String>, Query, description = "Only this channel's conversations (404 if not the tenant's)"),
    )
)]
pub async fn overview(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<Overview>> {
    let who = caller(depot)?;
    let state = app(depot);
    let q = report_query(req, state, who).await?;
    let o = report::overview(&state.platform.db, &q, Utc::now()).await?;
    Ok(Json(reshape(&o)?))
}

/// Conversations: totals, by status, by channel type, and a series grouped
/// by `groupBy` in the tenant's timezone (started, resolved, handed off,
/// messages, response time, satisfaction, per channel type).
#[endpoint(
    tags("analytics"),
    security(("bearerAuth" = [])),
    status_codes(200, 400, 401, 403, 404),
    parameters(
        ("startDate" = Option<String>, Query, description = "ISO 8601 date (a local day) or date-time; default 30 days before endDate"),
        ("endDate" = Option<String>, Query, description = "ISO 8601 date (included) or date-time (excluded); default now; at most 366 days after startDate"),
        ("groupBy" = Option<String>, Query, description = "hour, day (default), week or month"),
        ("agentId" = Option<String>, Query, description = "Only this agent's conversations (404 if not the tenant's)"),
        ("channelId" = Option<String>, Query, description = "Only this channel's conversations (404 if not the tenant's)"),
    )
)]
pub async fn conversations(
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Json<ConversationsReport>> {
    let who = caller(depot)?;
    let state = app(depot);
    let q = report_query(req, state, who).await?;
    let r = report::conversations(&state.platform.db, &q).await?;
    Ok(Json(reshape(&r)?))
}

/// Per agent: conversations, messages, average and p90 response time, bot
/// resolution and handoff rates, satisfaction, tokens.
#[endpoint(
    tags("analytics"),
    security(("bearerAuth" = [])),
    status_codes(200, 400, 401, 403, 404),
    parameters(
        ("startDate" = Option<String>, Query, description = "ISO 8601 date (a local day) or date-time; default 30 days before endDate"),
        ("endDate" = Option<String>, Query, description = "ISO 8601 date (included) or date-time (excluded); default now; at most 366 days after startDate"),
        ("groupBy" = Option<String>, Query, description = "hour, day (default), week or month"),
        ("agentId" = Option<String>, Query, description = "Only this agent (404 if not the tenant's)"),
        ("channelId" = Option<String>, Query, description = "Only this channel's conversations (404 if not the tenant's)"),
    )
)]
pub async fn agents(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<AgentsReport>> {
    let who = caller(depot)?;
    let state = app(depot);
    let q = report_query(req, state, who).await?;
    let r = report::agents(&state.platform.db, &q).await?;
    Ok(Json(reshape(&r)?))
}

/// Per channel: conversations, inbound and outbound messages, delivery
/// failure rate, response time.
#[endpoint(
    tags("analytics"),
    security(("bearerAuth" = [])),
    status_codes(200, 400, 401, 403, 404),
    parameters(
        ("startDate" = Option<String>, Query, description = "ISO 8601 date (a local day) or date-time; default 30 days before endDate"),
        ("endDate" = Option<String>, Query, description = "ISO 8601 date (included) or date-time (excluded); default now; at most 366 days after startDate"),
        ("groupBy" = Option<String>, Query, description = "hour, day (default), week or month"),
        ("agentId" = Option<String>, Query, description = "Only this agent's channels and conversations (404 if not the tenant's)"),
        ("channelId" = Option<String>, Query, description = "Only this channel (404 if not the tenant's)"),
    )
)]
pub async fn channels(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<ChannelsReport>> {
    let who = caller(depot)?;
    let state = app(depot);
    let q = report_query(req, state, who).await?;
    let r = report::channels(&state.platform.db, &q).await?;
    Ok(Json(reshape(&r)?))
}

// ---- exports ----

/// Export as a file: `format` `csv` (one report, header row) or `xlsx`
/// (one sheet per report, numbers and dates typed); `report` `overview`,
/// `conversations` (the series), `agents`, `channels`, or `all` (XLSX only;
/// the default for XLSX). 202 with the `export_analytics` job; the file is
/// at `downloadUrl` once the job succeeded, for 7 days.
#[endpoint(
    tags("analytics"),
    security(("bearerAuth" = [])),
    status_codes(202, 400, 401, 403, 404),
    parameters(
        ("format" = String, Query, description = "csv or xlsx"),
        ("report" = Option<String>, Query, description = "overview, conversations, agents, channels or all (XLSX only; default for XLSX); required for CSV"),
        ("startDate" = Option<String>, Query, description = "ISO 8601 date (a local day) or date-time; default 30 days before endDate"),
        ("endDate" = Option<String>, Query, description = "ISO 8601 date (included) or date-time (excluded); default now; at most 366 days after startDate"),
        ("groupBy" = Option<String>, Query, description = "hour, day (default), week or month (the conversations series)"),
        ("agentId" = Option<String>, Query, description = "Only this agent (404 if not the tenant's)"),
        ("channelId" = Option<String>, Query, description = "Only this channel (404 if not the tenant's)"),
    )
)]
pub async fn export(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<ExportAccepted>> {
    let who = caller(depot)?;
    let state = app(depot);
    let format = match query_token(req, "format", 10)?.as_deref() {
        Some("csv") => ExportFormat::Csv,
        Some("xlsx") => ExportFormat::Xlsx,
        Some(_) => return Err(ApiError::field("format", "must be csv or xlsx")),
        None => return Err(ApiError::field("format", "is required (csv or xlsx)")),
    };
    let report = match query_token(req, "report", 20)? {
        Some(raw) => ExportReport::parse(&raw).ok_or_else(|| {
            ApiError::field(
                "report",
                "must be overview, conversations, agents, channels or all",
            )
        })?,
        None if format == ExportFormat::Xlsx => ExportReport::All,
        None => {
            return Err(ApiError::field(
                "report",
                "is required for CSV (overview, conversations, agents or channels)",
            ));
        }
    };
    if report == ExportReport::All && format == ExportFormat::Csv {
        return Err(ApiError::field(
            "report",
            "all needs format=xlsx (a CSV file holds one report)",
        ));
    }
    let q = report_query(req, state, who).await?;
    let now = Utc::now();
    let id = aigentable_platform::ids::new_id();
    let record = ExportRecord {
        id: id.clone(),
        tenant_id: who.tenant_id.clone(),
        report,
        format,
        start_date: q.start,
        end_date: q.end,
        group_by: q.grain.as_str().to_owned(),
        agent_id: q.filter.agent_id.clone(),
        channel_id: q.filter.channel_id.clone(),
        status: ExportStatus::Queued,
        file_id: None,
        file_name: format!(
            "analytics-{}-{}-{}.{}",
            report.as_str(),
            q.start.with_timezone(&q.tz).format("%Y%m%d"),
            (q.end - TimeDelta::seconds(1))
                .with_timezone(&q.tz)
                .format("%Y%m%d"),
            format.as_str()
        ),
        size: None,
        error: None,
        created_by: who.user_id().to_string(),
        created_at: now,
        expires_at: now + TimeDelta::days(EXPORT_TTL_DAYS),
    };
    state
        .platform
        .db
        .scoped::<ExportRecord>(&who.tenant_id)
        .insert(&record)
        .await?;
    let job = state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            ExportAnalytics {
                export_id: id.clone(),
                from: q.start.to_rfc3339(),
                to: q.end.to_rfc3339(),
                format: format.as_str().to_owned(),
            },
        )
        .await?;
    tracing::info!(tenant_id = %who.tenant_id, export_id = %id, job_id = %job.id, report = report.as_str(), format = format.as_str(), "analytics export queued");
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(ExportAccepted {
        accepted: (&job).into(),
        export_id: id.clone(),
        status: job.status.as_str().to_owned(),
        download_url: format!(
            "{}/api/v1/analytics/exports/{id}/download",
            state
                .platform
                .config
                .channels
                .public_base_url
                .trim_end_matches('/')
        ),
        expires_at: record.expires_at,
    }))
}

/// Download a finished export (`Content-Disposition: attachment`). 404 for
/// another tenant's export or once it expired (7 days); 409 while it is
/// still being written.
#[endpoint(
    tags("analytics"),
    security(("bearerAuth" = [])),
    status_codes(200, 401, 403, 404, 409),
    parameters(("id" = String, Path, description = "Export id"))
)]
pub async fn download(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let who = caller(depot)?;
    let state = app(depot);
    let id = path_id(req, "export")?;
    let db = &state.platform.db;
    let record = db
        .scoped::<ExportRecord>(&who.tenant_id)
        .find_by_id(&id)
        .await?
        .filter(|r| r.expires_at > Utc::now())
        .ok_or(ApiError::NotFound("export"))?;
    let file_id = match (&record.status, &record.file_id) {
        (ExportStatus::Ready, Some(f)) => f.clone(),
        _ => {
            return Err(ApiError::Conflict(
                "the export is not ready yet; its job reports progress".to_owned(),
            ));
        }
    };
    let bytes = files::load(db, &file_id)
        .await
        .map_err(ApiError::internal)?;
    let headers = res.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(record.format.content_type()),
    );
    let disposition = format!("attachment; filename=\"{}\"", record.file_name);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    res.status_code(StatusCode::OK);
    res.body(bytes);
    Ok(())
}

// ---- ratings ----

fn rating_value(input: &RatingInput) -> ApiResult<i32> {
    match i32::try_from(input.rating) {
        Ok(r) if (1..=5).contains(&r) => Ok(r),
        _ => Err(ApiError::field(
            "rating",
            "must be a whole number from 1 to 5",
        )),
    }
}

/// Sets the rating; with `only_once`, a conversation already rated is a
/// 409. Records the analytics fact (a changed rating moves it).
pub async fn rate(
    state: &AppState,
    tenant: &TenantId,
    conversation_id: &str,
    rating: i32,
    by: &str,
    only_once: bool,
) -> ApiResult<RatingView> {
    let db = &state.platform.db;
    let now = Utc::now();
    let mut filter = doc! { "_id": conversation_id };
    if only_once {
        filter.insert("rating", doc! { "$exists": false });
    }
    let updated = db
        .scoped::<Conversation>(tenant)
        .update_one(
            filter,
            doc! { "$set": {
                "rating": rating,
                "ratedAt": bson::DateTime::from_chrono(now),
                "ratedBy": by,
            } },
        )
        .await?;
    let Some(conversation) = updated else {
        return Err(
            if only_once
                && db
                    .scoped::<Conversation>(tenant)
                    .find_by_id(conversation_id)
                    .await?
                    .is_some()
            {
                ApiError::Conflict("this conversation has been rated already".to_owned())
            } else {
                ApiError::NotFound("conversation")
            },
        );
    };
    facts::record_rating(db, &conversation, rating, now).await?;
    tracing::info!(tenant_id = %tenant, conversation_id = %conversation_id, rating, by, "conversation rated");
    Ok(RatingView {
        conversation_id: conversation.id,
        rating,
        rated_at: bson::DateTime::from_chrono(now).to_chrono(),
    })
}

/// Set a conversation's customer-satisfaction rating (1–5) on the
/// customer's behalf (e.g. from a phone survey); replaces an earlier one.
#[endpoint(
    tags("conversations"),
    security(("bearerAuth" = [])),
    request_body = RatingInput,
    status_codes(200, 400, 401, 403, 404),
    parameters(("id" = String, Path, description = "Conversation id"))
)]
pub async fn rate_conversation(
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Json<RatingView>> {
    let input: RatingInput = json_body(req).await?;
    let who = caller(depot)?;
    let id = path_id(req, "conversation")?;
    let rating = rating_value(&input)?;
    let by = format!("user:{}", who.user_id());
    Ok(Json(
        rate(app(depot), &who.tenant_id, &id, rating, &by, false).await?,
    ))
}

/// The visitor rates their current conversation (1–5), once.
#[endpoint(
    tags("widget"),
    request_body = RatingInput,
    status_codes(200, 400, 401, 403, 404, 409),
    parameters(("publicKey" = String, Path, description = "Widget public key"))
)]
pub async fn widget_rating(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<RatingView>> {
    let channel = crate::routes::widget::scope(req, depot, res).await?;
    let visitor_id = crate::routes::widget::visitor_of(req, depot, &channel)?;
    let input: RatingInput = json_body(req).await?;
    let rating = rating_value(&input)?;
    let state = app(depot);
    let conversation = crate::routes::widget::visitor_conversation(state, &channel, &visitor_id)
        .await?
        .ok_or(ApiError::NotFound("conversation"))?;
    let by = format!("visitor:{visitor_id}");
    Ok(Json(
        rate(
            state,
            &channel.tenant_id,
            &conversation.id,
            rating,
            &by,
            true,
        )
        .await?,
    ))
}

/// The reports, exports and staff ratings (the widget's rating is with
/// the widget's routes).
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("analytics/overview").get(overview))
        .push(Router::with_path("analytics/conversations").get(conversations))
        .push(Router::with_path("analytics/agents").get(agents))
        .push(Router::with_path("analytics/channels").get(channels))
        .push(Router::with_path("analytics/export").get(export))
        .push(Router::with_path("analytics/exports/{id}/download").get(download))
        .push(Router::with_path("conversations/{id}/rating").put(rate_conversation))
}
