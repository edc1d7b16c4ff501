//! Conformance: milestones checked against the taxonomy's order. A milestone reached before a required earlier
//! one, or anything reached after a terminal milestone, is a finding owned by the team that acted out of order. A
//! finding that turns out to be only delivery order (the missing milestone arrives past the detection delay, with an
//! earlier time) is withdrawn: taken off the record and, since its span went out, followed by a withdrawal span.

use super::emit::{self, keys};
use super::events::Event;
use super::findings::finding_labels;
use super::output::Output;
use super::Engine;
use crate::config::MilestoneId;
use crate::ids;
use crate::order::{ExceptionState, OrderRecord};

impl Engine {
    /// Required main-path milestones before `m` that were not reached at or before `m` was.
    fn missing_predecessors(&self, order: &OrderRecord, m: MilestoneId) -> Vec<MilestoneId> {
        let milestones = &self.config.taxonomy.milestones;
        if milestones[m].off_path {
            return Vec::new();
        }
        let Some(at) = order.reached_at(&milestones[m].name) else { return Vec::new() };
        (0..m)
            .filter(|p| !milestones[*p].off_path && !milestones[*p].skippable)
            .filter(|p| order.reached_at(&milestones[*p].name).is_none_or(|t| t > at))
            .collect()
    }

    pub(crate) fn check_conformance(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let milestones = &config.taxonomy.milestones;
        let Some(order) = self.orders.get(key) else { return };
        let Some(at) = order.reached_at(&milestones[m].name) else { return };
        let mut findings: Vec<(MilestoneId, String, String)> = Vec::new();
        let missing = self.missing_predecessors(order, m);
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|p| milestones[*p].name.as_str()).collect();
            findings.push((
                m,
                format!("conformance:{}", milestones[m].name),
                format!("{} reached before {}", milestones[m].name, names.join(", ")),
            ));
        }
        // Nothing may follow a terminal milestone such as a cancellation.
        for (t, terminal) in milestones.iter().enumerate().filter(|(_, x)| x.terminal) {
            let Some(t_at) = order.reached_at(&terminal.name) else { continue };
            if t == m {
                for (x, other) in milestones.iter().enumerate() {
                    if x != m && order.reached_at(&other.name).is_some_and(|x_at| x_at > t_at) {
                        findings.push((
                            x,
                            format!("conformance:{}:after:{}", other.name, terminal.name),
                            format!("{} reached after {}", other.name, terminal.name),
                        ));
                    }
                }
            } else if t_at < at {
                findings.push((
                    m,
                    format!("conformance:{}:after:{}", milestones[m].name, terminal.name),
                    format!("{} reached after {}", milestones[m].name, terminal.name),
                ));
            }
        }
        self.withdraw_disproved_conformance(key, m, now, out);
        for (x, signature, reason) in findings {
            self.conformance_finding(key, x, signature, reason, out);
        }
    }

    /// A milestone that completes the predecessors of a later one, with an earlier time, shows that the later one
    /// merely arrived first: the later one's finding was never true, and is withdrawn. (A predecessor reached after
    /// the later milestone leaves the finding standing, so nothing else takes one back.)
    pub(crate) fn withdraw_disproved_conformance(&mut self, key: &str, m: MilestoneId, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let milestones = &config.taxonomy.milestones;
        let Some(order) = self.orders.get(key) else { return };
        if order.reached_at(&milestones[m].name).is_none() {
            return;
        }
        let disproved: Vec<MilestoneId> = (m + 1..milestones.len())
            .filter(|later| {
                let signature = format!("conformance:{}", milestones[*later].name);
                order.exceptions.iter().any(|e| e.signature == signature)
                    && self.missing_predecessors(order, *later).is_empty()
            })
            .collect();
        for later in disproved {
            self.withdraw_conformance(key, later, now, out);
        }
    }

    fn withdraw_conformance(&mut self, key: &str, x: MilestoneId, now: u64, out: &mut Output) {
        let config = self.config.clone();
        let milestone = &config.taxonomy.milestones[x];
        let signature = format!("conformance:{}", milestone.name);
        let Some(order) = self.orders.get_mut(key) else { return };
        let Some(index) = order.exceptions.iter().position(|e| e.signature == signature) else { return };
        let finding = order.exceptions.remove(index);
        self.stats.conformance_findings_withdrawn += 1;
        self.persistence.order_changed(key);
        let reason = format!(
            "{} withdrawn: the milestones it missed arrived later, reached before {}",
            finding.reason, milestone.name
        );
        let mut span = emit::finding_span(
            key,
            &format!("{signature}:withdrawn"),
            format!("{} withdrawn", finding.reason),
            finding.first_seen_unix_nanos.min(now),
            now,
        );
        span.parent_span_id = ids::milestone_span_id(key, &milestone.name).to_vec();
        span.attributes.extend([
            emit::attr_string("order.milestone", &milestone.name),
            emit::attr_string("order.finding.withdrawn", &reason),
        ]);
        span.status = Some(emit::ok_status());
        out.push(&self.own.resource, &self.own.scope, span);
        self.stats.finding_spans_emitted += 1;
        out.events.push(Event::FindingWithdrawn { order: key.to_string(), signature, reason });
    }

    fn conformance_finding(&mut self, key: &str, x: MilestoneId, signature: String, reason: String, out: &mut Output) {
        let config = self.config.clone();
        let milestone = &config.taxonomy.milestones[x];
        let class = config.taxonomy.classes[config.conformance.class].name.clone();
        let Some(order) = self.orders.get_mut(key) else { return };
        if order.exceptions.iter().any(|e| e.signature == signature) {
            return;
        }
        let Some(reach) = order.milestone(&milestone.name).and_then(|s| s.reached.clone()) else { return };
        order.exceptions.push(ExceptionState {
            class: class.clone(),
            // The team that acted without its prerequisite owns putting the order right.
            owner: milestone.owner.clone(),
            milestone: Some(milestone.name.clone()),
            signature: signature.clone(),
            reason: reason.clone(),
            first_seen_unix_nanos: reach.at_unix_nanos,
            last_seen_unix_nanos: reach.at_unix_nanos,
            count: 1,
            trace_id: reach.trace_id.clone(),
            span_id: reach.span_id.clone(),
            service: reach.service.clone(),
            actor: reach.actor.clone(),
            resolved_at_unix_nanos: None,
        });
        self.stats.exceptions_recorded += 1;
        self.stats.conformance_findings += 1;
        self.persistence.order_changed(key);
        let mut span = emit::finding_span(key, &signature, reason.clone(), reach.at_unix_nanos, reach.at_unix_nanos);
        span.parent_span_id = ids::milestone_span_id(key, &milestone.name).to_vec();
        span.attributes.extend(finding_labels(&milestone.name, &milestone.owner, &class, &reason));
        if let Some(actor) = &reach.actor {
            span.attributes.push(emit::attr_string(keys::ACTOR, actor));
        }
        if let (Ok(t), Ok(s)) = (hex::decode(&reach.trace_id), hex::decode(&reach.span_id)) {
            span.links.push(emit::link(&t, &s, "reached_by"));
        }
        span.status = Some(emit::error_status(format!("{reason}; owner {}", milestone.owner)));
        self.emit_finding(key, span, &milestone.name, &milestone.owner, class, signature, reason, out);
    }
}
