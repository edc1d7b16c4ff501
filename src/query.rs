//! Answers to "where is this order and who owns the next action": the accountability timeline of one order, lists
//! of orders filtered by stage, SLA status, owner, exception class, customer and time, and exceptions grouped by
//! class and owner.
//!
//! Pure functions over order records, taking `now` as an argument like the engine; the HTTP and gRPC APIs only
//! translate these views. Every list is bounded by its page size, and pages are cut by an opaque token.

use crate::config::Config;
use crate::engine::emit::{blocking_exception, stage_and_next};
use crate::engine::ids::order_trace_id;
use crate::order_state::{ExceptionState, OrderRecord, SlaStatus};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// An instant as RFC 3339 text (UTC, nanosecond precision when needed).
pub fn rfc3339(unix_nanos: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(unix_nanos))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix_nanos.to_string())
}

/// Parses RFC 3339 text into Unix nanoseconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t: jiff::Timestamp = text.parse().ok()?;
    u64::try_from(t.as_nanosecond()).ok()
}

fn millis(nanos: u64) -> u64 {
    nanos / 1_000_000
}

/// `open` or `closed`.
fn order_status(order: &OrderRecord) -> String {
    if order.is_closed() { "closed" } else { "open" }.into()
}

/// A deadline, unless it is "never" (a calendar with no working time left within three years).
fn deadline_text(nanos: u64) -> Option<String> {
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
    /// `open` or `closed`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    /// The furthest main-path milestone reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The next expected milestone, its owner and deadline: who owns the next action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<NextAction>,
    /// `breached` (a deadline passed and its milestone is still missing), `late` (every clock settled, some
    /// late), `on_time`, or `none` (no SLA clock started).
    pub sla_status: String,
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
    /// `reached`, `in_progress` (worked on, not reached) or `pending` (nothing seen yet).
    pub state: String,
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
    pub sla_status: Option<String>,
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
    /// `open` or `resolved`.
    pub status: String,
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
    /// `pending`, `met`, `breached`, `late` or `stopped` (the order closed or was cancelled first).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breached_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lateness_ms: Option<u64>,
}

/// The overall SLA status of an order at `now`.
pub fn sla_status(order: &OrderRecord, now: u64) -> &'static str {
    if order.slas.is_empty() {
        return "none";
    }
    let mut late = false;
    for s in &order.slas {
        match s.status() {
            SlaStatus::Breached => return "breached",
            // A deadline that passed before the engine's next check is breached all the same.
            SlaStatus::Pending if s.deadline_unix_nanos <= now => return "breached",
            SlaStatus::Late => late = true,
            _ => {}
        }
    }
    if late {
        "late"
    } else {
        "on_time"
    }
}

fn exception_view(e: &ExceptionState) -> ExceptionView {
    ExceptionView {
        class: e.class.clone(),
        owner: e.owner.clone(),
        milestone: e.milestone.clone(),
        reason: e.reason.clone(),
        signature: e.signature.clone(),
        status: if e.resolved_at_unix_nanos.is_some() { "resolved" } else { "open" }.into(),
        first_seen: rfc3339(e.first_seen_unix_nanos),
        last_seen: rfc3339(e.last_seen_unix_nanos),
        resolved_at: e.resolved_at_unix_nanos.map(rfc3339),
        count: e.count,
        system: e.service.clone(),
        actor: e.actor.clone(),
        source: SpanRef { trace_id: e.trace_id.clone(), span_id: e.span_id.clone() },
    }
}

fn next_action(config: &Config, order: &OrderRecord, now: u64) -> Option<NextAction> {
    let (_, next) = stage_and_next(config, order);
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
        owner: blocker.map_or(&next.owner, |b| &b.owner).clone(),
        milestone_owner: next.owner.clone(),
        blocked_by: blocker.map(|b| Blocker {
            class: b.class.clone(),
            owner: b.owner.clone(),
            reason: b.reason.clone(),
            since: rfc3339(b.first_seen_unix_nanos),
        }),
        deadline: deadline.and_then(deadline_text),
        overdue: deadline.is_some_and(|d| d <= now),
    })
}

/// The accountability timeline of one order.
pub fn order_view(config: &Config, order: &OrderRecord, now: u64) -> OrderView {
    let trace_id = hex::encode(order_trace_id(&order.key));
    let (stage, _) = stage_and_next(config, order);
    let reached = |name: &str| order.milestone(name).and_then(|m| m.reached.as_ref()).map(|r| r.at_unix_nanos);
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
                    .filter_map(|p| reached(&p.name).filter(|t| *t <= r.at_unix_nanos))
                    .max()
                    .unwrap_or(order.first_seen_unix_nanos);
                millis(r.at_unix_nanos.saturating_sub(previous))
            });
            let sla = order.slas.iter().find(|s| s.to == m.name);
            MilestoneView {
                name: m.name.clone(),
                owner: m.owner.clone(),
                state: match (state, reach) {
                    (_, Some(_)) => "reached",
                    (Some(_), None) => "in_progress",
                    (None, None) => "pending",
                }
                .into(),
                off_path: m.off_path,
                first_work_at: state.map(|s| rfc3339(s.first_work_unix_nanos)),
                reached_at: reach.map(|r| rfc3339(r.at_unix_nanos)),
                duration_ms,
                deadline: sla.and_then(|s| deadline_text(s.deadline_unix_nanos)),
                sla_status: sla.map(|s| s.status().as_str().to_string()),
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
        status: order_status(order),
        close_reason: order.close_reason.clone(),
        stage: stage.map(|m| m.name.clone()),
        next: next_action(config, order, now),
        sla_status: sla_status(order, now).into(),
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
                status: s.status().as_str().into(),
                breached_at: s.breached_at_unix_nanos.map(rfc3339),
                reached_at: s.reached_at_unix_nanos.map(rfc3339),
                lateness_ms: s.lateness_nanos.map(millis),
            })
            .collect(),
        ordered_quantity: order.ordered_quantity,
        shipped_quantity: order.shipped_quantity,
        fill_ratio: order.fill_ratio(),
    }
}

/// One line of a list of orders.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderSummary {
    pub order_id: String,
    pub trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<NextAction>,
    pub sla_status: String,
    pub open_exceptions: u64,
    /// Classes of the open exceptions.
    pub exception_classes: Vec<String>,
    pub dimensions: BTreeMap<String, String>,
    pub first_seen: String,
    pub last_seen: String,
}

/// Filters of a list of orders; every field set must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderFilter {
    pub stage: Option<String>,
    pub sla_status: Option<String>,
    /// Owner of the next action or of an open exception.
    pub owner: Option<String>,
    /// Class of an open exception.
    pub exception_class: Option<String>,
    /// The `customer` dimension.
    pub customer: Option<String>,
    /// `open` or `closed`.
    pub status: Option<String>,
    /// First seen at or after (Unix nanoseconds).
    pub since: Option<u64>,
    /// First seen before.
    pub until: Option<u64>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("invalid page token")]
    PageToken,
    #[error("invalid {field}: {reason}")]
    Argument { field: &'static str, reason: String },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderPage {
    pub orders: Vec<OrderSummary>,
    /// Pass as `page_token` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// Orders sort newest first (by first span), then by key; the token is the sort key of the last order returned.
fn sort_key(order: &OrderRecord) -> (std::cmp::Reverse<u64>, &str) {
    (std::cmp::Reverse(order.first_seen_unix_nanos), order.key.as_str())
}

fn encode_token(order: &OrderRecord) -> String {
    hex::encode(format!("{}\n{}", order.first_seen_unix_nanos, order.key))
}

fn decode_token(token: &str) -> Result<(u64, String), QueryError> {
    let bytes = hex::decode(token).map_err(|_| QueryError::PageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| QueryError::PageToken)?;
    let (first_seen, key) = text.split_once('\n').ok_or(QueryError::PageToken)?;
    Ok((first_seen.parse().map_err(|_| QueryError::PageToken)?, key.to_string()))
}

/// Checks a page size against the configured bound; 0 means the default of 100.
pub fn page_size(config: &Config, requested: usize) -> Result<usize, QueryError> {
    match requested {
        0 => Ok(100.min(config.api.max_page_size)),
        n if n > config.api.max_page_size => Err(QueryError::Argument {
            field: "page_size",
            reason: format!("at most {} (api.max_page_size)", config.api.max_page_size),
        }),
        n => Ok(n),
    }
}

fn matches(config: &Config, order: &OrderRecord, filter: &OrderFilter, now: u64) -> bool {
    let (stage, next) = stage_and_next(config, order);
    if let Some(want) = &filter.stage {
        if stage.map_or("none", |m| m.name.as_str()) != want {
            return false;
        }
    }
    if let Some(want) = &filter.sla_status {
        if sla_status(order, now) != want {
            return false;
        }
    }
    if let Some(want) = &filter.owner {
        let next_owner =
            next.is_some_and(|m| &m.owner == want) || next_action(config, order, now).is_some_and(|n| &n.owner == want);
        if !next_owner && !order.open_exceptions().any(|e| &e.owner == want) {
            return false;
        }
    }
    if let Some(want) = &filter.exception_class {
        if !order.open_exceptions().any(|e| &e.class == want) {
            return false;
        }
    }
    if let Some(want) = &filter.customer {
        if order.dimensions.get("customer") != Some(want) {
            return false;
        }
    }
    if let Some(want) = &filter.status {
        if (want == "closed") != order.is_closed() {
            return false;
        }
    }
    filter.since.is_none_or(|s| order.first_seen_unix_nanos >= s)
        && filter.until.is_none_or(|u| order.first_seen_unix_nanos < u)
}

/// One page of the orders that match `filter`.
pub fn list_orders<'a>(
    config: &Config,
    orders: impl Iterator<Item = &'a OrderRecord>,
    filter: &OrderFilter,
    page_size: usize,
    page_token: &str,
    now: u64,
) -> Result<OrderPage, QueryError> {
    let after = if page_token.is_empty() { None } else { Some(decode_token(page_token)?) };
    let mut selected: Vec<&OrderRecord> = orders
        .filter(|o| match &after {
            None => true,
            Some((first_seen, key)) => sort_key(o) > (std::cmp::Reverse(*first_seen), key.as_str()),
        })
        .filter(|o| matches(config, o, filter, now))
        .collect();
    // This runs on the engine thread: partitioning around the page's end is linear, and only the page itself is
    // sorted, instead of every matching order for every page.
    let more = selected.len() > page_size;
    if more {
        selected.select_nth_unstable_by(page_size, |a, b| sort_key(a).cmp(&sort_key(b)));
        selected.truncate(page_size);
    }
    selected.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    let next_page_token =
        if more { selected.last().map(|o| encode_token(o)).unwrap_or_default() } else { String::new() };
    let orders = selected
        .into_iter()
        .map(|o| {
            let trace_id = hex::encode(order_trace_id(&o.key));
            let classes: BTreeSet<String> = o.open_exceptions().map(|e| e.class.clone()).collect();
            OrderSummary {
                order_id: o.key.clone(),
                trace_url: config.api.trace_url(&trace_id),
                trace_id,
                status: order_status(o),
                stage: stage_and_next(config, o).0.map(|m| m.name.clone()),
                next: next_action(config, o, now),
                sla_status: sla_status(o, now).into(),
                open_exceptions: o.open_exceptions().count() as u64,
                exception_classes: classes.into_iter().collect(),
                dimensions: o.dimensions.clone(),
                first_seen: rfc3339(o.first_seen_unix_nanos),
                last_seen: rfc3339(o.last_seen_unix_nanos),
            }
        })
        .collect();
    Ok(OrderPage { orders, next_page_token })
}

/// Filters of the exception summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExceptionFilter {
    pub class: Option<String>,
    pub owner: Option<String>,
    pub milestone: Option<String>,
    /// Include resolved exceptions too (default: open only).
    pub include_resolved: bool,
    /// Last seen at or after.
    pub since: Option<u64>,
    /// Last seen before.
    pub until: Option<u64>,
}

/// Exceptions of one class and owner.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExceptionGroup {
    pub class: String,
    pub owner: String,
    pub open: u64,
    pub resolved: u64,
    /// Distinct orders affected.
    pub orders: u64,
    /// Occurrences, counting repeats.
    pub occurrences: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_open_since: Option<String>,
    /// Exceptions by milestone (`-` when none).
    pub by_milestone: BTreeMap<String, u64>,
    /// Up to `sample_size` affected order ids, oldest open first.
    pub sample_orders: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExceptionSummary {
    pub groups: Vec<ExceptionGroup>,
    /// Groups left out because of the page size.
    pub groups_omitted: u64,
}

/// Exceptions grouped by class and owner, most open first.
pub fn list_exceptions<'a>(
    orders: impl Iterator<Item = &'a OrderRecord>,
    filter: &ExceptionFilter,
    max_groups: usize,
    sample_size: usize,
) -> ExceptionSummary {
    struct Acc {
        group: ExceptionGroup,
        order_set: BTreeSet<String>,
        oldest_open: Option<u64>,
        samples: Vec<(u64, String)>,
    }
    let mut groups: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for order in orders {
        for e in &order.exceptions {
            let open = e.resolved_at_unix_nanos.is_none();
            if (!open && !filter.include_resolved)
                || filter.class.as_ref().is_some_and(|c| c != &e.class)
                || filter.owner.as_ref().is_some_and(|o| o != &e.owner)
                || filter.milestone.as_ref().is_some_and(|m| Some(m) != e.milestone.as_ref())
                || filter.since.is_some_and(|s| e.last_seen_unix_nanos < s)
                || filter.until.is_some_and(|u| e.last_seen_unix_nanos >= u)
            {
                continue;
            }
            let acc = groups.entry((e.class.clone(), e.owner.clone())).or_insert_with(|| Acc {
                group: ExceptionGroup {
                    class: e.class.clone(),
                    owner: e.owner.clone(),
                    open: 0,
                    resolved: 0,
                    orders: 0,
                    occurrences: 0,
                    oldest_open_since: None,
                    by_milestone: BTreeMap::new(),
                    sample_orders: Vec::new(),
                },
                order_set: BTreeSet::new(),
                oldest_open: None,
                samples: Vec::new(),
            });
            if open {
                acc.group.open += 1;
                acc.oldest_open =
                    Some(acc.oldest_open.map_or(e.first_seen_unix_nanos, |t| t.min(e.first_seen_unix_nanos)));
            } else {
                acc.group.resolved += 1;
            }
            acc.group.occurrences += e.count;
            *acc.group.by_milestone.entry(e.milestone.clone().unwrap_or_else(|| "-".into())).or_default() += 1;
            if acc.order_set.insert(order.key.clone()) {
                // Open ones sort first, then the oldest; the sample stays bounded while scanning.
                let rank = if open { e.first_seen_unix_nanos } else { u64::MAX };
                acc.samples.push((rank, order.key.clone()));
                if acc.samples.len() > sample_size * 4 {
                    acc.samples.sort();
                    acc.samples.truncate(sample_size);
                }
            }
        }
    }
    let mut out: Vec<ExceptionGroup> = groups
        .into_values()
        .map(|mut acc| {
            acc.group.orders = acc.order_set.len() as u64;
            acc.group.oldest_open_since = acc.oldest_open.map(rfc3339);
            acc.samples.sort();
            acc.group.sample_orders = acc.samples.into_iter().take(sample_size).map(|(_, k)| k).collect();
            acc.group
        })
        .collect();
    out.sort_by(|a, b| b.open.cmp(&a.open).then(b.occurrences.cmp(&a.occurrences)).then(a.class.cmp(&b.class)));
    let omitted = out.len().saturating_sub(max_groups) as u64;
    out.truncate(max_groups);
    ExceptionSummary { groups: out, groups_omitted: omitted }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_config;
    use crate::order_state::{MilestoneState, Reach, SlaState};

    const H: u64 = 3_600_000_000_000;
    const T0: u64 = 1_795_000_000_000_000_000;

    fn reach(order: &mut OrderRecord, name: &str, at: u64, service: &str) {
        order.milestones.push(MilestoneState {
            name: name.into(),
            first_work_unix_nanos: at,
            span_count: 1,
            reached: Some(Reach {
                at_unix_nanos: at,
                trace_id: "aa".repeat(16),
                span_id: "bb".repeat(8),
                service: service.into(),
                actor: None,
            }),
            span_emitted: true,
        });
    }

    fn exception(class: &str, owner: &str, milestone: &str, open: bool) -> ExceptionState {
        ExceptionState {
            class: class.into(),
            owner: owner.into(),
            milestone: Some(milestone.into()),
            signature: format!("{class}-{milestone}"),
            reason: "r".into(),
            first_seen_unix_nanos: T0,
            last_seen_unix_nanos: T0,
            count: 2,
            trace_id: "aa".repeat(16),
            span_id: "bb".repeat(8),
            service: "erp".into(),
            actor: None,
            resolved_at_unix_nanos: (!open).then_some(T0 + H),
        }
    }

    fn order(key: &str, first_seen: u64) -> OrderRecord {
        let mut o = OrderRecord::new(key.into());
        o.first_seen_unix_nanos = first_seen;
        o.last_seen_unix_nanos = first_seen + H;
        o
    }

    fn stalled() -> OrderRecord {
        let mut o = order("SO-1", T0);
        reach(&mut o, "order_capture", T0, "erp");
        reach(&mut o, "credit_approval", T0 + H, "erp");
        reach(&mut o, "inventory_allocation", T0 + 2 * H, "erp");
        reach(&mut o, "pick_release", T0 + 3 * H, "wms");
        o.dimensions.insert("customer".into(), "C-1".into());
        o.exceptions.push(exception("integration", "integration-team", "shipment_confirmation", true));
        o.slas.push(SlaState {
            target: "pick_pack_ship".into(),
            from: "pick_release".into(),
            to: "shipment_confirmation".into(),
            started_at_unix_nanos: T0 + 3 * H,
            deadline_unix_nanos: T0 + 33 * H,
            allowed_nanos: 30 * H,
            breached_at_unix_nanos: None,
            reached_at_unix_nanos: None,
            lateness_nanos: None,
            breach_span_emitted: false,
            stopped_at_unix_nanos: None,
        });
        o
    }

    #[test]
    fn the_timeline_names_stage_next_owner_deadline_and_durations() {
        let config = default_config();
        let view = order_view(&config, &stalled(), T0 + 10 * H);
        assert_eq!(view.stage.as_deref(), Some("pick_release"));
        let next = view.next.as_ref().unwrap();
        assert_eq!((next.milestone.as_str(), next.owner.as_str()), ("pick_pack", "warehouse-operations"));
        assert_eq!(next.blocked_by, None);
        assert_eq!(next.deadline, None, "no clock ends at pick_pack");
        assert_eq!(view.sla_status, "on_time");
        assert_eq!(view.trace_url.as_deref(), Some(format!("http://localhost:16686/trace/{}", view.trace_id).as_str()));
        let release = view.milestones.iter().find(|m| m.name == "pick_release").unwrap();
        assert_eq!(release.duration_ms, Some(3_600_000));
        assert_eq!(release.system.as_deref(), Some("wms"));
        let ship = view.milestones.iter().find(|m| m.name == "shipment_confirmation").unwrap();
        assert_eq!(ship.state, "pending");
        assert_eq!(ship.deadline.as_deref(), Some(rfc3339(T0 + 33 * H).as_str()));
        assert!(view.milestones.iter().all(|m| m.name != "customer_notification"), "off-path and untouched");
        // Past the deadline, the order counts as breached even before the engine's check ran.
        assert_eq!(order_view(&config, &stalled(), T0 + 34 * H).sla_status, "breached");
    }

    #[test]
    fn an_open_exception_on_the_awaited_milestone_owns_the_next_action() {
        let config = default_config();
        let mut o = stalled();
        reach(&mut o, "pick_pack", T0 + 4 * H, "wms");
        let mut breach = exception("execution", "transport-logistics", "shipment_confirmation", true);
        breach.signature = "sla:pick_pack_ship".into();
        breach.first_seen_unix_nanos = T0 - H;
        o.exceptions.push(breach);
        let next = order_view(&config, &o, T0 + 5 * H).next.unwrap();
        assert_eq!(next.milestone, "shipment_confirmation");
        assert_eq!(next.milestone_owner, "transport-logistics");
        assert_eq!(next.owner, "integration-team", "the mapping failure blocks it, not the SLA breach it caused");
        assert_eq!(next.blocked_by.unwrap().class, "integration");
        assert_eq!(next.deadline.as_deref(), Some(rfc3339(T0 + 33 * H).as_str()));
    }

    #[test]
    fn lists_filter_and_paginate_without_gaps_or_repeats() {
        let config = default_config();
        let mut orders: Vec<OrderRecord> = (0..25).map(|i| order(&format!("SO-{i:02}"), T0 + i * H)).collect();
        orders.push(stalled());
        let filter = OrderFilter::default();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = list_orders(&config, orders.iter(), &filter, 10, &token, T0).unwrap();
            assert!(page.orders.len() <= 10);
            seen.extend(page.orders.iter().map(|o| o.order_id.clone()));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 26);
        assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 26);
        assert_eq!(seen[0], "SO-24", "newest first");

        let by_owner = OrderFilter { owner: Some("integration-team".into()), ..Default::default() };
        let page = list_orders(&config, orders.iter(), &by_owner, 10, "", T0).unwrap();
        assert_eq!(page.orders.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), ["SO-1"]);
        let by_stage =
            OrderFilter { stage: Some("pick_release".into()), customer: Some("C-1".into()), ..Default::default() };
        assert_eq!(list_orders(&config, orders.iter(), &by_stage, 10, "", T0).unwrap().orders.len(), 1);
        let by_class = OrderFilter { exception_class: Some("policy".into()), ..Default::default() };
        assert!(list_orders(&config, orders.iter(), &by_class, 10, "", T0).unwrap().orders.is_empty());
        let range = OrderFilter { since: Some(T0 + 20 * H), until: Some(T0 + 22 * H), ..Default::default() };
        assert_eq!(list_orders(&config, orders.iter(), &range, 10, "", T0).unwrap().orders.len(), 2);
        assert_eq!(list_orders(&config, orders.iter(), &filter, 10, "zz", T0), Err(QueryError::PageToken));
        assert!(page_size(&config, 1001).is_err());
        assert_eq!(page_size(&config, 0), Ok(100));
    }

    #[test]
    fn exceptions_group_by_class_and_owner_with_open_first() {
        let mut a = order("SO-A", T0);
        a.exceptions.push(exception("policy", "commercial-controls", "pricing_approval", true));
        a.exceptions.push(exception("integration", "integration-team", "shipment_confirmation", false));
        let mut b = order("SO-B", T0);
        b.exceptions.push(exception("policy", "commercial-controls", "pricing_approval", true));
        let summary = list_exceptions([a.clone(), b.clone()].iter(), &ExceptionFilter::default(), 10, 5);
        assert_eq!(summary.groups.len(), 1, "resolved ones are left out by default");
        let g = &summary.groups[0];
        assert_eq!((g.class.as_str(), g.open, g.orders, g.occurrences), ("policy", 2, 2, 4));
        assert_eq!(g.sample_orders, ["SO-A", "SO-B"]);
        let all = ExceptionFilter { include_resolved: true, ..Default::default() };
        let summary = list_exceptions([a, b].iter(), &all, 1, 5);
        assert_eq!(summary.groups.len(), 1);
        assert_eq!(summary.groups_omitted, 1);
    }
}
