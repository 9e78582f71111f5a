//! Who may call what: the one access table for every route under `/api/v1`.
//!
//! The router's single policy hoop ([`crate::guard::enforce_policy`]) looks
//! every request up here by method and route template; a route that is not
//! in the table is refused (fail closed), and a test checks that the router
//! and this table list the same routes. Handlers keep only object-level
//! checks (a user edits their own profile, sees the jobs they started).
//!
//! The `scope` column is what an API key needs for the route (checked by
//! the same hoop, see [`crate::routes::api_keys::check_scope`]); a route
//! without a scope refuses every key. Accounts, users, API keys, tenants,
//! AI providers (the tenant's provider secrets) and the platform have none.

use salvo::http::Method;
use serde_json::{Value, json};

use aigentable_platform::domain::Role;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: login, sign-up, provider webhooks, the website widget
    /// (each checks its own credentials: signatures, visitor tokens).
    Public,
    /// A signed-in user with at least this role.
    Role(Role),
}

#[derive(Debug, Clone, Copy)]
pub struct RoutePolicy {
    pub method: &'static str,
    /// Below `/api/v1/`, in the router's syntax (`agents/{id}`).
    pub path: &'static str,
    pub access: Access,
    /// The API-key scope the route needs (`None`: sessions only).
    pub scope: Option<&'static str>,
    /// Costs real work (uploads, LLM calls, exports, searches): counted in
    /// a stricter rate-limit bucket of its own.
    pub expensive: bool,
}

const USER: Access = Access::Role(Role::TenantUser);
const ADMIN: Access = Access::Role(Role::TenantAdmin);
const SUPER: Access = Access::Role(Role::SuperAdmin);
const PUBLIC: Access = Access::Public;

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    scope: Option<&'static str>,
) -> RoutePolicy {
    RoutePolicy {
        method,
        path,
        access,
        scope,
        expensive: false,
    }
}

impl RoutePolicy {
    const fn expensive(self) -> Self {
        Self {
            expensive: true,
            ..self
        }
    }
}

/// The policy. TENANT_USER works conversations and reads agents, documents,
/// channels (masked) and their own jobs; TENANT_ADMIN configures everything
/// in their tenant; SUPER_ADMIN runs the platform (and any tenant through
/// `X-Tenant-ID`).
pub const ROUTES: &[RoutePolicy] = &[
    // Accounts
    route("POST", "auth/register", PUBLIC, None),
    route("POST", "auth/login", PUBLIC, None),
    route("POST", "auth/forgot-password", PUBLIC, None),
    route("POST", "auth/reset-password", PUBLIC, None),
    route("POST", "auth/verify-email", PUBLIC, None),
    route("POST", "auth/logout", USER, None),
    route("GET", "auth/me", USER, None),
    // Users: admins manage them; everyone reads and edits their own profile.
    route("GET", "users", ADMIN, None),
    route("POST", "users", ADMIN, None),
    route("GET", "users/{id}", USER, None),
    route("PUT", "users/{id}", USER, None),
    route("DELETE", "users/{id}", ADMIN, None),
    // Tenants: their own (every SUPER_ADMIN: all of them).
    route("GET", "tenants", ADMIN, None),
    route("GET", "tenants/{id}", USER, None),
    route("PUT", "tenants/{id}", ADMIN, None),
    route("GET", "tenants/{id}/usage", ADMIN, None),
    route("GET", "tenants/{id}/billing", ADMIN, None),
    // Agents
    route("GET", "agents", USER, Some("agents:read")),
    route("POST", "agents", ADMIN, Some("agents:write")),
    route("GET", "agents/{id}", USER, Some("agents:read")),
    route("PUT", "agents/{id}", ADMIN, Some("agents:write")),
    route("DELETE", "agents/{id}", ADMIN, Some("agents:write")),
    route("POST", "agents/{id}/train", ADMIN, Some("agents:write")).expensive(),
    route("POST", "agents/{id}/test", ADMIN, Some("agents:write")).expensive(),
    // Evaluation sets: admins tune agents with them.
    route("GET", "agents/{id}/evals", ADMIN, Some("agents:read")),
    route("POST", "agents/{id}/evals", ADMIN, Some("agents:write")),
    route(
        "POST",
        "agents/{id}/evals/import",
        ADMIN,
        Some("agents:write"),
    ),
    route(
        "GET",
        "agents/{id}/evals/{evalId}",
        ADMIN,
        Some("agents:read"),
    ),
    route(
        "PUT",
        "agents/{id}/evals/{evalId}",
        ADMIN,
        Some("agents:write"),
    ),
    route(
        "DELETE",
        "agents/{id}/evals/{evalId}",
        ADMIN,
        Some("agents:write"),
    ),
    route(
        "GET",
        "agents/{id}/evals/{evalId}/runs",
        ADMIN,
        Some("agents:read"),
    ),
    route(
        "POST",
        "agents/{id}/evals/{evalId}/runs",
        ADMIN,
        Some("agents:write"),
    )
    .expensive(),
    route(
        "GET",
        "agents/{id}/evals/{evalId}/runs/compare",
        ADMIN,
        Some("agents:read"),
    ),
    route(
        "GET",
        "agents/{id}/evals/{evalId}/runs/{runId}",
        ADMIN,
        Some("agents:read"),
    ),
    route("GET", "search/agents", USER, Some("agents:read")).expensive(),
    // AI providers hold the tenant's keys and spend its money.
    route("GET", "ai-providers", ADMIN, None),
    route("POST", "ai-providers", ADMIN, None),
    route("GET", "ai-providers/{id}", ADMIN, None),
    route("PUT", "ai-providers/{id}", ADMIN, None),
    route("DELETE", "ai-providers/{id}", ADMIN, None),
    route("POST", "ai-providers/{id}/test", ADMIN, None),
    // Channels (secrets always masked)
    route("GET", "channels", USER, Some("channels:read")),
    route("POST", "channels", ADMIN, Some("channels:write")),
    route("GET", "channels/{id}", USER, Some("channels:read")),
    route("PUT", "channels/{id}", ADMIN, Some("channels:write")),
    route("DELETE", "channels/{id}", ADMIN, Some("channels:write")),
    route("POST", "channels/{id}/test", ADMIN, Some("channels:write")),
    // Conversations: the staff's daily work.
    route("GET", "conversations", USER, Some("conversations:read")),
    route(
        "GET",
        "conversations/{id}",
        USER,
        Some("conversations:read"),
    ),
    route(
        "POST",
        "conversations/{id}/messages",
        USER,
        Some("messages:write"),
    ),
    route(
        "PUT",
        "conversations/{id}/assign",
        USER,
        Some("conversations:write"),
    ),
    route(
        "PUT",
        "conversations/{id}/status",
        USER,
        Some("conversations:write"),
    ),
    route(
        "POST",
        "conversations/{id}/handoff/brief",
        USER,
        Some("conversations:write"),
    ),
    route(
        "GET",
        "search/conversations",
        USER,
        Some("conversations:read"),
    )
    .expensive(),
    route(
        "PUT",
        "conversations/{id}/rating",
        USER,
        Some("conversations:write"),
    ),
    // Analytics: every user of the tenant reads and exports them.
    route("GET", "analytics/overview", USER, Some("analytics:read")),
    route(
        "GET",
        "analytics/conversations",
        USER,
        Some("analytics:read"),
    ),
    route("GET", "analytics/agents", USER, Some("analytics:read")),
    route("GET", "analytics/channels", USER, Some("analytics:read")),
    route("GET", "analytics/export", USER, Some("analytics:read")).expensive(),
    route(
        "GET",
        "analytics/exports/{id}/download",
        USER,
        Some("analytics:read"),
    ),
    // Knowledge base
    route("GET", "documents", USER, Some("documents:read")),
    route("POST", "documents/upload", ADMIN, Some("documents:write")).expensive(),
    route("GET", "documents/{id}", USER, Some("documents:read")),
    route("DELETE", "documents/{id}", ADMIN, Some("documents:write")),
    route(
        "POST",
        "documents/{id}/process",
        ADMIN,
        Some("documents:write"),
    ),
    route("GET", "search/documents", USER, Some("documents:read")).expensive(),
    // Jobs: each job is further checked against the route that made it.
    route("GET", "jobs", USER, Some("jobs:read")),
    route("GET", "jobs/{id}", USER, Some("jobs:read")),
    route("POST", "jobs/{id}/cancel", USER, Some("jobs:write")),
    route("POST", "jobs/{id}/retry", USER, Some("jobs:write")),
    // API keys: never reachable with a key.
    route("GET", "api-keys", ADMIN, None),
    route("POST", "api-keys", ADMIN, None),
    route("DELETE", "api-keys/{id}", ADMIN, None),
    // Platform
    route("GET", "system/health", SUPER, None),
    route("GET", "system/metrics", SUPER, None),
    route("GET", "system/backups", SUPER, None),
    route("POST", "system/backups", SUPER, None),
    route("POST", "system/backups/{id}/restore", SUPER, None),
    // Provider webhooks (signed) and the website widget (visitor tokens)
    route("GET", "webhooks/whatsapp", PUBLIC, None),
    route("POST", "webhooks/whatsapp", PUBLIC, None),
    route("GET", "webhooks/facebook", PUBLIC, None),
    route("POST", "webhooks/facebook", PUBLIC, None),
    route("POST", "webhooks/telegram/{channelId}", PUBLIC, None),
    route("POST", "widget/{publicKey}/sessions", PUBLIC, None),
    route("OPTIONS", "widget/{publicKey}/sessions", PUBLIC, None),
    route("GET", "widget/{publicKey}/messages", PUBLIC, None),
    route("POST", "widget/{publicKey}/messages", PUBLIC, None),
    route("OPTIONS", "widget/{publicKey}/messages", PUBLIC, None),
    route("GET", "widget/{publicKey}/settings", PUBLIC, None),
    route("OPTIONS", "widget/{publicKey}/settings", PUBLIC, None),
    route("POST", "widget/{publicKey}/rating", PUBLIC, None),
    route("OPTIONS", "widget/{publicKey}/rating", PUBLIC, None),
];

/// The prefix every table path lives under.
pub const PREFIX: &str = "api/v1/";

/// The policy of a route, by method and the router's matched template
/// (with or without the `api/v1/` prefix); `None` when it has none.
pub fn lookup(method: &Method, template: &str) -> Option<&'static RoutePolicy> {
    let template = template.trim_start_matches('/');
    let template = template.strip_prefix(PREFIX).unwrap_or(template);
    ROUTES
        .iter()
        .find(|r| r.path == template && r.method == method.as_str())
}

/// The methods the table serves on a concrete path, from the templates
/// that match it most literally (salvo advertises every template's
/// methods, e.g. `GET` on `documents/upload` through `documents/{id}`).
pub fn allowed_methods(path: &str) -> Option<Vec<&'static str>> {
    let path = path.trim_matches('/');
    let path = path.strip_prefix(PREFIX).unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let literal_matches = |template: &str| -> Option<usize> {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            return None;
        }
        let mut literal = 0;
        for (t, s) in parts.iter().zip(&segments) {
            if t.starts_with('{') {
                continue;
            }
            if t != s {
                return None;
            }
            literal += 1;
        }
        Some(literal)
    };
    let best = ROUTES
        .iter()
        .filter_map(|r| literal_matches(r.path))
        .max()?;
    let mut methods: Vec<&'static str> = ROUTES
        .iter()
        .filter(|r| literal_matches(r.path) == Some(best))
        .map(|r| r.method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    Some(methods)
}

fn rank(role: Role) -> u8 {
    match role {
        Role::TenantUser => 1,
        Role::TenantAdmin => 2,
        Role::SuperAdmin => 3,
    }
}

/// Whether `role` meets `required`.
pub fn allows(role: Role, required: Role) -> bool {
    rank(role) >= rank(required)
}

/// The words a 403 uses for a missing role.
pub fn denial(required: Role) -> &'static str {
    match required {
        Role::TenantUser => "this action requires a signed-in user",
        Role::TenantAdmin => "this action requires an administrator",
        Role::SuperAdmin => "this action requires a platform administrator",
    }
}

/// Where each job type comes from: the route that creates it (so seeing,
/// cancelling and retrying it needs that route's role), or, for work the
/// platform starts on its own, the role that may see it.
#[derive(Debug, Clone, Copy)]
pub enum JobOrigin {
    Route(&'static str, &'static str),
    Role(Role),
}

pub const JOB_ORIGINS: &[(&str, JobOrigin)] = &[
    (
        "deliver_message",
        JobOrigin::Route("POST", "conversations/{id}/messages"),
    ),
    (
        "search_knowledge",
        JobOrigin::Route("GET", "search/documents"),
    ),
    (
        "generate_reply",
        JobOrigin::Route("POST", "agents/{id}/test"),
    ),
    (
        "summarize_handoff",
        JobOrigin::Route("POST", "conversations/{id}/handoff/brief"),
    ),
    ("train_agent", JobOrigin::Route("POST", "agents/{id}/train")),
    (
        "eval_run",
        JobOrigin::Route("POST", "agents/{id}/evals/{evalId}/runs"),
    ),
    ("register_webhook", JobOrigin::Route("POST", "channels")),
    (
        "test_channel",
        JobOrigin::Route("POST", "channels/{id}/test"),
    ),
    (
        "test_ai_provider",
        JobOrigin::Route("POST", "ai-providers/{id}/test"),
    ),
    (
        "ingest_document",
        JobOrigin::Route("POST", "documents/upload"),
    ),
    (
        "purge_document",
        JobOrigin::Route("DELETE", "documents/{id}"),
    ),
    // Inbound messages arrive by webhook (no record: nothing to show);
    // a suspended tenant's are held as process_inbound, which the tenant's
    // admins may re-run.
    ("receive_inbound", JobOrigin::Role(Role::SuperAdmin)),
    ("process_inbound", JobOrigin::Role(Role::TenantAdmin)),
    // A bot's reply is generated and delivered with no record (the
    // conversation and the message's status are theirs): nothing to show.
    ("answer_message", JobOrigin::Role(Role::SuperAdmin)),
    ("deliver_reply", JobOrigin::Role(Role::SuperAdmin)),
    (
        "export_analytics",
        JobOrigin::Route("GET", "analytics/export"),
    ),
    ("run_backup", JobOrigin::Route("POST", "system/backups")),
    (
        "restore_backup",
        JobOrigin::Route("POST", "system/backups/{id}/restore"),
    ),
    // The tenant's own mail (resets, invitations); only its status is shown.
    ("send_email", JobOrigin::Role(Role::TenantAdmin)),
    // Platform work.
    ("rollup_analytics", JobOrigin::Role(Role::SuperAdmin)),
    ("sweep", JobOrigin::Role(Role::SuperAdmin)),
    ("noop", JobOrigin::Role(Role::SuperAdmin)),
    ("chaos_probe", JobOrigin::Role(Role::SuperAdmin)),
];

/// The role needed to see, cancel or retry a job of this type; unknown
/// types are platform-only.
pub fn job_role(job_type: &str) -> Role {
    let origin = JOB_ORIGINS
        .iter()
        .find(|(t, _)| *t == job_type)
        .map(|(_, o)| *o);
    match origin {
        Some(JobOrigin::Role(role)) => role,
        Some(JobOrigin::Route(method, path)) => ROUTES
            .iter()
            .find(|r| r.path == path && r.method == method)
            .map_or(Role::SuperAdmin, |r| match r.access {
                // A public route's job is still tenant work, never anonymous.
                Access::Public => Role::TenantAdmin,
                Access::Role(role) => role,
            }),
        None => Role::SuperAdmin,
    }
}

/// Job types a caller with `role` may see at all (besides the
/// own-jobs-only rule for non-admins).
pub fn visible_job_types(role: Role) -> Vec<&'static str> {
    JOB_ORIGINS
        .iter()
        .filter(|(t, _)| allows(role, job_role(t)))
        .map(|(t, _)| *t)
        .collect()
}

/// Socket.IO rooms for role-restricted events of one tenant.
pub fn admins_room(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}:admins")
}
pub fn platform_admins_room(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}:platform")
}
pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The role rooms a socket of this role and user joins.
pub fn rooms_for(role: Role, tenant_id: &str, user_id: &str) -> Vec<String> {
    let mut rooms = vec![user_room(user_id)];
    if allows(role, Role::TenantAdmin) {
        rooms.push(admins_room(tenant_id));
    }
    if allows(role, Role::SuperAdmin) {
        rooms.push(platform_admins_room(tenant_id));
    }
    rooms
}

/// Who gets a `job-updated` event: those who may see the job over REST
/// (admins of the tenant, or its creator for their own user-level jobs;
/// platform jobs only platform administrators).
pub fn job_event_rooms(tenant_id: &str, job_type: &str, created_by: Option<&str>) -> Vec<String> {
    match job_role(job_type) {
        Role::SuperAdmin => vec![platform_admins_room(tenant_id)],
        Role::TenantAdmin => vec![admins_room(tenant_id)],
        Role::TenantUser => {
            let mut rooms = vec![admins_room(tenant_id)];
            if let Some(user) = created_by.filter(|u| *u != "system") {
                rooms.push(user_room(user));
            }
            rooms
        }
    }
}

/// Every method and template the router serves, walked from its tree (the
/// table's completeness test compares the two).
pub fn router_routes(router: &salvo::Router) -> Vec<(String, String)> {
    use salvo::routing::FilterInfo;
    fn walk(router: &salvo::Router, prefix: &str, out: &mut Vec<(String, String)>) {
        let mut path = prefix.to_owned();
        let mut method = None;
        for filter in router.filters() {
            match filter.info() {
                FilterInfo::Path(p) => {
                    let p = p.trim_matches('/');
                    if !p.is_empty() {
                        if !path.is_empty() {
                            path.push('/');
                        }
                        path.push_str(p);
                    }
                }
                FilterInfo::Method(m) => method = Some(m.as_str().to_owned()),
                _ => {}
            }
        }
        if router.goal.is_some() {
            out.push((method.unwrap_or_else(|| "ANY".to_owned()), path.clone()));
        }
        for child in router.routers() {
            walk(child, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(router, "", &mut out);
    out
}

/// The `x-required-role` value of a route (`PUBLIC` or the role's name).
pub fn role_name(access: Access) -> &'static str {
    match access {
        Access::Public => "PUBLIC",
        Access::Role(role) => role.as_str(),
    }
}

/// A short sentence for the OpenAPI description.
pub fn describe(policy: &RoutePolicy) -> String {
    match policy.access {
        Access::Public => "Access: public (no token).".to_owned(),
        Access::Role(Role::TenantUser) => {
            "Access: any signed-in user (TENANT_USER and up).".to_owned()
        }
        Access::Role(Role::TenantAdmin) => "Access: TENANT_ADMIN or SUPER_ADMIN.".to_owned(),
        Access::Role(Role::SuperAdmin) => "Access: SUPER_ADMIN only.".to_owned(),
    }
}

/// The table as JSON (for docs and tests).
pub fn table_json() -> Value {
    Value::Array(
        ROUTES
            .iter()
            .map(|r| {
                json!({
                    "method": r.method,
                    "path": format!("/{PREFIX}{}", r.path),
                    "role": role_name(r.access),
                    "scope": r.scope,
                })
            })
            .collect(),
    )
}
