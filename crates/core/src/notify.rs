//! Notifications to the owning team: which engine events become which notifications, and their bodies (Slack,
//! Microsoft Teams, the generic JSON, or a template). Pure: the pipeline puts what this returns into the same
//! commit as the state that caused it, and the service's notifier delivers it from the store.

use crate::config::Situation;
use crate::config::{fill_template, find_playbook, Config, NotificationEvent, NotifierFormat, Playbook, PlaybookWhen};
use crate::engine::events::Event;
pub use crate::engine::Notification;
use crate::ids::order_trace_id;
use crate::time::rfc3339;

/// What one event says, before it is put into a body.
struct Facts {
    event: NotificationEvent,
    order: String,
    team: String,
    class: String,
    milestone: String,
    reason: String,
    target: String,
    deadline: String,
    /// What makes this event of this order distinct from another of the same kind.
    detail: String,
    /// The playbook that matches the event's situation, if one does.
    playbook: Option<Playbook>,
}

impl Facts {
    fn field(&self, config: &Config, name: &str) -> String {
        let trace_id = hex::encode(order_trace_id(&self.order));
        match name {
            "order" => self.order.clone(),
            "event" => self.event.as_str().to_string(),
            "team" => self.team.clone(),
            "class" => self.class.clone(),
            "milestone" => self.milestone.clone(),
            "reason" => self.reason.clone(),
            "target" => self.target.clone(),
            "deadline" => self.deadline.clone(),
            "trace_url" => config.api.trace_url(&trace_id).unwrap_or_default(),
            "trace_id" => trace_id,
            "summary" => self.summary(),
            "next_action" => self.playbook.as_ref().map(|p| p.action.clone()).unwrap_or_default(),
            "runbook" => self.playbook.as_ref().and_then(|p| p.runbook.clone()).unwrap_or_default(),
            "urgency" => self.playbook.as_ref().map(|p| p.urgency.as_str().to_string()).unwrap_or_default(),
            _ => String::new(),
        }
    }

    fn summary(&self) -> String {
        let what = self.what();
        match &self.playbook {
            None => what,
            Some(p) => {
                let runbook = p.runbook.as_ref().map(|r| format!(" Runbook: {r}")).unwrap_or_default();
                format!("{what} Recommended ({} urgency, {}): {}.{runbook}", p.urgency.as_str(), p.team, p.action)
            }
        }
    }

    fn what(&self) -> String {
        let milestone = self.milestone.replace('_', " ");
        match self.event {
            NotificationEvent::ExceptionOpened => format!(
                "Order {}: {} exception at {milestone}: {}. Owner: {}.",
                self.order, self.class, self.reason, self.team
            ),
            NotificationEvent::SlaBreached => format!(
                "Order {}: {milestone} not reached by {} (SLA {}). Next action: {}.",
                self.order, self.deadline, self.target, self.team
            ),
            NotificationEvent::BreachWithdrawn => format!(
                "Order {}: the breach of SLA {} is withdrawn; {milestone} was reached in time.",
                self.order, self.target
            ),
            NotificationEvent::OrderAtRisk => format!(
                "Order {}: {milestone} is at risk of missing {} (SLA {}): {}. Next action: {}.",
                self.order, self.deadline, self.target, self.reason, self.team
            ),
        }
    }
}

/// Why an order is at risk, in words: "breach probability 72 % (212 past orders with warehouse WH-SOUTH)".
pub fn risk_reason(probability: Option<f64>, basis: &crate::insight::delay::RiskBasis) -> String {
    match probability {
        Some(p) => format!("breach probability {:.0} % ({basis})", p * 100.0),
        None => basis.to_string(),
    }
}

fn facts(config: &Config, event: &Event) -> Option<Facts> {
    // What an event of an SLA clock says: its target, the awaited milestone, its deadline and whose it is.
    let clock = |event, order: &String, target: usize, deadline: Option<u64>, owner: Option<&String>| {
        let target = config.sla.targets.get(target)?;
        let to = config.taxonomy.milestones.get(target.to)?;
        Some(Facts {
            event,
            order: order.clone(),
            team: owner.unwrap_or(&to.owner).clone(),
            class: String::new(),
            milestone: to.name.clone(),
            reason: String::new(),
            target: target.name.clone(),
            deadline: deadline.map(rfc3339).unwrap_or_default(),
            detail: target.name.clone(),
            playbook: None,
        })
    };
    match event {
        // A breach is also recorded as an exception (its `sla:` pattern); it is told as a breach, once.
        Event::ExceptionRecorded {
            order,
            class,
            owner,
            milestone,
            signature,
            reason,
            opened,
            system,
            dimensions,
            ..
        } if *opened && !signature.starts_with("sla:") => {
            let situation = Situation {
                when: PlaybookWhen::Exception,
                class: Some(class),
                milestone: milestone.as_deref(),
                system: Some(system),
                reason: Some(reason),
                dimensions,
            };
            Some(Facts {
                playbook: find_playbook(&config.playbooks, &situation).cloned(),
                event: NotificationEvent::ExceptionOpened,
                order: order.clone(),
                team: owner.clone(),
                class: class.clone(),
                milestone: milestone.clone().unwrap_or_default(),
                reason: reason.clone(),
                target: String::new(),
                deadline: String::new(),
                detail: format!("{class}/{}/{signature}", milestone.as_deref().unwrap_or("-")),
            })
        }
        Event::SlaBreached { order, target, deadline_unix_nanos, owner, dimensions, .. } => {
            let mut facts =
                clock(NotificationEvent::SlaBreached, order, *target, Some(*deadline_unix_nanos), Some(owner))?;
            facts.playbook = config.target_playbook(*target, PlaybookWhen::Breached, dimensions).cloned();
            Some(facts)
        }
        Event::SlaAtRisk {
            order,
            target,
            deadline_unix_nanos,
            owner,
            probability,
            basis,
            dimensions,
            settled: false,
        } => {
            let mut facts =
                clock(NotificationEvent::OrderAtRisk, order, *target, Some(*deadline_unix_nanos), Some(owner))?;
            facts.reason = risk_reason(*probability, basis);
            facts.playbook = config.target_playbook(*target, PlaybookWhen::AtRisk, dimensions).cloned();
            Some(facts)
        }
        // A withdrawal names no owner: the awaited milestone's, who was told of the breach.
        Event::SlaWithdrawn { order, target, .. } => {
            clock(NotificationEvent::BreachWithdrawn, order, *target, None, None)
        }
        _ => None,
    }
}

fn body(config: &Config, format: &NotifierFormat, facts: &Facts) -> String {
    let field = |name: &str| facts.field(config, name);
    let trace_url = field("trace_url");
    match format {
        NotifierFormat::Slack => {
            let link = if trace_url.is_empty() { String::new() } else { format!(" <{trace_url}|Order trace>") };
            serde_json::json!({ "text": format!("{}{link}", facts.summary()) }).to_string()
        }
        NotifierFormat::Teams => {
            let colour = match facts.event {
                NotificationEvent::BreachWithdrawn => "2E7D32",
                _ => "C62828",
            };
            let mut card = serde_json::json!({
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": facts.summary(),
                "themeColor": colour,
                "title": format!("{} — {}", facts.order, facts.event.as_str().replace('_', " ")),
                "text": facts.summary(),
            });
            if !trace_url.is_empty() {
                card["potentialAction"] = serde_json::json!([{
                    "@type": "OpenUri", "name": "Open the order trace",
                    "targets": [{ "os": "default", "uri": trace_url }]
                }]);
            }
            card.to_string()
        }
        NotifierFormat::Json => {
            let mut object = serde_json::Map::new();
            for name in crate::config::TEMPLATE_FIELDS {
                object.insert(name.to_string(), serde_json::Value::String(field(name)));
            }
            serde_json::Value::Object(object).to_string()
        }
        NotifierFormat::Template(template) => fill_template(template, &field),
    }
}

/// The notifications a group's events make: for each event a team is told of, one per notifier that takes it.
pub fn notifications(config: &Config, events: &[Event], now: u64) -> Vec<Notification> {
    if config.notifications.notifiers.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for facts in events.iter().filter_map(|e| facts(config, e)) {
        for notifier in config.notifications.notifiers.iter().filter(|n| n.takes(facts.event, &facts.team)) {
            out.push(Notification {
                key: format!("{}/{}/{}/{}", notifier.name, facts.order, facts.event.as_str(), facts.detail),
                notifier: notifier.name.clone(),
                team: facts.team.clone(),
                event: facts.event,
                order: facts.order.clone(),
                body: body(config, &notifier.format, &facts),
                created_unix_nanos: now,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::collections::BTreeMap;

    fn config() -> Config {
        let yaml = format!(
            "{}\nnotifications:\n  notifiers:\n    - {{ name: everything, format: json, endpoint: http://h/x }}\n    \
             - {{ name: finance, teams: [finance-billing], events: [sla_breached], format: teams, endpoint: http://h/y }}\n    \
             - {{ name: custom, format: template, endpoint: http://h/z, template: '{{\"o\": \"{{{{order}}}}\", \"s\": \"{{{{summary}}}}\"}}' }}\n",
            crate::config::DEFAULT_CONFIG_YAML
        );
        parse(&yaml, "test").unwrap()
    }

    fn exception(owner: &str, signature: &str, opened: bool) -> Event {
        Event::ExceptionRecorded {
            order: "SO-1".into(),
            class: "integration".into(),
            owner: owner.into(),
            milestone: Some("shipment_confirmation".into()),
            signature: signature.into(),
            reason: "field ShipDate: expected yyyy-MM-dd".into(),
            system: "erp".into(),
            at_unix_nanos: 0,
            dimensions: BTreeMap::new(),
            opened,
        }
    }

    #[test]
    fn each_event_goes_to_the_notifiers_that_take_its_team_and_kind_once() {
        let config = config();
        let invoicing = config.taxonomy.milestones.iter().position(|m| m.name == "invoicing").unwrap();
        let target = config.sla.targets.iter().position(|t| t.to == invoicing).unwrap();
        let events = [
            exception("integration-team", "mapping", true),
            // A repeat, and the exception a breach is recorded as, are not told as opened exceptions.
            exception("integration-team", "mapping", false),
            exception("finance-billing", "sla:invoice_completion", true),
            Event::SlaBreached {
                order: "SO-1".into(),
                target,
                deadline_unix_nanos: 1_800_000_000_000_000_000,
                detected_unix_nanos: 1_800_000_000_000_000_000,
                owner: "finance-billing".into(),
                dimensions: BTreeMap::new(),
            },
        ];
        let out = notifications(&config, &events, 7);
        let keys: Vec<&str> = out.iter().map(|n| n.key.as_str()).collect();
        let target_name = &config.sla.targets[target].name;
        assert_eq!(
            keys,
            [
                "everything/SO-1/exception_opened/integration/shipment_confirmation/mapping".to_string(),
                "custom/SO-1/exception_opened/integration/shipment_confirmation/mapping".to_string(),
                format!("everything/SO-1/sla_breached/{target_name}"),
                format!("finance/SO-1/sla_breached/{target_name}"),
                format!("custom/SO-1/sla_breached/{target_name}"),
            ]
        );
        for n in &out {
            let body: serde_json::Value = serde_json::from_str(&n.body).unwrap_or_else(|e| panic!("{}: {e}", n.body));
            assert!(body.is_object(), "{}", n.body);
        }
        let risk = Event::SlaAtRisk {
            order: "SO-1".into(),
            target,
            deadline_unix_nanos: 1_800_000_000_000_000_000,
            owner: "finance-billing".into(),
            probability: Some(0.72),
            settled: false,
            basis: crate::insight::delay::RiskBasis::Dimension {
                dimension: "warehouse".into(),
                value: "WH-SOUTH".into(),
                samples: 212,
            },
            dimensions: BTreeMap::new(),
        };
        let told = notifications(&config, std::slice::from_ref(&risk), 7);
        let summary = &notifications(&config, &[risk], 7)[0].body;
        assert!(summary.contains("breach probability 72 % (212 past orders with warehouse WH-SOUTH)"), "{summary}");
        let told: Vec<(&str, &str)> = told.iter().map(|n| (n.key.as_str(), n.team.as_str())).collect();
        let everything = format!("everything/SO-1/order_at_risk/{target_name}");
        let custom = format!("custom/SO-1/order_at_risk/{target_name}");
        assert_eq!(told, [(everything.as_str(), "finance-billing"), (custom.as_str(), "finance-billing")]);
        let teams: serde_json::Value = serde_json::from_str(&out[3].body).unwrap();
        assert_eq!(teams["@type"], "MessageCard");
        assert!(teams["text"].as_str().unwrap().contains("invoicing not reached by 2027-01-15"), "{teams}");
        let custom: serde_json::Value = serde_json::from_str(&out[1].body).unwrap();
        assert_eq!(custom["o"], "SO-1");
        assert!(custom["s"]
            .as_str()
            .unwrap()
            .starts_with("Order SO-1: integration exception at shipment confirmation"));
    }
}
