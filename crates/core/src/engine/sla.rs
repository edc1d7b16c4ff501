//! SLA clocks: they start when a target's `from` milestone is reached, settle when `to` is, stop when the order
//! closes or is cancelled, and breach when their deadline passes, which is how ordertrail notices what did *not*
//! happen.
//!
//! Deadlines live in the order records (`OrderRecord::slas`), which the store persists; the in-memory index
//! [`DeadlineIndex`] is rebuilt from them at startup, so a restart neither loses a pending deadline nor reports
//! a breach twice (a breach sets `breached_at` once, and a breached clock is never put back in the index).

use super::emit;
use super::events::Event;
use super::findings::finding_labels;
use super::output::Output;
use super::records::Warm;
use super::Engine;
use crate::config::{Config, MilestoneId, PlaybookWhen};
use crate::ids;
use crate::insight::delay::RiskBasis;
use crate::order::{ExceptionState, OrderRecord, SlaState};
use crate::time::{millis_i64, nanos, rfc3339};
use opentelemetry_proto::tonic::trace::v1::span::Event as SpanEvent;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A running clock's risk point and the model's view of it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RiskCheck {
    /// When the clock puts its order at risk (Unix nanoseconds, never after the deadline).
    pub(crate) at: u64,
    /// The breach probability at the time asked about; `None` on the fixed share.
    pub(crate) probability: Option<f64>,
    pub(crate) basis: RiskBasis,
}

/// `sla.at_risk_share` in whole percent, for saying what a judgement on the fixed share was.
fn share_percent(share: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let percent = (share * 100.0).round() as u64;
    percent
}

/// Running clocks by when they are checked.
#[derive(Debug, Default)]
pub(crate) struct DeadlineIndex {
    /// (due, order key, target index), earliest first.
    by_due: BTreeSet<(u64, String, usize)>,
    /// When each running clock is checked, to find its entry in `by_due`.
    due: HashMap<(String, usize), u64>,
    /// The first tick after startup; breach checks hold for the detection delay after it.
    first_tick: Option<u64>,
}

impl DeadlineIndex {
    pub(crate) fn len(&self) -> usize {
        self.by_due.len()
    }

    fn insert(&mut self, key: &str, target: usize, due: u64) {
        self.by_due.insert((due, key.to_string(), target));
        self.due.insert((key.to_string(), target), due);
    }

    fn remove(&mut self, key: &str, target: usize) {
        if let Some(due) = self.due.remove(&(key.to_string(), target)) {
            self.by_due.remove(&(due, key.to_string(), target));
        }
    }

    /// When a clock is checked next, the detection delay included, if it is in the index.
    pub(crate) fn due_of(&self, key: &str, target: usize) -> Option<u64> {
        self.due.get(&(key.to_string(), target)).copied()
    }

    /// When the engine first ticked; judgements hold for the detection delay after it, so that spans still on their
    /// way when ordertrail restarted (in a collector's retry queue, say) can arrive first.
    pub(crate) fn started(&mut self, now: u64) -> u64 {
        *self.first_tick.get_or_insert(now)
    }

    /// Starts judging when `previous` did, for an index that replaces it.
    pub(crate) fn take_over_start(&mut self, previous: &DeadlineIndex) {
        self.first_tick = previous.first_tick;
    }

    /// The next clock due at or before `now`, taken out of the index.
    fn pop_due(&mut self, now: u64) -> Option<(String, usize)> {
        if self.by_due.first()?.0 > now {
            return None;
        }
        let (_, key, target) = self.by_due.pop_first()?;
        self.due.remove(&(key.clone(), target));
        Some((key, target))
    }
}

impl Engine {
    /// Puts every running SLA clock of `order` into the deadline index; used when state is loaded. The hold
    /// after startup (`check_deadlines`) gives milestones still on their way, in a collector's retry queue say,
    /// the detection delay to arrive before their clocks are judged.
    pub(crate) fn index_deadlines(&mut self, order: &OrderRecord) {
        self.index_deadlines_known_since(order, 0);
    }

    /// As `index_deadlines`, for an order read back from the store: its clocks count as known since
    /// `known_since`, and so are checked no sooner than the detection delay after it.
    pub(crate) fn index_deadlines_known_since(&mut self, order: &OrderRecord, known_since: u64) {
        if order.is_closed() {
            return;
        }
        for state in &order.slas {
            if state.is_running() && state.deadline_unix_nanos != u64::MAX {
                if let Some(target) = self.config.sla.targets.iter().position(|t| t.name == state.target) {
                    let due = self.next_check(target, &order.dimensions, state);
                    self.schedule(&order.key, target, due, known_since);
                }
            }
        }
    }

    /// Schedules the risk checks of the running clocks in the index again, by the delay model as it is now; used
    /// when a model is restored or taken over, after the clocks were indexed without it.
    pub(crate) fn reindex_risk_checks(&mut self) {
        let mut moves = Vec::new();
        for order in self.orders.values().filter(|o| !o.is_closed()) {
            self.risk_check_moves(order, &mut moves);
        }
        self.apply_risk_check_moves(moves);
    }

    /// Schedules the risk checks of one order's running clocks again: its dimensions changed (the carrier became
    /// known at booking, say), and with them which past orders it is judged by.
    pub(crate) fn reschedule_risk_checks_of(&mut self, key: &str) {
        let mut moves = Vec::new();
        if let Some(order) = self.orders.get(key).filter(|o| !o.is_closed()) {
            self.risk_check_moves(order, &mut moves);
        }
        self.apply_risk_check_moves(moves);
    }

    /// Where the index holds a risk check of `order`'s running, unjudged clocks: (order, target, next check).
    fn risk_check_moves(&self, order: &OrderRecord, moves: &mut Vec<(String, usize, u64)>) {
        let unjudged = order
            .slas
            .iter()
            .filter(|s| s.is_running() && s.deadline_unix_nanos != u64::MAX && s.at_risk_at_unix_nanos.is_none());
        for state in unjudged {
            let Some(target) = self.config.sla.targets.iter().position(|t| t.name == state.target) else {
                continue;
            };
            if self.clocks.due_of(&order.key, target).is_some() {
                moves.push((order.key.clone(), target, self.next_check(target, &order.dimensions, state)));
            }
        }
    }

    fn apply_risk_check_moves(&mut self, moves: Vec<(String, usize, u64)>) {
        for (key, target, due) in moves {
            self.clocks.remove(&key, target);
            self.schedule(&key, target, due, 0);
        }
    }

    /// Takes the clocks and settling milestones of an order leaving memory out of the indexes.
    pub(crate) fn unindex(&mut self, order: &OrderRecord) {
        for state in &order.slas {
            if let Some(target) = self.config.sla.targets.iter().position(|t| t.name == state.target) {
                self.clocks.remove(&order.key, target);
            }
        }
        self.unindex_settling(order);
    }

    /// Schedules the next check of a clock (`due`: its risk point, then its deadline) plus the detection delay,
    /// but never sooner than the detection delay after the clock became known, so that a milestone whose span
    /// arrives a moment after the one that started the clock (or a backfill of old spans) is not judged before it
    /// could arrive.
    fn schedule(&mut self, key: &str, target: usize, due: u64, known_since: u64) {
        let delay = nanos(self.config.sla.detection_delay);
        self.clocks.insert(key, target, due.max(known_since).saturating_add(delay));
    }

    /// What a running clock is checked for next: its risk point until it was found at risk, then its deadline.
    pub(crate) fn next_check(&self, target: usize, dimensions: &BTreeMap<String, String>, state: &SlaState) -> u64 {
        let risk = self.risk_of(target, dimensions, state, state.started_at_unix_nanos).at;
        if state.at_risk_at_unix_nanos.is_none() && risk < state.deadline_unix_nanos {
            risk
        } else {
            state.deadline_unix_nanos
        }
    }

    /// When a running clock puts its order at risk, by the delay model as it stands (the clock's target, the
    /// order's dimension values), or by the fixed share while the model knows too little; and the breach
    /// probability the model gives at `now`.
    pub(crate) fn risk_of(
        &self,
        target: usize,
        dimensions: &BTreeMap<String, String>,
        state: &SlaState,
        now: u64,
    ) -> RiskCheck {
        let config = &self.config.sla;
        let t = &config.targets[target];
        let start = state.started_at_unix_nanos;
        let (_, calendar) = t.allowance(dimensions);
        let elapsed = match calendar {
            Some(calendar) => calendar.working_time_between(start, now),
            None => std::time::Duration::from_nanos(now.saturating_sub(start)),
        };
        let allowed = std::time::Duration::from_nanos(state.allowed_nanos);
        match self.insight.delay.judge(&config.risk, &t.name, dimensions, allowed, elapsed) {
            Some(judgement) => RiskCheck {
                at: match calendar {
                    Some(calendar) => calendar.add_working_time(start, judgement.risk_point),
                    None => start.saturating_add(nanos(judgement.risk_point)),
                }
                .min(state.deadline_unix_nanos),
                probability: judgement.probability,
                basis: judgement.basis,
            },
            None => RiskCheck {
                at: config.risk_point(start, state.deadline_unix_nanos),
                probability: None,
                basis: RiskBasis::Share { share_percent: share_percent(config.at_risk_share) },
            },
        }
    }

    /// A clock popped before its deadline's check was the check of its risk point: finds the order at risk, once,
    /// and schedules the deadline's check. Returns false when the deadline's check is what is due.
    fn check_risk(&mut self, key: &str, target: usize, now: u64, out: &mut Output) -> bool {
        let config = self.config.clone();
        let t = &config.sla.targets[target];
        let awaited = &config.taxonomy.milestones[t.to];
        let delay = nanos(config.sla.detection_delay);
        let Some(order) = self.orders.get(key) else { return false };
        let reached = order.reached_at(&awaited.name);
        let dimensions = order.dimensions.clone();
        let Some(state) = order.sla(&t.name) else { return false };
        let deadline = state.deadline_unix_nanos;
        let unmarked = state.is_running() && state.at_risk_at_unix_nanos.is_none();
        // The model may have learned since the check was scheduled: judged again as it stands now, the clock may
        // not be at risk yet, and is checked again at its new risk point.
        let risk = self.risk_of(target, &dimensions, state, now);
        // By the spans' own times: a milestone reached by the risk point (its settling still to come) was in time
        // for it, one reached after it was not; which of the two arrived first does not matter.
        let in_time = risk.at >= deadline || reached.is_some_and(|at| at <= risk.at);
        if now >= deadline {
            // Checked late (ordertrail was down, or the order was read back late): the clock was at risk all the
            // same, as the settling of its milestone would find; recorded, told to nobody, as the deadline passed.
            if unmarked && !in_time {
                self.mark_at_risk(key, target, risk, true, out);
            }
            if now >= deadline.saturating_add(delay) {
                return false;
            }
            if unmarked || self.orders.get(key).and_then(|o| o.sla(&t.name)).is_some_and(SlaState::is_running) {
                self.clocks.insert(key, target, deadline.saturating_add(delay));
            }
            return true;
        }
        let to_deadline = deadline.saturating_add(delay).max(now);
        if !unmarked || in_time {
            if self.orders.get(key).and_then(|o| o.sla(&t.name)).is_some_and(SlaState::is_running) {
                self.clocks.insert(key, target, to_deadline);
            }
            return true;
        }
        if risk.at.saturating_add(delay) > now {
            let known_since = now.saturating_sub(delay);
            self.schedule(key, target, risk.at, known_since);
            return true;
        }
        self.mark_at_risk(key, target, risk, reached.is_some(), out);
        self.clocks.insert(key, target, to_deadline);
        true
    }

    /// Marks a clock at risk at its risk point (by the spans' clock, so that the record does not depend on when the
    /// check ran), writes the at-risk span and reports the event. `settled`: its milestone had arrived already,
    /// after the risk point; the mark and the span are kept so that the record and the trace are the same whichever
    /// came first, and nobody is told of a milestone already reached.
    fn mark_at_risk(&mut self, key: &str, target: usize, risk: RiskCheck, settled: bool, out: &mut Output) {
        let config = self.config.clone();
        let t = &config.sla.targets[target];
        let awaited = &config.taxonomy.milestones[t.to];
        // The probability as of the risk point, whenever the check ran.
        let risk = match self.orders.get(key).and_then(|o| Some((o.dimensions.clone(), o.sla(&t.name)?.clone()))) {
            Some((dimensions, state)) => {
                RiskCheck { at: risk.at, ..self.risk_of(target, &dimensions, &state, risk.at) }
            }
            None => risk,
        };
        let Some(order) = self.orders.get_mut(key) else { return };
        let dimensions = order.dimensions.clone();
        let Some(state) = order.slas.iter_mut().find(|s| s.target == t.name) else { return };
        state.at_risk_at_unix_nanos = Some(risk.at);
        state.at_risk_probability = risk.probability;
        state.at_risk_basis = Some(risk.basis.to_string());
        let (start, deadline) = (state.started_at_unix_nanos, state.deadline_unix_nanos);
        self.persistence.order_changed(key);
        self.emit_at_risk(key, target, start, deadline, &risk, risk.at, out);
        out.events.push(Event::SlaAtRisk {
            order: key.to_string(),
            target,
            deadline_unix_nanos: deadline,
            owner: awaited.owner.clone(),
            probability: risk.probability,
            basis: risk.basis,
            settled,
            dimensions,
        });
    }

    /// The at-risk span in the order trace: from the clock's start to the moment it was found at risk, with the
    /// probability, what it is based on and who owns the awaited milestone, so that a trace view shows the
    /// warning before the breach.
    #[allow(clippy::too_many_arguments)]
    fn emit_at_risk(
        &mut self,
        key: &str,
        target: usize,
        start: u64,
        deadline: u64,
        risk: &RiskCheck,
        now: u64,
        out: &mut Output,
    ) {
        let config = self.config.clone();
        let t = &config.sla.targets[target];
        let awaited = &config.taxonomy.milestones[t.to];
        let signature = format!("sla:{}:at_risk", t.name);
        let mut span = emit::finding_span(key, &signature, format!("{} at risk", awaited.name), start, now.max(start));
        span.attributes.extend([
            emit::attr_string("order.sla.target", &t.name),
            emit::attr_string("order.sla.status", "at_risk"),
            emit::attr_string("order.sla.deadline", &rfc3339(deadline)),
            emit::attr_string("order.milestone", &awaited.name),
            emit::attr_string("order.owner", &awaited.owner),
            emit::attr_string("order.risk.basis", &risk.basis.to_string()),
        ]);
        if let Some(p) = risk.probability {
            span.attributes.push(emit::attr_double("order.risk.probability", p));
        }
        if let Some(p) =
            self.orders.get(key).and_then(|o| config.target_playbook(target, PlaybookWhen::AtRisk, &o.dimensions))
        {
            span.attributes.extend(emit::playbook_attributes(p));
        }
        out.push(&self.own.resource, &self.own.scope, span);
        self.stats.finding_spans_emitted += 1;
    }

    /// Stops the running clocks of an order that closed or reached a terminal milestone.
    pub(crate) fn stop_clocks(&mut self, key: &str, now: u64) {
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
        self.persistence.order_changed(key);
        for name in stopped {
            if let Some(target) = self.config.sla.targets.iter().position(|t| t.name == name) {
                self.clocks.remove(key, target);
            }
        }
    }

    /// Breaches every deadline that has passed by `now`.
    pub(crate) fn check_deadlines(&mut self, now: u64, out: &mut Output) {
        let delay = nanos(self.config.sla.detection_delay);
        let started = self.clocks.started(now);
        if now < started.saturating_add(delay) {
            return;
        }
        while let Some((key, target)) = self.clocks.pop_due(now) {
            // The index holds clocks of orders in memory only, but an order may have been evicted since its clock
            // was popped and deferred; it is read back, or when memory is full of uncommitted orders, the check
            // waits for the next tick, after the commit.
            if matches!(self.warm(&key, false), Warm::NoRoom | Warm::Unreadable) {
                self.clocks.insert(&key, target, now.saturating_add(1));
                continue;
            }
            if !self.check_risk(&key, target, now, out) {
                self.breach(&key, target, now, out);
            }
        }
    }

    /// Starts the clocks of targets that begin at `m`.
    pub(crate) fn start_slas(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let config = self.config.clone();
        for (i, target) in config.sla.targets.iter().enumerate().filter(|(_, t)| t.from == m) {
            let Some(order) = self.orders.get_mut(key) else { return };
            if order.sla(&target.name).is_some() {
                continue;
            }
            let Some(start) = order.reached_at(&config.taxonomy.milestones[m].name) else { return };
            let (deadline, within) = target.deadline(start, &order.dimensions);
            // Kept in the configuration's order, so that the record does not depend on which clock started first.
            let rank = |name: &str| config.sla.targets.iter().position(|t| t.name == name).unwrap_or(usize::MAX);
            let at = order.slas.iter().position(|s| rank(&s.target) > i).unwrap_or(order.slas.len());
            order.slas.insert(
                at,
                SlaState {
                    target: target.name.clone(),
                    from: config.taxonomy.milestones[target.from].name.clone(),
                    to: config.taxonomy.milestones[target.to].name.clone(),
                    started_at_unix_nanos: start,
                    deadline_unix_nanos: deadline,
                    allowed_nanos: nanos(within),
                    breached_at_unix_nanos: None,
                    reached_at_unix_nanos: None,
                    lateness_nanos: None,
                    breach_span_emitted: false,
                    // Nothing is awaited of a closed order: a clock whose start arrived after the close is stopped
                    // from the outset, as it would have been stopped at the close had the start arrived first. It is
                    // still kept, and settled by its end's time, so that the record does not depend on which came first.
                    stopped_at_unix_nanos: order.closed_at_unix_nanos,
                    withdrawn_at_unix_nanos: None,
                    at_risk_at_unix_nanos: None,
                    at_risk_probability: None,
                    at_risk_basis: None,
                },
            );
            let to_at = order.reached_at(&config.taxonomy.milestones[target.to].name);
            let closed = order.is_closed();
            self.persistence.order_changed(key);
            // The awaited milestone may have arrived first: spans of different systems arrive out of order.
            if let Some(to_at) = to_at {
                self.settle(key, i, to_at, now, out);
            } else if deadline != u64::MAX && !closed {
                let due = self
                    .orders
                    .get(key)
                    .and_then(|o| o.sla(&target.name).map(|s| self.next_check(i, &o.dimensions, s)))
                    .unwrap_or(deadline);
                self.schedule(key, i, due, now);
            }
        }
    }

    /// Settles the clocks of targets that end at `m`.
    pub(crate) fn settle_slas(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let Some(order) = self.orders.get(key) else { return };
        let Some(at) = order.reached_at(&config.taxonomy.milestones[m].name) else { return };
        for (i, target) in config.sla.targets.iter().enumerate().filter(|(_, t)| t.to == m) {
            // A clock not yet settled, or settled by a span that ended later than this one. A stopped clock is
            // settled too: its end arriving after the close or cancellation still tells whether it was in time.
            let settles = self
                .orders
                .get(key)
                .and_then(|o| o.sla(&target.name))
                .is_some_and(|s| s.reached_at_unix_nanos.is_none_or(|reached| at < reached));
            if settles {
                self.settle(key, i, at, now, out);
            }
        }
    }

    /// Moves the clocks that start at `m` to its (earlier) reach: a span that arrived after `m` was settled showed
    /// that it was reached sooner. A running clock gets its new deadline; one already settled is settled again
    /// against it, so that whether it was in time is decided by the times alone.
    pub(crate) fn restart_slas(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let config = self.config.clone();
        for (i, target) in config.sla.targets.iter().enumerate().filter(|(_, t)| t.from == m) {
            let Some(order) = self.orders.get_mut(key) else { return };
            let Some(start) = order.reached_at(&config.taxonomy.milestones[m].name) else { return };
            let (deadline, within) = target.deadline(start, &order.dimensions);
            let Some(state) = order.slas.iter_mut().find(|s| s.target == target.name) else { continue };
            if start >= state.started_at_unix_nanos {
                continue;
            }
            state.started_at_unix_nanos = start;
            state.deadline_unix_nanos = deadline;
            state.allowed_nanos = nanos(within);
            let (reached, running) = (
                state.reached_at_unix_nanos,
                state.breached_at_unix_nanos.is_none() && state.stopped_at_unix_nanos.is_none(),
            );
            self.persistence.order_changed(key);
            self.clocks.remove(key, i);
            if let Some(at) = reached {
                self.settle(key, i, at, now, out);
            } else if running && deadline != u64::MAX {
                let due = self
                    .orders
                    .get(key)
                    .and_then(|o| o.sla(&target.name).map(|s| self.next_check(i, &o.dimensions, s)))
                    .unwrap_or(deadline);
                self.schedule(key, i, due, now);
            }
        }
    }

    fn settle(&mut self, key: &str, target: usize, at: u64, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let t = &config.sla.targets[target];
        let Some(order) = self.orders.get_mut(key) else { return };
        let Some(state) = order.slas.iter_mut().find(|s| s.target == t.name) else { return };
        let first = state.reached_at_unix_nanos.is_none();
        state.reached_at_unix_nanos = Some(at);
        let late = at > state.deadline_unix_nanos;
        state.lateness_nanos = late.then(|| at - state.deadline_unix_nanos);
        let duration = at.saturating_sub(state.started_at_unix_nanos);
        let lateness = state.lateness_nanos;
        let breached = state.breached_at_unix_nanos.is_some();
        let withdrawn = state.withdrawn_at_unix_nanos.is_some();
        // A clock stopped by a close or cancellation awaited nothing when its milestone came: it teaches nothing and
        // was at risk of nothing.
        let stopped = state.stopped_at_unix_nanos.is_some();
        let unmarked = state.at_risk_at_unix_nanos.is_none() && !stopped;
        let state = state.clone();
        self.persistence.order_changed(key);
        self.clocks.remove(key, target);
        // A milestone reached after the clock's risk point: the clock was at risk then, whether or not its check ran
        // before this span arrived.
        if first && unmarked {
            let dimensions = self.orders.get(key).map(|o| o.dimensions.clone()).unwrap_or_default();
            let risk = self.risk_of(target, &dimensions, &state, at);
            if risk.at < at && risk.at < state.deadline_unix_nanos {
                self.mark_at_risk(key, target, risk, true, out);
            }
        }
        if late && !breached {
            // A milestone that arrives late before the deadline check ran is still a breach, reported once.
            self.breach(key, target, now, out);
        } else if !late && breached && !withdrawn {
            // Declared after the settling delay, yet a span that arrived later still was in time.
            self.withdraw(key, target, at, now, out);
        }
        if !first {
            return;
        }
        let Some(order) = self.orders.get(key) else { return };
        // The duration the model learns is in the clock's own time, as its allowance is: working time where a
        // calendar applies. A clock stopped by a cancellation or close teaches nothing, even when its milestone
        // comes later: the model learns only from transitions that completed while awaited.
        if !stopped {
            let (_, calendar) = t.allowance(&order.dimensions);
            let clock_time = match calendar {
                Some(calendar) => calendar.working_time_between(at.saturating_sub(duration), at),
                None => std::time::Duration::from_nanos(duration),
            };
            let dimensions = order.dimensions.clone();
            self.learn_duration(&t.name, &dimensions, clock_time);
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

    /// Takes back a breach that a span arriving after it disproved. The breach span went out and a span id cannot be
    /// sent twice, so a withdrawal span follows it into the order trace; the order's record and SLA status forget
    /// the breach, and the withdrawal is counted.
    fn withdraw(&mut self, key: &str, target: usize, at: u64, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let t = &config.sla.targets[target];
        let awaited = &config.taxonomy.milestones[t.to];
        let Some(order) = self.orders.get_mut(key) else { return };
        let Some(state) = order.slas.iter_mut().find(|s| s.target == t.name) else { return };
        state.withdrawn_at_unix_nanos = Some(now);
        let (deadline, breached_at) = (state.deadline_unix_nanos, state.breached_at_unix_nanos.unwrap_or(now));
        let signature = format!("sla:{}", t.name);
        order.exceptions.retain(|e| e.signature != signature);
        let dimensions = order.dimensions.clone();
        self.stats.sla_breaches_withdrawn += 1;
        self.persistence.order_changed(key);
        let reason = format!(
            "{} overdue withdrawn: reached at {}, within its deadline {}; the span showing it arrived after the \
             breach was declared",
            awaited.name,
            rfc3339(at),
            rfc3339(deadline)
        );
        let mut span = emit::finding_span(
            key,
            &format!("{signature}:withdrawn"),
            format!("{} overdue withdrawn", awaited.name),
            breached_at.min(now),
            now,
        );
        span.attributes.extend([
            emit::attr_string("order.sla.target", &t.name),
            emit::attr_string("order.sla.status", "met"),
            emit::attr_string("order.sla.deadline", &rfc3339(deadline)),
            emit::attr_string("order.sla.reached_at", &rfc3339(at)),
            emit::attr_string("order.milestone", &awaited.name),
            emit::attr_string("order.sla.withdrawn", &reason),
        ]);
        span.status = Some(emit::ok_status());
        out.push(&self.own.resource, &self.own.scope, span);
        self.stats.finding_spans_emitted += 1;
        out.events.push(Event::SlaWithdrawn { order: key.to_string(), target, dimensions });
    }

    fn breach(&mut self, key: &str, target: usize, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let t = &config.sla.targets[target];
        let awaited = &config.taxonomy.milestones[t.to];
        let Some(order) = self.orders.get_mut(key) else { return };
        // The awaited milestone may be recorded already, its settling still to come: in time, it is no breach.
        let reached_in_time = |deadline: u64| order.reached_at(&awaited.name).is_some_and(|at| at <= deadline);
        let Some(deadline) = order.sla(&t.name).map(|s| s.deadline_unix_nanos) else { return };
        if reached_in_time(deadline) {
            return;
        }
        // Reached late, and recorded before this check ran: the breach is resolved by that reach, as it is when
        // the reach arrives after the breach (`resolve_by_reach`), whichever came first.
        let reached_late = order.reached_at(&awaited.name);
        // Nothing was awaited any more at the deadline if the order had closed or been cancelled by then, by the
        // spans' times; the moment ordertrail stopped the clock depends on when the spans arrived.
        if awaiting_until(&config, order).is_some_and(|until| until <= deadline) {
            return;
        }
        let Some(state) = order.slas.iter_mut().find(|s| s.target == t.name) else { return };
        if state.breached_at_unix_nanos.is_some() {
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
            rfc3339(state.deadline_unix_nanos)
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
            resolved_at_unix_nanos: reached_late,
        });
        self.stats.sla_breaches += 1;
        self.stats.exceptions_recorded += 1;
        self.persistence.order_changed(key);

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
            emit::attr_string("order.sla.deadline", &rfc3339(state.deadline_unix_nanos)),
            emit::attr_int("order.sla.allowed_ms", millis_i64(state.allowed_nanos)),
        ]);
        span.events.push(SpanEvent {
            time_unix_nano: now.max(state.deadline_unix_nanos),
            name: "sla.breach.detected".into(),
            ..Default::default()
        });
        span.status = Some(emit::error_status(format!("{reason}; next action owned by {}", awaited.owner)));
        // The playbook of the breach itself, not of whatever else the order is in: that depends on spans of other
        // systems that may arrive after the deadline.
        if let Some(p) =
            self.orders.get(key).and_then(|o| config.target_playbook(target, PlaybookWhen::Breached, &o.dimensions))
        {
            span.attributes.extend(emit::playbook_attributes(p));
        }
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
}

/// When, by the spans' own times, `order` stopped awaiting anything: the earliest reach of a terminal or `close_on`
/// milestone, or its idle close (ordertrail's time, as idleness is ordertrail's judgement).
fn awaiting_until(config: &Config, order: &OrderRecord) -> Option<u64> {
    let milestones = &config.taxonomy.milestones;
    let by_milestone = milestones
        .iter()
        .enumerate()
        .filter(|(m, milestone)| milestone.terminal || config.order_traces.close_on.contains(m))
        .filter_map(|(_, milestone)| order.reached_at(&milestone.name));
    let idle = order.closed_at_unix_nanos.filter(|_| order.close_reason.as_deref() == Some(super::records::IDLE));
    by_milestone.chain(idle).min()
}
