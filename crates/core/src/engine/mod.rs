//! The engine: correlation, labelling, order records, SLA clocks and conformance, and the spans of order traces.
//!
//! It does no I/O and reads no clock: every call takes `now` (Unix nanoseconds) and returns the spans to export in
//! an [`Output`]; the state changes to persist are taken with [`Engine::take_changes`]. Everything it holds is
//! bounded by the configuration, with a counter in [`EngineStats`] wherever a bound turns data away.
//!
//! Each file owns one concern: `flow` the correlation of one span, `records` what a span changes on an order,
//! `sla` and `conformance` accountability, `persistence` the bookkeeping of what the store must learn, `stats`
//! the counters, `emit` the spans that leave, `labels` and `correlate` the rules and key memories they use.

mod attributes;
mod conformance;
mod correlate;
mod emit;
pub mod events;
mod findings;
mod flow;
mod input;
mod insight;
mod labels;
mod output;
mod persistence;
mod records;
mod replicas;
mod settle;
mod sla;
mod stats;
mod wake;

pub use input::{flatten, ResourceContext, ScopeContext, SpanInput};
pub use output::Output;
pub use persistence::{Notification, OrderWrite, StateChanges};
pub use stats::{Coverage, EngineStats, PairCounts};

use crate::config::Config;
use crate::order::{AliasRecord, OrderRecord};
use crate::time::nanos;
use correlate::{AliasIndex, LateJoins, PendingSpans, TraceMemory};
use input::OwnSource;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use persistence::Persistence;
use settle::SettleIndex;
use sla::DeadlineIndex;
use stats::CoverageCounter;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How often open orders are recounted by stage and coverage is copied into the stats: both scan, so not on
/// every tick.
const STATS_REFRESH_NANOS: u64 = 1_000_000_000;

/// Reads an order the engine does not hold from where its state is kept (the store, for the service). The engine
/// asks for an order only when one it evicted, or did not load at startup, may be needed; it never writes.
/// `Ok(None)` means the order is not there; `Err` that the store could not tell, which the engine never mistakes for
/// absence.
pub type OrderLoader = Box<dyn FnMut(&str) -> Result<Option<OrderRecord>, String> + Send>;

/// The loader, with a `Debug` that says only whether there is one.
struct Loader(OrderLoader);

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderLoader")
    }
}

/// The correlation and accountability engine; one owner, no locks (see ARCHITECTURE.md).
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    /// Orders held in memory (the hot set), open and recently closed; at most `correlation.max_orders`.
    orders: HashMap<String, OrderRecord>,
    /// Where orders not in memory are read from; without one, open orders are never evicted.
    loader: Option<Loader>,
    /// Whether the loader may hold orders that are not in memory: some were evicted, or not loaded at startup.
    cold: bool,
    /// Closed orders in the order they closed, the first to go when memory is full.
    closed: VecDeque<String>,
    aliases: AliasIndex,
    traces: TraceMemory,
    pending: PendingSpans,
    /// Spans passed on uncorrelated, kept a while in case what they waited for arrives late.
    late_joins: LateJoins,
    persistence: Persistence,
    clocks: DeadlineIndex,
    /// The delay model and what of it is unsaved.
    insight: insight::InsightState,
    /// Reached milestones waiting for the detection delay before what follows from them is decided.
    settling: SettleIndex,
    coverage: CoverageCounter,
    own: OwnSource,
    /// When the next scan for idle orders and the next stats refresh are due.
    next_idle_scan: u64,
    next_stats_refresh: u64,
    stats: EngineStats,
}

impl Engine {
    /// An engine with the state loaded from a store.
    pub fn new(config: Arc<Config>, orders: Vec<OrderRecord>, aliases: Vec<AliasRecord>) -> Engine {
        let c = &config.correlation;
        let mut engine = Engine {
            orders: HashMap::new(),
            loader: None,
            cold: false,
            closed: VecDeque::new(),
            aliases: AliasIndex::new(c.max_aliases, c.max_orders_per_alias),
            traces: TraceMemory::new(c.max_tracked_traces, nanos(c.trace_memory), c.max_orders_per_trace),
            pending: PendingSpans::new(c.max_pending_spans, nanos(c.inherit_wait)),
            late_joins: LateJoins::new(c.late_joins.max_spans, c.late_joins.max_bytes, nanos(c.late_joins.keep)),
            persistence: Persistence::default(),
            clocks: DeadlineIndex::default(),
            insight: insight::InsightState::default(),
            settling: SettleIndex::default(),
            coverage: CoverageCounter::new(
                config.metrics.max_coverage_routes,
                config.metrics.route_attributes.clone(),
                config.metrics.route_from_span_name,
            ),
            own: OwnSource::new(&config.order_traces.service_name),
            next_idle_scan: 0,
            next_stats_refresh: 0,
            stats: EngineStats::default(),
            config,
        };
        let mut orders = orders;
        // Closed orders are loaded oldest first so that eviction keeps the most recent ones.
        orders.sort_by_key(|o| o.closed_at_unix_nanos.unwrap_or(u64::MAX));
        for order in orders {
            if engine.orders.len() >= engine.config.correlation.max_orders && !engine.evict_closed() {
                // The rest stay in the store, to be read when a span or a query names them.
                engine.cold = true;
                break;
            }
            if order.is_closed() {
                engine.closed.push_back(order.key.clone());
            }
            engine.index_deadlines(&order);
            engine.index_unsettled(&order);
            engine.orders.insert(order.key.clone(), order);
        }
        for alias in aliases {
            if let Some(kind) = engine.config.correlation.aliases.iter().position(|a| a.kind == alias.kind) {
                if alias.over_cap {
                    engine.aliases.restore_over_cap(kind, &alias.value);
                } else if engine.aliases.learn(kind, &alias.value, &alias.orders) == correlate::Learned::OverCap {
                    // A cap lowered since the value was stored puts it over the cap now, as learning would: counted,
                    // and written back as such by the first commit.
                    engine.stats.aliases_over_cap += 1;
                    engine.persistence.alias_changed(kind, &alias.value);
                }
            }
        }
        engine
    }

    /// Lets the engine evict open orders when memory is full and read them back when a span or their wake names
    /// them again. `orders_left_in_store` says that the store holds orders that were not given to [`Engine::new`].
    pub fn set_order_loader(&mut self, loader: OrderLoader, orders_left_in_store: bool) {
        self.loader = Some(Loader(loader));
        self.cold |= orders_left_in_store;
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Spans waiting to inherit an order (gauge).
    pub fn pending_spans(&self) -> usize {
        self.pending.len()
    }

    pub fn order(&self, key: &str) -> Option<&OrderRecord> {
        self.orders.get(key)
    }

    /// Every alias value the engine knows that names orders (values over the cap name none).
    pub fn alias_records(&self) -> Vec<AliasRecord> {
        self.aliases
            .named()
            .filter_map(|(kind, value, orders)| {
                Some(AliasRecord {
                    kind: self.config.correlation.aliases.get(kind)?.kind.clone(),
                    value: value.to_string(),
                    orders: orders.to_vec(),
                    over_cap: false,
                })
            })
            .collect()
    }

    /// The orders an alias value names, for each alias kind that knows the value: what a search by shipment,
    /// delivery, invoice or ASN number finds. A value over the cap names no order.
    pub fn orders_by_alias(&self, value: &str) -> Vec<(&str, &[String])> {
        self.config
            .correlation
            .aliases
            .iter()
            .enumerate()
            .filter_map(|(kind, source)| self.aliases.get(kind, value).map(|orders| (source.kind.as_str(), orders)))
            .collect()
    }

    pub fn orders(&self) -> impl Iterator<Item = &OrderRecord> {
        self.orders.values()
    }

    /// Correlates, labels and re-emits a batch of spans received at `now`.
    pub fn process(&mut self, batch: Vec<ResourceSpans>, now: u64, out: &mut Output) {
        self.take_up_insight(out);
        for input in flatten(batch) {
            self.stats.spans_in += 1;
            self.process_span(input, now, out);
        }
    }

    /// Advances time: spans whose wait ran out join the orders they know or pass on uncorrelated, milestones
    /// settle, deadlines breach, idle orders close.
    pub fn tick(&mut self, now: u64, out: &mut Output) {
        self.take_up_insight(out);
        for input in self.pending.expire(now) {
            self.note_pending_change(&input);
            self.stop_waiting(input, now, out);
        }
        self.late_joins.expire(now);
        for trace in self.traces.expire(now) {
            self.persistence.trace_forgotten(trace);
        }
        // Settling first, so that a milestone reached in time settles its clock before the clock is judged.
        self.settle_due(now, out);
        self.check_deadlines(now, out);
        self.insight_tick(now);
        self.stats.pending_deadlines = self.clocks.len() as u64;
        self.stats.milestones_settling = self.settling.len() as u64;
        if now >= self.next_stats_refresh {
            self.next_stats_refresh = now.saturating_add(STATS_REFRESH_NANOS);
            let gauges = stats::order_gauges(&self.config, self.orders.values(), now);
            self.stats.open_orders_by_stage = gauges.by_stage;
            self.stats.stalled_orders = gauges.stalled;
            self.stats.open_exceptions = gauges.open_exceptions;
            self.stats.at_risk_clocks = gauges.at_risk;
            self.insight_stats();
            self.stats.coverage = self.coverage.snapshot();
        }
        if now >= self.next_idle_scan {
            let idle = nanos(self.config.order_traces.idle_close_after);
            // Scanning every order is linear, so it runs at a tenth of the idle period, between 100 ms and 60 s.
            self.next_idle_scan = now.saturating_add((idle / 10).clamp(100_000_000, 60_000_000_000));
            let due: Vec<String> =
                self.orders.values().filter(|o| self.idle_due(o, now)).map(|o| o.key.clone()).collect();
            for key in due {
                self.close(&key, records::IDLE.to_string(), now, out);
            }
        }
    }

    /// Ends the wait of every span still waiting for its order, as if its time had run out; used at shutdown of an
    /// engine whose state is not kept, so that nothing received is lost.
    pub fn flush_pending(&mut self, now: u64, out: &mut Output) {
        for input in self.pending.expire(u64::MAX) {
            self.note_pending_change(&input);
            self.stop_waiting(input, now, out);
        }
    }

    /// Spans passed on uncorrelated and kept in case they can still join (gauge).
    pub fn late_join_spans(&self) -> usize {
        self.late_joins.len()
    }
}

#[cfg(test)]
mod tests;
