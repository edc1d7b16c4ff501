//! Encoding the spans of one pipeline group into export requests (queue entries), once: the exporter sends these
//! bytes as they are.
//!
//! prost's `encode` of a whole request measures every nested message again at each level it is nested in (a
//! request, its resource groups, their scope groups, the spans, their attributes and values), so an attribute
//! value deep in a span is measured five times before it is written. Here each span is encoded on its own (prost
//! still measures a span's nested messages twice, once for the span's length and once as it writes them) into a
//! scratch buffer, and the groups around it are written by hand from their known lengths. The result is
//! byte for byte what prost writes (fields in field-number order), which a test holds it to.

use crate::store::QueuedExport;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

/// Field numbers of `ExportTraceServiceRequest.resource_spans`, `ResourceSpans.{resource, scope_spans,
/// schema_url}` and `ScopeSpans.{scope, spans, schema_url}`.
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE: u32 = 1;
const SCOPE_SPANS: u32 = 2;
const SCHEMA_URL: u32 = 3;
const SCOPE: u32 = 1;
const SPANS: u32 = 2;

/// Bytes of a length-delimited field with `len` bytes of content and a small field number.
fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A length-delimited field of `tag` holding an already encoded message, or nothing for an absent one.
fn encoded_field(tag: u32, message: Option<&impl Message>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(message) = message {
        encode_key(tag, WireType::LengthDelimited, &mut out);
        // A Vec grows as needed, so the only error (too little room) cannot happen.
        let _ = message.encode_length_delimited(&mut out);
    }
    out
}

/// A string field, omitted when empty as proto3 omits defaults.
fn string_field(tag: u32, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if !value.is_empty() {
        prost::encoding::string::encode(tag, &value.to_string(), &mut out);
    }
    out
}

/// The entries being written.
struct Writer {
    max_spans: usize,
    entries: Vec<QueuedExport>,
    current: Vec<u8>,
    spans: usize,
}

impl Writer {
    fn finish(&mut self) {
        if self.spans > 0 {
            let spans = u32::try_from(self.spans).unwrap_or(u32::MAX);
            self.entries.push(QueuedExport { spans, request: std::mem::take(&mut self.current) });
            self.spans = 0;
        }
    }

    /// Writes one resource group holding one scope group whose spans are `encoded_spans` (each already a
    /// `spans` field), between the pre-encoded fields of the resource and the scope.
    fn write_group(
        &mut self,
        resource: &[u8],
        resource_schema: &[u8],
        scope: &[u8],
        scope_schema: &[u8],
        encoded_spans: &[u8],
    ) {
        let scope_len = scope.len() + encoded_spans.len() + scope_schema.len();
        let resource_len = resource.len() + delimited_len(scope_len) + resource_schema.len();
        let out = &mut self.current;
        out.reserve(delimited_len(resource_len));
        encode_key(REQUEST_RESOURCE_SPANS, WireType::LengthDelimited, out);
        encode_varint(resource_len as u64, out);
        out.extend_from_slice(resource);
        encode_key(SCOPE_SPANS, WireType::LengthDelimited, out);
        encode_varint(scope_len as u64, out);
        out.extend_from_slice(scope);
        out.extend_from_slice(encoded_spans);
        out.extend_from_slice(scope_schema);
        out.extend_from_slice(resource_schema);
    }
}

/// Encodes `batch` into export requests of at most `max_spans` spans each (at least one), keeping every span
/// under its resource and scope.
pub fn queue_entries(batch: Vec<ResourceSpans>, max_spans: usize) -> Vec<QueuedExport> {
    let max_spans = max_spans.max(1);
    let mut writer = Writer { max_spans, entries: Vec::new(), current: Vec::new(), spans: 0 };
    let mut encoded_spans = Vec::new();
    for group in batch {
        let resource = encoded_field(RESOURCE, group.resource.as_ref());
        let resource_schema = string_field(SCHEMA_URL, &group.schema_url);
        for scope_group in group.scope_spans {
            let scope = encoded_field(SCOPE, scope_group.scope.as_ref());
            let scope_schema = string_field(SCHEMA_URL, &scope_group.schema_url);
            let mut spans: &[Span] = &scope_group.spans;
            while !spans.is_empty() {
                let room = writer.max_spans - writer.spans;
                let (now, rest) = spans.split_at(room.min(spans.len()));
                encoded_spans.clear();
                for span in now {
                    encode_key(SPANS, WireType::LengthDelimited, &mut encoded_spans);
                    let _ = span.encode_length_delimited(&mut encoded_spans);
                }
                writer.write_group(&resource, &resource_schema, &scope, &scope_schema, &encoded_spans);
                writer.spans += now.len();
                if writer.spans >= writer.max_spans {
                    writer.finish();
                }
                spans = rest;
            }
        }
    }
    writer.finish();
    writer.entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

    fn span(n: u8) -> Span {
        Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            name: format!("span {n}"),
            attributes: vec![KeyValue {
                key: "order.id".into(),
                value: Some(AnyValue { value: Some(Value::StringValue("x".repeat(usize::from(n) * 40))) }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn group(scopes: &[usize], with_resource: bool) -> ResourceSpans {
        ResourceSpans {
            resource: with_resource.then(|| Resource {
                attributes: vec![KeyValue { key: "service.name".into(), ..Default::default() }],
                ..Default::default()
            }),
            schema_url: if with_resource { "https://opentelemetry.io/schemas/1.27.0".into() } else { String::new() },
            scope_spans: scopes
                .iter()
                .enumerate()
                .map(|(i, n)| ScopeSpans {
                    scope: (i % 2 == 0).then(|| InstrumentationScope { name: "erp".into(), ..Default::default() }),
                    spans: (0..*n).map(|k| span(u8::try_from(k + 1).unwrap())).collect(),
                    schema_url: if i == 1 { "scope-schema".into() } else { String::new() },
                })
                .collect(),
        }
    }

    #[test]
    fn entries_are_what_prost_writes_for_the_same_pieces() {
        let batch = vec![group(&[3, 4], true), group(&[5], false), group(&[0, 2], true)];
        for max in [1, 2, 5, 7, 100] {
            let entries = queue_entries(batch.clone(), max);
            let mut spans = 0;
            for entry in &entries {
                let decoded = ExportTraceServiceRequest::decode(entry.request.as_slice()).unwrap();
                // Encoding what was decoded gives the same bytes: the layout is prost's own.
                assert_eq!(decoded.encode_to_vec(), entry.request, "max {max}");
                let count: usize =
                    decoded.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
                assert_eq!(count, entry.spans as usize);
                assert!(count <= max);
                spans += count;
            }
            assert_eq!(spans, 14, "max {max}");
        }
        // Joined, the entries are the batch, each span under its own resource and scope.
        let joined: Vec<u8> = queue_entries(batch.clone(), 5).into_iter().flat_map(|e| e.request).collect();
        let decoded = ExportTraceServiceRequest::decode(joined.as_slice()).unwrap();
        let flat = |groups: &[ResourceSpans]| -> Vec<(Option<Resource>, Option<InstrumentationScope>, String, Span)> {
            groups
                .iter()
                .flat_map(|r| {
                    r.scope_spans.iter().flat_map(move |s| {
                        s.spans
                            .iter()
                            .map(move |sp| (r.resource.clone(), s.scope.clone(), s.schema_url.clone(), sp.clone()))
                    })
                })
                .collect()
        };
        assert_eq!(flat(&decoded.resource_spans), flat(&batch));
    }

    #[test]
    fn sizes_are_bounded_by_the_span_limit_and_nothing_is_lost() {
        let entries = queue_entries(vec![group(&[3, 4], false), group(&[5], false)], 5);
        let sizes: Vec<u32> = entries.iter().map(|e| e.spans).collect();
        assert_eq!(sizes, [5, 5, 2]);
        assert!(queue_entries(Vec::new(), 5).is_empty());
    }
}
