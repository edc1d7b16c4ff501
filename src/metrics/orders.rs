//! The metrics ordertrail publishes: what happened to orders (milestone transitions, SLA durations and breaches,
//! exceptions, open orders by stage, fill rate, correlation coverage) and how the pipeline itself is doing.
//!
//! Engine events are counted as they come out of each batch; the pipeline's atomic counters and the engine's
//! gauges are mirrored after each batch, so `/metrics` and the OTLP push read the same registry.

use crate::telemetry::Counters;
use ordertrail_core::config::Config;
use ordertrail_core::engine::events::Event;
use ordertrail_core::engine::EngineStats;
use ordertrail_core::ids;
use ordertrail_core::insight::patterns::PatternEvent;
use ordertrail_metrics::{Counter, Exemplar, Gauge, Histogram, Registry};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Business durations run from minutes to weeks.
const DURATION_BUCKETS: [f64; 13] =
    [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0, 172800.0, 345600.0, 604800.0];
const RATIO_BUCKETS: [f64; 8] = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0];

/// Metric label values of the configured dimensions, each bounded to its `max_metric_values` distinct values.
struct DimensionLabels {
    /// (dimension name, bound) of the dimensions that label metrics.
    dimensions: Vec<(String, usize)>,
    seen: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl DimensionLabels {
    fn values(&self, dimensions: &BTreeMap<String, String>) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.dimensions
            .iter()
            .map(|(name, bound)| {
                let Some(value) = dimensions.get(name) else { return String::new() };
                let known = seen.entry(name.clone()).or_default();
                if known.contains(value) || known.len() < *bound {
                    known.insert(value.clone());
                    value.clone()
                } else {
                    "other".to_string()
                }
            })
            .collect()
    }
}

/// A counter mirrored from one of the pipeline's atomic counters.
type PipelineCounter = (Counter, fn(&Counters) -> u64);
/// A counter mirrored from one of the engine's counters.
type EngineCounter = (Counter, fn(&EngineStats) -> u64);

/// The metrics ordertrail publishes, fed by engine events and mirrored counters.
pub struct OrderMetrics {
    registry: Registry,
    /// Owners named by the configuration; an owner a span declares for itself is reported as `other`, so that
    /// senders cannot mint label values.
    known_owners: BTreeSet<String>,
    config: Arc<Config>,
    dimensions: DimensionLabels,
    transition: Histogram,
    sla_duration: Histogram,
    sla_lateness: Histogram,
    sla_breaches: Counter,
    sla_withdrawn: Counter,
    sla_at_risk: Counter,
    pattern_events: Counter,
    at_risk_clocks: Gauge,
    delay_model_samples: Gauge,
    exception_patterns: Gauge,
    exceptions: Counter,
    orders_closed: Counter,
    fill_ratio: Histogram,
    open_orders: Gauge,
    stalled_orders: Gauge,
    open_exceptions: Gauge,
    pending_deadlines: Gauge,
    milestones_settling: Gauge,
    coverage: Counter,
    pipeline: Vec<PipelineCounter>,
    engine: Vec<EngineCounter>,
    pending_spans: Gauge,
    late_join_spans: Gauge,
    series_overflow: Counter,
    queue_entries: Gauge,
    queue_bytes: Gauge,
    admitted_bytes: Gauge,
    admission_limit_bytes: Gauge,
}

fn labels<'a>(fixed: &[&'a str], dims: &'a [String]) -> Vec<&'a str> {
    fixed.iter().copied().chain(dims.iter().map(String::as_str)).collect()
}

impl std::fmt::Debug for OrderMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderMetrics").field("registry", &self.registry).finish_non_exhaustive()
    }
}

impl OrderMetrics {
    pub fn new(config: Arc<Config>) -> OrderMetrics {
        let registry = Registry::new(config.metrics.max_series_per_metric);
        let dims: Vec<(String, usize)> = config
            .dimensions
            .iter()
            .filter(|d| d.metric_label)
            .map(|d| (d.name.clone(), d.max_metric_values))
            .collect();
        let dim_names: Vec<&str> = dims.iter().map(|(n, _)| n.as_str()).collect();
        let with =
            |fixed: &[&'static str]| -> Vec<&str> { fixed.iter().copied().chain(dim_names.iter().copied()).collect() };
        let r = &registry;
        let pipeline: Vec<PipelineCounter> = vec![
            (r.counter("ordertrail_receiver_requests_accepted", "OTLP export requests accepted.", &[]), |c| {
                Counters::get(&c.requests_accepted)
            }),
            (
                r.counter(
                    "ordertrail_receiver_requests_refused",
                    "Requests refused because the pipeline was full (retryable).",
                    &[],
                ),
                |c| Counters::get(&c.requests_refused_busy),
            ),
            (
                r.counter(
                    "ordertrail_receiver_requests_refused_queue_full",
                    "Requests refused because the persistent export queue was full (retryable).",
                    &[],
                ),
                |c| Counters::get(&c.requests_refused_queue_full),
            ),
            (
                r.counter(
                    "ordertrail_receiver_requests_refused_memory",
                    "Requests refused because resident memory was above pipeline.memory_limit_mib less its spike allowance (retryable).",
                    &[],
                ),
                |c| Counters::get(&c.requests_refused_memory),
            ),
            (
                r.counter(
                    "ordertrail_receiver_requests_refused_admission",
                    "Requests refused because the admission budget (pipeline.admission_limit_mib), or the sender's fair share of it, was taken (retryable).",
                    &[],
                ),
                |c| Counters::get(&c.requests_refused_admission),
            ),
            (
                r.counter(
                    "ordertrail_receiver_requests_abandoned",
                    "Requests not processed because their sender had given up (deadline passed or connection closed) before the engine reached them.",
                    &[],
                ),
                |c| Counters::get(&c.requests_abandoned),
            ),
            (
                r.counter(
                    "ordertrail_connections_refused",
                    "Connections closed on accept because their listener had connections.max_connections open.",
                    &[],
                ),
                |c| Counters::get(&c.connections_refused),
            ),
            (
                r.counter(
                    "ordertrail_tls_handshakes_failed",
                    "Connections closed because their TLS handshake failed or timed out (no or an untrusted client certificate, plain text on a TLS port).",
                    &[],
                ),
                |c| Counters::get(&c.tls_handshakes_failed),
            ),
            (
                r.counter(
                    "ordertrail_requests_unauthenticated",
                    "Requests refused for a missing or wrong bearer token, on the receivers and the API.",
                    &[],
                ),
                |c| Counters::get(&c.requests_unauthenticated),
            ),
            (
                r.counter("ordertrail_receiver_requests_malformed", "Requests whose body could not be decoded.", &[]),
                |c| Counters::get(&c.requests_malformed),
            ),
            (r.counter("ordertrail_receiver_spans_accepted", "Spans accepted by the receivers.", &[]), |c| {
                Counters::get(&c.spans_received)
            }),
            (r.counter("ordertrail_receiver_spans_rejected", "Spans rejected for invalid ids.", &[]), |c| {
                Counters::get(&c.spans_rejected)
            }),
            (r.counter("ordertrail_store_commit_failures", "State commits that failed.", &[]), |c| {
                Counters::get(&c.store_commit_failures)
            }),
            (
                r.counter(
                    "ordertrail_store_conflicts",
                    "Commits refused because another replica wrote one of their orders first; processed again.",
                    &[],
                ),
                |c| Counters::get(&c.store_conflicts),
            ),
            (
                r.counter(
                    "ordertrail_orders_changed_elsewhere",
                    "Orders dropped from memory because another replica changed them.",
                    &[],
                ),
                |c| Counters::get(&c.orders_changed_elsewhere),
            ),
            (
                r.counter(
                    "ordertrail_replicas_adopted",
                    "Stopped replicas whose export queue and waiting spans this replica took over.",
                    &[],
                ),
                |c| Counters::get(&c.replicas_adopted),
            ),
            (r.counter("ordertrail_notifications_sent", "Notifications a receiver took (2xx).", &[]), |c| {
                Counters::get(&c.notifications_sent)
            }),
            (
                r.counter(
                    "ordertrail_notifications_failed",
                    "Notifications given up on: refused by the receiver or out of retry budget.",
                    &[],
                ),
                |c| Counters::get(&c.notifications_failed),
            ),
            (
                r.counter("ordertrail_notifications_retried", "Notification attempts that failed and are made again.", &[]),
                |c| Counters::get(&c.notifications_retried),
            ),
            (
                r.counter(
                    "ordertrail_notifications_rate_limited",
                    "Times a notification waited for its team's share of notifications.rate_limit.",
                    &[],
                ),
                |c| Counters::get(&c.notifications_rate_limited),
            ),
            (
                r.counter(
                    "ordertrail_notifications_dropped",
                    "Notifications not queued because notifications.queue_size were already waiting.",
                    &[],
                ),
                |c| Counters::get(&c.notifications_dropped),
            ),
            (r.counter("ordertrail_exporter_spans_queued", "Spans handed to the exporter.", &[]), |c| {
                Counters::get(&c.export_spans_queued)
            }),
            (r.counter("ordertrail_exporter_spans_sent", "Spans the backend acknowledged.", &[]), |c| {
                Counters::get(&c.export_spans_sent)
            }),
            (
                r.counter(
                    "ordertrail_exporter_spans_failed",
                    "Spans given up on after a permanent error or the retry budget.",
                    &[],
                ),
                |c| Counters::get(&c.export_spans_failed),
            ),
            (
                r.counter(
                    "ordertrail_exporter_requests_halved",
                    "Export requests the backend refused as too large, sent again in halves.",
                    &[],
                ),
                |c| Counters::get(&c.export_requests_halved),
            ),
            (
                r.counter(
                    "ordertrail_exporter_spans_too_large",
                    "Spans dropped because the backend refused them as too large even alone, or they exceed exporters.otlp.batch.max_size_bytes.",
                    &[],
                ),
                |c| Counters::get(&c.export_spans_too_large),
            ),
            (r.counter("ordertrail_exporter_retries", "Export attempts retried.", &[]), |c| {
                Counters::get(&c.export_retries)
            }),
        ];
        let engine: Vec<EngineCounter> = vec![
            (
                r.counter(
                    "ordertrail_spans_inherited",
                    "Spans that inherited their order from their technical trace.",
                    &[],
                ),
                |s| s.spans_inherited,
            ),
            (
                r.counter(
                    "ordertrail_pending_overflow",
                    "Spans passed on without waiting because the wait buffer was full.",
                    &[],
                ),
                |s| s.pending_overflow,
            ),
            (
                r.counter(
                    "ordertrail_spans_late_joined",
                    "Spans passed on uncorrelated that joined their order later, when an alias they carry was learned or a keyed span of their trace arrived.",
                    &[],
                ),
                |s| s.spans_late_joined,
            ),
            (
                r.counter(
                    "ordertrail_late_joins_evicted",
                    "Uncorrelated spans dropped from the late-join memory to stay within correlation.late_joins bounds.",
                    &[],
                ),
                |s| s.late_joins_evicted,
            ),
            (
                r.counter(
                    "ordertrail_declared_labels_ignored",
                    "Spans that stated their own milestone or exception from a service not in taxonomy.trust_declared_labels_from; the statement was ignored.",
                    &[],
                ),
                |s| s.declared_labels_ignored,
            ),
            (
                r.counter(
                    "ordertrail_conformance_findings_withdrawn",
                    "Conformance findings taken back because the milestones they missed arrived later with earlier times.",
                    &[],
                ),
                |s| s.conformance_findings_withdrawn,
            ),
            (r.counter("ordertrail_order_spans_emitted", "Spans emitted into order traces.", &[]), |s| {
                s.order_spans_emitted
            }),
            (r.counter("ordertrail_orders_created", "Orders first seen.", &[]), |s| s.orders_created),
            (
                r.counter(
                    "ordertrail_orders_refused",
                    "New orders refused because max_orders open orders are held.",
                    &[],
                ),
                |s| s.orders_refused,
            ),
            (
                r.counter("ordertrail_orders_evicted", "Orders evicted from memory to keep within correlation.max_orders (still in the store).", &[]),
                |s| s.orders_evicted,
            ),
            (
                r.counter(
                    "ordertrail_orders_loaded",
                    "Evicted orders read back from the store because a span, deadline or settling milestone named them.",
                    &[],
                ),
                |s| s.orders_loaded,
            ),
            (
                r.counter(
                    "ordertrail_orders_woken",
                    "Orders not in memory read back from the store because a clock check, settling or idle close came due.",
                    &[],
                ),
                |s| s.orders_woken,
            ),
            (r.counter("ordertrail_aliases_learned", "Alias values learned.", &[]), |s| s.aliases_learned),
            (
                r.counter(
                    "ordertrail_exception_patterns_refused",
                    "New exception patterns not kept because patterns.max_patterns is reached.",
                    &[],
                ),
                |s| s.exception_patterns_refused,
            ),
            (
                r.counter(
                    "ordertrail_aliases_refused",
                    "Alias values not learned because max_aliases is reached.",
                    &[],
                ),
                |s| s.aliases_refused,
            ),
            (
                r.counter(
                    "ordertrail_aliases_over_cap",
                    "Alias values that named more than correlation.max_orders_per_alias orders and so name none.",
                    &[],
                ),
                |s| s.aliases_over_cap,
            ),
            (
                r.counter(
                    "ordertrail_traces_over_cap",
                    "Technical traces that named more than correlation.max_orders_per_trace orders and so pass none on.",
                    &[],
                ),
                |s| s.traces_over_cap,
            ),
            (
                r.counter(
                    "ordertrail_traces_evicted",
                    "Technical traces forgotten early because max_tracked_traces is reached.",
                    &[],
                ),
                |s| s.traces_evicted,
            ),
        ];
        // The bound of the export queue, so that an alert can compare the queue with it.
        let queue_max_bytes = r.gauge(
            "ordertrail_export_queue_max_bytes",
            "The bound of the persistent export queue (exporters.otlp.sending_queue.max_bytes).",
            &[],
        );
        if let Some(exporter) = &config.exporter {
            queue_max_bytes.set(&[], exporter.max_queue_bytes as f64);
        }
        OrderMetrics {
            transition: r.histogram(
                "ordertrail_milestone_transition_seconds",
                "Time from the previous main-path milestone (or the order's first span) to this milestone.",
                "seconds",
                &with(&["milestone", "from"]),
                &DURATION_BUCKETS,
            ),
            sla_duration: r.histogram(
                "ordertrail_sla_duration_seconds",
                "Time from an SLA target's `from` milestone to its `to` milestone: the KPIs order release time, pick-pack-ship time, shipment confirmation latency and invoice completion.",
                "seconds",
                &with(&["target"]),
                &DURATION_BUCKETS,
            ),
            sla_lateness: r.histogram(
                "ordertrail_sla_lateness_seconds",
                "How late a milestone arrived after its SLA deadline.",
                "seconds",
                &with(&["target"]),
                &DURATION_BUCKETS,
            ),
            sla_breaches: r.counter(
                "ordertrail_sla_breaches",
                "SLA deadlines that passed without their milestone, once per order and target.",
                &with(&["target", "milestone", "owner"]),
            ),
            sla_withdrawn: r.counter(
                "ordertrail_sla_breaches_withdrawn",
                "Breaches taken back because a span that arrived after them showed the milestone was reached in time.",
                &with(&["target"]),
            ),
            sla_at_risk: r.counter(
                "ordertrail_sla_at_risk",
                "Running clocks found at risk (the delay model's breach probability reached sla.risk.threshold, or \
                 sla.at_risk_share of their time was used while it knew too little), once per clock.",
                &with(&["target"]),
            ),
            pattern_events: r.counter(
                "ordertrail_exception_pattern_events",
                "Exception patterns seen for the first time (event=new) or whose rate jumped (event=rate_jump).",
                &["event", "class"],
            ),
            at_risk_clocks: r.gauge(
                "ordertrail_sla_clocks_at_risk",
                "Running clocks found at risk whose deadline has not passed, by target and the owner of the awaited \
                 milestone.",
                &["target", "owner"],
            ),
            delay_model_samples: r.gauge(
                "ordertrail_delay_model_samples",
                "Settled clocks the delay model learned from, per SLA target.",
                &["target"],
            ),
            exception_patterns: r.gauge(
                "ordertrail_exception_patterns",
                "Recurring exception patterns kept (patterns.max_patterns at most).",
                &[],
            ),
            exceptions: r.counter(
                "ordertrail_exceptions",
                "Exceptions recorded on orders, counting repeats.",
                &with(&["class", "owner", "milestone"]),
            ),
            orders_closed: r.counter("ordertrail_orders_closed", "Orders closed, by reason.", &["reason"]),
            fill_ratio: r.histogram(
                "ordertrail_order_fill_ratio",
                "Shipped over ordered quantity of closed orders that report both.",
                "ratio",
                &with(&[]),
                &RATIO_BUCKETS,
            ),
            open_orders: r.gauge("ordertrail_open_orders", "Open orders by current stage.", &["stage"]),
            stalled_orders: r.gauge(
                "ordertrail_orders_stalled",
                "Open orders with an SLA clock overdue, by the stage they are at and the owner of the next action.",
                &["stage", "owner"],
            ),
            open_exceptions: r.gauge(
                "ordertrail_open_exceptions",
                "Open exceptions on open orders, by class and owner.",
                &["class", "owner"],
            ),
            pending_deadlines: r.gauge("ordertrail_sla_clocks_running", "SLA clocks running.", &[]),
            milestones_settling: r.gauge(
                "ordertrail_milestones_settling",
                "Reached milestones waiting sla.detection_delay for spans that could still change them.",
                &[],
            ),
            coverage: r.counter(
                "ordertrail_spans",
                "Spans by service, route and whether they found an order: the correlation coverage of each API.",
                &["service", "route", "correlation"],
            ),
            pending_spans: r.gauge(
                "ordertrail_spans_waiting",
                "Spans waiting for a keyed span of their trace or the span that teaches their alias.",
                &[],
            ),
            late_join_spans: r.gauge(
                "ordertrail_spans_kept_for_late_join",
                "Spans passed on uncorrelated and kept in case an alias or a keyed span of their trace arrives late.",
                &[],
            ),
            series_overflow: r.counter(
                "ordertrail_metric_series_overflow",
                "Observations recorded in an overflow series because a metric reached max_series_per_metric.",
                &[],
            ),
            queue_entries: r.gauge("ordertrail_export_queue_entries", "Export requests waiting in the persistent queue.", &[]),
            queue_bytes: r.gauge("ordertrail_export_queue_bytes", "Bytes of the persistent export queue.", &[]),
            admitted_bytes: r.gauge(
                "ordertrail_receiver_admitted_bytes",
                "Bytes the admission budget holds for requests being received and processed.",
                &[],
            ),
            admission_limit_bytes: r.gauge(
                "ordertrail_receiver_admission_limit_bytes",
                "The admission budget (pipeline.admission_limit_mib) in bytes.",
                &[],
            ),
            pipeline,
            engine,
            dimensions: DimensionLabels { dimensions: dims, seen: Mutex::new(BTreeMap::new()) },
            known_owners: config
                .taxonomy
                .milestones
                .iter()
                .map(|m| m.owner.clone())
                .chain(config.taxonomy.classes.iter().map(|c| c.owner.clone()))
                .chain(config.rules.iter().filter_map(|r| r.owner.clone()))
                .collect(),
            registry,
            config,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts what the engine reported for one batch; `now` stamps the exemplars.
    pub fn observe(&self, events: &[Event], now: u64) {
        let taxonomy = &self.config.taxonomy;
        for event in events {
            match event {
                Event::MilestoneReached { order, milestone, previous, duration_nanos, dimensions } => {
                    let dims = self.dimensions.values(dimensions);
                    let name = &taxonomy.milestones[*milestone].name;
                    let from = previous.map_or("start", |p| taxonomy.milestones[p].name.as_str());
                    let exemplar = Exemplar {
                        trace_id: ids::order_trace_id(order),
                        span_id: ids::milestone_span_id(order, name),
                        timestamp_unix_nanos: now,
                    };
                    self.transition.observe(&labels(&[name, from], &dims), seconds(*duration_nanos), Some(exemplar));
                }
                Event::SlaSettled { order, target, duration_nanos, lateness_nanos, dimensions } => {
                    let dims = self.dimensions.values(dimensions);
                    let t = &self.config.sla.targets[*target];
                    let exemplar = Exemplar {
                        trace_id: ids::order_trace_id(order),
                        span_id: ids::milestone_span_id(order, &taxonomy.milestones[t.to].name),
                        timestamp_unix_nanos: now,
                    };
                    let l = labels(&[&t.name], &dims);
                    self.sla_duration.observe(&l, seconds(*duration_nanos), Some(exemplar.clone()));
                    if let Some(late) = lateness_nanos {
                        self.sla_lateness.observe(&l, seconds(*late), Some(exemplar));
                    }
                }
                Event::SlaBreached { target, owner, dimensions, .. } => {
                    let dims = self.dimensions.values(dimensions);
                    let t = &self.config.sla.targets[*target];
                    let milestone = &taxonomy.milestones[t.to].name;
                    self.sla_breaches.add(&labels(&[&t.name, milestone, self.owner_label(owner)], &dims), 1);
                }
                Event::SlaWithdrawn { target, dimensions, .. } => {
                    let dims = self.dimensions.values(dimensions);
                    let t = &self.config.sla.targets[*target];
                    self.sla_withdrawn.add(&labels(&[&t.name], &dims), 1);
                }
                Event::SlaAtRisk { target, dimensions, .. } => {
                    let dims = self.dimensions.values(dimensions);
                    let t = &self.config.sla.targets[*target];
                    self.sla_at_risk.add(&labels(&[&t.name], &dims), 1);
                }
                Event::ExceptionRecorded { class, owner, milestone, dimensions, .. } => {
                    let dims = self.dimensions.values(dimensions);
                    let milestone = milestone.as_deref().unwrap_or("");
                    self.exceptions.add(&labels(&[class, self.owner_label(owner), milestone], &dims), 1);
                }
                // Counted from the engine stats (ordertrail_conformance_findings_withdrawn, ordertrail_aliases_over_cap,
                // ordertrail_traces_over_cap); they have no dimensions.
                Event::FindingWithdrawn { .. } | Event::KeyOverCap { .. } => {}
                Event::Pattern(PatternEvent::New { key, .. }) => self.pattern_events.add(&["new", &key.class], 1),
                Event::Pattern(PatternEvent::RateJump { key, .. }) => {
                    self.pattern_events.add(&["rate_jump", &key.class], 1);
                }
                Event::OrderClosed { order, reason, fill_ratio, dimensions } => {
                    // `milestone:<name>` and `idle` are few; the order key never becomes a label.
                    self.orders_closed.add(&[reason], 1);
                    if let Some(ratio) = fill_ratio {
                        let dims = self.dimensions.values(dimensions);
                        let exemplar = Exemplar {
                            trace_id: ids::order_trace_id(order),
                            span_id: ids::closing_span_id(order),
                            timestamp_unix_nanos: now,
                        };
                        self.fill_ratio.observe(&labels(&[], &dims), *ratio, Some(exemplar));
                    }
                }
            }
        }
    }

    fn owner_label<'a>(&self, owner: &'a str) -> &'a str {
        if self.known_owners.contains(owner) {
            owner
        } else {
            "other"
        }
    }

    /// The persistent export queue's size (gauges).
    pub fn set_export_queue(&self, entries: u64, bytes: u64) {
        self.queue_entries.set(&[], entries as f64);
        self.queue_bytes.set(&[], bytes as f64);
    }

    /// Mirrors the pipeline's counters and the engine's counters and gauges.
    pub fn sync(&self, counters: &Counters, stats: &EngineStats, pending_spans: usize, late_join_spans: usize) {
        for (counter, read) in &self.pipeline {
            counter.set_total(&[], read(counters));
        }
        self.admitted_bytes.set(&[], Counters::get(&counters.admitted_bytes) as f64);
        self.admission_limit_bytes.set(&[], Counters::get(&counters.admission_limit_bytes) as f64);
        for (counter, read) in &self.engine {
            counter.set_total(&[], read(stats));
        }
        for ((service, route), c) in &stats.coverage {
            self.coverage.set_total(&[service, route, "correlated"], c.correlated);
            self.coverage.set_total(&[service, route, "uncorrelated"], c.uncorrelated);
        }
        self.open_orders
            .replace_all(stats.open_orders_by_stage.iter().map(|(s, n)| (vec![s.clone()], *n as f64)).collect());
        let pairs = |counts: &ordertrail_core::engine::PairCounts| {
            counts.iter().map(|((a, b), n)| (vec![a.clone(), b.clone()], *n as f64)).collect()
        };
        self.stalled_orders.replace_all(pairs(&stats.stalled_orders));
        self.open_exceptions.replace_all(pairs(&stats.open_exceptions));
        self.at_risk_clocks.replace_all(pairs(&stats.at_risk_clocks));
        self.delay_model_samples
            .replace_all(stats.delay_model_samples.iter().map(|(t, n)| (vec![t.clone()], *n as f64)).collect());
        self.exception_patterns.set(&[], stats.exception_patterns as f64);
        self.pending_deadlines.set(&[], stats.pending_deadlines as f64);
        self.milestones_settling.set(&[], stats.milestones_settling as f64);
        self.pending_spans.set(&[], pending_spans as f64);
        self.late_join_spans.set(&[], late_join_spans as f64);
        self.series_overflow.set_total(&[], self.registry.overflowed());
    }
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordertrail_core::config::default_config;

    fn dims(segment: &str, warehouse: &str) -> BTreeMap<String, String> {
        [("segment", segment), ("warehouse", warehouse), ("customer", "C-1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn events_become_labelled_series_with_the_order_trace_as_exemplar() {
        let metrics = OrderMetrics::new(Arc::new(default_config()));
        let events = vec![
            Event::MilestoneReached {
                order: "SO-1".into(),
                milestone: 4,
                previous: Some(3),
                duration_nanos: 90 * 60 * 1_000_000_000,
                dimensions: dims("key-account", "WH-EAST"),
            },
            Event::SlaBreached {
                order: "SO-1".into(),
                target: 1,
                deadline_unix_nanos: 1,
                detected_unix_nanos: 2,
                owner: "transport-logistics".into(),
                dimensions: dims("key-account", "WH-EAST"),
            },
        ];
        metrics.observe(&events, 1_795_000_000_000_000_000);
        let text = metrics.registry().render_openmetrics();
        let trace = hex::encode(ids::order_trace_id("SO-1"));
        let line = text
            .lines()
            .find(|l| l.starts_with("ordertrail_milestone_transition_seconds_bucket") && l.contains("le=\"7200.0\""))
            .expect("bucket line");
        assert!(line.contains("milestone=\"pick_release\",from=\"inventory_allocation\",segment=\"key-account\",warehouse=\"WH-EAST\""), "{line}");
        assert!(line.contains(&format!("trace_id=\"{trace}\"")), "{line}");
        assert!(text.contains("ordertrail_sla_breaches_total{target=\"pick_pack_ship\",milestone=\"shipment_confirmation\",owner=\"transport-logistics\",segment=\"key-account\",warehouse=\"WH-EAST\",carrier=\"\"} 1"), "{text}");
        assert!(!text.contains("C-1"), "the customer dimension is not a metric label");
        let self_declared = Event::ExceptionRecorded {
            order: "SO-2".into(),
            class: "policy".into(),
            owner: "x".repeat(10_000),
            milestone: None,
            signature: "s".into(),
            reason: "r".into(),
            system: "erp".into(),
            at_unix_nanos: 0,
            dimensions: BTreeMap::new(),
            opened: true,
        };
        metrics.observe(&[self_declared], 0);
        let text = metrics.registry().render_prometheus();
        assert!(text.contains("owner=\"other\""), "an owner the config does not name is not a label value");
        assert!(!text.contains("xxxxxxxx"));
    }

    #[test]
    fn dimension_values_beyond_their_bound_are_reported_as_other() {
        let metrics = OrderMetrics::new(Arc::new(default_config()));
        // The default config allows 20 segment values.
        for i in 0..25 {
            let event = Event::ExceptionRecorded {
                order: format!("SO-{i}"),
                class: "policy".into(),
                owner: "x".into(),
                milestone: None,
                signature: "s".into(),
                reason: "r".into(),
                system: "erp".into(),
                at_unix_nanos: 0,
                dimensions: dims(&format!("seg-{i}"), "WH"),
                opened: true,
            };
            metrics.observe(&[event], 0);
        }
        let text = metrics.registry().render_prometheus();
        assert!(text.contains("segment=\"seg-19\""));
        assert!(!text.contains("segment=\"seg-20\""));
        assert!(text.contains("segment=\"other\",warehouse=\"WH\",carrier=\"\"} 5"), "{text}");
    }
}
