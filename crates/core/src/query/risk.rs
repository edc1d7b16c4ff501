//! Delay risk: the open orders whose running clocks were found at risk, most urgent first, and what the delay
//! model has learned per SLA target and dimension value, so that a planner can see why an order was flagged.

use crate::config::Config;
use crate::ids::order_trace_id;
use crate::insight::delay::DelayModel;
use crate::order::OrderRecord;
use crate::time::{millis, rfc3339};
use serde::Serialize;
use std::collections::BTreeMap;

/// Which at-risk clocks to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RiskFilter {
    /// The owner of the awaited milestone.
    pub owner: Option<String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AtRiskOrders {
    /// The breach probability at which an order is at risk (`sla.risk.threshold`).
    pub threshold: f64,
    pub orders: Vec<AtRiskClock>,
}

/// One running clock found at risk whose deadline has not passed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AtRiskClock {
    pub order_id: String,
    pub trace_id: String,
    pub target: String,
    /// The milestone awaited, and who owns it: who should act before the deadline.
    pub milestone: String,
    pub owner: String,
    pub started_at: String,
    pub deadline: String,
    pub found_at: String,
    /// The model's breach probability when the clock was found at risk; absent on the fixed share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// What the judgement was based on, in words.
    pub basis: String,
    /// Time left to the deadline.
    pub remaining_ms: u64,
    pub dimensions: BTreeMap<String, String>,
}

/// The at-risk clocks of `orders` matching `filter`, the nearest deadline first, at most `limit`.
pub fn at_risk_orders<'a>(
    config: &Config,
    orders: impl Iterator<Item = &'a OrderRecord>,
    filter: &RiskFilter,
    limit: usize,
    now: u64,
) -> AtRiskOrders {
    let milestones = &config.taxonomy.milestones;
    let mut clocks: Vec<(u64, AtRiskClock)> = Vec::new();
    for order in orders.filter(|o| !o.is_closed()) {
        for s in &order.slas {
            let Some(found) = s.at_risk_at_unix_nanos else { continue };
            if !s.is_running() || now >= s.deadline_unix_nanos {
                continue;
            }
            let Some(target) = config.sla.targets.iter().find(|t| t.name == s.target) else { continue };
            let awaited = &milestones[target.to];
            if filter.owner.as_ref().is_some_and(|o| *o != awaited.owner)
                || filter.target.as_ref().is_some_and(|t| *t != s.target)
            {
                continue;
            }
            clocks.push((
                s.deadline_unix_nanos,
                AtRiskClock {
                    order_id: order.key.clone(),
                    trace_id: hex::encode(order_trace_id(&order.key)),
                    target: s.target.clone(),
                    milestone: awaited.name.clone(),
                    owner: awaited.owner.clone(),
                    started_at: rfc3339(s.started_at_unix_nanos),
                    deadline: rfc3339(s.deadline_unix_nanos),
                    found_at: rfc3339(found),
                    probability: s.at_risk_probability,
                    basis: s.at_risk_basis.clone().unwrap_or_default(),
                    remaining_ms: millis(s.deadline_unix_nanos - now),
                    dimensions: order.dimensions.clone(),
                },
            ));
        }
    }
    clocks.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.order_id.cmp(&y.order_id)));
    AtRiskOrders {
        threshold: config.sla.risk.threshold,
        orders: clocks.into_iter().take(limit).map(|(_, c)| c).collect(),
    }
}

/// What the delay model knows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DelayModelView {
    pub threshold: f64,
    /// Samples a distribution needs before it is used (`sla.risk.min_samples`).
    pub min_samples: u64,
    pub targets: Vec<TargetDelays>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetDelays {
    pub target: String,
    pub from: String,
    pub to: String,
    /// The target's own allowance (per-dimension overrides aside), against which `breach_share` is counted.
    pub allowed_ms: u64,
    pub all: DelayStats,
    /// Per dimension value, the values whose breach share differs most from all orders' first.
    pub values: Vec<ValueDelays>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueDelays {
    pub dimension: String,
    pub value: String,
    #[serde(flatten)]
    pub stats: DelayStats,
    /// Whether the value has enough samples to be judged by.
    pub used: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DelayStats {
    pub samples: u64,
    pub p50_ms: u64,
    pub p90_ms: u64,
    /// The share of the samples that took longer than the allowance.
    pub breach_share: f64,
}

fn stats(durations: &crate::insight::delay::Durations, allowed_ms: u64) -> DelayStats {
    // Durations are non-negative seconds well within u64 milliseconds; float-to-integer casts saturate anyway.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = |q: f64| durations.quantile(q).map_or(0, |s| (s * 1000.0).round().max(0.0) as u64);
    let samples = durations.count();
    #[allow(clippy::cast_precision_loss)]
    let breach_share =
        if samples == 0 { 0.0 } else { durations.longer_than(allowed_ms as f64 / 1000.0) as f64 / samples as f64 };
    DelayStats { samples, p50_ms: ms(0.5), p90_ms: ms(0.9), breach_share }
}

/// The model's distributions for every configured target.
pub fn delay_model_view(config: &Config, model: &DelayModel) -> DelayModelView {
    let milestones = &config.taxonomy.milestones;
    let targets = config
        .sla
        .targets
        .iter()
        .filter_map(|t| {
            let (all, values) = model.distributions(&t.name)?;
            let allowed_ms = millis(crate::time::nanos(t.within));
            let all = stats(all, allowed_ms);
            let mut values: Vec<ValueDelays> = values
                .into_iter()
                .map(|(dimension, value, durations)| ValueDelays {
                    dimension: dimension.to_string(),
                    value: value.to_string(),
                    used: durations.count() >= config.sla.risk.min_samples,
                    stats: stats(durations, allowed_ms),
                })
                .collect();
            let distance = |v: &ValueDelays| (v.stats.breach_share - all.breach_share).abs();
            values.sort_by(|a, b| {
                distance(b)
                    .total_cmp(&distance(a))
                    .then_with(|| (&a.dimension, &a.value).cmp(&(&b.dimension, &b.value)))
            });
            Some(TargetDelays {
                target: t.name.clone(),
                from: milestones[t.from].name.clone(),
                to: milestones[t.to].name.clone(),
                allowed_ms,
                all,
                values,
            })
        })
        .collect();
    DelayModelView { threshold: config.sla.risk.threshold, min_samples: config.sla.risk.min_samples, targets }
}
