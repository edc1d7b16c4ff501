//! What the robustness tests share: the proptest settings that bound their time, builders of spans and requests,
//! byte mutations, and an OTLP sink that takes messages of any size. See `robustness_engine.rs` for the time
//! budget and how to run a longer campaign.
#![allow(dead_code)]

use crate::common::Sink;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use prost::Message;
use std::net::SocketAddr;

pub(crate) const SECOND: u64 = 1_000_000_000;
pub(crate) const T0: u64 = 1_780_000_000 * SECOND;
pub(crate) const MIB: usize = 1024 * 1024;

/// The number of cases of a property: `PROPTEST_CASES` when set, so that one variable scales a campaign.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The proptest configuration of this file: a fixed number of cases and bounded shrinking, so a failure cannot
/// turn a CI run into an hours-long search.
pub(crate) fn proptest_config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        max_shrink_iters: 2048,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

/// A runner for the properties that drive the server. They run outside the `proptest!` macro, which knows no
/// source file for them, so failures are printed rather than persisted.
pub(crate) fn server_runner() -> TestRunner {
    TestRunner::new(ProptestConfig { failure_persistence: None, ..proptest_config(32) })
}

pub(crate) fn kv(key: String, value: AnyValue) -> KeyValue {
    KeyValue { key, value: Some(value), ..Default::default() }
}

pub(crate) fn string(value: &str) -> AnyValue {
    AnyValue { value: Some(Value::StringValue(value.to_string())) }
}

/// One string wrapped `depth` levels deep, alternately in an array and in a key-value list.
pub(crate) fn nested(depth: usize, leaf: &str) -> AnyValue {
    let mut value = string(leaf);
    for i in 0..depth {
        value = if i % 2 == 0 {
            AnyValue { value: Some(Value::ArrayValue(ArrayValue { values: vec![value] })) }
        } else {
            AnyValue { value: Some(Value::KvlistValue(KeyValueList { values: vec![kv("k".into(), value)] })) }
        };
    }
    value
}

/// A span of order `order` with `attributes` after its `order.id`.
pub(crate) fn order_span(order: &str, trace: u8, span: u8, name: &str, attributes: Vec<KeyValue>) -> Span {
    let mut all = vec![kv("order.id".into(), string(order))];
    all.extend(attributes);
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![span; 8],
        name: name.into(),
        kind: 1,
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + SECOND,
        attributes: all,
        ..Default::default()
    }
}

pub(crate) fn request_of(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name".into(), string(service))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            schema_url: String::new(),
        }],
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Bytes derived from `seed`: flipped, overwritten, truncated or extended.
pub(crate) fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    (vec((0..len, any::<u8>()), 0..6), 0..=len, vec(any::<u8>(), 0..8)).prop_map(move |(edits, cut, tail)| {
        let mut bytes = seed.clone();
        for (at, byte) in edits {
            bytes[at] = byte;
        }
        bytes.truncate(cut.max(1));
        bytes.extend(tail);
        bytes
    })
}

/// An OTLP sink that accepts messages of any size: the spans these tests send are re-exported, and a megabyte
/// attribute copied into several spans would otherwise exceed tonic's default 4 MiB and stall the exporter.
pub(crate) async fn start_big_sink() -> (Sink, SocketAddr) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(sink.clone())
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(512 * MIB);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (sink, addr)
}

/// A valid request, encoded, to mutate: mutations of real messages reach deeper into the decoder than noise.
pub(crate) fn valid_protobuf() -> Vec<u8> {
    let mut span = order_span("SO-SEED", 1, 1, "pick.line", vec![kv("wms.pick.status".into(), string("partial"))]);
    span.events.push(Event {
        name: "exception".into(),
        attributes: vec![kv("exception.type".into(), string("E"))],
        ..Default::default()
    });
    span.attributes.push(kv("nested".into(), nested(6, "x")));
    request_of("wms", vec![span]).encode_to_vec()
}
