//! Health over HTTP, and the process's tracing setup.
//!
//! - `GET /healthz`: liveness — the process answers and the PostgreSQL child is running (or is
//!   being started or stopped in order). 503 after PostgreSQL died, until it is back.
//! - `GET /readyz`: readiness — PostgreSQL answered `SELECT 1` recently and every lake is
//!   initialised. 503 with a JSON reason otherwise.
//!
//! Both only read state: the supervisor publishes [`Status`] on a watch channel and
//! [`run_checks`] refreshes the `SELECT 1` result in the background (lakekeeper-style cached
//! checks), so a probe never waits on PostgreSQL. [`probe`] is the client side used by
//! `ducklake-catalog health` for a container HEALTHCHECK without curl.

mod tracing_setup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use catalog_core::status::{Status, StatusReceiver};
use catalog_core::Probe;
use serde::Serialize;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

pub use tracing_setup::{init_stderr_tracing, init_tracing, TracingError};

/// How often the background check runs `SELECT 1`.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long one `SELECT 1` may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of the background `SELECT 1` check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Unknown,
    Ok,
    Error,
}

#[derive(Debug, Clone)]
struct Check {
    state: CheckState,
    detail: Option<String>,
    at: Option<Instant>,
}

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct HealthState {
    status: StatusReceiver,
    check: Arc<RwLock<Check>>,
}

impl HealthState {
    pub fn new(status: StatusReceiver) -> Self {
        HealthState {
            status,
            check: Arc::new(RwLock::new(Check {
                state: CheckState::Unknown,
                detail: None,
                at: None,
            })),
        }
    }
}

/// Refreshes the `SELECT 1` check every [`CHECK_INTERVAL`] and on every status change, until
/// `cancel`.
pub async fn run_checks(state: HealthState, probe: Probe, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = state.status.clone();
    loop {
        // Check on every tick, and at once when the supervisor's state changes, so readiness
        // is reported as soon as the lakes are up rather than at the next tick.
        tokio::select! {
            _ = tick.tick() => {}
            result = changes.changed() => if result.is_err() { return },
            () = cancel.cancelled() => return,
        }
        let running = matches!(
            state.status.borrow().postgres,
            catalog_core::status::PgState::Running { .. }
        );
        let (new_state, detail) = if running {
            match probe.ping(CHECK_TIMEOUT).await {
                Ok(()) => (CheckState::Ok, None),
                Err(e) => (CheckState::Error, Some(e)),
            }
        } else {
            (
                CheckState::Unknown,
                Some("postgres is not running".to_owned()),
            )
        };
        let mut check = state.check.write().await;
        if new_state == CheckState::Error && check.state != CheckState::Error {
            tracing::warn!(
                detail = detail.as_deref().unwrap_or(""),
                "readiness check failed"
            );
        }
        *check = Check {
            state: new_state,
            detail,
            at: Some(Instant::now()),
        };
    }
}

/// The router with `/healthz` and `/readyz`.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

#[derive(Serialize)]
struct Body<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    check: &'a CheckState,
    #[serde(flatten)]
    detail: &'a Status,
}

async fn healthz(State(state): State<HealthState>) -> impl IntoResponse {
    let status = state.status.borrow().clone();
    let check = state.check.read().await.state.clone();
    let alive = status.postgres.is_alive();
    let reason = (!alive).then(|| "the postgres child is not running".to_owned());
    respond(alive, reason, &check, &status)
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    let status = state.status.borrow().clone();
    let check = state.check.read().await.clone();
    let fresh = check
        .at
        .is_some_and(|at| at.elapsed() < CHECK_INTERVAL * 3 + CHECK_TIMEOUT);
    let reason = if !status.lakes_ready() {
        Some(not_ready_reason(&status))
    } else if check.state != CheckState::Ok || !fresh {
        Some(
            check
                .detail
                .clone()
                .unwrap_or_else(|| "waiting for the first SELECT 1 check".into()),
        )
    } else {
        None
    };
    respond(reason.is_none(), reason, &check.state, &status)
}

fn not_ready_reason(status: &Status) -> String {
    use catalog_core::status::{LakeState, PgState};
    if let PgState::Restoring { phase } = &status.postgres {
        return format!("restoring from the backup target: {phase}");
    }
    if !matches!(status.postgres, PgState::Running { .. }) {
        return format!("postgres is {}", status.postgres.name());
    }
    if let Some(reason) = status.backup.as_ref().and_then(|b| b.fenced.as_ref()) {
        return format!("fenced: {reason}");
    }
    if let Some((name, lake)) = status
        .lakes
        .iter()
        .find(|(_, l)| l.state == LakeState::Error)
    {
        return format!("lake {name}: {}", lake.error.as_deref().unwrap_or("error"));
    }
    "lakes are being initialised".into()
}

fn respond(
    ok: bool,
    reason: Option<String>,
    check: &CheckState,
    status: &Status,
) -> (StatusCode, Json<serde_json::Value>) {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Body {
        status: if ok { "ok" } else { "error" },
        reason,
        check,
        detail: status,
    };
    (
        code,
        Json(serde_json::to_value(&body).expect("health body serialises")),
    )
}

/// Serves the router on `addr` until `cancel`; returns once bound so a failed bind is reported
/// before PostgreSQL starts.
pub async fn serve(
    addr: SocketAddr,
    state: HealthState,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "health endpoints listening (/healthz, /readyz)");
    let app = router(state);
    Ok(tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "health server stopped");
        }
    }))
}

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("{url} is not reachable: {error}; is `ducklake-catalog serve` running with this http.listen?")]
    Unreachable { url: String, error: reqwest::Error },
    #[error("{url} answered {code}: {reason}")]
    NotReady {
        url: String,
        code: u16,
        reason: String,
    },
}

/// GETs `url` (a `/readyz` or `/healthz`); Ok with the JSON body when it answers 200.
pub async fn probe(url: &str, timeout: Duration) -> Result<serde_json::Value, ProbeError> {
    let unreachable = |error| ProbeError::Unreachable {
        url: url.to_owned(),
        error,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let resp = client.get(url).send().await.map_err(unreachable)?;
    let code = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if code == 200 {
        return Ok(body);
    }
    let reason = body
        .get("reason")
        .and_then(|r| r.as_str())
        .unwrap_or("no reason given")
        .to_owned();
    Err(ProbeError::NotReady {
        url: url.to_owned(),
        code,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body as AxumBody;
    use axum::http::Request;
    use catalog_core::status::{LakeState, LakeStatus, PgState};
    use tower::ServiceExt;

    async fn get_json(app: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let resp = app
            .oneshot(Request::get(path).body(AxumBody::empty()).unwrap())
            .await
            .unwrap();
        let code = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn readyz_is_503_while_starting_and_healthz_is_200() {
        let (_tx, rx) = catalog_core::status::channel();
        let state = HealthState::new(rx);
        let (code, body) = get_json(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "postgres is starting");
        let (code, _) = get_json(router(state), "/healthz").await;
        assert_eq!(code, StatusCode::OK);
    }

    fn running_with_a_ready_lake(s: &mut Status) {
        s.postgres = PgState::Running { pid: 1 };
        s.lakes.insert(
            "lakehouse".into(),
            LakeStatus {
                state: LakeState::Ready,
                data_path: "/d/".into(),
                spec_version: Some("1.0".into()),
                error: None,
            },
        );
    }

    #[tokio::test]
    async fn a_restore_is_alive_but_not_ready_and_a_fenced_instance_is_not_ready() {
        let (tx, rx) = catalog_core::status::channel();
        let state = HealthState::new(rx);
        tx.send_modify(|s| {
            s.postgres = PgState::Restoring {
                phase: "replaying archived WAL".into(),
            };
        });
        let (code, _) = get_json(router(state.clone()), "/healthz").await;
        assert_eq!(
            code,
            StatusCode::OK,
            "a long restore must not fail the liveness check"
        );
        let (code, body) = get_json(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body["reason"],
            "restoring from the backup target: replaying archived WAL"
        );
        tx.send_modify(|s| {
            running_with_a_ready_lake(s);
            s.backup = Some(catalog_core::status::BackupStatus {
                fenced: Some("superseded".into()),
                ..Default::default()
            });
        });
        *state.check.write().await = Check {
            state: CheckState::Ok,
            detail: None,
            at: Some(Instant::now()),
        };
        let (code, body) = get_json(router(state), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "fenced: superseded");
    }

    #[tokio::test]
    async fn readyz_needs_lakes_ready_and_a_fresh_check() {
        let (tx, rx) = catalog_core::status::channel();
        let state = HealthState::new(rx);
        tx.send_modify(|s| {
            running_with_a_ready_lake(s);
        });
        let (code, body) = get_json(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        *state.check.write().await = Check {
            state: CheckState::Ok,
            detail: None,
            at: Some(Instant::now()),
        };
        let (code, body) = get_json(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["lakes"]["lakehouse"]["spec_version"], "1.0");
        tx.send_modify(|s| {
            s.postgres = PgState::Restarting {
                exit: "signal: 9".into(),
            }
        });
        let (code, _) = get_json(router(state.clone()), "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        let (code, body) = get_json(router(state), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "postgres is restarting");
    }
}
