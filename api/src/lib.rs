//! The AIgentable HTTP api: authenticates, validates and stores, and
//! enqueues slow work as jobs.

pub mod accepted;
pub mod cli;
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
        if aigentable_jobs::queue::append_only(&mut jobs.connection()).await == Some(false) {
            tracing::warn!(
                "redis has no append-only file: a restart loses queued jobs and accepted webhooks not yet stored (run it with --appendonly yes)"
            );
        }
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
        let routes = aigentable_platform::channels::routes::ChannelRoutes::start(
            platform.config.redis_url.expose(),
            &platform.config.redis_namespace,
        )
        .await?;
        Ok(Self {
            platform,
            jobs,
            vectors,
            metrics: metrics::Metrics::new()?,
            routes,
            started_at: Instant::now(),
        })
    }
}

/// Every route under `/api/v1`, by resource; access comes from
/// [`policy::ROUTES`] through one hoop, so a route missing from the table
/// is refused.
pub fn api_router() -> Router {
    use routes::{
        agents, ai_providers, analytics, api_keys, auth, channels, conversations, documents, jobs,
        search, system, tenants, users, webhooks, widget,
    };
    let public = Router::new()
        .push(auth::public_router())
        .push(webhooks::router())
        .push(widget::router());
    let protected = Router::new()
        .push(auth::router())
        .push(users::router())
        .push(tenants::router())
        .push(agents::router())
        .push(ai_providers::router())
        .push(channels::router())
        .push(conversations::router())
        .push(analytics::router())
        .push(documents::router())
        .push(search::router())
        .push(jobs::router())
        .push(api_keys::router())
        .push(system::router());
    Router::with_path("api/v1")
        .hoop(guard::enforce_policy)
        .push(public)
        .push(protected)
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

/// The OpenAPI document the `#[endpoint]` annotations of [`api_router`]
/// generate, before [`openapi::finish`] completes it.
pub fn openapi_document() -> OpenApi {
    OpenApi::new("AIgentable API", env!("CARGO_PKG_VERSION"))
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
        .merge_router(&api_router())
}

/// The complete HTTP service: routes, OpenAPI docs, metrics, CORS, JSON
/// errors and the Socket.IO gateway (whose handle is returned for emitting).
pub fn service(state: AppState) -> (Service, socketioxide::SocketIo) {
    let origins = state.platform.config.cors_origins.clone();
    let track = metrics::Track(state.metrics.clone());
    let metrics_here = state.platform.config.metrics_port.is_none();
    let (socket_layer, io) = realtime::layer(state.clone());
    let api = api_router();
    let router = Router::new()
        .hoop(salvo::affix_state::inject(state))
        .push(Router::with_path("healthz").get(routes::health::healthz))
        .push(Router::with_path("readyz").get(routes::health::readyz))
        .push(Router::with_path("widget.js").get(routes::widget::script))
        .push(
            Router::with_path("socket.io")
                .hoop(realtime::own_request_head)
                .hoop(socket_layer.compat())
                .goal(socket_io_fallback),
        )
        .push(Router::with_path("api/v1/openapi.json").get(openapi::Spec::default()))
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
    let relay_counter = state.metrics.realtime_events.clone();
    let (service, io) = service(state);
    let relay = tokio::spawn(realtime::run_relay(io, redis_url, namespace, relay_counter));
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
