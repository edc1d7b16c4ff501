//! The engine's output: spans to export, grouped by the resource and scope they came with, and the events that
//! tell the service what happened to orders.

use super::events::Event;
use super::input::{ResourceContext, ScopeContext};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::collections::HashMap;
use std::sync::Arc;

/// The spans of one scope.
type ScopeGroup = (Arc<ScopeContext>, Vec<Span>);

/// Spans to export, grouped by the resource and scope they came with.
#[derive(Debug, Default)]
pub struct Output {
    /// What happened to orders while producing these spans.
    pub events: Vec<Event>,
    /// Holding the `Arc`s keeps their addresses unique for as long as they serve as grouping keys.
    groups: Vec<(Arc<ResourceContext>, Vec<ScopeGroup>)>,
    index: HashMap<(usize, usize), (usize, usize)>,
    spans: usize,
}

impl Output {
    pub fn push(&mut self, resource: &Arc<ResourceContext>, scope: &Arc<ScopeContext>, span: Span) {
        let key = (Arc::as_ptr(resource) as usize, Arc::as_ptr(scope) as usize);
        let (g, s) = match self.index.get(&key) {
            Some(position) => *position,
            None => {
                let g = match self.groups.iter().position(|(r, _)| Arc::ptr_eq(r, resource)) {
                    Some(g) => g,
                    None => {
                        self.groups.push((resource.clone(), Vec::new()));
                        self.groups.len() - 1
                    }
                };
                self.groups[g].1.push((scope.clone(), Vec::new()));
                let position = (g, self.groups[g].1.len() - 1);
                self.index.insert(key, position);
                position
            }
        };
        self.groups[g].1[s].1.push(span);
        self.spans += 1;
    }

    pub fn span_count(&self) -> usize {
        self.spans
    }

    /// Whether there are no spans to export (events do not count).
    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// The spans as OTLP `ResourceSpans`, and the events.
    pub fn into_parts(mut self) -> (Vec<ResourceSpans>, Vec<Event>) {
        let events = std::mem::take(&mut self.events);
        (self.into_resource_spans(), events)
    }

    /// The spans as OTLP `ResourceSpans`.
    pub fn into_resource_spans(self) -> Vec<ResourceSpans> {
        self.groups
            .into_iter()
            .map(|(resource, scopes)| ResourceSpans {
                resource: resource.resource.clone(),
                schema_url: resource.schema_url.clone(),
                scope_spans: scopes
                    .into_iter()
                    .map(|(scope, spans)| ScopeSpans {
                        scope: scope.scope.clone(),
                        schema_url: scope.schema_url.clone(),
                        spans,
                    })
                    .collect(),
            })
            .collect()
    }
}
