//! `/api/v1/channels`: where customers reach the tenant's agents.
//!
//! `config` is validated per type (see `platform::channels::settings`): a
//! malformed value is a 400 naming the field, a missing one makes the
//! channel `NEEDS_SETUP` with `setup` saying what to add and where to find
//! it. Secrets (tokens, app secrets) are sealed with `SecretBox` into
//! `secrets` and shown masked (last four characters) in every answer.
//! WhatsApp, Messenger and Instagram channels are routed on their provider
//! id, claimed by the channel test only once the provider confirmed the
//! token owns it; a claimed id is unique across tenants (409 otherwise).

use std::collections::BTreeMap;

use bson::{Document, doc};
use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use aigentable_jobs::types::{RegisterWebhook, TestChannel};
use aigentable_jobs::{Requester, events};
use aigentable_platform::channels::routes;
use aigentable_platform::channels::settings::{self, SettingsError, secret_names};
use aigentable_platform::channels::setup::{self, MissingField, Setup};
use aigentable_platform::crypto::{mask, random_token};
use aigentable_platform::domain::Name;
use aigentable_platform::ids::{looks_like_id, new_id};
use aigentable_platform::model::{Agent, Channel, ChannelStatus, ChannelType};

use crate::accepted::AcceptedJob;
use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::{json_body, pagination, path_id, query_enum};
use crate::guard::{Caller, caller};
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
    /// `NEEDS_SETUP` (something needed for traffic is missing: see
    /// `setup`), `PENDING` (complete, not confirmed by the provider yet:
    /// press Test), `ACTIVE` (confirmed; website widgets at once) or
    /// `ERROR` (the provider refused: `lastError` has its words).
    pub status: String,
    pub last_error: Option<String>,
    pub last_tested_at: Option<DateTime<Utc>>,
    /// What is still needed before the channel carries traffic, and how.
    pub setup: ChannelSetup,
    /// Meta deliveries refused because the channel has no app secret yet.
    pub unverified_deliveries: u64,
    /// When the last of those arrived.
    pub last_unverified_delivery_at: Option<DateTime<Utc>>,
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

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSetup {
    /// Fields needed for traffic that the channel does not have yet.
    pub missing: Vec<ChannelSetupField>,
    /// What is left to do, in order (empty once the channel is live).
    pub steps: Vec<String>,
    /// How the channel behaves meanwhile (e.g. a widget open to any site,
    /// deliveries refused for lack of an app secret).
    pub warnings: Vec<String>,
    /// Meta channels: the provider confirmed the token owns the phone
    /// number, page or Instagram account, so its webhooks are routed here
    /// (before that the channel receives nothing). Always true for Telegram
    /// and website channels.
    pub account_confirmed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSetupField {
    /// Where to send it, e.g. `config.appSecret`.
    pub field: String,
    pub why: String,
    /// Where the provider's dashboard shows it.
    pub where_to_find_it: String,
}

impl From<Setup> for ChannelSetup {
    fn from(s: Setup) -> Self {
        Self {
            missing: s
                .missing
                .into_iter()
                .map(|m: MissingField| ChannelSetupField {
                    field: m.field,
                    why: m.why,
                    where_to_find_it: m.where_to_find_it,
                })
                .collect(),
            steps: s.steps,
            warnings: s.warnings,
            account_confirmed: s.account_confirmed,
        }
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
    let webhook_url = channels.webhook_url(c.channel_type, &c.id);
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
        status: c.status.as_str().to_owned(),
        last_error: c.last_error.clone(),
        last_tested_at: c.last_tested_at,
        setup: setup::setup(c, webhook_url.as_deref()).into(),
        unverified_deliveries: c.unverified_deliveries,
        last_unverified_delivery_at: c.last_unverified_delivery_at,
        config,
        webhook_url,
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

/// `POST` requires `type` and `name`; `config` may be partial (what is
/// missing for traffic is listed in the answer's `setup`, the channel is
/// `NEEDS_SETUP` meanwhile). `PUT` changes what is given (config is merged;
/// secrets not re-sent, sent back masked or sent empty are kept).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelInput {
    /// `WHATSAPP`, `FACEBOOK`, `INSTAGRAM`, `TELEGRAM` or `WEBSITE`.
    #[serde(rename = "type")]
    pub channel_type: Option<String>,
    pub name: Option<String>,
    /// Needed for traffic (absent: listed in `setup.missing`):
    /// WHATSAPP phoneNumberId (or businessAccountId + phoneNumber, looked
    /// up by the test), accessToken, appSecret; FACEBOOK pageId (looked up
    /// from the token by the test), pageAccessToken (or accessToken),
    /// appSecret; INSTAGRAM instagramAccountId (looked up from the token or
    /// from pageId), accessToken, appSecret; TELEGRAM botToken; WEBSITE
    /// nothing (allowedOrigins restricts the widget to those origins;
    /// welcomeMessage, title, theme). Meta types also take apiVersion and
    /// baseUrl. `webhookUrl` is ignored: the answer shows the platform's.
    #[salvo(schema(value_type = Option<Object>))]
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

/// 409 when another channel (of any tenant) has claimed this provider id,
/// i.e. the provider confirmed that channel's token owns it. An id typed
/// into a channel that was never confirmed blocks nobody.
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
    ApiError::because(
        Reason::Duplicate,
        "this provider account (phone number id, page id or Instagram account id) is already connected to a channel",
    )
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

/// Create a channel (administrators; 201), complete or not: `setup` says
/// what is still needed. A Telegram channel registers its webhook with
/// Telegram in the background.
#[endpoint(tags("channels"), security(("bearerAuth" = [])), request_body = ChannelInput, status_codes(201, 400, 403, 404, 409))]
pub async fn create(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<ChannelView>> {
    let input: ChannelInput = json_body(req).await?;
    let who = caller(depot)?;
    let state = app(depot);
    crate::plan_limits::ensure_room(state, who, crate::plan_limits::Adding::Channels(1)).await?;
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
    settings::check_base_url(
        channel_type,
        &valid,
        None,
        state.platform.config.channels.base_url_overrides,
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
    let mut channel = Channel {
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
        // Claimed by the channel test, once the provider confirmed it.
        routing_key: None,
        status: ChannelStatus::Pending,
        last_error: None,
        unverified_deliveries: 0,
        last_unverified_delivery_at: None,
        last_tested_at: None,
        created_at: now,
        updated_at: now,
    };
    channel.status = setup::status_after_save(&channel, true, ChannelStatus::Pending);
    state
        .platform
        .db
        .scoped::<Channel>(&who.tenant_id)
        .insert(&channel)
        .await?;
    tracing::info!(tenant_id = %who.tenant_id, channel_id = %channel.id, channel_type = channel_type.as_str(), "channel created");
    routes::announce_change(&state.platform.kv, &channel.id).await;
    if channel_type == ChannelType::Telegram
        && channel.is_active
        && channel.secrets.contains_key("botToken")
    {
        register_webhook(state, who, &channel).await;
    }
    res.status_code(StatusCode::CREATED);
    Ok(Json(view(state, who, &channel)))
}

/// Whether the account id the config names (phone number id, page id,
/// Instagram account id) is not the one stored.
fn configured_id_changed(current: &Channel, config: &Document) -> bool {
    settings::routing_field(current.channel_type)
        .is_some_and(|f| config.get(f) != current.config.get(f))
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
    let mut after = current.clone();
    if let Some(config) = &input.config {
        let valid = settings::validate(
            current.channel_type,
            config,
            &current.config,
            &current.secrets,
        )
        .map_err(settings_error)?;
        settings::check_base_url(
            current.channel_type,
            &valid,
            Some(&current.config),
            state.platform.config.channels.base_url_overrides,
        )
        .map_err(settings_error)?;
        if valid.routing_key != current.routing_key {
            if let Some(key) = &valid.routing_key {
                check_routing(state, key, Some(&id)).await?;
            }
            // Another account id: the old claim goes, the new one waits for
            // the provider's confirmation.
            if current.routing_key.is_some() {
                unset.insert("routingKey", "");
                after.routing_key = None;
            }
        }
        credentials_changed = !valid.new_secrets.is_empty()
            || configured_id_changed(&current, &valid.config)
            || valid.config.get("baseUrl") != current.config.get("baseUrl");
        for name in valid.new_secrets.keys() {
            after.secrets.insert(name.clone(), String::new());
        }
        for (k, v) in seal_all(state, valid.new_secrets) {
            set.insert(format!("secrets.{k}"), v);
        }
        after.config = valid.config.clone();
        set.insert("config", valid.config);
    }
    let activated = input.is_active == Some(true) && !current.is_active;
    if let Some(active) = input.is_active {
        set.insert("isActive", active);
    }
    let status = setup::status_after_save(&after, credentials_changed, current.status);
    if status != current.status || credentials_changed {
        set.insert("status", status.as_str());
        // New credentials have not been checked yet.
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
        .await?
        .ok_or(ApiError::NotFound("channel"))?;
    tracing::info!(tenant_id = %who.tenant_id, channel_id = %id, status = updated.status.as_str(), "channel updated");
    routes::announce_change(&state.platform.kv, &id).await;
    events::channel_updated(
        &state.platform.kv,
        updated.tenant_id.as_str(),
        &updated.id,
        setup::event_payload(&updated, &state.platform.config.channels),
    )
    .await;
    if current.is_active && !updated.is_active {
        crate::realtime_sessions::revoke_channel(state, &id).await;
    }
    if updated.channel_type == ChannelType::Telegram
        && updated.is_active
        && updated.secrets.contains_key("botToken")
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
    routes::announce_change(&app(depot).platform.kv, &id).await;
    crate::realtime_sessions::revoke_channel(app(depot), &id).await;
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTestAccepted {
    #[serde(flatten)]
    pub accepted: AcceptedJob,
}

/// Check the channel with its provider (administrators; 202): the token is
/// checked, ids that can be looked up are filled in (Facebook page from the
/// page token, Instagram account from the token or page, WhatsApp phone
/// number id from `businessAccountId` + `phoneNumber`, Telegram bot from
/// its token) and the account the provider confirmed is claimed for webhook
/// routing. The verdict lands on the channel (`status` `ACTIVE`,
/// `NEEDS_SETUP` or `ERROR` with the provider's words, `lastTestedAt`), in
/// the job's result and in a `channel-updated` event.
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
        accepted: (&job).into(),
    }))
}

/// Every route of a channel (webhooks and the widget have their own).
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("channels").get(list).post(create))
        .push(
            Router::with_path("channels/{id}")
                .get(get)
                .put(update)
                .delete(delete),
        )
        .push(Router::with_path("channels/{id}/test").post(test))
}
