//! Answers to "where is this order and who owns the next action": the accountability timeline of one order
//! ([`order_view`]), lists of orders filtered and paginated ([`list_orders`]), and exceptions grouped by class and
//! owner ([`list_exceptions`]), and what the ops console's first pages show: the flow of open orders over the stages
//! ([`flow`]), the stalled and breached orders ([`stalled`]) and the orders an alias names ([`search`]).
//!
//! Pure functions over order records, taking `now` as an argument like the engine; the HTTP and gRPC APIs and the
//! demo only translate these views. Every list is bounded by its page size, and pages are cut by an opaque token.

mod bottlenecks;
mod console;
mod exceptions;
mod order_list;
mod order_view;
mod patterns;
mod risk;

pub use bottlenecks::{
    bottlenecks, BottleneckFilter, Bottlenecks, DimensionBreakdown, Transition, ValueStats, MIN_SAMPLES,
};
pub use console::{
    at_risk, flow, search, stalled, ClassView, FlowView, SearchMatch, SearchResult, StageView, StalledOrder,
    StalledOrders, NO_STAGE,
};
pub use exceptions::{list_exceptions, ExceptionFilter, ExceptionGroup, ExceptionSummary};
pub use order_list::{list_orders, OrderFilter, OrderPage, OrderSummary};
pub use order_view::{
    order_view, Blocker, ExceptionView, MilestoneView, NextAction, OrderView, PlaybookAction, SlaView, SpanRef,
};
pub use patterns::{patterns, PatternFilter, PatternList, PatternSummary};
pub use risk::{
    at_risk_orders, delay_model_view, AtRiskClock, AtRiskOrders, DelayModelView, DelayStats, RiskFilter, TargetDelays,
    ValueDelays,
};

use crate::config::Config;

/// The page size when a request asks for none.
const DEFAULT_PAGE_SIZE: usize = 100;

/// A question the queries cannot answer as asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("invalid page token")]
    PageToken,
    #[error("invalid {field}: {reason}")]
    Argument { field: &'static str, reason: String },
}

/// Checks a page size against the configured bound; 0 means the default page size.
pub fn page_size(config: &Config, requested: usize) -> Result<usize, QueryError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE.min(config.api.max_page_size)),
        n if n > config.api.max_page_size => Err(QueryError::Argument {
            field: "page_size",
            reason: format!("at most {} (api.max_page_size)", config.api.max_page_size),
        }),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests;
