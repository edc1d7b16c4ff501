//! Exceptions grouped by class and owner across orders: how many are open and resolved, how many orders they
//! hold up, since when, at which milestones, with a bounded sample of the affected orders.

use crate::order::OrderRecord;
use crate::time::rfc3339;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Filters of the exception summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExceptionFilter {
    pub class: Option<String>,
    pub owner: Option<String>,
    pub milestone: Option<String>,
    /// Include resolved exceptions too (default: open only).
    pub include_resolved: bool,
    /// Last seen at or after.
    pub since: Option<u64>,
    /// Last seen before.
    pub until: Option<u64>,
}

/// Exceptions of one class and owner.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExceptionGroup {
    pub class: String,
    pub owner: String,
    pub open: u64,
    pub resolved: u64,
    /// Distinct orders affected.
    pub orders: u64,
    /// Occurrences, counting repeats.
    pub occurrences: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_open_since: Option<String>,
    /// Exceptions by milestone (`-` when none).
    pub by_milestone: BTreeMap<String, u64>,
    /// Up to `sample_size` affected order ids, oldest open first.
    pub sample_orders: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExceptionSummary {
    pub groups: Vec<ExceptionGroup>,
    /// Groups left out because of the page size.
    pub groups_omitted: u64,
}

/// Exceptions grouped by class and owner, most open first.
pub fn list_exceptions<'a>(
    orders: impl Iterator<Item = &'a OrderRecord>,
    filter: &ExceptionFilter,
    max_groups: usize,
    sample_size: usize,
) -> ExceptionSummary {
    struct Acc {
        group: ExceptionGroup,
        order_set: BTreeSet<String>,
        oldest_open: Option<u64>,
        samples: Vec<(u64, String)>,
    }
    let mut groups: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for order in orders {
        for e in &order.exceptions {
            let open = e.resolved_at_unix_nanos.is_none();
            if (!open && !filter.include_resolved)
                || filter.class.as_ref().is_some_and(|c| c != &e.class)
                || filter.owner.as_ref().is_some_and(|o| o != &e.owner)
                || filter.milestone.as_ref().is_some_and(|m| Some(m) != e.milestone.as_ref())
                || filter.since.is_some_and(|s| e.last_seen_unix_nanos < s)
                || filter.until.is_some_and(|u| e.last_seen_unix_nanos >= u)
            {
                continue;
            }
            let acc = groups.entry((e.class.clone(), e.owner.clone())).or_insert_with(|| Acc {
                group: ExceptionGroup {
                    class: e.class.clone(),
                    owner: e.owner.clone(),
                    open: 0,
                    resolved: 0,
                    orders: 0,
                    occurrences: 0,
                    oldest_open_since: None,
                    by_milestone: BTreeMap::new(),
                    sample_orders: Vec::new(),
                },
                order_set: BTreeSet::new(),
                oldest_open: None,
                samples: Vec::new(),
            });
            if open {
                acc.group.open += 1;
                acc.oldest_open =
                    Some(acc.oldest_open.map_or(e.first_seen_unix_nanos, |t| t.min(e.first_seen_unix_nanos)));
            } else {
                acc.group.resolved += 1;
            }
            acc.group.occurrences += e.count;
            *acc.group.by_milestone.entry(e.milestone.clone().unwrap_or_else(|| "-".into())).or_default() += 1;
            if acc.order_set.insert(order.key.clone()) {
                // Open ones sort first, then the oldest; the sample stays bounded while scanning.
                let rank = if open { e.first_seen_unix_nanos } else { u64::MAX };
                acc.samples.push((rank, order.key.clone()));
                if acc.samples.len() > sample_size * 4 {
                    acc.samples.sort();
                    acc.samples.truncate(sample_size);
                }
            }
        }
    }
    let mut out: Vec<ExceptionGroup> = groups
        .into_values()
        .map(|mut acc| {
            acc.group.orders = acc.order_set.len() as u64;
            acc.group.oldest_open_since = acc.oldest_open.map(rfc3339);
            acc.samples.sort();
            acc.group.sample_orders = acc.samples.into_iter().take(sample_size).map(|(_, k)| k).collect();
            acc.group
        })
        .collect();
    out.sort_by(|a, b| b.open.cmp(&a.open).then(b.occurrences.cmp(&a.occurrences)).then(a.class.cmp(&b.class)));
    let omitted = out.len().saturating_sub(max_groups) as u64;
    out.truncate(max_groups);
    ExceptionSummary { groups: out, groups_omitted: omitted }
}
