//! Which orders does a span concern? Key extraction, the alias index, and the bounded memories that let unkeyed
//! spans inherit the order of their technical trace.

use super::attributes::{find, for_each_key_string};
use super::input::SpanInput;
use crate::config::{KeySources, PatternSource};
use crate::ids::TraceId;
use std::collections::{HashMap, VecDeque};

/// Adds every key that `sources` find in `input` to `out`, without duplicates.
pub(crate) fn extract_keys(sources: &KeySources, input: &SpanInput, out: &mut Vec<String>) {
    let mut push = |key: &str| {
        if !out.iter().any(|k| k == key) {
            out.push(key.to_string());
        }
    };
    for attribute in &sources.attributes {
        if let Some(value) = find(&input.span.attributes, attribute) {
            for_each_key_string(value, &mut push);
        }
    }
    if !sources.resource_attributes.is_empty() {
        if let Some(resource) = &input.resource.resource {
            for attribute in &sources.resource_attributes {
                if let Some(value) = find(&resource.attributes, attribute) {
                    for_each_key_string(value, &mut push);
                }
            }
        }
    }
    for pattern in &sources.patterns {
        let text = match &pattern.source {
            PatternSource::SpanName => Some(input.span.name.as_str()),
            PatternSource::Attribute(key) => match find(&input.span.attributes, key) {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.as_str()),
                _ => None,
            },
        };
        if let Some(key) = text.and_then(|t| pattern.capture(t)) {
            push(key);
        }
    }
}

/// Alias values learned from spans that carried them together with an order key.
#[derive(Debug, Default)]
pub(crate) struct AliasIndex {
    /// (alias kind index, value) → orders.
    map: HashMap<(usize, String), Vec<String>>,
    capacity: usize,
}

impl AliasIndex {
    pub(crate) fn new(capacity: usize) -> AliasIndex {
        AliasIndex { map: HashMap::new(), capacity }
    }

    pub(crate) fn get(&self, kind: usize, value: &str) -> Option<&[String]> {
        // A tuple key cannot be looked up by borrowed parts, so this allocates; aliases are rarer than order keys.
        self.map.get(&(kind, value.to_string())).map(Vec::as_slice)
    }

    /// Records that `kind`/`value` leads to `orders`. Returns `Some(true)` when something new was learned,
    /// `Some(false)` when nothing changed and `None` when the index is full.
    pub(crate) fn learn(&mut self, kind: usize, value: &str, orders: &[String]) -> Option<bool> {
        let key = (kind, value.to_string());
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            return None;
        }
        let known = self.map.entry(key).or_default();
        let mut changed = false;
        for order in orders {
            if !known.contains(order) {
                known.push(order.clone());
                changed = true;
            }
        }
        Some(changed)
    }

    pub(crate) fn orders_of(&self, kind: usize, value: &str) -> Vec<String> {
        self.get(kind, value).map(<[String]>::to_vec).unwrap_or_default()
    }
}

/// What `TraceMemory::remember` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remembered {
    /// The trace is new or gained an order.
    pub(crate) changed: bool,
    /// The oldest trace, forgotten to make room.
    pub(crate) evicted: Option<TraceId>,
}

/// Technical traces recently seen with their orders, so that later unkeyed spans of the trace join at once.
#[derive(Debug)]
pub(crate) struct TraceMemory {
    map: HashMap<TraceId, (Vec<String>, u64)>,
    /// Insertion order with expiry time; one entry per map entry, because an entry's expiry is fixed when learned.
    expiry: VecDeque<(TraceId, u64)>,
    capacity: usize,
    ttl_nanos: u64,
}

impl TraceMemory {
    pub(crate) fn new(capacity: usize, ttl_nanos: u64) -> TraceMemory {
        TraceMemory { map: HashMap::new(), expiry: VecDeque::new(), capacity, ttl_nanos }
    }

    pub(crate) fn orders(&self, trace: &TraceId) -> Option<&[String]> {
        self.map.get(trace).map(|(orders, _)| orders.as_slice())
    }

    /// The orders of `trace` and when it is forgotten, for the store.
    pub(crate) fn entry(&self, trace: &TraceId) -> Option<(&[String], u64)> {
        self.map.get(trace).map(|(orders, expires)| (orders.as_slice(), *expires))
    }

    /// Remembers that `trace` concerns `orders`, evicting the oldest trace when full.
    pub(crate) fn remember(&mut self, trace: TraceId, orders: &[String], now: u64) -> Remembered {
        if let Some((known, _)) = self.map.get_mut(&trace) {
            let mut changed = false;
            for order in orders {
                if !known.contains(order) {
                    known.push(order.clone());
                    changed = true;
                }
            }
            return Remembered { changed, evicted: None };
        }
        let mut evicted = None;
        if self.map.len() >= self.capacity {
            if let Some((oldest, _)) = self.expiry.pop_front() {
                self.map.remove(&oldest);
                evicted = Some(oldest);
            }
        }
        let expires = now.saturating_add(self.ttl_nanos);
        self.map.insert(trace, (orders.to_vec(), expires));
        self.expiry.push_back((trace, expires));
        Remembered { changed: true, evicted }
    }

    /// Puts back a trace from the store with the expiry it had; entries must come in expiry order.
    pub(crate) fn restore(&mut self, trace: TraceId, orders: Vec<String>, expires: u64) -> bool {
        if self.map.len() >= self.capacity || self.map.contains_key(&trace) {
            return false;
        }
        self.map.insert(trace, (orders, expires));
        self.expiry.push_back((trace, expires));
        true
    }

    /// Forgets the traces whose time ran out by `now`, and returns them.
    pub(crate) fn expire(&mut self, now: u64) -> Vec<TraceId> {
        let mut expired = Vec::new();
        while let Some((trace, expires)) = self.expiry.front().copied() {
            if expires > now {
                break;
            }
            self.expiry.pop_front();
            self.map.remove(&trace);
            expired.push(trace);
        }
        expired
    }
}

/// Unkeyed spans waiting for a keyed span of their technical trace.
#[derive(Debug)]
pub(crate) struct PendingSpans {
    traces: HashMap<TraceId, (u64, Vec<SpanInput>)>,
    /// Deadline per waiting trace, in the order the traces started waiting.
    deadlines: VecDeque<(TraceId, u64)>,
    spans: usize,
    capacity: usize,
    wait_nanos: u64,
}

impl PendingSpans {
    pub(crate) fn new(capacity: usize, wait_nanos: u64) -> PendingSpans {
        PendingSpans { traces: HashMap::new(), deadlines: VecDeque::new(), spans: 0, capacity, wait_nanos }
    }

    /// Spans currently waiting.
    pub(crate) fn len(&self) -> usize {
        self.spans
    }

    /// Holds `input` until its trace is keyed or the wait runs out; gives it back when the buffer is full.
    pub(crate) fn hold(&mut self, trace: TraceId, input: SpanInput, now: u64) -> Result<(), Box<SpanInput>> {
        if self.spans >= self.capacity {
            return Err(Box::new(input));
        }
        let (_, waiting) = self.traces.entry(trace).or_insert_with(|| {
            let deadline = now.saturating_add(self.wait_nanos);
            self.deadlines.push_back((trace, deadline));
            (deadline, Vec::new())
        });
        waiting.push(input);
        self.spans += 1;
        Ok(())
    }

    /// The spans of `trace` waiting now, if any.
    pub(crate) fn waiting(&self, trace: &TraceId) -> Option<&[SpanInput]> {
        self.traces.get(trace).map(|(_, spans)| spans.as_slice())
    }

    /// The spans of `trace` that were waiting, now that its orders are known.
    pub(crate) fn release(&mut self, trace: &TraceId) -> Vec<SpanInput> {
        // The deadline entry stays in the queue and is skipped when it comes due.
        let released = self.traces.remove(trace).map(|(_, spans)| spans).unwrap_or_default();
        self.spans -= released.len();
        released
    }

    /// The spans whose wait has run out by `now`.
    pub(crate) fn expire(&mut self, now: u64) -> Vec<SpanInput> {
        let mut expired = Vec::new();
        while let Some((trace, deadline)) = self.deadlines.front().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            // A trace released earlier and waiting again has a newer deadline of its own; skip the stale entry.
            if self.traces.get(&trace).is_some_and(|(d, _)| *d == deadline) {
                expired.extend(self.release(&trace));
            }
        }
        expired
    }
}
