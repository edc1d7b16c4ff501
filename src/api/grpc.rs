//! The gRPC side: `ordertrail.v1.OrderService`, `grpc.health.v1.Health` (for Kubernetes gRPC probes) and server
//! reflection (for grpcurl without proto files).

use super::proto::insight_service_server::InsightServiceServer;
use super::proto::order_service_server::{OrderService, OrderServiceServer};
use super::proto::{self};
use super::{parse_status, ApiError, ApiState};
use ordertrail_core::query::{self, ExceptionFilter, OrderFilter};
use ordertrail_core::time::parse_rfc3339;
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::NotFound(_) => Status::not_found(e.to_string()),
            ApiError::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
            ApiError::Unavailable => Status::unavailable(e.to_string()),
        }
    }
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

pub(super) fn ts(text: &str) -> Option<Timestamp> {
    let nanos = parse_rfc3339(text)?;
    let seconds = i64::try_from(nanos / NANOS_PER_SECOND).ok()?;
    let nanos = i32::try_from(nanos % NANOS_PER_SECOND).ok()?;
    Some(Timestamp { seconds, nanos })
}

fn opt_ts(text: &Option<String>) -> Option<Timestamp> {
    text.as_deref().and_then(ts)
}

fn from_ts(field: &str, t: Option<Timestamp>) -> Result<Option<u64>, Status> {
    match t {
        None => Ok(None),
        Some(t) if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) => {
            Err(Status::invalid_argument(format!("{field} must be a valid time after 1970")))
        }
        Some(t) => {
            // Both are non-negative here.
            let (seconds, nanos) = (u64::try_from(t.seconds).unwrap_or(0), u64::try_from(t.nanos).unwrap_or(0));
            Ok(Some(seconds.saturating_mul(NANOS_PER_SECOND).saturating_add(nanos)))
        }
    }
}

pub(super) fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn span_ref(r: &query::SpanRef) -> proto::SpanRef {
    proto::SpanRef { trace_id: r.trace_id.clone(), span_id: r.span_id.clone() }
}

fn next_action(n: &query::NextAction) -> proto::NextAction {
    proto::NextAction {
        milestone: n.milestone.clone(),
        owner: n.owner.clone(),
        milestone_owner: n.milestone_owner.clone(),
        blocked_by: n.blocked_by.as_ref().map(|b| proto::Blocker {
            class: b.class.clone(),
            owner: b.owner.clone(),
            reason: b.reason.clone(),
            since: ts(&b.since),
        }),
        deadline: opt_ts(&n.deadline),
        overdue: n.overdue,
        playbook: n.playbook.as_ref().map(|p| proto::PlaybookAction {
            name: p.name.clone(),
            action: p.action.clone(),
            team: p.team.clone(),
            runbook: p.runbook.clone().unwrap_or_default(),
            urgency: p.urgency.as_str().to_string(),
        }),
    }
}

fn order(v: query::OrderView) -> proto::Order {
    proto::Order {
        order_id: v.order_id,
        trace_id: v.trace_id,
        trace_url: v.trace_url.unwrap_or_default(),
        status: v.status.to_string(),
        close_reason: v.close_reason.unwrap_or_default(),
        stage: v.stage.unwrap_or_default(),
        next: v.next.as_ref().map(next_action),
        sla_status: v.sla_status.to_string(),
        dimensions: v.dimensions.into_iter().collect(),
        first_seen: ts(&v.first_seen),
        last_seen: ts(&v.last_seen),
        span_count: v.span_count,
        open_exceptions: v.open_exceptions,
        milestones: v
            .milestones
            .into_iter()
            .map(|m| proto::Milestone {
                first_work_at: opt_ts(&m.first_work_at),
                reached_at: opt_ts(&m.reached_at),
                deadline: opt_ts(&m.deadline),
                source: m.source.as_ref().map(span_ref),
                name: m.name,
                owner: m.owner,
                state: m.state.to_string(),
                off_path: m.off_path,
                duration_ms: m.duration_ms,
                sla_status: m.sla_status.map(|s| s.to_string()).unwrap_or_default(),
                system: m.system.unwrap_or_default(),
                actor: m.actor.unwrap_or_default(),
                span_count: m.span_count,
            })
            .collect(),
        exceptions: v
            .exceptions
            .into_iter()
            .map(|e| proto::OrderException {
                first_seen: ts(&e.first_seen),
                last_seen: ts(&e.last_seen),
                resolved_at: opt_ts(&e.resolved_at),
                source: Some(span_ref(&e.source)),
                class: e.class,
                owner: e.owner,
                milestone: e.milestone.unwrap_or_default(),
                reason: e.reason,
                signature: e.signature,
                status: e.status.to_string(),
                count: e.count,
                system: e.system,
                actor: e.actor.unwrap_or_default(),
            })
            .collect(),
        slas: v
            .slas
            .into_iter()
            .map(|s| proto::Sla {
                started_at: ts(&s.started_at),
                deadline: opt_ts(&s.deadline),
                breached_at: opt_ts(&s.breached_at),
                reached_at: opt_ts(&s.reached_at),
                target: s.target,
                from: s.from,
                to: s.to,
                allowed_ms: s.allowed_ms,
                status: s.status.to_string(),
                lateness_ms: s.lateness_ms,
                at_risk_at: opt_ts(&s.at_risk_at),
                risk_probability: s.risk_probability,
                risk_basis: s.risk_basis.unwrap_or_default(),
            })
            .collect(),
        ordered_quantity: v.ordered_quantity,
        shipped_quantity: v.shipped_quantity,
        fill_ratio: v.fill_ratio,
    }
}

#[tonic::async_trait]
impl OrderService for ApiState {
    async fn get_order(&self, request: Request<proto::GetOrderRequest>) -> Result<Response<proto::Order>, Status> {
        let view = ApiState::get_order(self, &request.into_inner().order_id).await?;
        Ok(Response::new(order(view)))
    }

    async fn list_orders(
        &self,
        request: Request<proto::ListOrdersRequest>,
    ) -> Result<Response<proto::ListOrdersResponse>, Status> {
        let r = request.into_inner();
        // Checked in the order of the other transport, so that both name the same bad argument first.
        let (since, until) = (from_ts("since", r.since)?, from_ts("until", r.until)?);
        let stage = self.stage(non_empty(r.stage))?;
        let sla_status = parse_status("sla_status", non_empty(r.sla_status))?;
        let status = parse_status("status", non_empty(r.status))?;
        let filter = OrderFilter {
            stage,
            sla_status,
            owner: non_empty(r.owner),
            exception_class: non_empty(r.exception_class),
            customer: non_empty(r.customer),
            status,
            since,
            until,
        };
        let page = ApiState::list_orders(self, filter, r.page_size as usize, r.page_token).await?;
        Ok(Response::new(proto::ListOrdersResponse {
            orders: page
                .orders
                .into_iter()
                .map(|o| proto::OrderSummary {
                    next: o.next.as_ref().map(next_action),
                    first_seen: ts(&o.first_seen),
                    last_seen: ts(&o.last_seen),
                    order_id: o.order_id,
                    trace_id: o.trace_id,
                    trace_url: o.trace_url.unwrap_or_default(),
                    status: o.status.to_string(),
                    stage: o.stage.unwrap_or_default(),
                    sla_status: o.sla_status.to_string(),
                    open_exceptions: o.open_exceptions,
                    exception_classes: o.exception_classes,
                    dimensions: o.dimensions.into_iter().collect(),
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_exceptions(
        &self,
        request: Request<proto::ListExceptionsRequest>,
    ) -> Result<Response<proto::ListExceptionsResponse>, Status> {
        let r = request.into_inner();
        let filter = ExceptionFilter {
            class: non_empty(r.class),
            owner: non_empty(r.owner),
            milestone: non_empty(r.milestone),
            include_resolved: r.include_resolved,
            since: from_ts("since", r.since)?,
            until: from_ts("until", r.until)?,
        };
        let summary = ApiState::list_exceptions(self, filter, r.max_groups as usize).await?;
        Ok(Response::new(proto::ListExceptionsResponse {
            groups: summary
                .groups
                .into_iter()
                .map(|g| proto::ExceptionGroup {
                    oldest_open_since: opt_ts(&g.oldest_open_since),
                    class: g.class,
                    owner: g.owner,
                    open: g.open,
                    resolved: g.resolved,
                    orders: g.orders,
                    occurrences: g.occurrences,
                    by_milestone: g.by_milestone.into_iter().collect(),
                    sample_orders: g.sample_orders,
                })
                .collect(),
            groups_omitted: summary.groups_omitted,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrpcApiError {
    #[error("grpc reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("grpc api server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub async fn serve(
    listener: crate::connections::LimitedListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcApiError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<OrderServiceServer<ApiState>>().await;
    // gRPC health follows the same readiness as `/readyz`, so that gRPC probes see a failing store too.
    let (probe_state, reporter) = (state.clone(), health_reporter.clone());
    let probe = tokio::spawn(async move {
        loop {
            match probe_state.readiness() {
                Ok(()) => reporter.set_serving::<OrderServiceServer<ApiState>>().await,
                Err(_) => reporter.set_not_serving::<OrderServiceServer<ApiState>>().await,
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    // Both reflection versions: grpcurl before 1.9 and some IDEs only speak v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    // With `api.auth`, the order service needs a token; health (probes) and reflection (the schema) stay open.
    let (auth, counters) = (state.auth.clone(), state.pipeline.counters().clone());
    let require_token = move |request: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
        let Some(auth) = &auth else { return Ok(request) };
        if auth.allows(request.metadata().get("authorization").map(|v| v.as_bytes())) {
            return Ok(request);
        }
        crate::telemetry::Counters::add(&counters.requests_unauthenticated, 1);
        Err(tonic::Status::unauthenticated("missing or invalid bearer token"))
    };
    let served = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(OrderServiceServer::with_interceptor(state.clone(), require_token.clone()))
        .add_service(InsightServiceServer::with_interceptor(state, require_token))
        .serve_with_incoming_shutdown(listener.into_stream(), shutdown)
        .await;
    probe.abort();
    served?;
    Ok(())
}
