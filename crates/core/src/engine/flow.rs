//! The correlation flow of one span: find its orders (order key, learned alias, or its technical trace), wait a
//! bounded time for a keyed span of its trace or for the span that teaches an alias it carries, teach the aliases it
//! carries, and hand it to each order it concerns; or pass it on uncorrelated and keep it a while, so that what it
//! was waiting for can still bring it in later.

use super::correlate::{extract_keys, AliasValue, Kept, Learned};
use super::emit;
use super::events::{Event, KeyKind};
use super::input::SpanInput;
use super::labels;
use super::output::Output;
use super::records::Warm;
use super::Engine;
use crate::ids::TraceId;
use crate::order::OrderRecord;

/// Whether the original of a span still goes out, or went out already when it was passed on uncorrelated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Original {
    Pending,
    Sent,
}

/// How a span found its orders: an order key of its own, a learned alias it carries, or its technical trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Key,
    Alias,
    Trace,
}

/// How a span joins orders: whether its original still goes out, how it found them, the orders it joined before
/// (a span brought in again by an alias or trace that came to name more orders), and until when it is kept for
/// such later joins.
#[derive(Debug)]
pub(crate) struct Join {
    pub(crate) original: Original,
    pub(crate) via: Via,
    joined: Vec<String>,
    kept_until: Option<u64>,
    /// The span's alias values, when the caller read them already: they are read once per span on its way.
    aliases: Option<Vec<AliasValue>>,
}

impl Join {
    /// A span joining its orders as it arrives, or as it is released from its wait.
    pub(crate) fn first(via: Via) -> Join {
        Join { original: Original::Pending, via, joined: Vec::new(), kept_until: None, aliases: None }
    }

    /// A kept span, passed on already, joining orders it is not in yet.
    fn again(kept: &Kept, via: Via) -> Join {
        Join {
            original: Original::Sent,
            via,
            joined: kept.joined.clone(),
            kept_until: Some(kept.expires),
            aliases: None,
        }
    }

    /// The same join, with the alias values the caller read from the span.
    fn with_aliases(self, aliases: Vec<AliasValue>) -> Join {
        Join { aliases: Some(aliases), ..self }
    }
}

impl Engine {
    /// The alias values `input` carries, by alias kind.
    pub(crate) fn alias_values(&self, input: &SpanInput) -> Vec<AliasValue> {
        let mut found = Vec::new();
        for (kind, alias) in self.config.correlation.aliases.iter().enumerate() {
            let mut values = Vec::new();
            extract_keys(&alias.sources, input, &mut values);
            // A value that named too many orders is no alias: the span neither waits for it nor joins through it.
            found.extend(values.into_iter().filter(|v| !self.aliases.is_over_cap(kind, v)).map(|value| (kind, value)));
        }
        found
    }

    pub(crate) fn process_span(&mut self, input: SpanInput, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let mut orders = Vec::new();
        extract_keys(&config.correlation.order_keys, &input, &mut orders);
        let via = if orders.is_empty() { Via::Alias } else { Via::Key };
        // A keyed span's aliases are read once, when it teaches them (`correlate`).
        let aliases = if orders.is_empty() { self.alias_values(&input) } else { Vec::new() };
        let trace_id: Option<TraceId> = input.span.trace_id.as_slice().try_into().ok();
        if orders.is_empty() {
            let (named, complete) = self.orders_named_by(&aliases);
            orders = named;
            // Some values of an alias name orders and others nothing yet (a consolidated booking whose second
            // delivery is still on its way): it waits for the rest, as a span knowing none of them does, so that it
            // joins every order it concerns at once, whichever system flushed first.
            if !orders.is_empty() && !complete {
                if let Some(trace) = trace_id {
                    match self.pending.hold(trace, input, aliases, now) {
                        Ok(()) => self.persistence.waiting_changed(trace),
                        Err(input) => {
                            self.stats.pending_overflow += 1;
                            self.correlate(*input, &orders, now, out, Join::first(Via::Alias));
                        }
                    }
                    return;
                }
            }
        }
        if orders.is_empty() {
            if aliases.is_empty() && trace_id.is_some_and(|t| self.traces.is_over_cap(&t)) {
                // Its trace names too many orders to pass them on and it carries no alias: nothing it could wait
                // for would name its order. A span with an alias still waits for it, below.
                self.pass_uncorrelated(input, aliases, now, out);
                return;
            }
            if let Some(known) = trace_id.and_then(|t| self.traces.orders(&t)) {
                let orders = known.to_vec();
                self.stats.spans_inherited += 1;
                self.correlate(input, &orders, now, out, Join::first(Via::Trace).with_aliases(aliases));
                return;
            }
            // Neither its trace nor its aliases are known yet: the span that would tell may still be on its way
            // from another system, so it waits.
            match trace_id {
                Some(trace) => match self.pending.hold(trace, input, aliases, now) {
                    Ok(()) => self.persistence.waiting_changed(trace),
                    Err(input) => {
                        self.stats.pending_overflow += 1;
                        let aliases = self.alias_values(&input);
                        self.pass_uncorrelated(*input, aliases, now, out);
                    }
                },
                None => self.pass_uncorrelated(input, aliases, now, out),
            }
            return;
        }
        if let Some(trace) = trace_id {
            self.join_trace(trace, &orders, now, out);
        }
        let join = if via == Via::Alias { Join::first(via).with_aliases(aliases) } else { Join::first(via) };
        self.correlate(input, &orders, now, out, join);
    }

    /// A technical trace now known to concern `orders`: remembers it, and brings in its spans that were waiting
    /// (their originals go out now) or were passed on and kept (only their copies are still to come).
    pub(crate) fn join_trace(&mut self, trace: TraceId, orders: &[String], now: u64, out: &mut Output) {
        let remembered = self.traces.remember(trace, orders, now);
        if remembered.changed && self.config.correlation.persist_trace_memory {
            self.persistence.trace_changed(trace);
        }
        if let Some(evicted) = remembered.evicted {
            self.stats.traces_evicted += 1;
            self.persistence.trace_forgotten(evicted);
        }
        if remembered.newly_over_cap {
            self.stats.traces_over_cap += 1;
            out.events.push(Event::KeyOverCap {
                kind: KeyKind::Trace,
                value: hex::encode(trace),
                cap: self.config.correlation.max_orders_per_trace,
            });
        }
        if remembered.over_cap {
            // Its spans inherit nothing from it: those waiting go on waiting for an alias they carry until their
            // wait runs out, and those passed on already stay as they are.
            return;
        }
        let released = self.pending.release(&trace);
        if !released.is_empty() {
            self.persistence.waiting_changed(trace);
        }
        for waiting in released {
            // Its own aliases win over its trace, as when a span arrives with both known.
            let aliases = self.alias_values(&waiting);
            let (named, _) = self.orders_named_by(&aliases);
            if named.is_empty() {
                self.stats.spans_inherited += 1;
                self.correlate(waiting, orders, now, out, Join::first(Via::Trace).with_aliases(aliases));
            } else {
                self.correlate(waiting, &named, now, out, Join::first(Via::Alias).with_aliases(aliases));
            }
        }
        for kept in self.late_joins.take_trace(&trace) {
            self.join_again(kept, orders, Via::Trace, now, out);
        }
    }

    /// Brings a kept span into those of `orders` it is not in yet; returns whether there were any. It is kept
    /// again either way, until its first expiry, since another of its aliases may still come to name an order.
    fn join_again(&mut self, kept: Kept, orders: &[String], via: Via, now: u64, out: &mut Output) -> bool {
        let new: Vec<String> = orders.iter().filter(|o| !kept.joined.contains(o)).cloned().collect();
        if new.is_empty() {
            self.stats.late_joins_evicted += self.late_joins.put_back(kept).spans;
            return false;
        }
        self.stats.spans_late_joined += 1;
        let join = Join::again(&kept, via);
        self.correlate(kept.input, &new, now, out, join);
        true
    }

    /// An alias just learned: the spans that carry it and were waiting, or were passed on and kept, join its orders,
    /// and with them the technical traces they belong to.
    pub(crate) fn join_alias(&mut self, alias: &AliasValue, now: u64, out: &mut Output) {
        let orders = self.aliases.orders_of(alias.0, &alias.1);
        if orders.is_empty() {
            return;
        }
        for trace in self.pending.traces_with(alias) {
            if !self.traces.is_over_cap(&trace) {
                self.join_trace(trace, &orders, now, out);
                continue;
            }
            // A trace over its cap ties its spans to nothing: only those that carry the alias join, through it.
            let carrying: Vec<usize> = self
                .pending
                .waiting(&trace)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter(|(_, span)| self.alias_values(span).contains(alias))
                .map(|(i, _)| i)
                .collect();
            for waiting in self.pending.take(&trace, &carrying) {
                self.persistence.waiting_changed(trace);
                let aliases = self.alias_values(&waiting);
                let (named, _) = self.orders_named_by(&aliases);
                self.correlate(waiting, &named, now, out, Join::first(Via::Alias).with_aliases(aliases));
            }
        }
        for kept in self.late_joins.take_alias(alias) {
            let trace = TraceId::try_from(kept.input.span.trace_id.as_slice()).ok();
            if self.join_again(kept, &orders, Via::Alias, now, out) {
                if let Some(trace) = trace {
                    self.join_trace(trace, &orders, now, out);
                }
            }
        }
    }

    /// The orders that `aliases` name now, and whether every value of the kinds that name an order does. A
    /// value of a kind that names nothing is one the span teaches (the shipment on a booking found through its
    /// delivery); an unknown value of a kind that does, another order still to learn (the second delivery of a
    /// consolidated booking).
    fn orders_named_by(&self, aliases: &[AliasValue]) -> (Vec<String>, bool) {
        let mut orders: Vec<String> = Vec::new();
        let mut naming_kinds: Vec<usize> = Vec::new();
        for (kind, value) in aliases {
            for order in self.aliases.get(*kind, value).unwrap_or_default() {
                if !naming_kinds.contains(kind) {
                    naming_kinds.push(*kind);
                }
                if !orders.contains(order) {
                    orders.push(order.clone());
                }
            }
        }
        let complete = aliases
            .iter()
            .filter(|(kind, _)| naming_kinds.contains(kind))
            .all(|(kind, value)| self.aliases.get(*kind, value).is_some_and(|o| !o.is_empty()));
        (orders, complete)
    }

    /// A span whose wait ran out: it joins the orders its known aliases name, if any (it was waiting for the rest),
    /// or is passed on uncorrelated and kept.
    pub(crate) fn stop_waiting(&mut self, input: SpanInput, now: u64, out: &mut Output) {
        let aliases = self.alias_values(&input);
        let (named, _) = self.orders_named_by(&aliases);
        if named.is_empty() {
            self.pass_uncorrelated(input, aliases, now, out);
        } else {
            self.correlate(input, &named, now, out, Join::first(Via::Alias).with_aliases(aliases));
        }
    }

    /// Passes `input` on without an order and keeps a copy, so that what it waited for can still bring it in.
    /// `aliases` are the alias values it carries.
    pub(crate) fn pass_uncorrelated(&mut self, input: SpanInput, aliases: Vec<AliasValue>, now: u64, out: &mut Output) {
        self.stats.spans_uncorrelated += 1;
        self.coverage.count(&input, false);
        self.keep_for_late_joins(&input, aliases, Vec::new(), self.late_joins.expiry(now));
        if self.config.order_traces.passthrough {
            out.push(&input.resource, &input.scope, input.span);
        }
    }

    /// Labels `input` and records it on each of `orders`, re-emitting it into each order's trace; the enriched
    /// original goes out too unless it was passed on already.
    pub(crate) fn correlate(&mut self, input: SpanInput, orders: &[String], now: u64, out: &mut Output, join: Join) {
        let config = self.config.clone();
        let labels = labels::label(&config, &input);
        if labels.untrusted_declaration {
            self.stats.declared_labels_ignored += 1;
        }
        let mut accepted: Vec<String> = Vec::with_capacity(orders.len());
        for key in orders {
            let warm = self.warm(key, true);
            if warm != Warm::Hot {
                if warm == Warm::Unreadable || !self.make_room() {
                    self.stats.orders_refused += 1;
                    continue;
                }
                self.orders.insert(key.clone(), OrderRecord::new(key.clone()));
                self.stats.orders_created += 1;
            }
            accepted.push(key.clone());
            let reach_moved = self.record(key, &input, &labels, now, out);
            self.emit_root(key, out);
            out.push(&input.resource, &input.scope, emit::correlated_span(&config, &input, &labels, key));
            self.stats.order_spans_emitted += 1;
            if let Some(m) = reach_moved {
                self.reach_changed(key, m, now, out);
            }
            self.persistence.order_changed(key);
        }
        let mut joined = join.joined;
        joined.extend(accepted.iter().cloned());
        let aliases = join.aliases.unwrap_or_else(|| self.alias_values(&input));
        let learned = self.teach_aliases(&aliases, &accepted, &joined, join.via, out);
        if join.via != Via::Key && !aliases.is_empty() && !accepted.is_empty() {
            let until = join.kept_until.unwrap_or_else(|| self.late_joins.expiry(now));
            self.keep_for_late_joins(&input, aliases, joined, until);
        }
        if join.original == Original::Pending {
            self.send_original(input, &labels, &accepted, out);
        }
        for alias in learned {
            self.join_alias(&alias, now, out);
        }
    }

    /// Keeps a copy of `input`, which joined `joined` (none: passed on uncorrelated), so that an alias or trace
    /// that comes to name an order later can still bring it in.
    fn keep_for_late_joins(&mut self, input: &SpanInput, aliases: Vec<AliasValue>, joined: Vec<String>, until: u64) {
        if self.late_joins.would_keep(input, &aliases) {
            let copy =
                SpanInput { resource: input.resource.clone(), scope: input.scope.clone(), span: input.span.clone() };
            self.stats.late_joins_evicted += self.late_joins.keep(copy, aliases, joined, until).spans;
        }
    }

    /// Learns `aliases`, carried by a span, as names of `orders` (the ones it joins now), whichever way it found
    /// them and whenever it arrived, so that a chain such as delivery → shipment → ASN is learned in any delivery
    /// order. A span that found its orders only through a technical trace of several orders (`all` it joined, a
    /// batch) teaches nothing: it cannot tell which of them its aliases belong to. Returns the aliases that came to
    /// name more orders.
    fn teach_aliases(
        &mut self,
        aliases: &[AliasValue],
        orders: &[String],
        all: &[String],
        via: Via,
        out: &mut Output,
    ) -> Vec<AliasValue> {
        if orders.is_empty() || (via == Via::Trace && all.len() > 1) {
            return Vec::new();
        }
        let mut learned = Vec::new();
        for (kind, value) in aliases.iter().cloned() {
            match self.aliases.learn(kind, &value, orders) {
                Learned::More => {
                    self.stats.aliases_learned += 1;
                    self.persistence.alias_changed(kind, &value);
                    learned.push((kind, value));
                }
                Learned::Nothing => {}
                Learned::Full => self.stats.aliases_refused += 1,
                Learned::OverCap => {
                    self.stats.aliases_over_cap += 1;
                    self.persistence.alias_changed(kind, &value);
                    out.events.push(Event::KeyOverCap {
                        kind: KeyKind::Alias(self.config.correlation.aliases[kind].kind.clone()),
                        value,
                        cap: self.config.correlation.max_orders_per_alias,
                    });
                }
            }
        }
        learned
    }

    /// Sends the enriched original of a span correlated to `accepted`, or the plain original when every order
    /// was refused for want of room.
    fn send_original(&mut self, input: SpanInput, labels: &labels::Labels, accepted: &[String], out: &mut Output) {
        let config = self.config.clone();
        if accepted.is_empty() {
            // Refused for want of room: no order to wait for, so it is passed on without being kept.
            self.stats.spans_uncorrelated += 1;
            self.coverage.count(&input, false);
            if config.order_traces.passthrough {
                out.push(&input.resource, &input.scope, input.span);
            }
            return;
        }
        self.stats.spans_correlated += 1;
        self.coverage.count(&input, true);
        if config.order_traces.passthrough {
            // Sorted, so that the list does not depend on which alias or trace named which order first.
            let mut accepted = accepted.to_vec();
            accepted.sort_unstable();
            let SpanInput { resource, scope, span } = input;
            let span = emit::enriched_original(&config, span, labels, &accepted);
            out.push(&resource, &scope, span);
        }
    }
}
