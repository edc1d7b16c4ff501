//! What the engine takes in: OTLP `ResourceSpans` split into single spans that share their resource and scope.

use super::attributes;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use std::sync::Arc;

/// The resource a span came with, shared by all spans of one `ResourceSpans`.
#[derive(Debug)]
pub struct ResourceContext {
    pub resource: Option<Resource>,
    pub schema_url: String,
    /// `service.name`, or `unknown_service` as the SDKs say when it is missing.
    pub service_name: String,
}

impl ResourceContext {
    pub fn new(resource: Option<Resource>, schema_url: String) -> ResourceContext {
        let service_name = resource
            .as_ref()
            .and_then(|r| attributes::find(&r.attributes, "service.name"))
            .and_then(attributes::scalar_string)
            .map(|s| s.into_owned())
            .unwrap_or_else(|| "unknown_service".to_string());
        ResourceContext { resource, schema_url, service_name }
    }
}

/// The instrumentation scope a span came with.
#[derive(Debug)]
pub struct ScopeContext {
    pub scope: Option<InstrumentationScope>,
    pub schema_url: String,
}

/// One incoming span with its resource and scope.
#[derive(Debug)]
pub struct SpanInput {
    pub resource: Arc<ResourceContext>,
    pub scope: Arc<ScopeContext>,
    pub span: Span,
}

/// Splits OTLP `ResourceSpans` into individual spans, sharing their resource and scope.
pub fn flatten(batch: Vec<ResourceSpans>) -> impl Iterator<Item = SpanInput> {
    batch.into_iter().flat_map(|rs| {
        let resource = Arc::new(ResourceContext::new(rs.resource, rs.schema_url));
        rs.scope_spans.into_iter().flat_map(move |ss| {
            let resource = resource.clone();
            let scope = Arc::new(ScopeContext { scope: ss.scope, schema_url: ss.schema_url });
            ss.spans.into_iter().map(move |span| SpanInput { resource: resource.clone(), scope: scope.clone(), span })
        })
    })
}

/// The resource and scope of the spans ordertrail creates itself (roots, milestones, findings).
#[derive(Debug)]
pub(crate) struct OwnSource {
    pub(crate) resource: Arc<ResourceContext>,
    pub(crate) scope: Arc<ScopeContext>,
}

impl OwnSource {
    pub(crate) fn new(service_name: &str) -> OwnSource {
        let resource = Arc::new(ResourceContext::new(
            Some(Resource {
                attributes: vec![
                    attributes::string("service.name", service_name),
                    attributes::string("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            String::new(),
        ));
        let scope = Arc::new(ScopeContext {
            scope: Some(InstrumentationScope {
                name: "ordertrail".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            schema_url: String::new(),
        });
        OwnSource { resource, scope }
    }
}
