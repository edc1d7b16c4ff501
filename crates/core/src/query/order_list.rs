//! Lists of orders filtered by stage, SLA status, owner, exception class, customer and time, newest first, cut
//! into pages by an opaque token.

use super::order_view::next_action;
use super::{NextAction, QueryError};
use crate::config::Config;
use crate::ids::order_trace_id;
use crate::order::progress::stage_and_next;
use crate::order::{OrderRecord, OrderSlaStatus, OrderStatus};
use crate::time::rfc3339;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One line of a list of orders.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderSummary {
    pub order_id: String,
    pub trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<NextAction>,
    pub sla_status: OrderSlaStatus,
    pub open_exceptions: u64,
    /// Classes of the open exceptions.
    pub exception_classes: Vec<String>,
    pub dimensions: BTreeMap<String, String>,
    pub first_seen: String,
    pub last_seen: String,
}

/// Filters of a list of orders; every field set must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderFilter {
    pub stage: Option<String>,
    pub sla_status: Option<OrderSlaStatus>,
    /// Owner of the next action or of an open exception.
    pub owner: Option<String>,
    /// Class of an open exception.
    pub exception_class: Option<String>,
    /// The `customer` dimension.
    pub customer: Option<String>,
    pub status: Option<OrderStatus>,
    /// First seen at or after (Unix nanoseconds).
    pub since: Option<u64>,
    /// First seen before.
    pub until: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderPage {
    pub orders: Vec<OrderSummary>,
    /// Pass as `page_token` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// Orders sort newest first (by first span), then by key; the token is the sort key of the last order returned.
fn sort_key(order: &OrderRecord) -> (std::cmp::Reverse<u64>, &str) {
    (std::cmp::Reverse(order.first_seen_unix_nanos), order.key.as_str())
}

fn encode_token(order: &OrderRecord) -> String {
    hex::encode(format!("{}\n{}", order.first_seen_unix_nanos, order.key))
}

fn decode_token(token: &str) -> Result<(u64, String), QueryError> {
    let bytes = hex::decode(token).map_err(|_| QueryError::PageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| QueryError::PageToken)?;
    let (first_seen, key) = text.split_once('\n').ok_or(QueryError::PageToken)?;
    Ok((first_seen.parse().map_err(|_| QueryError::PageToken)?, key.to_string()))
}

fn matches(config: &Config, order: &OrderRecord, filter: &OrderFilter, now: u64) -> bool {
    let (stage, next) = stage_and_next(&config.taxonomy, order);
    if let Some(want) = &filter.stage {
        if stage.map_or("none", |m| m.name.as_str()) != want {
            return false;
        }
    }
    if let Some(want) = filter.sla_status {
        if order.sla_status(now) != want {
            return false;
        }
    }
    if let Some(want) = &filter.owner {
        let next_owner =
            next.is_some_and(|m| &m.owner == want) || next_action(config, order, now).is_some_and(|n| &n.owner == want);
        if !next_owner && !order.open_exceptions().any(|e| &e.owner == want) {
            return false;
        }
    }
    if let Some(want) = &filter.exception_class {
        if !order.open_exceptions().any(|e| &e.class == want) {
            return false;
        }
    }
    if let Some(want) = &filter.customer {
        if order.dimensions.get("customer") != Some(want) {
            return false;
        }
    }
    if let Some(want) = filter.status {
        if order.status() != want {
            return false;
        }
    }
    filter.since.is_none_or(|s| order.first_seen_unix_nanos >= s)
        && filter.until.is_none_or(|u| order.first_seen_unix_nanos < u)
}

/// One page of the orders that match `filter`.
pub fn list_orders<'a>(
    config: &Config,
    orders: impl Iterator<Item = &'a OrderRecord>,
    filter: &OrderFilter,
    page_size: usize,
    page_token: &str,
    now: u64,
) -> Result<OrderPage, QueryError> {
    let after = if page_token.is_empty() { None } else { Some(decode_token(page_token)?) };
    let mut selected: Vec<&OrderRecord> = orders
        .filter(|o| match &after {
            None => true,
            Some((first_seen, key)) => sort_key(o) > (std::cmp::Reverse(*first_seen), key.as_str()),
        })
        .filter(|o| matches(config, o, filter, now))
        .collect();
    // This runs on the engine thread: partitioning around the page's end is linear, and only the page itself is
    // sorted, instead of every matching order for every page.
    let more = selected.len() > page_size;
    if more {
        selected.select_nth_unstable_by(page_size, |a, b| sort_key(a).cmp(&sort_key(b)));
        selected.truncate(page_size);
    }
    selected.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    let next_page_token =
        if more { selected.last().map(|o| encode_token(o)).unwrap_or_default() } else { String::new() };
    let orders = selected
        .into_iter()
        .map(|o| {
            let trace_id = hex::encode(order_trace_id(&o.key));
            let classes: BTreeSet<String> = o.open_exceptions().map(|e| e.class.clone()).collect();
            OrderSummary {
                order_id: o.key.clone(),
                trace_url: config.api.trace_url(&trace_id),
                trace_id,
                status: o.status(),
                stage: stage_and_next(&config.taxonomy, o).0.map(|m| m.name.clone()),
                next: next_action(config, o, now),
                sla_status: o.sla_status(now),
                open_exceptions: o.open_exceptions().count() as u64,
                exception_classes: classes.into_iter().collect(),
                dimensions: o.dimensions.clone(),
                first_seen: rfc3339(o.first_seen_unix_nanos),
                last_seen: rfc3339(o.last_seen_unix_nanos),
            }
        })
        .collect();
    Ok(OrderPage { orders, next_page_token })
}
