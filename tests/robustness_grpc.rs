//! The real server is fed extreme, oversized, compressed and undecodable requests over OTLP/gRPC, and arbitrary
//! bytes in well-formed gRPC frames; each must get a code the sender can act on (never INTERNAL or UNKNOWN), and
//! the server must keep serving.

mod common;
mod hostile;

use common::*;
use hostile::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------------------------
// OTLP/gRPC
// ---------------------------------------------------------------------------------------------------------------

/// A tonic codec that sends and receives raw bytes, to put arbitrary bytes in a well-formed gRPC frame.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends `body` as the Export request message, unchecked.
async fn export_raw(channel: tonic::transport::Channel, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    call_raw(channel, EXPORT_PATH, body).await
}

/// Sends `body` as the request message of the method at `path`.
async fn call_raw(
    channel: tonic::transport::Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
}

struct Grpc {
    server: ordertrail::server::Server,
    sink: Sink,
    client: TraceServiceClient<tonic::transport::Channel>,
    channel: tonic::transport::Channel,
    _dir: tempfile::TempDir,
}

impl Grpc {
    async fn start() -> Grpc {
        let (sink, sink_addr) = start_big_sink().await;
        let dir = tempfile::tempdir().unwrap();
        let server = start_server(test_config(sink_addr, dir.path(), "")).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let client = TraceServiceClient::new(channel.clone()).max_decoding_message_size(64 * MIB);
        Grpc { server, sink, client, channel, _dir: dir }
    }

    async fn export(
        &mut self,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        self.client.export(request).await.map(tonic::Response::into_inner)
    }

    /// As `Http::still_serving`, over gRPC.
    async fn still_serving(&mut self, order: &str, trace: u8) {
        let request = request_of("erp", vec![order_span(order, trace, trace, "credit.check", vec![])]);
        let response = self.export(request).await.expect("a valid request after bad ones is accepted");
        assert_eq!(response.partial_success, None);
        let trace = trace_of(order);
        self.sink
            .wait_for(Duration::from_secs(30), order, |spans| spans.iter().any(|r| r.span.trace_id == trace))
            .await;
    }
}

/// Requests that decode but are extreme in every dimension: all are answered OK (with the invalid spans counted in
/// partial_success), and their order spans reach the exporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_extreme_but_valid_requests_are_accepted_and_processed() {
    let mut grpc = Grpc::start().await;

    // Ten thousand attributes on one span, the order key among the last.
    let mut wide: Vec<KeyValue> =
        (0..10_000).map(|i| kv(format!("attr.{i}"), AnyValue { value: Some(Value::IntValue(i)) })).collect();
    wide.push(kv("customer.segment".into(), string("key-account")));
    let mut span = order_span("SO-WIDE", 0x41, 0x41, "credit.check", vec![]);
    span.attributes.splice(0..0, wide);
    assert_eq!(grpc.export(request_of("erp", vec![span])).await.unwrap().partial_success, None);

    // Megabyte values: an attribute, a status message, an event attribute, and a megabyte-long order key.
    let megabyte = "é".repeat(MIB / 2);
    let mut span = order_span("SO-MEGA", 0x42, 0x42, "pick.line", vec![kv("blob".into(), string(&megabyte))]);
    span.status = Some(Status { code: 2, message: megabyte.clone() });
    span.events.push(Event {
        name: "exception".into(),
        attributes: vec![kv("exception.message".into(), string(&megabyte))],
        ..Default::default()
    });
    assert_eq!(grpc.export(request_of("wms", vec![span])).await.unwrap().partial_success, None);
    let long_key = format!("SO-{}", "9".repeat(MIB));
    let span = order_span(&long_key, 0x43, 0x43, "credit.check", vec![]);
    assert_eq!(grpc.export(request_of("erp", vec![span])).await.unwrap().partial_success, None);

    // Duplicate span ids, within one request and across requests.
    let dup = order_span("SO-DUP", 0x44, 0x44, "credit.check", vec![]);
    let request = request_of("erp", vec![dup.clone(), dup.clone(), dup.clone()]);
    assert_eq!(grpc.export(request.clone()).await.unwrap().partial_success, None);
    assert_eq!(grpc.export(request).await.unwrap().partial_success, None);

    // Timestamps at the extremes, end before start, kinds and status codes out of range, nesting 24 levels deep
    // (within protobuf's recursion limit of 100 messages; a level is two or three messages).
    let mut odd = Vec::new();
    for (i, (start, end)) in
        [(0, 0), (u64::MAX, u64::MAX), (u64::MAX, 0), (1, u64::MAX), (T0, T0 - 1)].into_iter().enumerate()
    {
        let mut span = order_span(
            "SO-TIME",
            0x45,
            0x50 + u8::try_from(i).unwrap(),
            "pack.carton",
            vec![kv("deep".into(), nested(24, "x"))],
        );
        span.start_time_unix_nano = start;
        span.end_time_unix_nano = end;
        span.kind = [-1, 6, 99, i32::MIN, i32::MAX][i];
        span.status = Some(Status { code: [-1, 3, 99, i32::MIN, i32::MAX][i], message: String::new() });
        odd.push(span);
    }
    assert_eq!(grpc.export(request_of("wms", odd)).await.unwrap().partial_success, None);

    // Weird quantities and numeric rule inputs.
    let weird_numbers = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, f64::MAX]
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            order_span(
                "SO-QTY",
                0x46,
                0x60 + u8::try_from(i).unwrap(),
                "inventory.allocate",
                vec![
                    kv("order.quantity.ordered".into(), AnyValue { value: Some(Value::DoubleValue(q)) }),
                    kv("order.quantity.shipped".into(), AnyValue { value: Some(Value::DoubleValue(-q)) }),
                    kv("inventory.snapshot_age_s".into(), AnyValue { value: Some(Value::DoubleValue(q)) }),
                    kv("http.response.status_code".into(), AnyValue { value: Some(Value::DoubleValue(q)) }),
                ],
            )
        })
        .collect();
    assert_eq!(grpc.export(request_of("erp", weird_numbers)).await.unwrap().partial_success, None);

    // Every kind of invalid id is rejected per span, and the valid span beside them is kept.
    let mut invalid = Vec::new();
    for (trace_id, span_id, parent) in [
        (vec![], vec![1; 8], vec![]),
        (vec![1; 16], vec![], vec![]),
        (vec![0; 16], vec![1; 8], vec![]),
        (vec![1; 16], vec![0; 8], vec![]),
        (vec![1; 20], vec![1; 8], vec![]),
        (vec![1; 16], vec![1; 9], vec![]),
        (vec![1; 16], vec![1; 8], vec![1; 3]),
    ] {
        let mut span = order_span("SO-IDS", 1, 1, "credit.check", vec![]);
        (span.trace_id, span.span_id, span.parent_span_id) = (trace_id, span_id, parent);
        invalid.push(span);
    }
    invalid.push(order_span("SO-IDS", 0x47, 0x47, "credit.check", vec![]));
    let partial = grpc.export(request_of("erp", invalid)).await.unwrap().partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 7, "{}", partial.error_message);
    assert!(!partial.error_message.is_empty());
    // A request with no spans at all, or only invalid ones, is still a success.
    assert_eq!(grpc.export(ExportTraceServiceRequest::default()).await.unwrap().partial_success, None);
    let only_invalid = request_of("erp", vec![Span::default()]);
    assert_eq!(grpc.export(only_invalid).await.unwrap().partial_success.map(|p| p.rejected_spans), Some(1));

    // Every order above made it through the engine to the exporter.
    let wanted: Vec<Vec<u8>> = ["SO-WIDE", "SO-MEGA", long_key.as_str(), "SO-DUP", "SO-TIME", "SO-QTY", "SO-IDS"]
        .iter()
        .map(|o| trace_of(o))
        .collect();
    let spans = grpc
        .sink
        .wait_for(Duration::from_secs(60), "the order spans of every request", |spans| {
            wanted.iter().all(|t| spans.iter().any(|r| &r.span.trace_id == t))
        })
        .await;
    // The technical span, not the root that ordertrail emits on the order's first span.
    let wide = spans.iter().find(|r| r.span.trace_id == trace_of("SO-WIDE") && r.service != "ordertrail").unwrap();
    assert!(wide.span.attributes.len() > 10_000, "the wide span kept its attributes");
    grpc.still_serving("SO-AFTER-GRPC", 0x48).await;
    grpc.server.shutdown(Duration::from_secs(5)).await;
}

/// Requests refused before they are decoded get a code a sender can act on, and the connection
/// and the server carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_oversized_and_compressed_bombs_are_refused_with_resource_codes() {
    let mut grpc = Grpc::start().await;

    // Over the 4 MiB default as sent: RESOURCE_EXHAUSTED without RetryInfo, as Go servers answer, checked from the
    // frame header before the message is read (OUT_OF_RANGE would make OTLP clients retry it for ever).
    let mut big = order_span("SO-BIG", 0x51, 0x51, "credit.check", vec![]);
    big.name = "x".repeat(5 * MIB);
    let status = grpc.export(request_of("erp", vec![big.clone()])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    // The same message gzip-compressed is tiny on the wire but inflates past the limit: RESOURCE_EXHAUSTED.
    let mut gzip_client = grpc.client.clone().send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let status = gzip_client.export(request_of("erp", vec![big])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    grpc.still_serving("SO-AFTER-BIG", 0x52).await;
    grpc.server.shutdown(Duration::from_secs(5)).await;
}

/// A gRPC message that does not decode as an `ExportTraceServiceRequest` is the sender's error: INVALID_ARGUMENT,
/// as the receiver documents, not INTERNAL, which would blame the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_undecodable_messages_get_invalid_argument() {
    let mut grpc = Grpc::start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a truncated varint", vec![0x0a, 0xff, 0xff]),
        ("a length past the end", vec![0x0a, 0x10, 0x01]),
        ("an invalid wire type", vec![0x0f]),
        ("field number zero", vec![0x00, 0x01]),
        // resource_spans { schema_url: "\xff" }
        ("invalid UTF-8 in a string", vec![0x0a, 0x03, 0x1a, 0x01, 0xff]),
    ];
    for (what, body) in cases {
        let status = export_raw(grpc.channel.clone(), body).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
    }
    // Nesting past the depth limit, sent with the ordinary client; at the limit it is accepted.
    let span = order_span("SO-DEEP", 0x61, 0x61, "credit.check", vec![kv("deep".into(), nested(200, "x"))]);
    let status = grpc.export(request_of("erp", vec![span])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let limit = ordertrail::receiver::MAX_VALUE_DEPTH;
    let span = order_span("SO-DEEP-OK", 0x62, 0x62, "credit.check", vec![kv("deep".into(), nested(limit, "x"))]);
    grpc.export(request_of("erp", vec![span])).await.expect("nesting up to the limit is accepted");
    // A method the service does not have.
    let status = call_raw(grpc.channel.clone(), "/opentelemetry.proto.collector.trace.v1.TraceService/Nope", vec![])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    grpc.still_serving("SO-AFTER-UNDECODABLE", 0x62).await;
    grpc.server.shutdown(Duration::from_secs(5)).await;
}

/// Arbitrary bytes in a well-formed gRPC frame: decoded and answered OK, or refused as INVALID_ARGUMENT; never
/// INTERNAL or UNKNOWN, and the server keeps serving.
#[test]
fn grpc_arbitrary_messages_get_ok_or_invalid_argument() {
    let rt = runtime();
    let mut grpc = rt.block_on(Grpc::start());
    let bodies = prop_oneof![vec(any::<u8>(), 0..512), mutated(valid_protobuf())];
    let mut runner = server_runner();
    runner
        .run(&bodies, |body| {
            match rt.block_on(export_raw(grpc.channel.clone(), body)) {
                Ok(answer) => prop_assert!(ExportTraceServiceResponse::decode(&answer[..]).is_ok()),
                Err(status) => prop_assert_eq!(status.code(), tonic::Code::InvalidArgument, "{:?}", status),
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(grpc.still_serving("SO-AFTER-GRPC-FUZZ", 0x63));
    rt.block_on(grpc.server.shutdown(Duration::from_secs(5)));
}
