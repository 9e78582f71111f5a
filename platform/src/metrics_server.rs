//! `GET /metrics` for processes that have no api of their own (workers,
//! scheduler): a Prometheus registry served by salvo, with the probes an
//! orchestrator needs: `GET /healthz` (the process answers) and
//! `GET /readyz` (200 while it takes work, 503 once it drains).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{Encoder, Registry, TextEncoder};
use salvo::conn::tcp::TcpAcceptor;
use salvo::prelude::*;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

#[derive(Clone)]
struct Exposed(Registry, Option<Secret<String>>);

/// Whether a process takes work: false until it has started and again from
/// the moment it begins to drain, so that a load balancer or an autoscaler
/// stops counting it while it finishes what it holds.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[handler]
async fn healthz(res: &mut Response) {
    res.render(Json(serde_json::json!({ "status": "ok" })));
}

#[handler]
async fn readyz(depot: &mut Depot, res: &mut Response) {
    let ready = depot
        .get_typed::<Readiness>()
        .map(Readiness::is_ready)
        .unwrap_or(false);
    if !ready {
        res.status_code(StatusCode::SERVICE_UNAVAILABLE);
    }
    res.render(Json(serde_json::json!({
        "status": if ready { "ready" } else { "draining" }
    })));
}

/// Whether `req` may read metrics: always without a `METRICS_TOKEN`,
/// otherwise only with `Authorization: Bearer <token>` (compared in
/// constant time).
pub fn authorized(req: &Request, token: Option<&Secret<String>>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let (a, b) = (
        Sha256::digest(given.trim().as_bytes()),
        Sha256::digest(token.expose().as_bytes()),
    );
    bool::from(a.ct_eq(&b))
}

#[handler]
async fn expose(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let mut buf = Vec::new();
    if let Ok(Exposed(registry, token)) = depot.get_typed::<Exposed>() {
        if !authorized(req, token.as_ref()) {
            res.status_code(StatusCode::UNAUTHORIZED);
            res.add_header("www-authenticate", "Bearer", true).ok();
            res.render("metrics need the METRICS_TOKEN bearer token\n");
            return;
        }
        let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    }
    res.add_header(
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
        true,
    )
    .ok();
    res.render(String::from_utf8(buf).unwrap_or_default());
}

/// Binds `host:port`; `None` when the port is 0 (metrics disabled).
pub async fn bind(host: &str, port: u16) -> std::io::Result<Option<TcpAcceptor>> {
    if port == 0 {
        return Ok(None);
    }
    TcpListener::new(format!("{host}:{port}"))
        .try_bind()
        .await
        .map(Some)
        .map_err(std::io::Error::other)
}

/// Serves `registry` at `/metrics` for the life of the process.
pub async fn serve(listener: TcpAcceptor, registry: Registry) {
    serve_with_token(listener, registry, None).await;
}

/// [`serve`], requiring `token` as a bearer token when given; ready for
/// as long as the process lives.
pub async fn serve_with_token(
    listener: TcpAcceptor,
    registry: Registry,
    token: Option<Secret<String>>,
) {
    let ready = Readiness::default();
    ready.set(true);
    serve_with_readiness(listener, registry, token, ready).await;
}

/// [`serve_with_token`], with `/readyz` following `ready`.
pub async fn serve_with_readiness(
    listener: TcpAcceptor,
    registry: Registry,
    token: Option<Secret<String>>,
    ready: Readiness,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    let router = Router::new()
        .hoop(salvo::affix_state::inject(Exposed(registry, token)))
        .hoop(salvo::affix_state::inject(ready))
        .push(Router::with_path("metrics").get(expose))
        .push(Router::with_path("healthz").get(healthz))
        .push(Router::with_path("readyz").get(readyz));
    Server::new(listener).serve(router).await;
}
