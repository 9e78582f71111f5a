//! The access policy, walked from its one table (`api/src/policy.rs`): the
//! router and the table list the same routes; every route × every role gets
//! what the table says (role matrix); every route taking an id, and every
//! request field naming an object, refuses another tenant's ids (BOLA
//! matrix); jobs and their `job-updated` events follow the route that
//! created them. A new route or field is covered without anyone listing it
//! here: a route missing from the table, or an id field with no known
//! object kind, fails these tests.

use std::collections::{BTreeMap, BTreeSet};

use aigentable_api::policy::{self, Access, JOB_ORIGINS, JobOrigin, ROUTES};
use aigentable_jobs::types as jobs;
use aigentable_platform::domain::Role;
use aigentable_tests::socket::connect;
use aigentable_tests::{Reply, Session, TestApp, inbound, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An id that looks valid but names nothing.
const NOBODY: &str = "0123456789abcdef01234567";

fn api_path(template: &str) -> String {
    format!("/api/v1/{template}")
}

#[test]
fn router_and_table_list_the_same_routes() {
    let router = aigentable_api::api_router();
    let served: BTreeSet<(String, String)> = policy::router_routes(&router)
        .into_iter()
        .map(|(m, p)| {
            let p = p
                .strip_prefix(policy::PREFIX)
                .unwrap_or_else(|| panic!("route {m} {p} outside /api/v1"))
                .to_owned();
            (m, p)
        })
        .collect();
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(table.len(), ROUTES.len(), "the table lists a route twice");
    let missing: Vec<_> = served.difference(&table).collect();
    let stale: Vec<_> = table.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "routes served without a policy (add them to api/src/policy.rs): {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "policies for routes the router does not serve: {stale:?}"
    );
}

#[test]
fn every_job_type_has_an_origin_in_the_table() {
    for t in jobs::all().into_iter().map(|k| k.name) {
        assert!(
            JOB_ORIGINS.iter().any(|(name, _)| *name == t),
            "job type {t} has no origin in policy::JOB_ORIGINS"
        );
    }
    for (name, origin) in JOB_ORIGINS {
        if let JobOrigin::Route(method, path) = origin {
            assert!(
                ROUTES
                    .iter()
                    .any(|r| r.method == *method && r.path == *path),
                "{name} names {method} {path}, which is not in the table"
            );
        }
    }
    // The examples the policy is written for.
    assert_eq!(policy::job_role("ingest_document"), Role::TenantAdmin);
    assert_eq!(policy::job_role("run_backup"), Role::SuperAdmin);
    assert_eq!(policy::job_role("deliver_message"), Role::TenantUser);
    assert_eq!(policy::job_role("some_future_job"), Role::SuperAdmin);
}

#[tokio::test]
async fn a_route_missing_from_the_table_is_refused() {
    use salvo::prelude::*;
    use salvo::test::{ResponseExt, TestClient};
    #[handler]
    async fn forgotten() -> &'static str {
        "reached"
    }
    let router = Router::with_path("api/v1")
        .hoop(aigentable_api::guard::enforce_policy)
        .push(Router::with_path("brand-new/{id}").get(forgotten));
    let service = Service::new(router);
    let mut res = TestClient::get("http://127.0.0.1/api/v1/brand-new/1")
        .send(&service)
        .await;
    assert_eq!(res.status_code, Some(StatusCode::FORBIDDEN));
    let body = res.take_string().await.unwrap_or_default();
    assert!(body.contains("no access policy"), "{body}");
}

fn rank(role: Option<Role>) -> u8 {
    match role {
        None => 0,
        Some(Role::TenantUser) => 1,
        Some(Role::TenantAdmin) => 2,
        Some(Role::SuperAdmin) => 3,
    }
}

/// A concrete path for a template: every parameter names nothing.
fn nowhere(template: &str) -> String {
    let concrete: Vec<String> = template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                NOBODY.to_owned()
            } else {
                seg.to_owned()
            }
        })
        .collect();
    api_path(&concrete.join("/"))
}

async fn call(app: &TestApp, method: &str, path: &str, who: Option<&Session>) -> Reply {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let body = (method == Method::POST || method == Method::PUT).then(|| json!({}));
    app.request(method, path, who, body).await
}

/// Whether the policy hoop (not the handler) refused the call.
fn refused_by_policy(r: &Reply) -> bool {
    (r.status == StatusCode::UNAUTHORIZED && r.message() == "Authentication required")
        || (r.status == StatusCode::FORBIDDEN && r.message().starts_with("This action requires"))
        || r.message() == "This route has no access policy"
}

#[tokio::test]
async fn role_matrix_every_route_by_every_role() {
    let app = spawn_app().await;
    let admin = app.register("Matrix").await;
    let user = app.add_user(&admin, "TENANT_USER").await;
    let root = app.super_admin(&admin).await;
    let roles: [(Option<Role>, Option<&Session>); 4] = [
        (None, None),
        (Some(Role::TenantUser), Some(&user)),
        (Some(Role::TenantAdmin), Some(&admin)),
        (Some(Role::SuperAdmin), Some(&root)),
    ];
    let mut failures = Vec::new();
    for route in ROUTES {
        // Logging out ends the session the rest of the matrix uses: below.
        if route.path == "auth/logout" {
            continue;
        }
        let path = nowhere(route.path);
        for (role, who) in &roles {
            let r = call(&app, route.method, &path, *who).await;
            let label = format!(
                "{} {} as {}",
                route.method,
                route.path,
                role.map_or("anonymous", Role::as_str)
            );
            match route.access {
                Access::Public => {
                    if refused_by_policy(&r) {
                        failures.push(format!("{label}: public route refused: {:?}", r.body));
                    }
                }
                Access::Role(required) if rank(*role) < rank(Some(required)) => {
                    let expected = if role.is_none() {
                        StatusCode::UNAUTHORIZED
                    } else {
                        StatusCode::FORBIDDEN
                    };
                    if r.status != expected || !refused_by_policy(&r) {
                        failures.push(format!(
                            "{label}: expected {expected} from the policy, got {} {:?}",
                            r.status, r.body
                        ));
                    }
                }
                Access::Role(_) => {
                    if r.status == StatusCode::UNAUTHORIZED
                        || r.status == StatusCode::FORBIDDEN
                        || r.status.is_server_error()
                    {
                        failures.push(format!(
                            "{label}: allowed role refused or failed: {} {:?}",
                            r.status, r.body
                        ));
                    }
                }
            }
        }
    }
    // Logout, each role with a session of its own.
    for (role, who) in &roles {
        let fresh = match who {
            None => None,
            Some(s) => {
                let login = app.login(&s.email, &s.password).await;
                assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
                Some(Session {
                    token: login.body["token"].as_str().unwrap_or_default().to_owned(),
                    ..(*s).clone()
                })
            }
        };
        let r = call(&app, "POST", "/api/v1/auth/logout", fresh.as_ref()).await;
        let ok = if role.is_none() {
            r.status == StatusCode::UNAUTHORIZED
        } else {
            r.status.is_success()
        };
        if !ok {
            failures.push(format!("logout as {role:?}: {} {:?}", r.status, r.body));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.cleanup().await;
}

/// One tenant's objects, by the first path segment of the routes naming them.
struct Objects {
    session: Session,
    user: Session,
    ids: BTreeMap<&'static str, String>,
}

impl Objects {
    fn id(&self, kind: &str) -> &str {
        self.ids.get(kind).unwrap_or_else(|| {
            panic!("no {kind} fixture: add one to `objects()` in tests/tests/policy.rs")
        })
    }
}

/// The object kind a request field or query parameter names.
fn kind_of_field(field: &str) -> Option<&'static str> {
    Some(match field {
        "agentId" => "agents",
        "aiProviderId" => "ai-providers",
        "channelId" => "channels",
        "documentIds" | "documentId" => "documents",
        "userId" | "assignedTo" => "users",
        "conversationId" => "conversations",
        "jobId" => "jobs",
        "tenantId" => "tenants",
        _ => return None,
    })
}

/// A tenant with one object of every kind the routes take ids of.
async fn objects(app: &TestApp, name: &str) -> Objects {
    let admin = app.register(name).await;
    let user = app.add_user(&admin, "TENANT_USER").await;
    let mut ids = BTreeMap::new();
    ids.insert("tenants", admin.tenant_id.clone());
    ids.insert("users", user.user_id.clone());
    let agent = app
        .post(
            "/api/v1/agents",
            &admin,
            json!({ "name": format!("{name} agent"), "description": "answers" }),
        )
        .await;
    assert_eq!(agent.status, StatusCode::CREATED, "{:?}", agent.body);
    ids.insert(
        "agents",
        agent.body["id"].as_str().unwrap_or_default().to_owned(),
    );
    let provider = app
        .post(
            "/api/v1/ai-providers",
            &admin,
            json!({ "name": format!("{name} provider"), "type": "OPENAI", "apiKey": "sk-test-1234567890", "chatModel": "gpt-4o-mini" }),
        )
        .await;
    assert_eq!(provider.status, StatusCode::CREATED, "{:?}", provider.body);
    ids.insert(
        "ai-providers",
        provider.body["id"].as_str().unwrap_or_default().to_owned(),
    );
    let channel = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({ "type": "WEBSITE", "name": format!("{name} site"), "config": { "allowedOrigins": ["https://shop.example"] } }),
        )
        .await;
    assert_eq!(channel.status, StatusCode::CREATED, "{:?}", channel.body);
    let channel_id = channel.body["id"].as_str().unwrap_or_default().to_owned();
    ids.insert("channels", channel_id.clone());
    let document = app
        .upload_text(&admin, "faq.txt", "Refunds take five days.", None)
        .await;
    ids.insert("documents", document);
    let (_, job) = inbound::deliver(
        app,
        &admin,
        &channel_id,
        vec![inbound::said("cust-1", &format!("{name}-m1"), "hello")],
    )
    .await;
    inbound::finished(app, &admin, &job).await;
    ids.insert("jobs", job);
    let conversations = app.get("/api/v1/conversations", &admin).await;
    let conversation = conversations.body["conversations"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no conversation: {:?}", conversations.body))
        .to_owned();
    ids.insert("conversations", conversation);
    let export = app
        .get(
            "/api/v1/analytics/export?format=csv&report=overview",
            &admin,
        )
        .await;
    assert_eq!(export.status, StatusCode::ACCEPTED, "{:?}", export.body);
    ids.insert(
        "analytics",
        export.body["exportId"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let key = app
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({ "name": format!("{name} app"), "permissions": ["agents:read"] }),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED, "{:?}", key.body);
    ids.insert(
        "api-keys",
        key.body["id"].as_str().unwrap_or_default().to_owned(),
    );
    Objects {
        session: admin,
        user,
        ids,
    }
}

/// A body that passes validation, so that the id is what is judged.
fn body_for(method: &str, path: &str) -> Option<Value> {
    if method != "POST" && method != "PUT" {
        return None;
    }
    Some(match path {
        "conversations/{id}/assign" => json!({ "userId": null }),
        "conversations/{id}/status" => json!({ "status": "RESOLVED" }),
        "conversations/{id}/messages" => json!({ "content": "hello" }),
        "conversations/{id}/rating" => json!({ "rating": 5 }),
        "agents/{id}/test" => json!({ "message": "hello" }),
        "users/{id}" => json!({ "firstName": "Mallory" }),
        _ if method == "PUT" => json!({ "name": "Mallory" }),
        _ => json!({}),
    })
}

fn concrete(template: &str, owner: &Objects) -> String {
    if !template.contains("{id}") {
        return api_path(template);
    }
    let first = template.split('/').next().unwrap_or_default();
    api_path(&template.replace("{id}", owner.id(first)))
}

/// A's ids in a response, except `sent` (an error may name the id the
/// caller itself sent).
fn leaks_except(r: &Reply, victim: &Objects, sent: &str) -> Option<String> {
    let text = r.body.to_string();
    victim
        .ids
        .iter()
        .find(|(_, id)| id.as_str() != sent && text.contains(id.as_str()))
        .map(|(kind, id)| format!("{kind} {id}"))
}

fn leaks(r: &Reply, victim: &Objects) -> Option<String> {
    let text = r.body.to_string();
    victim
        .ids
        .iter()
        .find(|(_, id)| text.contains(id.as_str()))
        .map(|(kind, id)| format!("{kind} {id}"))
}

/// Another tenant's objects never answer: every route taking an id, called
/// by tenant B's administrator with tenant A's ids, is a 404 that names
/// nothing of A, and A's objects are untouched afterwards.
#[tokio::test]
async fn bola_matrix_every_route_with_an_id() {
    let app = spawn_app().await;
    let a = objects(&app, "Alpha").await;
    let b = objects(&app, "Beta").await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for route in ROUTES {
        // Platform objects (backups) belong to no tenant: the role matrix
        // keeps tenants out of those routes altogether.
        if route.access == Access::Public
            || route.access == Access::Role(Role::SuperAdmin)
            || !route.path.contains('{')
        {
            continue;
        }
        let path = concrete(route.path, &a);
        let method = Method::from_bytes(route.method.as_bytes()).expect("method");
        let r = app
            .request(
                method,
                &path,
                Some(&b.session),
                body_for(route.method, route.path),
            )
            .await;
        checked += 1;
        if r.status != StatusCode::NOT_FOUND {
            failures.push(format!(
                "{} {} with tenant A's id: {} {:?}",
                route.method, route.path, r.status, r.body
            ));
        }
        if let Some(leak) = leaks(&r, &a) {
            failures.push(format!("{} {} leaks {leak}", route.method, route.path));
        }
    }
    assert!(checked >= 20, "only {checked} routes with ids");
    // Tenant A's objects are all still there, unchanged.
    for kind in [
        "agents",
        "ai-providers",
        "channels",
        "documents",
        "conversations",
        "jobs",
        "users",
        "tenants",
    ] {
        let r = app
            .get(&api_path(&format!("{kind}/{}", a.id(kind))), &a.session)
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{kind} of A after B's attempts: {:?}",
            r.body
        );
        assert_ne!(r.body["name"], "Mallory", "{kind} renamed by B");
        assert_ne!(r.body["firstName"], "Mallory", "{kind} renamed by B");
    }
    let keys = app.get("/api/v1/api-keys", &a.session).await;
    assert!(
        keys.body.to_string().contains(a.id("api-keys")),
        "A's API key after B's attempts: {:?}",
        keys.body
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.cleanup().await;
}

/// Resolves `#/components/schemas/X` references.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Base bodies (with tenant B's own path ids) for routes whose request
/// names objects; the BOLA test swaps each referencing field for A's id.
fn field_base(method: &str, path: &str) -> Option<Value> {
    Some(match (method, path) {
        ("POST", "channels") => {
            json!({ "type": "WEBSITE", "name": "B site 2", "config": { "allowedOrigins": ["https://b.example"] } })
        }
        ("POST", "agents") => json!({ "name": "B agent 2", "description": "answers" }),
        ("POST", "documents/upload") => json!({}),
        ("POST", "agents/{id}/train") => json!({}),
        ("PUT", _) => json!({}),
        _ => return None,
    })
}

/// Every request field that names an object (from the served OpenAPI
/// document, so a new field is covered), set to another tenant's id, is
/// refused with 404 or 400 and changes nothing; query filters naming
/// another tenant's objects return nothing of it.
#[tokio::test]
async fn bola_matrix_every_field_naming_an_object() {
    let app = spawn_app().await;
    let a = objects(&app, "Alpha").await;
    let b = objects(&app, "Beta").await;
    let spec = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .body;
    let mut failures = Vec::new();
    let mut fields_checked = 0;
    let mut queries_checked = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        let template = path.trim_start_matches("/api/v1/");
        for (method, op) in item.as_object().expect("path item") {
            let method_up = method.to_ascii_uppercase();
            let Some(route) = ROUTES
                .iter()
                .find(|r| r.method == method_up && r.path == template)
            else {
                continue;
            };
            if route.access == Access::Public {
                continue;
            }
            // Query parameters naming objects: filters, never a window on A.
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap_or_default();
                if param["in"] != "query" || !(name.ends_with("Id") || name.ends_with("Ids")) {
                    continue;
                }
                let kind = kind_of_field(name)
                    .unwrap_or_else(|| panic!("query {name} of {method_up} {template}: unknown object kind; add it to kind_of_field"));
                let search = if template.starts_with("search/") {
                    "&q=hello"
                } else {
                    ""
                };
                let url = format!("{}?{name}={}{search}", concrete(template, &b), a.id(kind));
                let r = app.get(&url, &b.session).await;
                queries_checked += 1;
                if r.status.is_server_error() {
                    failures.push(format!("{method_up} {url}: {}", r.status));
                }
                if let Some(leak) = leaks_except(&r, &a, a.id(kind)) {
                    failures.push(format!("{method_up} {template}?{name}= leaks {leak}"));
                }
            }
            let Some(content) = op["requestBody"]["content"].as_object() else {
                continue;
            };
            for (media, body) in content {
                let schema = resolve(&spec, &body["schema"]);
                let Some(props) = schema["properties"].as_object() else {
                    continue;
                };
                for field in props.keys() {
                    if !(field.ends_with("Id") || field.ends_with("Ids")) {
                        continue;
                    }
                    let kind = kind_of_field(field).unwrap_or_else(|| {
                        panic!("{field} of {method_up} {template}: unknown object kind; add it to kind_of_field")
                    });
                    let mut base = field_base(&method_up, template).unwrap_or_else(|| {
                        panic!("{method_up} {template} names objects ({field}): add a base body to field_base")
                    });
                    let foreign = a.id(kind).to_owned();
                    base[field.as_str()] = if field.ends_with("Ids") {
                        json!([foreign])
                    } else {
                        json!(foreign)
                    };
                    let url = concrete(template, &b);
                    let r = if media.starts_with("multipart/") {
                        let form = reqwest::multipart::Form::new()
                            .part(
                                "files",
                                reqwest::multipart::Part::bytes(b"hello".to_vec())
                                    .file_name("x.txt"),
                            )
                            .text(field.clone(), foreign.clone());
                        let res = app
                            .http
                            .post(app.url(&url))
                            .bearer_auth(&b.session.token)
                            .multipart(form)
                            .send()
                            .await
                            .expect("sent");
                        TestApp::reply(res).await
                    } else {
                        let method = Method::from_bytes(method_up.as_bytes()).expect("method");
                        app.request(method, &url, Some(&b.session), Some(base))
                            .await
                    };
                    fields_checked += 1;
                    if r.status != StatusCode::NOT_FOUND && r.status != StatusCode::BAD_REQUEST {
                        failures.push(format!(
                            "{method_up} {template} with {field} of tenant A: {} {:?}",
                            r.status, r.body
                        ));
                    }
                    if let Some(leak) = leaks_except(&r, &a, &foreign) {
                        failures.push(format!("{method_up} {template} {field} leaks {leak}"));
                    }
                }
            }
        }
    }
    // Nothing of B's now points at A.
    for kind in ["agents", "channels", "documents", "conversations"] {
        let r = app.get(&api_path(kind), &b.session).await;
        if let Some(leak) = leaks(&r, &a) {
            failures.push(format!("B's {kind} now reference {leak}"));
        }
    }
    assert!(
        fields_checked >= 5,
        "only {fields_checked} referencing fields found"
    );
    assert!(
        queries_checked >= 3,
        "only {queries_checked} referencing query parameters found"
    );
    let _ = &b.user;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.cleanup().await;
}

/// A user assigns conversations to themselves only; admins to anyone.
#[tokio::test]
async fn users_assign_conversations_to_themselves_only() {
    let app = spawn_app().await;
    let a = objects(&app, "Alpha").await;
    let colleague = app.add_user(&a.session, "TENANT_USER").await;
    let path = api_path(&format!("conversations/{}/assign", a.id("conversations")));
    let r = app
        .put(&path, &a.user, json!({ "userId": colleague.user_id }))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let r = app
        .put(&path, &a.user, json!({ "userId": a.user.user_id }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app.put(&path, &a.session, json!({ "userId": null })).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .put(&path, &a.session, json!({ "userId": colleague.user_id }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.cleanup().await;
}

/// Jobs follow the route that created them: a demoted user no longer sees,
/// cancels or retries the ingestion they started as an administrator; a
/// platform backup run on a tenant is never shown to that tenant; the
/// `job-updated` events go only to those who may see the job.
#[tokio::test]
async fn jobs_and_their_events_follow_the_creating_route() {
    let app = spawn_app().await;
    let owner = app.register("Jobs").await;
    let staff = app.add_user(&owner, "TENANT_USER").await;
    let promoted = app.add_user(&owner, "TENANT_ADMIN").await;
    let root = app.super_admin(&owner).await;

    let mut admin_sock = connect(
        &app.base,
        "/",
        json!({ "token": owner.token, "tenantId": owner.tenant_id }),
    )
    .await
    .joined()
    .await;
    let mut staff_sock = connect(
        &app.base,
        "/",
        json!({ "token": staff.token, "tenantId": staff.tenant_id }),
    )
    .await
    .joined()
    .await;
    let mut root_sock = connect(
        &app.base,
        "/",
        json!({ "token": root.token, "tenantId": owner.tenant_id }),
    )
    .await
    .joined()
    .await;

    // An ingestion started by an administrator who is then demoted.
    let doc = app
        .upload_text(&promoted, "faq.txt", "Refunds take five days.", None)
        .await;
    let listed = app
        .get("/api/v1/jobs?type=ingest_document", &promoted)
        .await;
    let ingest = listed.body["jobs"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no ingest job: {:?}", listed.body))
        .to_owned();
    app.wait_document_ready(&owner, &doc).await;
    let event = admin_sock
        .next_named("job-updated", 15)
        .await
        .expect("admins get the ingestion's events");
    assert_eq!(event["type"], "ingest_document");
    assert!(
        staff_sock.next_named("job-updated", 2).await.is_none(),
        "a TENANT_USER gets no event of an administrator's job"
    );
    let r = app
        .put(
            &format!("/api/v1/users/{}", promoted.user_id),
            &owner,
            json!({ "role": "TENANT_USER" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let login = app.login(&promoted.email, &promoted.password).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let demoted = &Session {
        token: login.body["token"].as_str().unwrap_or_default().to_owned(),
        ..promoted.clone()
    };
    for (method, path) in [
        (Method::GET, format!("/api/v1/jobs/{ingest}")),
        (Method::POST, format!("/api/v1/jobs/{ingest}/retry")),
        (Method::POST, format!("/api/v1/jobs/{ingest}/cancel")),
    ] {
        let r = app
            .request(method.clone(), &path, Some(demoted), None)
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:?}",
            r.body
        );
    }
    let mine = app.get("/api/v1/jobs", demoted).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body["jobs"], json!([]), "{:?}", mine.body);

    // A backup a platform administrator runs on this tenant.
    let backup = app.post("/api/v1/system/backups", &root, json!({})).await;
    assert_eq!(backup.status, StatusCode::ACCEPTED, "{:?}", backup.body);
    let backup_job = backup.body["jobId"].as_str().unwrap_or_default().to_owned();
    app.job_finished(&root, &backup_job).await;
    let mut root_saw_backup = false;
    while let Some(e) = root_sock.next_named("job-updated", 5).await {
        if e["type"] == "run_backup" {
            root_saw_backup = true;
            break;
        }
    }
    assert!(
        root_saw_backup,
        "the platform administrator gets the backup's events"
    );
    let mut admin_saw_backup = false;
    while let Some(e) = admin_sock.next_named("job-updated", 2).await {
        admin_saw_backup |= e["type"] == "run_backup";
    }
    assert!(
        !admin_saw_backup,
        "a tenant admin got a backup's job-updated event"
    );
    for (method, path) in [
        (Method::GET, format!("/api/v1/jobs/{backup_job}")),
        (Method::POST, format!("/api/v1/jobs/{backup_job}/retry")),
        (Method::POST, format!("/api/v1/jobs/{backup_job}/cancel")),
    ] {
        let r = app.request(method.clone(), &path, Some(&owner), None).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:?}",
            r.body
        );
    }
    let listed = app.get("/api/v1/jobs?limit=100", &owner).await;
    assert!(
        !listed.body.to_string().contains(&backup_job),
        "the tenant's job list shows the backup: {:?}",
        listed.body
    );
    let r = app.get(&format!("/api/v1/jobs/{backup_job}"), &root).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // A staff message's delivery job is the sender's to see (and its events).
    let channel = inbound::channel(&app, &owner, "Site", None).await;
    let (_, job) = inbound::deliver(
        &app,
        &owner,
        &channel,
        vec![inbound::said("cust-9", "m-9", "hello")],
    )
    .await;
    inbound::finished(&app, &owner, &job).await;
    let conversations = app.get("/api/v1/conversations", &staff).await;
    let conversation = conversations.body["conversations"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sent = app
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            &staff,
            json!({ "content": "Hello from staff" }),
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    let delivery = sent.body["jobId"].as_str().unwrap_or_default().to_owned();
    let event = staff_sock
        .next_named("job-updated", 15)
        .await
        .expect("the sender gets their delivery job's events");
    assert_eq!(event["id"], delivery.as_str());
    let r = app.get(&format!("/api/v1/jobs/{delivery}"), &staff).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.cleanup().await;
}

/// A key for `admin`'s tenant with these scopes (and room to make requests).
async fn key_with(app: &TestApp, admin: &Session, scopes: &[&str]) -> String {
    let r = app
        .post(
            "/api/v1/api-keys",
            admin,
            json!({ "name": "matrix", "permissions": scopes, "rateLimit": 100_000 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{scopes:?}: {:?}", r.body);
    r.body["key"].as_str().unwrap_or_default().to_owned()
}

async fn call_with_key(app: &TestApp, method: &str, path: &str, key: &str) -> Reply {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app
        .http
        .request(method.clone(), app.url(path))
        .header("X-API-Key", key);
    if method == Method::POST || method == Method::PUT {
        req = req.json(&json!({}));
    }
    TestApp::reply(req.send().await.expect("sent")).await
}

/// API keys, walked from the same table: a route without a scope refuses
/// a key holding every scope; a route with one refuses a key holding every
/// other scope (403 naming the missing one) and lets a key with it through
/// the policy.
#[tokio::test]
async fn key_matrix_every_route_by_scope() {
    let app = spawn_app().await;
    let admin = app.register("Key matrix").await;
    let scopes = aigentable_api::routes::api_keys::known_scopes();
    let all: Vec<&str> = scopes.iter().copied().collect();
    let full = key_with(&app, &admin, &all).await;
    let mut all_but = BTreeMap::new();
    for scope in &scopes {
        let others: Vec<&str> = all.iter().copied().filter(|s| s != scope).collect();
        all_but.insert(*scope, key_with(&app, &admin, &others).await);
    }
    let mut failures = Vec::new();
    let mut scoped = 0;
    let mut sessions_only = 0;
    for route in ROUTES {
        if route.access == Access::Public {
            continue;
        }
        let path = nowhere(route.path);
        let label = format!("{} {}", route.method, route.path);
        match route.scope {
            None => {
                sessions_only += 1;
                let r = call_with_key(&app, route.method, &path, &full).await;
                if r.status != StatusCode::FORBIDDEN || !r.message().starts_with("API keys cannot")
                {
                    failures.push(format!(
                        "{label}: a key reached a sessions-only route: {} {:?}",
                        r.status, r.body
                    ));
                }
            }
            Some(scope) => {
                scoped += 1;
                let key = all_but.get(scope).expect("a key without the scope");
                let r = call_with_key(&app, route.method, &path, key).await;
                if r.status != StatusCode::FORBIDDEN || !r.message().contains(scope) {
                    failures.push(format!(
                        "{label}: a key without {scope}: {} {:?}",
                        r.status, r.body
                    ));
                }
                let r = call_with_key(&app, route.method, &path, &full).await;
                if r.status == StatusCode::UNAUTHORIZED
                    || r.status == StatusCode::FORBIDDEN
                    || r.status.is_server_error()
                {
                    failures.push(format!(
                        "{label}: a key with {scope} refused or failed: {} {:?}",
                        r.status, r.body
                    ));
                }
            }
        }
    }
    assert!(scoped >= 30, "only {scoped} routes with a scope");
    assert!(
        sessions_only >= 15,
        "only {sessions_only} sessions-only routes"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.cleanup().await;
}
