//! OTLP/gRPC receiver.
//!
//! The service is wired by hand rather than with the generated `TraceServiceServer` for one reason: the generated
//! server decodes with tonic's protobuf codec, which answers a message that does not decode with INTERNAL (gRPC's
//! status table files "error parsing request proto" under it). INTERNAL reads as a fault of this server, while
//! the message is the sender's error; the receivers promise INVALID_ARGUMENT for it, as OTLP/HTTP answers 400.
//!
//! It also reads the request body itself before tonic sees it, so that memory is admitted by bytes before it is
//! allocated: the frame's length is checked and reserved before the message is read, a gzip message is inflated
//! step by step within the budget, and the decoded size (estimated from the encoding, see `wire`) is reserved
//! before decoding. tonic then decodes an uncompressed message from memory.

use super::admission::{Admission, Admitted, InflateError, Refusal};
use super::{ingest_status, response, sanitise, wire, MAX_VALUE_DEPTH};
use crate::auth::BearerTokens;
use crate::connections::{LimitedListener, Peer};
use crate::pipeline::PipelineHandle;
use crate::telemetry::Counters;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use ordertrail_core::config::GrpcServerConfig;
use prost::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::{Request, Response, Status};

struct Receiver {
    pipeline: PipelineHandle,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let counters = self.pipeline.counters().clone();
        let mut batch = request.into_inner().resource_spans;
        let sanitised = sanitise(&mut batch);
        Counters::add(&counters.spans_rejected, sanitised.rejected);
        if sanitised.accepted > 0 {
            self.pipeline.ingest(batch).await.map_err(|e| ingest_status(&e))?;
            Counters::add(&counters.requests_accepted, 1);
            Counters::add(&counters.spans_received, sanitised.accepted);
        }
        Ok(Response::new(response(&sanitised)))
    }
}

/// Serves OTLP/gRPC on an already bound listener until `shutdown`.
pub async fn serve(
    listener: LimitedListener,
    config: GrpcServerConfig,
    (pipeline, admission, auth): (PipelineHandle, Arc<Admission>, Option<Arc<BearerTokens>>),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = ExportService {
        receiver: Arc::new(Receiver { pipeline }),
        admission,
        auth,
        max_recv_msg_size: config.max_recv_msg_size,
        read_timeout: config.connections.read_timeout,
    };
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(listener.into_stream(), shutdown)
        .await
}

/// tonic's protobuf codec, except that a request that does not decode is answered INVALID_ARGUMENT.
#[derive(Default)]
struct ExportCodec;

struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = ExportTraceServiceRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<ExportTraceServiceRequest>, Status> {
        ExportTraceServiceRequest::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("invalid protobuf message: {e}")))
    }
}

impl Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = ExportTraceServiceRequest;
    type Encoder = tonic_prost::ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// The unary `Export` method, for `tonic::server::Grpc`.
struct ExportMethod(Arc<Receiver>);

impl tonic::server::UnaryService<ExportTraceServiceRequest> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<ExportTraceServiceResponse>, Status>;

    fn call(&mut self, request: Request<ExportTraceServiceRequest>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move { receiver.export(request).await })
    }
}

/// `opentelemetry.proto.collector.trace.v1.TraceService` as the generated server serves it, with [`ExportCodec`].
#[derive(Clone)]
struct ExportService {
    receiver: Arc<Receiver>,
    admission: Arc<Admission>,
    auth: Option<Arc<BearerTokens>>,
    max_recv_msg_size: usize,
    read_timeout: Duration,
}

/// How a refusal by the admission budget is answered: UNAVAILABLE, retryable by every OTLP client, except for a
/// request that can never fit, which gets RESOURCE_EXHAUSTED without RetryInfo, permanent for OTLP clients.
fn refused(refusal: Refusal) -> Status {
    match refusal {
        Refusal::NeverFits { .. } => Status::resource_exhausted(refusal.to_string()),
        _ => Status::unavailable(refusal.to_string()),
    }
}

impl ExportService {
    /// Reads the request's one gRPC message within the admission budget and gives it back uncompressed, framed
    /// for tonic, with the reservation that covers it and its decoding.
    async fn read_message<B>(
        &self,
        headers: &http::HeaderMap,
        body: B,
        peer: std::net::IpAddr,
    ) -> Result<(Admitted, Bytes), Status>
    where
        B: Body,
        B::Error: Into<StdError>,
    {
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::new();
        let mut admitted: Option<Admitted> = None;
        let mut header: Option<(bool, usize)> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Status::cancelled(format!("reading the request failed: {}", e.into())))?;
            let Ok(data) = frame.into_data() else { continue };
            // Only the declared message is reserved; a body longer than it is refused, not buffered.
            if header.is_some_and(|(_, len)| buf.len() + data.remaining() > len + 5) {
                return Err(Status::invalid_argument("a unary request carries one message"));
            }
            buf.put(data);
            if header.is_none() && buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if len > self.max_recv_msg_size {
                    // What Go servers answer, without RetryInfo: the same message can never succeed.
                    return Err(Status::resource_exhausted(format!(
                        "grpc: received message larger than max ({len} vs. {})",
                        self.max_recv_msg_size
                    )));
                }
                if buf[0] > 1 {
                    return Err(Status::invalid_argument("the gRPC message's compressed flag is neither 0 nor 1"));
                }
                let mut reservation = self.admission.admit(peer, 0).map_err(refused)?;
                reservation.make_room(&mut buf, len + 5).map_err(refused)?;
                admitted = Some(reservation);
                header = Some((buf[0] == 1, len));
            }
            if header.is_some_and(|(_, len)| buf.len() >= len + 5) {
                break;
            }
        }
        let (Some((compressed, len)), Some(mut admitted)) = (header, admitted) else {
            return Err(Status::invalid_argument("the request holds no complete gRPC message"));
        };
        if buf.len() < len + 5 {
            return Err(Status::invalid_argument("the request ended before its message did"));
        }
        // An uncompressed message goes to tonic in the frame it came in; only an inflated one needs a new frame.
        let frame = buf.freeze().slice(..len + 5);
        let framed = if compressed {
            let encoding = headers.get("grpc-encoding").and_then(|v| v.to_str().ok()).unwrap_or("");
            if encoding != "gzip" {
                return Err(Status::unimplemented(format!(
                    "message compression `{encoding}` is not supported; use gzip"
                )));
            }
            let inflated = match admitted.inflate(&frame[5..], self.max_recv_msg_size) {
                Ok(inflated) => inflated,
                Err(InflateError::Refused(refusal)) => return Err(refused(refusal)),
                Err(InflateError::TooLarge(limit)) => {
                    return Err(Status::resource_exhausted(format!(
                        "grpc: received message after decompression larger than max ({limit})"
                    )))
                }
                Err(e @ InflateError::Corrupt(_)) => return Err(Status::invalid_argument(e.to_string())),
            };
            let mut framed = BytesMut::with_capacity(inflated.len() + 5);
            framed.put_u8(0);
            framed.put_u32(u32::try_from(inflated.len()).unwrap_or(u32::MAX));
            framed.extend_from_slice(&inflated);
            framed.freeze()
        } else {
            frame
        };
        let message = &framed[5..];
        let shape = wire::measure(message, MAX_VALUE_DEPTH).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The decoded request, and the copy tonic decodes it from.
        admitted.grow(shape.decoded_bytes + message.len() as u64).map_err(refused)?;
        Ok((admitted, framed))
    }
}

impl tonic::server::NamedService for ExportService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> Service<http::Request<B>> for ExportService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != "/opentelemetry.proto.collector.trace.v1.TraceService/Export" {
            return Box::pin(async move { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        // A sender without the right token is turned away before its message is read.
        if let Some(auth) = &self.auth {
            if !auth.allows(request.headers().get("authorization").map(http::HeaderValue::as_bytes)) {
                Counters::add(&self.receiver.pipeline.counters().requests_unauthenticated, 1);
                let status = Status::unauthenticated("missing or invalid bearer token");
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        let this = self.clone();
        Box::pin(async move {
            let peer = request.extensions().get::<Peer>().map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |p| p.0.ip());
            let (mut parts, body) = request.into_parts();
            let read = tokio::time::timeout(this.read_timeout, this.read_message(&parts.headers, body, peer)).await;
            let (admitted, framed) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(status)) => {
                    if status.code() != tonic::Code::Unavailable {
                        Counters::add(&this.receiver.pipeline.counters().requests_malformed, 1);
                    }
                    return Ok(status.into_http());
                }
                Err(_) => {
                    let message = format!("the request's body did not arrive within {:?}", this.read_timeout);
                    return Ok(Status::deadline_exceeded(message).into_http());
                }
            };
            // The message is inflated already; tonic must not try again.
            parts.headers.remove("grpc-encoding");
            let request = http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(framed)));
            let mut compression = EnabledCompressionEncodings::default();
            compression.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(ExportCodec)
                .apply_compression_config(EnabledCompressionEncodings::default(), compression)
                .apply_max_message_size_config(Some(this.max_recv_msg_size), None);
            let response = grpc.unary(ExportMethod(this.receiver.clone()), request).await;
            // Held until answered: the request's memory counts until the engine is done with it.
            drop(admitted);
            Ok(response)
        })
    }
}
