//! What an engine needs to share a store with other replicas. Each replica's engine holds a hot set of the orders
//! and the aliases that all replicas write to one store; the service tells the engine what another replica changed,
//! and the engine forgets its copy of such an order (it is read back, fresh, when next needed) and learns such an
//! alias as if one of its own spans had taught it, so that spans waiting for it join its orders. When the store
//! refuses a commit because another replica wrote one of its orders first, the service builds a new engine from
//! the store and hands it what the old one had counted (`take_over`), the way a restart would, but without its
//! hold on judgements.

use super::correlate::Learned;
use super::output::Output;
use super::persistence::StoredTrace;
use super::Engine;
use super::StateChanges;
use crate::ids::TraceId;
use crate::order::AliasRecord;

impl Engine {
    /// Forgets the in-memory copies of `keys`, which another replica changed; they are read back from the store
    /// when a span, a query or their wake names them again. An order with changes not yet committed stays: its
    /// commit will find the other replica's version and be refused. Returns how many were forgotten.
    pub fn forget_orders(&mut self, keys: &[String]) -> usize {
        let mut forgotten = 0;
        for key in keys {
            if self.persistence.order_uncommitted(key) {
                continue;
            }
            if let Some(order) = self.orders.remove(key.as_str()) {
                self.unindex(&order);
                if order.is_closed() {
                    self.closed.retain(|k| k != key);
                }
                forgotten += 1;
            }
        }
        if forgotten > 0 {
            self.cold = true;
        }
        forgotten
    }

    /// Learns aliases another replica learned (as the store holds them, so with its own orders too). Spans waiting
    /// for such an alias, or passed on and kept for a late join, join its orders now.
    pub fn learn_shared_aliases(&mut self, aliases: Vec<AliasRecord>, now: u64, out: &mut Output) {
        for alias in aliases {
            let Some(kind) = self.config.correlation.aliases.iter().position(|a| a.kind == alias.kind) else {
                continue;
            };
            if alias.over_cap {
                if !self.aliases.is_over_cap(kind, &alias.value) {
                    self.aliases.restore_over_cap(kind, &alias.value);
                }
                continue;
            }
            match self.aliases.learn(kind, &alias.value, &alias.orders) {
                Learned::More => {
                    self.stats.aliases_learned += 1;
                    self.join_alias(&(kind, alias.value), now, out);
                }
                Learned::OverCap => self.stats.aliases_over_cap += 1,
                Learned::Full => self.stats.aliases_refused += 1,
                Learned::Nothing => {}
            }
        }
    }

    /// The technical traces that spans wait in here, at most `max`: another replica may know their order (after a
    /// stopped replica's traces moved, the gateway sends a trace's later spans to a replica that did not see its
    /// keyed span), and the service looks them up in the store.
    pub fn waiting_traces(&self, max: usize) -> Vec<Vec<u8>> {
        self.pending.trace_ids().take(max).map(|t| t.to_vec()).collect()
    }

    /// Learns technical traces another replica remembers, as the store holds them (trace id, encoded orders and
    /// expiry): the spans of those traces waiting here join their orders now.
    pub fn learn_shared_traces(&mut self, traces: Vec<(Vec<u8>, Vec<u8>)>, now: u64, out: &mut Output) {
        for (key, value) in traces {
            let Ok(trace) = TraceId::try_from(key.as_slice()) else { continue };
            let Ok(stored) = serde_json::from_slice::<StoredTrace>(&value) else { continue };
            if stored.over_cap || stored.orders.is_empty() || stored.expires_unix_nanos <= now {
                continue;
            }
            self.join_trace(trace, &stored.orders, now, out);
        }
    }

    /// Counts up the revision of the orders `changes` wrote, after the store committed them: the next write of each
    /// is based on the revision the store now holds.
    pub fn committed(&mut self, changes: &StateChanges) {
        for write in &changes.orders {
            if let Some(order) = self.orders.get_mut(write.record.key.as_str()) {
                if order.revision == write.record.revision {
                    order.revision += 1;
                }
            }
        }
    }

    /// Takes over what `previous`, an engine this one replaces, counted and when it started judging: a rebuilt
    /// engine neither resets the counters the metrics mirror nor holds its judgements for a detection delay again.
    pub fn take_over(&mut self, previous: &Engine) {
        self.stats = previous.stats.clone();
        self.clocks.take_over_start(&previous.clocks);
        self.take_over_insight(previous);
    }
}
