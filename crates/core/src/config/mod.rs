//! Configuration in two layers, as the OpenTelemetry Collector's components and ripgrep's arguments: the raw
//! layer mirrors the YAML file (serde structs that refuse unknown keys, one module per section, each section's
//! defaults in its `Default` implementation and nowhere else), and each section checks itself into its validated
//! form (compiled regexes and globs, names resolved to indices). [`RawConfig::check`] only calls the sections.
//!
//! A file is merged over the embedded default (`default.yaml`) before it is checked, so it states only what
//! differs: maps merge, lists replace (see [`merge`] for the one exception). Startup fails fast on any error,
//! naming the file, the key path and the reason: an operator should never discover a typo by watching spans go
//! unlabelled.

mod api;
mod check;
mod conformance;
mod correlation;
mod dimensions;
mod exporter;
mod insight;
pub mod merge;
mod notifications;
mod order_traces;
mod overrides;
mod receivers;
mod rules;
mod security;
mod sla;
mod storage;
mod taxonomy;
mod telemetry;

pub use api::{ApiConfig, RawApi, RawApiAuth, RawApiListener};
pub use check::ConfigError;
pub use conformance::{ConformanceConfig, KpiConfig, RawConformance, RawKpis};
pub use correlation::{
    template_to_regex, AliasSource, CorrelationConfig, KeyPattern, KeySources, LateJoinConfig, PatternSource, RawAlias,
    RawCorrelation, RawKeySources, RawLateJoins, RawPattern,
};
pub use dimensions::{Dimension, RawDimension};
pub use exporter::{
    Compression, ExportProtocol, ExporterConfig, RawBatch, RawCompressionParams, RawExporters, RawOtlpExporter,
    RawRetry, RawSendingQueue, RawTls, RetryConfig, TlsConfig,
};
pub use insight::{
    clock_playbook, find_playbook, Playbook, PlaybookWhen, RawDimensionMatch, RawPatterns, RawPlaybook,
    RawPlaybookMatch, Situation, Urgency,
};
pub use notifications::{
    fill_template, NotificationEvent, NotificationsConfig, NotifierConfig, NotifierEndpoint, NotifierFormat,
    RawNotificationRetry, RawNotifications, RawNotifier, RawRateLimit, TEMPLATE_FIELDS,
};
pub use order_traces::{OrderTraceConfig, RawOrderTraces};
pub use overrides::Overrides;
pub use receivers::{
    ConnectionLimits, GrpcServerConfig, HttpServerConfig, RawConnections, RawGrpcServer, RawHttpServer,
    RawOtlpReceiver, RawProtocols, RawReceivers, ReceiverConfig,
};
pub use rules::{
    AttributeCondition, AttributeTest, ExceptionLabel, NumericOp, RawAttributeMatch, RawMatch, RawRule, RawStringMatch,
    Rule, RuleMatch, StringMatcher, SPAN_KINDS, STATUS_CODES,
};
pub use security::{AuthConfig, RawAuth, RawServerTls, ServerTlsConfig, TlsVersion, TokenSource};
pub use sla::{RawCalendar, RawSla, RawSlaOverride, RawSlaTarget, SlaConfig, SlaOverride, SlaTarget};
pub use storage::{
    Durability, PipelineConfig, PostgresConfig, PostgresTls, PostgresUrl, RawPipeline, RawPostgres, RawStorage,
    StorageConfig,
};
pub use taxonomy::{
    ClassId, ExceptionClass, Milestone, MilestoneId, RawExceptionClass, RawMilestone, RawTaxonomy, Taxonomy,
};
pub use telemetry::{MetricsConfig, MetricsPushConfig, RawMetrics, RawMetricsOtlp, RawTelemetry};

use check::Checker;
use serde::{Deserialize, Serialize};
use std::path::Path;
use yaml_serde::Value;

/// The embedded default configuration: a distributor's order-to-cash taxonomy, rules, aliases, dimensions and SLA
/// targets, over which every configuration file is merged.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default.yaml");
/// The name under which the embedded default appears in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default config>";

/// The whole configuration file, raw.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Where OTLP spans come in.
    pub receivers: RawReceivers,
    /// How a span is tied to the orders it concerns.
    pub correlation: RawCorrelation,
    /// The milestone taxonomy and the exception classes, each with its owner.
    pub taxonomy: RawTaxonomy,
    /// Rules that label spans with milestones and exceptions, evaluated in order.
    pub rules: Vec<RawRule>,
    /// How order traces are built and when their root and milestone spans are emitted.
    pub order_traces: RawOrderTraces,
    /// Where labelled spans and order traces are sent.
    pub exporters: RawExporters,
    /// Durable state.
    pub storage: RawStorage,
    /// Bounds of the in-process pipeline between receivers and the correlation engine.
    pub pipeline: RawPipeline,
    /// Low-cardinality order attributes (customer, segment, warehouse) recorded from spans, used by SLA overrides,
    /// API filters and metric labels.
    pub dimensions: Vec<RawDimension>,
    /// Service-level targets between milestones, and the business calendars they count in.
    pub sla: RawSla,
    /// Checks that milestones happen in the order the taxonomy states.
    pub conformance: RawConformance,
    /// Business KPIs that need more than milestone times.
    pub kpis: RawKpis,
    /// The order API (gRPC and HTTP/JSON), health endpoints and `/metrics`.
    pub api: RawApi,
    /// ordertrail's own metrics.
    pub telemetry: RawTelemetry,
    /// Webhooks that tell the owning team of exceptions and breaches.
    pub notifications: RawNotifications,
    /// How exception reasons are grouped into recurring patterns.
    pub patterns: RawPatterns,
    /// Recommended actions for known situations, first match wins.
    pub playbooks: Vec<RawPlaybook>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages.
    pub source: String,
    pub receivers: ReceiverConfig,
    pub correlation: CorrelationConfig,
    pub taxonomy: Taxonomy,
    pub rules: Vec<Rule>,
    pub order_traces: OrderTraceConfig,
    pub exporter: Option<ExporterConfig>,
    pub storage: StorageConfig,
    pub pipeline: PipelineConfig,
    pub dimensions: Vec<Dimension>,
    pub sla: SlaConfig,
    pub conformance: ConformanceConfig,
    pub kpis: KpiConfig,
    pub api: ApiConfig,
    pub metrics: MetricsConfig,
    pub notifications: NotificationsConfig,
    pub patterns: crate::insight::patterns::PatternSettings,
    pub playbooks: Vec<Playbook>,
}

impl RawConfig {
    /// Checks every section, in an order where each finds the sections it refers to already checked; the first
    /// error stops.
    pub fn check(&self, file: &str) -> Result<Config, ConfigError> {
        let check = Checker { file };
        let receivers = self.receivers.check(&check)?;
        let taxonomy = self.taxonomy.check(&check)?;
        let correlation = self.correlation.check(&check)?;
        let rules = rules::check_rules(&check, &self.rules, &taxonomy)?;
        let order_traces = self.order_traces.check(&check, &taxonomy)?;
        let exporter = self.exporters.check(&check)?;
        let storage = self.storage.check(&check)?;
        let pipeline = self.pipeline.check(&check)?;
        let dimensions = dimensions::check_dimensions(&check, &self.dimensions)?;
        let sla = self.sla.check(&check, &taxonomy, &dimensions)?;
        let conformance = self.conformance.check(&check, &taxonomy)?;
        let kpis = self.kpis.check();
        let api = self.api.check(&check)?;
        let metrics = self.telemetry.check(&check)?;
        let notifications = self.notifications.check(&check, &taxonomy)?;
        let patterns = self.patterns.check(&check)?;
        let playbooks = insight::check_playbooks(&check, &self.playbooks, &taxonomy, &dimensions, &sla)?;
        Ok(Config {
            source: file.to_string(),
            receivers,
            correlation,
            taxonomy,
            rules,
            order_traces,
            exporter,
            storage,
            pipeline,
            dimensions,
            sla,
            conformance,
            kpis,
            api,
            metrics,
            notifications,
            patterns,
            playbooks,
        })
    }

    /// The configuration as YAML, every setting included: what `print-default-config` and
    /// `validate-config --print` show.
    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).expect("the raw configuration is plain data")
    }
}

/// The key path and reason of a serde error, `(top level)` for the document itself.
fn path_error(e: serde_path_to_error::Error<yaml_serde::Error>) -> (String, String) {
    let key = e.path().to_string();
    let key = if key == "." { "(top level)".to_string() } else { key };
    (key, e.into_inner().to_string())
}

/// Reads one document on its own and returns what it states, which is what gets merged. A `null` (or an empty
/// value) states nothing, so it is dropped here and the default applies, as if the key were absent.
///
/// The typed read of the text itself names the key, line and column of a wrong type, an unknown key or a key
/// given twice. Only when it fails is the document read again without its nulls, so that a null is not taken for
/// an error; any other error is then reported with its position when it is where the text read put it.
fn read_document(text: &str, file: &str) -> Result<Value, ConfigError> {
    let invalid = |(key, reason): (String, String)| ConfigError::Invalid { file: file.to_string(), key, reason };
    let typed = serde_path_to_error::deserialize::<_, RawConfig>(yaml_serde::Deserializer::from_str(text));
    let value: Value = match yaml_serde::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            return Err(invalid(match typed {
                Err(typed) => path_error(typed),
                Ok(_) => ("(top level)".into(), e.to_string()),
            }))
        }
    };
    let value = merge::without_nulls(merge::document(value));
    if !value.is_mapping() {
        return Err(invalid(("(top level)".into(), "a configuration is a mapping of sections".into())));
    }
    if let Err(typed) = typed {
        if let Err(again) = serde_path_to_error::deserialize::<_, RawConfig>(value.clone()) {
            let (typed, again) = (path_error(typed), path_error(again));
            return Err(invalid(if typed.0 == again.0 { typed } else { again }));
        }
    }
    Ok(value)
}

/// A file's document merged over the embedded default's: the raw configuration, and what the file itself states.
fn merged(text: &str, file: &str) -> Result<(RawConfig, Value), ConfigError> {
    let overlay = read_document(text, file)?;
    let mut merged = read_document(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_NAME).expect("the embedded default is valid");
    merge::decouple_taxonomy(&mut merged, &overlay);
    merge::merge(&mut merged, overlay.clone());
    let raw = serde_path_to_error::deserialize(merged).map_err(|e| {
        let (key, reason) = path_error(e);
        ConfigError::Invalid { file: file.to_string(), key, reason }
    })?;
    Ok((raw, overlay))
}

/// Checks a merged configuration. A value at fault that the file does not state came from the embedded default,
/// which the message says, with what to state in the file instead: otherwise a user would search the file for a
/// key that is not there.
fn checked(raw: &RawConfig, stated: &Value, file: &str) -> Result<Config, ConfigError> {
    raw.check(file).map_err(|error| match error {
        ConfigError::Invalid { file, key, reason } => {
            let reason = match merge::first_unstated(stated, &key) {
                Some(inherited) => format!(
                    "{reason} (`{inherited}` comes from the embedded default; state `{inherited}` in {file} to \
                     replace it)"
                ),
                None => reason,
            };
            ConfigError::Invalid { file, key, reason }
        }
        other => other,
    })
}

/// The raw configuration of YAML text that came from `file`, merged over the embedded default.
pub fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    merged(text, file).map(|(raw, _)| raw)
}

/// Parses and validates YAML text that came from `file`, merged over the embedded default.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let (raw, stated) = merged(text, file)?;
    checked(&raw, &stated, file)
}

/// Reads a configuration file and merges it over the embedded default: the raw form, every setting included,
/// and the validated form.
pub fn load_checked(path: &Path) -> Result<(RawConfig, Config), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    let (raw, stated) = merged(&text, &file)?;
    let config = checked(&raw, &stated, &file)?;
    Ok((raw, config))
}

/// Reads, merges and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_checked(path).map(|(_, config)| config)
}

/// The embedded default over the built-in defaults, unchecked.
pub fn default_raw() -> RawConfig {
    // The embedded default is checked by a unit test, so failing here would be a build defect.
    parse_raw("", DEFAULT_CONFIG_NAME).expect("the embedded default config is valid")
}

/// The embedded default configuration, validated.
pub fn default_config() -> Config {
    default_raw().check(DEFAULT_CONFIG_NAME).expect("the embedded default config is valid")
}

#[cfg(test)]
mod tests;
