//! Prometheus metrics of the api process, served at `/metrics`.

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use salvo::prelude::*;

use crate::state::app;

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub socket_connections: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("aigentable".to_owned()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route"],
        )?;
        let socket_connections =
            IntGauge::new("socketio_connections", "Open Socket.IO connections")?;
        registry.register(Box::new(socket_connections.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            socket_connections,
        })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Collapses ids in a path so that the route label has bounded cardinality.
pub fn route_label(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if aigentable_platform::ids::looks_like_id(seg)
                || (seg.len() > 16 && seg.chars().any(|c| c.is_ascii_digit()))
            {
                ":id"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[handler]
pub async fn track(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = route_label(req.uri().path());
    ctrl.call_next(req, depot, res).await;
    let status = res
        .status_code
        .unwrap_or(StatusCode::OK)
        .as_u16()
        .to_string();
    let metrics = &app(depot).metrics;
    metrics
        .http_requests
        .with_label_values(&[&method, &route, &status])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[&method, &route])
        .observe(start.elapsed().as_secs_f64());
}

/// Prometheus text exposition.
#[handler]
pub async fn expose(depot: &mut Depot, res: &mut Response) {
    res.add_header("content-type", "text/plain; version=0.0.4", true)
        .ok();
    res.render(app(depot).metrics.render());
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_collapsed() {
        assert_eq!(
            super::route_label("/api/v1/users/65a1b2c3d4e5f6a7b8c9d0e1"),
            "/api/v1/users/:id"
        );
        assert_eq!(super::route_label("/api/v1/users"), "/api/v1/users");
    }
}
