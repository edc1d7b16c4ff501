//! The engine's share of insight: the delay model it judges running clocks by, fed with every clock that settles;
//! the pattern book, fed with every exception recorded; and what of them the store has not yet been given.

use super::events::Event;
use super::output::Output;
use super::Engine;
use crate::insight::delay::DelayModel;
use crate::insight::patterns::PatternBook;
use crate::insight::{InsightChanges, SavedInsight};
use std::collections::BTreeMap;
use std::time::Duration;

/// How often what was learned goes to the store at most: the model changes with every settled clock, and a
/// record per commit would cost more than a few seconds of learning lost in a crash.
const SAVE_PERIOD_NANOS: u64 = 10_000_000_000;

#[derive(Debug, Default)]
pub(crate) struct InsightState {
    /// Everything known: what was loaded plus what this engine learned.
    pub(crate) delay: DelayModel,
    /// Learned since the last save, added to the store's model by the next commit that carries it.
    unsaved: DelayModel,
    unsaved_any: bool,
    /// Recurring exception patterns.
    pub(crate) patterns: PatternBook,
    patterns_changed: bool,
    save_due: bool,
    next_save: u64,
}

impl Engine {
    /// Takes up the insight a store kept.
    pub fn restore_insight(&mut self, saved: SavedInsight) {
        self.insight.delay = saved.delay;
        self.insight.patterns = saved.patterns;
    }

    /// The recurring exception patterns.
    pub fn pattern_book(&self) -> &PatternBook {
        &self.insight.patterns
    }

    /// Counts the exceptions among `out.events[first..]` into their patterns, and reports new and jumping
    /// patterns as events.
    pub(crate) fn observe_patterns(&mut self, first: usize, out: &mut Output) {
        let mut found = Vec::new();
        for event in &out.events[first..] {
            if let Event::ExceptionRecorded { order, class, milestone, system, reason, at_unix_nanos, .. } = event {
                let refused = self.insight.patterns.refused();
                found.extend(self.insight.patterns.observe(
                    &self.config.patterns,
                    (class, milestone.as_deref(), system),
                    reason,
                    order,
                    *at_unix_nanos,
                ));
                self.stats.exception_patterns_refused += self.insight.patterns.refused() - refused;
                self.insight.patterns_changed = true;
            }
        }
        out.events.extend(found.into_iter().map(Event::Pattern));
    }

    /// Copies the model's and the book's sizes into the stats.
    pub(crate) fn insight_stats(&mut self) {
        self.stats.delay_model_samples =
            self.config.sla.targets.iter().map(|t| (t.name.clone(), self.insight.delay.samples(&t.name))).collect();
        self.stats.exception_patterns = self.insight.patterns.len() as u64;
    }

    /// The learned durations the engine judges running clocks by.
    pub fn delay_model(&self) -> &DelayModel {
        &self.insight.delay
    }

    /// Makes the next commit carry what was learned, whatever the period; used at shutdown.
    pub fn save_insight_now(&mut self) {
        self.insight.save_due = self.insight.unsaved_any || self.insight.patterns_changed;
    }

    /// Learns a settled clock's duration (in the clock's own time: working time where a calendar applies).
    pub(crate) fn learn_duration(&mut self, target: &str, dimensions: &BTreeMap<String, String>, duration: Duration) {
        let settings = &self.config.sla.risk;
        self.insight.delay.learn(settings, target, dimensions, duration);
        self.insight.unsaved.learn(settings, target, dimensions, duration);
        self.insight.unsaved_any = true;
    }

    pub(crate) fn insight_tick(&mut self, now: u64) {
        let changed = self.insight.unsaved_any || self.insight.patterns_changed;
        if changed && now >= self.insight.next_save {
            // Patterns quiet for all their kept windows make room for new ones.
            if self.insight.patterns.prune(&self.config.patterns, now) > 0 {
                self.insight.patterns_changed = true;
            }
            self.insight.save_due = true;
            self.insight.next_save = now.saturating_add(SAVE_PERIOD_NANOS);
        }
    }

    pub(crate) fn take_insight_changes(&mut self) -> Option<InsightChanges> {
        if !std::mem::take(&mut self.insight.save_due) {
            return None;
        }
        self.insight.unsaved_any = false;
        let patterns = std::mem::take(&mut self.insight.patterns_changed).then(|| self.insight.patterns.clone());
        Some(InsightChanges { learned: std::mem::take(&mut self.insight.unsaved), patterns })
    }

    /// Puts back what a failed commit was to save, for the next one.
    pub(crate) fn insight_commit_failed(&mut self, changes: InsightChanges) {
        self.insight.unsaved.merge(&changes.learned);
        self.insight.unsaved_any = true;
        self.insight.patterns_changed |= changes.patterns.is_some();
        self.insight.save_due = true;
    }

    /// Carries the insight of an engine being replaced (rebuilt from a shared store) over to this one, with what
    /// it had not saved yet.
    pub(crate) fn take_over_insight(&mut self, previous: &Engine) {
        self.insight.delay = previous.insight.delay.clone();
        self.insight.unsaved = previous.insight.unsaved.clone();
        self.insight.unsaved_any = previous.insight.unsaved_any;
        self.insight.patterns = previous.insight.patterns.clone();
        self.insight.patterns_changed = previous.insight.patterns_changed;
        self.insight.save_due = previous.insight.save_due;
        self.insight.next_save = previous.insight.next_save;
    }
}
