//! The gRPC side of insight: `ordertrail.v1.InsightService`, the same answers as `/v1/risk`, `/v1/risk/model`,
//! `/v1/patterns` and `/v1/bottlenecks`.

use super::grpc::{non_empty, ts};
use super::proto::insight_service_server::InsightService;
use super::proto::{self};
use super::ApiState;
use ordertrail_core::query;
use tonic::{Request, Response, Status};

fn limit(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn delay_stats(s: &query::DelayStats) -> proto::DelayStats {
    proto::DelayStats { samples: s.samples, p50_ms: s.p50_ms, p90_ms: s.p90_ms, breach_share: s.breach_share }
}

#[tonic::async_trait]
impl InsightService for ApiState {
    async fn list_at_risk(
        &self,
        request: Request<proto::ListAtRiskRequest>,
    ) -> Result<Response<proto::ListAtRiskResponse>, Status> {
        let r = request.into_inner();
        let found = self.at_risk(non_empty(r.owner), non_empty(r.target), limit(r.limit)).await?;
        let orders = found
            .orders
            .into_iter()
            .map(|c| proto::AtRiskClock {
                started_at: ts(&c.started_at),
                deadline: ts(&c.deadline),
                found_at: ts(&c.found_at),
                order_id: c.order_id,
                trace_id: c.trace_id,
                target: c.target,
                milestone: c.milestone,
                owner: c.owner,
                probability: c.probability,
                basis: c.basis,
                remaining_ms: c.remaining_ms,
                dimensions: c.dimensions.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(proto::ListAtRiskResponse { threshold: found.threshold, orders }))
    }

    async fn get_delay_model(
        &self,
        _request: Request<proto::GetDelayModelRequest>,
    ) -> Result<Response<proto::DelayModel>, Status> {
        let model = self.delay_model().await?;
        let targets = model
            .targets
            .iter()
            .map(|t| proto::TargetDelays {
                target: t.target.clone(),
                from: t.from.clone(),
                to: t.to.clone(),
                allowed_ms: t.allowed_ms,
                all: Some(delay_stats(&t.all)),
                values: t
                    .values
                    .iter()
                    .map(|v| proto::ValueDelays {
                        dimension: v.dimension.clone(),
                        value: v.value.clone(),
                        stats: Some(delay_stats(&v.stats)),
                        used: v.used,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(proto::DelayModel { threshold: model.threshold, min_samples: model.min_samples, targets }))
    }

    async fn list_patterns(
        &self,
        request: Request<proto::ListPatternsRequest>,
    ) -> Result<Response<proto::ListPatternsResponse>, Status> {
        let r = request.into_inner();
        let filter = query::PatternFilter {
            class: non_empty(r.class),
            system: non_empty(r.system),
            milestone: non_empty(r.milestone),
        };
        let list = self.patterns(filter, limit(r.limit)).await?;
        let patterns = list
            .patterns
            .into_iter()
            .map(|p| proto::Pattern {
                first_seen: ts(&p.first_seen),
                last_seen: ts(&p.last_seen),
                trend: serde_json::to_value(p.trend)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                id: p.id,
                class: p.class,
                milestone: p.milestone.unwrap_or_default(),
                system: p.system,
                template: p.template,
                example: p.example,
                total: p.total,
                in_last_window: p.in_last_window,
                in_kept_windows: p.in_kept_windows,
                per_window: p.per_window,
                orders_affected: p.orders_affected,
                orders_affected_capped: p.orders_affected_capped,
                recent_orders: p.recent_orders,
                playbook: p.playbook.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(proto::ListPatternsResponse {
            window_seconds: list.window_seconds,
            kept: list.kept,
            refused: list.refused,
            patterns,
        }))
    }

    async fn get_bottlenecks(
        &self,
        request: Request<proto::GetBottlenecksRequest>,
    ) -> Result<Response<proto::Bottlenecks>, Status> {
        let r = request.into_inner();
        let found = self
            .bottlenecks(query::BottleneckFilter { to: non_empty(r.to), dimension: non_empty(r.dimension) })
            .await?;
        let transitions = found
            .transitions
            .into_iter()
            .map(|t| proto::Transition {
                from: t.from,
                to: t.to,
                orders: t.orders,
                median_ms: t.median_ms,
                p90_ms: t.p90_ms,
                breaches: t.breaches,
                dimensions: t
                    .dimensions
                    .into_iter()
                    .map(|d| proto::DimensionBreakdown {
                        dimension: d.dimension,
                        values: d
                            .values
                            .into_iter()
                            .map(|v| proto::BottleneckValue {
                                value: v.value,
                                orders: v.orders,
                                median_ms: v.median_ms,
                                p90_ms: v.p90_ms,
                                p90_vs_overall: v.p90_vs_overall,
                                breaches: v.breaches,
                                breach_share: v.breach_share,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(proto::Bottlenecks { transitions }))
    }
}
