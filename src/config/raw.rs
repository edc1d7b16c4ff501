//! The low layer of the configuration: serde structs that mirror the YAML file one to one.
//!
//! Every struct denies unknown fields so that a misspelt key stops startup instead of being
//! silently ignored. Nothing here is checked beyond its type; `validated.rs` does the rest.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where OTLP spans come in.
    #[serde(default)]
    pub receivers: RawReceivers,
    /// How a span is tied to the orders it concerns.
    #[serde(default)]
    pub correlation: RawCorrelation,
    /// The milestone taxonomy and the exception classes, each with its owner.
    #[serde(default)]
    pub taxonomy: RawTaxonomy,
    /// Rules that label spans with milestones and exceptions, evaluated in order.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// How order traces are built and when their root and milestone spans are emitted.
    #[serde(default)]
    pub order_traces: RawOrderTraces,
    /// Where labelled spans and order traces are sent.
    #[serde(default)]
    pub exporters: RawExporters,
    /// Durable state.
    #[serde(default)]
    pub storage: RawStorage,
    /// Bounds of the in-process pipeline between receivers and the correlation engine.
    #[serde(default)]
    pub pipeline: RawPipeline,
    /// Low-cardinality order attributes (customer, segment, warehouse) recorded from spans, used by SLA overrides,
    /// API filters and metric labels.
    #[serde(default)]
    pub dimensions: Vec<RawDimension>,
    /// Service-level targets between milestones, and the business calendars they count in.
    #[serde(default)]
    pub sla: RawSla,
    /// Checks that milestones happen in the order the taxonomy states.
    #[serde(default)]
    pub conformance: RawConformance,
    /// Business KPIs that need more than milestone times.
    #[serde(default)]
    pub kpis: RawKpis,
    /// The order API (gRPC and HTTP/JSON), health endpoints and `/metrics`.
    #[serde(default)]
    pub api: RawApi,
    /// ordertrail's own metrics.
    #[serde(default)]
    pub telemetry: RawTelemetry,
}

/// An order attribute read from spans, e.g. the customer or the warehouse.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDimension {
    /// Name used in SLA overrides, API filters and metric labels, e.g. `segment`; lower snake case.
    pub name: String,
    /// Span attributes holding the value, tried in order.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Resource attributes holding the value, tried after the span attributes.
    #[serde(default)]
    pub resource_attributes: Vec<String>,
    /// Whether the dimension labels the transition and exception metrics (default false).
    #[serde(default)]
    pub metric_label: bool,
    /// Most distinct values used as metric labels; further values are reported as `other` (default 50).
    pub max_metric_values: Option<usize>,
}

/// SLA targets and calendars.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSla {
    /// Business calendars by name; a target without a calendar counts wall-clock time.
    #[serde(default)]
    pub calendars: BTreeMap<String, RawCalendar>,
    /// Targets: milestone `to` must be reached within a duration of milestone `from`.
    #[serde(default)]
    pub targets: Vec<RawSlaTarget>,
    /// Exception class of a breach unless a target names another (default `execution`).
    pub exception_class: Option<String>,
    /// How long after a deadline (and after the clock became known) a breach is declared, so that a milestone
    /// whose span is still in flight is not reported overdue (default `500ms`).
    #[serde(default, with = "humantime_serde")]
    pub detection_delay: Option<Duration>,
}

/// Working hours in a time zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCalendar {
    /// IANA time zone, e.g. `America/Chicago` (default `UTC`).
    pub time_zone: Option<String>,
    /// Working days, any of `mon` … `sun` (default `mon`–`fri`).
    pub working_days: Option<Vec<String>>,
    /// Working hours as `HH:MM-HH:MM` in the calendar's time zone (default `00:00-24:00`).
    pub working_hours: Option<String>,
    /// Dates (`YYYY-MM-DD`) that are not working days.
    #[serde(default)]
    pub holidays: Vec<String>,
}

/// One SLA target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlaTarget {
    /// Target name, e.g. `order_release`; names the KPI metric series and the breach span; lower snake case.
    pub name: String,
    /// Milestone whose arrival starts the clock.
    pub from: String,
    /// Milestone that must be reached in time.
    pub to: String,
    /// Allowed time, e.g. `4h` (working time when a calendar is named).
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    /// Calendar name from `sla.calendars`.
    pub calendar: Option<String>,
    /// Exception class recorded on a breach (default `sla.exception_class`).
    pub exception_class: Option<String>,
    /// Other durations for orders with given dimension values; the first matching override wins.
    #[serde(default)]
    pub overrides: Vec<RawSlaOverride>,
}

/// A different allowance for some orders.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlaOverride {
    /// Dimension name from `dimensions`.
    pub dimension: String,
    /// Values of the dimension this override applies to.
    pub values: Vec<String>,
    /// Allowed time for these orders.
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    /// Calendar for these orders (default: the target's).
    pub calendar: Option<String>,
}

/// Milestone order checks.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConformance {
    /// Whether milestones reached out of the taxonomy's order are recorded as exceptions (default true).
    pub enabled: Option<bool>,
    /// Exception class of an out-of-order milestone (default `policy`).
    pub exception_class: Option<String>,
}

/// KPI inputs read from span attributes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawKpis {
    /// Span attributes with the quantity ordered, tried in order (default `order.quantity.ordered`).
    pub ordered_quantity_attributes: Option<Vec<String>>,
    /// Span attributes with the cumulative quantity shipped (default `order.quantity.shipped`).
    pub shipped_quantity_attributes: Option<Vec<String>>,
}

/// The order API.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// HTTP/JSON API, OpenAPI document, `/healthz`, `/readyz` and `/metrics`.
    #[serde(default)]
    pub http: RawApiListener,
    /// gRPC API (`ordertrail.v1.OrderService`) and gRPC health.
    #[serde(default)]
    pub grpc: RawApiListener,
    /// Largest page a list call returns (default 1000; the default page is 100).
    pub max_page_size: Option<usize>,
    /// Link to an order trace in the tracing UI; `{trace_id}` is replaced, e.g.
    /// `http://jaeger:16686/trace/{trace_id}` (default: none).
    pub trace_url_template: Option<String>,
}

/// One API listener.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApiListener {
    /// Whether the listener runs (default true).
    pub enabled: Option<bool>,
    /// Listen address, `host:port` (HTTP default `0.0.0.0:8080`, gRPC default `0.0.0.0:8081`).
    pub endpoint: Option<String>,
}

/// ordertrail's own telemetry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Metrics.
    #[serde(default)]
    pub metrics: RawMetrics,
}

/// Metrics served on `/metrics` and optionally pushed over OTLP.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Most label sets per metric; further ones go to one overflow series (default 2000).
    pub max_series_per_metric: Option<usize>,
    /// Most `service`/`route` pairs tracked for correlation coverage (default 500).
    pub max_coverage_routes: Option<usize>,
    /// OTLP metrics push; absent means `/metrics` only.
    pub otlp: Option<RawMetricsOtlp>,
}

/// OTLP metrics push, named as the collector's `otlp` exporter plus the periodic reader's `interval`. Its fields
/// repeat those of [`RawOtlpExporter`] without batching and queueing, which a periodic push of cumulative values
/// does not need; serde cannot combine `flatten` with `deny_unknown_fields`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetricsOtlp {
    /// `http://host:4317` for gRPC, `http://host:4318` for HTTP (the `/v1/metrics` path is added when absent).
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    pub protocol: Option<String>,
    /// Extra headers or gRPC metadata.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS settings.
    pub tls: Option<RawTls>,
    /// `gzip` (default) or `none`.
    pub compression: Option<String>,
    /// Timeout of one push (default `10s`).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Time between pushes (default `60s`).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
}

/// Receivers, named as in the OpenTelemetry Collector (`receivers.otlp.protocols`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawReceivers {
    /// The OTLP receiver.
    #[serde(default)]
    pub otlp: RawOtlpReceiver,
}

/// The OTLP receiver.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOtlpReceiver {
    /// The protocols it listens on.
    #[serde(default)]
    pub protocols: RawProtocols,
}

/// OTLP/gRPC and OTLP/HTTP listeners; an absent protocol keeps its default, `enabled: false` turns it off.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProtocols {
    /// OTLP/gRPC (TraceService/Export).
    #[serde(default)]
    pub grpc: RawGrpcServer,
    /// OTLP/HTTP (`POST /v1/traces`, protobuf or JSON).
    #[serde(default)]
    pub http: RawHttpServer,
}

/// OTLP/gRPC server settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGrpcServer {
    /// Whether the listener runs (default true).
    pub enabled: Option<bool>,
    /// Listen address, `host:port` (default `0.0.0.0:4317`).
    pub endpoint: Option<String>,
    /// Largest accepted message after decompression, in MiB (default 4, as the collector).
    pub max_recv_msg_size_mib: Option<u64>,
}

/// OTLP/HTTP server settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHttpServer {
    /// Whether the listener runs (default true).
    pub enabled: Option<bool>,
    /// Listen address, `host:port` (default `0.0.0.0:4318`).
    pub endpoint: Option<String>,
    /// Largest accepted request body as sent, in bytes (default 20 MiB, as the collector).
    pub max_request_body_size: Option<u64>,
    /// Largest accepted body after gzip decompression, in bytes (default 64 MiB); guards against gzip bombs.
    pub max_decompressed_body_size: Option<u64>,
}

/// Where order keys and alias keys are found, and how unkeyed spans inherit an order.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCorrelation {
    /// Sources of the order key itself.
    #[serde(default)]
    pub order_keys: Option<RawKeySources>,
    /// Secondary business keys (shipment, delivery, invoice, ASN, PO…) that lead to orders once learned.
    #[serde(default)]
    pub aliases: Vec<RawAlias>,
    /// How long a span with no key waits for a keyed span of its technical trace (default `2s`).
    #[serde(default, with = "humantime_serde")]
    pub inherit_wait: Option<Duration>,
    /// Most spans held while waiting to inherit an order; beyond it spans pass on uncorrelated (default 100000).
    pub max_pending_spans: Option<usize>,
    /// Most technical traces remembered with their orders (default 200000).
    pub max_tracked_traces: Option<usize>,
    /// Keep the remembered technical traces in the store, so that a span arriving after a restart still joins the
    /// order its trace was tied to before (default true). Costs one write per new technical trace.
    pub persist_trace_memory: Option<bool>,
    /// How long a technical trace's orders are remembered after its last span (default `10m`).
    #[serde(default, with = "humantime_serde")]
    pub trace_memory: Option<Duration>,
    /// Most orders held in memory; beyond it the oldest closed orders are evicted, then new orders refused (default 1000000).
    pub max_orders: Option<usize>,
    /// Most alias values remembered (default 2000000).
    pub max_aliases: Option<usize>,
}

/// Places a key can be read from.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawKeySources {
    /// Span attributes holding the key; an array value names several keys.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Resource attributes holding the key.
    #[serde(default)]
    pub resource_attributes: Vec<String>,
    /// Patterns over the span name or an attribute value such as `url.path` or `http.route`.
    #[serde(default)]
    pub patterns: Vec<RawPattern>,
}

/// A pattern that extracts a key from a string value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPattern {
    /// What the pattern is applied to: `span.name` or the name of a span attribute.
    pub source: String,
    /// A path template such as `/api/orders/{id}/release`; `{id}` captures the key, `{*}` matches one segment,
    /// and a trailing `/**` matches the rest.
    pub template: Option<String>,
    /// A regular expression with a named group `id` that captures the key.
    pub regex: Option<String>,
}

/// One kind of alias key. Its source fields repeat those of [`RawKeySources`] because serde cannot combine
/// `flatten` with `deny_unknown_fields`, and refusing misspelt keys matters more here than the repetition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlias {
    /// Alias kind, e.g. `shipment`; appears in logs and the store.
    pub kind: String,
    /// Span attributes holding values of this alias; an array value names several.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Resource attributes holding values of this alias.
    #[serde(default)]
    pub resource_attributes: Vec<String>,
    /// Patterns over the span name or an attribute value.
    #[serde(default)]
    pub patterns: Vec<RawPattern>,
}

/// The milestone taxonomy and exception classes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTaxonomy {
    /// Milestones in their expected order.
    #[serde(default)]
    pub milestones: Vec<RawMilestone>,
    /// Exception classes by name (`data_quality`, `policy`, `integration`, `execution`).
    #[serde(default)]
    pub exception_classes: BTreeMap<String, RawExceptionClass>,
}

/// One milestone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMilestone {
    /// Name, e.g. `credit_approval`; lower snake case.
    pub name: String,
    /// Team that owns reaching this milestone.
    pub owner: String,
    /// Whether the milestone lies off the main path (e.g. `customer_notification`).
    #[serde(default)]
    pub off_path: bool,
    /// Whether the main path may skip this milestone without a conformance exception.
    #[serde(default)]
    pub skippable: bool,
    /// Whether no other milestone may follow it (e.g. `order_cancellation`); implies off the main path.
    #[serde(default)]
    pub terminal: bool,
    /// Human description shown on the milestone span.
    pub description: Option<String>,
}

/// One exception class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExceptionClass {
    /// Team that owns exceptions of this class unless a rule names another.
    pub owner: String,
    /// Human description.
    pub description: Option<String>,
}

/// A labelling rule: when all conditions of `match` hold, the labels of the rule apply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Rule name, used in logs and on the span (`order.rule`).
    pub name: String,
    /// Conditions; all must hold. An empty match matches every span.
    #[serde(default, rename = "match")]
    pub when: RawMatch,
    /// Milestone this span concerns.
    pub milestone: Option<String>,
    /// Whether the span reaches its milestone (true) or only works on it (false). Default: true unless the
    /// span's status is error or the rule names an exception.
    pub reaches: Option<bool>,
    /// Exception class to record, or `none` to suppress the default classification.
    pub exception: Option<String>,
    /// Owner of the exception, overriding the class owner.
    pub owner: Option<String>,
    /// Span attribute naming the actor (user, approver, system) that did this step.
    pub actor_attribute: Option<String>,
}

/// Conditions of a rule.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// The resource's `service.name`.
    pub service: Option<RawStringMatch>,
    /// The span name.
    pub span_name: Option<RawStringMatch>,
    /// Span kinds, any of `internal`, `server`, `client`, `producer`, `consumer`.
    #[serde(default)]
    pub span_kind: Vec<String>,
    /// Span status, one of `unset`, `ok`, `error`.
    pub status: Option<String>,
    /// Conditions on span attributes.
    #[serde(default)]
    pub attributes: Vec<RawAttributeMatch>,
    /// Conditions on resource attributes.
    #[serde(default)]
    pub resource_attributes: Vec<RawAttributeMatch>,
    /// Requires an `exception` event; the string match applies to `exception.type` (use `{glob: "*"}` for any).
    pub exception_event: Option<RawStringMatch>,
}

/// A match on a string: exactly one of the fields.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStringMatch {
    /// Equal to this value.
    pub equals: Option<String>,
    /// Equal to one of these values.
    pub one_of: Option<Vec<String>>,
    /// Matches this glob (`*`, `?`, `[abc]`); case-insensitive.
    pub glob: Option<String>,
    /// Matches this regular expression (unanchored; anchor with `^…$`).
    pub regex: Option<String>,
}

/// A condition on one attribute: `key` plus exactly one test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttributeMatch {
    /// Attribute key.
    pub key: String,
    /// The attribute is present (true) or absent (false).
    pub exists: Option<bool>,
    /// String form equals this value.
    pub equals: Option<String>,
    /// String form equals one of these values.
    pub one_of: Option<Vec<String>>,
    /// String form matches this glob; case-insensitive.
    pub glob: Option<String>,
    /// String form matches this regular expression.
    pub regex: Option<String>,
    /// Numeric value greater than.
    pub gt: Option<f64>,
    /// Numeric value greater than or equal.
    pub gte: Option<f64>,
    /// Numeric value less than.
    pub lt: Option<f64>,
    /// Numeric value less than or equal.
    pub lte: Option<f64>,
}

/// Order trace construction and emission.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOrderTraces {
    /// `service.name` of the root and milestone spans ordertrail creates (default `ordertrail`).
    pub service_name: Option<String>,
    /// Also pass the original spans on, enriched with order labels and a link to the order trace (default true).
    pub passthrough: Option<bool>,
    /// Milestones whose arrival closes the order and emits its root span (default: the last main-path milestone).
    pub close_on: Option<Vec<String>>,
    /// An order with no new span for this long is closed and its root emitted (default `168h`).
    #[serde(default, with = "humantime_serde")]
    pub idle_close_after: Option<Duration>,
    /// Span attributes naming who acted, tried in order when a rule names none (default `enduser.id`, `order.actor`).
    pub actor_attributes: Option<Vec<String>>,
}

/// Exporters, named as in the collector.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawExporters {
    /// OTLP exporter; absent means nothing is exported (spans are still labelled and recorded).
    pub otlp: Option<RawOtlpExporter>,
}

/// OTLP exporter settings, named as the collector's `otlp` / `otlphttp` exporters.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOtlpExporter {
    /// `http://host:4317` for gRPC, `http://host:4318` for HTTP (the `/v1/traces` path is added when absent).
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    pub protocol: Option<String>,
    /// Extra headers or gRPC metadata, e.g. `X-Scope-OrgID` for Tempo.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS settings; plain text when absent and the endpoint is `http://`.
    pub tls: Option<RawTls>,
    /// `gzip` (default) or `none`.
    pub compression: Option<String>,
    /// Timeout of one export request (default `10s`).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Batching before export.
    pub batch: Option<RawBatch>,
    /// Retry of retryable failures.
    pub retry_on_failure: Option<RawRetry>,
    /// Queue between the pipeline and the export workers.
    pub sending_queue: Option<RawSendingQueue>,
}

/// Client TLS.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Send in plain text even though a `tls` section is present.
    #[serde(default)]
    pub insecure: bool,
    /// PEM file of the CA that signed the server certificate (default: the system roots).
    pub ca_file: Option<String>,
    /// PEM client certificate for mutual TLS.
    pub cert_file: Option<String>,
    /// PEM client key for mutual TLS.
    pub key_file: Option<String>,
    /// Server name to verify, when it differs from the endpoint host.
    pub server_name_override: Option<String>,
}

/// Batching, as the collector's batch processor.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// Spans per export request (default 2048).
    pub send_batch_size: Option<usize>,
    /// Longest a span waits for its batch to fill (default `200ms`).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// Retry with exponential backoff and jitter.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Whether to retry at all (default true).
    pub enabled: Option<bool>,
    /// First backoff (default `5s`).
    #[serde(default, with = "humantime_serde")]
    pub initial_interval: Option<Duration>,
    /// Largest backoff (default `30s`).
    #[serde(default, with = "humantime_serde")]
    pub max_interval: Option<Duration>,
    /// Give up on a batch after this long and count it as failed; `0s` (the default) retries until the backend
    /// accepts it, holding the queue, which pushes back on senders instead of dropping.
    #[serde(default, with = "humantime_serde")]
    pub max_elapsed_time: Option<Duration>,
}

/// Sending queue.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSendingQueue {
    /// Batches waiting for a worker (default 64); when full the pipeline pushes back on receivers.
    pub queue_size: Option<usize>,
    /// Concurrent export requests (default 4).
    pub num_consumers: Option<usize>,
    /// Largest export queue on disk, in bytes, with `storage.durability: durable` (default 1 GiB); when it is
    /// full, senders get a retryable error until the backend catches up.
    pub max_bytes: Option<u64>,
}

/// Durable state.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Data directory of the embedded store (default `./ordertrail-data`).
    pub directory: Option<String>,
    /// `durable` (default): a request is acknowledged once its state and the spans to export are on disk, and
    /// the export queue lives on disk. `memory`: faster, but a crash may lose acknowledged spans.
    pub durability: Option<String>,
    /// Page cache of the embedded store in MiB (default 64); it counts against `pipeline.memory_limit_mib`.
    pub cache_size_mib: Option<usize>,
}

/// Pipeline bounds.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// OTLP requests queued for the engine; when full, senders get UNAVAILABLE / 503 (default 256).
    pub queue_size: Option<usize>,
    /// Requests the engine takes together into one state commit (default 64).
    pub max_group_commit: Option<usize>,
    /// Resident memory, in MiB, above which senders get a retryable error until it falls again, as the
    /// collector's memory limiter (default: no limit). Set it below the container limit.
    pub memory_limit_mib: Option<u64>,
    /// Headroom below `memory_limit_mib` at which refusing starts (default a fifth of the limit).
    pub memory_spike_limit_mib: Option<u64>,
}
