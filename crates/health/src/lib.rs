//! Health over HTTP, and the process's tracing setup.
//!
//! - `GET /healthz`: liveness — the process answers and the PostgreSQL child is running (or is
//!   being started or stopped in order). 503 after PostgreSQL died, until it is back.
//! - `GET /readyz`: readiness — PostgreSQL answered `SELECT 1` recently and every lake is
//!   initialised. 503 with a JSON reason otherwise.
//!
//! Both only read state: the server publishes its status (any serialisable `S`) on a watch
//! channel, with a function that judges it ([`Readiness`]), and [`run_checks`] refreshes the
//! `SELECT 1` result in the background through a [`Ping`] (lakekeeper-style cached checks), so
//! a probe never waits on PostgreSQL. [`probe`] is the client side used by
//! `ducklake-catalog health` for a container HEALTHCHECK without curl.
//!
//! **Architecture invariant:** this crate depends on no crate of ours but `base`: it knows
//! neither the supervisor nor PostgreSQL, only what they publish.

mod tracing_setup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::{watch, RwLock};
use tokio_util::sync::CancellationToken;

pub use tracing_setup::{init_stderr_tracing, init_tracing, recent_problems, TracingError};

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

/// What the endpoints need to know of the server's published status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// `/healthz` answers 200: the database runs or is being brought up or down in order.
    pub alive: bool,
    /// The database accepts connections, so the background `SELECT 1` check is worth running.
    pub accepting: bool,
    /// Why the server is not ready, the `SELECT 1` check aside; `None` when all is up.
    pub blocker: Option<String>,
    /// `primary` or `standby` (or `promoting`) on a server of a failover pair; `None` alone.
    /// `/readyz/primary` and `/readyz/standby` are ready only in that role.
    pub role: Option<&'static str>,
}

/// The background check's connection: one `SELECT 1` (or the like) bounded by `timeout`.
pub trait Ping: Send + Sync + 'static {
    fn ping(
        &self,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// What `GET /metrics` and `GET /status` answer: renderers of the server's kept facts in
/// Prometheus's text format and as JSON (rendering never waits on a database).
#[derive(Clone)]
pub struct Metrics {
    pub prometheus: Arc<dyn Fn() -> String + Send + Sync>,
    pub json: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// When set, the three answer only requests carrying it (`Authorization: Bearer …` or a
    /// `token` query parameter); others get 401.
    pub token: Option<base::Secret>,
}

impl Metrics {
    /// Whether `headers` and `query` carry the token (always, without one). Compared in
    /// constant time.
    fn allows(&self, headers: &axum::http::HeaderMap, query: Option<&str>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let from_query = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
        [bearer, from_query]
            .into_iter()
            .flatten()
            .any(|given| same(given.as_bytes(), token.expose().as_bytes()))
    }
}

/// `a == b` in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const UNAUTHORIZED: &str = "this needs the metrics token (metrics.token): send `Authorization: Bearer <token>` or add `?token=<token>`\n";

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

/// The content type of `/metrics`: Prometheus's text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoints read: the published status `S`, how to judge it, and the cached check.
#[derive(Debug)]
pub struct HealthState<S> {
    status: watch::Receiver<S>,
    judge: fn(&S) -> Readiness,
    check: Arc<RwLock<Check>>,
    metrics: Option<Metrics>,
}

impl<S> Clone for HealthState<S> {
    fn clone(&self) -> Self {
        HealthState {
            status: self.status.clone(),
            judge: self.judge,
            check: Arc::clone(&self.check),
            metrics: self.metrics.clone(),
        }
    }
}

impl<S: Serialize + Clone + Send + Sync + 'static> HealthState<S> {
    /// `judge` reads what the endpoints need out of a published status; the whole status is
    /// the body of every answer.
    pub fn new(status: watch::Receiver<S>, judge: fn(&S) -> Readiness) -> Self {
        HealthState {
            status,
            judge,
            check: Arc::new(RwLock::new(Check {
                state: CheckState::Unknown,
                detail: None,
                at: None,
            })),
            metrics: None,
        }
    }

    /// Serves `GET /metrics` from `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The current status and its judgement.
    fn current(&self) -> (S, Readiness) {
        let status = self.status.borrow().clone();
        let readiness = (self.judge)(&status);
        (status, readiness)
    }
}

/// Refreshes the `SELECT 1` check every [`CHECK_INTERVAL`] and on every status change, until
/// `cancel`.
pub async fn run_checks<S, P>(state: HealthState<S>, probe: P, cancel: CancellationToken)
where
    S: Serialize + Clone + Send + Sync + 'static,
    P: Ping,
{
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
        let accepting = state.current().1.accepting;
        let (new_state, detail) = if accepting {
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
pub fn router<S: Serialize + Clone + Send + Sync + 'static>(state: HealthState<S>) -> Router {
    Router::new()
        .route("/healthz", get(healthz::<S>))
        .route("/readyz", get(readyz::<S>))
        .route("/readyz/primary", get(readyz_primary::<S>))
        .route("/readyz/standby", get(readyz_standby::<S>))
        .route("/", get(page::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/status", get(status_json::<S>))
        .with_state(state)
}

/// The metrics' renderers when this request may use them: 404 without them, 401 without the
/// token they need.
#[allow(clippy::result_large_err)]
fn allowed<'s, S>(
    state: &'s HealthState<S>,
    headers: &axum::http::HeaderMap,
    uri: &axum::http::Uri,
) -> Result<&'s Metrics, axum::response::Response> {
    match &state.metrics {
        None => Err((StatusCode::NOT_FOUND, "not served here\n").into_response()),
        Some(m) if !m.allows(headers, uri.query()) => {
            Err((StatusCode::UNAUTHORIZED, UNAUTHORIZED).into_response())
        }
        Some(m) => Ok(m),
    }
}

async fn metrics<S: Serialize + Clone + Send + Sync + 'static>(
    State(state): State<HealthState<S>>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> axum::response::Response {
    match allowed(&state, &headers, &uri) {
        Ok(m) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            (m.prometheus)(),
        )
            .into_response(),
        Err(refused) => refused,
    }
}

/// The status page: self-contained (no external asset), it reads `/status` and redraws itself.
const STATUS_PAGE: &str = include_str!("status.html");

async fn page<S: Serialize + Clone + Send + Sync + 'static>(
    State(state): State<HealthState<S>>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> axum::response::Response {
    if let Err(refused) = allowed(&state, &headers, &uri) {
        return refused;
    }
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
        ],
        STATUS_PAGE,
    )
        .into_response()
}

async fn status_json<S: Serialize + Clone + Send + Sync + 'static>(
    State(state): State<HealthState<S>>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> axum::response::Response {
    match allowed(&state, &headers, &uri) {
        Ok(m) => Json((m.json)()).into_response(),
        Err(refused) => refused,
    }
}

#[derive(Serialize)]
struct Body<'a, S> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    check: &'a CheckState,
    #[serde(flatten)]
    detail: &'a S,
}

async fn healthz<S: Serialize + Clone + Send + Sync + 'static>(
    State(state): State<HealthState<S>>,
) -> impl IntoResponse {
    let (status, readiness) = state.current();
    let check = state.check.read().await.state.clone();
    let reason = (!readiness.alive).then(|| "the postgres child is not running".to_owned());
    respond(readiness.alive, reason, &check, &status)
}

/// Ready and the primary (a single server is its own primary): what a load balancer in front
/// of writers checks.
async fn readyz_primary<S: Serialize + Clone + Send + Sync + 'static>(
    State(state): State<HealthState<S>>,
) -> impl IntoResponse {
    ready_as(&state, "primary").await
}

/// Ready and a hot standby: what a load balancer in front of readers checks.
async fn readyz_standby<S: Serialize + Clone + Send + Sync + 'static>(
    State(state): State<HealthState<S>>,
) -> impl IntoResponse {
    ready_as(&state, "standby").await
}

async fn ready_as<S: Serialize + Clone + Send + Sync + 'static>(
    state: &HealthState<S>,
    wanted: &str,
) -> (StatusCode, Json<serde_json::Value>) {
    let role = state.current().1.role.unwrap_or("primary");
    if role != wanted {
        let (status, _) = state.current();
        let check = state.check.read().await.state.clone();
        return respond(
            false,
            Some(format!("this server is the {role}, not a {wanted}")),
            &check,
            &status,
        );
    }
    ready(state).await
}

async fn readyz<S: Serialize + Clone + Send + Sync + 'static>(
    State(state): State<HealthState<S>>,
) -> impl IntoResponse {
    ready(&state).await
}

async fn ready<S: Serialize + Clone + Send + Sync + 'static>(
    state: &HealthState<S>,
) -> (StatusCode, Json<serde_json::Value>) {
    let (status, readiness) = state.current();
    let check = state.check.read().await.clone();
    let fresh = check
        .at
        .is_some_and(|at| at.elapsed() < CHECK_INTERVAL * 3 + CHECK_TIMEOUT);
    let reason = if readiness.blocker.is_some() {
        readiness.blocker
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

fn respond<S: Serialize>(
    ok: bool,
    reason: Option<String>,
    check: &CheckState,
    status: &S,
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
pub async fn serve<S: Serialize + Clone + Send + Sync + 'static>(
    addr: SocketAddr,
    state: HealthState<S>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "HTTP listening (/healthz, /readyz, /metrics, /status, the status page at /)");
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

/// GETs `url`; its status code and JSON body (`null` when the body is not JSON), whatever the
/// code.
pub async fn get_json(
    url: &str,
    timeout: Duration,
) -> Result<(u16, serde_json::Value), ProbeError> {
    get_json_with(url, timeout, None).await
}

/// [`get_json`] with `Authorization: Bearer <token>`.
pub async fn get_json_with(
    url: &str,
    timeout: Duration,
    token: Option<&base::Secret>,
) -> Result<(u16, serde_json::Value), ProbeError> {
    let unreachable = |error| ProbeError::Unreachable {
        url: url.to_owned(),
        error,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let mut request = client.get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t.expose());
    }
    let resp = request.send().await.map_err(unreachable)?;
    let code = resp.status().as_u16();
    Ok((code, resp.json().await.unwrap_or(serde_json::Value::Null)))
}

/// GETs `url` (a `/readyz` or `/healthz`); Ok with the JSON body when it answers 200.
pub async fn probe(url: &str, timeout: Duration) -> Result<serde_json::Value, ProbeError> {
    let (code, body) = get_json(url, timeout).await?;
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
    use tower::ServiceExt;

    /// A status as a server publishes it: its own fields, judged by [`judge`].
    #[derive(Debug, Clone, Serialize)]
    struct Published {
        alive: bool,
        accepting: bool,
        blocker: Option<String>,
        lakes: Vec<&'static str>,
    }

    fn judge(p: &Published) -> Readiness {
        Readiness {
            alive: p.alive,
            accepting: p.accepting,
            blocker: p.blocker.clone(),
            role: None,
        }
    }

    fn starting() -> Published {
        Published {
            alive: true,
            accepting: false,
            blocker: Some("postgres is starting".into()),
            lakes: vec![],
        }
    }

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

    async fn fresh_check(state: &HealthState<Published>, check: CheckState) {
        *state.check.write().await = Check {
            state: check,
            detail: Some("SELECT 1 failed: connection refused".into()),
            at: Some(Instant::now()),
        };
    }

    #[tokio::test]
    async fn readyz_is_503_with_the_blocker_while_healthz_is_200_when_alive() {
        let (_tx, rx) = watch::channel(starting());
        let state = HealthState::new(rx, judge);
        let (code, body) = get_json(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "postgres is starting");
        assert_eq!(body["status"], "error");
        let (code, body) = get_json(router(state), "/healthz").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["status"], "ok");
    }

    #[tokio::test]
    async fn readyz_needs_no_blocker_and_a_fresh_passing_check() {
        let (tx, rx) = watch::channel(starting());
        let state = HealthState::new(rx, judge);
        tx.send_modify(|p| {
            p.accepting = true;
            p.blocker = None;
            p.lakes = vec!["lakehouse"];
        });
        let (code, body) = get_json(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["reason"], "waiting for the first SELECT 1 check");
        fresh_check(&state, CheckState::Error).await;
        let (code, body) = get_json(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["reason"], "SELECT 1 failed: connection refused");
        fresh_check(&state, CheckState::Ok).await;
        let (code, body) = get_json(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["check"], "ok");
        assert_eq!(
            body["lakes"][0], "lakehouse",
            "the published status is the body"
        );
        // A stale check is no evidence: the background check stopped answering.
        state.check.write().await.at = Instant::now().checked_sub(CHECK_INTERVAL * 10);
        let (code, _) = get_json(router(state), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn healthz_is_503_when_the_database_is_not_alive() {
        let (tx, rx) = watch::channel(starting());
        let state = HealthState::new(rx, judge);
        tx.send_modify(|p| {
            p.alive = false;
            p.blocker = Some("postgres is restarting".into());
        });
        let (code, body) = get_json(router(state.clone()), "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "the postgres child is not running");
        let (code, body) = get_json(router(state), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "postgres is restarting");
    }
}
