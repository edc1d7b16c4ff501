//! The pure core: correlation, labelling and order-trace construction.
//!
//! The engine does no I/O and reads no clock: every call takes `now` (Unix nanoseconds) and returns the spans to
//! export in an [`Output`]; the state changes to persist are taken with [`Engine::take_changes`]. Everything it
//! holds is bounded by the configuration, with a counter in [`EngineStats`] wherever a bound turns data away.

mod accountability;
pub mod attributes;
pub mod correlate;
pub mod emit;
pub mod events;
pub mod ids;
pub mod labels;

use crate::config::Config;
use crate::order_state::{AliasRecord, ExceptionState, MilestoneState, OrderRecord, Reach};
use correlate::{extract_keys, AliasIndex, PendingSpans, TraceMemory};
pub use emit::Output;
use labels::Labels;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, TracesData};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The resource a span came with, shared by all spans of one `ResourceSpans`.
#[derive(Debug)]
pub struct ResourceContext {
    pub resource: Option<Resource>,
    pub schema_url: String,
    /// `service.name`, or `unknown_service` as the SDKs say when it is missing.
    pub service_name: String,
}

impl ResourceContext {
    pub fn new(resource: Option<Resource>, schema_url: String) -> ResourceContext {
        let service_name = resource
            .as_ref()
            .and_then(|r| attributes::find(&r.attributes, "service.name"))
            .and_then(attributes::scalar_string)
            .map(|s| s.into_owned())
            .unwrap_or_else(|| "unknown_service".to_string());
        ResourceContext { resource, schema_url, service_name }
    }
}

/// The instrumentation scope a span came with.
#[derive(Debug)]
pub struct ScopeContext {
    pub scope: Option<InstrumentationScope>,
    pub schema_url: String,
}

/// One incoming span with its resource and scope.
#[derive(Debug)]
pub struct SpanInput {
    pub resource: Arc<ResourceContext>,
    pub scope: Arc<ScopeContext>,
    pub span: Span,
}

/// Splits OTLP `ResourceSpans` into individual spans, sharing their resource and scope.
pub fn flatten(batch: Vec<ResourceSpans>) -> impl Iterator<Item = SpanInput> {
    batch.into_iter().flat_map(|rs| {
        let resource = Arc::new(ResourceContext::new(rs.resource, rs.schema_url));
        rs.scope_spans.into_iter().flat_map(move |ss| {
            let resource = resource.clone();
            let scope = Arc::new(ScopeContext { scope: ss.scope, schema_url: ss.schema_url });
            ss.spans.into_iter().map(move |span| SpanInput { resource: resource.clone(), scope: scope.clone(), span })
        })
    })
}

/// Counters of what the engine did; monotonic unless named as a gauge.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineStats {
    pub spans_in: u64,
    pub spans_correlated: u64,
    /// Spans that found no order, after waiting or because the wait buffer was full.
    pub spans_uncorrelated: u64,
    /// Spans that inherited their order from their technical trace.
    pub spans_inherited: u64,
    /// Spans passed on without waiting because the wait buffer was full.
    pub pending_overflow: u64,
    /// Spans re-emitted into order traces (one per order a span concerns).
    pub order_spans_emitted: u64,
    pub milestone_spans_emitted: u64,
    pub root_spans_emitted: u64,
    pub orders_created: u64,
    /// New orders turned away because `max_orders` open orders are held.
    pub orders_refused: u64,
    pub orders_evicted: u64,
    pub orders_closed: u64,
    pub aliases_learned: u64,
    /// Alias values not learned because `max_aliases` is reached.
    pub aliases_refused: u64,
    pub traces_evicted: u64,
    pub exceptions_recorded: u64,
    pub sla_breaches: u64,
    pub conformance_findings: u64,
    /// Spans reporting SLA breaches and conformance findings.
    pub finding_spans_emitted: u64,
    /// Spans correlated and uncorrelated by `service.name` and route (`http.route`, else the span name), bounded
    /// by `telemetry.metrics.max_coverage_routes`, the rest counting under `other`/`other`; refreshed once a second.
    pub coverage: BTreeMap<(String, String), Coverage>,
    /// Open orders by current stage (gauge), recounted at most once a second.
    pub open_orders_by_stage: BTreeMap<String, u64>,
    /// Running SLA clocks (gauge).
    pub pending_deadlines: u64,
    /// Stored waiting spans that could not be decoded at startup (damage on disk).
    pub pending_undecodable: u64,
}

/// Correlated and uncorrelated span counts of one route.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub correlated: u64,
    pub uncorrelated: u64,
}

/// State changes to persist after a call.
#[derive(Debug, Default)]
pub struct StateChanges {
    pub orders: Vec<OrderRecord>,
    pub aliases: Vec<AliasRecord>,
    /// Spans waiting to inherit an order, per technical trace id: the encoded spans still waiting, or `None`
    /// when none wait any more.
    pub pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Technical traces known to concern orders, per trace id: the encoded orders and expiry, or `None` when the
    /// trace is forgotten.
    pub traces: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl StateChanges {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty() && self.aliases.is_empty() && self.pending.is_empty() && self.traces.is_empty()
    }
}

/// A remembered technical trace as stored: its orders and when it is forgotten (ordertrail's clock).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredTrace {
    orders: Vec<String>,
    expires_unix_nanos: u64,
}

pub struct Engine {
    config: Arc<Config>,
    orders: HashMap<String, OrderRecord>,
    /// Closed orders in the order they closed, the first to go when memory is full.
    closed: VecDeque<String>,
    aliases: AliasIndex,
    traces: TraceMemory,
    pending: PendingSpans,
    dirty_orders: HashSet<String>,
    dirty_aliases: HashSet<(usize, String)>,
    /// Technical traces whose waiting spans changed since the last `take_changes`.
    dirty_pending: HashSet<ids::TraceId>,
    /// Technical traces with waiting spans in the store.
    persisted_pending: HashSet<ids::TraceId>,
    /// Remembered technical traces that changed since the last `take_changes`.
    dirty_traces: HashSet<ids::TraceId>,
    /// Remembered technical traces in the store.
    persisted_traces: HashSet<ids::TraceId>,
    own_resource: Arc<ResourceContext>,
    own_scope: Arc<ScopeContext>,
    next_idle_scan: u64,
    next_stage_count: u64,
    /// Running SLA clocks by when they are checked: (due, order key, target index).
    deadlines: BTreeSet<(u64, String, usize)>,
    /// When each running clock is checked, to find its entry in `deadlines`.
    due: HashMap<(String, usize), u64>,
    /// The first tick after startup; breach checks hold for the detection delay after it.
    first_tick: Option<u64>,
    /// Correlation coverage by service, then route; copied into `EngineStats::coverage` once a second.
    coverage: HashMap<String, HashMap<String, Coverage>>,
    /// Distinct service/route pairs in `coverage`.
    coverage_routes: usize,
    stats: EngineStats,
}

/// How often open orders are recounted by stage: a linear scan, so not on every tick.
const STAGE_COUNT_INTERVAL_NANOS: u64 = 1_000_000_000;

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Engine {
    /// An engine with the state loaded from a store.
    pub fn new(config: Arc<Config>, orders: Vec<OrderRecord>, aliases: Vec<AliasRecord>) -> Engine {
        let c = &config.correlation;
        let own_resource = Arc::new(ResourceContext::new(
            Some(Resource {
                attributes: vec![
                    attributes::string("service.name", config.order_traces.service_name.clone()),
                    attributes::string("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            String::new(),
        ));
        let own_scope = Arc::new(ScopeContext {
            scope: Some(InstrumentationScope {
                name: "ordertrail".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            schema_url: String::new(),
        });
        let mut engine = Engine {
            orders: HashMap::new(),
            closed: VecDeque::new(),
            aliases: AliasIndex::new(c.max_aliases),
            traces: TraceMemory::new(c.max_tracked_traces, nanos(c.trace_memory)),
            pending: PendingSpans::new(c.max_pending_spans, nanos(c.inherit_wait)),
            dirty_orders: HashSet::new(),
            dirty_aliases: HashSet::new(),
            dirty_pending: HashSet::new(),
            persisted_pending: HashSet::new(),
            dirty_traces: HashSet::new(),
            persisted_traces: HashSet::new(),
            own_resource,
            own_scope,
            next_idle_scan: 0,
            next_stage_count: 0,
            deadlines: BTreeSet::new(),
            due: HashMap::new(),
            first_tick: None,
            coverage: HashMap::new(),
            coverage_routes: 0,
            stats: EngineStats::default(),
            config,
        };
        let mut orders = orders;
        // Closed orders are loaded oldest first so that eviction keeps the most recent ones.
        orders.sort_by_key(|o| o.closed_at_unix_nanos.unwrap_or(u64::MAX));
        for order in orders {
            if engine.orders.len() >= engine.config.correlation.max_orders && !engine.evict_closed() {
                break;
            }
            if order.is_closed() {
                engine.closed.push_back(order.key.clone());
            }
            engine.index_deadlines(&order);
            engine.orders.insert(order.key.clone(), order);
        }
        for alias in aliases {
            if let Some(kind) = engine.config.correlation.aliases.iter().position(|a| a.kind == alias.kind) {
                engine.aliases.learn(kind, &alias.value, &alias.orders);
            }
        }
        engine
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

    pub fn orders(&self) -> impl Iterator<Item = &OrderRecord> {
        self.orders.values()
    }

    /// Correlates, labels and re-emits a batch of spans received at `now`.
    pub fn process(&mut self, batch: Vec<ResourceSpans>, now: u64, out: &mut Output) {
        for input in flatten(batch) {
            self.stats.spans_in += 1;
            self.process_span(input, now, out);
        }
    }

    /// Advances time: spans whose wait ran out pass on uncorrelated, idle orders close.
    pub fn tick(&mut self, now: u64, out: &mut Output) {
        for input in self.pending.expire(now) {
            self.note_pending_change(&input);
            self.pass_uncorrelated(input, out);
        }
        for trace in self.traces.expire(now) {
            self.forget_trace(trace);
        }
        self.check_deadlines(now, out);
        self.stats.pending_deadlines = self.deadlines.len() as u64;
        if now >= self.next_stage_count {
            self.next_stage_count = now.saturating_add(STAGE_COUNT_INTERVAL_NANOS);
            self.count_stages();
            self.stats.coverage = self
                .coverage
                .iter()
                .flat_map(|(service, routes)| {
                    routes.iter().map(move |(route, c)| ((service.clone(), route.clone()), *c))
                })
                .collect();
        }
        if now >= self.next_idle_scan {
            let idle = nanos(self.config.order_traces.idle_close_after);
            // Scanning every order is linear, so it runs at a tenth of the idle period, between 100 ms and 60 s.
            self.next_idle_scan = now.saturating_add((idle / 10).clamp(100_000_000, 60_000_000_000));
            let due: Vec<String> = self
                .orders
                .values()
                .filter(|o| !o.is_closed() && o.last_activity_unix_nanos.saturating_add(idle) <= now)
                .map(|o| o.key.clone())
                .collect();
            for key in due {
                self.close(&key, "idle".to_string(), now, out);
            }
        }
    }

    /// Passes on every span still waiting to inherit an order, uncorrelated; used at shutdown so that nothing
    /// received is lost.
    pub fn flush_pending(&mut self, out: &mut Output) {
        for input in self.pending.expire(u64::MAX) {
            self.note_pending_change(&input);
            self.pass_uncorrelated(input, out);
        }
    }

    /// Puts back the spans that were waiting when the process stopped (`StateChanges::pending` as stored); they
    /// wait `inherit_wait` afresh from `now`. Spans that cannot wait (the buffer is full) pass on uncorrelated.
    pub fn restore_pending(&mut self, stored: Vec<(Vec<u8>, Vec<u8>)>, now: u64, out: &mut Output) {
        for (key, blob) in stored {
            let Ok(data) = <TracesData as prost::Message>::decode(blob.as_slice()) else {
                // The store wrote these bytes itself, so this is damage on disk; it is counted, not fatal, and the
                // record is deleted by the next commit so that it is not counted again at every start.
                self.stats.pending_undecodable += 1;
                if let Ok(trace) = <ids::TraceId>::try_from(key.as_slice()) {
                    self.persisted_pending.insert(trace);
                    self.dirty_pending.insert(trace);
                }
                continue;
            };
            for input in flatten(data.resource_spans) {
                let Ok(trace) = <ids::TraceId>::try_from(input.span.trace_id.as_slice()) else { continue };
                self.persisted_pending.insert(trace);
                self.dirty_pending.insert(trace);
                // The keyed span of its trace may have been committed before the stop, with the trace remembered.
                if let Some(orders) = self.traces.orders(&trace).map(<[String]>::to_vec) {
                    self.stats.spans_inherited += 1;
                    self.correlate(input, &orders, now, out);
                    continue;
                }
                if let Err(input) = self.pending.hold(trace, input, now) {
                    self.stats.pending_overflow += 1;
                    self.pass_uncorrelated(*input, out);
                }
            }
        }
    }

    /// Puts back the technical traces remembered when the process stopped (`StateChanges::traces` as stored), in
    /// expiry order; those whose time ran out are deleted from the store instead.
    pub fn restore_traces(&mut self, stored: Vec<(Vec<u8>, Vec<u8>)>, now: u64) {
        let mut entries: Vec<(ids::TraceId, StoredTrace)> = Vec::new();
        for (key, value) in stored {
            let Ok(trace) = <ids::TraceId>::try_from(key.as_slice()) else { continue };
            self.persisted_traces.insert(trace);
            match serde_json::from_slice::<StoredTrace>(&value) {
                Ok(entry) if entry.expires_unix_nanos > now => entries.push((trace, entry)),
                // Expired, or damaged on disk: either way it is deleted by the next commit.
                _ => {
                    self.dirty_traces.insert(trace);
                }
            }
        }
        entries.sort_by_key(|(_, entry)| entry.expires_unix_nanos);
        for (trace, entry) in entries {
            if !self.traces.restore(trace, entry.orders, entry.expires_unix_nanos) {
                self.dirty_traces.insert(trace);
            }
        }
    }

    fn forget_trace(&mut self, trace: ids::TraceId) {
        if self.persisted_traces.contains(&trace) {
            self.dirty_traces.insert(trace);
        }
    }

    fn note_pending_change(&mut self, input: &SpanInput) {
        if let Ok(trace) = <ids::TraceId>::try_from(input.span.trace_id.as_slice()) {
            self.dirty_pending.insert(trace);
        }
    }

    /// The state changed since the last call.
    pub fn take_changes(&mut self) -> StateChanges {
        let orders = self.dirty_orders.drain().filter_map(|k| self.orders.get(&k).cloned()).collect();
        let aliases = self
            .dirty_aliases
            .drain()
            .map(|(kind, value)| AliasRecord {
                kind: self.config.correlation.aliases[kind].kind.clone(),
                orders: self.aliases.orders_of(kind, &value),
                value,
            })
            .collect();
        let mut pending = Vec::new();
        for trace in std::mem::take(&mut self.dirty_pending) {
            match self.pending.waiting(&trace) {
                Some(spans) if !spans.is_empty() => {
                    pending.push((trace.to_vec(), Some(encode_waiting(spans))));
                    self.persisted_pending.insert(trace);
                }
                _ => {
                    // Spans held and released between two commits never reach the store at all.
                    if self.persisted_pending.remove(&trace) {
                        pending.push((trace.to_vec(), None));
                    }
                }
            }
        }
        let mut traces = Vec::new();
        for trace in std::mem::take(&mut self.dirty_traces) {
            match self.traces.entry(&trace) {
                Some((orders, expires)) => {
                    let stored = StoredTrace { orders: orders.to_vec(), expires_unix_nanos: expires };
                    let bytes = serde_json::to_vec(&stored).expect("plain strings and numbers encode");
                    traces.push((trace.to_vec(), Some(bytes)));
                    self.persisted_traces.insert(trace);
                }
                None => {
                    if self.persisted_traces.remove(&trace) {
                        traces.push((trace.to_vec(), None));
                    }
                }
            }
        }
        StateChanges { orders, aliases, pending, traces }
    }

    /// Takes back changes whose commit failed, so that the next `take_changes` offers them again (with whatever
    /// changed since). The engine's memory is ahead of the store until a commit succeeds.
    pub fn commit_failed(&mut self, changes: StateChanges) {
        for order in changes.orders {
            self.dirty_orders.insert(order.key);
        }
        for alias in changes.aliases {
            if let Some(kind) = self.config.correlation.aliases.iter().position(|a| a.kind == alias.kind) {
                self.dirty_aliases.insert((kind, alias.value));
            }
        }
        for (trace, _) in changes.pending {
            if let Ok(trace) = <ids::TraceId>::try_from(trace.as_slice()) {
                // Whether or not the failed write would have put or deleted the row, the store may hold it.
                self.persisted_pending.insert(trace);
                self.dirty_pending.insert(trace);
            }
        }
        for (trace, _) in changes.traces {
            if let Ok(trace) = <ids::TraceId>::try_from(trace.as_slice()) {
                self.persisted_traces.insert(trace);
                self.dirty_traces.insert(trace);
            }
        }
    }

    fn process_span(&mut self, input: SpanInput, now: u64, out: &mut Output) {
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
        let trace_id: Option<ids::TraceId> = input.span.trace_id.as_slice().try_into().ok();
        if orders.is_empty() {
            if let Some(known) = trace_id.and_then(|t| self.traces.orders(&t)) {
                let orders = known.to_vec();
                self.stats.spans_inherited += 1;
                self.correlate(input, &orders, now, out);
                return;
            }
            match trace_id {
                Some(trace) => match self.pending.hold(trace, input, now) {
                    Ok(()) => {
                        self.dirty_pending.insert(trace);
                    }
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
                        self.dirty_aliases.insert((*kind, value.clone()));
                    }
                    Some(false) => {}
                    None => self.stats.aliases_refused += 1,
                }
            }
        }
        if let Some(trace) = trace_id {
            let remembered = self.traces.remember(trace, &orders, now);
            if remembered.changed && self.config.correlation.persist_trace_memory {
                self.dirty_traces.insert(trace);
            }
            if let Some(evicted) = remembered.evicted {
                self.stats.traces_evicted += 1;
                self.forget_trace(evicted);
            }
            let released = self.pending.release(&trace);
            if !released.is_empty() {
                self.dirty_pending.insert(trace);
            }
            for waiting in released {
                self.stats.spans_inherited += 1;
                self.correlate(waiting, &orders, now, out);
            }
        }
        self.correlate(input, &orders, now, out);
    }

    fn count_stages(&mut self) {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for order in self.orders.values().filter(|o| !o.is_closed()) {
            let stage = emit::stage_and_next(&self.config, order).0.map_or("none", |m| m.name.as_str());
            match counts.get_mut(stage) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(stage.to_string(), 1);
                }
            }
        }
        self.stats.open_orders_by_stage = counts;
    }

    /// Counts a span for correlation coverage under its service and route.
    fn count_coverage(&mut self, input: &SpanInput, correlated: bool) {
        let route = attributes::find(&input.span.attributes, "http.route")
            .and_then(attributes::scalar_string)
            .unwrap_or(std::borrow::Cow::Borrowed(input.span.name.as_str()));
        let service = input.resource.service_name.as_str();
        // Looked up by reference, so that the per-span path allocates only the first time a route is seen.
        let known = self.coverage.get_mut(service).and_then(|routes| routes.get_mut(route.as_ref()));
        let entry = match known {
            Some(entry) => entry,
            None => {
                // Both become metric labels, so a pathological value is cut rather than carried into every scrape.
                let bounded = |v: &str| v.chars().take(128).collect::<String>();
                let (service, route) = if self.coverage_routes + 1 < self.config.metrics.max_coverage_routes {
                    self.coverage_routes += 1;
                    (bounded(service), bounded(&route))
                } else {
                    ("other".to_string(), "other".to_string())
                };
                self.coverage.entry(service).or_default().entry(route).or_default()
            }
        };
        if correlated {
            entry.correlated += 1;
        } else {
            entry.uncorrelated += 1;
        }
    }

    fn pass_uncorrelated(&mut self, input: SpanInput, out: &mut Output) {
        self.stats.spans_uncorrelated += 1;
        self.count_coverage(&input, false);
        if self.config.order_traces.passthrough {
            out.push(&input.resource, &input.scope, input.span);
        }
    }

    /// Makes room for a new order by forgetting the oldest closed one; the store still has it.
    /// An order whose last changes are not yet committed is never evicted: its final state must reach the store
    /// first, or a restart would bring back a stale record.
    fn evict_closed(&mut self) -> bool {
        let mut kept = Vec::new();
        let mut evicted = false;
        while let Some(key) = self.closed.pop_front() {
            if self.dirty_orders.contains(&key) {
                kept.push(key);
                continue;
            }
            if self.orders.get(&key).is_some_and(OrderRecord::is_closed) {
                self.orders.remove(&key);
                self.stats.orders_evicted += 1;
                evicted = true;
                break;
            }
        }
        for key in kept.into_iter().rev() {
            self.closed.push_front(key);
        }
        evicted
    }

    fn correlate(&mut self, input: SpanInput, orders: &[String], now: u64, out: &mut Output) {
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
            self.dirty_orders.insert(key.clone());
        }
        if accepted.is_empty() {
            self.pass_uncorrelated(input, out);
            return;
        }
        self.stats.spans_correlated += 1;
        self.count_coverage(&input, true);
        if config.order_traces.passthrough {
            let span = emit::enriched_original(&config, &input, &labels, &accepted);
            out.push(&input.resource, &input.scope, span);
        }
    }

    /// Updates the order's record with one span; returns the milestone the span newly reached.
    fn record(&mut self, key: &str, input: &SpanInput, labels: &Labels, now: u64, out: &mut Output) -> Option<usize> {
        let config = &self.config;
        let order = self.orders.get_mut(key).expect("order inserted by the caller");
        let span = &input.span;
        record_dimensions(config, input, order);
        let start = if span.start_time_unix_nano > 0 { span.start_time_unix_nano } else { now };
        let end = span.end_time_unix_nano.max(start);
        order.span_count += 1;
        order.first_seen_unix_nanos =
            if order.first_seen_unix_nanos == 0 { start } else { order.first_seen_unix_nanos.min(start) };
        order.last_seen_unix_nanos = order.last_seen_unix_nanos.max(end);
        order.last_activity_unix_nanos = now;
        let actor = labels.actor.clone();
        let mut newly_reached = None;
        let milestone_name = labels.milestone.map(|m| config.taxonomy.milestones[m].name.clone());
        if let (Some(m), Some(name)) = (labels.milestone, &milestone_name) {
            let state = match order.milestones.iter_mut().position(|s| &s.name == name) {
                Some(i) => &mut order.milestones[i],
                None => {
                    order.milestones.push(MilestoneState {
                        name: name.clone(),
                        first_work_unix_nanos: start,
                        span_count: 0,
                        reached: None,
                        span_emitted: false,
                    });
                    order.milestones.last_mut().expect("just pushed")
                }
            };
            state.span_count += 1;
            state.first_work_unix_nanos = state.first_work_unix_nanos.min(start);
            if labels.reaches && state.reached.is_none() {
                state.reached = Some(Reach {
                    at_unix_nanos: end,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    service: input.resource.service_name.clone(),
                    actor: actor.clone(),
                });
                newly_reached = Some(m);
                // Reaching a milestone resolves the exceptions that held it up.
                for exception in order.exceptions.iter_mut() {
                    if exception.milestone.as_deref() == Some(name) && exception.resolved_at_unix_nanos.is_none() {
                        exception.resolved_at_unix_nanos = Some(end);
                    }
                }
            }
        }
        for finding in labels.exception.iter().chain(&labels.findings) {
            self.stats.exceptions_recorded += 1;
            let class = config.taxonomy.classes[finding.class].name.clone();
            out.events.push(events::Event::ExceptionRecorded {
                order: key.to_string(),
                class: class.clone(),
                owner: finding.owner.clone(),
                milestone: milestone_name.clone(),
                signature: finding.signature.clone(),
                reason: finding.reason.clone(),
                dimensions: order.dimensions.clone(),
            });
            let existing = order
                .exceptions
                .iter_mut()
                .find(|e| e.signature == finding.signature && e.milestone == milestone_name && e.class == class);
            match existing {
                Some(e) => {
                    e.count += 1;
                    e.first_seen_unix_nanos = e.first_seen_unix_nanos.min(start);
                    e.last_seen_unix_nanos = e.last_seen_unix_nanos.max(end);
                    e.reason = finding.reason.clone();
                    e.trace_id = hex::encode(&span.trace_id);
                    e.span_id = hex::encode(&span.span_id);
                    e.service = input.resource.service_name.clone();
                    e.actor = actor.clone();
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
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    service: input.resource.service_name.clone(),
                    actor: actor.clone(),
                    // An exception shown by the very span that reaches its milestone (an approval made outside
                    // the system of record) stays open: reaching the milestone does not undo the breach.
                    resolved_at_unix_nanos: None,
                }),
            }
        }
        newly_reached
    }

    fn emit_milestone(&mut self, key: &str, m: usize, out: &mut Output) {
        let config = self.config.clone();
        let Some(order) = self.orders.get_mut(key) else { return };
        let name = &config.taxonomy.milestones[m].name;
        let Some(state) = order.milestones.iter_mut().find(|s| &s.name == name) else { return };
        if state.span_emitted {
            return;
        }
        state.span_emitted = true;
        if let Some(span) = emit::milestone_span(&config, order, m) {
            out.push(&self.own_resource, &self.own_scope, span);
            self.stats.milestone_spans_emitted += 1;
        }
    }

    /// Closes an order: emits the spans of milestones worked on but never reached, then the root span.
    fn close(&mut self, key: &str, reason: String, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let Some(order) = self.orders.get_mut(key) else { return };
        if order.is_closed() {
            return;
        }
        order.closed_at_unix_nanos = Some(now);
        order.close_reason = Some(reason);
        let unreached: Vec<usize> = order
            .milestones
            .iter()
            .filter(|s| !s.span_emitted)
            .filter_map(|s| config.taxonomy.milestone(&s.name))
            .collect();
        for m in unreached {
            self.emit_milestone(key, m, out);
        }
        // Nothing more is awaited of a closed order, so its clocks stop instead of breaching after the root.
        self.stop_clocks(key, now);
        let order = &self.orders[key];
        out.push(&self.own_resource, &self.own_scope, emit::root_span(&config, order));
        out.events.push(events::Event::OrderClosed {
            order: key.to_string(),
            reason: order.close_reason.clone().unwrap_or_default(),
            fill_ratio: order.fill_ratio(),
            dimensions: order.dimensions.clone(),
        });
        self.stats.root_spans_emitted += 1;
        self.stats.orders_closed += 1;
        self.closed.push_back(key.to_string());
        self.dirty_orders.insert(key.to_string());
    }
}

/// Encodes waiting spans as OTLP `TracesData`, one `ResourceSpans` per span, for the store.
fn encode_waiting(spans: &[SpanInput]) -> Vec<u8> {
    let data = TracesData {
        resource_spans: spans
            .iter()
            .map(|input| ResourceSpans {
                resource: input.resource.resource.clone(),
                schema_url: input.resource.schema_url.clone(),
                scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                    scope: input.scope.scope.clone(),
                    schema_url: input.scope.schema_url.clone(),
                    spans: vec![input.span.clone()],
                }],
            })
            .collect(),
    };
    prost::Message::encode_to_vec(&data)
}

/// Records the order's dimensions (first value wins) and quantities from one span.
fn record_dimensions(config: &Config, input: &SpanInput, order: &mut OrderRecord) {
    for dimension in &config.dimensions {
        if order.dimensions.contains_key(&dimension.name) {
            continue;
        }
        let span_value = dimension.attributes.iter().find_map(|a| attributes::find(&input.span.attributes, a));
        let resource_attributes = input.resource.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let value = span_value
            .or_else(|| dimension.resource_attributes.iter().find_map(|a| attributes::find(resource_attributes, a)));
        if let Some(value) = value.and_then(attributes::scalar_string).filter(|v| !v.trim().is_empty()) {
            // Values are labels and filters, so an overlong value is cut rather than allowed to bloat every record.
            let value: String = value.trim().chars().take(128).collect();
            order.dimensions.insert(dimension.name.clone(), value);
        }
    }
    let quantity = |keys: &[String]| {
        keys.iter()
            .find_map(|k| attributes::find(&input.span.attributes, k))
            .and_then(attributes::number)
            .filter(|q| q.is_finite() && *q >= 0.0)
    };
    if let Some(ordered) = quantity(&config.kpis.ordered_quantity_attributes) {
        order.ordered_quantity = Some(ordered);
    }
    if let Some(shipped) = quantity(&config.kpis.shipped_quantity_attributes) {
        order.shipped_quantity = Some(order.shipped_quantity.map_or(shipped, |s| s.max(shipped)));
    }
}

#[cfg(test)]
mod tests;
