//! Findings: SLA breaches and conformance exceptions that ordertrail itself records on an order, each reported as
//! a span in the order trace and as an exception event.

use super::emit::{self, keys};
use super::events::Event;
use super::output::Output;
use super::Engine;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

/// The labels of a finding span: the milestone it concerns and the exception, owned by the milestone's owner.
pub(crate) fn finding_labels(milestone: &str, owner: &str, class: &str, reason: &str) -> [KeyValue; 5] {
    [
        emit::attr_string(keys::MILESTONE, milestone),
        emit::attr_string(keys::MILESTONE_OWNER, owner),
        emit::attr_string(keys::EXCEPTION_CLASS, class),
        emit::attr_string(keys::EXCEPTION_OWNER, owner),
        emit::attr_string(keys::EXCEPTION_REASON, reason),
    ]
}

impl Engine {
    /// Emits the span of a finding and reports it as an exception event.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn emit_finding(
        &mut self,
        key: &str,
        span: Span,
        milestone: &str,
        owner: &str,
        class: String,
        signature: String,
        reason: String,
        out: &mut Output,
    ) {
        let at_unix_nanos = span.end_time_unix_nano;
        out.push(&self.own.resource, &self.own.scope, span);
        self.stats.finding_spans_emitted += 1;
        let dimensions = self.orders.get(key).map(|o| o.dimensions.clone()).unwrap_or_default();
        self.insight.observations.push(super::insight::Observation {
            class: class.clone(),
            milestone: Some(milestone.to_string()),
            system: self.config.order_traces.service_name.clone(),
            reason: reason.clone(),
            order: key.to_string(),
            at_unix_nanos,
        });
        out.events.push(Event::ExceptionRecorded {
            order: key.to_string(),
            class,
            owner: owner.to_string(),
            milestone: Some(milestone.to_string()),
            signature,
            reason,
            system: self.config.order_traces.service_name.clone(),
            at_unix_nanos,
            dimensions,
            // A finding's span is emitted once per order and finding.
            opened: true,
        });
    }
}
