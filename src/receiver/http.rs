//! OTLP/HTTP receiver: `POST /v1/traces` with a protobuf or JSON body, optionally gzip-compressed.
//!
//! Responses follow the OTLP/HTTP specification: the body is an `ExportTraceServiceResponse` in the request's
//! encoding; failures carry a `google.rpc.Status` body; 400 is permanent, 429/503 are retryable.

use super::admission::{Admission, Admitted, InflateError, Refusal};
use super::{response, sanitise, wire, MAX_VALUE_DEPTH};
use crate::auth::BearerTokens;
use crate::connections::{LimitedListener, Peer};
use crate::google_rpc::Status as RpcStatus;
use crate::pipeline::PipelineHandle;
use crate::telemetry::Counters;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::Router;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use ordertrail_core::config::HttpServerConfig;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

struct Shared {
    pipeline: PipelineHandle,
    admission: Arc<Admission>,
    auth: Option<Arc<BearerTokens>>,
    max_body: usize,
    max_decompressed: usize,
    read_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("unsupported content type `{0}`; use application/x-protobuf or application/json")]
    ContentType(String),
    #[error("unsupported content encoding `{0}`; use gzip or none")]
    ContentEncoding(String),
    #[error("gzip body is corrupt: {0}")]
    Gzip(std::io::Error),
    #[error("decompressed body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Shape(wire::WireError),
    #[error(transparent)]
    Refused(Refusal),
    #[error("invalid protobuf body: {0}")]
    Protobuf(prost::DecodeError),
    #[error("invalid JSON body: {0}")]
    Json(serde_json::Error),
}

fn error_response(status: StatusCode, encoding: Encoding, grpc_code: tonic::Code, message: String) -> Response {
    let body = RpcStatus { code: grpc_code as i32, message, details: Vec::new() };
    let bytes = match encoding {
        Encoding::Protobuf => body.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&body).unwrap_or_default(),
    };
    let mut response = (status, [(header::CONTENT_TYPE, encoding.content_type())], bytes).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn encoding_of(headers: &HeaderMap) -> Result<Encoding, DecodeError> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(DecodeError::ContentType(value.to_string())),
    }
}

/// Inflates a gzip body within the admission budget and `limit`; other bodies are returned as they are.
fn decompress(headers: &HeaderMap, body: Bytes, limit: usize, admitted: &mut Admitted) -> Result<Bytes, DecodeError> {
    let encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" => match admitted.inflate(&body, limit) {
            Ok(inflated) => Ok(Bytes::from(inflated)),
            Err(InflateError::Corrupt(e)) => Err(DecodeError::Gzip(e)),
            Err(InflateError::TooLarge(limit)) => Err(DecodeError::TooLarge(limit)),
            Err(InflateError::Refused(refusal)) => Err(DecodeError::Refused(refusal)),
        },
        other => Err(DecodeError::ContentEncoding(other.to_string())),
    }
}

/// Reserves what decoding `body` will allocate, and checks how deeply a protobuf body's values nest.
fn admit_decoding(encoding: Encoding, body: &[u8], admitted: &mut Admitted) -> Result<(), DecodeError> {
    let decoded = match encoding {
        Encoding::Protobuf => wire::measure(body, MAX_VALUE_DEPTH).map_err(DecodeError::Shape)?.decoded_bytes,
        Encoding::Json => wire::json_decoded_bytes(body),
    };
    admitted.grow(decoded).map_err(DecodeError::Refused)
}

/// Reads the body within `max_body` bytes, reserving the buffer's capacity before it grows; a declared length
/// is reserved whole up front.
async fn read_body(
    body: Body,
    declared: Option<usize>,
    max_body: usize,
    admitted: &mut Admitted,
) -> Result<Bytes, BodyError> {
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    if let Some(declared) = declared {
        admitted.make_room(&mut buf, declared).map_err(BodyError::Refused)?;
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > max_body {
            return Err(BodyError::TooLarge);
        }
        let needed = buf.len() + data.len();
        admitted.make_room(&mut buf, needed).map_err(BodyError::Refused)?;
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

#[derive(Debug)]
enum BodyError {
    TooLarge,
    Read(String),
    Refused(Refusal),
}

/// How a refusal by the admission budget is answered: 503, retryable, except for a request that can never fit,
/// which gets 413.
fn busy(encoding: Encoding, refusal: &Refusal) -> Response {
    match refusal {
        Refusal::NeverFits { .. } => {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, encoding, tonic::Code::ResourceExhausted, refusal.to_string())
        }
        _ => error_response(StatusCode::SERVICE_UNAVAILABLE, encoding, tonic::Code::Unavailable, refusal.to_string()),
    }
}

fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(DecodeError::Protobuf),
        Encoding::Json => match serde_json::from_slice(body) {
            Ok(request) => Ok(request),
            Err(error) => {
                // The protobuf JSON mapping writes NaN and the infinities as strings, which the OTLP decoder we
                // use reads only as numbers; rather than refuse the whole request, such values are retried as
                // strings. Only a failed decode of a body that has such a value pays for this second pass (its
                // tree is within what admission charged for the body).
                let special = |word: &[u8]| body.windows(word.len()).any(|w| w == word);
                if !special(b"\"NaN\"") && !special(b"Infinity\"") {
                    return Err(DecodeError::Json(error));
                }
                let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
                    return Err(DecodeError::Json(error));
                };
                if !special_doubles_to_strings(&mut value, 0) {
                    return Err(DecodeError::Json(error));
                }
                serde_json::from_value(value).map_err(DecodeError::Json)
            }
        },
    }
}

/// Rewrites `{"doubleValue": "NaN" | "Infinity" | "-Infinity"}` as `{"stringValue": …}` and numeric strings as
/// numbers, throughout `value`; returns whether anything changed. Depth is bounded like the decoder's own.
fn special_doubles_to_strings(value: &mut serde_json::Value, depth: usize) -> bool {
    use serde_json::Value;
    if depth > 128 {
        return false;
    }
    let mut changed = false;
    match value {
        Value::Object(map) => {
            if let Some(Value::String(text)) = map.get("doubleValue") {
                let text = text.clone();
                match text.trim().parse::<f64>() {
                    Ok(number) if number.is_finite() => {
                        map.insert("doubleValue".into(), serde_json::json!(number));
                    }
                    _ if matches!(text.as_str(), "NaN" | "Infinity" | "-Infinity") => {
                        map.remove("doubleValue");
                        map.insert("stringValue".into(), Value::String(text));
                    }
                    _ => return false,
                }
                changed = true;
            }
            for child in map.values_mut() {
                changed |= special_doubles_to_strings(child, depth + 1);
            }
        }
        Value::Array(items) => {
            for child in items {
                changed |= special_doubles_to_strings(child, depth + 1);
            }
        }
        _ => {}
    }
    changed
}

async fn export(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let counters = shared.pipeline.counters().clone();
    // A sender without the right token is turned away before anything it sent is read.
    if let Some(auth) = &shared.auth {
        if !auth.allows(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes)) {
            Counters::add(&counters.requests_unauthenticated, 1);
            let encoding = encoding_of(&headers).unwrap_or(Encoding::Json);
            let message = "missing or invalid bearer token".to_string();
            let mut response =
                error_response(StatusCode::UNAUTHORIZED, encoding, tonic::Code::Unauthenticated, message);
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let encoding = match encoding_of(&headers) {
        Ok(encoding) => encoding,
        Err(e) => {
            Counters::add(&counters.requests_malformed, 1);
            return error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Encoding::Json,
                tonic::Code::InvalidArgument,
                e.to_string(),
            );
        }
    };
    let too_large = || {
        Counters::add(&counters.requests_malformed, 1);
        let message = format!("request body exceeds {} bytes", shared.max_body);
        error_response(StatusCode::PAYLOAD_TOO_LARGE, encoding, tonic::Code::InvalidArgument, message)
    };
    // Admission by the declared length, before a byte of the body is read; a body without one is reserved
    // piece by piece as it arrives.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > shared.max_body as u64) {
        return too_large();
    }
    let peer = peer.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |Extension(Peer(addr))| addr.ip());
    let mut admitted = match shared.admission.admit(peer, 0) {
        Ok(admitted) => admitted,
        Err(refusal) => return busy(encoding, &refusal),
    };
    let declared = declared.and_then(|len| usize::try_from(len).ok());
    let read = read_body(body, declared, shared.max_body, &mut admitted);
    let body = match tokio::time::timeout(shared.read_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::Refused(refusal))) => return busy(encoding, &refusal),
        Ok(Err(BodyError::Read(e))) => {
            Counters::add(&counters.requests_malformed, 1);
            let message = format!("the request body could not be read: {e}");
            return error_response(StatusCode::BAD_REQUEST, encoding, tonic::Code::InvalidArgument, message);
        }
        Err(_) => {
            let message = format!("the request body did not arrive within {:?}", shared.read_timeout);
            return error_response(StatusCode::REQUEST_TIMEOUT, encoding, tonic::Code::DeadlineExceeded, message);
        }
    };
    let request = decompress(&headers, body, shared.max_decompressed, &mut admitted).and_then(|body| {
        admit_decoding(encoding, &body, &mut admitted)?;
        decode(encoding, &body)
    });
    let request = match request {
        Ok(request) => request,
        Err(DecodeError::Refused(refusal)) => return busy(encoding, &refusal),
        Err(e) => {
            Counters::add(&counters.requests_malformed, 1);
            let status = if matches!(e, DecodeError::TooLarge(_)) {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return error_response(status, encoding, tonic::Code::InvalidArgument, e.to_string());
        }
    };
    let mut batch = request.resource_spans;
    let sanitised = sanitise(&mut batch);
    Counters::add(&counters.spans_rejected, sanitised.rejected);
    if sanitised.accepted > 0 {
        if let Err(e) = shared.pipeline.ingest(batch).await {
            // Busy, shutting down and store failures are all transient for the sender: retry later.
            return error_response(StatusCode::SERVICE_UNAVAILABLE, encoding, tonic::Code::Unavailable, e.to_string());
        }
        Counters::add(&counters.requests_accepted, 1);
        Counters::add(&counters.spans_received, sanitised.accepted);
    }
    let answer = response(&sanitised);
    let bytes = match encoding {
        Encoding::Protobuf => answer.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&answer).unwrap_or_default(),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, encoding.content_type())], bytes).into_response()
}

/// The OTLP/HTTP routes; with `auth`, a request must carry one of its bearer tokens.
pub fn router(
    config: &HttpServerConfig,
    pipeline: PipelineHandle,
    admission: Arc<Admission>,
    auth: Option<Arc<BearerTokens>>,
) -> Router {
    let shared = Arc::new(Shared {
        pipeline,
        admission,
        auth,
        max_body: config.max_request_body_size,
        max_decompressed: config.max_decompressed_body_size,
        read_timeout: config.connections.read_timeout,
    });
    Router::new().route("/v1/traces", post(export)).layer(DefaultBodyLimit::disable()).with_state(shared)
}

pub async fn serve(
    listener: LimitedListener,
    config: HttpServerConfig,
    (pipeline, admission, auth): (PipelineHandle, Arc<Admission>, Option<Arc<BearerTokens>>),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::connections::serve_http(listener, router(&config, pipeline, admission, auth), shutdown).await
}
