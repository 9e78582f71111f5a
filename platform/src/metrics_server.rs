//! `GET /metrics` for processes that have no api of their own (workers,
//! scheduler): a Prometheus registry served by salvo.

use prometheus::{Encoder, Registry, TextEncoder};
use salvo::conn::tcp::TcpAcceptor;
use salvo::prelude::*;

#[derive(Clone)]
struct Exposed(Registry);

#[handler]
async fn expose(depot: &mut Depot, res: &mut Response) {
    let mut buf = Vec::new();
    if let Ok(Exposed(registry)) = depot.get_typed::<Exposed>() {
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
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    let router = Router::new()
        .hoop(salvo::affix_state::inject(Exposed(registry)))
        .push(Router::with_path("metrics").get(expose));
    Server::new(listener).serve(router).await;
}
