//! What the engine counts: monotonic counters of what it did and refused, gauges of what it holds, and the
//! correlation coverage by service and route, bounded in the number of routes it tracks.

use super::attributes;
use super::input::SpanInput;
use crate::order::progress::{next_owner, stage_and_next};
use crate::order::status::OrderSlaStatus;
use crate::order::OrderRecord;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

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
    /// Spans passed on uncorrelated that joined their order later, when an alias they carry was learned or a keyed
    /// span of their trace arrived: their copies in the order trace were emitted then.
    pub spans_late_joined: u64,
    /// Spans whose own `order.milestone` / `order.exception.*` statement was ignored because their service is not
    /// in `taxonomy.trust_declared_labels_from`.
    pub declared_labels_ignored: u64,
    /// Uncorrelated spans dropped from the late-join memory to stay within its bounds, before their time was up.
    pub late_joins_evicted: u64,
    /// Spans re-emitted into order traces (one per order a span concerns).
    pub order_spans_emitted: u64,
    pub milestone_spans_emitted: u64,
    pub root_spans_emitted: u64,
    pub orders_created: u64,
    /// Orders a span named that were turned away: memory held `max_orders` orders all with changes not yet
    /// committed, or the store could not be read for an evicted one.
    pub orders_refused: u64,
    pub orders_evicted: u64,
    /// Evicted orders read back from the store because a span, a deadline or a settling milestone named them.
    pub orders_loaded: u64,
    /// Orders read back from the store because their wake passed while they were not in memory: a clock to
    /// breach, a milestone to settle or an idle close (a subset of `orders_loaded`).
    pub orders_woken: u64,
    pub orders_closed: u64,
    pub aliases_learned: u64,
    /// Alias values not learned because `max_aliases` is reached.
    pub aliases_refused: u64,
    /// Alias values that came to name more than `max_orders_per_alias` orders, and so name none.
    pub aliases_over_cap: u64,
    /// Technical traces that came to name more than `max_orders_per_trace` orders, and so pass on none.
    pub traces_over_cap: u64,
    pub traces_evicted: u64,
    pub exceptions_recorded: u64,
    pub sla_breaches: u64,
    /// Breaches taken back because a span that arrived after them showed the milestone was reached in time.
    pub sla_breaches_withdrawn: u64,
    pub conformance_findings: u64,
    /// Conformance findings taken back because the milestones they missed arrived later with earlier times.
    pub conformance_findings_withdrawn: u64,
    /// Spans reporting SLA breaches and conformance findings.
    pub finding_spans_emitted: u64,
    /// Spans correlated and uncorrelated by `service.name` and route (`telemetry.metrics.route_attributes`), bounded
    /// by `telemetry.metrics.max_coverage_routes`, the rest counting under `other`/`other`; refreshed once a second.
    pub coverage: BTreeMap<(String, String), Coverage>,
    /// Open orders by current stage (gauge), recounted at most once a second.
    pub open_orders_by_stage: BTreeMap<String, u64>,
    /// Open orders in memory whose SLA standing is breached (a clock overdue), by stage and the owner of the next
    /// action: the orders stalled, and whose move it is (gauge).
    pub stalled_orders: PairCounts,
    /// Open exceptions on open orders in memory, by class and owner (gauge).
    pub open_exceptions: PairCounts,
    /// Running SLA clocks (gauge).
    pub pending_deadlines: u64,
    /// Reached milestones waiting for the detection delay before they settle (gauge).
    pub milestones_settling: u64,
    /// Stored waiting spans that could not be decoded at startup (damage on disk).
    pub pending_undecodable: u64,
    /// Running clocks found at risk whose deadline has not passed, by target and the owner of the awaited
    /// milestone (gauge).
    pub at_risk_clocks: PairCounts,
    /// Settled clocks the delay model learned, per target (gauge).
    pub delay_model_samples: BTreeMap<String, u64>,
    /// Exception patterns in the pattern book (gauge).
    pub exception_patterns: u64,
    /// New exception patterns refused because `patterns.max_patterns` was reached.
    pub exception_patterns_refused: u64,
}

/// Correlated and uncorrelated span counts of one route.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub correlated: u64,
    pub uncorrelated: u64,
}

/// Correlation coverage by service, then route, with at most `limit` distinct pairs.
#[derive(Debug)]
pub(crate) struct CoverageCounter {
    routes: HashMap<String, HashMap<String, Coverage>>,
    /// Distinct service/route pairs in `routes`.
    pairs: usize,
    limit: usize,
    route_attributes: Vec<String>,
    route_from_span_name: bool,
}

/// The route of a span with none of the route attributes, when span names are not used.
pub(crate) const UNKNOWN_ROUTE: &str = "unknown";

/// Both parts of a coverage pair become metric labels, so a pathological value is cut rather than carried into
/// every scrape.
const MAX_LABEL_CHARS: usize = 128;

impl CoverageCounter {
    pub(crate) fn new(limit: usize, route_attributes: Vec<String>, route_from_span_name: bool) -> CoverageCounter {
        CoverageCounter { routes: HashMap::new(), pairs: 0, limit, route_attributes, route_from_span_name }
    }

    /// Counts a span under its service and route: the first configured route attribute it carries, else its name
    /// if so configured, else `unknown`.
    pub(crate) fn count(&mut self, input: &SpanInput, correlated: bool) {
        let route = self
            .route_attributes
            .iter()
            .find_map(|key| attributes::find(&input.span.attributes, key).and_then(attributes::scalar_string))
            .unwrap_or(Cow::Borrowed(if self.route_from_span_name { input.span.name.as_str() } else { UNKNOWN_ROUTE }));
        let service = input.resource.service_name.as_str();
        // Looked up by reference, so that the per-span path allocates only the first time a route is seen.
        let known = self.routes.get_mut(service).and_then(|routes| routes.get_mut(route.as_ref()));
        let entry = match known {
            Some(entry) => entry,
            None => {
                let bounded = |v: &str| v.chars().take(MAX_LABEL_CHARS).collect::<String>();
                let (service, route) = if self.pairs + 1 < self.limit {
                    self.pairs += 1;
                    (bounded(service), bounded(&route))
                } else {
                    ("other".to_string(), "other".to_string())
                };
                self.routes.entry(service).or_default().entry(route).or_default()
            }
        };
        if correlated {
            entry.correlated += 1;
        } else {
            entry.uncorrelated += 1;
        }
    }

    /// The counts by (service, route), for `EngineStats::coverage`.
    pub(crate) fn snapshot(&self) -> BTreeMap<(String, String), Coverage> {
        self.routes
            .iter()
            .flat_map(|(service, routes)| routes.iter().map(move |(route, c)| ((service.clone(), route.clone()), *c)))
            .collect()
    }
}

/// Counts by a pair of labels (stage and owner, class and owner).
pub type PairCounts = BTreeMap<(String, String), u64>;

/// The gauges of the open orders in memory, from one pass over them.
#[derive(Debug, Default)]
pub(crate) struct OrderGauges {
    /// Open orders by their current stage (`none` before the first main-path milestone).
    pub(crate) by_stage: BTreeMap<String, u64>,
    /// Stalled orders (a clock overdue) by stage and the owner of the next action.
    pub(crate) stalled: PairCounts,
    /// Open exceptions by class and owner.
    pub(crate) open_exceptions: PairCounts,
    /// Clocks at risk by target and owner.
    pub(crate) at_risk: PairCounts,
}

/// The gauges of the open orders among `orders` at `now`; each order's stage is worked out once.
pub(crate) fn order_gauges<'o>(
    config: &crate::config::Config,
    orders: impl Iterator<Item = &'o OrderRecord>,
    now: u64,
) -> OrderGauges {
    let taxonomy = &config.taxonomy;
    let mut gauges = OrderGauges::default();
    for order in orders.filter(|o| !o.is_closed()) {
        for s in order.slas.iter().filter(|s| s.at_risk_at_unix_nanos.is_some() && s.is_running()) {
            if now >= s.deadline_unix_nanos {
                continue;
            }
            let owner = config
                .sla
                .targets
                .iter()
                .find(|t| t.name == s.target)
                .map_or("none", |t| taxonomy.milestones[t.to].owner.as_str());
            *gauges.at_risk.entry((s.target.clone(), owner.to_string())).or_default() += 1;
        }
        for exception in order.open_exceptions() {
            *gauges.open_exceptions.entry((exception.class.clone(), exception.owner.clone())).or_default() += 1;
        }
        let (stage, next) = stage_and_next(taxonomy, order);
        let stage = stage.map_or("none", |m| m.name.as_str());
        match gauges.by_stage.get_mut(stage) {
            Some(n) => *n += 1,
            None => {
                gauges.by_stage.insert(stage.to_string(), 1);
            }
        }
        if order.sla_status(now) == OrderSlaStatus::Breached {
            let owner = next.map_or("none", |m| next_owner(order, m));
            *gauges.stalled.entry((stage.to_string(), owner.to_string())).or_default() += 1;
        }
    }
    gauges
}
