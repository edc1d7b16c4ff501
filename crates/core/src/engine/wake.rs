//! Waking orders that are not in memory. An open order evicted from the hot set, or not loaded at startup, still
//! has clocks that must breach, milestones that must settle and an idle close that must happen. The engine keeps
//! those in its in-memory indexes only for the orders it holds; for every order it writes, it tells the store
//! when the order next needs attention (its *wake*), and the store keeps an index of wakes. Each tick the service
//! asks the store for the orders whose wake has passed and are not in memory, and hands them to
//! [`Engine::wake_orders`], which reads them back; the in-memory indexes then take over. Memory therefore holds
//! clocks and settling milestones of the hot set only, however many orders are open.
//!
//! A wake is never later than what it stands for: it is computed from the record as the earliest of the breach
//! checks of its running clocks, the settling of its reached milestones and its idle close, each by the rule the
//! in-memory indexes use for an order read back. An order woken before it needed anything had a stale wake in
//! the store (written by an earlier version, or under another configuration); every woken order is written
//! again, which corrects it.

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
        let (clocks_known, settling_due) = self.read_back_times(order);
        let clocks = order
            .slas
            .iter()
            .filter(|s| s.is_running() && s.deadline_unix_nanos != u64::MAX)
            .map(|s| s.deadline_unix_nanos.max(clocks_known).saturating_add(delay));
        let settling = order.milestones.iter().any(|m| m.reached.is_some() && !m.span_emitted).then_some(settling_due);
        let idle = nanos(self.config.order_traces.idle_close_after);
        let granularity = (idle / IDLE_WAKE_GRANULARITY_DIVISOR).clamp(1, IDLE_WAKE_GRANULARITY_MAX_NANOS);
        let idle_due = order.last_activity_unix_nanos.saturating_add(idle);
        let idle_wake = idle_due.div_ceil(granularity).saturating_mul(granularity);
        clocks.chain(settling).chain(std::iter::once(idle_wake)).min()
    }

    /// For an order read back from the store: since when its running clocks count as known, and when its reached
    /// milestones settle. Neither time was kept, so both are bounded from what the record has: a milestone was
    /// reached by a span received at or before the order's last activity, and so settles the detection delay after
    /// it at the latest; a clock started when its milestone settled, by then at the latest. Both may be later than
    /// the times the order had in memory, never earlier, so a read-back order is judged no sooner than it would
    /// have been.
    pub(crate) fn read_back_times(&self, order: &OrderRecord) -> (u64, u64) {
        let delay = nanos(self.config.sla.detection_delay);
        let settling_due = order.last_activity_unix_nanos.saturating_add(delay);
        (settling_due, settling_due)
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
    pub fn wake_orders(&mut self, keys: &[String], now: u64) -> usize {
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
        }
        woken
    }
}
