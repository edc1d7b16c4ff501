//! Assembles a running ordertrail: store, pipeline, exporter and receivers, with an orderly shutdown.

use crate::api::{self, ApiState};
use crate::auth::{self, AuthError};
use crate::connections::{self, LimitedListener};
use crate::exporter::{ExportError, Exporter};
use crate::memory::{self, MemoryBounds};
use crate::metrics::{MetricsPusher, OrderMetrics};
use crate::pipeline::{ExportSink, Pipeline, PipelineHandle};
use crate::receiver;
use crate::receiver::admission::Admission;
use crate::store::{Durability, OrderStore, PostgresStore, RedbStore, StoreError};
use crate::telemetry::Counters;
use crate::tls::{Alpn, ServerTls, TlsError};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use ordertrail_core::config::{Config, ConnectionLimits, ServerTlsConfig};
use ordertrail_core::engine::EngineStats;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("`{key}`: {source}")]
    Tls { key: &'static str, source: Box<TlsError> },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Notifier(#[from] crate::notifier::NotifierError),
}

/// A listener's TLS, loaded and watched for changes, when its section has one.
fn listener_tls(
    key: &'static str,
    config: Option<&ServerTlsConfig>,
    alpn: Alpn,
) -> Result<Option<Arc<ServerTls>>, ServerError> {
    let Some(config) = config else { return Ok(None) };
    let tls = ServerTls::load(config, alpn).map_err(|source| ServerError::Tls { key, source: Box::new(source) })?;
    tls.watch(key);
    Ok(Some(tls))
}

const MIB: u64 = 1024 * 1024;

/// The resource of ordertrail's own metrics.
fn own_resource(config: &Config) -> Resource {
    let string = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    };
    Resource {
        attributes: vec![
            string("service.name", &config.order_traces.service_name),
            string("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    }
}

#[derive(Debug)]
pub struct Server {
    /// Where OTLP/gRPC is served, when enabled (the real port when the config asked for port 0).
    pub grpc_addr: Option<SocketAddr>,
    /// Where OTLP/HTTP is served, when enabled.
    pub http_addr: Option<SocketAddr>,
    /// Where the HTTP/JSON order API, `/metrics` and the health endpoints are served, when enabled.
    pub api_http_addr: Option<SocketAddr>,
    /// Where the gRPC order API is served, when enabled.
    pub api_grpc_addr: Option<SocketAddr>,
    ready: Arc<AtomicBool>,
    metrics_pusher: Option<MetricsPusher>,
    metrics: Arc<OrderMetrics>,
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
        let store: Box<dyn OrderStore> = match &config.storage.postgres {
            Some(postgres) => Box::new(PostgresStore::open(
                postgres,
                config.storage.durability,
                config.correlation.max_orders_per_alias,
            )?),
            None => Box::new(RedbStore::open_with_cache(
                &config.storage.directory,
                config.storage.durability,
                config.storage.cache_bytes,
            )?),
        };
        if config.storage.durability == Durability::Memory {
            tracing::warn!("storage.durability is memory: a crash may lose acknowledged spans");
        }
        let (exporter, sink) = match (&config.exporter, config.storage.durability) {
            (None, _) => (None, ExportSink::None),
            (Some(e), Durability::Durable) => {
                let wake = Arc::new(Notify::new());
                let exporter =
                    Exporter::start_from_queue(e.clone(), counters.clone(), store.export_queue(), wake.clone())?;
                let sink =
                    ExportSink::Queue { wake, max_bytes: e.max_queue_bytes, max_spans_per_entry: e.send_batch_size };
                (Some(exporter), sink)
            }
            (Some(e), Durability::Memory) => {
                let exporter = Exporter::start(e.clone(), counters.clone())?;
                let sink = ExportSink::Memory {
                    export: exporter.sender().expect("memory exporter has a channel"),
                    max_spans_per_entry: e.send_batch_size,
                };
                (Some(exporter), sink)
            }
        };
        let metrics = Arc::new(OrderMetrics::new(config.clone()));
        let bounds = MemoryBounds::resolve(&config.pipeline, memory::container_limit());
        tracing::info!(
            limit_mib = bounds.limit.map(|b| b / MIB),
            refuse_above_mib = bounds.soft_limit.map(|b| b / MIB),
            admission_mib = bounds.admission / MIB,
            source = bounds.source,
            "memory bounds"
        );
        let notifications = store.notification_queue();
        let pipeline =
            Pipeline::start(config.clone(), store, sink, counters.clone(), metrics.clone(), bounds.soft_limit)?;
        let admission = Admission::new(bounds.admission, counters.clone());
        let open_files = connections::raise_open_file_limit();
        let listeners = [
            config.receivers.grpc.is_some(),
            config.receivers.http.is_some(),
            config.api.http.is_some(),
            config.api.grpc.is_some(),
        ]
        .iter()
        .filter(|on| **on)
        .count();
        let limited = |listener: tokio::net::TcpListener, mut limits: ConnectionLimits| {
            limits.max_connections = connections::fit_to_open_files(limits.max_connections, listeners, open_files);
            LimitedListener::new(listener, limits, counters.clone())
        };
        // Every certificate and token is loaded before anything is served, so that a bad file stops startup with
        // no listener left running.
        let grpc_tls = match &config.receivers.grpc {
            Some(grpc) => listener_tls("receivers.otlp.protocols.grpc.tls", grpc.tls.as_ref(), Alpn::Http2)?,
            None => None,
        };
        let http_tls = match &config.receivers.http {
            Some(http) => listener_tls("receivers.otlp.protocols.http.tls", http.tls.as_ref(), Alpn::Http1)?,
            None => None,
        };
        let grpc_tokens = auth::load(config.receivers.grpc.as_ref().and_then(|g| g.auth.as_ref()))?;
        let http_tokens = auth::load(config.receivers.http.as_ref().and_then(|h| h.auth.as_ref()))?;
        let api_http_tls = listener_tls("api.http.tls", config.api.http_tls.as_ref(), Alpn::Http1)?;
        let api_grpc_tls = listener_tls("api.grpc.tls", config.api.grpc_tls.as_ref(), Alpn::Http2)?;
        let api_tokens = auth::load(config.api.auth.as_ref())?;
        if let Some(tokens) = &api_tokens {
            let taxonomy = &config.taxonomy;
            let owns = |team: &str| {
                taxonomy.milestones.iter().any(|m| m.owner == team) || taxonomy.classes.iter().any(|c| c.owner == team)
            };
            if let Some(team) = tokens.teams().find(|team| !owns(team)) {
                return Err(auth::AuthError::UnknownTeam { key: "api.auth".into(), team: team.to_string() }.into());
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        // The endpoints from the environment are read here, so that a missing one stops startup with its key.
        if let Some(task) = crate::notifier::start(&config, notifications, counters.clone(), stop_rx.clone())? {
            tasks.push(task);
        }
        let mut grpc_addr = None;
        if let Some(grpc) = config.receivers.grpc.clone() {
            let (listener, addr) = bind(grpc.endpoint).await?;
            grpc_addr = Some(addr);
            let listener = limited(listener, grpc.connections).with_tls(grpc_tls);
            let shared = (pipeline.handle(), admission.clone(), grpc_tokens);
            let shutdown = stopped(stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = receiver::grpc::serve(listener, grpc, shared, shutdown).await {
                    tracing::error!(error = %e, "OTLP/gRPC receiver stopped");
                }
            }));
        }
        let mut http_addr = None;
        if let Some(http) = config.receivers.http.clone() {
            let (listener, addr) = bind(http.endpoint).await?;
            http_addr = Some(addr);
            let listener = limited(listener, http.connections).with_tls(http_tls);
            let shared = (pipeline.handle(), admission.clone(), http_tokens);
            let shutdown = stopped(stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = receiver::http::serve(listener, http, shared, shutdown).await {
                    tracing::error!(error = %e, "OTLP/HTTP receiver stopped");
                }
            }));
        }
        let ready = Arc::new(AtomicBool::new(false));
        let state = ApiState {
            pipeline: pipeline.handle(),
            config: config.clone(),
            metrics: metrics.clone(),
            ready: ready.clone(),
            store_healthy: pipeline.store_healthy(),
            auth: api_tokens,
        };
        let mut api_http_addr = None;
        if let Some(endpoint) = config.api.http {
            let (listener, addr) = bind(endpoint).await?;
            api_http_addr = Some(addr);
            let listener = limited(listener, ConnectionLimits::default()).with_tls(api_http_tls);
            let (state, shutdown) = (state.clone(), stopped(stop_rx.clone()));
            tasks.push(tokio::spawn(async move {
                if let Err(e) = api::http::serve(listener, state, shutdown).await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            }));
        }
        let mut api_grpc_addr = None;
        if let Some(endpoint) = config.api.grpc {
            let (listener, addr) = bind(endpoint).await?;
            api_grpc_addr = Some(addr);
            let listener = limited(listener, ConnectionLimits::default()).with_tls(api_grpc_tls);
            let (state, shutdown) = (state.clone(), stopped(stop_rx.clone()));
            tasks.push(tokio::spawn(async move {
                if let Err(e) = api::grpc::serve(listener, state, shutdown).await {
                    tracing::error!(error = %e, "gRPC API stopped");
                }
            }));
        }
        let metrics_pusher = match &config.metrics.push {
            Some(push) => Some(MetricsPusher::start(
                push.export.clone(),
                push.interval,
                metrics.registry().clone(),
                own_resource(&config),
            )?),
            None => None,
        };
        ready.store(true, Ordering::Relaxed);
        let listening = |addr: Option<SocketAddr>, tls: bool, auth: bool| match addr {
            Some(addr) => format!(
                "{addr}{}{}",
                if tls { " (TLS)" } else { " (plain text)" },
                if auth { ", bearer token required" } else { "" }
            ),
            None => "off".to_string(),
        };
        let receivers = &config.receivers;
        let api_auth = config.api.auth.is_some();
        tracing::info!(
            otlp_grpc = %listening(grpc_addr, receivers.grpc.as_ref().is_some_and(|g| g.tls.is_some()), receivers.grpc.as_ref().is_some_and(|g| g.auth.is_some())),
            otlp_http = %listening(http_addr, receivers.http.as_ref().is_some_and(|h| h.tls.is_some()), receivers.http.as_ref().is_some_and(|h| h.auth.is_some())),
            api_http = %listening(api_http_addr, config.api.http_tls.is_some(), api_auth),
            api_grpc = %listening(api_grpc_addr, config.api.grpc_tls.is_some(), api_auth),
            export_to = %config.exporter.as_ref().map_or("nowhere (no exporters.otlp)".to_string(), |e| e.endpoint.clone()),
            config = %config.source,
            "ordertrail listening"
        );
        Ok(Server {
            grpc_addr,
            http_addr,
            api_http_addr,
            api_grpc_addr,
            ready,
            metrics_pusher,
            metrics,
            pipeline,
            exporter,
            stop,
            tasks,
            counters,
        })
    }

    pub fn pipeline(&self) -> PipelineHandle {
        self.pipeline.handle()
    }

    /// The engine's counters as of now, asked on the engine thread; the defaults once it has stopped.
    pub async fn engine_stats(&self) -> EngineStats {
        self.pipeline().inspect(|engine| engine.stats().clone()).await.unwrap_or_default()
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub fn metrics(&self) -> &Arc<OrderMetrics> {
        &self.metrics
    }

    /// Stops intake, lets the engine finish what it holds, then drains the exporter, all within `deadline`.
    /// Whatever cannot be exported by then (a backend that is down) is given up on and counted, never waited
    /// for past the deadline.
    /// Stops intake, lets the engine commit what it holds and the exporter drain within `deadline`; returns the
    /// engine's final counters (the defaults if the engine thread did not end normally).
    pub async fn shutdown(self, deadline: Duration) -> EngineStats {
        let end = tokio::time::Instant::now() + deadline;
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout_at(end, &mut task).await.is_err() {
                task.abort();
            }
        }
        let abort_export = self.exporter.as_ref().map(Exporter::abort_handle);
        let pipeline = self.pipeline.shutdown();
        tokio::pin!(pipeline);
        let stats = match tokio::time::timeout_at(end, &mut pipeline).await {
            Ok(stats) => stats,
            Err(_) => {
                // The engine is blocked handing spans to a stuck exporter; stopping the exporter unblocks it.
                tracing::warn!("shutdown deadline reached with spans still waiting for the exporter");
                if let Some(abort) = &abort_export {
                    abort.abort();
                }
                tokio::time::timeout(Duration::from_secs(2), pipeline).await.ok().flatten()
            }
        };
        if let Some(exporter) = self.exporter {
            exporter.shutdown(end.saturating_duration_since(tokio::time::Instant::now())).await;
        }
        if let Some(pusher) = self.metrics_pusher {
            // One last push carries the final counts; it is bounded by the push timeout.
            let _ = tokio::time::timeout_at(end, pusher.shutdown()).await;
        }
        tracing::info!("ordertrail stopped");
        stats.unwrap_or_default()
    }
}
