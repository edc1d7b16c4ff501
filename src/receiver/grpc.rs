//! OTLP/gRPC receiver.
//!
//! The service is wired by hand rather than with the generated `TraceServiceServer` for one reason: the generated
//! server decodes with tonic's protobuf codec, which answers a message that does not decode with INTERNAL (gRPC's
//! status table files "error parsing request proto" under it). INTERNAL reads as a fault of this server, while
//! the message is the sender's error; the receivers promise INVALID_ARGUMENT for it, as OTLP/HTTP answers 400.

use super::{ingest_status, response, sanitise};
use crate::pipeline::PipelineHandle;
use crate::telemetry::Counters;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use ordertrail_core::config::GrpcServerConfig;
use prost::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
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
    listener: TcpListener,
    config: GrpcServerConfig,
    pipeline: PipelineHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let mut compression = EnabledCompressionEncodings::default();
    compression.enable(CompressionEncoding::Gzip);
    let service = ExportService {
        receiver: Arc::new(Receiver { pipeline }),
        compression,
        // The limit applies after decompression, so it also bounds what a gzip bomb can expand to.
        max_recv_msg_size: config.max_recv_msg_size,
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, shutdown).await
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
    compression: EnabledCompressionEncodings,
    max_recv_msg_size: usize,
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
        let method = ExportMethod(self.receiver.clone());
        let mut grpc = tonic::server::Grpc::new(ExportCodec)
            .apply_compression_config(self.compression, self.compression)
            .apply_max_message_size_config(Some(self.max_recv_msg_size), None);
        Box::pin(async move { Ok(grpc.unary(method, request).await) })
    }
}
