//! The AIgentable HTTP api: authenticates, validates and stores, and
//! enqueues slow work as jobs.

pub mod error;
pub mod extract;
pub mod guard;
pub mod metrics;
pub mod openapi;
pub mod plan_limits;
pub mod policy;
pub mod rate_limit;
pub mod realtime;
pub mod realtime_sessions;
pub mod realtime_widget;
pub mod routes;
pub mod state;
pub mod views;

use std::time::{Duration, Instant};

use salvo::catcher::Catcher;
use salvo::conn::TcpListener;
use salvo::cors::{AllowHeaders, AllowMethods, Cors};
use salvo::http::Method;
use salvo::oapi::security::{Http, HttpAuthScheme, SecurityScheme};
use salvo::prelude::*;

use aigentable_jobs::JobClient;
use aigentable_platform::Platform;

use crate::error::{ApiError, write_error};
pub use crate::state::AppState;

impl AppState {
    pub async fn new(platform: Platform) -> anyhow::Result<Self> {
        let jobs = JobClient::connect(&platform).await?;
        // Only a shared Qdrant server: the embedded store belongs to the workers.
        let vectors = match &platform.config.qdrant_url {
            Some(url) => Some(
                aigentable_vectors::connect(
                    Some(url),
                    platform
                        .config
                        .qdrant_api_key
                        .as_ref()
                        .map(|k| k.expose().as_str()),
                    std::path::Path::new(&platform.config.data_dir),
                )
                .await?,
            ),
            None => None,
        };
        Ok(Self {
            platform,
            jobs,
            vectors,
            metrics: metrics::Metrics::new()?,
            started_at: Instant::now(),
        })
    }
}

/// Every route under `/api/v1`; access comes from [`policy::ROUTES`] through
/// one hoop, so a route missing from the table is refused.
pub fn api_router() -> Router {
    use routes::{agents, auth, documents, health, jobs, search, system, tenants, users};
    let public = Router::new()
        .push(Router::with_path("auth/register").post(auth::register))
        .push(Router::with_path("auth/login").post(auth::login))
        .push(Router::with_path("auth/forgot-password").post(auth::forgot_password))
        .push(Router::with_path("auth/reset-password").post(auth::reset_password))
        .push(Router::with_path("auth/verify-email").post(auth::verify_email))
        .push(routes_channels_public())
        .push(
            Router::with_path("widget/{publicKey}/rating")
                .post(routes::analytics::widget_rating)
                .options(routes::widget::preflight),
        );
    let protected = Router::new()
        .push(Router::with_path("auth/logout").post(auth::logout))
        .push(Router::with_path("auth/me").get(auth::me))
        .push(
            Router::with_path("users")
                .get(users::list)
                .post(users::create),
        )
        .push(
            Router::with_path("users/{id}")
                .get(users::get)
                .put(users::update)
                .delete(users::delete),
        )
        .push(Router::with_path("tenants").get(tenants::list))
        .push(
            Router::with_path("tenants/{id}")
                .get(tenants::get)
                .put(tenants::update),
        )
        .push(Router::with_path("tenants/{id}/usage").get(tenants::get_usage))
        .push(Router::with_path("tenants/{id}/billing").get(tenants::get_billing))
        .push(
            Router::with_path("agents")
                .get(agents::list)
                .post(agents::create),
        )
        .push(
            Router::with_path("agents/{id}")
                .get(agents::get)
                .put(agents::update)
                .delete(agents::delete),
        )
        .push(Router::with_path("agents/{id}/train").post(routes::agent_training::train))
        .push(
            Router::with_path("ai-providers")
                .get(routes::ai_providers::list)
                .post(routes::ai_providers::create),
        )
        .push(
            Router::with_path("ai-providers/{id}")
                .get(routes::ai_providers::get)
                .put(routes::ai_providers::update)
                .delete(routes::ai_providers::delete),
        )
        .push(Router::with_path("ai-providers/{id}/test").post(routes::ai_providers::test))
        .push(Router::with_path("search/agents").get(agents::search))
        .push(routes_channels_protected())
        .push(Router::with_path("agents/{id}/test").post(routes::agent_test::test))
        .push(Router::with_path("conversations").get(routes::conversations::list))
        .push(Router::with_path("conversations/{id}").get(routes::conversations::get))
        .push(Router::with_path("conversations/{id}/messages").post(routes::conversations::send))
        .push(Router::with_path("conversations/{id}/assign").put(routes::conversations::assign))
        .push(Router::with_path("conversations/{id}/status").put(routes::conversations::set_status))
        .push(Router::with_path("search/conversations").get(routes::conversations::search))
        .push(routes_analytics())
        .push(Router::with_path("search/documents").get(search::documents))
        .push(Router::with_path("documents").get(documents::list))
        .push(Router::with_path("documents/upload").post(documents::upload))
        .push(
            Router::with_path("documents/{id}")
                .get(documents::get)
                .delete(documents::delete),
        )
        .push(Router::with_path("documents/{id}/process").post(documents::process))
        .push(Router::with_path("jobs").get(jobs::list))
        .push(Router::with_path("jobs/{id}").get(jobs::get))
        .push(Router::with_path("jobs/{id}/cancel").post(jobs::cancel))
        .push(Router::with_path("jobs/{id}/retry").post(jobs::retry))
        .push(
            Router::with_path("api-keys")
                .get(routes::api_keys::list)
                .post(routes::api_keys::create),
        )
        .push(Router::with_path("api-keys/{id}").delete(routes::api_keys::revoke))
        .push(Router::with_path("system/health").get(health::system_health))
        .push(Router::with_path("system/metrics").get(routes::system_metrics::system_metrics))
        .push(
            Router::with_path("system/backups")
                .get(system::list_backups)
                .post(system::create_backup),
        );
    Router::with_path("api/v1")
        .hoop(guard::enforce_policy)
        .push(public)
        .push(protected)
}

/// Channels (JWT), provider webhooks and the website widget (public).
fn routes_analytics() -> Router {
    use routes::analytics;
    Router::new()
        .push(Router::with_path("analytics/overview").get(analytics::overview))
        .push(Router::with_path("analytics/conversations").get(analytics::conversations))
        .push(Router::with_path("analytics/agents").get(analytics::agents))
        .push(Router::with_path("analytics/channels").get(analytics::channels))
        .push(Router::with_path("analytics/export").get(analytics::export))
        .push(Router::with_path("analytics/exports/{id}/download").get(analytics::download))
        .push(Router::with_path("conversations/{id}/rating").put(analytics::rate_conversation))
}

fn routes_channels_protected() -> Router {
    use routes::channels;
    Router::new()
        .push(
            Router::with_path("channels")
                .get(channels::list)
                .post(channels::create),
        )
        .push(
            Router::with_path("channels/{id}")
                .get(channels::get)
                .put(channels::update)
                .delete(channels::delete),
        )
        .push(Router::with_path("channels/{id}/test").post(channels::test))
}

fn routes_channels_public() -> Router {
    use routes::{webhooks, widget};
    Router::new()
        .push(
            Router::with_path("webhooks/whatsapp")
                .get(webhooks::whatsapp_verify)
                .post(webhooks::whatsapp),
        )
        .push(
            Router::with_path("webhooks/facebook")
                .get(webhooks::facebook_verify)
                .post(webhooks::facebook),
        )
        .push(Router::with_path("webhooks/telegram/{channelId}").post(webhooks::telegram))
        .push(
            Router::with_path("widget/{publicKey}/sessions")
                .post(widget::create_session)
                .options(widget::preflight),
        )
        .push(
            Router::with_path("widget/{publicKey}/messages")
                .get(widget::list_messages)
                .post(widget::send_message)
                .options(widget::preflight),
        )
        .push(
            Router::with_path("widget/{publicKey}/settings")
                .get(widget::get_settings)
                .options(widget::preflight),
        )
}

/// Unknown routes, wrong methods and salvo's own errors as JSON bodies.
#[handler]
async fn json_catcher(req: &Request, res: &mut Response, ctrl: &mut FlowCtrl) {
    let code = res.status_code.unwrap_or(StatusCode::NOT_FOUND);
    let err = match code {
        StatusCode::NOT_FOUND => ApiError::NotFound("route"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::BadRequest {
            message: "method not allowed on this route".to_owned(),
            details: serde_json::json!({}),
        },
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: extract::JSON_BODY_LIMIT,
        },
        c if c.is_server_error() => ApiError::Internal(format!("unhandled {c}")),
        c => ApiError::BadRequest {
            message: c.canonical_reason().unwrap_or("bad request").to_owned(),
            details: serde_json::json!({}),
        },
    };
    write_error(&err, res);
    // Keep the precise status (e.g. 405) that salvo chose.
    res.status_code(code);
    if code == StatusCode::METHOD_NOT_ALLOWED
        && let Some(methods) = policy::allowed_methods(req.uri().path())
        && let Ok(allow) = salvo::http::HeaderValue::from_str(&methods.join(", "))
    {
        res.headers_mut().insert(salvo::http::header::ALLOW, allow);
    }
    ctrl.skip_rest();
}

fn cors(origins: &[String]) -> Cors {
    let cors = if origins.iter().any(|o| o == "*") {
        Cors::new().allow_origin(salvo::cors::Any)
    } else {
        Cors::new()
            .allow_origin(origins.iter().map(String::as_str).collect::<Vec<_>>())
            .allow_credentials(true)
    };
    cors.allow_methods(AllowMethods::list([
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ]))
    .allow_headers(AllowHeaders::list([
        salvo::http::header::AUTHORIZATION,
        salvo::http::header::CONTENT_TYPE,
        salvo::http::HeaderName::from_static("x-tenant-id"),
        salvo::http::HeaderName::from_static("x-api-key"),
    ]))
    .expose_headers(vec![
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ])
    .max_age(600)
}

/// Engine.io needs a goal to route to; the Socket.IO layer answers first.
#[handler]
async fn socket_io_fallback(res: &mut Response) {
    res.status_code(StatusCode::BAD_REQUEST);
}

/// The complete HTTP service: routes, OpenAPI docs, metrics, CORS, JSON
/// errors and the Socket.IO gateway (whose handle is returned for emitting).
pub fn service(state: AppState) -> (Service, socketioxide::SocketIo) {
    let origins = state.platform.config.cors_origins.clone();
    let track = metrics::Track(state.metrics.clone());
    let metrics_here = state.platform.config.metrics_port.is_none();
    let (socket_layer, io) = realtime::layer(state.clone());
    let api = api_router();
    let doc = OpenApi::new("AIgentable API", env!("CARGO_PKG_VERSION"))
        .add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer).bearer_format("JWT")),
        )
        .add_security_scheme(
            "apiKeyAuth",
            SecurityScheme::ApiKey(salvo::oapi::security::ApiKey::Header(
                salvo::oapi::security::ApiKeyValue::new("X-API-Key"),
            )),
        )
        .merge_router(&api);
    let router = Router::new()
        .hoop(salvo::affix_state::inject(state))
        .push(Router::with_path("healthz").get(routes::health::healthz))
        .push(Router::with_path("readyz").get(routes::health::readyz))
        .push(Router::with_path("widget.js").get(routes::widget::script))
        .push(
            Router::with_path("socket.io")
                .hoop(socket_layer.compat())
                .goal(socket_io_fallback),
        )
        .push(Router::with_path("api/v1/openapi.json").get(openapi::Spec::new(&doc)))
        .push(SwaggerUi::new("/api/v1/openapi.json").into_router("/api/v1/docs"))
        .push(api);
    // With METRICS_PORT, /metrics is served there only (see `serve`).
    let router = if metrics_here {
        router.push(Router::with_path("metrics").get(metrics::expose))
    } else {
        router
    };
    let service = Service::new(router)
        .hoop(cors(&origins).into_handler())
        .hoop(track)
        .catcher(Catcher::default().hoop(json_catcher));
    (service, io)
}

/// Serves until `shutdown` resolves, then drains connections for up to 10 s.
pub async fn serve(
    state: AppState,
    listener: salvo::conn::tcp::TcpAcceptor,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let redis_url = state.platform.config.redis_url.expose().clone();
    let namespace = state.platform.config.redis_namespace.clone();
    let config = state.platform.config.clone();
    let metrics_server = match config.metrics_port {
        Some(port) => match aigentable_platform::metrics_server::bind(&config.host, port).await {
            Ok(Some(listener)) => Some(tokio::spawn(
                aigentable_platform::metrics_server::serve_with_token(
                    listener,
                    state.metrics.registry.clone(),
                    config.metrics_token.clone(),
                ),
            )),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(port, error = %e, "cannot bind METRICS_PORT; metrics are not served");
                None
            }
        },
        None => None,
    };
    let (service, io) = service(state);
    let relay = tokio::spawn(realtime::run_relay(io, redis_url, namespace));
    let server = Server::new(listener);
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("api shutting down");
        handle.stop_graceful(Some(Duration::from_secs(10)));
    });
    server.serve(service).await;
    relay.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
}

/// Binds `host:port` (port 0 picks a free port).
pub async fn bind(host: &str, port: u16) -> anyhow::Result<salvo::conn::tcp::TcpAcceptor> {
    Ok(TcpListener::new(format!("{host}:{port}"))
        .try_bind()
        .await?)
}
