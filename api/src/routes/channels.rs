//! `/api/v1/channels`: where customers reach the tenant's agents.
//!
//! `config` is validated per type (see `platform::channels::settings`);
//! secrets (tokens, app secrets) are sealed with `SecretBox` into `secrets`
//! and shown masked (last four characters) in every answer. WhatsApp,
//! Messenger and Instagram channels are routed on their provider id, which
//! is unique across tenants (409 otherwise).

use std::collections::BTreeMap;

use bson::{Document, doc};
use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use aigentable_jobs::Requester;
use aigentable_jobs::types::{RegisterWebhook, TestChannel};
use aigentable_platform::channels::settings::{self, SettingsError, secret_names};
use aigentable_platform::channels::{RoutedChannel, channel_routing_key};
use aigentable_platform::crypto::{mask, random_token};
use aigentable_platform::domain::Name;
use aigentable_platform::ids::{looks_like_id, new_id};
use aigentable_platform::model::{Agent, Channel, ChannelStatus, ChannelType};

use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, pagination, path_id, query_enum};
use crate::guard::{Caller, caller};
use crate::routes::jobs::JobView;
use crate::state::{AppState, app};
use crate::views::Pagination;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub id: String,
    pub tenant_id: String,
    /// `WHATSAPP`, `FACEBOOK`, `INSTAGRAM`, `TELEGRAM` or `WEBSITE`.
    #[serde(rename = "type")]
    pub channel_type: String,
    pub name: String,
    pub agent_id: Option<String>,
    pub is_active: bool,
    /// `PENDING` (not checked yet), `CONNECTED` or `ERROR`.
    pub status: String,
    pub last_error: Option<String>,
    pub last_tested_at: Option<DateTime<Utc>>,
    /// Settings; secrets masked as `****1234`.
    #[salvo(schema(value_type = Object))]
    pub config: Value,
    /// Where the provider must send webhooks (paste into Meta's console;
    /// registered automatically for Telegram).
    pub webhook_url: Option<String>,
    /// The Meta verify token to paste next to the webhook URL (Telegram:
    /// the secret token we registered). Administrators only.
    pub verify_token: Option<String>,
    /// Website widget key (public: it goes into the page).
    pub public_key: Option<String>,
    /// The `<script>` tag that embeds the widget.
    pub embed_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn status_str(s: ChannelStatus) -> &'static str {
    match s {
        ChannelStatus::Pending => "PENDING",
        ChannelStatus::Connected => "CONNECTED",
        ChannelStatus::Error => "ERROR",
    }
}

pub fn view(state: &AppState, who: &Caller, c: &Channel) -> ChannelView {
    let platform = &state.platform;
    let mut config = bson::Bson::Document(c.config.clone()).into_relaxed_extjson();
    if let Value::Object(map) = &mut config {
        for name in secret_names(c.channel_type) {
            if let Some(sealed) = c.secrets.get(name) {
                // A secret that cannot be opened is still shown as set.
                let shown = platform
                    .secrets
                    .open(sealed)
                    .map_or_else(|_| "****".to_owned(), |s| mask(&s));
                map.insert(name.to_owned(), Value::String(shown));
            }
        }
    }
    let channels = &platform.config.channels;
    let embed_code = c.public_key.as_ref().map(|key| {
        format!(
            r#"<script src="{base}/widget.js" data-key="{key}" async></script>"#,
            base = channels.public_base_url
        )
    });
    ChannelView {
        id: c.id.clone(),
        tenant_id: c.tenant_id.to_string(),
        channel_type: c.channel_type.as_str().to_owned(),
        name: c.name.clone(),
        agent_id: c.agent_id.clone(),
        is_active: c.is_active,
        status: status_str(c.status).to_owned(),
        last_error: c.last_error.clone(),
        last_tested_at: c.last_tested_at,
        config,
        webhook_url: channels.webhook_url(c.channel_type, &c.id),
        verify_token: if who.is_admin() {
            c.webhook_secret.clone()
        } else {
            c.webhook_secret.as_deref().map(mask)
        },
        public_key: c.public_key.clone(),
        embed_code,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    pub channels: Vec<ChannelView>,
    pub pagination: Pagination,
}

/// `POST` requires `type`, `name` and the type's required `config` fields;
/// `PUT` changes what is given (config is merged, secrets not re-sent are
/// kept).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelInput {
    /// `WHATSAPP`, `FACEBOOK`, `INSTAGRAM`, `TELEGRAM` or `WEBSITE`.
    #[serde(rename = "type")]
    pub channel_type: Option<String>,
    pub name: Option<String>,
    /// WHATSAPP: phoneNumberId, accessToken, appSecret (phoneNumber optional).
    /// FACEBOOK: pageId, pageAccessToken (or accessToken), appSecret.
    /// INSTAGRAM: instagramAccountId, accessToken, appSecret.
    /// TELEGRAM: botToken. WEBSITE: allowedOrigins (welcomeMessage, title,
    /// theme optional). Meta types also take apiVersion and baseUrl.
    #[salvo(schema(value_type = Object))]
    pub config: Option<Map<String, Value>>,
    /// An agent of the tenant; `null` leaves conversations to staff.
    #[serde(default, deserialize_with = "double_option")]
    #[salvo(schema(value_type = Option<String>))]
    pub agent_id: Option<Option<String>>,
    pub is_active: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

fn settings_error(e: SettingsError) -> ApiError {
    ApiError::BadRequest {
        message: e.to_string(),
        details: json!({ "field": e.field }),
    }
}

fn parse_type(raw: &str) -> ApiResult<ChannelType> {
    serde_json::from_value(Value::String(raw.trim().to_uppercase())).map_err(|_| {
        ApiError::field(
            "type",
            "must be WHATSAPP, FACEBOOK, INSTAGRAM, TELEGRAM or WEBSITE",
        )
    })
}

async fn check_agent(state: &AppState, who: &Caller, id: &str) -> ApiResult<()> {
    let found = looks_like_id(id)
        && state
            .platform
            .db
            .scoped::<Agent>(&who.tenant_id)
            .find_by_id(id)
            .await?
            .is_some();
    if found {
        Ok(())
    } else {
        Err(ApiError::NotFound("agent"))
    }
}

/// 409 when another channel (of any tenant) already uses this provider id.
async fn check_routing(state: &AppState, key: &str, except: Option<&str>) -> ApiResult<()> {
    let mut filter = doc! { "routingKey": key };
    if let Some(id) = except {
        filter.insert("_id", doc! { "$ne": id });
    }
    // Routing keys are unique across tenants, so this one lookup is unscoped.
    let taken = state
        .platform
        .db
        .unscoped::<Document>(aigentable_platform::model::channel::COLLECTION)
        .find_one(filter)
        .await
        .map_err(ApiError::internal)?
        .is_some();
    if taken {
        Err(routing_conflict())
    } else {
        Ok(())
    }
}

fn routing_conflict() -> ApiError {
    ApiError::Conflict(
        "this provider account (phone number id, page id or Instagram account id) is already connected to a channel"
            .to_owned(),
    )
}

fn map_db(e: aigentable_platform::db::DbError) -> ApiError {
    match e {
        aigentable_platform::db::DbError::Duplicate => routing_conflict(),
        other => other.into(),
    }
}

fn seal_all(state: &AppState, plain: BTreeMap<String, String>) -> BTreeMap<String, String> {
    plain
        .into_iter()
        .map(|(k, v)| (k, state.platform.secrets.seal(&v)))
        .collect()
}

async fn register_webhook(state: &AppState, who: &Caller, channel: &Channel) {
    let job = RegisterWebhook {
        channel_id: channel.id.clone(),
    };
    match state
        .jobs
        .enqueue(&who.tenant_id, Requester::User(who.user_id().clone()), job)
        .await
    {
        Ok(job) => {
            tracing::info!(tenant_id = %who.tenant_id, channel_id = %channel.id, job_id = %job.id, "webhook registration queued");
        }
        // The channel is saved; a later update or test can register it.
        Err(e) => {
            tracing::warn!(tenant_id = %who.tenant_id, channel_id = %channel.id, error = %e, "could not queue webhook registration");
        }
    }
}

/// List channels (page, limit, type).
#[endpoint(
    tags("channels"),
    security(("bearerAuth" = [])),
    parameters(
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
        ("type" = Option<String>, Query, description = "WHATSAPP, FACEBOOK, INSTAGRAM, TELEGRAM or WEBSITE"),
    )
)]
pub async fn list(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<ChannelList>> {
    let who = caller(depot)?;
    let state = app(depot);
    let page = pagination(req)?;
    let mut filter = Document::new();
    if let Some(t) = query_enum::<ChannelType>(
        req,
        "type",
        "WHATSAPP, FACEBOOK, INSTAGRAM, TELEGRAM or WEBSITE",
    )? {
        filter.insert("type", t.as_str());
    }
    let (items, total) = state
        .platform
        .db
        .scoped::<Channel>(&who.tenant_id)
        .find_page(filter, doc! { "createdAt": -1, "_id": -1 }, page)
        .await?;
    Ok(Json(ChannelList {
        channels: items.iter().map(|c| view(state, who, c)).collect(),
        pagination: Pagination::new(page, total),
    }))
}

/// Create a channel (administrators; 201). A Telegram channel registers its
/// webhook with Telegram in the background.
#[endpoint(tags("channels"), security(("bearerAuth" = [])), request_body = ChannelInput, status_codes(201, 400, 403, 404, 409))]
pub async fn create(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<ChannelView>> {
    let input: ChannelInput = json_body(req).await?;
    let who = caller(depot)?;
    let state = app(depot);
    let channel_type = parse_type(
        input
            .channel_type
            .as_deref()
            .ok_or_else(|| ApiError::field("type", "is required"))?,
    )?;
    let name = Name::parse(
        "name",
        input
            .name
            .as_deref()
            .ok_or_else(|| ApiError::field("name", "is required"))?,
        100,
    )?
    .into_inner();
    let config_input = input.config.clone().unwrap_or_default();
    let valid = settings::validate(
        channel_type,
        &config_input,
        &Document::new(),
        &BTreeMap::new(),
    )
    .map_err(settings_error)?;
    let agent_id = input.agent_id.clone().flatten();
    if let Some(id) = &agent_id {
        check_agent(state, who, id).await?;
    }
    if let Some(key) = &valid.routing_key {
        check_routing(state, key, None).await?;
    }
    let now = Utc::now();
    let is_website = channel_type == ChannelType::Website;
    let channel = Channel {
        id: new_id(),
        tenant_id: who.tenant_id.clone(),
        channel_type,
        name,
        agent_id,
        is_active: input.is_active.unwrap_or(true),
        config: valid.config,
        secrets: seal_all(state, valid.new_secrets),
        // Meta verify token / Telegram secret token: 32 URL-safe characters,
        // within Telegram's `A-Za-z0-9_-`.
        webhook_secret: (!is_website).then(|| random_token(24)),
        public_key: is_website.then(|| format!("pk_{}", random_token(18))),
        status: if is_website {
            ChannelStatus::Connected
        } else {
            ChannelStatus::Pending
        },
        last_error: None,
        last_tested_at: None,
        created_at: now,
        updated_at: now,
    };
    // Inserted with its routing key, so that the unique index settles a
    // race between two tenants connecting the same account.
    state
        .platform
        .db
        .scoped::<RoutedChannel>(&who.tenant_id)
        .insert(&RoutedChannel {
            channel: channel.clone(),
            routing_key: valid.routing_key,
        })
        .await
        .map_err(map_db)?;
    tracing::info!(tenant_id = %who.tenant_id, channel_id = %channel.id, channel_type = channel_type.as_str(), "channel created");
    if channel_type == ChannelType::Telegram && channel.is_active {
        register_webhook(state, who, &channel).await;
    }
    res.status_code(StatusCode::CREATED);
    Ok(Json(view(state, who, &channel)))
}

async fn load(state: &AppState, who: &Caller, id: &str) -> ApiResult<Channel> {
    state
        .platform
        .db
        .scoped::<Channel>(&who.tenant_id)
        .find_by_id(id)
        .await?
        .ok_or(ApiError::NotFound("channel"))
}

/// One channel.
#[endpoint(tags("channels"), security(("bearerAuth" = [])), parameters(("id" = String, Path, description = "Channel id")))]
pub async fn get(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<ChannelView>> {
    let who = caller(depot)?;
    let id = path_id(req, "channel")?;
    let state = app(depot);
    let channel = load(state, who, &id).await?;
    Ok(Json(view(state, who, &channel)))
}

/// Update a channel (administrators): the fields given change; `config` is
/// merged and secrets not sent (or sent back masked) are kept.
#[endpoint(tags("channels"), security(("bearerAuth" = [])), request_body = ChannelInput, status_codes(200, 400, 403, 404, 409), parameters(("id" = String, Path, description = "Channel id")))]
pub async fn update(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<ChannelView>> {
    let input: ChannelInput = json_body(req).await?;
    let who = caller(depot)?;
    let id = path_id(req, "channel")?;
    let state = app(depot);
    let current = load(state, who, &id).await?;
    if let Some(raw) = &input.channel_type
        && parse_type(raw)? != current.channel_type
    {
        return Err(ApiError::field(
            "type",
            "cannot be changed; create a new channel instead",
        ));
    }
    let mut set = Document::new();
    let mut unset = Document::new();
    if let Some(name) = &input.name {
        set.insert("name", Name::parse("name", name, 100)?.into_inner());
    }
    match &input.agent_id {
        Some(Some(agent)) => {
            check_agent(state, who, agent).await?;
            set.insert("agentId", agent.as_str());
        }
        Some(None) => {
            set.insert("agentId", bson::Bson::Null);
        }
        None => {}
    }
    let mut credentials_changed = false;
    if let Some(config) = &input.config {
        let valid = settings::validate(
            current.channel_type,
            config,
            &current.config,
            &current.secrets,
        )
        .map_err(settings_error)?;
        let current_key = channel_routing_key(&current);
        if valid.routing_key != current_key {
            match &valid.routing_key {
                Some(key) => {
                    check_routing(state, key, Some(&id)).await?;
                    set.insert("routingKey", key.as_str());
                }
                None => {
                    unset.insert("routingKey", "");
                }
            }
        }
        credentials_changed = !valid.new_secrets.is_empty()
            || valid.routing_key != current_key
            || valid.config.get("baseUrl") != current.config.get("baseUrl");
        for (k, v) in seal_all(state, valid.new_secrets) {
            set.insert(format!("secrets.{k}"), v);
        }
        set.insert("config", valid.config);
    }
    let activated = input.is_active == Some(true) && !current.is_active;
    if let Some(active) = input.is_active {
        set.insert("isActive", active);
    }
    if credentials_changed && current.channel_type != ChannelType::Website {
        // New credentials have not been checked yet.
        set.insert("status", status_str(ChannelStatus::Pending));
        set.insert("lastError", bson::Bson::Null);
    }
    if set.is_empty() && unset.is_empty() {
        return Ok(Json(view(state, who, &current)));
    }
    set.insert("updatedAt", bson::DateTime::now());
    let mut change = doc! { "$set": set };
    if !unset.is_empty() {
        change.insert("$unset", unset);
    }
    let updated = state
        .platform
        .db
        .scoped::<Channel>(&who.tenant_id)
        .update_by_id(&id, change)
        .await
        .map_err(map_db)?
        .ok_or(ApiError::NotFound("channel"))?;
    tracing::info!(tenant_id = %who.tenant_id, channel_id = %id, "channel updated");
    if updated.channel_type == ChannelType::Telegram
        && updated.is_active
        && (activated || credentials_changed)
    {
        register_webhook(state, who, &updated).await;
    }
    Ok(Json(view(state, who, &updated)))
}

/// Delete a channel (administrators). Its conversations stay readable;
/// nothing more is sent through it.
#[endpoint(tags("channels"), security(("bearerAuth" = [])), status_codes(204, 403, 404), parameters(("id" = String, Path, description = "Channel id")))]
pub async fn delete(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let who = caller(depot)?;
    let id = path_id(req, "channel")?;
    if !app(depot)
        .platform
        .db
        .scoped::<Channel>(&who.tenant_id)
        .delete_by_id(&id)
        .await?
    {
        return Err(ApiError::NotFound("channel"));
    }
    tracing::info!(tenant_id = %who.tenant_id, channel_id = %id, "channel deleted");
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTestAccepted {
    pub job_id: String,
    pub job: JobView,
}

/// Check the channel's credentials with its provider (administrators; 202).
/// The verdict lands on the channel (`status`, `lastError`, `lastTestedAt`)
/// and in the job's result.
#[endpoint(tags("channels"), security(("bearerAuth" = [])), status_codes(202, 403, 404), parameters(("id" = String, Path, description = "Channel id")))]
pub async fn test(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<ChannelTestAccepted>> {
    let who = caller(depot)?;
    let id = path_id(req, "channel")?;
    let state = app(depot);
    let channel = load(state, who, &id).await?;
    let job = state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            TestChannel {
                channel_id: channel.id.clone(),
            },
        )
        .await?;
    tracing::info!(tenant_id = %who.tenant_id, channel_id = %id, job_id = %job.id, "channel test queued");
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(ChannelTestAccepted {
        job_id: job.id.clone(),
        job: (&job).into(),
    }))
}
