//! Order records: what one span changes on an order (times, dimensions, quantities, milestones, exceptions),
//! what follows from reaching a milestone, closing an order, and making room among the orders held in memory.

use super::emit;
use super::events::Event;
use super::input::SpanInput;
use super::labels::Labels;
use super::output::Output;
use super::{attributes, Engine, Loader};
use crate::config::{Config, MilestoneId};
use crate::order::{ExceptionState, MilestoneState, OrderRecord, Reach};

/// The close reason of an order closed for want of news (`order_traces.idle_close_after`).
pub(crate) const IDLE: &str = "idle";

impl Engine {
    /// Updates the order's record with one span; returns the milestone whose reach the span set or moved earlier.
    ///
    /// Every update is a function of the spans' own times, not of the order they arrive in: a milestone is
    /// reached by the reaching span that ended first, an exception shows the details of its latest occurrence,
    /// a dimension the value of the span that started first. Two deliveries of the same spans in any order leave
    /// the same record.
    pub(crate) fn record(
        &mut self,
        key: &str,
        input: &SpanInput,
        labels: &Labels,
        now: u64,
        out: &mut Output,
    ) -> Option<MilestoneId> {
        let config = &self.config;
        let order = self.orders.get_mut(key).expect("order inserted by the caller");
        let span = &input.span;
        let start = if span.start_time_unix_nano > 0 { span.start_time_unix_nano } else { now };
        let end = span.end_time_unix_nano.max(start);
        let dimensions_changed = record_dimensions(config, input, start, end, order);
        order.span_count += 1;
        order.first_seen_unix_nanos =
            if order.first_seen_unix_nanos == 0 { start } else { order.first_seen_unix_nanos.min(start) };
        order.last_seen_unix_nanos = order.last_seen_unix_nanos.max(end);
        order.last_activity_unix_nanos = now;
        let actor = labels.actor.clone();
        let (trace_id, span_id) = (hex::encode(&span.trace_id), hex::encode(&span.span_id));
        let mut reach_moved = None;
        // Records name milestones, not indices, so that a taxonomy edit between restarts cannot re-label what was
        // recorded before; an order has at most one entry per milestone, so this scan is short.
        let milestone_name = labels.milestone.map(|m| config.taxonomy.milestones[m].name.clone());
        if let (Some(m), Some(name)) = (labels.milestone, &milestone_name) {
            let state = match order.milestones.iter_mut().position(|s| &s.name == name) {
                Some(i) => &mut order.milestones[i],
                None => {
                    // Kept in the taxonomy's order, so that the record does not depend on which system's span
                    // came first (a name an edited taxonomy no longer has sorts last).
                    let rank = |name: &str| config.taxonomy.milestone(name).unwrap_or(usize::MAX);
                    let at = order.milestones.iter().position(|s| rank(&s.name) > m).unwrap_or(order.milestones.len());
                    order.milestones.insert(
                        at,
                        MilestoneState {
                            name: name.clone(),
                            first_work_unix_nanos: start,
                            span_count: 0,
                            reached: None,
                            span_emitted: false,
                        },
                    );
                    &mut order.milestones[at]
                }
            };
            state.span_count += 1;
            state.first_work_unix_nanos = state.first_work_unix_nanos.min(start);
            let earlier = state.reached.as_ref().is_none_or(|r| {
                (end, trace_id.as_str(), span_id.as_str()) < (r.at_unix_nanos, r.trace_id.as_str(), r.span_id.as_str())
            });
            if labels.reaches && earlier {
                state.reached = Some(Reach {
                    at_unix_nanos: end,
                    trace_id: trace_id.clone(),
                    span_id: span_id.clone(),
                    service: input.resource.service_name.clone(),
                    actor: actor.clone(),
                });
                reach_moved = Some(m);
            }
        }
        for finding in labels.exception.iter().chain(&labels.findings) {
            self.stats.exceptions_recorded += 1;
            let class = config.taxonomy.classes[finding.class].name.clone();
            let opened = !order
                .exceptions
                .iter()
                .any(|e| e.signature == finding.signature && e.milestone == milestone_name && e.class == class);
            out.events.push(Event::ExceptionRecorded {
                order: key.to_string(),
                class: class.clone(),
                owner: finding.owner.clone(),
                milestone: milestone_name.clone(),
                signature: finding.signature.clone(),
                reason: finding.reason.clone(),
                system: input.resource.service_name.clone(),
                at_unix_nanos: end,
                dimensions: order.dimensions.clone(),
                opened,
            });
            self.insight.observations.push(super::insight::Observation {
                class: class.clone(),
                milestone: milestone_name.clone(),
                system: input.resource.service_name.clone(),
                reason: finding.reason.clone(),
                order: key.to_string(),
                at_unix_nanos: end,
            });
            let existing = order
                .exceptions
                .iter_mut()
                .find(|e| e.signature == finding.signature && e.milestone == milestone_name && e.class == class);
            match existing {
                Some(e) => {
                    e.count += 1;
                    e.first_seen_unix_nanos = e.first_seen_unix_nanos.min(start);
                    // The details are those of the occurrence that ended last.
                    if (end, span_id.as_str()) >= (e.last_seen_unix_nanos, e.span_id.as_str()) {
                        e.last_seen_unix_nanos = end;
                        e.reason = finding.reason.clone();
                        e.trace_id = trace_id.clone();
                        e.span_id = span_id.clone();
                        e.service = input.resource.service_name.clone();
                        e.actor = actor.clone();
                    }
                }
                None => order.exceptions.push(ExceptionState {
                    class,
                    owner: finding.owner.clone(),
                    milestone: milestone_name.clone(),
                    signature: finding.signature.clone(),
                    reason: finding.reason.clone(),
                    first_seen_unix_nanos: start,
                    last_seen_unix_nanos: end,
                    count: 1,
                    trace_id: trace_id.clone(),
                    span_id: span_id.clone(),
                    service: input.resource.service_name.clone(),
                    actor: actor.clone(),
                    resolved_at_unix_nanos: None,
                }),
            }
        }
        resolve_by_reach(order);
        if dimensions_changed {
            self.reschedule_risk_checks_of(key);
        }
        reach_moved
    }

    /// Everything that follows from `order` reaching milestone `m`.
    pub(crate) fn on_reached(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        self.transition_event(key, m, out);
        self.settle_slas(key, m, now, out);
        // Nothing is awaited of a cancelled order any more, so its clocks stop instead of breaching.
        if self.config.taxonomy.milestones[m].terminal {
            self.stop_clocks(key, now);
        } else {
            self.start_slas(key, m, now, out);
        }
        if self.config.conformance.enabled {
            self.check_conformance(key, m, now, out);
        }
    }

    fn transition_event(&mut self, key: &str, m: MilestoneId, out: &mut Output) {
        let config = &self.config;
        let Some(order) = self.orders.get(key) else { return };
        let name = &config.taxonomy.milestones[m].name;
        let Some(at) = order.reached_at(name) else { return };
        let previous = config
            .taxonomy
            .milestones
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != m && !p.off_path)
            .filter_map(|(i, p)| order.reached_at(&p.name).filter(|t| *t <= at).map(|t| (t, i)))
            .max();
        let since = previous.map_or(order.first_seen_unix_nanos, |(t, _)| t);
        out.events.push(Event::MilestoneReached {
            order: key.to_string(),
            milestone: m,
            previous: previous.map(|(_, i)| i),
            duration_nanos: at.saturating_sub(since),
            dimensions: order.dimensions.clone(),
        });
    }

    pub(crate) fn emit_milestone(&mut self, key: &str, m: MilestoneId, out: &mut Output) {
        let config = self.config.clone();
        let Some(order) = self.orders.get_mut(key) else { return };
        let name = &config.taxonomy.milestones[m].name;
        let Some(state) = order.milestones.iter_mut().find(|s| &s.name == name) else { return };
        if state.span_emitted {
            return;
        }
        state.span_emitted = true;
        if let Some(span) = emit::milestone_span(&config, order, m) {
            out.push(&self.own.resource, &self.own.scope, span);
            self.stats.milestone_spans_emitted += 1;
        }
        // The flag must reach the store, or an order read back after a restart or an eviction emits the span again.
        self.persistence.order_changed(key);
    }

    /// Emits the root span `order <key>` the first time the order is seen, so that its trace is a whole tree at
    /// every moment, findable by the root searches of Jaeger and Tempo while the order is open.
    pub(crate) fn emit_root(&mut self, key: &str, out: &mut Output) {
        let Some(order) = self.orders.get_mut(key) else { return };
        // An order closed before roots were emitted on first sight emitted its root at close.
        if order.root_emitted || order.is_closed() {
            return;
        }
        order.root_emitted = true;
        // The root goes out once, at first sight, and carries no recommendation: which span is seen first depends
        // on which system flushed first, and the root must not. The recommendation is on the breach, at-risk and
        // closing spans, which are decided by the spans' own times.
        out.push(&self.own.resource, &self.own.scope, emit::root_span(order));
        self.stats.root_spans_emitted += 1;
    }

    /// Closes an order: settles its milestones still waiting, emits the spans of milestones worked on but never
    /// reached, stops its clocks, and emits the closing span with the order's final state under the root.
    pub(crate) fn close(&mut self, key: &str, reason: String, now: u64, out: &mut Output) {
        let config = self.config.clone();
        if self.orders.get(key).is_none_or(OrderRecord::is_closed) {
            return;
        }
        // An order loaded from a store written before roots were emitted on first sight has none yet.
        self.emit_root(key, out);
        // Its milestones still settling settle now, before the close, so that their clocks start and settle.
        self.settle_all(key, now, out);
        let Some(order) = self.orders.get_mut(key) else { return };
        order.closed_at_unix_nanos = Some(now);
        order.close_reason = Some(reason);
        let unreached: Vec<MilestoneId> = order
            .milestones
            .iter()
            .filter(|s| !s.span_emitted)
            .filter_map(|s| config.taxonomy.milestone(&s.name))
            .collect();
        for m in unreached {
            self.emit_milestone(key, m, out);
        }
        // Nothing more is awaited of a closed order, so its clocks stop instead of breaching after the close.
        self.stop_clocks(key, now);
        let order = &self.orders[key];
        out.push(&self.own.resource, &self.own.scope, emit::closing_span(&config, order, now));
        out.events.push(Event::OrderClosed {
            order: key.to_string(),
            reason: order.close_reason.clone().unwrap_or_default(),
            fill_ratio: order.fill_ratio(),
            dimensions: order.dimensions.clone(),
        });
        self.stats.orders_closed += 1;
        self.closed.push_back(key.to_string());
        self.persistence.order_changed(key);
    }

    /// Makes room for one more order: evicts the oldest closed order, or else, when evicted orders can be read back,
    /// the open orders least recently active (a 64th of the hot set at once, so that the scan for them is paid
    /// once per many new orders), those with a milestone still settling only when there are no others. Orders
    /// with changes not yet committed stay. Returns whether there is room.
    pub(crate) fn make_room(&mut self) -> bool {
        if self.orders.len() < self.config.correlation.max_orders || self.evict_closed() {
            return true;
        }
        if self.loader.is_none() {
            return false;
        }
        // Orders with a milestone still settling are needed again within the detection delay: they go last.
        let settling = |o: &OrderRecord| o.milestones.iter().any(|m| m.reached.is_some() && !m.span_emitted);
        let evictable = |o: &&OrderRecord| !self.persistence.order_uncommitted(&o.key);
        let mut candidates: Vec<(u64, &String)> = self
            .orders
            .values()
            .filter(evictable)
            .filter(|o| !settling(o))
            .map(|o| (o.last_activity_unix_nanos, &o.key))
            .collect();
        if candidates.is_empty() {
            candidates = self.orders.values().filter(evictable).map(|o| (o.last_activity_unix_nanos, &o.key)).collect();
        }
        let batch = (self.config.correlation.max_orders / 64).clamp(1, candidates.len().max(1));
        if candidates.is_empty() {
            return false;
        }
        if candidates.len() > batch {
            candidates.select_nth_unstable(batch - 1);
            candidates.truncate(batch);
        }
        let evicted: Vec<String> = candidates.into_iter().map(|(_, key)| key.clone()).collect();
        for key in &evicted {
            // Its running clocks and settling milestones leave the in-memory indexes with it: the store's index of
            // wakes has the order, and the order is read back when its wake passes (`wake.rs`).
            if let Some(order) = self.orders.remove(key) {
                self.unindex(&order);
            }
        }
        self.stats.orders_evicted += evicted.len() as u64;
        self.cold = true;
        true
    }

    /// Brings `key` into memory if it is not there: read back from the loader if it was evicted. A span's order
    /// is read back even when every order in memory has changes not yet committed (`over_bound`): the hot set is
    /// then larger than `max_orders` until the next commit, by at most the orders of one group. A deadline or a
    /// settling milestone waits for the next tick instead, since any number of them may come due at once.
    pub(crate) fn warm(&mut self, key: &str, over_bound: bool) -> Warm {
        if self.orders.contains_key(key) {
            return Warm::Hot;
        }
        if !self.cold {
            return Warm::Missing;
        }
        let Some(Loader(load)) = self.loader.as_mut() else { return Warm::Missing };
        let order = match load(key) {
            Ok(Some(order)) => order,
            Ok(None) => return Warm::Missing,
            // Not knowing is not absence: a blank record in its place would overwrite the stored order.
            Err(_) => return Warm::Unreadable,
        };
        if !self.make_room() && !over_bound {
            return Warm::NoRoom;
        }
        if order.is_closed() {
            self.closed.push_back(order.key.clone());
        } else {
            // Its clocks and settling milestones left the indexes when it was evicted (or were never indexed, for
            // an order not loaded at startup); they come back at the times its wake was computed with.
            let read_back = self.read_back_time(&order);
            self.index_deadlines_known_since(&order, read_back);
            self.index_unsettled_due(&order, read_back);
        }
        self.stats.orders_loaded += 1;
        self.orders.insert(order.key.clone(), order);
        Warm::Hot
    }

    /// Makes room for a new order by forgetting the oldest closed one; the store still has it, and a span naming it
    /// again reads it back (when there is a loader). An order whose last changes are not yet committed is never
    /// evicted: its final state must reach the store first, or a restart would bring back a stale record.
    pub(crate) fn evict_closed(&mut self) -> bool {
        let mut kept = Vec::new();
        let mut evicted = false;
        while let Some(key) = self.closed.pop_front() {
            if self.persistence.order_uncommitted(&key) {
                kept.push(key);
                continue;
            }
            if self.orders.get(&key).is_some_and(OrderRecord::is_closed) {
                self.orders.remove(&key);
                self.stats.orders_evicted += 1;
                self.cold = true;
                evicted = true;
                break;
            }
        }
        for key in kept.into_iter().rev() {
            self.closed.push_front(key);
        }
        evicted
    }
}

/// Whether an order is in memory after [`Engine::warm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Warm {
    Hot,
    /// Neither in memory nor in the store: a new order.
    Missing,
    /// In the store, but memory is full of orders with changes not yet committed.
    NoRoom,
    /// The store could not be read (the loader logs why).
    Unreadable,
}

/// Resolves each exception that held its milestone up: one whose latest occurrence ended before the milestone was
/// reached. An exception shown by the very span that reaches its milestone (an approval made outside the system of
/// record), or occurring again after the reach, stays open; an SLA breach (dated at its deadline) is resolved by a
/// late reach. Conformance findings have a life of their own. Recomputed from the record, so the order in which
/// spans arrived does not matter.
fn resolve_by_reach(order: &mut OrderRecord) {
    let reached: Vec<(String, u64)> =
        order.milestones.iter().filter_map(|m| m.reached.as_ref().map(|r| (m.name.clone(), r.at_unix_nanos))).collect();
    for exception in order.exceptions.iter_mut() {
        if exception.signature.starts_with("conformance:") {
            continue;
        }
        let reach =
            exception.milestone.as_deref().and_then(|name| reached.iter().find(|(m, _)| m == name)).map(|(_, at)| *at);
        exception.resolved_at_unix_nanos = reach.filter(|at| exception.last_seen_unix_nanos < *at);
    }
}

/// Records the order's dimensions and quantities from one span (`start`, `end` its times): a dimension takes the
/// value of the span that started first, the ordered quantity that of the span that ended last, the shipped
/// quantity the largest reported. Returns whether a dimension's value changed.
fn record_dimensions(config: &Config, input: &SpanInput, start: u64, end: u64, order: &mut OrderRecord) -> bool {
    let mut changed = false;
    for dimension in &config.dimensions {
        let span_value = dimension.attributes.iter().find_map(|a| attributes::find(&input.span.attributes, a));
        let resource_attributes = input.resource.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let value = span_value
            .or_else(|| dimension.resource_attributes.iter().find_map(|a| attributes::find(resource_attributes, a)));
        let Some(value) = value.and_then(attributes::scalar_string).filter(|v| !v.trim().is_empty()) else { continue };
        // Values are labels and filters, so an overlong value is cut rather than allowed to bloat every record.
        let value: String = value.trim().chars().take(128).collect();
        let since = order.dimension_since.get(&dimension.name).copied();
        let earlier = match (order.dimensions.get(&dimension.name), since) {
            (None, _) => true,
            // A value recorded before start times were kept counts as the earliest.
            (Some(_), None) => false,
            (Some(current), Some(since)) => (start, &value) < (since, current),
        };
        if earlier {
            changed |= order.dimensions.get(&dimension.name) != Some(&value);
            order.dimensions.insert(dimension.name.clone(), value);
            order.dimension_since.insert(dimension.name.clone(), start);
        }
    }
    let quantity = |keys: &[String]| {
        keys.iter()
            .find_map(|k| attributes::find(&input.span.attributes, k))
            .and_then(attributes::number)
            .filter(|q| q.is_finite() && *q >= 0.0)
    };
    if let Some(ordered) = quantity(&config.kpis.ordered_quantity_attributes) {
        let later = match (order.ordered_quantity_at, order.ordered_quantity) {
            (Some(at), Some(current)) => end > at || end == at && ordered > current,
            _ => true,
        };
        if later {
            order.ordered_quantity = Some(ordered);
            order.ordered_quantity_at = Some(end);
        }
    }
    if let Some(shipped) = quantity(&config.kpis.shipped_quantity_attributes) {
        order.shipped_quantity = Some(order.shipped_quantity.map_or(shipped, |s| s.max(shipped)));
    }
    changed
}
