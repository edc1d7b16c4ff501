//! The real server is fed undecodable, oversized, compressed and pathological requests over OTLP/HTTP; each must
//! get the documented OTLP answer, and a valid request afterwards must still travel all the way to the exporter,
//! which shows that neither the receiver nor the engine thread died.

mod common;
mod hostile;

use common::*;
use hostile::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use std::io::Write;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------------------------
// The real server
// ---------------------------------------------------------------------------------------------------------------

use ordertrail::google_rpc::Status as RpcStatus;

/// A running server with its sink, for the HTTP tests.
struct Http {
    server: ordertrail::server::Server,
    sink: Sink,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Http {
    async fn start(max_body: usize, max_decompressed: usize) -> Http {
        let (sink, sink_addr) = start_big_sink().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(sink_addr, dir.path(), "");
        let http = config.receivers.http.as_mut().unwrap();
        http.max_request_body_size = max_body;
        http.max_decompressed_body_size = max_decompressed;
        let server = start_server(config).await;
        let url = format!("http://{}/v1/traces", server.http_addr.unwrap());
        Http { server, sink, url, client: reqwest::Client::new(), _dir: dir }
    }

    async fn post(&self, body: Vec<u8>, content_type: &str, gzip: bool) -> (u16, Vec<u8>) {
        let mut request = self.client.post(&self.url).header("content-type", content_type).body(body);
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("the body arrives").to_vec())
    }

    /// Sends one valid request for `order` and waits until its span reaches the exporter's sink: the receiver,
    /// the engine thread and the exporter are all still working.
    async fn still_serving(&self, order: &str, trace: u8) {
        let body = request_of("erp", vec![order_span(order, trace, trace, "credit.check", vec![])]).encode_to_vec();
        let (status, body) = self.post(body, "application/x-protobuf", false).await;
        assert_eq!(status, 200, "a valid request after bad ones: {}", String::from_utf8_lossy(&body));
        let trace = trace_of(order);
        self.sink
            .wait_for(Duration::from_secs(30), order, |spans| spans.iter().any(|r| r.span.trace_id == trace))
            .await;
    }

    fn malformed(&self) -> u64 {
        ordertrail::telemetry::Counters::get(&self.server.counters().requests_malformed)
    }
}

/// Checks one OTLP/HTTP answer to a request that may or may not decode: 200 with an `ExportTraceServiceResponse`,
/// or 400 with a `google.rpc.Status` of INVALID_ARGUMENT, in the request's encoding; never a server error.
fn check_answer(status: u16, body: &[u8], json: bool) -> Result<bool, TestCaseError> {
    match status {
        200 => {
            if json {
                prop_assert!(serde_json::from_slice::<ExportTraceServiceResponse>(body).is_ok());
            } else {
                prop_assert!(ExportTraceServiceResponse::decode(body).is_ok());
            }
            Ok(true)
        }
        400 => {
            let code = if json {
                serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v["code"].as_i64())
            } else {
                RpcStatus::decode(body).ok().map(|s| i64::from(s.code))
            };
            prop_assert_eq!(
                code,
                Some(tonic::Code::InvalidArgument as i64),
                "body {:?}",
                String::from_utf8_lossy(body)
            );
            Ok(false)
        }
        other => Err(TestCaseError::fail(format!("status {other}: {}", String::from_utf8_lossy(body)))),
    }
}

/// Arbitrary and mutated OTLP/HTTP protobuf bodies get 200 or 400, never a server error, and the malformed ones
/// are counted; a valid request afterwards still goes all the way through.
#[test]
fn http_protobuf_garbage_gets_400_and_the_server_keeps_serving() {
    let rt = runtime();
    let http = rt.block_on(Http::start(4 * MIB, 16 * MIB));
    let bodies = prop_oneof![vec(any::<u8>(), 0..512), mutated(valid_protobuf())];
    let mut runner = server_runner();
    let rejected = std::cell::Cell::new(0u64);
    runner
        .run(&(bodies, any::<bool>()), |(body, gzip)| {
            let body = if gzip { gzip_bytes(&body) } else { body };
            let (status, answer) = rt.block_on(http.post(body, "application/x-protobuf", gzip));
            if !check_answer(status, &answer, false)? {
                rejected.set(rejected.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(http.malformed(), rejected.get(), "every 400 is counted as malformed, and nothing else");
    rt.block_on(http.still_serving("SO-AFTER-PB", 0x21));
    rt.block_on(http.server.shutdown(Duration::from_secs(5)));
}

fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
    gzip_bytes_with(bytes, flate2::Compression::fast())
}

fn gzip_bytes_with(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn valid_json() -> String {
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "erp"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "credit.check",
            "kind": 1, "startTimeUnixNano": "1780000000000000000", "endTimeUnixNano": "1780000000100000000",
            "attributes": [{"key": "order.id", "value": {"stringValue": "SO-JSON-SEED"}},
                           {"key": "n", "value": {"arrayValue": {"values": [{"intValue": "5"}, {"doubleValue": 1.5}]}}}]
        }]}]
    }]})
    .to_string()
}

/// Arbitrary and mutated OTLP/HTTP JSON bodies, including invalid UTF-8, get 200 or 400 and never a server error.
#[test]
fn http_json_garbage_gets_400_and_the_server_keeps_serving() {
    let rt = runtime();
    let http = rt.block_on(Http::start(4 * MIB, 16 * MIB));
    let bodies = prop_oneof![
        vec(any::<u8>(), 0..256),
        ".{0,64}".prop_map(String::into_bytes),
        mutated(valid_json().into_bytes()),
    ];
    let mut runner = server_runner();
    let rejected = std::cell::Cell::new(0u64);
    runner
        .run(&bodies, |body| {
            let (status, answer) = rt.block_on(http.post(body, "application/json", false));
            if !check_answer(status, &answer, true)? {
                rejected.set(rejected.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(http.malformed(), rejected.get());
    rt.block_on(http.still_serving("SO-AFTER-JSON", 0x22));
    rt.block_on(http.server.shutdown(Duration::from_secs(5)));
}

/// Hand-picked JSON that a fuzzer would take long to find: each is refused with 400, or accepted and processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_pathological_bodies_are_refused_or_handled() {
    let http = Http::start(4 * MIB, 16 * MIB).await;
    let span_with = |field: &str| {
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",{field}}}]}}]}}]}}"#
        )
    };
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8 in a string", b"{\"resourceSpans\": [{\"schemaUrl\": \"\xff\xfe\"}]}".to_vec()),
        ("invalid UTF-8 outside strings", b"\xc3\x28{}".to_vec()),
        ("a lone surrogate escape", span_with(r#""name":"\ud800""#).into_bytes()),
        ("truncated", valid_json().as_bytes()[..valid_json().len() / 2].to_vec()),
        ("100k opening brackets", "[".repeat(100_000).into_bytes()),
        ("100k nested objects", "{\"a\":".repeat(100_000).into_bytes()),
        (
            "arrays nested 300 deep in an attribute",
            span_with(&format!(
                r#""attributes":[{{"key":"k","value":{}"x"{}}}]"#,
                r#"{"arrayValue":{"values":["#.repeat(300) + r#"{"stringValue":"x"}"#,
                "]}}".repeat(300)
            ))
            .into_bytes(),
        ),
        ("a number for a string", span_with(r#""name":5"#).into_bytes()),
        ("a string for an array", r#"{"resourceSpans":"many"}"#.as_bytes().to_vec()),
        ("odd-length hex id", span_with(r#""parentSpanId":"abc""#).into_bytes()),
        ("non-hex id", span_with(r#""parentSpanId":"zzzzzzzzzzzzzzzz""#).into_bytes()),
        ("a timestamp past u64", span_with(r#""startTimeUnixNano":"18446744073709551616""#).into_bytes()),
        ("a negative timestamp", span_with(r#""endTimeUnixNano":-1"#).into_bytes()),
        ("a kind past i32", span_with(r#""kind":4294967296"#).into_bytes()),
        (
            "an intValue that is not a number",
            span_with(r#""attributes":[{"key":"k","value":{"intValue":"x"}}]"#).into_bytes(),
        ),
        (
            "bytesValue that is not base64",
            span_with(r#""attributes":[{"key":"k","value":{"bytesValue":"!!"}}]"#).into_bytes(),
        ),
        ("trailing garbage", format!("{} x", valid_json()).into_bytes()),
        ("empty body", Vec::new()),
        ("null", b"null".to_vec()),
    ];
    for (what, body) in &refused {
        let (status, answer) = http.post(body.clone(), "application/json", false).await;
        assert_eq!(status, 400, "{what}: {}", String::from_utf8_lossy(&answer));
        let status: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON google.rpc.Status");
        assert_eq!(status["code"], tonic::Code::InvalidArgument as i32, "{what}");
    }
    assert_eq!(http.malformed(), refused.len() as u64);

    // Valid but unusual: huge strings, out-of-range enums, extreme timestamps, an empty object, empty ids (which
    // are rejected per span in partial_success, not for the whole request).
    let accepted: Vec<(&str, String, i64)> = vec![
        ("an empty request", "{}".into(), 0),
        ("a huge name", span_with(&format!(r#""name":"{}""#, "é".repeat(MIB))), 0),
        ("kind and status out of range", span_with(r#""kind":-7,"status":{"code":99}"#), 0),
        (
            "timestamps 0 and u64::MAX",
            span_with(r#""startTimeUnixNano":"18446744073709551615","endTimeUnixNano":0"#),
            0,
        ),
        (
            "empty ids",
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"","spanId":"","name":"x"}]}]}]}"#.into(),
            1,
        ),
    ];
    for (what, body, rejected) in &accepted {
        let (status, answer) = http.post(body.clone().into_bytes(), "application/json", false).await;
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&answer));
        let response: ExportTraceServiceResponse = serde_json::from_slice(&answer).expect("a JSON response");
        assert_eq!(response.partial_success.map_or(0, |p| p.rejected_spans), *rejected, "{what}");
    }
    http.still_serving("SO-AFTER-PATHOLOGICAL", 0x23).await;
    http.server.shutdown(Duration::from_secs(5)).await;
}

/// Nesting of attribute values is bounded (`MAX_VALUE_DEPTH`, 128 levels, checked before decoding): past it the
/// body is refused with 400; up to it, deeper than protobuf's default recursion limit allows (48 levels were
/// refused before), the span is processed through decoding, the engine and export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_nesting_past_the_depth_limit_gets_400() {
    let http = Http::start(4 * MIB, 16 * MIB).await;
    let deep = order_span("SO-DEEP", 0x25, 0x25, "credit.check", vec![kv("deep".into(), nested(200, "x"))]);
    let (status, answer) =
        http.post(request_of("erp", vec![deep]).encode_to_vec(), "application/x-protobuf", false).await;
    assert_eq!(status, 400);
    let rpc = RpcStatus::decode(&answer[..]).expect("a protobuf google.rpc.Status");
    assert!(rpc.message.contains("nested more than 128 levels"), "{}", rpc.message);
    let limit = ordertrail::receiver::MAX_VALUE_DEPTH;
    let shallow = order_span("SO-SHALLOW", 0x26, 0x26, "credit.check", vec![kv("deep".into(), nested(limit, "x"))]);
    let (status, _) =
        http.post(request_of("erp", vec![shallow]).encode_to_vec(), "application/x-protobuf", false).await;
    assert_eq!(status, 200);
    http.still_serving("SO-AFTER-DEEP", 0x27).await;
    http.server.shutdown(Duration::from_secs(5)).await;
}

/// OTLP/JSON follows the protobuf JSON mapping, in which a double may be the string "NaN", "Infinity" or
/// "-Infinity"; such a value is valid and must not cost the sender its whole request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_special_doubles_are_accepted() {
    let http = Http::start(4 * MIB, 16 * MIB).await;
    for special in ["NaN", "Infinity", "-Infinity"] {
        let body = valid_json().replace(r#"{"doubleValue":1.5}"#, &format!(r#"{{"doubleValue":"{special}"}}"#));
        assert!(body.contains(special));
        let (status, answer) = http.post(body.into_bytes(), "application/json", false).await;
        assert_eq!(status, 200, "{special}: {}", String::from_utf8_lossy(&answer));
    }
    http.server.shutdown(Duration::from_secs(5)).await;
}

/// A request whose protobuf encoding is exactly `size` bytes: one span, its name padding it out.
fn request_of_size(size: usize) -> Vec<u8> {
    let mut padding = size;
    // A few rounds suffice: every length prefix involved stays within one varint width near the sizes used here.
    for _ in 0..64 {
        let mut span = order_span("SO-EXACT", 0x31, 0x31, "credit.check", vec![]);
        span.name = "x".repeat(padding);
        let bytes = request_of("erp", vec![span]).encode_to_vec();
        match bytes.len().cmp(&size) {
            std::cmp::Ordering::Equal => return bytes,
            std::cmp::Ordering::Greater => padding -= bytes.len() - size,
            // Shrinking the name shortened a length prefix by a byte too many; pad the name back by one.
            std::cmp::Ordering::Less => padding += 1,
        }
    }
    panic!("no request encodes to exactly {size} bytes");
}

/// A gzip body that inflates past `max_decompressed_body_size` is refused with 413 whatever its media type; one
/// that inflates to exactly the limit is accepted; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_get_413_and_the_limit_is_exact() {
    const LIMIT: usize = MIB;
    let http = Http::start(256 * 1024, LIMIT).await;
    // 16 MiB of zeros compress to about 16 KiB, well under the 256 KiB body limit.
    let bomb = gzip_bytes_with(&vec![0u8; 16 * MIB], flate2::Compression::best());
    assert!(bomb.len() < 256 * 1024, "the bomb is small on the wire: {} bytes", bomb.len());
    for content_type in ["application/x-protobuf", "application/json"] {
        let (status, answer) = http.post(bomb.clone(), content_type, true).await;
        assert_eq!(status, 413, "{content_type}: {}", String::from_utf8_lossy(&answer));
    }
    let (status, answer) = http.post(bomb.clone(), "application/x-protobuf", true).await;
    let rpc = RpcStatus::decode(&answer[..]).expect("a protobuf google.rpc.Status");
    assert_eq!(status, 413);
    assert!(rpc.message.contains("exceeds"), "{}", rpc.message);

    // A gzip stream that is cut short is corrupt: 400.
    let valid = request_of("erp", vec![order_span("SO-GZ", 0x32, 0x32, "credit.check", vec![])]).encode_to_vec();
    let compressed = gzip_bytes(&valid);
    let (status, _) = http.post(compressed[..compressed.len() / 2].to_vec(), "application/x-protobuf", true).await;
    assert_eq!(status, 400, "truncated gzip");

    // Exactly at the limit is accepted, one byte over is not.
    let exact = request_of_size(LIMIT);
    let (status, answer) = http.post(gzip_bytes(&exact), "application/x-protobuf", true).await;
    assert_eq!(status, 200, "exactly at the limit: {}", String::from_utf8_lossy(&answer));
    let over = request_of_size(LIMIT + 1);
    let (status, _) = http.post(gzip_bytes(&over), "application/x-protobuf", true).await;
    assert_eq!(status, 413, "one byte over the limit");
    assert_eq!(http.malformed(), 5);
    http.still_serving("SO-AFTER-BOMB", 0x24).await;
    http.server.shutdown(Duration::from_secs(5)).await;
}
