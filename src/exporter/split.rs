//! Cutting export requests to a size the backend accepts.
//!
//! Go gRPC servers (the collector's OTLP receiver, Jaeger, Tempo) refuse a message over 4 MiB, and a batch that
//! is refused for its size fails the same way on every retry: sent whole it would hold an export worker forever.
//! So requests are cut by encoded bytes before sending, and a request the backend still refuses as too large is
//! halved and sent again. The pieces keep their resource and scope, so each one is a complete OTLP request.

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// Bytes a length-delimited field of `len` bytes takes inside its parent: tag, length prefix, content.
fn field_bytes(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// A span too large to be sent in any request of the allowed size.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Oversized {
    pub trace_id: String,
    pub span_id: String,
    pub name: String,
    pub bytes: usize,
}

impl Oversized {
    fn of(span: &Span, bytes: usize) -> Oversized {
        Oversized {
            trace_id: hex::encode(&span.trace_id),
            span_id: hex::encode(&span.span_id),
            name: span.name.chars().take(128).collect(),
            bytes,
        }
    }
}

/// Requests being filled, each with its encoded size so far.
struct Requests {
    max_bytes: usize,
    done: Vec<Vec<ResourceSpans>>,
    current: Vec<ResourceSpans>,
    current_bytes: usize,
}

impl Requests {
    fn finish_current(&mut self) {
        if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
        self.current_bytes = 0;
    }

    /// Adds `span` under `resource` and `scope` (cloned without their spans when a new group must be opened),
    /// starting a new request when it would not fit in the current one.
    fn push(&mut self, resource: &ResourceSpans, scope: &ScopeSpans, span: Span, span_bytes: usize) {
        let shell_resource = ResourceSpans { scope_spans: Vec::new(), ..resource.clone() };
        let shell_scope = ScopeSpans { spans: Vec::new(), ..scope.clone() };
        // What adding the span costs if it has to open a new resource and scope group. Length prefixes of the
        // enclosing groups grow by a byte now and then; the slack covers that.
        let new_groups =
            field_bytes(shell_resource.encoded_len() + field_bytes(shell_scope.encoded_len() + span_bytes))
                + 2 * prost::length_delimiter_len(self.max_bytes);
        let joins_last = self.current.last().is_some_and(|last| {
            last.resource == resource.resource
                && last.schema_url == resource.schema_url
                && last.scope_spans.last().is_some_and(|s| s.scope == scope.scope && s.schema_url == scope.schema_url)
        });
        let cost = if joins_last { span_bytes } else { new_groups };
        if self.current_bytes + cost > self.max_bytes && !self.current.is_empty() {
            self.finish_current();
            return self.push(resource, scope, span, span_bytes);
        }
        self.current_bytes += cost;
        if joins_last {
            if let Some(last_scope) = self.current.last_mut().and_then(|r| r.scope_spans.last_mut()) {
                last_scope.spans.push(span);
            }
        } else {
            self.current.push(ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span], ..shell_scope }],
                ..shell_resource
            });
        }
    }
}

/// Cuts `batch` into requests of at most `max_bytes` encoded bytes, in order. Spans that would not fit even
/// alone are left out and returned, so the caller can count and report them.
pub(crate) fn by_bytes(batch: Vec<ResourceSpans>, max_bytes: usize) -> (Vec<Vec<ResourceSpans>>, Vec<Oversized>) {
    let whole: usize = batch.iter().map(|rs| field_bytes(rs.encoded_len())).sum();
    if whole <= max_bytes {
        return (if batch.is_empty() { Vec::new() } else { vec![batch] }, Vec::new());
    }
    let mut requests = Requests { max_bytes, done: Vec::new(), current: Vec::new(), current_bytes: 0 };
    let mut oversized = Vec::new();
    for mut resource in batch {
        let scopes = std::mem::take(&mut resource.scope_spans);
        for mut scope in scopes {
            let spans = std::mem::take(&mut scope.spans);
            for span in spans {
                let span_bytes = field_bytes(span.encoded_len());
                let alone = field_bytes(resource.encoded_len() + field_bytes(scope.encoded_len() + span_bytes))
                    + 2 * prost::length_delimiter_len(max_bytes);
                if alone > max_bytes {
                    oversized.push(Oversized::of(&span, span_bytes));
                    continue;
                }
                requests.push(&resource, &scope, span, span_bytes);
            }
        }
    }
    requests.finish_current();
    (requests.done, oversized)
}

/// Spans in a request.
pub(crate) fn span_count(batch: &[ResourceSpans]) -> usize {
    batch.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

/// Whether `bytes` is, at its top level, an encoded `ExportTraceServiceRequest`: only length-delimited fields
/// (`resource_spans` is field 1; unknown fields are allowed, as protobuf allows them) that end exactly at its end.
/// It does not look inside: a queue entry damaged within would still pass, but one cut short or overwritten with
/// other data does not, and that is what keeps it out of a request with good entries.
pub(crate) fn is_export_request(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut bytes) else { return false };
        // Wire type 2 is length-delimited; field number 0 does not exist.
        if key & 0x7 != 2 || key >> 3 == 0 {
            return false;
        }
        let Ok(len) = prost::encoding::decode_varint(&mut bytes) else { return false };
        let Ok(len) = usize::try_from(len) else { return false };
        if len > bytes.len() {
            return false;
        }
        bytes = &bytes[len..];
    }
    true
}

/// Splits a request into two with about half the spans each, or gives back the one span it holds.
pub(crate) fn halve(batch: Vec<ResourceSpans>) -> Result<(Vec<ResourceSpans>, Vec<ResourceSpans>), Oversized> {
    let total = span_count(&batch);
    if total <= 1 {
        let span = batch.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).next();
        let bytes: usize = batch.iter().map(|rs| field_bytes(rs.encoded_len())).sum();
        return Err(span.map(|s| Oversized::of(s, bytes)).unwrap_or(Oversized {
            trace_id: String::new(),
            span_id: String::new(),
            name: String::new(),
            bytes,
        }));
    }
    let mut first: Vec<ResourceSpans> = Vec::new();
    let mut second: Vec<ResourceSpans> = Vec::new();
    let mut taken = 0;
    for mut resource in batch {
        let scopes = std::mem::take(&mut resource.scope_spans);
        for mut scope in scopes {
            let spans = std::mem::take(&mut scope.spans);
            let room = (total / 2).saturating_sub(taken);
            let (head, tail): (Vec<Span>, Vec<Span>) = if room >= spans.len() {
                (spans, Vec::new())
            } else {
                let mut head = spans;
                let tail = head.split_off(room);
                (head, tail)
            };
            taken += head.len();
            for (spans, into) in [(head, &mut first), (tail, &mut second)] {
                if spans.is_empty() {
                    continue;
                }
                let scope = ScopeSpans { spans, ..ScopeSpans { spans: Vec::new(), ..scope.clone() } };
                match into.last_mut() {
                    Some(last) if last.resource == resource.resource && last.schema_url == resource.schema_url => {
                        last.scope_spans.push(scope)
                    }
                    _ => into.push(ResourceSpans { scope_spans: vec![scope], ..resource.clone() }),
                }
            }
        }
    }
    Ok((first, second))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_cut_short_or_of_other_data_is_not_an_export_request() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        let request = ExportTraceServiceRequest { resource_spans: vec![super::ResourceSpans::default(); 3] };
        let bytes = prost::Message::encode_to_vec(&request);
        assert!(super::is_export_request(&bytes));
        assert!(super::is_export_request(&[]));
        assert!(!super::is_export_request(&bytes[..bytes.len() - 1]));
        assert!(!super::is_export_request(b"not protobuf at all"));
        let mut long = prost::Message::encode_to_vec(&ExportTraceServiceRequest {
            resource_spans: vec![super::ResourceSpans { schema_url: "x".repeat(300), ..Default::default() }],
        });
        long.truncate(long.len() - 10);
        assert!(!super::is_export_request(&long));
    }

    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn span(n: u32, payload: usize) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: n.to_be_bytes().repeat(2),
            name: format!("span {n}"),
            attributes: vec![KeyValue {
                key: "payload".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(payload))) }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn resource(service: &str, scopes: Vec<(&str, Vec<Span>)>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue(service.into())) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: scopes
                .into_iter()
                .map(|(name, spans)| ScopeSpans {
                    scope: Some(InstrumentationScope { name: name.into(), ..Default::default() }),
                    spans,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn encoded(batch: &[ResourceSpans]) -> usize {
        ExportTraceServiceRequest { resource_spans: batch.to_vec() }.encoded_len()
    }

    /// Every span with the service and scope it was under, in order.
    fn flatten(batches: &[Vec<ResourceSpans>]) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for batch in batches {
            for rs in batch {
                let service = format!("{:?}", rs.resource);
                for ss in &rs.scope_spans {
                    let scope = ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                    for span in &ss.spans {
                        out.push((service.clone(), scope.clone(), span.name.clone()));
                    }
                }
            }
        }
        out
    }

    fn landscape() -> Vec<ResourceSpans> {
        let mut n = 0;
        let mut spans = |count: usize, payload: usize| {
            (0..count)
                .map(|_| {
                    n += 1;
                    span(n, payload)
                })
                .collect::<Vec<_>>()
        };
        vec![
            resource("erp", vec![("sap", spans(300, 900)), ("idoc", spans(40, 20_000))]),
            resource("wms", vec![("pick", spans(1, 10))]),
            resource("tms", vec![("carrier", spans(700, 2_000))]),
        ]
    }

    #[test]
    fn requests_are_cut_under_the_limit_keeping_every_span_in_order_under_its_resource_and_scope() {
        let batch = landscape();
        let before = flatten(std::slice::from_ref(&batch));
        for max in [64 * 1024, 100_000, 1024 * 1024] {
            let (pieces, oversized) = by_bytes(batch.clone(), max);
            assert!(oversized.is_empty());
            assert!(pieces.len() > 1, "{max}: the landscape is larger than the limit");
            for piece in &pieces {
                assert!(encoded(piece) <= max, "{max}: a piece of {} bytes", encoded(piece));
            }
            assert_eq!(flatten(&pieces), before, "{max}");
        }
    }

    #[test]
    fn a_batch_under_the_limit_is_left_whole_and_a_span_too_large_alone_is_reported() {
        let small = vec![resource("erp", vec![("sap", vec![span(1, 10), span(2, 10)])])];
        assert_eq!(by_bytes(small.clone(), 64 * 1024), (vec![small], Vec::new()));
        let batch = vec![resource("erp", vec![("sap", vec![span(1, 10), span(2, 200_000), span(3, 10)])])];
        let (pieces, oversized) = by_bytes(batch, 100_000);
        assert_eq!(oversized.len(), 1);
        assert_eq!(oversized[0].name, "span 2");
        assert_eq!(oversized[0].span_id, hex::encode(2u32.to_be_bytes().repeat(2)));
        assert!(oversized[0].bytes > 200_000);
        let names: Vec<String> = flatten(&pieces).into_iter().map(|(_, _, name)| name).collect();
        assert_eq!(names, ["span 1", "span 3"]);
    }

    #[test]
    fn halving_keeps_every_span_and_stops_at_one() {
        let batch = landscape();
        let before = flatten(std::slice::from_ref(&batch));
        let (first, second) = halve(batch).expect("many spans");
        let total = before.len();
        assert_eq!(span_count(&first), total / 2);
        assert_eq!(flatten(&[first, second]), before);
        let one = vec![resource("wms", vec![("pick", vec![span(9, 10)])])];
        let single = halve(one).expect_err("one span cannot be halved");
        assert_eq!(single.name, "span 9");
    }
}
