//! What an OTLP trace request will cost in memory once decoded, and how deeply its attribute values nest, read
//! from its protobuf encoding without decoding it.
//!
//! Decoding allocates far more than the bytes received: a span is a struct of about 300 bytes whatever its
//! encoding, so a request of empty spans or empty attributes decodes to a hundred times its size (measured by
//! the tests below with the binary's allocator). Admission must charge that before decoding, and a count of the
//! messages the schema says each field holds gives it. The walk uses an explicit stack, so a hostile nesting
//! depth is found without recursion.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use std::mem::size_of;

/// The OTLP trace messages, for the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Kind {
    /// Bytes a decoded message of this kind takes besides the strings and lists it owns. Twice the struct size,
    /// because a repeated field's vector may hold up to twice the capacity it uses.
    fn cost(self) -> u64 {
        let size = match self {
            Kind::Request => 24,
            Kind::ResourceSpans => size_of::<ResourceSpans>(),
            Kind::Resource => size_of::<Resource>(),
            Kind::EntityRef => size_of::<EntityRef>(),
            Kind::ScopeSpans => size_of::<ScopeSpans>(),
            Kind::Scope => size_of::<InstrumentationScope>(),
            Kind::Span => size_of::<Span>(),
            Kind::Event => size_of::<span::Event>(),
            Kind::Link => size_of::<span::Link>(),
            Kind::Status => size_of::<Status>(),
            Kind::KeyValue => size_of::<KeyValue>(),
            Kind::AnyValue => size_of::<AnyValue>(),
            Kind::ArrayValue => size_of::<ArrayValue>(),
            Kind::KeyValueList => size_of::<KeyValueList>(),
        };
        2 * size as u64
    }

    /// The message kind of field `number`, if it holds a message.
    fn field(self, number: u64) -> Option<Kind> {
        use Kind::*;
        Some(match (self, number) {
            (Request, 1) => ResourceSpans,
            (ResourceSpans, 1) => Resource,
            (ResourceSpans, 2) => ScopeSpans,
            (Resource, 3) => EntityRef,
            (Resource, 1) | (Scope, 3) | (Span, 9) | (Event, 3) | (Link, 4) | (KeyValueList, 1) => KeyValue,
            (ScopeSpans, 1) => Scope,
            (ScopeSpans, 2) => Span,
            (Span, 11) => Event,
            (Span, 13) => Link,
            (Span, 15) => Status,
            (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KeyValueList,
            _ => return None,
        })
    }
}

/// What a string takes in a repeated field's vector, counting the vector's spare capacity.
const STRING_COST: u64 = 2 * size_of::<String>() as u64;

/// What the walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// An upper estimate of the heap the decoded request takes.
    pub decoded_bytes: u64,
    /// The deepest nesting of attribute values (an array or map inside a value is one level).
    pub value_depth: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("invalid protobuf message: {0}")]
    Malformed(&'static str),
    #[error("attribute values nested more than {0} levels deep")]
    TooDeep(usize),
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or(WireError::Malformed("truncated varint"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Malformed("varint longer than 10 bytes"))
}

/// Walks an encoded `ExportTraceServiceRequest`. Refuses a value nesting deeper than `max_value_depth`.
pub fn measure(bytes: &[u8], max_value_depth: usize) -> Result<Shape, WireError> {
    let mut shape = Shape { decoded_bytes: Kind::Request.cost(), value_depth: 0 };
    // Open messages: kind, where it ends, and the value depth inside it.
    let mut stack: Vec<(Kind, usize, usize)> = vec![(Kind::Request, bytes.len(), 0)];
    let mut at = 0;
    while let Some(&(kind, end, depth)) = stack.last() {
        if at == end {
            stack.pop();
            continue;
        }
        if at > end {
            return Err(WireError::Malformed("a field runs past its message"));
        }
        let key = varint(bytes, &mut at)?;
        let (number, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                varint(bytes, &mut at)?;
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?).map_err(|_| WireError::Malformed("length"))?;
                let field_end = at
                    .checked_add(len)
                    .filter(|e| *e <= end)
                    .ok_or(WireError::Malformed("a length-delimited field runs past its message"))?;
                match kind.field(number) {
                    Some(inner) => {
                        let depth = depth + usize::from(matches!(inner, Kind::ArrayValue | Kind::KeyValueList));
                        if depth > max_value_depth {
                            return Err(WireError::TooDeep(max_value_depth));
                        }
                        shape.value_depth = shape.value_depth.max(depth);
                        shape.decoded_bytes += inner.cost();
                        stack.push((inner, field_end, depth));
                    }
                    // A string or bytes field, or one this schema does not know: its length again, rounded up to
                    // the allocator's size class, and room for a `String` in a repeated field's vector even when
                    // empty (`EntityRef.id_keys` of empty strings are two bytes each on the wire).
                    None => {
                        shape.decoded_bytes += STRING_COST + if len == 0 { 0 } else { len as u64 + 16 };
                        at = field_end;
                    }
                }
            }
            _ => return Err(WireError::Malformed("unsupported wire type")),
        }
    }
    if at != bytes.len() {
        return Err(WireError::Malformed("a field runs past the message"));
    }
    Ok(shape)
}

/// An upper estimate of the heap an OTLP/JSON request takes once decoded: every message is a JSON object, so
/// there are no more messages than opening braces; every string is a `String`, no longer decoded than in the
/// JSON text; every other value is at most a `serde_json::Value` in a tree when the decoder falls back to one.
pub fn json_decoded_bytes(body: &[u8]) -> u64 {
    let count = |byte: u8| body.iter().filter(|b| **b == byte).count() as u64;
    let (objects, quotes, separators) = (count(b'{'), count(b'"'), count(b',') + count(b':') + count(b'['));
    body.len() as u64 + objects * Kind::Span.cost() + (quotes / 2 + separators) * JSON_VALUE_COST
}

/// What one JSON value or string may take decoded: a `serde_json::Value` or a `String`, with a map entry's or a
/// vector's overhead.
const JSON_VALUE_COST: u64 = 4 * size_of::<serde_json::Value>() as u64;

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    fn nested(depth: usize) -> AnyValue {
        let mut value = AnyValue { value: Some(Value::StringValue("leaf".into())) };
        for _ in 0..depth {
            value = AnyValue { value: Some(Value::ArrayValue(ArrayValue { values: vec![value] })) };
        }
        value
    }

    pub(crate) fn request(spans: usize, attributes: Vec<KeyValue>) -> ExportTraceServiceRequest {
        let spans = (0..spans)
            .map(|i| Span {
                trace_id: vec![1; 16],
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: "pick.confirm".into(),
                attributes: attributes.clone(),
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![string("service.name", "wms")], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_depth_of_nested_values_is_found_and_bounded_without_recursion() {
        let deep = request(1, vec![KeyValue { key: "deep".into(), value: Some(nested(48)), ..Default::default() }]);
        let bytes = deep.encode_to_vec();
        assert_eq!(measure(&bytes, 100).unwrap().value_depth, 48);
        assert_eq!(measure(&bytes, 47), Err(WireError::TooDeep(47)));
        // Deeper than a recursive decoder's stack would take, built by hand from the inside out.
        let wrap = |field: u8, inner: Vec<u8>| {
            let mut out = vec![(field << 3) | 2];
            prost::encoding::encode_varint(inner.len() as u64, &mut out);
            out.extend(inner);
            out
        };
        let mut value = wrap(1, b"leaf".to_vec());
        for _ in 0..5_000 {
            value = wrap(5, wrap(1, value));
        }
        let hostile = wrap(1, wrap(2, wrap(2, wrap(9, wrap(2, value)))));
        assert_eq!(measure(&hostile, 10_000).unwrap().value_depth, 5_000);
        assert_eq!(measure(&hostile, 1_000), Err(WireError::TooDeep(1_000)));
    }

    /// Bytes this thread has allocated and not freed so far, from jemalloc (this test binary's allocator), which
    /// counts per thread: tests running at the same time do not disturb it.
    fn heap_in_use() -> u64 {
        let allocated = tikv_jemalloc_ctl::thread::allocatedp::read().unwrap().get();
        let freed = tikv_jemalloc_ctl::thread::deallocatedp::read().unwrap().get();
        allocated - freed
    }

    #[test]
    fn the_estimate_covers_what_decoding_allocates_and_stays_close_for_real_spans() {
        let demo: Vec<KeyValue> = [
            "http.request.method",
            "http.response.status_code",
            "url.path",
            "server.address",
            "network.peer.address",
            "user_agent.original",
            "rpc.system",
            "rpc.service",
            "app.product.id",
            "app.cart.items.count",
            "session.id",
            "order.id",
        ]
        .iter()
        .map(|key| string(key, "a value of about twenty-five"))
        .collect();
        let cases = [
            ("demo-like spans", request(2000, demo)),
            ("spans of empty attributes", request(2000, vec![KeyValue::default(); 50])),
            ("bare spans", request(20_000, Vec::new())),
        ];
        for (what, request) in cases {
            let bytes = request.encode_to_vec();
            drop(request);
            let estimate = measure(&bytes, 100).unwrap().decoded_bytes;
            let before = heap_in_use();
            let request = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            let decoded = heap_in_use() - before;
            drop(request);
            let ratio = estimate as f64 / decoded as f64;
            assert!(estimate >= decoded, "{what}: estimated {estimate}, decoding took {decoded}");
            assert!(ratio < 3.0, "{what}: estimated {estimate}, {ratio:.1} times the {decoded} decoding took");
        }
    }

    #[test]
    fn malformed_input_is_refused_not_walked_past_its_end() {
        let bytes = request(3, vec![string("order.id", "SO-1")]).encode_to_vec();
        for cut in [1, 7, bytes.len() / 2, bytes.len() - 1] {
            assert!(measure(&bytes[..cut], 100).is_err(), "cut at {cut}");
        }
        assert!(measure(&[0xff; 12], 100).is_err());
        assert_eq!(measure(&[], 100).unwrap().value_depth, 0);
    }

    #[test]
    fn entity_refs_and_empty_strings_are_charged_what_they_decode_to() {
        let mut request = request(1, Vec::new());
        let entity = EntityRef { id_keys: vec![String::new(); 50_000], ..Default::default() };
        request.resource_spans[0].resource.as_mut().unwrap().entity_refs = vec![entity; 4];
        let bytes = request.encode_to_vec();
        let estimate = measure(&bytes, 100).unwrap().decoded_bytes;
        let before = heap_in_use();
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let used = heap_in_use() - before;
        drop(decoded);
        assert!(estimate >= used, "estimated {estimate}, decoding took {used}");
    }

    #[test]
    fn json_estimate_counts_one_message_per_object() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{}]}]}]}"#;
        assert!(json_decoded_bytes(body) >= 6 * size_of::<Span>() as u64);
        // Values the typed decoder never keeps still cost a `Value` each in the fallback tree.
        let zeros = format!("{{\"x\":[{}0],\"resourceSpans\":1}}", "0,".repeat(10_000));
        assert!(json_decoded_bytes(zeros.as_bytes()) >= 10_000 * size_of::<serde_json::Value>() as u64);
    }
}
