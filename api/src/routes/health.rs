//! Liveness, readiness and the admin health view.

use std::time::{Duration, Instant};

use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::Serialize;

use crate::error::ApiResult;
use crate::guard::caller;
use crate::state::{AppState, app};

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyCheck {
    /// `ok` or `down`.
    pub status: String,
    pub latency_ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    pub mongodb: DependencyCheck,
    pub redis: DependencyCheck,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemHealth {
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub mongodb: DependencyCheck,
    pub redis: DependencyCheck,
}

async fn timed<F, E>(fut: F) -> DependencyCheck
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(2), fut).await;
    let latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, error) = match outcome {
        Ok(Ok(())) => ("ok", None),
        Ok(Err(e)) => ("down", Some(e.to_string())),
        Err(_) => ("down", Some("timed out after 2 s".to_owned())),
    };
    DependencyCheck {
        status: status.to_owned(),
        latency_ms,
        error,
    }
}

async fn checks(state: &AppState) -> (DependencyCheck, DependencyCheck) {
    tokio::join!(
        timed(state.platform.db.ping()),
        timed(state.platform.kv.ping())
    )
}

/// Liveness: the process answers.
#[endpoint(tags("health"))]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness {
        status: "ok".to_owned(),
    })
}

/// Readiness: MongoDB and Redis answer (503 otherwise).
#[endpoint(tags("health"), status_codes(200, 503))]
pub async fn readyz(depot: &mut Depot, res: &mut Response) -> Json<Readiness> {
    let (mongodb, redis) = checks(app(depot)).await;
    let ready = mongodb.status == "ok" && redis.status == "ok";
    if !ready {
        res.status_code(StatusCode::SERVICE_UNAVAILABLE);
    }
    // Errors may name hosts; the public probe shows only the status.
    let strip = |c: DependencyCheck| DependencyCheck { error: None, ..c };
    Json(Readiness {
        status: if ready { "ready" } else { "unavailable" }.to_owned(),
        mongodb: strip(mongodb),
        redis: strip(redis),
    })
}

/// Detailed health for platform administrators.
#[endpoint(tags("system"), security(("bearerAuth" = [])), status_codes(200, 401, 403))]
pub async fn system_health(depot: &mut Depot, res: &mut Response) -> ApiResult<Json<SystemHealth>> {
    caller(depot)?;
    let state = app(depot);
    let (mongodb, redis) = checks(state).await;
    let healthy = mongodb.status == "ok" && redis.status == "ok";
    if !healthy {
        res.status_code(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(Json(SystemHealth {
        status: if healthy { "healthy" } else { "degraded" }.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        mongodb,
        redis,
    }))
}
