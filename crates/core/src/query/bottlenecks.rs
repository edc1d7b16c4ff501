//! Bottlenecks: for each transition between main-path milestones, how long orders take (median and p90) and how
//! often its SLA breached, overall and per value of each dimension, so that "which warehouse, carrier or customer
//! segment drives the pick-pack delay" has an answer: the values whose p90 stands furthest above the overall, and
//! their share of the breaches.

use crate::config::Config;
use crate::order::{OrderRecord, SlaStatus};
use crate::time::millis;
use serde::Serialize;
use std::collections::BTreeMap;

/// A dimension value needs this many samples of a transition before it is compared with the whole.
pub const MIN_SAMPLES: usize = 3;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BottleneckFilter {
    /// Only the transition ending at this milestone.
    pub to: Option<String>,
    /// Only this dimension.
    pub dimension: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bottlenecks {
    /// Slowest first (by p90).
    pub transitions: Vec<Transition>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub orders: u64,
    pub median_ms: u64,
    pub p90_ms: u64,
    /// Orders whose SLA clock ending at `to` breached (whether or not `to` came late).
    pub breaches: u64,
    pub dimensions: Vec<DimensionBreakdown>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DimensionBreakdown {
    pub dimension: String,
    /// Values with at least `MIN_SAMPLES` orders, the furthest above the overall p90 first.
    pub values: Vec<ValueStats>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueStats {
    pub value: String,
    pub orders: u64,
    pub median_ms: u64,
    pub p90_ms: u64,
    /// This value's p90 over the transition's: above 1, slower than the whole.
    pub p90_vs_overall: f64,
    pub breaches: u64,
    /// This value's share of the transition's breaches (0 when there were none).
    pub breach_share: f64,
}

/// The `q` quantile (0..=1) of sorted `values`, by the nearest rank.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0);
    // Within 1..=len by construction.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let index = (rank as usize).min(sorted.len()) - 1;
    sorted[index]
}

/// One order's passage through one transition: how long it took, whether its clock breached, its dimensions.
struct Passage<'a> {
    millis: u64,
    breached: bool,
    dimensions: &'a BTreeMap<String, String>,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The transitions of the orders given, with their breakdown by dimension.
pub fn bottlenecks<'a>(
    config: &Config,
    orders: impl Iterator<Item = &'a OrderRecord>,
    filter: &BottleneckFilter,
) -> Bottlenecks {
    let taxonomy = &config.taxonomy;
    let main_path: Vec<&str> = taxonomy.milestones.iter().filter(|m| !m.off_path).map(|m| m.name.as_str()).collect();
    let mut passages: BTreeMap<(String, String), Vec<Passage<'a>>> = BTreeMap::new();
    for order in orders {
        // The main-path milestones the order reached, in the order it reached them.
        let mut reached: Vec<(u64, &str)> =
            main_path.iter().filter_map(|name| order.reached_at(name).map(|at| (at, *name))).collect();
        reached.sort();
        for pair in reached.windows(2) {
            let ((from_at, from), (to_at, to)) = (pair[0], pair[1]);
            if filter.to.as_deref().is_some_and(|want| want != to) {
                continue;
            }
            let breached =
                order.slas.iter().any(|s| s.to == to && matches!(s.status(), SlaStatus::Breached | SlaStatus::Late));
            passages.entry((from.to_string(), to.to_string())).or_default().push(Passage {
                millis: millis(to_at.saturating_sub(from_at)),
                breached,
                dimensions: &order.dimensions,
            });
        }
    }
    let dimensions: Vec<&str> = config
        .dimensions
        .iter()
        .map(|d| d.name.as_str())
        .filter(|d| filter.dimension.as_deref().is_none_or(|want| want == *d))
        .collect();
    let mut transitions: Vec<Transition> = passages
        .into_iter()
        .map(|((from, to), passages)| {
            let mut all: Vec<u64> = passages.iter().map(|p| p.millis).collect();
            all.sort_unstable();
            let (median, p90) = (quantile(&all, 0.5), quantile(&all, 0.9));
            let breaches = passages.iter().filter(|p| p.breached).count() as u64;
            let breakdown = dimensions
                .iter()
                .map(|dimension| {
                    let mut by_value: BTreeMap<&str, Vec<&Passage<'_>>> = BTreeMap::new();
                    for p in &passages {
                        if let Some(value) = p.dimensions.get(*dimension) {
                            by_value.entry(value.as_str()).or_default().push(p);
                        }
                    }
                    let mut values: Vec<ValueStats> = by_value
                        .into_iter()
                        .filter(|(_, ps)| ps.len() >= MIN_SAMPLES)
                        .map(|(value, ps)| {
                            let mut times: Vec<u64> = ps.iter().map(|p| p.millis).collect();
                            times.sort_unstable();
                            let value_p90 = quantile(&times, 0.9);
                            let value_breaches = ps.iter().filter(|p| p.breached).count() as u64;
                            ValueStats {
                                value: value.to_string(),
                                orders: ps.len() as u64,
                                median_ms: quantile(&times, 0.5),
                                p90_ms: value_p90,
                                p90_vs_overall: ratio(value_p90, p90),
                                breaches: value_breaches,
                                breach_share: ratio(value_breaches, breaches),
                            }
                        })
                        .collect();
                    values.sort_by(|a, b| {
                        b.p90_vs_overall.total_cmp(&a.p90_vs_overall).then_with(|| a.value.cmp(&b.value))
                    });
                    DimensionBreakdown { dimension: dimension.to_string(), values }
                })
                .collect();
            Transition {
                from,
                to,
                orders: all.len() as u64,
                median_ms: median,
                p90_ms: p90,
                breaches,
                dimensions: breakdown,
            }
        })
        .collect();
    transitions.sort_by(|a, b| b.p90_ms.cmp(&a.p90_ms).then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to))));
    Bottlenecks { transitions }
}
