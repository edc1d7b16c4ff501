//! Which orders does a span concern? Key extraction, the alias index, and the bounded memories that let unkeyed
//! spans inherit the order of their technical trace.

use super::attributes::{find, for_each_key_string};
use super::input::SpanInput;
use crate::config::{KeySources, PatternSource};
use crate::ids::TraceId;
use std::collections::{BTreeSet, HashMap, VecDeque};

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

/// What learning an alias value did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learned {
    /// The value names more orders than before.
    More,
    /// Nothing changed: every order was known, or the value is over the cap already.
    Nothing,
    /// The index is full; the value was not learned.
    Full,
    /// The value came to name more orders than the cap allows, and from now on names none.
    OverCap,
}

/// The orders one alias value names, or that it named too many to be an alias.
#[derive(Debug, Default)]
struct AliasEntry {
    orders: Vec<String>,
    over_cap: bool,
}

/// Alias values learned from spans that carried them together with an order key.
#[derive(Debug, Default)]
pub(crate) struct AliasIndex {
    /// (alias kind index, value) → orders.
    map: HashMap<(usize, String), AliasEntry>,
    capacity: usize,
    max_orders_per_value: usize,
}

impl AliasIndex {
    pub(crate) fn new(capacity: usize, max_orders_per_value: usize) -> AliasIndex {
        AliasIndex { map: HashMap::new(), capacity, max_orders_per_value }
    }

    fn entry(&self, kind: usize, value: &str) -> Option<&AliasEntry> {
        // A tuple key cannot be looked up by borrowed parts, so this allocates; aliases are rarer than order keys.
        self.map.get(&(kind, value.to_string()))
    }

    /// The orders a value names; `None` for an unknown value and for one over the cap, which is no alias.
    pub(crate) fn get(&self, kind: usize, value: &str) -> Option<&[String]> {
        self.entry(kind, value).filter(|e| !e.over_cap).map(|e| e.orders.as_slice())
    }

    /// Whether a value named more orders than the cap allows.
    pub(crate) fn is_over_cap(&self, kind: usize, value: &str) -> bool {
        self.entry(kind, value).is_some_and(|e| e.over_cap)
    }

    /// Records that `kind`/`value` leads to `orders`. The work is bounded by the cap whatever the number of
    /// orders that share the value, since a value over it holds none.
    pub(crate) fn learn(&mut self, kind: usize, value: &str, orders: &[String]) -> Learned {
        let key = (kind, value.to_string());
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            return Learned::Full;
        }
        let cap = self.max_orders_per_value;
        let known = self.map.entry(key).or_default();
        if known.over_cap {
            return Learned::Nothing;
        }
        let mut changed = false;
        for order in orders {
            if !known.orders.contains(order) {
                if known.orders.len() >= cap {
                    known.over_cap = true;
                    known.orders = Vec::new();
                    return Learned::OverCap;
                }
                known.orders.push(order.clone());
                changed = true;
            }
        }
        if changed {
            Learned::More
        } else {
            Learned::Nothing
        }
    }

    /// Puts back a value stored as over the cap.
    pub(crate) fn restore_over_cap(&mut self, kind: usize, value: &str) {
        if self.map.len() < self.capacity {
            self.map.insert((kind, value.to_string()), AliasEntry { orders: Vec::new(), over_cap: true });
        }
    }

    /// Every value that names orders, with its kind's index.
    pub(crate) fn named(&self) -> impl Iterator<Item = (usize, &str, &[String])> {
        self.map
            .iter()
            .filter(|(_, e)| !e.over_cap)
            .map(|((kind, value), e)| (*kind, value.as_str(), e.orders.as_slice()))
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
    /// The trace names more orders than the cap allows (now or before), so its spans inherit nothing.
    pub(crate) over_cap: bool,
    /// It went over the cap with this call.
    pub(crate) newly_over_cap: bool,
}

/// A remembered trace: its orders (none once over the cap), when it is forgotten, and whether it is over the cap.
#[derive(Debug)]
struct TraceEntry {
    orders: Vec<String>,
    expires: u64,
    over_cap: bool,
}

/// Technical traces recently seen with their orders, so that later unkeyed spans of the trace join at once.
#[derive(Debug)]
pub(crate) struct TraceMemory {
    map: HashMap<TraceId, TraceEntry>,
    /// Insertion order with expiry time; one entry per map entry, because an entry's expiry is fixed when learned.
    expiry: VecDeque<(TraceId, u64)>,
    capacity: usize,
    ttl_nanos: u64,
    max_orders_per_trace: usize,
}

impl TraceMemory {
    pub(crate) fn new(capacity: usize, ttl_nanos: u64, max_orders_per_trace: usize) -> TraceMemory {
        TraceMemory { map: HashMap::new(), expiry: VecDeque::new(), capacity, ttl_nanos, max_orders_per_trace }
    }

    /// The orders of `trace`; `None` for an unknown trace and for one over the cap.
    pub(crate) fn orders(&self, trace: &TraceId) -> Option<&[String]> {
        self.map.get(trace).filter(|e| !e.over_cap).map(|e| e.orders.as_slice())
    }

    /// Whether `trace` named more orders than the cap allows.
    pub(crate) fn is_over_cap(&self, trace: &TraceId) -> bool {
        self.map.get(trace).is_some_and(|e| e.over_cap)
    }

    /// The orders of `trace`, when it is forgotten, and whether it is over the cap, for the store.
    pub(crate) fn entry(&self, trace: &TraceId) -> Option<(&[String], u64, bool)> {
        self.map.get(trace).map(|e| (e.orders.as_slice(), e.expires, e.over_cap))
    }

    /// Remembers that `trace` concerns `orders`, evicting the oldest trace when full.
    pub(crate) fn remember(&mut self, trace: TraceId, orders: &[String], now: u64) -> Remembered {
        let cap = self.max_orders_per_trace;
        let unchanged = Remembered { changed: false, evicted: None, over_cap: false, newly_over_cap: false };
        if let Some(known) = self.map.get_mut(&trace) {
            if known.over_cap {
                return Remembered { over_cap: true, ..unchanged };
            }
            let mut changed = false;
            for order in orders {
                if !known.orders.contains(order) {
                    if known.orders.len() >= cap {
                        known.over_cap = true;
                        known.orders = Vec::new();
                        return Remembered { changed: true, evicted: None, over_cap: true, newly_over_cap: true };
                    }
                    known.orders.push(order.clone());
                    changed = true;
                }
            }
            return Remembered { changed, ..unchanged };
        }
        let mut evicted = None;
        if self.map.len() >= self.capacity {
            if let Some((oldest, _)) = self.expiry.pop_front() {
                self.map.remove(&oldest);
                evicted = Some(oldest);
            }
        }
        let expires = now.saturating_add(self.ttl_nanos);
        let over_cap = orders.len() > cap;
        let orders = if over_cap { Vec::new() } else { orders.to_vec() };
        self.map.insert(trace, TraceEntry { orders, expires, over_cap });
        self.expiry.push_back((trace, expires));
        Remembered { changed: true, evicted, over_cap, newly_over_cap: over_cap }
    }

    /// Puts back a trace from the store with the expiry it had; entries must come in expiry order.
    pub(crate) fn restore(&mut self, trace: TraceId, orders: Vec<String>, expires: u64, over_cap: bool) -> bool {
        if self.map.len() >= self.capacity || self.map.contains_key(&trace) {
            return false;
        }
        // A cap lowered since the trace was stored applies to it now.
        let over_cap = over_cap || orders.len() > self.max_orders_per_trace;
        let orders = if over_cap { Vec::new() } else { orders };
        self.map.insert(trace, TraceEntry { orders, expires, over_cap });
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

/// An alias value a span carries: (alias kind index, value).
pub(crate) type AliasValue = (usize, String);

/// Most alias values of one span that the wait buffer and the late-join memory index: a span naming more (an
/// array attribute of thousands of references) still waits, but only its first values can bring it in.
const MAX_INDEXED_ALIASES_PER_SPAN: usize = 64;

/// A multimap from alias values to the entries that carry them; owners remove what they remove. Ordered sets, so
/// that adding and removing an entry costs the same however many entries share a value (a placeholder such as
/// `N/A` may be carried by every waiting span), and entries come back in a fixed order.
#[derive(Debug)]
struct AliasLookup<K> {
    map: HashMap<AliasValue, BTreeSet<K>>,
}

impl<K> Default for AliasLookup<K> {
    fn default() -> AliasLookup<K> {
        AliasLookup { map: HashMap::new() }
    }
}

impl<K: Ord + Copy> AliasLookup<K> {
    fn insert(&mut self, aliases: &[AliasValue], entry: K) {
        for alias in aliases.iter().take(MAX_INDEXED_ALIASES_PER_SPAN) {
            self.map.entry(alias.clone()).or_default().insert(entry);
        }
    }

    fn remove(&mut self, aliases: &[AliasValue], entry: K) {
        for alias in aliases.iter().take(MAX_INDEXED_ALIASES_PER_SPAN) {
            if let Some(entries) = self.map.get_mut(alias) {
                entries.remove(&entry);
                if entries.is_empty() {
                    self.map.remove(alias);
                }
            }
        }
    }

    fn get(&self, alias: &AliasValue) -> Vec<K> {
        self.map.get(alias).map(|entries| entries.iter().copied().collect()).unwrap_or_default()
    }
}

/// The spans of one technical trace waiting for their order, and the alias values they carry.
#[derive(Debug)]
struct Waiting {
    deadline: u64,
    spans: Vec<SpanInput>,
    aliases: Vec<AliasValue>,
}

/// Spans without an order yet, waiting for a keyed span of their technical trace or for the span that teaches an
/// alias they carry, whichever comes first.
#[derive(Debug)]
pub(crate) struct PendingSpans {
    traces: HashMap<TraceId, Waiting>,
    /// Deadline per waiting trace, in the order the traces started waiting.
    deadlines: VecDeque<(TraceId, u64)>,
    by_alias: AliasLookup<TraceId>,
    spans: usize,
    capacity: usize,
    wait_nanos: u64,
}

impl PendingSpans {
    pub(crate) fn new(capacity: usize, wait_nanos: u64) -> PendingSpans {
        PendingSpans {
            traces: HashMap::new(),
            deadlines: VecDeque::new(),
            by_alias: AliasLookup::default(),
            spans: 0,
            capacity,
            wait_nanos,
        }
    }

    /// Spans currently waiting.
    pub(crate) fn len(&self) -> usize {
        self.spans
    }

    /// The technical traces that spans wait in.
    pub(crate) fn trace_ids(&self) -> impl Iterator<Item = &TraceId> {
        self.traces.keys()
    }

    /// Holds `input`, which carries `aliases`, until its trace is keyed, one of its aliases is learned, or the wait
    /// runs out; gives it back when the buffer is full.
    pub(crate) fn hold(
        &mut self,
        trace: TraceId,
        input: SpanInput,
        aliases: Vec<AliasValue>,
        now: u64,
    ) -> Result<(), Box<SpanInput>> {
        if self.spans >= self.capacity {
            return Err(Box::new(input));
        }
        let waiting = self.traces.entry(trace).or_insert_with(|| {
            let deadline = now.saturating_add(self.wait_nanos);
            self.deadlines.push_back((trace, deadline));
            Waiting { deadline, spans: Vec::new(), aliases: Vec::new() }
        });
        self.by_alias.insert(&aliases, trace);
        for alias in aliases {
            if !waiting.aliases.contains(&alias) {
                waiting.aliases.push(alias);
            }
        }
        waiting.spans.push(input);
        self.spans += 1;
        Ok(())
    }

    /// The spans of `trace` waiting now, if any.
    pub(crate) fn waiting(&self, trace: &TraceId) -> Option<&[SpanInput]> {
        self.traces.get(trace).map(|w| w.spans.as_slice())
    }

    /// The technical traces with a waiting span that carries `alias`.
    pub(crate) fn traces_with(&self, alias: &AliasValue) -> Vec<TraceId> {
        self.by_alias.get(alias)
    }

    /// The spans of `trace` that were waiting, now that its orders are known.
    pub(crate) fn release(&mut self, trace: &TraceId) -> Vec<SpanInput> {
        // The deadline entry stays in the queue and is skipped when it comes due.
        let Some(waiting) = self.traces.remove(trace) else { return Vec::new() };
        self.by_alias.remove(&waiting.aliases, *trace);
        self.spans -= waiting.spans.len();
        waiting.spans
    }

    /// The waiting spans of `trace` at `positions` (as `waiting` lists them), taken out; the others wait on with
    /// their deadline. Their alias values stay indexed until the trace stops waiting, which only costs a lookup
    /// that finds nothing.
    pub(crate) fn take(&mut self, trace: &TraceId, positions: &[usize]) -> Vec<SpanInput> {
        let Some(waiting) = self.traces.get_mut(trace) else { return Vec::new() };
        let mut taken = Vec::new();
        let mut kept = Vec::new();
        for (i, span) in std::mem::take(&mut waiting.spans).into_iter().enumerate() {
            if positions.contains(&i) {
                taken.push(span);
            } else {
                kept.push(span);
            }
        }
        self.spans -= taken.len();
        if kept.is_empty() {
            self.release(trace);
        } else if let Some(waiting) = self.traces.get_mut(trace) {
            waiting.spans = kept;
        }
        taken
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
            if self.traces.get(&trace).is_some_and(|w| w.deadline == deadline) {
                expired.extend(self.release(&trace));
            }
        }
        expired
    }
}

/// One span kept: passed on uncorrelated, or joined to `joined` through an alias or its trace.
#[derive(Debug)]
pub(crate) struct Kept {
    pub(crate) input: SpanInput,
    trace: Option<TraceId>,
    aliases: Vec<AliasValue>,
    /// The orders it joined already; a later join brings it into the others only.
    pub(crate) joined: Vec<String>,
    bytes: u64,
    pub(crate) expires: u64,
}

/// What the late-join memory turned away to stay within its bounds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub(crate) spans: u64,
}

/// Recent spans that a later span may still tie to an order, kept within bounds of count, bytes and time: spans
/// passed on uncorrelated, and spans without an order key that carry aliases (an alias, or their trace, may come to
/// name more orders, as when a carrier consolidates two deliveries into one shipment). An alias learned later or a
/// keyed span of their trace arriving late then brings them into the order traces they are not in yet. Their
/// originals were passed on already, so only their copies in the order traces are still to come.
#[derive(Debug)]
pub(crate) struct LateJoins {
    kept: HashMap<u64, Kept>,
    /// Entries in the order they were kept, which is also their expiry order; an entry taken out early stays here
    /// until it reaches the front or the queue is compacted.
    order: VecDeque<u64>,
    by_alias: AliasLookup<u64>,
    by_trace: HashMap<TraceId, BTreeSet<u64>>,
    next_id: u64,
    bytes: u64,
    max_spans: usize,
    max_bytes: u64,
    keep_nanos: u64,
}

impl LateJoins {
    pub(crate) fn new(max_spans: usize, max_bytes: u64, keep_nanos: u64) -> LateJoins {
        LateJoins {
            kept: HashMap::new(),
            order: VecDeque::new(),
            by_alias: AliasLookup::default(),
            by_trace: HashMap::new(),
            next_id: 0,
            bytes: 0,
            max_spans,
            max_bytes,
            keep_nanos,
        }
    }

    /// Spans kept now.
    pub(crate) fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether a span is worth keeping: one with neither a trace id nor an alias could never join.
    pub(crate) fn would_keep(&self, input: &SpanInput, aliases: &[AliasValue]) -> bool {
        self.max_spans > 0 && (input.span.trace_id.len() == 16 || !aliases.is_empty())
    }

    /// Keeps a span that joined `joined` (none: passed on uncorrelated) until `expires`, evicting the oldest while
    /// over a bound; returns what was evicted.
    pub(crate) fn keep(
        &mut self,
        input: SpanInput,
        aliases: Vec<AliasValue>,
        joined: Vec<String>,
        expires: u64,
    ) -> Evicted {
        if !self.would_keep(&input, &aliases) {
            return Evicted::default();
        }
        let trace = TraceId::try_from(input.span.trace_id.as_slice()).ok();
        let bytes = u64::try_from(prost::Message::encoded_len(&input.span)).unwrap_or(u64::MAX);
        let mut evicted = Evicted::default();
        while !self.kept.is_empty() && (self.kept.len() >= self.max_spans || self.bytes + bytes > self.max_bytes) {
            let Some(oldest) = self.order.pop_front() else { break };
            if self.remove(oldest).is_some() {
                evicted.spans += 1;
            }
        }
        if bytes > self.max_bytes {
            evicted.spans += 1;
            return evicted;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.by_alias.insert(&aliases, id);
        if let Some(trace) = trace {
            self.by_trace.entry(trace).or_default().insert(id);
        }
        self.bytes += bytes;
        self.kept.insert(id, Kept { input, trace, aliases, joined, bytes, expires });
        self.order.push_back(id);
        // Entries taken out early linger in `order`; dropping them once they outnumber the live ones keeps the
        // queue within twice the bound.
        if self.order.len() > 2 * self.kept.len() + 1024 {
            let kept = &self.kept;
            self.order.retain(|id| kept.contains_key(id));
        }
        evicted
    }

    /// Keeps again a span taken out, until its first expiry.
    pub(crate) fn put_back(&mut self, kept: Kept) -> Evicted {
        self.keep(kept.input, kept.aliases, kept.joined, kept.expires)
    }

    /// When a span kept at `now` expires.
    pub(crate) fn expiry(&self, now: u64) -> u64 {
        now.saturating_add(self.keep_nanos)
    }

    fn remove(&mut self, id: u64) -> Option<Kept> {
        let kept = self.kept.remove(&id)?;
        self.by_alias.remove(&kept.aliases, id);
        if let Some(trace) = kept.trace {
            if let Some(ids) = self.by_trace.get_mut(&trace) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_trace.remove(&trace);
                }
            }
        }
        self.bytes -= kept.bytes;
        Some(kept)
    }

    /// The kept spans that carry `alias`, taken out.
    pub(crate) fn take_alias(&mut self, alias: &AliasValue) -> Vec<Kept> {
        self.by_alias.get(alias).into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// The kept spans of technical trace `trace`, taken out.
    pub(crate) fn take_trace(&mut self, trace: &TraceId) -> Vec<Kept> {
        let ids: Vec<u64> = self.by_trace.get(trace).map(|ids| ids.iter().copied().collect()).unwrap_or_default();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Forgets what was kept longer than `keep`. Entries kept again after a join keep their first expiry, so they
    /// may sit behind younger ones in the queue and leave a little after their time.
    pub(crate) fn expire(&mut self, now: u64) {
        while let Some(oldest) = self.order.front().copied() {
            if self.kept.get(&oldest).is_some_and(|k| k.expires > now) {
                break;
            }
            self.order.pop_front();
            self.remove(oldest);
        }
    }
}
