//! OTLP/HTTP receiver: `POST /v1/traces` with a protobuf or JSON body, optionally gzip-compressed.
//!
//! Responses follow the OTLP/HTTP specification: the body is an `ExportTraceServiceResponse` in the request's
//! encoding; failures carry a `google.rpc.Status` body; 400 is permanent, 429/503 are retryable.

use super::{response, sanitise};
use crate::google_rpc::Status as RpcStatus;
use crate::pipeline::PipelineHandle;
use crate::telemetry::Counters;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use ordertrail_core::config::HttpServerConfig;
use prost::Message;
use std::io::Read;
use std::sync::Arc;
use tokio::net::TcpListener;

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
    max_body: usize,
    max_decompressed: usize,
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

fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, DecodeError> {
    let encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut out = Vec::new();
            // Reading one byte past the limit tells "exactly at the limit" from "over it" without inflating a bomb.
            flate2::read::GzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(DecodeError::Gzip)?;
            if out.len() > limit {
                return Err(DecodeError::TooLarge(limit));
            }
            Ok(Bytes::from(out))
        }
        other => Err(DecodeError::ContentEncoding(other.to_string())),
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
                // strings. Only a failed decode pays for this second pass.
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

async fn export(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let counters = shared.pipeline.counters().clone();
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
    // The limit is enforced here rather than by a middleware layer so that refusals are counted with the rest.
    let body = match axum::body::to_bytes(body, shared.max_body).await {
        Ok(body) => body,
        Err(_) => {
            Counters::add(&counters.requests_malformed, 1);
            let message = format!("request body exceeds {} bytes or could not be read", shared.max_body);
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, encoding, tonic::Code::InvalidArgument, message);
        }
    };
    let request = decompress(&headers, body, shared.max_decompressed).and_then(|body| decode(encoding, &body));
    let request = match request {
        Ok(request) => request,
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

/// The OTLP/HTTP routes.
pub fn router(config: &HttpServerConfig, pipeline: PipelineHandle) -> Router {
    let shared = Arc::new(Shared {
        pipeline,
        max_body: config.max_request_body_size,
        max_decompressed: config.max_decompressed_body_size,
    });
    Router::new().route("/v1/traces", post(export)).layer(DefaultBodyLimit::disable()).with_state(shared)
}

pub async fn serve(
    listener: TcpListener,
    config: HttpServerConfig,
    pipeline: PipelineHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(&config, pipeline)).with_graceful_shutdown(shutdown).await
}
