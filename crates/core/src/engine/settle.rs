//! Settling: what follows from a milestone being reached (its span, its SLA clocks, the conformance check, the
//! close) waits `sla.detection_delay` after the reach became known, so that the spans of other systems that could
//! still change it, exported in their own batches, have arrived. Until then a span that reached the milestone
//! earlier replaces the reach; afterwards it still moves the record and the clocks (a revision), but the
//! milestone span has gone out.
//!
//! Within the delay, the answer therefore does not depend on the order in which systems flushed: the record is a
//! function of the spans' own times (see `records.rs`), and every judgement waits until the spans that could
//! change it are in.

use super::output::Output;
use super::records::Warm;
use super::Engine;
use crate::config::MilestoneId;
use crate::order::OrderRecord;
use crate::time::nanos;
use std::collections::{BTreeSet, HashMap};

/// Reached milestones waiting to settle, by when they are due.
#[derive(Debug, Default)]
pub(crate) struct SettleIndex {
    by_due: BTreeSet<(u64, String, MilestoneId)>,
    due: HashMap<(String, MilestoneId), u64>,
}

impl SettleIndex {
    /// Schedules a milestone once; a reach that moves earlier before it settled keeps the first due time, since
    /// every span that could still move it ended before the first reach that became known.
    fn insert(&mut self, due: u64, key: &str, m: MilestoneId) {
        if let std::collections::hash_map::Entry::Vacant(entry) = self.due.entry((key.to_string(), m)) {
            entry.insert(due);
            self.by_due.insert((due, key.to_string(), m));
        }
    }

    fn remove(&mut self, key: &str, m: MilestoneId) {
        if let Some(due) = self.due.remove(&(key.to_string(), m)) {
            self.by_due.remove(&(due, key.to_string(), m));
        }
    }

    fn due_of(&self, key: &str, m: MilestoneId) -> Option<u64> {
        self.due.get(&(key.to_string(), m)).copied()
    }

    fn pop_due(&mut self, now: u64) -> Option<(String, MilestoneId)> {
        if self.by_due.first()?.0 > now {
            return None;
        }
        let (_, key, m) = self.by_due.pop_first()?;
        self.due.remove(&(key.clone(), m));
        Some((key, m))
    }

    pub(crate) fn len(&self) -> usize {
        self.by_due.len()
    }
}

impl Engine {
    /// A span set the reach of milestone `m` of `key` or moved it earlier.
    pub(crate) fn reach_changed(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let name = &self.config.taxonomy.milestones[m].name;
        let settled = self.orders.get(key).and_then(|o| o.milestone(name)).is_some_and(|s| s.span_emitted);
        if settled {
            self.revise(key, m, now, out);
        } else {
            let due = now.saturating_add(nanos(self.config.sla.detection_delay));
            self.settling.insert(due, key, m);
        }
    }

    /// Puts the reached but unsettled milestones of an order loaded at startup back in the index; they settle the
    /// detection delay after startup.
    pub(crate) fn index_unsettled(&mut self, order: &OrderRecord) {
        self.index_unsettled_due(order, 0);
    }

    /// Puts the reached but unsettled milestones of `order` in the index, due at `due`.
    pub(crate) fn index_unsettled_due(&mut self, order: &OrderRecord, due: u64) {
        if order.is_closed() {
            return;
        }
        for state in order.milestones.iter().filter(|s| s.reached.is_some() && !s.span_emitted) {
            if let Some(m) = self.config.taxonomy.milestone(&state.name) {
                self.settling.insert(due, &order.key, m);
            }
        }
    }

    /// Takes the settling milestones of an order leaving memory out of the index.
    pub(crate) fn unindex_settling(&mut self, order: &OrderRecord) {
        for state in &order.milestones {
            if let Some(m) = self.config.taxonomy.milestone(&state.name) {
                self.settling.remove(&order.key, m);
            }
        }
    }

    /// Settles every milestone whose delay is up.
    pub(crate) fn settle_due(&mut self, now: u64, out: &mut Output) {
        let started = self.clocks.started(now);
        if now < started.saturating_add(nanos(self.config.sla.detection_delay)) {
            return;
        }
        while let Some((key, m)) = self.settling.pop_due(now) {
            if matches!(self.warm(&key, false), Warm::NoRoom | Warm::Unreadable) {
                self.settling.insert(now.saturating_add(1), &key, m);
                continue;
            }
            match self.settle_earlier_reaches(&key, m, now, out) {
                Some(later) => self.settling.insert(later, &key, m),
                None => self.settle_milestone(&key, m, now, out),
            }
        }
    }

    /// Milestones settle in the order they were reached, so that a clock's start has settled before its end and
    /// the milestone spans carry what they would have in business order. Before `m` settles, the order's milestones
    /// reached earlier and still settling do, if their delay is up; if one's is not, `m` waits for it, and the
    /// time to wait until is returned.
    fn settle_earlier_reaches(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) -> Option<u64> {
        let milestones = &self.config.taxonomy.milestones;
        let order = self.orders.get(key)?;
        let at = order.reached_at(&milestones[m].name)?;
        let mut earlier = self.unsettled_reaches(order);
        earlier.retain(|reach| *reach < (at, m));
        let wait = earlier.iter().filter_map(|(_, x)| self.settling.due_of(key, *x)).filter(|due| *due > now).max();
        if wait.is_some() {
            return wait;
        }
        for (_, x) in earlier {
            self.settling.remove(key, x);
            self.settle_milestone(key, x, now, out);
        }
        None
    }

    /// Settles every reached milestone of `key` not settled yet, earliest reach first: the order closes, and its
    /// clocks and findings must be what they would have been had the systems flushed in business order.
    pub(crate) fn settle_all(&mut self, key: &str, now: u64, out: &mut Output) {
        let Some(order) = self.orders.get(key) else { return };
        for (_, m) in self.unsettled_reaches(order) {
            self.settling.remove(key, m);
            self.settle_reached(key, m, now, out);
        }
    }

    /// The reached milestones of `order` not settled yet, earliest reach first (ties by taxonomy position).
    fn unsettled_reaches(&self, order: &OrderRecord) -> Vec<(u64, MilestoneId)> {
        let mut reaches: Vec<(u64, MilestoneId)> = order
            .milestones
            .iter()
            .filter(|s| !s.span_emitted)
            .filter_map(|s| Some((s.reached.as_ref()?.at_unix_nanos, self.config.taxonomy.milestone(&s.name)?)))
            .collect();
        reaches.sort_unstable();
        reaches
    }

    /// Settles `m`; a `close_on` milestone closes the order, which settles the order's other reached milestones
    /// with it, in the order they were reached.
    fn settle_milestone(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let config = self.config.clone();
        if config.order_traces.close_on.contains(&m) {
            self.close(key, format!("milestone:{}", config.taxonomy.milestones[m].name), now, out);
        } else {
            self.settle_reached(key, m, now, out);
        }
    }

    /// What follows from `m` being reached, now that it has settled: transition event, SLA clocks, conformance and
    /// its span.
    fn settle_reached(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let name = &self.config.taxonomy.milestones[m].name;
        let Some(state) = self.orders.get(key).and_then(|o| o.milestone(name)) else { return };
        if state.span_emitted || state.reached.is_none() {
            return;
        }
        self.on_reached(key, m, now, out);
        self.emit_milestone(key, m, out);
    }

    /// A settled milestone's reach moved earlier, or a milestone whose span went out unreached (at the close) was
    /// reached after all: the clocks that end there take the earlier time (a breach it disproves is withdrawn),
    /// those that start there start or move their deadline, and conformance is judged again by the times, which
    /// withdraws the findings of later milestones that it completes. Its span has gone out and stays as it was.
    fn revise(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        self.settle_slas(key, m, now, out);
        if self.config.taxonomy.milestones[m].terminal {
            self.stop_clocks(key, now);
        } else {
            self.restart_slas(key, m, now, out);
            self.start_slas(key, m, now, out);
        }
        if self.config.conformance.enabled {
            self.check_conformance(key, m, now, out);
        }
        self.persistence.order_changed(key);
    }
}
