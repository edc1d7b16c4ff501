//! OTLP receivers: gRPC `TraceService/Export` and HTTP `POST /v1/traces`.
//!
//! Both do the same three things: decode (a malformed body is the sender's error, INVALID_ARGUMENT / 400), drop
//! spans with invalid ids and report them in `partial_success`, and hand the rest to the pipeline, answering
//! UNAVAILABLE / 503 when it is full so that the sender retries.

pub mod admission;
pub mod grpc;
pub mod http;
pub mod wire;

/// Deepest nesting of attribute values (arrays and maps inside values) a request may have. The Go collector
/// accepts 10,000 protobuf levels; decoding here recurses once per level on a thread's stack, and 128 levels
/// (a few hundred kilobytes of stack in a debug build) is far beyond what instrumentation produces.
pub const MAX_VALUE_DEPTH: usize = 128;

use crate::pipeline::IngestError;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

fn span_problem(span: &Span) -> Option<&'static str> {
    if !valid_id(&span.trace_id, 16) {
        Some("trace_id must be 16 bytes and not all zero")
    } else if !valid_id(&span.span_id, 8) {
        Some("span_id must be 8 bytes and not all zero")
    } else if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        Some("parent_span_id must be empty or 8 bytes")
    } else {
        None
    }
}

/// What sanitising a request found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sanitised {
    pub accepted: u64,
    pub rejected: u64,
    pub message: String,
}

/// Removes spans with invalid ids (OTLP: such spans are rejected, the rest of the request is processed), and
/// empty resource/scope groups.
pub fn sanitise(batch: &mut Vec<ResourceSpans>) -> Sanitised {
    let mut result = Sanitised::default();
    let mut first_problem = None;
    for rs in batch.iter_mut() {
        for ss in rs.scope_spans.iter_mut() {
            ss.spans.retain(|span| match span_problem(span) {
                None => {
                    result.accepted += 1;
                    true
                }
                Some(problem) => {
                    result.rejected += 1;
                    first_problem.get_or_insert(problem);
                    false
                }
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    batch.retain(|rs| !rs.scope_spans.is_empty());
    if let Some(problem) = first_problem {
        result.message = format!("{} span(s) rejected: {problem}", result.rejected);
    }
    result
}

/// The OTLP response for a sanitised request.
pub fn response(sanitised: &Sanitised) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (sanitised.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(sanitised.rejected).unwrap_or(i64::MAX),
            error_message: sanitised.message.clone(),
        }),
    }
}

/// How an ingest failure is answered over gRPC.
pub fn ingest_status(error: &IngestError) -> tonic::Status {
    // All pipeline failures are transient from the sender's point of view, so they map to the retryable code.
    tonic::Status::unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

    #[test]
    fn invalid_ids_are_rejected_and_counted_and_the_rest_kept() {
        let good = Span { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() };
        let zero_trace = Span { trace_id: vec![0; 16], span_id: vec![2; 8], ..Default::default() };
        let short_span = Span { trace_id: vec![1; 16], span_id: vec![2; 4], ..Default::default() };
        let mut batch = vec![
            ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![good, zero_trace], ..Default::default() }],
                ..Default::default()
            },
            ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![short_span], ..Default::default() }],
                ..Default::default()
            },
        ];
        let result = sanitise(&mut batch);
        assert_eq!((result.accepted, result.rejected), (1, 2));
        assert!(result.message.contains("trace_id"));
        assert_eq!(batch.len(), 1);
        assert_eq!(response(&result).partial_success.unwrap().rejected_spans, 2);
    }
}
