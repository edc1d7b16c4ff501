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

mod happy;
pub mod history;
mod seed;
mod steps;
mod systems;

use happy::*;
use seed::*;
use steps::*;
use systems::*;

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
    /// Orders of a history with known delay causes ([`history`]), captured every 20 minutes up to now: the
    /// delay model's past, and at its end orders still in flight. Only steps that have happened by now are sent.
    pub history_orders: usize,
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
            history_orders: 0,
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
    order_ids.extend(play_history(&systems, options.history_orders));

    systems.flush_and_shut_down().await?;
    tracing::info!(orders = order_ids.len(), "simulated orders sent");
    Ok(SimulatedOrders { order_ids })
}

/// The numbers of the history's orders start here, above the happy orders'.
const HISTORY_BASE_NUMBER: u64 = 30_000;

/// Plays the steps of `orders` history orders, captured 20 minutes apart up to an hour ago, that have happened
/// by now; returns their ids.
fn play_history(systems: &Systems, orders: usize) -> Vec<String> {
    if orders == 0 {
        return Vec::new();
    }
    let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()).unwrap_or(0);
    let spacing = Duration::from_secs(20 * 60);
    let span = u64::try_from(spacing.as_nanos()).unwrap_or(0).saturating_mul(orders as u64);
    let history = history::generate(&history::HistoryOptions {
        orders,
        start_unix_nanos: now.saturating_sub(span).saturating_sub(3_600_000_000_000),
        spacing,
        seed: 42,
        first_number: HISTORY_BASE_NUMBER,
    });
    for order in &history {
        for step in order.steps.iter().filter(|s| s.end_unix_nanos() <= now) {
            play(systems, step);
        }
    }
    history.into_iter().map(|o| o.id).collect()
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
