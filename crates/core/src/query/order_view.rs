//! The accountability timeline of one order: each milestone with its state, reach time, duration, deadline and
//! SLA status, the system and actor that reached it; the exceptions; the SLA clocks; the stage; and who owns the
//! next action.

use crate::config::Config;
use crate::ids::order_trace_id;
use crate::order::progress::{blocking_exception, next_owner, stage_and_next};
use crate::order::{
    ExceptionState, ExceptionStatus, MilestoneStatus, OrderRecord, OrderSlaStatus, OrderStatus, SlaState, SlaStatus,
};
use crate::time::{millis, rfc3339};
use serde::Serialize;
use std::collections::BTreeMap;

/// A deadline, unless it is "never" (a calendar with no working time left within three years).
pub(super) fn deadline_text(nanos: u64) -> Option<String> {
    (nanos != u64::MAX).then(|| rfc3339(nanos))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderView {
    pub order_id: String,
    /// The order trace's id (hex), the same on every replica and after every restart.
    pub trace_id: String,
    /// Link to the order trace in Jaeger or Grafana, from `api.trace_url_template`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    /// The furthest main-path milestone reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The next expected milestone, its owner and deadline: who owns the next action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<NextAction>,
    pub sla_status: OrderSlaStatus,
    pub dimensions: BTreeMap<String, String>,
    pub first_seen: String,
    pub last_seen: String,
    pub span_count: u64,
    pub open_exceptions: u64,
    pub milestones: Vec<MilestoneView>,
    pub exceptions: Vec<ExceptionView>,
    pub slas: Vec<SlaView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordered_quantity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipped_quantity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NextAction {
    pub milestone: String,
    /// Who owns the next action: the owner of the oldest open exception that blocks the milestone, else the
    /// milestone's owner.
    pub owner: String,
    /// The team that owns the milestone itself.
    pub milestone_owner: String,
    /// The oldest open exception on the awaited milestone, when one blocks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<Blocker>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Whether the deadline has passed.
    pub overdue: bool,
    /// The recommended action, from the first playbook that matches the order's situation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playbook: Option<PlaybookAction>,
}

/// A playbook's recommendation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlaybookAction {
    pub name: String,
    pub action: String,
    pub team: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    pub urgency: crate::config::Urgency,
}

impl PlaybookAction {
    pub fn of(p: &crate::config::Playbook) -> PlaybookAction {
        PlaybookAction {
            name: p.name.clone(),
            action: p.action.clone(),
            team: p.team.clone(),
            runbook: p.runbook.clone(),
            urgency: p.urgency,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Blocker {
    pub class: String,
    pub owner: String,
    pub reason: String,
    pub since: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MilestoneView {
    pub name: String,
    pub owner: String,
    pub state: MilestoneStatus,
    pub off_path: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_work_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<String>,
    /// From the previous reached main-path milestone (or the order's first span) to this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The deadline of the SLA target ending here, if a clock runs for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sla_status: Option<SlaStatus>,
    /// The system (`service.name`) that reached it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The person or system that acted, when a span says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The technical span that reached it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SpanRef>,
    pub span_count: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpanRef {
    pub trace_id: String,
    pub span_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExceptionView {
    pub class: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub milestone: Option<String>,
    pub reason: String,
    pub signature: String,
    pub status: ExceptionStatus,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    pub count: u64,
    pub system: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub source: SpanRef,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlaView {
    pub target: String,
    pub from: String,
    pub to: String,
    pub started_at: String,
    /// Absent when the calendar leaves no working time within three years.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    pub allowed_ms: u64,
    pub status: SlaStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breached_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lateness_ms: Option<u64>,
    /// When the clock was found at risk, with the model's breach probability then and what it was based on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_risk_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk_probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk_basis: Option<String>,
}

fn exception_view(e: &ExceptionState) -> ExceptionView {
    ExceptionView {
        class: e.class.clone(),
        owner: e.owner.clone(),
        milestone: e.milestone.clone(),
        reason: e.reason.clone(),
        signature: e.signature.clone(),
        status: e.status(),
        first_seen: rfc3339(e.first_seen_unix_nanos),
        last_seen: rfc3339(e.last_seen_unix_nanos),
        resolved_at: e.resolved_at_unix_nanos.map(rfc3339),
        count: e.count,
        system: e.service.clone(),
        actor: e.actor.clone(),
        source: SpanRef { trace_id: e.trace_id.clone(), span_id: e.span_id.clone() },
    }
}

pub(super) fn next_action(config: &Config, order: &OrderRecord, now: u64) -> Option<NextAction> {
    let (_, next) = stage_and_next(&config.taxonomy, order);
    let next = next?;
    // The earliest running deadline for the awaited milestone.
    let deadline = order
        .slas
        .iter()
        .filter(|s| s.to == next.name && s.reached_at_unix_nanos.is_none())
        .map(|s| s.deadline_unix_nanos)
        .min();
    let blocker = blocking_exception(order, &next.name);
    Some(NextAction {
        milestone: next.name.clone(),
        owner: next_owner(order, next).to_string(),
        milestone_owner: next.owner.clone(),
        blocked_by: blocker.map(|b| Blocker {
            class: b.class.clone(),
            owner: b.owner.clone(),
            reason: b.reason.clone(),
            since: rfc3339(b.first_seen_unix_nanos),
        }),
        deadline: deadline.and_then(deadline_text),
        overdue: deadline.is_some_and(|d| d <= now),
        playbook: crate::order::progress::playbook(config, order, now).map(PlaybookAction::of),
    })
}

/// The accountability timeline of one order.
pub fn order_view(config: &Config, order: &OrderRecord, now: u64) -> OrderView {
    let trace_id = hex::encode(order_trace_id(&order.key));
    let (stage, _) = stage_and_next(&config.taxonomy, order);
    let milestones = config
        .taxonomy
        .milestones
        .iter()
        .filter(|m| !m.off_path || order.milestone(&m.name).is_some())
        .map(|m| {
            let state = order.milestone(&m.name);
            let reach = state.and_then(|s| s.reached.as_ref());
            let duration_ms = reach.map(|r| {
                let previous = config
                    .taxonomy
                    .milestones
                    .iter()
                    .filter(|p| p.name != m.name && !p.off_path)
                    .filter_map(|p| order.reached_at(&p.name).filter(|t| *t <= r.at_unix_nanos))
                    .max()
                    .unwrap_or(order.first_seen_unix_nanos);
                millis(r.at_unix_nanos.saturating_sub(previous))
            });
            let sla = order.slas.iter().find(|s| s.to == m.name);
            MilestoneView {
                name: m.name.clone(),
                owner: m.owner.clone(),
                state: order.milestone_status(&m.name),
                off_path: m.off_path,
                first_work_at: state.map(|s| rfc3339(s.first_work_unix_nanos)),
                reached_at: reach.map(|r| rfc3339(r.at_unix_nanos)),
                duration_ms,
                deadline: sla.and_then(|s| deadline_text(s.deadline_unix_nanos)),
                sla_status: sla.map(SlaState::status),
                system: reach.map(|r| r.service.clone()),
                actor: reach.and_then(|r| r.actor.clone()),
                source: reach.map(|r| SpanRef { trace_id: r.trace_id.clone(), span_id: r.span_id.clone() }),
                span_count: state.map_or(0, |s| s.span_count),
            }
        })
        .collect();
    OrderView {
        trace_url: config.api.trace_url(&trace_id),
        trace_id,
        order_id: order.key.clone(),
        status: order.status(),
        close_reason: order.close_reason.clone(),
        stage: stage.map(|m| m.name.clone()),
        next: next_action(config, order, now),
        sla_status: order.sla_status(now),
        dimensions: order.dimensions.clone(),
        first_seen: rfc3339(order.first_seen_unix_nanos),
        last_seen: rfc3339(order.last_seen_unix_nanos),
        span_count: order.span_count,
        open_exceptions: order.open_exceptions().count() as u64,
        milestones,
        exceptions: order.exceptions.iter().map(exception_view).collect(),
        slas: order
            .slas
            .iter()
            .map(|s| SlaView {
                target: s.target.clone(),
                from: s.from.clone(),
                to: s.to.clone(),
                started_at: rfc3339(s.started_at_unix_nanos),
                deadline: deadline_text(s.deadline_unix_nanos),
                allowed_ms: millis(s.allowed_nanos),
                status: s.status(),
                breached_at: s.breached_at_unix_nanos.map(rfc3339),
                reached_at: s.reached_at_unix_nanos.map(rfc3339),
                lateness_ms: s.lateness_nanos.map(millis),
                at_risk_at: s.at_risk_at_unix_nanos.map(rfc3339),
                risk_probability: s.at_risk_probability,
                risk_basis: s.at_risk_basis.clone(),
            })
            .collect(),
        ordered_quantity: order.ordered_quantity,
        shipped_quantity: order.shipped_quantity,
        fill_ratio: order.fill_ratio(),
    }
}
