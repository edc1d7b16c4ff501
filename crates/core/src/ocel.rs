//! The object-centric event log (OCEL 2.0, JSON) of the orders ordertrail holds, for process-mining tools (pm4py,
//! Celonis, ocpa): orders and the objects their aliases name (shipments, deliveries, invoices, ASNs…) as objects,
//! related to one another as the aliases relate them; milestones reached, exceptions raised and resolved, and SLA
//! breaches as events, each related to its order.
//!
//! Event times are the spans' own times, so the log reads the same however the spans arrived. Event ids are
//! functions of the order and the event, so that two exports of the same orders name the same events.

use crate::config::Config;
use crate::order::{AliasRecord, OrderRecord};
use crate::time::rfc3339;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The object type of an order.
pub const ORDER_TYPE: &str = "order";

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OcelLog {
    pub object_types: Vec<OcelType>,
    pub event_types: Vec<OcelType>,
    pub objects: Vec<OcelObject>,
    pub events: Vec<OcelEvent>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OcelType {
    pub name: String,
    pub attributes: Vec<OcelTypeAttribute>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OcelTypeAttribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OcelObject {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub attributes: Vec<OcelObjectAttribute>,
    pub relationships: Vec<OcelRelationship>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OcelObjectAttribute {
    pub name: String,
    pub value: String,
    pub time: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OcelEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub time: String,
    pub attributes: Vec<OcelEventAttribute>,
    pub relationships: Vec<OcelRelationship>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OcelEventAttribute {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OcelRelationship {
    pub object_id: String,
    pub qualifier: String,
}

/// An event before it gets its id: (time, type, attributes).
type Pending = (u64, String, Vec<(&'static str, String)>);

/// The events of one order, by the spans' times: milestones reached, exceptions raised and resolved (a breach is
/// told as an SLA breach, not as the exception it is recorded as), SLA breaches at their deadlines.
fn order_events(order: &OrderRecord) -> Vec<Pending> {
    let mut events: Vec<Pending> = Vec::new();
    for m in &order.milestones {
        if let Some(reach) = &m.reached {
            let mut attributes = vec![("system", reach.service.clone())];
            if let Some(actor) = &reach.actor {
                attributes.push(("actor", actor.clone()));
            }
            events.push((reach.at_unix_nanos, m.name.clone(), attributes));
        }
    }
    for e in order.exceptions.iter().filter(|e| !e.signature.starts_with("sla:")) {
        let attributes = vec![
            ("owner", e.owner.clone()),
            ("milestone", e.milestone.clone().unwrap_or_default()),
            ("reason", e.reason.clone()),
            ("system", e.service.clone()),
        ];
        events.push((e.first_seen_unix_nanos, format!("{} exception raised", e.class), attributes.clone()));
        if let Some(resolved) = e.resolved_at_unix_nanos {
            events.push((resolved, format!("{} exception resolved", e.class), attributes));
        }
    }
    for s in order.slas.iter().filter(|s| s.breached_at_unix_nanos.is_some() && s.withdrawn_at_unix_nanos.is_none()) {
        events.push((
            s.deadline_unix_nanos,
            "sla breached".to_string(),
            vec![("target", s.target.clone()), ("milestone", s.to.clone())],
        ));
    }
    // Same instant (a failed step raises its exception as it reaches its milestone): ordered by type and set a
    // nanosecond apart, below any source clock's precision, so that every tool reading the log puts them in the
    // same order, whatever the spans' arrival.
    events.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for i in 1..events.len() {
        if events[i].0 <= events[i - 1].0 {
            events[i].0 = events[i - 1].0.saturating_add(1);
        }
    }
    events
}

/// The log of `orders` whose first span is within `[since, until)`, with the objects `aliases` name for them.
pub fn ocel<'a>(
    config: &Config,
    orders: impl Iterator<Item = &'a OrderRecord>,
    aliases: &[AliasRecord],
    since: Option<u64>,
    until: Option<u64>,
) -> OcelLog {
    let mut selected: Vec<&OrderRecord> = orders
        .filter(|o| {
            since.is_none_or(|s| o.first_seen_unix_nanos >= s) && until.is_none_or(|u| o.first_seen_unix_nanos < u)
        })
        .collect();
    selected.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: BTreeSet<&str> = selected.iter().map(|o| o.key.as_str()).collect();
    let dimension_names: Vec<String> = config.dimensions.iter().map(|d| d.name.clone()).collect();

    // The objects aliases name, by order: each event of an order concerns them too (a shipment's events are those
    // of the orders it carries), and each relates to the orders it concerns.
    let mut named: Vec<&AliasRecord> =
        aliases.iter().filter(|a| a.orders.iter().any(|o| keys.contains(o.as_str()))).collect();
    named.sort_by(|a, b| (&a.kind, &a.value).cmp(&(&b.kind, &b.value)));
    let mut of_order: BTreeMap<&str, Vec<OcelRelationship>> = BTreeMap::new();
    for alias in &named {
        for order in alias.orders.iter().filter(|o| keys.contains(o.as_str())) {
            of_order.entry(order.as_str()).or_default().push(OcelRelationship {
                object_id: format!("{}:{}", alias.kind, alias.value),
                qualifier: alias.kind.clone(),
            });
        }
    }
    let mut objects = Vec::new();
    // With their time in nanoseconds, to sort by: the text of a time does not sort (`16Z` after `16.1Z`).
    let mut events: Vec<(u64, OcelEvent)> = Vec::new();
    let mut event_types: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for order in &selected {
        let first_seen = rfc3339(order.first_seen_unix_nanos);
        objects.push(OcelObject {
            id: order.key.clone(),
            kind: ORDER_TYPE.into(),
            attributes: order
                .dimensions
                .iter()
                .map(|(name, value)| OcelObjectAttribute {
                    name: name.clone(),
                    value: value.clone(),
                    time: first_seen.clone(),
                })
                .collect(),
            relationships: Vec::new(),
        });
        for (n, (at, kind, attributes)) in order_events(order).into_iter().enumerate() {
            event_types.entry(kind.clone()).or_default().extend(attributes.iter().map(|(name, _)| *name));
            events.push((
                at,
                OcelEvent {
                    id: format!("{}#{n}", order.key),
                    kind,
                    time: rfc3339(at),
                    attributes: attributes
                        .into_iter()
                        .map(|(name, value)| OcelEventAttribute { name: name.to_string(), value })
                        .collect(),
                    relationships: std::iter::once(OcelRelationship {
                        object_id: order.key.clone(),
                        qualifier: "order".into(),
                    })
                    .chain(of_order.get(order.key.as_str()).into_iter().flatten().cloned())
                    .collect(),
                },
            ));
        }
    }
    // A consolidated shipment relates to every order it carries.
    let mut alias_types = BTreeSet::new();
    for alias in named {
        alias_types.insert(alias.kind.clone());
        objects.push(OcelObject {
            id: format!("{}:{}", alias.kind, alias.value),
            kind: alias.kind.clone(),
            attributes: vec![],
            relationships: alias
                .orders
                .iter()
                .filter(|o| keys.contains(o.as_str()))
                .map(|o| OcelRelationship { object_id: o.clone(), qualifier: format!("{} of order", alias.kind) })
                .collect(),
        });
    }
    events.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    let events = events.into_iter().map(|(_, event)| event).collect();
    let string_attributes = |names: &mut dyn Iterator<Item = String>| {
        names.map(|name| OcelTypeAttribute { name, kind: "string".into() }).collect::<Vec<_>>()
    };
    let mut object_types =
        vec![OcelType { name: ORDER_TYPE.into(), attributes: string_attributes(&mut dimension_names.into_iter()) }];
    object_types.extend(alias_types.into_iter().map(|name| OcelType { name, attributes: Vec::new() }));
    OcelLog {
        object_types,
        event_types: event_types
            .into_iter()
            .map(|(name, attributes)| OcelType {
                name,
                attributes: string_attributes(&mut attributes.into_iter().map(str::to_string)),
            })
            .collect(),
        objects,
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_config;
    use crate::order::{MilestoneState, Reach};

    fn reached(order: &mut OrderRecord, name: &str, at: u64) {
        order.milestones.push(MilestoneState {
            name: name.into(),
            first_work_unix_nanos: at,
            span_count: 1,
            reached: Some(Reach {
                at_unix_nanos: at,
                trace_id: "aa".repeat(16),
                span_id: "bb".repeat(8),
                service: "erp".into(),
                actor: None,
            }),
            span_emitted: true,
        });
    }

    #[test]
    fn orders_and_their_aliases_become_related_objects_and_their_milestones_ordered_events() {
        let config = default_config();
        let second = 1_000_000_000;
        let mut a = OrderRecord::new("SO-A".into());
        a.first_seen_unix_nanos = 10 * second;
        // Reached in the order credit, capture by the spans' times; two at the same instant.
        reached(&mut a, "credit_approval", 12 * second);
        reached(&mut a, "order_capture", 10 * second);
        reached(&mut a, "pricing_approval", 12 * second);
        let mut b = OrderRecord::new("SO-B".into());
        b.first_seen_unix_nanos = 20 * second;
        reached(&mut b, "order_capture", 20 * second);
        let shipment = AliasRecord {
            kind: "shipment".into(),
            value: "SH-1".into(),
            orders: vec!["SO-A".into(), "SO-B".into(), "SO-OTHER".into()],
            over_cap: false,
        };
        let log = ocel(&config, [&a, &b].into_iter(), &[shipment], None, None);
        let kinds: Vec<&str> =
            log.events.iter().filter(|e| e.id.starts_with("SO-A")).map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["order_capture", "credit_approval", "pricing_approval"]);
        let times: Vec<&str> =
            log.events.iter().filter(|e| e.id.starts_with("SO-A")).map(|e| e.time.as_str()).collect();
        assert_eq!(times[1..], ["1970-01-01T00:00:12Z", "1970-01-01T00:00:12.000000001Z"], "a nanosecond apart");
        let consolidated = log.objects.iter().find(|o| o.id == "shipment:SH-1").unwrap();
        let carries: Vec<&str> = consolidated.relationships.iter().map(|r| r.object_id.as_str()).collect();
        assert_eq!(carries, ["SO-A", "SO-B"], "only the orders in the log");
        assert!(log.events[0].relationships.iter().any(|r| r.object_id == "shipment:SH-1"));
        assert_eq!(log.object_types.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["order", "shipment"]);
        // A range keeps the orders first seen in it.
        let later = ocel(&config, [&a, &b].into_iter(), &[], Some(15 * second), None);
        assert_eq!(later.objects.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["SO-B"]);
        let json = serde_json::to_value(&log).unwrap();
        assert!(json["objectTypes"].is_array() && json["events"][0]["relationships"][0]["objectId"] == "SO-A");
    }
}
