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
    /// Realtime events received from the workers, by what the relay did
    /// with them (`relayed`, `no_audience`: no socket of this process was
    /// in their rooms, `malformed`).
    pub realtime_events: IntCounterVec,
    /// Sampled gauges (round trips, queues, process) for `/system/metrics`.
    pub sampled: crate::routes::system_metrics::Sampled,
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
        let realtime_events = IntCounterVec::new(
            Opts::new(
                "realtime_events_total",
                "Realtime events received by this api, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(socket_connections.clone()))?;
        registry.register(Box::new(realtime_events.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        let sampled = crate::routes::system_metrics::Sampled::register(&registry)?;
        Ok(Self {
            sampled,
            registry,
            http_requests,
            http_duration,
            socket_connections,
            realtime_events,
        })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The route label: the matched route's template (`/api/v1/users/{id}`),
/// never the raw path, so that a client cannot create series at will;
/// requests that matched no route share one label.
pub fn route_label(matched_path: &str) -> String {
    if matched_path.is_empty() {
        "unmatched".to_owned()
    } else {
        format!("/{matched_path}")
    }
}

/// The method label: the standard methods, anything else as `OTHER`.
fn method_label(method: &salvo::http::Method) -> &'static str {
    use salvo::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts and times every request, routed or not (a service-level hoop,
/// so it also sees the requests no route matched).
pub struct Track(pub Metrics);

#[handler]
impl Track {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let start = Instant::now();
        let method = method_label(req.method());
        let route = route_label(req.matched_path());
        ctrl.call_next(req, depot, res).await;
        let status = res
            .status_code
            .unwrap_or(StatusCode::OK)
            .as_u16()
            .to_string();
        self.0
            .http_requests
            .with_label_values(&[method, &route, &status])
            .inc();
        self.0
            .http_duration
            .with_label_values(&[method, &route])
            .observe(start.elapsed().as_secs_f64());
    }
}

/// Prometheus text exposition (`METRICS_TOKEN` as a bearer token when set).
#[handler]
pub async fn expose(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let state = app(depot);
    if !aigentable_platform::metrics_server::authorized(
        req,
        state.platform.config.metrics_token.as_ref(),
    ) {
        res.add_header("www-authenticate", "Bearer", true).ok();
        crate::error::write_error(
            &crate::error::ApiError::Unauthorized(
                "metrics need the METRICS_TOKEN bearer token".to_owned(),
            ),
            res,
        );
        return;
    }
    crate::routes::system_metrics::refresh(state).await;
    res.add_header("content-type", "text/plain; version=0.0.4", true)
        .ok();
    res.render(state.metrics.render());
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_are_labelled_by_their_template() {
        assert_eq!(
            super::route_label("api/v1/users/{id}"),
            "/api/v1/users/{id}"
        );
        assert_eq!(super::route_label(""), "unmatched");
    }
}
