//! The correlation flow of one span: find its orders (order key, learned alias, or its technical trace), wait a
//! bounded time for a keyed span of its trace when it has none, teach the aliases it carries, and hand it to each
//! order it concerns; or pass it on uncorrelated.

use super::correlate::extract_keys;
use super::emit;
use super::input::SpanInput;
use super::labels;
use super::output::Output;
use super::Engine;
use crate::ids::TraceId;
use crate::order::OrderRecord;

impl Engine {
    pub(crate) fn process_span(&mut self, input: SpanInput, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let mut orders = Vec::new();
        extract_keys(&config.correlation.order_keys, &input, &mut orders);
        let mut alias_values: Vec<(usize, Vec<String>)> = Vec::new();
        for (kind, alias) in config.correlation.aliases.iter().enumerate() {
            let mut values = Vec::new();
            extract_keys(&alias.sources, &input, &mut values);
            if !values.is_empty() {
                alias_values.push((kind, values));
            }
        }
        if orders.is_empty() {
            for (kind, values) in &alias_values {
                for value in values {
                    for order in self.aliases.get(*kind, value).unwrap_or_default() {
                        if !orders.contains(order) {
                            orders.push(order.clone());
                        }
                    }
                }
            }
        }
        let trace_id: Option<TraceId> = input.span.trace_id.as_slice().try_into().ok();
        if orders.is_empty() {
            if let Some(known) = trace_id.and_then(|t| self.traces.orders(&t)) {
                let orders = known.to_vec();
                self.stats.spans_inherited += 1;
                self.correlate(input, &orders, now, out);
                return;
            }
            match trace_id {
                Some(trace) => match self.pending.hold(trace, input, now) {
                    Ok(()) => self.persistence.waiting_changed(trace),
                    Err(input) => {
                        self.stats.pending_overflow += 1;
                        self.pass_uncorrelated(*input, out);
                    }
                },
                None => self.pass_uncorrelated(input, out),
            }
            return;
        }
        // A span that names both orders and aliases teaches the aliases; this includes spans that found their
        // orders through another alias, so chains such as delivery → shipment → ASN are learned.
        for (kind, values) in &alias_values {
            for value in values {
                match self.aliases.learn(*kind, value, &orders) {
                    Some(true) => {
                        self.stats.aliases_learned += 1;
                        self.persistence.alias_changed(*kind, value);
                    }
                    Some(false) => {}
                    None => self.stats.aliases_refused += 1,
                }
            }
        }
        if let Some(trace) = trace_id {
            let remembered = self.traces.remember(trace, &orders, now);
            if remembered.changed && config.correlation.persist_trace_memory {
                self.persistence.trace_changed(trace);
            }
            if let Some(evicted) = remembered.evicted {
                self.stats.traces_evicted += 1;
                self.persistence.trace_forgotten(evicted);
            }
            let released = self.pending.release(&trace);
            if !released.is_empty() {
                self.persistence.waiting_changed(trace);
            }
            for waiting in released {
                self.stats.spans_inherited += 1;
                self.correlate(waiting, &orders, now, out);
            }
        }
        self.correlate(input, &orders, now, out);
    }

    pub(crate) fn pass_uncorrelated(&mut self, input: SpanInput, out: &mut Output) {
        self.stats.spans_uncorrelated += 1;
        self.coverage.count(&input, false);
        if self.config.order_traces.passthrough {
            out.push(&input.resource, &input.scope, input.span);
        }
    }

    /// Labels `input` and records it on each of `orders`, re-emitting it into each order's trace.
    pub(crate) fn correlate(&mut self, input: SpanInput, orders: &[String], now: u64, out: &mut Output) {
        let config = self.config.clone();
        let labels = labels::label(&config, &input);
        let mut accepted: Vec<String> = Vec::with_capacity(orders.len());
        for key in orders {
            if !self.orders.contains_key(key) {
                if self.orders.len() >= config.correlation.max_orders && !self.evict_closed() {
                    self.stats.orders_refused += 1;
                    continue;
                }
                self.orders.insert(key.clone(), OrderRecord::new(key.clone()));
                self.stats.orders_created += 1;
            }
            accepted.push(key.clone());
            let newly_reached = self.record(key, &input, &labels, now, out);
            out.push(&input.resource, &input.scope, emit::correlated_span(&config, &input, &labels, key));
            self.stats.order_spans_emitted += 1;
            if let Some(m) = newly_reached {
                self.on_reached(key, m, now, out);
                self.emit_milestone(key, m, out);
                if config.order_traces.close_on.contains(&m) {
                    let reason = format!("milestone:{}", config.taxonomy.milestones[m].name);
                    self.close(key, reason, now, out);
                }
            }
            self.persistence.order_changed(key);
        }
        if accepted.is_empty() {
            self.pass_uncorrelated(input, out);
            return;
        }
        self.stats.spans_correlated += 1;
        self.coverage.count(&input, true);
        if config.order_traces.passthrough {
            let span = emit::enriched_original(&config, &input, &labels, &accepted);
            out.push(&input.resource, &input.scope, span);
        }
    }
}
