//! The engine's share of insight: the delay model it judges running clocks by, fed with every clock that settles;
//! the pattern book, fed with every exception recorded; and what of them the store has not yet been given.
//!
//! What a group of requests teaches is staged (`pending`) and taken up at the start of the next call. With a shared
//! store a group's commit may be refused; the service then builds a new engine from the store, hands it this one's
//! insight ([`Engine::take_over_insight`]) and processes the group again. Staging keeps that second processing from
//! learning the same clocks and counting the same exceptions twice: the new engine takes over what was taken up,
//! and what was staged is dropped with the old one.

use super::events::Event;
use super::output::Output;
use super::Engine;
use crate::insight::delay::DelayModel;
use crate::insight::patterns::PatternBook;
use crate::insight::{InsightChanges, SavedInsight};
use std::collections::BTreeMap;
use std::time::Duration;

/// How often what the delay model learned goes to the store at most: the model changes with every settled clock,
/// and a record per commit would cost more than a few seconds of learning lost in a crash.
const SAVE_PERIOD_NANOS: u64 = 10_000_000_000;
/// How often the pattern book goes to the store at most: it is written whole, and its counts are telemetry whose
/// last minute a crash may cost.
const PATTERNS_SAVE_PERIOD_NANOS: u64 = 60_000_000_000;

/// One exception recorded, waiting to be counted into its pattern.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    pub(crate) class: String,
    pub(crate) milestone: Option<String>,
    pub(crate) system: String,
    pub(crate) reason: String,
    pub(crate) order: String,
    pub(crate) at_unix_nanos: u64,
}

#[derive(Debug, Default)]
pub(crate) struct InsightState {
    /// Everything known and taken up: what was loaded plus what this engine learned.
    pub(crate) delay: DelayModel,
    /// Taken up since the last save, added to the store's model by the next commit that carries it.
    unsaved: DelayModel,
    unsaved_any: bool,
    /// Learned by the current group, taken up at the start of the next call.
    pending: DelayModel,
    pending_any: bool,
    /// Exceptions recorded by the current group, counted at the start of the next call.
    pub(crate) observations: Vec<Observation>,
    /// Recurring exception patterns.
    pub(crate) patterns: PatternBook,
    patterns_changed: bool,
    /// The newest span time counted into the book: quiet patterns are pruned relative to it, so that a replay of
    /// old spans does not prune what it is counting.
    patterns_newest: u64,
    save_due: bool,
    next_save: u64,
    next_patterns_save: u64,
}

impl Engine {
    /// Takes up the insight a store kept, and judges the running clocks again by it: they were indexed when the
    /// engine was built, before there was a model.
    pub fn restore_insight(&mut self, saved: SavedInsight) {
        self.insight.delay = saved.delay;
        self.insight.patterns_newest = saved
            .patterns
            .patterns(&self.config.patterns, u64::MAX)
            .iter()
            .map(|p| p.last_seen_unix_nanos)
            .max()
            .unwrap_or(0);
        self.insight.patterns = saved.patterns;
        self.reindex_risk_checks();
    }

    /// Judges clocks from now on by `stored`, the model other replicas sharing the store added to, plus what this
    /// engine learned and has not saved yet (what it saved is in `stored` already). Clocks already scheduled keep
    /// their check; each is judged again by the model as it is then.
    pub fn refresh_delay_model(&mut self, stored: DelayModel) {
        let mut model = stored;
        model.merge_bounded(&self.insight.unsaved, self.config.sla.risk.max_values_per_dimension);
        self.insight.delay = model;
    }

    /// The recurring exception patterns.
    pub fn pattern_book(&self) -> &PatternBook {
        &self.insight.patterns
    }

    /// The learned durations the engine judges running clocks by.
    pub fn delay_model(&self) -> &DelayModel {
        &self.insight.delay
    }

    /// Makes the next commit carry what was learned, whatever the period; used at shutdown, when no group follows
    /// to take up the last one's learning.
    pub fn save_insight_now(&mut self) {
        let mut out = Output::default();
        self.take_up_insight(&mut out);
        self.insight.save_due = self.insight.unsaved_any || self.insight.patterns_changed;
    }

    /// Learns a settled clock's duration (in the clock's own time: working time where a calendar applies).
    pub(crate) fn learn_duration(&mut self, target: &str, dimensions: &BTreeMap<String, String>, duration: Duration) {
        self.insight.pending.learn(&self.config.sla.risk, target, dimensions, duration);
        self.insight.pending_any = true;
    }

    /// Takes up what the previous group learned and counts the exceptions it recorded into their patterns,
    /// reporting new and jumping patterns; called at the start of `process` and `tick`.
    pub(crate) fn take_up_insight(&mut self, out: &mut Output) {
        if std::mem::take(&mut self.insight.pending_any) {
            let pending = std::mem::take(&mut self.insight.pending);
            let bound = self.config.sla.risk.max_values_per_dimension;
            self.insight.delay.merge_bounded(&pending, bound);
            self.insight.unsaved.merge_bounded(&pending, bound);
            self.insight.unsaved_any = true;
        }
        if self.insight.observations.is_empty() {
            return;
        }
        let refused = self.insight.patterns.refused();
        for o in std::mem::take(&mut self.insight.observations) {
            let events = self.insight.patterns.observe(
                &self.config.patterns,
                (&o.class, o.milestone.as_deref(), &o.system),
                &o.reason,
                &o.order,
                o.at_unix_nanos,
            );
            self.insight.patterns_newest = self.insight.patterns_newest.max(o.at_unix_nanos);
            out.events.extend(events.into_iter().map(Event::Pattern));
        }
        self.stats.exception_patterns_refused += self.insight.patterns.refused() - refused;
        self.insight.patterns_changed = true;
    }

    /// Copies the model's and the book's sizes into the stats.
    pub(crate) fn insight_stats(&mut self) {
        self.stats.delay_model_samples =
            self.config.sla.targets.iter().map(|t| (t.name.clone(), self.insight.delay.samples(&t.name))).collect();
        self.stats.exception_patterns = self.insight.patterns.len() as u64;
    }

    pub(crate) fn insight_tick(&mut self, now: u64) {
        if self.insight.unsaved_any && now >= self.insight.next_save {
            self.insight.save_due = true;
            self.insight.next_save = now.saturating_add(SAVE_PERIOD_NANOS);
        }
        if self.insight.patterns_changed && now >= self.insight.next_patterns_save {
            // Patterns quiet for all their kept windows make room for new ones.
            self.insight.patterns.prune(&self.config.patterns, self.insight.patterns_newest);
            self.insight.save_due = true;
            self.insight.next_patterns_save = now.saturating_add(PATTERNS_SAVE_PERIOD_NANOS);
        }
    }

    pub(crate) fn take_insight_changes(&mut self) -> Option<InsightChanges> {
        if !std::mem::take(&mut self.insight.save_due) {
            return None;
        }
        self.insight.unsaved_any = false;
        let patterns = std::mem::take(&mut self.insight.patterns_changed).then(|| self.insight.patterns.clone());
        Some(InsightChanges {
            learned: std::mem::take(&mut self.insight.unsaved),
            patterns,
            max_values_per_dimension: self.config.sla.risk.max_values_per_dimension,
        })
    }

    /// Puts back what a commit that failed, or was refused for another replica's write, was to save, for the next
    /// one.
    pub fn insight_commit_failed(&mut self, changes: InsightChanges) {
        self.insight.unsaved.merge_bounded(&changes.learned, self.config.sla.risk.max_values_per_dimension);
        self.insight.unsaved_any = true;
        self.insight.patterns_changed |= changes.patterns.is_some();
        self.insight.save_due = true;
    }

    /// Carries the insight an engine being replaced (rebuilt from a shared store) had taken up over to this one, with
    /// what it had not saved yet. What its last group staged is not carried: that group is processed again.
    pub(crate) fn take_over_insight(&mut self, previous: &Engine) {
        let p = &previous.insight;
        self.insight.delay = p.delay.clone();
        self.insight.unsaved = p.unsaved.clone();
        self.insight.unsaved_any = p.unsaved_any;
        self.insight.patterns = p.patterns.clone();
        self.insight.patterns_changed = p.patterns_changed;
        self.insight.patterns_newest = p.patterns_newest;
        self.insight.save_due = p.save_due;
        self.insight.next_save = p.next_save;
        self.insight.next_patterns_save = p.next_patterns_save;
        self.reindex_risk_checks();
    }
}
