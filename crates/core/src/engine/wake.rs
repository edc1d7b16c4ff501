//! Waking orders that are not in memory. An open order evicted from the hot set, or not loaded at startup, still
//! has clocks that must breach, milestones that must settle and an idle close that must happen. The engine keeps
//! those in its in-memory indexes only for the orders it holds; for every order it writes, it tells the store
//! when the order next needs attention (its *wake*), and the store keeps an index of wakes. Each tick the service
//! asks the store for the orders whose wake has passed and are not in memory, and hands them to
//! [`Engine::wake_orders`], which reads them back; the in-memory indexes then take over. Memory therefore holds
//! clocks and settling milestones of the hot set only, however many orders are open.
//!
//! A wake is computed from the record as the earliest of the checks of its running clocks (risk point, then
//! deadline), the settling of
//! its reached milestones and its idle close, each at the time the in-memory indexes give it when the order is
//! read back (`read_back_time`), so that a woken order has something due. An order woken before it needed anything had a stale wake in
//! the store (written by an earlier version, or under another configuration); every woken order is written
//! again, which corrects it.

use super::output::Output;
use super::records::Warm;
use super::Engine;
use crate::order::OrderRecord;
use crate::time::nanos;

/// Idle closes are due to within this share of `order_traces.idle_close_after` (and within an hour): a wake that
/// stood for the idle close exactly would move with every span of the order and cost the store an index update
/// per write. The idle scan closes the order when it is really due.
const IDLE_WAKE_GRANULARITY_DIVISOR: u64 = 100;
const IDLE_WAKE_GRANULARITY_MAX_NANOS: u64 = 3_600_000_000_000;

impl Engine {
    /// When `order` next needs attention, or `None` for a closed order, which needs none.
    pub(crate) fn wake_of(&self, order: &OrderRecord) -> Option<u64> {
        if order.is_closed() {
            return None;
        }
        let delay = nanos(self.config.sla.detection_delay);
        let read_back = self.read_back_time(order);
        // Only what the indexes take back when the order is read: a clock of a target no longer configured, or a
        // milestone no longer in the taxonomy, would otherwise keep the wake in the past for good.
        let configured = |target: &str| self.config.sla.targets.iter().position(|t| t.name == target);
        // The deadline index holds when each clock of an order in memory is checked next, the delay included;
        // asking the delay model again for every order written would cost more than the commit.
        let clocks =
            order.slas.iter().filter(|s| s.is_running() && s.deadline_unix_nanos != u64::MAX).filter_map(|s| {
                let target = configured(&s.target)?;
                Some(match self.clocks.due_of(&order.key, target) {
                    Some(due) => due.max(read_back.saturating_add(delay)),
                    None => self.next_check(target, &order.dimensions, s).max(read_back).saturating_add(delay),
                })
            });
        let settling = order
            .milestones
            .iter()
            .any(|m| m.reached.is_some() && !m.span_emitted && self.config.taxonomy.milestone(&m.name).is_some())
            .then_some(read_back);
        let idle = nanos(self.config.order_traces.idle_close_after);
        let granularity = (idle / IDLE_WAKE_GRANULARITY_DIVISOR).clamp(1, IDLE_WAKE_GRANULARITY_MAX_NANOS);
        let idle_due = order.last_activity_unix_nanos.saturating_add(idle);
        let idle_wake = idle_due.div_ceil(granularity).saturating_mul(granularity);
        // u64::MAX is how the store writes "no wake".
        clocks.chain(settling).chain(std::iter::once(idle_wake)).min().map(|wake| wake.min(u64::MAX - 1))
    }

    /// Compares the wakes the store holds for the orders loaded at startup with theirs, and writes again those that
    /// differ: an earlier version wrote none, or the configuration changed. A stale wake would otherwise sit at the
    /// front of the store's index, looked at on every lookup, until the order next changed.
    pub fn correct_stored_wakes(&mut self, stored: Vec<(String, Option<u64>)>) {
        for (key, wake) in stored {
            let right = self.orders.get(&key).map(|order| self.wake_of(order));
            if right.is_some_and(|right| right != wake) {
                self.persistence.order_changed(&key);
            }
        }
    }

    /// For an order read back from the store: since when its running clocks count as known, and when its reached
    /// milestones settle, one time for both. Neither is kept in the record, so both are taken as the detection
    /// delay after the order's last activity, when a milestone reached by its last span settles if nothing holds it up. A read-back
    /// order is therefore judged within about one detection delay of when it would have been in memory: a clock
    /// started by a revision may breach up to that much later, one whose settling was held up (at startup, behind an
    /// earlier reach) that much sooner. Keeping each clock's known-since time in the record would make them equal.
    pub(crate) fn read_back_time(&self, order: &OrderRecord) -> u64 {
        order.last_activity_unix_nanos.saturating_add(nanos(self.config.sla.detection_delay))
    }

    /// Whether `order` is open and has had no news for `order_traces.idle_close_after`.
    pub(crate) fn idle_due(&self, order: &OrderRecord, now: u64) -> bool {
        let idle = nanos(self.config.order_traces.idle_close_after);
        !order.is_closed() && order.last_activity_unix_nanos.saturating_add(idle) <= now
    }

    /// Whether the store may hold open orders that are not in memory, whose wakes the service must look up.
    pub fn has_cold_orders(&self) -> bool {
        self.cold
    }

    /// Whether `key` is held in memory; the service skips such orders among the store's due wakes, since the
    /// in-memory indexes already look after them.
    pub fn is_hot(&self, key: &str) -> bool {
        self.orders.contains_key(key)
    }

    /// Reads back the orders whose wake has passed (`keys`, from the store's index of wakes), so that their due
    /// clocks, settling milestones and idle closes are handled by the next [`Engine::tick`]. Stops when memory
    /// holds only orders with changes not yet committed; the rest are due again at the next tick, as they are
    /// during the hold after startup, when nothing is judged yet. Returns how many were read back.
    pub fn wake_orders(&mut self, keys: &[String], now: u64, out: &mut Output) -> usize {
        let started = self.clocks.started(now);
        if now < started.saturating_add(nanos(self.config.sla.detection_delay)) {
            return 0;
        }
        let mut woken = 0;
        for key in keys {
            match self.warm(key, false) {
                Warm::Hot => {}
                Warm::NoRoom => break,
                Warm::Missing | Warm::Unreadable => continue,
            }
            woken += 1;
            self.stats.orders_woken += 1;
            // A woken order is written again: that keeps it in memory until the commit after the tick that handles
            // it (orders woken after it cannot evict it first), and stores its wake afresh, which corrects a stale
            // one that would otherwise wake it at every tick.
            self.persistence.order_changed(key);
            // Woken for its idle close, it closes now rather than at the next idle scan (up to a minute away):
            // meanwhile, as the least recently active order, it would be evicted and woken again at every tick.
            if self.orders.get(key.as_str()).is_some_and(|o| self.idle_due(o, now)) {
                self.close(key, super::records::IDLE.to_string(), now, out);
            }
        }
        woken
    }
}
