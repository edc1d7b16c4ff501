//! The HTTP side: the order API as JSON, the OpenAPI document, `/healthz`, `/readyz`, `/metrics`, and the ops
//! console at `/ui` (`console.rs`).

use super::{parse_status, ApiError, ApiState};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ordertrail_core::query::{ExceptionFilter, OrderFilter};
use ordertrail_core::time::parse_rfc3339;
use serde::Deserialize;

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI_YAML: &str = include_str!("openapi.yaml");

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        };
        let body = serde_json::json!({ "code": status.as_u16(), "status": code, "message": self.to_string() });
        (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn time(field: &str, value: Option<&String>) -> Result<Option<u64>, ApiError> {
    value
        .map(|v| {
            parse_rfc3339(v).ok_or_else(|| ApiError::InvalidArgument(format!("{field} `{v}` is not an RFC 3339 time")))
        })
        .transpose()
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Query parameters of `GET /v1/orders`; unknown parameters are refused so that a typo does not silently widen
/// the answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrdersQuery {
    stage: Option<String>,
    sla_status: Option<String>,
    owner: Option<String>,
    exception_class: Option<String>,
    customer: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionsQuery {
    class: Option<String>,
    owner: Option<String>,
    milestone: Option<String>,
    include_resolved: Option<bool>,
    since: Option<String>,
    until: Option<String>,
    max_groups: Option<usize>,
}

async fn get_order(State(state): State<ApiState>, Path(order_id): Path<String>) -> Response {
    respond(state.get_order(&order_id).await)
}

/// The answer as JSON, or the error with its status.
fn respond<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(value) => json(&value),
        Err(e) => e.into_response(),
    }
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The parsed query, or INVALID_ARGUMENT naming what could not be parsed (an unknown parameter, a bad number).
fn parsed<T>(query: QueryResult<T>) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|e| ApiError::InvalidArgument(e.body_text()))
}

async fn list_orders(State(state): State<ApiState>, query: QueryResult<OrdersQuery>) -> Response {
    let request = async {
        let q = parsed(query)?;
        // Checked in the order of the other transport, so that both name the same bad argument first.
        let (since, until) = (time("since", q.since.as_ref())?, time("until", q.until.as_ref())?);
        let stage = state.stage(non_empty(q.stage))?;
        let sla_status = parse_status("sla_status", non_empty(q.sla_status))?;
        let status = parse_status("status", non_empty(q.status))?;
        let filter = OrderFilter {
            stage,
            sla_status,
            owner: non_empty(q.owner),
            exception_class: non_empty(q.exception_class),
            customer: non_empty(q.customer),
            status,
            since,
            until,
        };
        state.list_orders(filter, q.page_size.unwrap_or(0), q.page_token.unwrap_or_default()).await
    };
    respond(request.await)
}

async fn list_exceptions(State(state): State<ApiState>, query: QueryResult<ExceptionsQuery>) -> Response {
    let request = async {
        let q = parsed(query)?;
        let filter = ExceptionFilter {
            class: non_empty(q.class),
            owner: non_empty(q.owner),
            milestone: non_empty(q.milestone),
            include_resolved: q.include_resolved.unwrap_or(false),
            since: time("since", q.since.as_ref())?,
            until: time("until", q.until.as_ref())?,
        };
        state.list_exceptions(filter, q.max_groups.unwrap_or(0)).await
    };
    respond(request.await)
}

/// Query parameters of `GET /v1/stalled`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StalledQuery {
    owner: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BottleneckQuery {
    to: Option<String>,
    dimension: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskQuery {
    owner: Option<String>,
    target: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternQuery {
    class: Option<String>,
    system: Option<String>,
    milestone: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OcelQuery {
    since: Option<String>,
    until: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: Option<String>,
}

async fn bottlenecks(State(state): State<ApiState>, query: QueryResult<BottleneckQuery>) -> Response {
    let request = async {
        let q = parsed(query)?;
        state
            .bottlenecks(ordertrail_core::query::BottleneckFilter {
                to: non_empty(q.to),
                dimension: non_empty(q.dimension),
            })
            .await
    };
    respond(request.await)
}

async fn at_risk(State(state): State<ApiState>, query: QueryResult<RiskQuery>) -> Response {
    let request = async {
        let q = parsed(query)?;
        state.at_risk(non_empty(q.owner), non_empty(q.target), q.limit.unwrap_or(0)).await
    };
    respond(request.await)
}

async fn delay_model(State(state): State<ApiState>) -> Response {
    respond(state.delay_model().await)
}

async fn patterns(State(state): State<ApiState>, query: QueryResult<PatternQuery>) -> Response {
    let request = async {
        let q = parsed(query)?;
        let filter = ordertrail_core::query::PatternFilter {
            class: non_empty(q.class),
            system: non_empty(q.system),
            milestone: non_empty(q.milestone),
        };
        state.patterns(filter, q.limit.unwrap_or(0)).await
    };
    respond(request.await)
}

async fn ocel(State(state): State<ApiState>, query: QueryResult<OcelQuery>) -> Response {
    let request = async {
        let q = parsed(query)?;
        let (since, until) = (time("since", q.since.as_ref())?, time("until", q.until.as_ref())?);
        state.ocel(since, until).await
    };
    respond(request.await)
}

async fn flow(State(state): State<ApiState>) -> Response {
    respond(state.flow().await)
}

async fn stalled(State(state): State<ApiState>, query: QueryResult<StalledQuery>) -> Response {
    let request = async {
        let q = parsed(query)?;
        state.stalled(non_empty(q.owner), q.limit.unwrap_or(0)).await
    };
    respond(request.await)
}

async fn search(State(state): State<ApiState>, query: QueryResult<SearchQuery>) -> Response {
    let request = async {
        let q = parsed(query)?;
        state.search(q.q.as_deref().unwrap_or("")).await
    };
    respond(request.await)
}

/// Who the caller is, as far as the API knows: the team its token is bound to, if any.
async fn me(caller: Option<axum::Extension<crate::auth::Caller>>) -> Response {
    let team = caller.and_then(|axum::Extension(c)| c.team);
    json(&serde_json::json!({ "team": team }))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<ApiState>) -> Response {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

/// OpenMetrics (with exemplars) when the scraper asks for it, as Prometheus does when exemplar storage is on;
/// the classic text format otherwise.
async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let registry = state.metrics.registry();
    let process = crate::metrics::process::ProcessSample::read();
    if accept.contains("application/openmetrics-text") {
        let mut body = registry.render_openmetrics();
        // The process's series go before the closing `# EOF`, which must end the exposition.
        let end = body.rfind("# EOF\n").unwrap_or(body.len());
        body.truncate(end);
        body.push_str(&process.render(true));
        body.push_str("# EOF\n");
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
    } else {
        let mut body = registry.render_prometheus();
        body.push_str(&process.render(false));
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
    }
}

/// With `api.auth`, every route but the probes (and `/metrics` with `metrics_without_auth`) needs a token;
/// a request without one is answered 401 before it reaches the route.
async fn require_token(
    State(state): State<ApiState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(auth) = &state.auth else { return next.run(request).await };
    let path = request.uri().path();
    // The console's page and files carry no data (the page asks the API with the caller's token), so a browser can
    // load them before it has a token to send.
    let open = matches!(path, "/healthz" | "/readyz")
        || super::console::is_console_path(path)
        || (path == "/metrics" && state.config.api.metrics_without_auth);
    if open {
        return next.run(request).await;
    }
    if let Some(caller) = auth.caller(request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        // The console asks who it serves (`/v1/me`), to show a team-bound token's queue.
        request.extensions_mut().insert(caller);
        return next.run(request).await;
    }
    crate::telemetry::Counters::add(&state.pipeline.counters().requests_unauthenticated, 1);
    let body = serde_json::json!({
        "code": 401, "status": "UNAUTHENTICATED", "message": "missing or invalid bearer token"
    });
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json"), (header::WWW_AUTHENTICATE, "Bearer")],
        body.to_string(),
    )
        .into_response()
}

pub fn router(state: ApiState) -> Router {
    let guard = axum::middleware::from_fn_with_state(state.clone(), require_token);
    Router::new()
        .route("/v1/orders", get(list_orders))
        .route("/v1/orders/{order_id}", get(get_order))
        .route("/v1/exceptions", get(list_exceptions))
        .route("/v1/flow", get(flow))
        .route("/v1/stalled", get(stalled))
        .route("/v1/search", get(search))
        .route("/v1/me", get(me))
        .route("/v1/ocel", get(ocel))
        .route("/v1/bottlenecks", get(bottlenecks))
        .route("/v1/risk", get(at_risk))
        .route("/v1/risk/model", get(delay_model))
        .route("/v1/patterns", get(patterns))
        .route("/openapi.yaml", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(super::console::routes())
        .layer(guard)
        .with_state(state)
}

pub async fn serve(
    listener: crate::connections::LimitedListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::connections::serve_http(listener, router(state), shutdown).await
}
