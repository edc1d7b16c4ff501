//! OTLP/gRPC receiver.

use super::{ingest_status, response, sanitise};
use crate::config::GrpcServerConfig;
use crate::pipeline::PipelineHandle;
use crate::telemetry::Counters;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
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
    let service = TraceServiceServer::new(Receiver { pipeline })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        // The limit applies after decompression, so it also bounds what a gzip bomb can expand to.
        .max_decoding_message_size(config.max_recv_msg_size);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, shutdown).await
}
