//! The served OpenAPI document: what the `#[endpoint]` annotations generate,
//! completed in one place from the access table and the api's shared
//! behaviour, so that the spec lists every status a route can answer
//! without each handler repeating it.

use salvo::http::Method;
use salvo::oapi::OpenApi;
use salvo::prelude::*;
use serde_json::{Map, Value, json};

use crate::policy::{self, Access};

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "options", "head"];

/// Routes whose callers are rate limited (429 with `Retry-After`): the
/// public ones below, and every authenticated route (`crate::rate_limit`).
fn rate_limited(path: &str) -> bool {
    path.starts_with("auth/") || path.starts_with("widget/")
}

/// Routes that wait for a worker's answer (504 when none comes in time).
fn waits_for_worker(path: &str) -> bool {
    matches!(path, "search/documents" | "agents/{id}/test")
}

fn error_body_schema() -> Value {
    json!({
        "type": "object",
        "required": ["message", "code", "details"],
        "properties": {
            "message": { "type": "string", "description": "Human-readable, shown by the frontend." },
            "code": { "type": "string", "description": "Stable machine-readable code, e.g. `VALIDATION_ERROR`." },
            "details": {
                "type": "object",
                "description": "`reason`: the stable cause (one per row of the api's reason table); extra information such as the offending `field`, `limit` or `retryAfter`.",
                "required": ["reason"],
                "properties": {
                    "reason": {
                        "type": "string",
                        "enum": crate::error::Reason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>()
                    },
                    "field": { "type": "string" }
                },
                "additionalProperties": true
            }
        }
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
    })
}

fn names_an_object(name: &str) -> bool {
    name.ends_with("Id") || name.ends_with("Ids")
}

/// Whether the operation's body or query names another object (which may
/// not exist: 404).
fn references_objects(op: &Map<String, Value>, schemas: &Value) -> bool {
    let in_query = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| p["name"].as_str().is_some_and(names_an_object));
    let in_body = op
        .get("requestBody")
        .and_then(|b| b["content"].as_object())
        .into_iter()
        .flat_map(|c| c.values())
        .any(|media| {
            let schema = &media["schema"];
            let schema = match schema["$ref"].as_str() {
                Some(r) => &schemas[r.rsplit('/').next().unwrap_or_default()],
                None => schema,
            };
            schema["properties"]
                .as_object()
                .is_some_and(|p| p.keys().any(|k| names_an_object(k)))
        });
    in_query || in_body
}

/// Statuses every operation of this kind can answer, with their meaning.
fn statuses(
    path: &str,
    method: &str,
    op: &Map<String, Value>,
    access: Option<Access>,
    schemas: &Value,
) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![("500", "Internal error")];
    match access {
        Some(Access::Role(_)) => {
            out.push((
                "401",
                "Missing, invalid, expired or revoked token or API key",
            ));
            out.push((
                "403",
                "Not allowed for this role, an API key without the route's scope (the message names it), or X-Tenant-ID names another tenant",
            ));
        }
        Some(Access::Public) => {}
        None => out.push(("403", "This route has no access policy")),
    }
    let has_body = op.contains_key("requestBody");
    let has_params = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    if has_body || has_params || method != "get" {
        out.push(("400", "Invalid input; `details.field` names the field"));
    }
    if path.contains('{') || references_objects(op, schemas) {
        out.push(("404", "Not found (also for ids of other tenants)"));
    }
    if has_body || method == "post" || method == "put" {
        out.push(("413", "Request body too large"));
        out.push(("415", "Wrong Content-Type for the body"));
    }
    if crate::plan_limits::limits_route(method, path) {
        out.push((
            "402",
            "Over the tenant's plan: `details` has `limit`, `value` and `usage`",
        ));
    }
    if rate_limited(path) || matches!(access, Some(Access::Role(_))) {
        out.push(("429", "Rate limited; see the Retry-After header"));
    }
    if method != "get" || waits_for_worker(path) {
        out.push((
            "503",
            "The job queue or a dependency is unavailable; retry shortly",
        ));
    }
    if waits_for_worker(path) {
        out.push(("504", "No worker answered in time"));
    }
    out
}

/// What a handler enforces on a field that the annotation leaves open (a
/// `String` parsed into an enum, text that must not be blank, ...).
#[derive(Clone, Copy)]
enum Rule {
    OneOf(&'static [&'static str]),
    /// Not empty and not only whitespace.
    NonBlank,
    /// A name: not blank once trimmed, no control characters inside.
    Name,
    Required,
    /// Required, and `null` is a meaningful value.
    RequiredNullable,
    /// An integer query parameter's upper bound.
    Max(u64),
    /// A date (`YYYY-MM-DD`) or an RFC 3339 time.
    DateOrTime,
    Email,
    /// At least 8 and at most 128 characters, with a letter and a digit.
    Password,
}

const ROLES: &[&str] = &["SUPER_ADMIN", "TENANT_ADMIN", "TENANT_USER"];
const USER_STATUSES: &[&str] = &["ACTIVE", "INACTIVE", "SUSPENDED"];
const AGENT_STATUSES: &[&str] = &["ACTIVE", "INACTIVE", "TRAINING"];
const CHANNEL_TYPES: &[&str] = &["WHATSAPP", "FACEBOOK", "INSTAGRAM", "TELEGRAM", "WEBSITE"];
const CONVERSATION_STATUSES: &[&str] = &["ACTIVE", "WAITING", "ASSIGNED", "RESOLVED", "CLOSED"];
const DOCUMENT_STATUSES: &[&str] = &[
    "UPLOADED",
    "QUEUED",
    "PARSING",
    "CHUNKING",
    "EMBEDDING",
    "INDEXING",
    "READY",
    "FAILED",
];
const JOB_STATUSES: &[&str] = &[
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "DEAD",
    "CANCELLED",
];
const PROVIDER_TYPES: &[&str] = &["OPENAI", "AZURE_OPENAI", "OPENAI_COMPATIBLE"];
const TENANT_STATUSES: &[&str] = &["ACTIVE", "SUSPENDED"];

/// `(method, route, field, rule)`: query parameters and top-level body fields.
const FIELD_RULES: &[(&str, &str, &str, Rule)] = &[
    ("GET", "agents", "status", Rule::OneOf(AGENT_STATUSES)),
    ("GET", "channels", "type", Rule::OneOf(CHANNEL_TYPES)),
    (
        "GET",
        "conversations",
        "status",
        Rule::OneOf(CONVERSATION_STATUSES),
    ),
    ("GET", "documents", "status", Rule::OneOf(DOCUMENT_STATUSES)),
    ("GET", "jobs", "status", Rule::OneOf(JOB_STATUSES)),
    ("GET", "users", "role", Rule::OneOf(ROLES)),
    ("GET", "users", "status", Rule::OneOf(USER_STATUSES)),
    ("GET", "search/agents", "q", Rule::NonBlank),
    ("GET", "search/conversations", "q", Rule::NonBlank),
    ("GET", "search/documents", "q", Rule::NonBlank),
    ("POST", "agents", "name", Rule::Required),
    ("POST", "agents", "name", Rule::Name),
    ("PUT", "agents/{id}", "name", Rule::Name),
    ("POST", "agents/{id}/test", "message", Rule::NonBlank),
    ("POST", "agents/{id}/evals", "name", Rule::Required),
    ("POST", "agents/{id}/evals", "name", Rule::Name),
    ("POST", "agents/{id}/evals", "cases", Rule::Required),
    ("PUT", "agents/{id}/evals/{evalId}", "name", Rule::Name),
    ("POST", "agents", "category", Rule::Name),
    ("PUT", "agents/{id}", "category", Rule::Name),
    ("POST", "ai-providers", "name", Rule::Required),
    ("POST", "ai-providers", "name", Rule::Name),
    ("PUT", "ai-providers/{id}", "name", Rule::Name),
    ("POST", "ai-providers", "chatModel", Rule::Name),
    ("PUT", "ai-providers/{id}", "chatModel", Rule::Name),
    ("POST", "channels", "name", Rule::Required),
    ("POST", "channels", "name", Rule::Name),
    ("PUT", "channels/{id}", "name", Rule::Name),
    ("PUT", "tenants/{id}", "name", Rule::Name),
    ("POST", "api-keys", "name", Rule::Name),
    ("POST", "ai-providers", "type", Rule::Required),
    ("POST", "ai-providers", "type", Rule::OneOf(PROVIDER_TYPES)),
    (
        "PUT",
        "ai-providers/{id}",
        "type",
        Rule::OneOf(PROVIDER_TYPES),
    ),
    ("POST", "auth/forgot-password", "email", Rule::Email),
    ("POST", "auth/login", "email", Rule::Email),
    ("POST", "auth/login", "password", Rule::NonBlank),
    ("POST", "auth/register", "email", Rule::Email),
    ("POST", "auth/register", "password", Rule::Password),
    ("POST", "auth/register", "firstName", Rule::Name),
    ("POST", "auth/register", "lastName", Rule::Name),
    ("POST", "auth/register", "tenantName", Rule::Name),
    ("POST", "auth/reset-password", "password", Rule::Password),
    ("POST", "channels", "type", Rule::Required),
    ("POST", "channels", "type", Rule::OneOf(CHANNEL_TYPES)),
    ("PUT", "channels/{id}", "type", Rule::OneOf(CHANNEL_TYPES)),
    (
        "PUT",
        "conversations/{id}/assign",
        "userId",
        Rule::RequiredNullable,
    ),
    ("GET", "conversations", "startDate", Rule::DateOrTime),
    ("GET", "conversations", "endDate", Rule::DateOrTime),
    ("GET", "analytics/overview", "startDate", Rule::DateOrTime),
    ("GET", "analytics/overview", "endDate", Rule::DateOrTime),
    (
        "GET",
        "analytics/conversations",
        "startDate",
        Rule::DateOrTime,
    ),
    (
        "GET",
        "analytics/conversations",
        "endDate",
        Rule::DateOrTime,
    ),
    ("GET", "analytics/agents", "startDate", Rule::DateOrTime),
    ("GET", "analytics/agents", "endDate", Rule::DateOrTime),
    ("GET", "analytics/channels", "startDate", Rule::DateOrTime),
    ("GET", "analytics/channels", "endDate", Rule::DateOrTime),
    ("GET", "analytics/export", "startDate", Rule::DateOrTime),
    ("GET", "analytics/export", "endDate", Rule::DateOrTime),
    (
        "GET",
        "analytics/export",
        "format",
        Rule::OneOf(&["csv", "xlsx"]),
    ),
    ("GET", "analytics/export", "report", Rule::OneOf(REPORTS)),
    ("GET", "analytics/overview", "groupBy", Rule::OneOf(GRAINS)),
    (
        "GET",
        "analytics/conversations",
        "groupBy",
        Rule::OneOf(GRAINS),
    ),
    ("GET", "analytics/agents", "groupBy", Rule::OneOf(GRAINS)),
    ("GET", "analytics/channels", "groupBy", Rule::OneOf(GRAINS)),
    ("GET", "analytics/export", "groupBy", Rule::OneOf(GRAINS)),
    ("GET", "search/documents", "limit", Rule::Max(50)),
    ("POST", "agents", "model", Rule::Name),
    ("PUT", "agents/{id}", "model", Rule::Name),
    (
        "POST",
        "conversations/{id}/messages",
        "content",
        Rule::NonBlank,
    ),
    (
        "PUT",
        "conversations/{id}/status",
        "status",
        Rule::OneOf(CONVERSATION_STATUSES),
    ),
    (
        "PUT",
        "tenants/{id}",
        "status",
        Rule::OneOf(TENANT_STATUSES),
    ),
    ("POST", "users", "email", Rule::Email),
    ("POST", "users", "password", Rule::Password),
    ("POST", "users", "firstName", Rule::Name),
    ("POST", "users", "lastName", Rule::Name),
    ("POST", "users", "role", Rule::OneOf(ROLES)),
    ("POST", "users", "status", Rule::OneOf(USER_STATUSES)),
    ("PUT", "users/{id}", "email", Rule::Email),
    ("PUT", "users/{id}", "password", Rule::Password),
    ("PUT", "users/{id}", "firstName", Rule::Name),
    ("PUT", "users/{id}", "lastName", Rule::Name),
    ("PUT", "users/{id}", "role", Rule::OneOf(ROLES)),
    ("PUT", "users/{id}", "status", Rule::OneOf(USER_STATUSES)),
    (
        "POST",
        "widget/{publicKey}/messages",
        "text",
        Rule::NonBlank,
    ),
];

/// Rules on nested bodies, by component schema (module path under
/// `aigentable_api.routes`) and property.
const COMPONENT_RULES: &[(&str, &str, Rule)] = &[
    ("tenants.SettingsPatch", "businessHours", Rule::Name),
    ("tenants.SettingsPatch", "supportEmail", Rule::Email),
    ("agents.evals.EvalCaseInput", "question", Rule::NonBlank),
];

/// `groupBy` of the analytics reports.
const GRAINS: &[&str] = &["hour", "day", "week", "month"];
/// `report` of `GET /analytics/export`.
const REPORTS: &[&str] = &["overview", "conversations", "agents", "channels", "all"];

/// What `str::trim` removes (Unicode `White_Space`), as a regex class body.
const RUST_SPACE: &str =
    "\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

fn apply_rule(schema: &mut Value, rule: Rule) {
    let nullable = schema["type"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "null"));
    let Some(schema) = schema.as_object_mut() else {
        return;
    };
    match rule {
        Rule::OneOf(values) => {
            let mut values: Vec<Value> = values.iter().map(|v| json!(v)).collect();
            if nullable {
                values.push(Value::Null);
            }
            schema.insert("enum".into(), Value::Array(values));
        }
        Rule::NonBlank => {
            schema.insert("minLength".into(), json!(1));
            // Something besides whitespace as Rust's `trim` sees it (Python's
            // `\s` also counts U+001C..U+001F, so the class is spelled out).
            schema.insert("pattern".into(), json!(format!("[^{RUST_SPACE}]")));
        }
        Rule::Name => {
            schema.insert("minLength".into(), json!(1));
            // `Name::parse`: trimmed, not empty, no control characters.
            let edge = format!("[^{RUST_SPACE}\\u0000-\\u001f\\u007f-\\u009f]");
            schema.insert(
                "pattern".into(),
                json!(format!(
                    "^[{RUST_SPACE}]*{edge}([^\\u0000-\\u001f\\u007f-\\u009f]*{edge})?[{RUST_SPACE}]*$"
                )),
            );
        }
        Rule::Max(max) => {
            schema.insert("maximum".into(), json!(max));
        }
        Rule::DateOrTime => {
            schema.insert(
                "anyOf".into(),
                json!([{ "format": "date" }, { "format": "date-time" }]),
            );
        }
        Rule::Email => {
            schema.insert("format".into(), json!("email"));
            schema.insert("maxLength".into(), json!(254));
            // Our addresses need a dot in the domain.
            schema.insert("pattern".into(), json!("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$"));
        }
        Rule::Password => {
            schema.insert("minLength".into(), json!(8));
            schema.insert("maxLength".into(), json!(128));
            schema.insert("pattern".into(), json!("^(?=.*\\p{L})(?=.*[0-9])"));
        }
        Rule::Required | Rule::RequiredNullable => {}
    }
}

/// Applies [`FIELD_RULES`] to one operation; a body schema behind `$ref`
/// is copied into the operation first, since others may share it.
fn apply_field_rules(template: &str, method: &str, op: &mut Map<String, Value>, schemas: &Value) {
    let upper = method.to_ascii_uppercase();
    for (_, _, field, rule) in FIELD_RULES
        .iter()
        .filter(|(m, p, _, _)| *m == upper && *p == template)
    {
        if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut)
            && let Some(param) = params
                .iter_mut()
                .find(|p| p["name"] == *field && p["in"] == "query")
        {
            if matches!(
                rule,
                Rule::Required | Rule::RequiredNullable | Rule::NonBlank
            ) {
                param["required"] = json!(true);
            }
            apply_rule(&mut param["schema"], *rule);
            continue;
        }
        let Some(content) = op
            .get_mut("requestBody")
            .and_then(|b| b.get_mut("content"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for media in content.values_mut() {
            let schema = &mut media["schema"];
            if let Some(r) = schema["$ref"].as_str() {
                let copy = schemas[r.rsplit('/').next().unwrap_or_default()].clone();
                *schema = copy;
            }
            if let Rule::Required | Rule::RequiredNullable = rule {
                if let Rule::Required = rule
                    && let Some(Value::Array(types)) = schema
                        .get_mut("properties")
                        .and_then(|p| p.get_mut(*field))
                        .and_then(|p| p.get_mut("type"))
                {
                    types.retain(|t| t != "null");
                }
                let required = schema
                    .as_object_mut()
                    .map(|s| s.entry("required").or_insert_with(|| json!([])));
                if let Some(Value::Array(list)) = required
                    && !list.iter().any(|f| f == *field)
                {
                    list.push(json!(field));
                }
                continue;
            }
            if let Some(prop) = schema.get_mut("properties").and_then(|p| p.get_mut(*field)) {
                apply_rule(prop, *rule);
            }
        }
    }
}

/// Unsigned integers: their range, so that no generator sends what
/// cannot be parsed.
fn bound_integers(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let max = match map.get("format").and_then(Value::as_str) {
                Some("uint32") => Some(json!(u32::MAX)),
                Some("uint64") | Some("uint") => Some(json!(9_007_199_254_740_991_u64)),
                Some("int32") => Some(json!(i32::MAX)),
                _ => None,
            };
            if let Some(max) = max {
                map.entry("maximum").or_insert(max);
                if map.get("format").and_then(Value::as_str) != Some("int32") {
                    map.entry("minimum").or_insert(json!(0));
                }
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// Success statuses some annotations leave out.
const SUCCESS: &[(&str, &str, &str, &str)] = &[
    (
        "POST",
        "auth/register",
        "201",
        "Registered: the user, the new tenant and a token",
    ),
    ("POST", "agents", "201", "The created agent"),
    (
        "POST",
        "agents/{id}/evals",
        "201",
        "The created evaluation set",
    ),
    (
        "POST",
        "agents/{id}/evals/import",
        "201",
        "The imported evaluation set",
    ),
    ("DELETE", "agents/{id}/evals/{evalId}", "204", "Deleted"),
    (
        "POST",
        "agents/{id}/evals/{evalId}/runs",
        "202",
        "Queued: the evaluation job and its run",
    ),
    ("DELETE", "agents/{id}", "204", "Deleted"),
    ("POST", "users", "201", "The created user"),
    ("POST", "ai-providers", "201", "The created AI provider"),
    (
        "POST",
        "api-keys",
        "201",
        "The created API key with its secret `key` (shown once)",
    ),
    ("DELETE", "api-keys/{id}", "204", "Revoked"),
    ("DELETE", "ai-providers/{id}", "204", "Deleted"),
    (
        "POST",
        "ai-providers/{id}/test",
        "202",
        "Queued: the test job",
    ),
    (
        "POST",
        "conversations/{id}/messages",
        "202",
        "Stored; its delivery is queued",
    ),
    (
        "POST",
        "documents/upload",
        "202",
        "Stored; processing is queued",
    ),
    ("DELETE", "documents/{id}", "202", "Deletion is queued"),
    (
        "POST",
        "documents/{id}/process",
        "202",
        "Queued: the processing job",
    ),
    ("POST", "jobs/{id}/retry", "202", "Queued again"),
    ("POST", "system/backups", "202", "Queued: the backup job"),
    (
        "POST",
        "system/backups/{id}/restore",
        "202",
        "Queued: the restore job (a dry run only counts)",
    ),
    (
        "POST",
        "widget/{publicKey}/messages",
        "202",
        "Stored; the answer is queued",
    ),
    ("POST", "channels", "201", "The created channel"),
    ("DELETE", "channels/{id}", "204", "Deleted"),
    (
        "POST",
        "channels/{id}/test",
        "202",
        "Queued: the test job (with `wait=true` 200 and its result)",
    ),
    (
        "GET",
        "analytics/export",
        "202",
        "Queued: the export job and where to download the file",
    ),
    ("DELETE", "users/{id}", "204", "Deleted"),
    (
        "POST",
        "agents/{id}/test",
        "202",
        "Queued: `{jobId, status}` (with `wait=true` 200 and the answer)",
    ),
    (
        "POST",
        "agents/{id}/train",
        "202",
        "Queued: `{jobId, status, agentId, documentIds}`",
    ),
];

/// Meta webhook deliveries: the routing ids are read from this shape
/// before the signature is checked.
fn meta_webhook_schema(objects: &[&str]) -> Value {
    json!({
        "type": "object",
        "required": ["object", "entry"],
        "properties": {
            "object": { "type": "string", "enum": objects },
            "entry": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "required": ["id"],
                    "properties": { "id": { "type": "string", "minLength": 1 } }
                }
            }
        }
    })
}

/// `POST /conversations/{id}/messages`: `content`, or its alias `message`
/// when `content` is absent or null; the one used must not be blank.
fn require_content(op: &mut Map<String, Value>) {
    let text = json!({ "type": "string", "minLength": 1, "pattern": format!("[^{RUST_SPACE}]") });
    if let Some(content) = op
        .get_mut("requestBody")
        .and_then(|b| b.get_mut("content"))
        .and_then(Value::as_object_mut)
    {
        for media in content.values_mut() {
            if let Some(schema) = media["schema"].as_object_mut() {
                schema.insert(
                    "anyOf".into(),
                    json!([
                        { "required": ["content"], "properties": { "content": text } },
                        {
                            "required": ["message"],
                            "properties": { "content": { "type": "null" }, "message": text }
                        }
                    ]),
                );
            }
        }
    }
}

/// `POST /documents/upload`: read as multipart by hand, so described here.
fn upload_body() -> Value {
    json!({
        "required": true,
        "content": { "multipart/form-data": { "schema": {
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {
                    "type": "array",
                    "minItems": 1,
                    "items": { "type": "string", "format": "binary" }
                },
                "agentId": { "type": "string", "description": "Train this agent on the files" },
                "category": { "type": "string", "maxLength": 50 }
            }
        } } }
    })
}

/// `POST /agents/{id}/evals/import`: read as multipart by hand too.
fn eval_import_body() -> Value {
    json!({
        "required": true,
        "content": { "multipart/form-data": { "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {
                    "type": "string",
                    "format": "binary",
                    "description": "CSV or .xlsx, at most 1 MiB; the first row names the columns: question (required), expected answer, expected facts, expected documents (ids or names; lists separated by `;`)"
                },
                "name": { "type": "string", "minLength": 1, "maxLength": 100, "description": "The set's name; default: the file's name" }
            }
        } } }
    })
}

/// Query parameters whose limits the server enforces.
fn constrain_parameter(param: &mut Value) {
    if param["in"] != "query" {
        return;
    }
    let limits = match param["name"].as_str() {
        Some("page") => json!({ "minimum": 1, "maximum": 1_000_000 }),
        Some("limit") => json!({ "minimum": 1, "maximum": 100 }),
        _ => return,
    };
    if let (Some(schema), Some(limits)) = (param["schema"].as_object_mut(), limits.as_object()) {
        for (k, v) in limits {
            schema.insert(k.clone(), v.clone());
        }
    }
}

/// The generated document completed from [`policy::ROUTES`]: each
/// operation gets `x-required-role`, `x-api-key-scope`, an access sentence
/// in its description and every error status it can answer.
pub fn finish(doc: &OpenApi) -> Value {
    let mut spec = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    spec["components"]["schemas"]["ErrorBody"] = error_body_schema();
    bound_integers(&mut spec);
    for (schema, field, rule) in COMPONENT_RULES {
        let key = format!("aigentable_api.routes.{schema}");
        if let Some(prop) =
            spec["components"]["schemas"][key.as_str()]["properties"].get_mut(*field)
        {
            apply_rule(prop, *rule);
        }
    }
    let schemas = spec["components"]["schemas"].clone();
    let Some(paths) = spec["paths"].as_object_mut() else {
        return spec;
    };
    for (path, item) in paths.iter_mut() {
        let template = path.trim_start_matches('/');
        let template = template
            .strip_prefix(policy::PREFIX)
            .unwrap_or(template)
            .to_owned();
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for method in METHODS {
            let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else {
                continue;
            };
            let route = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .ok()
                .and_then(|m| policy::lookup(&m, &template));
            let access = route.map(|r| r.access);
            if let Some(route) = route {
                op.insert(
                    "x-required-role".into(),
                    json!(policy::role_name(route.access)),
                );
                op.insert("x-api-key-scope".into(), json!(route.scope));
                let sentence = policy::describe(route);
                let description = match op.get("description").and_then(Value::as_str) {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{sentence}"),
                    _ => sentence,
                };
                op.insert("description".into(), json!(description));
                match route.access {
                    Access::Role(_) if route.scope.is_some() => {
                        op.insert(
                            "security".into(),
                            json!([{ "bearerAuth": [] }, { "apiKeyAuth": [] }]),
                        );
                    }
                    Access::Role(_) => {
                        op.insert("security".into(), json!([{ "bearerAuth": [] }]));
                    }
                    Access::Public => {
                        op.remove("security");
                    }
                }
            }
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                params.iter_mut().for_each(constrain_parameter);
            }
            // After the shared limits: a rule may tighten them.
            apply_field_rules(&template, method, op, &schemas);
            if method == "post"
                && template.starts_with("webhooks/")
                && template != "webhooks/telegram/{channelId}"
            {
                // The `object` Meta sends for each kind of channel.
                let objects: &[&str] = if template == "webhooks/whatsapp" {
                    &["whatsapp_business_account"]
                } else {
                    &["page", "instagram"]
                };
                op.insert(
                    "requestBody".into(),
                    json!({ "required": true, "content": { "application/json": { "schema": meta_webhook_schema(objects) } } }),
                );
            }
            if method == "post"
                && template == "agents/{id}/train"
                && let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut)
            {
                // Without a body the agent is re-indexed on its documents.
                body.insert("required".into(), json!(false));
            }
            if method == "post" && template == "conversations/{id}/messages" {
                require_content(op);
            }
            if method == "post" && template == "documents/upload" {
                op.insert("requestBody".into(), upload_body());
            }
            if method == "post" && template == "agents/{id}/evals/import" {
                op.insert("requestBody".into(), eval_import_body());
            }
            for (m, p, code, text) in SUCCESS {
                if m.eq_ignore_ascii_case(method)
                    && *p == template
                    && let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut)
                {
                    responses
                        .entry(*code)
                        .or_insert_with(|| json!({ "description": text }));
                }
            }
            let wanted = statuses(&template, method, op, access, &schemas);
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(responses) = responses {
                for (code, text) in wanted {
                    responses
                        .entry(code)
                        .or_insert_with(|| error_response(text));
                }
            }
        }
    }
    spec
}

/// Serves the finished document, built on its first request rather than
/// at start: building it runs the schema code of every route, whose pages
/// and memory an api replica never asked for its document need not hold.
#[derive(Default)]
pub struct Spec(std::sync::OnceLock<String>);

#[async_trait]
impl Handler for Spec {
    async fn handle(
        &self,
        _req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let spec = self
            .0
            .get_or_init(|| finish(&crate::openapi_document()).to_string());
        res.render(Text::Json(spec.clone()));
    }
}
