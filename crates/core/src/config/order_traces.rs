//! `order_traces`: how order traces are built, and when their root and milestone spans are emitted.

use super::check::{Checker, ConfigError};
use super::taxonomy::{MilestoneId, Taxonomy};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Order trace construction and emission.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawOrderTraces {
    /// `service.name` of the root and milestone spans ordertrail creates.
    pub service_name: String,
    /// Also pass the original spans on, enriched with order labels and a link to the order trace.
    pub passthrough: bool,
    /// Milestones whose arrival closes the order and emits its root span; left out, the last main-path milestone.
    pub close_on: Option<Vec<String>>,
    /// An order with no new span for this long is closed and its root emitted.
    #[serde(with = "humantime_serde")]
    pub idle_close_after: Duration,
    /// Span attributes naming who acted, tried in order when a rule names none.
    pub actor_attributes: Vec<String>,
}

impl Default for RawOrderTraces {
    fn default() -> RawOrderTraces {
        RawOrderTraces {
            service_name: "ordertrail".into(),
            passthrough: true,
            close_on: None,
            idle_close_after: Duration::from_secs(7 * 24 * 3600),
            actor_attributes: vec!["order.actor".into(), "enduser.id".into()],
        }
    }
}

#[derive(Debug, Clone)]
pub struct OrderTraceConfig {
    pub service_name: String,
    pub passthrough: bool,
    pub close_on: Vec<MilestoneId>,
    pub idle_close_after: Duration,
    pub actor_attributes: Vec<String>,
}

impl RawOrderTraces {
    pub(crate) fn check(&self, check: &Checker<'_>, taxonomy: &Taxonomy) -> Result<OrderTraceConfig, ConfigError> {
        let close_on = match &self.close_on {
            Some(names) => names
                .iter()
                .enumerate()
                .map(|(i, name)| taxonomy.milestone_at(check, format!("order_traces.close_on[{i}]"), name))
                .collect::<Result<_, _>>()?,
            None => taxonomy.milestones.iter().rposition(|m| !m.off_path).into_iter().collect(),
        };
        if self.idle_close_after.is_zero() {
            return Err(check.err("order_traces.idle_close_after", "must be greater than zero"));
        }
        Ok(OrderTraceConfig {
            service_name: self.service_name.clone(),
            passthrough: self.passthrough,
            close_on,
            idle_close_after: self.idle_close_after,
            actor_attributes: self.actor_attributes.clone(),
        })
    }
}
