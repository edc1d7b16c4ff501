//! The simulated systems: one OpenTelemetry SDK tracer provider each, and the helpers that lay their spans out on
//! the simulated clock.

use super::*;

/// One simulated system: a provider of its own, as a separately deployed process would have.
pub(crate) struct System {
    pub(crate) service: &'static str,
    pub(crate) provider: SdkTracerProvider,
    pub(crate) tracer: SdkTracer,
}

impl System {
    pub(crate) fn new(service: &'static str, scope: &'static str, endpoint: &str) -> Result<Self, SimulatorError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|source| SimulatorError::Exporter { service, endpoint: endpoint.to_owned(), source })?;
        // The resource starts empty rather than from the environment detectors, so that an
        // OTEL_RESOURCE_ATTRIBUTES or OTEL_SERVICE_NAME meant for ordertrail itself cannot leak
        // into the simulated systems; only the SDK's own telemetry.sdk.* attributes are added.
        let resource = Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_attributes([
                KeyValue::new("service.name", service),
                KeyValue::new("service.namespace", SERVICE_NAMESPACE),
                KeyValue::new("deployment.environment.name", DEPLOYMENT_ENVIRONMENT),
            ])
            .build();
        let provider = SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build();
        let tracer =
            provider.tracer_with_scope(InstrumentationScope::builder(scope).with_version(SCOPE_VERSION).build());
        Ok(Self { service, provider, tracer })
    }

    /// Starts a span at `start` under `parent` and returns a context holding it, so that children
    /// can be started under it and it can be ended later with its own timestamp.
    pub(crate) fn start(
        &self,
        parent: &Context,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        start: SystemTime,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// Records a complete span that runs from `start` for `duration` and has no status of its own.
    pub(crate) fn record(
        &self,
        parent: &Context,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        start: SystemTime,
        duration: Duration,
        attributes: Vec<KeyValue>,
    ) {
        let cx = self.start(parent, name, kind, start, attributes);
        end(&cx, start + duration);
    }

    /// Records a complete span like [`System::record`], but failed with `description`. Every failed
    /// step of the seed scenario is an internal span that starts its own technical trace, so those
    /// are not parameters.
    pub(crate) fn record_failed(
        &self,
        name: impl Into<Cow<'static, str>>,
        start: SystemTime,
        duration: Duration,
        attributes: Vec<KeyValue>,
        description: &'static str,
    ) {
        let cx = self.start(&root(), name, SpanKind::Internal, start, attributes);
        fail(&cx, description);
        end(&cx, start + duration);
    }
}

impl Systems {
    /// The system whose `service.name` is `service`.
    pub(crate) fn by_service(&self, service: &str) -> Option<&System> {
        [&self.portal, &self.erp, &self.middleware, &self.wms, &self.tms, &self.edi, &self.finance]
            .into_iter()
            .find(|s| s.service == service)
    }
}

/// Records one step of a history as its system would: a span of its own technical trace, failed when the step
/// failed.
pub(crate) fn play(systems: &Systems, step: &crate::history::HistoryStep) {
    let Some(system) = systems.by_service(step.system) else { return };
    let attributes = step
        .attributes
        .iter()
        .map(|(key, value)| match value {
            crate::history::StepValue::Text(v) => KeyValue::new(*key, v.clone()),
            crate::history::StepValue::Int(v) => KeyValue::new(*key, *v),
            crate::history::StepValue::Float(v) => KeyValue::new(*key, *v),
        })
        .collect();
    let start = UNIX_EPOCH + Duration::from_nanos(step.start_unix_nanos);
    let cx = system.start(&root(), step.name, SpanKind::Internal, start, attributes);
    if let Some(error) = &step.error {
        cx.span().set_status(Status::error(error.clone()));
    }
    end(&cx, start + step.duration);
}

/// The seven simulated systems of the distributor.
pub(crate) struct Systems {
    pub(crate) portal: System,
    pub(crate) erp: System,
    pub(crate) middleware: System,
    pub(crate) wms: System,
    pub(crate) tms: System,
    pub(crate) edi: System,
    pub(crate) finance: System,
}

impl Systems {
    pub(crate) fn new(endpoint: &str) -> Result<Self, SimulatorError> {
        Ok(Self {
            portal: System::new("customer-portal", "customer-portal-web", endpoint)?,
            erp: System::new("erp", "erp-order-api", endpoint)?,
            middleware: System::new("integration-middleware", "middleware-flow-engine", endpoint)?,
            wms: System::new("wms", "wms-fulfilment", endpoint)?,
            tms: System::new("tms", "tms-carrier-connector", endpoint)?,
            edi: System::new("edi-gateway", "edi-gateway-outbound", endpoint)?,
            finance: System::new("finance", "finance-billing", endpoint)?,
        })
    }

    /// Flushes the systems one after the other in the order of the business flow, then shuts them
    /// all down.
    ///
    /// Flushing in flow order means that ordertrail normally sees a span that introduces a key (the
    /// WMS's delivery, the TMS's shipment) before the spans that only carry that key, which keeps
    /// the demo's first impression clean; ordertrail must still cope with any other order. Flushing
    /// stops at the first failure, because a receiver that refused one system's spans will refuse
    /// the others', and every further flush would only wait for its own timeout. The shutdowns run
    /// in parallel for the same reason, and all of them run even after a failure so that no
    /// exporter is left behind.
    pub(crate) async fn flush_and_shut_down(self) -> Result<(), SimulatorError> {
        let systems = [self.portal, self.erp, self.middleware, self.wms, self.tms, self.edi, self.finance];

        let mut first_error = None;
        for system in &systems {
            let service = system.service;
            let provider = system.provider.clone();
            // force_flush blocks until the batch processor's thread has exported, and that export
            // needs the runtime's workers to drive the gRPC connection, so it must not occupy a
            // worker itself.
            let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
            let error = match flushed {
                Ok(Ok(())) => continue,
                Ok(Err(source)) => SimulatorError::Flush { service, source },
                Err(source) => SimulatorError::ExportTask { service, source },
            };
            first_error = Some(error);
            break;
        }

        let shutdowns: Vec<_> = systems
            .iter()
            .map(|system| {
                let service = system.service;
                let provider = system.provider.clone();
                (service, tokio::task::spawn_blocking(move || provider.shutdown()))
            })
            .collect();
        for (service, shutdown) in shutdowns {
            let error = match shutdown.await {
                Ok(Ok(())) => continue,
                Ok(Err(source)) => SimulatorError::Shutdown { service, source },
                Err(source) => SimulatorError::ExportTask { service, source },
            };
            first_error.get_or_insert(error);
        }

        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The parent of every technical trace's first span. An empty context rather than
/// `Context::current()`, so that whatever context the caller's thread happens to have attached can
/// never turn a simulated system's trace into a child of ordertrail's own.
pub(crate) fn root() -> Context {
    Context::new()
}

pub(crate) fn end(cx: &Context, at: SystemTime) {
    cx.span().end_with_timestamp(at);
}

pub(crate) fn fail(cx: &Context, description: &'static str) {
    cx.span().set_status(Status::error(description));
}

pub(crate) fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(crate) fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

pub(crate) fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3_600)
}

pub(crate) fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}
