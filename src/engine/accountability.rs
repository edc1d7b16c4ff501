//! What happens when a milestone is reached, and when one is not: SLA clocks start, settle and breach;
//! conformance checks compare the milestone with the taxonomy's order; events report transitions.
//!
//! Deadlines live in the order records (`OrderRecord::slas`), which the store persists; the in-memory index
//! `Engine::deadlines` is rebuilt from them at startup, so a restart neither loses a pending deadline nor reports
//! a breach twice (a breach sets `breached_at` once, and a breached clock is never put back in the index).

use super::emit::{self, keys};
use super::events::Event;
use super::ids;
use super::{Engine, Output};
use crate::config::MilestoneId;
use crate::order_state::{ExceptionState, OrderRecord, SlaState};
use opentelemetry_proto::tonic::trace::v1::span::Event as SpanEvent;

/// Milestone `m`'s reach time, if reached.
fn reached_at(order: &OrderRecord, name: &str) -> Option<u64> {
    order.milestone(name).and_then(|s| s.reached.as_ref()).map(|r| r.at_unix_nanos)
}

fn nanos_to_rfc3339(nanos: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos)).map(|t| t.to_string()).unwrap_or_else(|_| nanos.to_string())
}

/// The labels of a finding span: the milestone it concerns and the exception, owned by the milestone's owner.
fn finding_labels(
    milestone: &str,
    owner: &str,
    class: &str,
    reason: &str,
) -> [opentelemetry_proto::tonic::common::v1::KeyValue; 5] {
    [
        emit::attr_string(keys::MILESTONE, milestone),
        emit::attr_string(keys::MILESTONE_OWNER, owner),
        emit::attr_string(keys::EXCEPTION_CLASS, class),
        emit::attr_string(keys::EXCEPTION_OWNER, owner),
        emit::attr_string(keys::EXCEPTION_REASON, reason),
    ]
}

impl Engine {
    /// Puts every running SLA clock of `order` into the deadline index; used when state is loaded. The hold
    /// after startup (`check_deadlines`) gives milestones still on their way, in a collector's retry queue say,
    /// the detection delay to arrive before their clocks are judged.
    pub(super) fn index_deadlines(&mut self, order: &OrderRecord) {
        if order.is_closed() {
            return;
        }
        for state in &order.slas {
            let pending = state.reached_at_unix_nanos.is_none()
                && state.breached_at_unix_nanos.is_none()
                && state.stopped_at_unix_nanos.is_none();
            if pending && state.deadline_unix_nanos != u64::MAX {
                if let Some(target) = self.config.sla.targets.iter().position(|t| t.name == state.target) {
                    self.schedule(&order.key, target, state.deadline_unix_nanos, 0);
                }
            }
        }
    }

    /// Schedules the breach check of a clock: at its deadline plus the detection delay, but never sooner than the
    /// detection delay after the clock became known, so that a milestone whose span arrives a moment after the
    /// one that started the clock (or a backfill of old spans) is not judged before it could arrive.
    fn schedule(&mut self, key: &str, target: usize, deadline: u64, known_since: u64) {
        let delay = u64::try_from(self.config.sla.detection_delay.as_nanos()).unwrap_or(u64::MAX);
        let due = deadline.max(known_since).saturating_add(delay);
        self.deadlines.insert((due, key.to_string(), target));
        self.due.insert((key.to_string(), target), due);
    }

    fn unschedule(&mut self, key: &str, target: usize) {
        if let Some(due) = self.due.remove(&(key.to_string(), target)) {
            self.deadlines.remove(&(due, key.to_string(), target));
        }
    }

    /// Everything that follows from `order` reaching milestone `m`.
    pub(super) fn on_reached(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        self.transition_event(key, m, out);
        self.settle_slas(key, m, now, out);
        // Nothing is awaited of a cancelled order any more, so its clocks stop instead of breaching.
        if self.config.taxonomy.milestones[m].terminal {
            self.stop_clocks(key, now);
        } else {
            self.start_slas(key, m, now, out);
        }
        if self.config.conformance.enabled {
            self.check_conformance(key, m, out);
        }
    }

    /// Stops the running clocks of an order that closed or reached a terminal milestone.
    pub(super) fn stop_clocks(&mut self, key: &str, now: u64) {
        let Some(order) = self.orders.get_mut(key) else { return };
        let mut stopped = Vec::new();
        for state in order.slas.iter_mut() {
            if state.reached_at_unix_nanos.is_none()
                && state.breached_at_unix_nanos.is_none()
                && state.stopped_at_unix_nanos.is_none()
            {
                state.stopped_at_unix_nanos = Some(now);
                stopped.push(state.target.clone());
            }
        }
        if stopped.is_empty() {
            return;
        }
        self.dirty_orders.insert(key.to_string());
        for name in stopped {
            if let Some(target) = self.config.sla.targets.iter().position(|t| t.name == name) {
                self.unschedule(key, target);
            }
        }
    }

    /// Breaches every deadline that has passed by `now`.
    pub(super) fn check_deadlines(&mut self, now: u64, out: &mut Output) {
        let delay = u64::try_from(self.config.sla.detection_delay.as_nanos()).unwrap_or(u64::MAX);
        let started = *self.first_tick.get_or_insert(now);
        if now < started.saturating_add(delay) {
            return;
        }
        while let Some(first) = self.deadlines.first() {
            if first.0 > now {
                break;
            }
            let (_, key, target) = self.deadlines.pop_first().expect("first exists");
            self.due.remove(&(key.clone(), target));
            self.breach(&key, target, now, out);
        }
    }

    fn transition_event(&mut self, key: &str, m: MilestoneId, out: &mut Output) {
        let config = &self.config;
        let Some(order) = self.orders.get(key) else { return };
        let name = &config.taxonomy.milestones[m].name;
        let Some(at) = reached_at(order, name) else { return };
        let previous = config
            .taxonomy
            .milestones
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != m && !p.off_path)
            .filter_map(|(i, p)| reached_at(order, &p.name).filter(|t| *t <= at).map(|t| (t, i)))
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

    /// Starts the clocks of targets that begin at `m`.
    fn start_slas(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let config = self.config.clone();
        for (i, target) in config.sla.targets.iter().enumerate().filter(|(_, t)| t.from == m) {
            let Some(order) = self.orders.get_mut(key) else { return };
            if order.sla(&target.name).is_some() {
                continue;
            }
            let Some(start) = reached_at(order, &config.taxonomy.milestones[m].name) else { return };
            let (deadline, within) = target.deadline(start, &order.dimensions);
            order.slas.push(SlaState {
                target: target.name.clone(),
                from: config.taxonomy.milestones[target.from].name.clone(),
                to: config.taxonomy.milestones[target.to].name.clone(),
                started_at_unix_nanos: start,
                deadline_unix_nanos: deadline,
                allowed_nanos: u64::try_from(within.as_nanos()).unwrap_or(u64::MAX),
                breached_at_unix_nanos: None,
                reached_at_unix_nanos: None,
                lateness_nanos: None,
                breach_span_emitted: false,
                stopped_at_unix_nanos: None,
            });
            self.dirty_orders.insert(key.to_string());
            // The awaited milestone may have arrived first: spans of different systems arrive out of order.
            if let Some(to_at) = reached_at(order, &config.taxonomy.milestones[target.to].name) {
                self.settle(key, i, to_at, now, out);
            } else if deadline != u64::MAX {
                self.schedule(key, i, deadline, now);
            }
        }
    }

    /// Settles the clocks of targets that end at `m`.
    fn settle_slas(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let Some(order) = self.orders.get(key) else { return };
        let Some(at) = reached_at(order, &config.taxonomy.milestones[m].name) else { return };
        for (i, target) in config.sla.targets.iter().enumerate().filter(|(_, t)| t.to == m) {
            let running = self
                .orders
                .get(key)
                .and_then(|o| o.sla(&target.name))
                .is_some_and(|s| s.reached_at_unix_nanos.is_none() && s.stopped_at_unix_nanos.is_none());
            if running {
                self.settle(key, i, at, now, out);
            }
        }
    }

    fn settle(&mut self, key: &str, target: usize, at: u64, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let t = &config.sla.targets[target];
        let Some(order) = self.orders.get_mut(key) else { return };
        let Some(state) = order.slas.iter_mut().find(|s| s.target == t.name) else { return };
        state.reached_at_unix_nanos = Some(at);
        let late = at > state.deadline_unix_nanos;
        if late {
            state.lateness_nanos = Some(at - state.deadline_unix_nanos);
        }
        let duration = at.saturating_sub(state.started_at_unix_nanos);
        let lateness = state.lateness_nanos;
        let already_breached = state.breached_at_unix_nanos.is_some();
        self.dirty_orders.insert(key.to_string());
        self.unschedule(key, target);
        // A milestone that arrives late before the deadline check ran is still a breach, reported once, and
        // resolved at once.
        if late && !already_breached {
            self.breach(key, target, now, out);
        }
        let Some(order) = self.orders.get(key) else { return };
        out.events.push(Event::SlaSettled {
            order: key.to_string(),
            target,
            duration_nanos: duration,
            lateness_nanos: lateness,
            dimensions: order.dimensions.clone(),
        });
    }

    fn breach(&mut self, key: &str, target: usize, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let t = &config.sla.targets[target];
        let awaited = &config.taxonomy.milestones[t.to];
        let Some(order) = self.orders.get_mut(key) else { return };
        let Some(state) = order.slas.iter_mut().find(|s| s.target == t.name) else { return };
        if state.breached_at_unix_nanos.is_some() || state.stopped_at_unix_nanos.is_some() {
            return;
        }
        state.breached_at_unix_nanos = Some(now);
        state.breach_span_emitted = true;
        let state = state.clone();
        let class = config.taxonomy.classes[t.class].name.clone();
        let reason = format!(
            "{} overdue: not reached within {} of {} (due {})",
            awaited.name,
            humantime::format_duration(std::time::Duration::from_nanos(state.allowed_nanos)),
            state.from,
            nanos_to_rfc3339(state.deadline_unix_nanos)
        );
        let signature = format!("sla:{}", t.name);
        let span_id = ids::finding_span_id(key, &signature);
        order.exceptions.push(ExceptionState {
            class: class.clone(),
            owner: awaited.owner.clone(),
            milestone: Some(awaited.name.clone()),
            signature: signature.clone(),
            reason: reason.clone(),
            first_seen_unix_nanos: state.deadline_unix_nanos,
            last_seen_unix_nanos: state.deadline_unix_nanos,
            count: 1,
            trace_id: hex::encode(ids::order_trace_id(key)),
            span_id: hex::encode(span_id),
            service: config.order_traces.service_name.clone(),
            actor: None,
            resolved_at_unix_nanos: state.reached_at_unix_nanos,
        });
        self.stats.sla_breaches += 1;
        self.stats.exceptions_recorded += 1;
        self.dirty_orders.insert(key.to_string());

        let mut span = emit::finding_span(
            key,
            &signature,
            format!("{} overdue", awaited.name),
            state.started_at_unix_nanos,
            state.deadline_unix_nanos,
        );
        span.attributes.extend(finding_labels(&awaited.name, &awaited.owner, &class, &reason));
        span.attributes.extend([
            emit::attr_string("order.sla.target", &t.name),
            emit::attr_string("order.sla.from", &state.from),
            emit::attr_string("order.sla.deadline", &nanos_to_rfc3339(state.deadline_unix_nanos)),
            emit::attr_int("order.sla.allowed_ms", (state.allowed_nanos / 1_000_000) as i64),
        ]);
        span.events.push(SpanEvent {
            time_unix_nano: now.max(state.deadline_unix_nanos),
            name: "sla.breach.detected".into(),
            ..Default::default()
        });
        span.status = Some(emit::error_status(format!("{reason}; next action owned by {}", awaited.owner)));
        let dimensions = self.orders.get(key).map(|o| o.dimensions.clone()).unwrap_or_default();
        out.events.push(Event::SlaBreached {
            order: key.to_string(),
            target,
            deadline_unix_nanos: state.deadline_unix_nanos,
            detected_unix_nanos: now,
            owner: awaited.owner.clone(),
            dimensions,
        });
        self.emit_finding(key, span, &awaited.name, &awaited.owner, class, signature, reason, out);
    }

    /// Emits the span of a finding and reports it as an exception event.
    #[allow(clippy::too_many_arguments)]
    fn emit_finding(
        &mut self,
        key: &str,
        span: opentelemetry_proto::tonic::trace::v1::Span,
        milestone: &str,
        owner: &str,
        class: String,
        signature: String,
        reason: String,
        out: &mut Output,
    ) {
        out.push(&self.own_resource, &self.own_scope, span);
        self.stats.finding_spans_emitted += 1;
        let dimensions = self.orders.get(key).map(|o| o.dimensions.clone()).unwrap_or_default();
        out.events.push(Event::ExceptionRecorded {
            order: key.to_string(),
            class,
            owner: owner.to_string(),
            milestone: Some(milestone.to_string()),
            signature,
            reason,
            dimensions,
        });
    }

    /// Required main-path milestones before `m` that were not reached at or before `m` was.
    fn missing_predecessors(&self, order: &OrderRecord, m: MilestoneId) -> Vec<MilestoneId> {
        let milestones = &self.config.taxonomy.milestones;
        if milestones[m].off_path {
            return Vec::new();
        }
        let Some(at) = reached_at(order, &milestones[m].name) else { return Vec::new() };
        (0..m)
            .filter(|p| !milestones[*p].off_path && !milestones[*p].skippable)
            .filter(|p| reached_at(order, &milestones[*p].name).is_none_or(|t| t > at))
            .collect()
    }

    fn check_conformance(&mut self, key: &str, m: MilestoneId, out: &mut Output) {
        let config = self.config.clone();
        let milestones = &config.taxonomy.milestones;
        let Some(order) = self.orders.get(key) else { return };
        let Some(at) = reached_at(order, &milestones[m].name) else { return };
        let mut findings: Vec<(MilestoneId, String, String)> = Vec::new();
        let missing = self.missing_predecessors(order, m);
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|p| milestones[*p].name.as_str()).collect();
            findings.push((
                m,
                format!("conformance:{}", milestones[m].name),
                format!("{} reached before {}", milestones[m].name, names.join(", ")),
            ));
        }
        // A milestone that completes the predecessors of a later one, with an earlier time, shows the later one
        // merely arrived first: its finding is resolved.
        let mut resolved = Vec::new();
        for (later, milestone) in milestones.iter().enumerate().skip(m + 1) {
            let signature = format!("conformance:{}", milestone.name);
            let open = order.open_exceptions().any(|e| e.signature == signature);
            if open && self.missing_predecessors(order, later).is_empty() {
                resolved.push(signature);
            }
        }
        // Nothing may follow a terminal milestone such as a cancellation.
        for (t, terminal) in milestones.iter().enumerate().filter(|(_, x)| x.terminal) {
            let Some(t_at) = reached_at(order, &terminal.name) else { continue };
            if t == m {
                for (x, other) in milestones.iter().enumerate() {
                    if x != m && reached_at(order, &other.name).is_some_and(|x_at| x_at > t_at) {
                        findings.push((
                            x,
                            format!("conformance:{}:after:{}", other.name, terminal.name),
                            format!("{} reached after {}", other.name, terminal.name),
                        ));
                    }
                }
            } else if t_at < at {
                findings.push((
                    m,
                    format!("conformance:{}:after:{}", milestones[m].name, terminal.name),
                    format!("{} reached after {}", milestones[m].name, terminal.name),
                ));
            }
        }
        let order = self.orders.get_mut(key).expect("checked above");
        for signature in &resolved {
            for e in order.exceptions.iter_mut().filter(|e| &e.signature == signature) {
                e.resolved_at_unix_nanos.get_or_insert(at);
            }
        }
        if !resolved.is_empty() {
            self.dirty_orders.insert(key.to_string());
        }
        for (x, signature, reason) in findings {
            self.conformance_finding(key, x, signature, reason, out);
        }
    }

    fn conformance_finding(&mut self, key: &str, x: MilestoneId, signature: String, reason: String, out: &mut Output) {
        let config = self.config.clone();
        let milestone = &config.taxonomy.milestones[x];
        let class = config.taxonomy.classes[config.conformance.class].name.clone();
        let Some(order) = self.orders.get_mut(key) else { return };
        if order.exceptions.iter().any(|e| e.signature == signature) {
            return;
        }
        let Some(reach) = order.milestone(&milestone.name).and_then(|s| s.reached.clone()) else { return };
        order.exceptions.push(ExceptionState {
            class: class.clone(),
            // The team that acted without its prerequisite owns putting the order right.
            owner: milestone.owner.clone(),
            milestone: Some(milestone.name.clone()),
            signature: signature.clone(),
            reason: reason.clone(),
            first_seen_unix_nanos: reach.at_unix_nanos,
            last_seen_unix_nanos: reach.at_unix_nanos,
            count: 1,
            trace_id: reach.trace_id.clone(),
            span_id: reach.span_id.clone(),
            service: reach.service.clone(),
            actor: reach.actor.clone(),
            resolved_at_unix_nanos: None,
        });
        self.stats.exceptions_recorded += 1;
        self.stats.conformance_findings += 1;
        self.dirty_orders.insert(key.to_string());
        let mut span = emit::finding_span(key, &signature, reason.clone(), reach.at_unix_nanos, reach.at_unix_nanos);
        span.parent_span_id = ids::milestone_span_id(key, &milestone.name).to_vec();
        span.attributes.extend(finding_labels(&milestone.name, &milestone.owner, &class, &reason));
        if let Some(actor) = &reach.actor {
            span.attributes.push(emit::attr_string(keys::ACTOR, actor));
        }
        if let (Ok(t), Ok(s)) = (hex::decode(&reach.trace_id), hex::decode(&reach.span_id)) {
            span.links.push(emit::link(&t, &s, "reached_by"));
        }
        span.status = Some(emit::error_status(format!("{reason}; owner {}", milestone.owner)));
        self.emit_finding(key, span, &milestone.name, &milestone.owner, class, signature, reason, out);
    }
}
