//! Persistence bookkeeping: which orders, aliases, waiting spans and remembered traces changed since the last
//! commit, what the store holds of them, and how state comes back after a restart. The engine does no I/O: the
//! service takes the changes with [`Engine::take_changes`], writes them, and hands back those whose commit failed.

use super::flow::{Join, Via};
use super::input::{flatten, SpanInput};
use super::output::Output;
use super::Engine;
use crate::ids::TraceId;
use crate::order::AliasRecord;
use crate::order::OrderRecord;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, TracesData};
use std::collections::HashSet;

/// An order to write, with when it next needs attention.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderWrite {
    pub record: OrderRecord,
    /// When the order's next clock check, settling or idle close is due (`wake.rs`); `None` for a closed order.
    /// The store keeps an index of these, so that orders not in memory are read back when they are due.
    pub wake_unix_nanos: Option<u64>,
}

/// State changes to persist after a call.
#[derive(Debug, Default)]
pub struct StateChanges {
    pub orders: Vec<OrderWrite>,
    pub aliases: Vec<AliasRecord>,
    /// Spans waiting to inherit an order, per technical trace id: the encoded spans still waiting, or `None`
    /// when none wait any more.
    pub pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Technical traces known to concern orders, per trace id: the encoded orders and expiry, or `None` when the
    /// trace is forgotten.
    pub traces: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Notifications to queue with this commit (the pipeline adds them; the engine leaves this empty). A key
    /// already queued is not queued again.
    pub notifications: Vec<Notification>,
    /// Insight to add to the stored record (what the delay model learned since the last save), at most every few
    /// seconds.
    pub insight: Option<crate::insight::InsightChanges>,
}

/// A notification waiting for its receiver. Its key is one per order, event and what the event is about, so that
/// the same event cannot be queued twice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub key: String,
    /// The notifier's name in the configuration.
    pub notifier: String,
    pub team: String,
    pub event: crate::config::NotificationEvent,
    pub order: String,
    /// The request body, JSON.
    pub body: String,
    /// When it was queued (ordertrail's clock).
    pub created_unix_nanos: u64,
}

impl StateChanges {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.aliases.is_empty()
            && self.pending.is_empty()
            && self.traces.is_empty()
            && self.notifications.is_empty()
            && self.insight.is_none()
    }
}

/// A remembered technical trace as stored: its orders and when it is forgotten (ordertrail's clock).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredTrace {
    pub(crate) orders: Vec<String>,
    pub(crate) expires_unix_nanos: u64,
    /// Named more orders than `correlation.max_orders_per_trace`; absent in what earlier versions stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) over_cap: bool,
}

/// What changed since the last commit, and what the store holds.
#[derive(Debug, Default)]
pub(crate) struct Persistence {
    dirty_orders: HashSet<String>,
    /// (alias kind index, value).
    dirty_aliases: HashSet<(usize, String)>,
    /// Technical traces whose waiting spans changed since the last `take_changes`.
    dirty_pending: HashSet<TraceId>,
    /// Technical traces with waiting spans in the store.
    persisted_pending: HashSet<TraceId>,
    /// Remembered technical traces that changed since the last `take_changes`.
    dirty_traces: HashSet<TraceId>,
    /// Remembered technical traces in the store.
    persisted_traces: HashSet<TraceId>,
}

impl Persistence {
    pub(crate) fn order_changed(&mut self, key: &str) {
        if !self.dirty_orders.contains(key) {
            self.dirty_orders.insert(key.to_string());
        }
    }

    /// Whether the order has changes not yet committed; such an order must not be evicted from memory.
    pub(crate) fn order_uncommitted(&self, key: &str) -> bool {
        self.dirty_orders.contains(key)
    }

    pub(crate) fn alias_changed(&mut self, kind: usize, value: &str) {
        self.dirty_aliases.insert((kind, value.to_string()));
    }

    pub(crate) fn waiting_changed(&mut self, trace: TraceId) {
        self.dirty_pending.insert(trace);
    }

    pub(crate) fn trace_changed(&mut self, trace: TraceId) {
        self.dirty_traces.insert(trace);
    }

    /// A remembered trace was forgotten; the store forgets it too, if it has it.
    pub(crate) fn trace_forgotten(&mut self, trace: TraceId) {
        if self.persisted_traces.contains(&trace) {
            self.dirty_traces.insert(trace);
        }
    }
}

impl Engine {
    /// Puts back the spans that were waiting when the process stopped (`StateChanges::pending` as stored); they
    /// wait `inherit_wait` afresh from `now`. Spans that cannot wait (the buffer is full) pass on uncorrelated.
    pub fn restore_pending(&mut self, stored: Vec<(Vec<u8>, Vec<u8>)>, now: u64, out: &mut Output) {
        for (key, blob) in stored {
            let Ok(data) = <TracesData as prost::Message>::decode(blob.as_slice()) else {
                // The store wrote these bytes itself, so this is damage on disk; it is counted, not fatal, and the
                // record is deleted by the next commit so that it is not counted again at every start.
                self.stats.pending_undecodable += 1;
                if let Ok(trace) = TraceId::try_from(key.as_slice()) {
                    self.persistence.persisted_pending.insert(trace);
                    self.persistence.dirty_pending.insert(trace);
                }
                continue;
            };
            for input in flatten(data.resource_spans) {
                let Ok(trace) = TraceId::try_from(input.span.trace_id.as_slice()) else { continue };
                self.persistence.persisted_pending.insert(trace);
                self.persistence.dirty_pending.insert(trace);
                // The keyed span of its trace may have been committed before the stop, with the trace remembered.
                if let Some(orders) = self.traces.orders(&trace).map(<[String]>::to_vec) {
                    self.stats.spans_inherited += 1;
                    self.correlate(input, &orders, now, out, Join::first(Via::Trace));
                    continue;
                }
                // Its aliases may have been learned before the stop.
                let aliases = self.alias_values(&input);
                let mut known: Vec<String> = Vec::new();
                for order in aliases.iter().flat_map(|(kind, value)| self.aliases.orders_of(*kind, value)) {
                    if !known.contains(&order) {
                        known.push(order);
                    }
                }
                if !known.is_empty() {
                    self.correlate(input, &known, now, out, Join::first(Via::Alias));
                    continue;
                }
                if let Err(input) = self.pending.hold(trace, input, aliases, now) {
                    self.stats.pending_overflow += 1;
                    let aliases = self.alias_values(&input);
                    self.pass_uncorrelated(*input, aliases, now, out);
                }
            }
        }
    }

    /// Puts back the technical traces remembered when the process stopped (`StateChanges::traces` as stored), in
    /// expiry order; those whose time ran out are deleted from the store instead.
    pub fn restore_traces(&mut self, stored: Vec<(Vec<u8>, Vec<u8>)>, now: u64) {
        let mut entries: Vec<(TraceId, StoredTrace)> = Vec::new();
        for (key, value) in stored {
            let Ok(trace) = TraceId::try_from(key.as_slice()) else { continue };
            self.persistence.persisted_traces.insert(trace);
            match serde_json::from_slice::<StoredTrace>(&value) {
                Ok(entry) if entry.expires_unix_nanos > now => entries.push((trace, entry)),
                // Expired, or damaged on disk: either way it is deleted by the next commit.
                _ => {
                    self.persistence.dirty_traces.insert(trace);
                }
            }
        }
        entries.sort_by_key(|(_, entry)| entry.expires_unix_nanos);
        for (trace, entry) in entries {
            if !self.traces.restore(trace, entry.orders, entry.expires_unix_nanos, entry.over_cap) {
                self.persistence.dirty_traces.insert(trace);
            }
        }
    }

    /// The state changed since the last call.
    pub fn take_changes(&mut self) -> StateChanges {
        let dirty: Vec<String> = self.persistence.dirty_orders.drain().collect();
        let orders = dirty
            .iter()
            .filter_map(|k| self.orders.get(k))
            .map(|order| OrderWrite { record: order.clone(), wake_unix_nanos: self.wake_of(order) })
            .collect();
        let p = &mut self.persistence;
        let aliases = p
            .dirty_aliases
            .drain()
            .map(|(kind, value)| AliasRecord {
                kind: self.config.correlation.aliases[kind].kind.clone(),
                orders: self.aliases.orders_of(kind, &value),
                over_cap: self.aliases.is_over_cap(kind, &value),
                value,
            })
            .collect();
        let mut pending = Vec::new();
        for trace in std::mem::take(&mut p.dirty_pending) {
            match self.pending.waiting(&trace) {
                Some(spans) if !spans.is_empty() => {
                    pending.push((trace.to_vec(), Some(encode_waiting(spans))));
                    p.persisted_pending.insert(trace);
                }
                _ => {
                    // Spans held and released between two commits never reach the store at all.
                    if p.persisted_pending.remove(&trace) {
                        pending.push((trace.to_vec(), None));
                    }
                }
            }
        }
        let mut traces = Vec::new();
        for trace in std::mem::take(&mut p.dirty_traces) {
            match self.traces.entry(&trace) {
                Some((orders, expires, over_cap)) => {
                    let stored = StoredTrace { orders: orders.to_vec(), expires_unix_nanos: expires, over_cap };
                    let bytes = serde_json::to_vec(&stored).expect("plain strings and numbers encode");
                    traces.push((trace.to_vec(), Some(bytes)));
                    p.persisted_traces.insert(trace);
                }
                None => {
                    if p.persisted_traces.remove(&trace) {
                        traces.push((trace.to_vec(), None));
                    }
                }
            }
        }
        let insight = self.take_insight_changes();
        StateChanges { orders, aliases, pending, traces, notifications: Vec::new(), insight }
    }

    /// Takes back changes whose commit failed, so that the next `take_changes` offers them again (with whatever
    /// changed since). The engine's memory is ahead of the store until a commit succeeds.
    pub fn commit_failed(&mut self, changes: StateChanges) {
        if let Some(insight) = changes.insight {
            self.insight_commit_failed(insight);
        }
        let p = &mut self.persistence;
        for order in changes.orders {
            p.dirty_orders.insert(order.record.key);
        }
        for alias in changes.aliases {
            if let Some(kind) = self.config.correlation.aliases.iter().position(|a| a.kind == alias.kind) {
                p.dirty_aliases.insert((kind, alias.value));
            }
        }
        for (trace, _) in changes.pending {
            if let Ok(trace) = TraceId::try_from(trace.as_slice()) {
                // Whether or not the failed write would have put or deleted the row, the store may hold it.
                p.persisted_pending.insert(trace);
                p.dirty_pending.insert(trace);
            }
        }
        for (trace, _) in changes.traces {
            if let Ok(trace) = TraceId::try_from(trace.as_slice()) {
                p.persisted_traces.insert(trace);
                p.dirty_traces.insert(trace);
            }
        }
    }

    /// Notes that the spans waiting on `input`'s technical trace changed.
    pub(crate) fn note_pending_change(&mut self, input: &SpanInput) {
        if let Ok(trace) = TraceId::try_from(input.span.trace_id.as_slice()) {
            self.persistence.waiting_changed(trace);
        }
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
                scope_spans: vec![ScopeSpans {
                    scope: input.scope.scope.clone(),
                    schema_url: input.scope.schema_url.clone(),
                    spans: vec![input.span.clone()],
                }],
            })
            .collect(),
    };
    prost::Message::encode_to_vec(&data)
}
