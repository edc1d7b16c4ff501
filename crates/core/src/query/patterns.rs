//! Recurring exception patterns as the API shows them: the busiest in the latest window first, each with the
//! playbook that applies to it, if one does.

use crate::config::{find_playbook, Config, PlaybookWhen, Situation};
use crate::insight::patterns::{PatternBook, Trend};
use crate::time::rfc3339;
use serde::Serialize;
use std::collections::BTreeMap;

/// Which patterns to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternFilter {
    pub class: Option<String>,
    pub system: Option<String>,
    pub milestone: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PatternList {
    /// The width of one counting window, in seconds (`patterns.window`).
    pub window_seconds: u64,
    /// Patterns kept, of which `patterns` lists those matching the filter, at most the page size.
    pub kept: u64,
    /// New patterns refused because `patterns.max_patterns` was reached.
    pub refused: u64,
    pub patterns: Vec<PatternSummary>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PatternSummary {
    pub id: String,
    pub class: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub milestone: Option<String>,
    pub system: String,
    pub template: String,
    pub example: String,
    pub total: u64,
    pub in_last_window: u64,
    pub in_kept_windows: u64,
    /// Counts of the kept windows, oldest first, the current window last.
    pub per_window: Vec<u64>,
    pub first_seen: String,
    pub last_seen: String,
    pub orders_affected: u64,
    /// `orders_affected` is a lower bound: more orders were seen than are remembered.
    pub orders_affected_capped: bool,
    pub recent_orders: Vec<String>,
    pub trend: Trend,
    /// The playbook for this pattern's exceptions, when one matches whatever the order's dimensions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
}

/// The patterns of `book` matching `filter`, busiest first, at most `limit`.
pub fn patterns(config: &Config, book: &PatternBook, filter: &PatternFilter, limit: usize, now: u64) -> PatternList {
    let no_dimensions = BTreeMap::new();
    let matching = book
        .patterns(&config.patterns, now)
        .into_iter()
        .filter(|p| {
            filter.class.as_ref().is_none_or(|c| *c == p.class)
                && filter.system.as_ref().is_none_or(|s| *s == p.system)
                && filter.milestone.as_ref().is_none_or(|m| p.milestone.as_ref() == Some(m))
        })
        .take(limit)
        .map(|p| {
            let situation = Situation {
                when: PlaybookWhen::Exception,
                class: Some(&p.class),
                milestone: p.milestone.as_deref(),
                system: Some(&p.system),
                // The template, which masking leaves as it is: the example may have been cut.
                reason: Some(&p.template),
                dimensions: &no_dimensions,
            };
            let playbook = find_playbook(&config.playbooks, &situation).map(|pb| pb.name.clone());
            PatternSummary {
                first_seen: rfc3339(p.first_seen_unix_nanos),
                last_seen: rfc3339(p.last_seen_unix_nanos),
                id: p.id,
                class: p.class,
                milestone: p.milestone,
                system: p.system,
                template: p.template,
                example: p.example,
                total: p.total,
                in_last_window: p.in_last_window,
                in_kept_windows: p.in_kept_windows,
                per_window: p.per_window,
                orders_affected: p.orders_affected,
                orders_affected_capped: p.orders_affected_capped,
                recent_orders: p.recent_orders,
                trend: p.trend,
                playbook,
            }
        })
        .collect();
    PatternList {
        window_seconds: config.patterns.window.as_secs(),
        kept: book.len() as u64,
        refused: book.refused(),
        patterns: matching,
    }
}
