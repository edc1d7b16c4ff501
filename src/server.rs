//! Assembles a running ordertrail: store, pipeline, exporter and receivers, with an orderly shutdown.

use crate::config::Config;
use crate::exporter::{ExportError, Exporter};
use crate::pipeline::{Pipeline, PipelineHandle};
use crate::receiver;
use crate::store::{RedbStore, StoreError};
use crate::telemetry::Counters;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Export(#[from] ExportError),
}

pub struct Server {
    /// Where OTLP/gRPC is served, when enabled (the real port when the config asked for port 0).
    pub grpc_addr: Option<SocketAddr>,
    /// Where OTLP/HTTP is served, when enabled.
    pub http_addr: Option<SocketAddr>,
    pipeline: Pipeline,
    exporter: Option<Exporter>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// Binds before serving starts, so that a taken port fails startup and port 0 reports the real port.
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, bound))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Server {
    /// Opens the store, loads state, and starts exporting and listening.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let store = RedbStore::open(&config.storage.directory)?;
        let exporter = config.exporter.clone().map(|e| Exporter::start(e, counters.clone())).transpose()?;
        let pipeline = Pipeline::start(
            config.clone(),
            Box::new(store),
            exporter.as_ref().map(Exporter::sender),
            counters.clone(),
        )?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut grpc_addr = None;
        if let Some(grpc) = config.receivers.grpc.clone() {
            let (listener, addr) = bind(grpc.endpoint).await?;
            grpc_addr = Some(addr);
            let handle = pipeline.handle();
            let shutdown = stopped(stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = receiver::grpc::serve(listener, grpc, handle, shutdown).await {
                    tracing::error!(error = %e, "OTLP/gRPC receiver stopped");
                }
            }));
        }
        let mut http_addr = None;
        if let Some(http) = config.receivers.http.clone() {
            let (listener, addr) = bind(http.endpoint).await?;
            http_addr = Some(addr);
            let handle = pipeline.handle();
            let shutdown = stopped(stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = receiver::http::serve(listener, http, handle, shutdown).await {
                    tracing::error!(error = %e, "OTLP/HTTP receiver stopped");
                }
            }));
        }
        tracing::info!(grpc = ?grpc_addr, http = ?http_addr, config = %config.source, "ordertrail listening");
        Ok(Server { grpc_addr, http_addr, pipeline, exporter, stop, tasks, counters })
    }

    pub fn pipeline(&self) -> PipelineHandle {
        self.pipeline.handle()
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Stops intake, lets the engine finish what it holds, then drains the exporter, all within `deadline`.
    /// Whatever cannot be exported by then (a backend that is down) is given up on and counted, never waited
    /// for past the deadline.
    pub async fn shutdown(self, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        let _ = self.stop.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout_at(end, &mut task).await.is_err() {
                task.abort();
            }
        }
        let abort_export = self.exporter.as_ref().map(Exporter::abort_handle);
        let pipeline = self.pipeline.shutdown();
        tokio::pin!(pipeline);
        if tokio::time::timeout_at(end, &mut pipeline).await.is_err() {
            // The engine is blocked handing spans to a stuck exporter; stopping the exporter unblocks it.
            tracing::warn!("shutdown deadline reached with spans still waiting for the exporter");
            if let Some(abort) = &abort_export {
                abort.abort();
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), pipeline).await;
        }
        if let Some(exporter) = self.exporter {
            exporter.shutdown(end.saturating_duration_since(tokio::time::Instant::now())).await;
        }
        tracing::info!("ordertrail stopped");
    }
}
