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

/// Routes whose callers are rate limited (429 with `Retry-After`).
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
                "description": "Extra information such as the offending `field`; `{}` when there is none.",
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
            out.push(("401", "Missing, invalid, expired or revoked token"));
            out.push(("403", "Not allowed for this role, or X-Tenant-ID names another tenant"));
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
    if has_body {
        out.push(("413", "Request body too large"));
        out.push(("415", "Wrong Content-Type for the body"));
    }
    if rate_limited(path) {
        out.push(("429", "Rate limited; see the Retry-After header"));
    }
    if method != "get" || waits_for_worker(path) {
        out.push(("503", "The job queue or a dependency is unavailable; retry shortly"));
    }
    if waits_for_worker(path) {
        out.push(("504", "No worker answered in time"));
    }
    out
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
                op.insert("x-required-role".into(), json!(policy::role_name(route.access)));
                op.insert("x-api-key-scope".into(), json!(route.scope));
                let sentence = policy::describe(route);
                let description = match op.get("description").and_then(Value::as_str) {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{sentence}"),
                    _ => sentence,
                };
                op.insert("description".into(), json!(description));
                match route.access {
                    Access::Role(_) => {
                        op.insert("security".into(), json!([{ "bearerAuth": [] }]));
                    }
                    Access::Public => {
                        op.remove("security");
                    }
                }
            }
            let wanted = statuses(&template, method, op, access, &schemas);
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                params.iter_mut().for_each(constrain_parameter);
            }
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

/// Serves the finished document.
pub struct Spec(String);

impl Spec {
    pub fn new(doc: &OpenApi) -> Self {
        Self(finish(doc).to_string())
    }
}

#[async_trait]
impl Handler for Spec {
    async fn handle(
        &self,
        _req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        res.render(Text::Json(self.0.clone()));
    }
}
