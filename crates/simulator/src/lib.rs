//! The built-in order-to-cash simulator behind `ordertrail demo`.
//!
//! A distributor's order passes through several systems that know nothing of each other: the
//! customer portal captures it, the ERP checks credit and pricing and releases it, integration
//! middleware maps it for the warehouse, the WMS allocates, picks and packs it, the TMS books a
//! carrier, the EDI gateway sends the advance shipping notice and finance invoices it. Each of
//! those systems emits its own technical traces, and ordertrail's job is to stitch them into one
//! business trace per order. This module plays those seven systems so that the stitching can be
//! shown without any real ERP or WMS.
//!
//! It deliberately goes through the real OpenTelemetry SDK and the OTLP/gRPC exporter, one
//! `SdkTracerProvider` per system with its own `service.name`, because that is exactly what
//! ordertrail receives in production: separate processes, separate resources and separate technical
//! traces that share nothing but business keys. Every span carries explicit start and end
//! timestamps laid out over two simulated business days from [`SimulatorOptions::base_time`], so
//! that the resulting order traces show realistic gaps (milliseconds for API calls, minutes to
//! hours between steps) while the demo itself finishes in a second.
//!
//! The runs contain:
//! - the seed order `SO-10042`, which goes wrong in every way ordertrail is meant to explain: a
//!   line substitution, a pricing exception approved by e-mail outside the ERP, an allocation from
//!   a day-old inventory snapshot, a short pick, a carrier status update that the middleware fails
//!   to map, and an invoice that is therefore held;
//! - a number of happy orders `SO-20001`, `SO-20002`, … that pass every step, the last two of which
//!   share a consolidated shipment and a batch invoice so that multi-order spans are shown too;
//! - one uncorrelated health check, which ordertrail must leave out of every order.
//!
//! The span names and attributes follow the vocabulary of ordertrail's default configuration
//! (`crates/core/src/config/default.yaml`): changing one here means checking the rules there.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{ExporterBuildError, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// The order that tells the demo's story; its number is also used for its delivery, shipment and
/// invoice.
const SEED_ORDER_NUMBER: u32 = 10042;

/// Happy orders are numbered from here on, so that their ids never collide with the seed order's.
const HAPPY_ORDER_BASE_NUMBER: u32 = 20000;

/// The shipment that carries the last two happy orders together.
const CONSOLIDATED_SHIPMENT_ID: &str = "SH-CONS-1";

/// The advance shipping notice sent for the consolidated shipment, and its EDI interchange number,
/// which is outside the range of the per-order numbers so that it never aliases a single order.
const CONSOLIDATED_ASN_ID: &str = "ASN-CONS-1";
const CONSOLIDATED_CONTROL_NUMBER: u32 = 90_001;

const SERVICE_NAMESPACE: &str = "distribution";
const DEPLOYMENT_ENVIRONMENT: &str = "demo";

/// The simulated systems report this as their instrumentation version; it only has to look
/// plausible.
const SCOPE_VERSION: &str = "1.0.0";

const PRICE_VARIANCE_ERROR: &str = "price variance 7.5% above tolerance";
const SHORT_PICK_ERROR: &str = "short pick: 16 units not found at location";
const SHIP_DATE_MAPPING_ERROR: &str = "field ShipDate: expected yyyy-MM-dd, got 11/26/2026";
const INVOICE_HOLD_ERROR: &str = "invoice blocked: no shipment confirmation";

/// What `ordertrail demo` asks the simulator to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorOptions {
    /// The OTLP/gRPC endpoint the spans are exported to, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// How many orders pass every step without an exception (5 by default).
    pub happy_orders: usize,
    /// The start of the first simulated business day; every span is timestamped from here on.
    pub base_time: SystemTime,
}

impl Default for SimulatorOptions {
    /// Points at a local receiver and starts the simulated days at 08:00 UTC two days ago, so that
    /// the two simulated business days lie entirely in the past whenever the demo is run.
    fn default() -> Self {
        let today_start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400 * 86_400;
        let base_secs = today_start.saturating_sub(2 * 86_400) + 8 * 3_600;
        Self {
            endpoint: "http://127.0.0.1:4317".to_owned(),
            happy_orders: 5,
            base_time: UNIX_EPOCH + Duration::from_secs(base_secs),
        }
    }
}

/// What a simulator run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedOrders {
    /// Every order id the run touched, the seed scenario's first, then the happy orders in
    /// sequence.
    pub order_ids: Vec<String>,
}

/// Why a simulator run failed.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// An empty endpoint would make the exporter fall back to environment variables or its built-in
    /// default, silently sending the demo somewhere the caller did not ask for.
    #[error("the otlp endpoint is empty")]
    EmptyEndpoint,
    #[error("cannot build the otlp/grpc span exporter of {service} for {endpoint}")]
    Exporter {
        service: &'static str,
        endpoint: String,
        #[source]
        source: ExporterBuildError,
    },
    #[error("cannot flush the spans of {service}")]
    Flush {
        service: &'static str,
        #[source]
        source: OTelSdkError,
    },
    #[error("cannot shut down the tracer provider of {service}")]
    Shutdown {
        service: &'static str,
        #[source]
        source: OTelSdkError,
    },
    #[error("the export task of {service} did not complete")]
    ExportTask {
        service: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Sends the seed scenario, the health check and `options.happy_orders` happy orders to
/// `options.endpoint`, then flushes and shuts down every simulated system.
///
/// It must be called inside a tokio runtime, because the gRPC exporters' connections are driven by
/// that runtime while the SDK's batch processors block their own threads waiting for them. The
/// blocking flushes and shutdowns run on tokio's blocking pool, so no runtime worker is held up and
/// even a runtime with a single worker keeps driving the exports.
pub async fn run(options: &SimulatorOptions) -> Result<SimulatedOrders, SimulatorError> {
    if options.endpoint.trim().is_empty() {
        return Err(SimulatorError::EmptyEndpoint);
    }
    tracing::info!(
        endpoint = %options.endpoint,
        happy_orders = options.happy_orders,
        "simulating a distributor's systems"
    );

    let systems = Systems::new(&options.endpoint)?;
    let base = options.base_time;

    let mut order_ids = vec![order_id(SEED_ORDER_NUMBER)];
    seed_scenario(&systems, base);
    health_check(&systems, base + minutes(2));
    order_ids.extend(happy_orders(&systems, base, options.happy_orders));

    systems.flush_and_shut_down().await?;
    tracing::info!(orders = order_ids.len(), "simulated orders sent");
    Ok(SimulatedOrders { order_ids })
}

/// One simulated system: a provider of its own, as a separately deployed process would have.
struct System {
    service: &'static str,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl System {
    fn new(service: &'static str, scope: &'static str, endpoint: &str) -> Result<Self, SimulatorError> {
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
    fn start(
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
    fn record(
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
    fn record_failed(
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

/// The seven simulated systems of the distributor.
struct Systems {
    portal: System,
    erp: System,
    middleware: System,
    wms: System,
    tms: System,
    edi: System,
    finance: System,
}

impl Systems {
    fn new(endpoint: &str) -> Result<Self, SimulatorError> {
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
    async fn flush_and_shut_down(self) -> Result<(), SimulatorError> {
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

/// The business facts of one happy order, all derived from its position so that every run of the
/// demo shows the same orders.
struct HappyOrder {
    /// The order's number, e.g. 20001; its delivery, shipment, notice and invoice reuse it.
    number: u32,
    id: String,
    customer: String,
    segment: &'static str,
    lines: i64,
    warehouse: &'static str,
    quantity: i64,
    amount: f64,
    credit_utilisation: f64,
    carrier: &'static str,
}

impl HappyOrder {
    fn new(position: u32) -> Self {
        let number = HAPPY_ORDER_BASE_NUMBER + position;
        let odd = position % 2 == 1;
        let quantity = 20 + position * 12 % 60;
        // Unit prices are whole cents so that the amounts look like real invoice totals.
        let unit_price_cents = 4_250 + position % 7 * 385;
        Self {
            number,
            id: order_id(number),
            customer: format!("C-{}", 100 + position),
            segment: if odd { "key-account" } else { "standard" },
            lines: 3 + i64::from(position * 5 % 9),
            warehouse: if odd { "WH-EAST" } else { "WH-WEST" },
            quantity: i64::from(quantity),
            amount: f64::from(quantity * unit_price_cents) / 100.0,
            // Whole percentages, so that the exported values read like the ERP's own figures.
            credit_utilisation: f64::from(35 + position % 5 * 8) / 100.0,
            carrier: if odd { "NorthFreight" } else { "Baltic Road Lines" },
        }
    }
}

/// Plays order `SO-10042`, in which every step that ordertrail should flag goes wrong.
fn seed_scenario(systems: &Systems, base: SystemTime) {
    let number = SEED_ORDER_NUMBER;
    let order = order_id(number);
    let delivery = format!("DL-{number}");
    let shipment = format!("SH-{number}");

    // (a) The regional distributor's order is captured and its credit is approved as usual.
    let mut t = base + minutes(9);
    capture(systems, &order, "C-REG-7", "regional-distributor", 12, t);
    t += minutes(3) + seconds(14);
    credit_check(systems, &order, 0.81, t);

    // (b) A line is substituted because the ordered article is discontinued, which changes its
    // price.
    t += minutes(6);
    systems.erp.record(
        &root(),
        "order.line.substitute",
        SpanKind::Internal,
        t,
        millis(35),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("product.substituted_from", "SKU-4410"),
            KeyValue::new("product.substituted_to", "SKU-4412"),
        ],
    );

    // (c) The pricing check that follows the substitution finds the new price outside tolerance.
    t += seconds(2);
    systems.erp.record_failed(
        "pricing.check",
        t,
        millis(120),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("pricing.decision", "exception"),
            KeyValue::new("pricing.variance_pct", 7.5),
        ],
        PRICE_VARIANCE_ERROR,
    );

    // (d) Two hours later a pricing manager approves it by e-mail, and a clerk keys the approval
    // into the ERP without the approval itself ever reaching the system of record.
    t += hours(2) + minutes(10);
    systems.erp.record(
        &root(),
        "pricing.approve",
        SpanKind::Internal,
        t,
        millis(48),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("approval.channel", "email"),
            KeyValue::new("enduser.id", "j.moreau@regional-distributor.example"),
            KeyValue::new("pricing.decision", "approved_offline"),
            KeyValue::new("erp.sync.status", "not_synchronized"),
        ],
    );

    // (e) The order is released to the warehouse through the middleware like any other.
    t += minutes(25);
    release(systems, &order, t);

    // (f) The WMS allocates against yesterday's inventory snapshot because the live feed is down.
    t += minutes(4);
    systems.wms.record(
        &root(),
        "inventory.allocate",
        SpanKind::Internal,
        t,
        millis(390),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("warehouse.id", "WH-EAST"),
            KeyValue::new("inventory.snapshot_age_s", 86_400_i64),
            KeyValue::new("wms.allocation.source", "cached_snapshot"),
        ],
    );

    // (g) The stale allocation sends the picker to an empty location, so only part of the order is
    // picked, and what was picked is packed into a delivery.
    t += hours(3) + minutes(5);
    systems.wms.record_failed(
        "pick.confirm",
        t,
        millis(1_350),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("wms.pick.status", "partial"),
            KeyValue::new("order.quantity.ordered", 40_i64),
            KeyValue::new("order.quantity.picked", 24_i64),
        ],
        SHORT_PICK_ERROR,
    );
    t += minutes(40);
    pack(systems, &order, &delivery, t);

    // (h) The TMS books a carrier for the delivery.
    t += minutes(25);
    book_carrier(systems, &delivery, &shipment, "NorthFreight", t);

    // (i) The next morning the carrier's pickup reaches the TMS, whose status update the middleware
    // cannot map for the ERP. The middleware accepts the call before mapping it, so the TMS sees
    // success and nobody retries; no shipment.pickup.confirm ever follows.
    let update = base + days(1) + hours(1) + minutes(40);
    let status_update = systems.tms.start(
        &root(),
        "PUT /api/shipments/{id}/status",
        SpanKind::Client,
        update,
        vec![
            KeyValue::new("http.request.method", "PUT"),
            KeyValue::new("url.path", format!("/api/shipments/{shipment}/status")),
            KeyValue::new("http.route", "/api/shipments/{id}/status"),
            KeyValue::new("http.response.status_code", 202_i64),
        ],
    );
    let mapping_start = update + millis(61);
    let mapping = systems.middleware.start(
        &status_update,
        "map carrier.status -> erp.shipment_confirmation",
        SpanKind::Internal,
        mapping_start,
        vec![
            KeyValue::new("mapping.source", "carrier.status"),
            KeyValue::new("mapping.target", "erp.shipment_confirmation"),
        ],
    );
    mapping.span().add_event_with_timestamp(
        "exception",
        mapping_start + millis(28),
        vec![
            KeyValue::new("exception.type", "MappingError"),
            KeyValue::new("exception.message", SHIP_DATE_MAPPING_ERROR),
        ],
    );
    fail(&mapping, SHIP_DATE_MAPPING_ERROR);
    end(&mapping, mapping_start + millis(34));
    end(&status_update, update + millis(180));

    // (j) When finance comes to invoice the order at midday, it cannot bill a shipment that the ERP
    // never saw confirmed.
    systems.finance.record_failed(
        "invoice.hold",
        base + days(1) + hours(5),
        millis(210),
        vec![
            KeyValue::new("order.id", order),
            KeyValue::new("invoice.id", format!("INV-{number}")),
            KeyValue::new("finance.hold.reason", "awaiting_shipment_confirmation"),
        ],
        INVOICE_HOLD_ERROR,
    );
}

/// Plays `count` orders that pass every step, the last two of which share a consolidated shipment
/// and a batch invoice, and returns their ids in sequence.
fn happy_orders(systems: &Systems, base: SystemTime, count: usize) -> Vec<String> {
    // Orders arrive every 35 minutes, or closer together when there are many of them, so that even
    // a long run stays inside the two simulated business days.
    let spacing = minutes(35).min(hours(8) / u32::try_from(count.max(1)).unwrap_or(u32::MAX));
    // The last two orders share a shipment and an invoice; a single order has nobody to share with.
    let consolidated = if count >= 2 { 2 } else { 0 };

    let mut ids = Vec::with_capacity(count);
    let mut packed = Vec::with_capacity(consolidated);
    // Carriers pick up on the second morning in the order the goods were packed, one slot per order,
    // and the consolidated shipment gets the slot after the last one.
    let mut day_two_slot = base + days(1) + minutes(45);
    for (index, position) in (1..=u32::try_from(count).unwrap_or(u32::MAX)).enumerate() {
        let order = HappyOrder::new(position);
        let packed_at = capture_to_pack(systems, &order, base + minutes(30) + spacing * position);
        if index + consolidated >= count {
            packed.push((order, packed_at));
        } else {
            ship_and_invoice(systems, &order, packed_at, day_two_slot);
            ids.push(order.id);
        }
        day_two_slot += spacing;
    }

    if let [(first, first_packed), (second, second_packed)] = packed.as_slice() {
        ship_and_invoice_consolidated(systems, [first, second], (*first_packed).max(*second_packed), day_two_slot);
    }
    ids.extend(packed.into_iter().map(|(order, _)| order.id));
    ids
}

/// Plays a happy order from capture to packing (steps 1 to 7) and returns when it was packed.
fn capture_to_pack(systems: &Systems, order: &HappyOrder, captured: SystemTime) -> SystemTime {
    let position = order.number - HAPPY_ORDER_BASE_NUMBER;
    let mut t = captured;
    capture(systems, &order.id, &order.customer, order.segment, order.lines, t);

    t += minutes(2) + seconds(13 * u64::from(position % 4));
    credit_check(systems, &order.id, order.credit_utilisation, t);

    t += minutes(12);
    systems.erp.record(
        &root(),
        "pricing.approve",
        SpanKind::Internal,
        t,
        millis(85),
        vec![KeyValue::new("order.id", order.id.clone()), KeyValue::new("pricing.decision", "approved")],
    );

    t += minutes(30);
    release(systems, &order.id, t);

    t += minutes(4);
    systems.wms.record(
        &root(),
        "inventory.allocate",
        SpanKind::Internal,
        t,
        millis(380),
        vec![
            KeyValue::new("order.id", order.id.clone()),
            KeyValue::new("warehouse.id", order.warehouse),
            KeyValue::new("inventory.snapshot_age_s", 120_i64),
            KeyValue::new("wms.allocation.status", "complete"),
        ],
    );

    // The WMS's own API is keyed by the order in its path only, which ordertrail reads through its
    // url.path pattern.
    t += minutes(50);
    systems.wms.record(
        &root(),
        "POST /api/orders/{id}/release",
        SpanKind::Server,
        t,
        millis(45),
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/api/orders/{id}/release"),
            KeyValue::new("url.path", format!("/api/orders/{}/release", order.id)),
            KeyValue::new("http.response.status_code", 200_i64),
        ],
    );

    t += hours(2) + minutes(30);
    systems.wms.record(
        &root(),
        "pick.confirm",
        SpanKind::Internal,
        t,
        millis(1_100),
        vec![
            KeyValue::new("order.id", order.id.clone()),
            KeyValue::new("wms.pick.status", "complete"),
            KeyValue::new("order.quantity.ordered", order.quantity),
            KeyValue::new("order.quantity.picked", order.quantity),
        ],
    );

    t += minutes(35);
    pack(systems, &order.id, &format!("DL-{}", order.number), t);
    t + millis(250)
}

/// Plays the rest of a happy order shipped on its own (steps 8 to 12): the carrier is booked soon
/// after packing on the first day, and picks the goods up on the second day at `pickup`.
fn ship_and_invoice(systems: &Systems, order: &HappyOrder, packed: SystemTime, pickup: SystemTime) {
    let number = order.number;
    let shipment = format!("SH-{number}");

    book_carrier(systems, &format!("DL-{number}"), &shipment, order.carrier, packed + minutes(25));
    confirm_pickup(systems, &shipment, Some((number, order.quantity)), pickup);
    send_asn(systems, &shipment, &format!("ASN-{number}"), number, pickup + minutes(8));

    let invoiced = pickup + minutes(45);
    systems.finance.record(
        &root(),
        "invoice.create",
        SpanKind::Internal,
        invoiced,
        millis(140),
        vec![
            KeyValue::new("order.id", order.id.clone()),
            KeyValue::new("invoice.id", format!("INV-{number}")),
            KeyValue::new("invoice.amount", order.amount),
            KeyValue::new("invoice.currency", "EUR"),
        ],
    );
    notify(systems, &order.id, invoiced + minutes(2));
}

/// Plays the shared end of two happy orders: one consolidated shipment, one notice, one batch
/// invoice.
fn ship_and_invoice_consolidated(
    systems: &Systems,
    orders: [&HappyOrder; 2],
    last_packed: SystemTime,
    pickup: SystemTime,
) {
    let order_ids =
        || Value::Array(Array::String(orders.iter().map(|order| StringValue::from(order.id.clone())).collect()));

    // The consolidated booking names its orders directly, because it replaces both deliveries' own
    // bookings and so has no single delivery to be resolved through.
    systems.tms.record(
        &root(),
        "carrier.book",
        SpanKind::Client,
        last_packed + minutes(25),
        millis(940),
        vec![
            KeyValue::new("shipment.id", CONSOLIDATED_SHIPMENT_ID),
            KeyValue::new("order.ids", order_ids()),
            KeyValue::new("carrier.name", "NorthFreight"),
        ],
    );
    confirm_pickup(systems, CONSOLIDATED_SHIPMENT_ID, None, pickup);
    send_asn(systems, CONSOLIDATED_SHIPMENT_ID, CONSOLIDATED_ASN_ID, CONSOLIDATED_CONTROL_NUMBER, pickup + minutes(8));

    let invoiced = pickup + hours(1);
    systems.finance.record(
        &root(),
        "invoice.batch.post",
        SpanKind::Internal,
        invoiced,
        millis(320),
        vec![
            KeyValue::new("order.ids", order_ids()),
            KeyValue::new("invoice.amount", orders.iter().map(|order| order.amount).sum::<f64>()),
            KeyValue::new("invoice.currency", "EUR"),
        ],
    );
    for (offset, order) in (0..).zip(orders) {
        notify(systems, &order.id, invoiced + minutes(2) + seconds(offset));
    }
}

/// Records the portal's order capture (step 1).
fn capture(systems: &Systems, order: &str, customer: &str, segment: &'static str, lines: i64, at: SystemTime) {
    systems.portal.record(
        &root(),
        "POST /api/orders",
        SpanKind::Server,
        at,
        millis(180 + 7 * u64::try_from(lines).unwrap_or(0)),
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/api/orders"),
            KeyValue::new("url.path", "/api/orders"),
            KeyValue::new("http.response.status_code", 201_i64),
            KeyValue::new("app.order.id", order.to_owned()),
            KeyValue::new("customer.id", customer.to_owned()),
            KeyValue::new("customer.segment", segment),
            KeyValue::new("order.lines", lines),
        ],
    );
}

/// Records the ERP's approved credit check (step 2).
fn credit_check(systems: &Systems, order: &str, utilisation: f64, at: SystemTime) {
    systems.erp.record(
        &root(),
        "credit.check",
        SpanKind::Internal,
        at,
        millis(410),
        vec![
            KeyValue::new("order.id", order.to_owned()),
            KeyValue::new("credit.decision", "approved"),
            KeyValue::new("credit.limit_utilisation", utilisation),
        ],
    );
}

/// Records the release of an order from the ERP to the warehouse as one technical trace (step 4).
///
/// Only the ERP's producer span names the order: the middleware's consumer and mapping spans carry
/// no business key, as in most real middleware, so ordertrail has to let them inherit the order
/// from their trace.
fn release(systems: &Systems, order: &str, at: SystemTime) {
    let publish = systems.erp.start(
        &root(),
        "publish orders.released",
        SpanKind::Producer,
        at,
        vec![
            KeyValue::new("order.id", order.to_owned()),
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", "orders.released"),
            KeyValue::new("messaging.operation.type", "send"),
        ],
    );
    // The producer is done as soon as the broker has the message; the consumer picks it up later,
    // so the producer ends before its child starts.
    end(&publish, at + millis(9));

    let consumed = at + millis(1_400);
    let process = systems.middleware.start(
        &publish,
        "process orders.released",
        SpanKind::Consumer,
        consumed,
        vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", "orders.released"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.consumer.group.name", "wms-bridge"),
        ],
    );
    systems.middleware.record(
        &process,
        "map ORDERS05 -> wms.order",
        SpanKind::Internal,
        consumed + millis(12),
        millis(31),
        vec![KeyValue::new("mapping.source", "ORDERS05"), KeyValue::new("mapping.target", "wms.order")],
    );
    end(&process, consumed + millis(64));
}

/// Records the WMS's pack confirmation, which is where an order first meets its delivery (step 7).
fn pack(systems: &Systems, order: &str, delivery: &str, at: SystemTime) {
    systems.wms.record(
        &root(),
        "pack.confirm",
        SpanKind::Internal,
        at,
        millis(250),
        vec![KeyValue::new("order.id", order.to_owned()), KeyValue::new("delivery.id", delivery.to_owned())],
    );
}

/// Records the TMS's carrier booking for one delivery, which knows the delivery but not the order
/// (step 8).
fn book_carrier(systems: &Systems, delivery: &str, shipment: &str, carrier: &'static str, at: SystemTime) {
    systems.tms.record(
        &root(),
        "carrier.book",
        SpanKind::Client,
        at,
        millis(870),
        vec![
            KeyValue::new("delivery.id", delivery.to_owned()),
            KeyValue::new("shipment.id", shipment.to_owned()),
            KeyValue::new("carrier.name", carrier),
        ],
    );
}

/// Records the carrier's pickup, which knows only the shipment (step 9). The consolidated shipment
/// has no tracking number of a single order, so `number` is optional.
fn confirm_pickup(systems: &Systems, shipment: &str, single_order: Option<(u32, i64)>, at: SystemTime) {
    let mut attributes = vec![KeyValue::new("shipment.id", shipment.to_owned())];
    // A shipment that carries one order reports that order's shipped quantity, which gives its fill rate.
    if let Some((number, quantity)) = single_order {
        attributes.push(KeyValue::new("carrier.tracking_number", format!("NF{:010}", u64::from(number) * 7_919)));
        attributes.push(KeyValue::new("order.quantity.shipped", quantity));
    }
    systems.tms.record(&root(), "shipment.pickup.confirm", SpanKind::Internal, at, millis(150), attributes);
}

/// Records the EDI gateway's advance shipping notice to the customer (step 10).
fn send_asn(systems: &Systems, shipment: &str, asn: &str, control: u32, at: SystemTime) {
    systems.edi.record(
        &root(),
        "EDI 856 send",
        SpanKind::Producer,
        at,
        millis(300),
        vec![
            KeyValue::new("shipment.id", shipment.to_owned()),
            KeyValue::new("edi.asn.id", asn.to_owned()),
            KeyValue::new("edi.control_number", format!("{control:09}")),
            KeyValue::new("edi.transaction_set", "856"),
        ],
    );
}

/// Records the portal's e-mail to the customer (step 12).
fn notify(systems: &Systems, order: &str, at: SystemTime) {
    systems.portal.record(
        &root(),
        "notification.send",
        SpanKind::Internal,
        at,
        millis(60),
        vec![KeyValue::new("order.id", order.to_owned()), KeyValue::new("notification.channel", "email")],
    );
}

/// Records a load balancer's health check, which belongs to no order at all.
fn health_check(systems: &Systems, at: SystemTime) {
    systems.portal.record(
        &root(),
        "GET /healthz",
        SpanKind::Server,
        at,
        millis(2),
        vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/healthz"),
            KeyValue::new("url.path", "/healthz"),
            KeyValue::new("http.response.status_code", 200_i64),
        ],
    );
}

fn order_id(number: u32) -> String {
    format!("SO-{number}")
}

/// The parent of every technical trace's first span. An empty context rather than
/// `Context::current()`, so that whatever context the caller's thread happens to have attached can
/// never turn a simulated system's trace into a child of ordertrail's own.
fn root() -> Context {
    Context::new()
}

fn end(cx: &Context, at: SystemTime) {
    cx.span().end_with_timestamp(at);
}

fn fail(cx: &Context, description: &'static str) {
    cx.span().set_status(Status::error(description));
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3_600)
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_endpoint_is_refused_before_any_exporter_is_built() {
        let options = SimulatorOptions { endpoint: " ".to_owned(), ..SimulatorOptions::default() };
        assert!(matches!(run(&options).await, Err(SimulatorError::EmptyEndpoint)));
    }

    #[test]
    fn the_default_business_days_start_at_eight_and_are_over_by_now() {
        let options = SimulatorOptions::default();
        let start =
            options.base_time.duration_since(UNIX_EPOCH).expect("the default base time is after the epoch").as_secs();
        assert_eq!(start % 86_400, 8 * 3_600);
        // The last simulated span ends in the afternoon of the second day.
        assert!(options.base_time + days(1) + hours(16) <= SystemTime::now());
        assert_eq!(options.happy_orders, 5);
    }

    #[test]
    fn happy_orders_alternate_segments_and_warehouses() {
        let first = HappyOrder::new(1);
        let second = HappyOrder::new(2);
        assert_eq!(first.id, "SO-20001");
        assert_eq!(first.customer, "C-101");
        assert_eq!((first.segment, first.warehouse), ("key-account", "WH-EAST"));
        assert_eq!((second.segment, second.warehouse), ("standard", "WH-WEST"));
    }
}
