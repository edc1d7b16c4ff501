//! The high layer of the configuration: checked values with compiled matchers.
//!
//! `Config::from_raw` is the collector's `Validate()`: every cross-reference (a rule's milestone, an exception
//! class, a `close_on` milestone) is resolved to an index, every regex and glob compiled, every default filled
//! in, so the engine never parses or looks anything up by name on the per-span path.

use super::operations::{ApiConfig, ConformanceConfig, Dimension, KpiConfig, MetricsConfig, SlaConfig};
use super::raw::*;
use super::ConfigError;
use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
}

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub grpc: Option<GrpcServerConfig>,
    pub http: Option<HttpServerConfig>,
}

#[derive(Debug, Clone)]
pub struct GrpcServerConfig {
    pub endpoint: SocketAddr,
    pub max_recv_msg_size: usize,
}

#[derive(Debug, Clone)]
pub struct HttpServerConfig {
    pub endpoint: SocketAddr,
    pub max_request_body_size: usize,
    pub max_decompressed_body_size: usize,
}

#[derive(Debug, Clone)]
pub struct CorrelationConfig {
    pub order_keys: KeySources,
    pub aliases: Vec<AliasSource>,
    pub inherit_wait: Duration,
    pub max_pending_spans: usize,
    pub max_tracked_traces: usize,
    pub trace_memory: Duration,
    pub persist_trace_memory: bool,
    pub max_orders: usize,
    pub max_aliases: usize,
}

/// Compiled places a key can be read from.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    pub attributes: Vec<String>,
    pub resource_attributes: Vec<String>,
    pub patterns: Vec<KeyPattern>,
}

impl KeySources {
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.resource_attributes.is_empty() && self.patterns.is_empty()
    }
}

/// What a key pattern reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternSource {
    SpanName,
    Attribute(String),
}

/// A compiled key pattern; group `id` captures the key.
#[derive(Debug, Clone)]
pub struct KeyPattern {
    pub source: PatternSource,
    pub regex: Regex,
}

impl KeyPattern {
    /// The key captured from `value`, if the pattern matches and captures something non-empty.
    pub fn capture<'a>(&self, value: &'a str) -> Option<&'a str> {
        let id = self.regex.captures(value)?.name("id")?.as_str();
        // A route template such as `http.route` = `/api/orders/{id}` names a placeholder, not an order.
        let placeholder = id.starts_with('{') && id.ends_with('}') || id.starts_with(':');
        (!id.is_empty() && !placeholder).then_some(id)
    }
}

#[derive(Debug, Clone)]
pub struct AliasSource {
    pub kind: String,
    pub sources: KeySources,
}

/// Index of a milestone in `Taxonomy::milestones`, which is also its expected position in the flow.
pub type MilestoneId = usize;
/// Index of a class in `Taxonomy::classes`.
pub type ClassId = usize;

#[derive(Debug, Clone)]
pub struct Milestone {
    pub name: String,
    pub owner: String,
    pub off_path: bool,
    /// The main path may skip it without a conformance exception.
    pub skippable: bool,
    /// No milestone may follow it; terminal milestones are off the main path.
    pub terminal: bool,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExceptionClass {
    pub name: String,
    pub owner: String,
}

#[derive(Debug, Clone)]
pub struct Taxonomy {
    pub milestones: Vec<Milestone>,
    pub classes: Vec<ExceptionClass>,
    /// Classes the built-in classification falls back to when no rule decides.
    pub data_quality: ClassId,
    pub integration: ClassId,
    pub execution: ClassId,
    pub policy: ClassId,
}

impl Taxonomy {
    pub fn milestone(&self, name: &str) -> Option<MilestoneId> {
        self.milestones.iter().position(|m| m.name == name)
    }
    pub fn class(&self, name: &str) -> Option<ClassId> {
        self.classes.iter().position(|c| c.name == name)
    }
}

/// A compiled string match.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    Equals(String),
    OneOf(Vec<String>),
    Glob(GlobMatcher),
    Regex(Regex),
}

impl StringMatcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Equals(expected) => value == expected,
            StringMatcher::OneOf(options) => options.iter().any(|o| o == value),
            StringMatcher::Glob(glob) => glob.is_match(value),
            StringMatcher::Regex(regex) => regex.is_match(value),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumericOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone)]
pub enum AttributeTest {
    Exists(bool),
    String(StringMatcher),
    Numeric(NumericOp, f64),
}

#[derive(Debug, Clone)]
pub struct AttributeCondition {
    pub key: String,
    pub test: AttributeTest,
}

/// OTLP span kinds, numbered as in the protocol.
pub const SPAN_KINDS: [&str; 6] = ["unspecified", "internal", "server", "client", "producer", "consumer"];
/// OTLP status codes, numbered as in the protocol.
pub const STATUS_CODES: [&str; 3] = ["unset", "ok", "error"];

#[derive(Debug, Clone, Default)]
pub struct RuleMatch {
    pub service: Option<StringMatcher>,
    pub span_name: Option<StringMatcher>,
    /// OTLP kind numbers; empty means any.
    pub span_kinds: Vec<i32>,
    /// OTLP status code number.
    pub status: Option<i32>,
    pub attributes: Vec<AttributeCondition>,
    pub resource_attributes: Vec<AttributeCondition>,
    pub exception_event: Option<StringMatcher>,
}

/// What a rule says about the exception of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionLabel {
    /// Record this class.
    Class(ClassId),
    /// Record no exception, even where the built-in classification would.
    Suppress,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub when: RuleMatch,
    pub milestone: Option<MilestoneId>,
    pub reaches: Option<bool>,
    pub exception: Option<ExceptionLabel>,
    pub owner: Option<String>,
    pub actor_attribute: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OrderTraceConfig {
    pub service_name: String,
    pub passthrough: bool,
    pub close_on: Vec<MilestoneId>,
    pub idle_close_after: Duration,
    pub actor_attributes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name_override: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub enabled: bool,
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// `None` retries forever.
    pub max_elapsed_time: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ExporterConfig {
    /// Full URL; for HTTP it includes the `/v1/traces` path.
    pub endpoint: String,
    pub protocol: ExportProtocol,
    pub headers: BTreeMap<String, String>,
    /// `None` means plain text.
    pub tls: Option<TlsConfig>,
    pub gzip: bool,
    pub timeout: Duration,
    pub send_batch_size: usize,
    pub batch_timeout: Duration,
    pub retry: RetryConfig,
    pub queue_size: usize,
    pub num_consumers: usize,
    /// Bound of the persistent export queue.
    pub max_queue_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub directory: PathBuf,
    pub durability: crate::store::Durability,
    pub cache_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub queue_size: usize,
    pub max_group_commit: usize,
    /// Refuse requests while resident memory is above this many bytes.
    pub memory_soft_limit: Option<u64>,
}

/// Collects the first validation error with its key path.
pub(super) struct Checker<'a> {
    pub(super) file: &'a str,
}

impl Checker<'_> {
    pub(super) fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { file: self.file.to_string(), key: key.into(), reason: reason.into() }
    }

    fn regex(&self, key: String, pattern: &str) -> Result<Regex, ConfigError> {
        Regex::new(pattern).map_err(|e| self.err(key, format!("invalid regular expression: {e}")))
    }

    fn glob(&self, key: String, pattern: &str) -> Result<GlobMatcher, ConfigError> {
        GlobBuilder::new(pattern)
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map(|g| g.compile_matcher())
            .map_err(|e| self.err(key, format!("invalid glob: {e}")))
    }

    pub(super) fn positive(&self, key: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
        match value {
            Some(0) => Err(self.err(key, "must be greater than zero")),
            Some(v) => Ok(v),
            None => Ok(default),
        }
    }

    fn string_matcher(&self, key: &str, raw: &RawStringMatch) -> Result<StringMatcher, ConfigError> {
        let set = [raw.equals.is_some(), raw.one_of.is_some(), raw.glob.is_some(), raw.regex.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(self.err(key, "give exactly one of equals, one_of, glob, regex"));
        }
        if let Some(v) = &raw.equals {
            return Ok(StringMatcher::Equals(v.clone()));
        }
        if let Some(v) = &raw.one_of {
            if v.is_empty() {
                return Err(self.err(format!("{key}.one_of"), "must not be empty"));
            }
            return Ok(StringMatcher::OneOf(v.clone()));
        }
        if let Some(v) = &raw.glob {
            return Ok(StringMatcher::Glob(self.glob(format!("{key}.glob"), v)?));
        }
        let pattern = raw.regex.as_deref().unwrap_or_default();
        Ok(StringMatcher::Regex(self.regex(format!("{key}.regex"), pattern)?))
    }

    fn attribute_condition(&self, key: &str, raw: &RawAttributeMatch) -> Result<AttributeCondition, ConfigError> {
        if raw.key.is_empty() {
            return Err(self.err(format!("{key}.key"), "must not be empty"));
        }
        let string = RawStringMatch {
            equals: raw.equals.clone(),
            one_of: raw.one_of.clone(),
            glob: raw.glob.clone(),
            regex: raw.regex.clone(),
        };
        let numeric =
            [(NumericOp::Gt, raw.gt), (NumericOp::Gte, raw.gte), (NumericOp::Lt, raw.lt), (NumericOp::Lte, raw.lte)];
        let numeric: Vec<_> = numeric.into_iter().filter_map(|(op, v)| v.map(|v| (op, v))).collect();
        let string_count = [raw.equals.is_some(), raw.one_of.is_some(), raw.glob.is_some(), raw.regex.is_some()]
            .iter()
            .filter(|s| **s)
            .count();
        let total = string_count + numeric.len() + usize::from(raw.exists.is_some());
        if total != 1 {
            return Err(
                self.err(key, "give `key` and exactly one of exists, equals, one_of, glob, regex, gt, gte, lt, lte")
            );
        }
        let test = if let Some(exists) = raw.exists {
            AttributeTest::Exists(exists)
        } else if let Some((op, value)) = numeric.first() {
            if !value.is_finite() {
                return Err(self.err(key, "numeric comparison needs a finite number"));
            }
            AttributeTest::Numeric(*op, *value)
        } else {
            AttributeTest::String(self.string_matcher(key, &string)?)
        };
        Ok(AttributeCondition { key: raw.key.clone(), test })
    }

    fn pattern(&self, key: &str, raw: &RawPattern) -> Result<KeyPattern, ConfigError> {
        if raw.source.is_empty() {
            return Err(self.err(format!("{key}.source"), "must not be empty"));
        }
        let source = if raw.source == "span.name" {
            PatternSource::SpanName
        } else {
            PatternSource::Attribute(raw.source.clone())
        };
        let regex = match (&raw.template, &raw.regex) {
            (Some(template), None) => {
                let compiled =
                    template_to_regex(template).map_err(|reason| self.err(format!("{key}.template"), reason))?;
                self.regex(format!("{key}.template"), &compiled)?
            }
            (None, Some(regex)) => {
                let compiled = self.regex(format!("{key}.regex"), regex)?;
                if !compiled.capture_names().any(|n| n == Some("id")) {
                    return Err(
                        self.err(format!("{key}.regex"), "needs a named group `(?P<id>...)` that captures the key")
                    );
                }
                compiled
            }
            _ => return Err(self.err(key, "give exactly one of template, regex")),
        };
        Ok(KeyPattern { source, regex })
    }

    fn key_sources(
        &self,
        key: &str,
        attributes: &[String],
        resource_attributes: &[String],
        patterns: &[RawPattern],
    ) -> Result<KeySources, ConfigError> {
        for (i, a) in attributes.iter().enumerate() {
            if a.is_empty() {
                return Err(self.err(format!("{key}.attributes[{i}]"), "must not be empty"));
            }
        }
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| self.pattern(&format!("{key}.patterns[{i}]"), p))
            .collect::<Result<_, _>>()?;
        Ok(KeySources { attributes: attributes.to_vec(), resource_attributes: resource_attributes.to_vec(), patterns })
    }
}

/// Turns `/api/orders/{id}/release` into an anchored regex; `{*}` matches one path segment and a trailing
/// `/**` the rest of the path.
pub fn template_to_regex(template: &str) -> Result<String, String> {
    if !template.contains("{id}") {
        return Err("template must contain `{id}`".into());
    }
    let (body, tail) = match template.strip_suffix("/**") {
        Some(body) => (body, "(?:/.*)?"),
        None => (template, ""),
    };
    let mut out = String::from("^");
    let mut rest = body;
    while let Some(start) = rest.find('{') {
        out.push_str(&regex::escape(&rest[..start]));
        let end = rest[start..].find('}').ok_or("unclosed `{` in template")? + start;
        match &rest[start + 1..end] {
            "id" => out.push_str("(?P<id>[^/?#]+)"),
            "*" => out.push_str("[^/?#]+"),
            other => return Err(format!("unknown placeholder `{{{other}}}`; use {{id}} or {{*}}")),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(&regex::escape(rest));
    out.push_str(tail);
    out.push_str("(?:[?#].*)?$");
    Ok(out)
}

pub(super) fn socket_addr(check: &Checker, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let normalised = value.strip_prefix("localhost:").map(|port| format!("127.0.0.1:{port}"));
    normalised
        .as_deref()
        .unwrap_or(value)
        .parse()
        .map_err(|e| check.err(key, format!("`{value}` is not a host:port address ({e})")))
}

impl Config {
    /// Validates `raw`, read from `file`.
    pub fn from_raw(raw: RawConfig, file: &str) -> Result<Config, ConfigError> {
        let check = Checker { file };

        // Receivers.
        let grpc_raw = &raw.receivers.otlp.protocols.grpc;
        let grpc = if grpc_raw.enabled.unwrap_or(true) {
            let endpoint = grpc_raw.endpoint.as_deref().unwrap_or("0.0.0.0:4317");
            let mib = grpc_raw.max_recv_msg_size_mib.unwrap_or(4);
            if mib == 0 || mib > 1024 {
                return Err(
                    check.err("receivers.otlp.protocols.grpc.max_recv_msg_size_mib", "must be between 1 and 1024")
                );
            }
            Some(GrpcServerConfig {
                endpoint: socket_addr(&check, "receivers.otlp.protocols.grpc.endpoint", endpoint)?,
                max_recv_msg_size: (mib * 1024 * 1024) as usize,
            })
        } else {
            None
        };
        let http_raw = &raw.receivers.otlp.protocols.http;
        let http = if http_raw.enabled.unwrap_or(true) {
            let endpoint = http_raw.endpoint.as_deref().unwrap_or("0.0.0.0:4318");
            let body = http_raw.max_request_body_size.unwrap_or(20 * 1024 * 1024);
            let decompressed = http_raw.max_decompressed_body_size.unwrap_or(64 * 1024 * 1024);
            if body == 0 {
                return Err(
                    check.err("receivers.otlp.protocols.http.max_request_body_size", "must be greater than zero")
                );
            }
            if decompressed < body {
                return Err(check.err(
                    "receivers.otlp.protocols.http.max_decompressed_body_size",
                    "must be at least max_request_body_size",
                ));
            }
            Some(HttpServerConfig {
                endpoint: socket_addr(&check, "receivers.otlp.protocols.http.endpoint", endpoint)?,
                max_request_body_size: body as usize,
                max_decompressed_body_size: decompressed as usize,
            })
        } else {
            None
        };
        if grpc.is_none() && http.is_none() {
            return Err(check.err("receivers.otlp.protocols", "at least one of grpc, http must be enabled"));
        }

        // Taxonomy.
        let mut milestones = Vec::new();
        for (i, m) in raw.taxonomy.milestones.iter().enumerate() {
            let key = format!("taxonomy.milestones[{i}]");
            if !is_snake_name(&m.name) {
                return Err(check.err(format!("{key}.name"), format!("`{}` must be lower snake case", m.name)));
            }
            if milestones.iter().any(|x: &Milestone| x.name == m.name) {
                return Err(check.err(format!("{key}.name"), format!("milestone `{}` is defined twice", m.name)));
            }
            if m.owner.trim().is_empty() {
                return Err(check.err(format!("{key}.owner"), "must not be empty"));
            }
            milestones.push(Milestone {
                name: m.name.clone(),
                owner: m.owner.clone(),
                off_path: m.off_path || m.terminal,
                skippable: m.skippable,
                terminal: m.terminal,
                description: m.description.clone(),
            });
        }
        if milestones.is_empty() {
            return Err(check.err("taxonomy.milestones", "at least one milestone is needed"));
        }
        let mut classes = Vec::new();
        for (name, class) in &raw.taxonomy.exception_classes {
            let key = format!("taxonomy.exception_classes.{name}");
            if !is_snake_name(name) || name == "none" {
                return Err(check.err(key, "class names must be lower snake case and not `none`"));
            }
            if class.owner.trim().is_empty() {
                return Err(check.err(format!("{key}.owner"), "must not be empty"));
            }
            classes.push(ExceptionClass { name: name.clone(), owner: class.owner.clone() });
        }
        let find_class = |name: &str| {
            classes.iter().position(|c| c.name == name).ok_or_else(|| {
                check.err(
                    "taxonomy.exception_classes",
                    format!("class `{name}` is required (the built-in classification uses it)"),
                )
            })
        };
        let data_quality = find_class("data_quality")?;
        let integration = find_class("integration")?;
        let execution = find_class("execution")?;
        let policy = find_class("policy")?;
        let taxonomy = Taxonomy { milestones, classes, data_quality, integration, execution, policy };

        // Correlation.
        let c = &raw.correlation;
        let order_keys = match &c.order_keys {
            Some(k) => {
                check.key_sources("correlation.order_keys", &k.attributes, &k.resource_attributes, &k.patterns)?
            }
            None => KeySources { attributes: vec!["order.id".into(), "app.order.id".into()], ..Default::default() },
        };
        if order_keys.is_empty() {
            return Err(check.err("correlation.order_keys", "at least one source of the order key is needed"));
        }
        let mut aliases = Vec::new();
        for (i, a) in c.aliases.iter().enumerate() {
            let key = format!("correlation.aliases[{i}]");
            if !is_snake_name(&a.kind) {
                return Err(check.err(format!("{key}.kind"), format!("`{}` must be lower snake case", a.kind)));
            }
            if aliases.iter().any(|x: &AliasSource| x.kind == a.kind) {
                return Err(check.err(format!("{key}.kind"), format!("alias kind `{}` is defined twice", a.kind)));
            }
            let sources = check.key_sources(&key, &a.attributes, &a.resource_attributes, &a.patterns)?;
            if sources.is_empty() {
                return Err(check.err(key, "an alias needs at least one attribute, resource attribute or pattern"));
            }
            aliases.push(AliasSource { kind: a.kind.clone(), sources });
        }
        let correlation = CorrelationConfig {
            order_keys,
            aliases,
            inherit_wait: c.inherit_wait.unwrap_or(Duration::from_secs(2)),
            max_pending_spans: check.positive("correlation.max_pending_spans", c.max_pending_spans, 100_000)?,
            max_tracked_traces: check.positive("correlation.max_tracked_traces", c.max_tracked_traces, 200_000)?,
            trace_memory: c.trace_memory.unwrap_or(Duration::from_secs(600)),
            persist_trace_memory: c.persist_trace_memory.unwrap_or(true),
            max_orders: check.positive("correlation.max_orders", c.max_orders, 1_000_000)?,
            max_aliases: check.positive("correlation.max_aliases", c.max_aliases, 2_000_000)?,
        };
        if correlation.trace_memory < correlation.inherit_wait {
            return Err(check.err("correlation.trace_memory", "must be at least inherit_wait"));
        }

        // Rules.
        let mut rules = Vec::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let key = format!("rules[{i}]");
            if r.name.trim().is_empty() {
                return Err(check.err(format!("{key}.name"), "must not be empty"));
            }
            if rules.iter().any(|x: &Rule| x.name == r.name) {
                return Err(check.err(format!("{key}.name"), format!("rule `{}` is defined twice", r.name)));
            }
            let m = &r.when;
            let mkey = format!("{key}.match");
            let service =
                m.service.as_ref().map(|s| check.string_matcher(&format!("{mkey}.service"), s)).transpose()?;
            let span_name =
                m.span_name.as_ref().map(|s| check.string_matcher(&format!("{mkey}.span_name"), s)).transpose()?;
            let mut span_kinds = Vec::new();
            for (j, k) in m.span_kind.iter().enumerate() {
                let position = SPAN_KINDS[1..].iter().position(|x| x == k).ok_or_else(|| {
                    check.err(
                        format!("{mkey}.span_kind[{j}]"),
                        format!("`{k}` is not one of internal, server, client, producer, consumer"),
                    )
                })?;
                span_kinds.push(position as i32 + 1);
            }
            let status = m
                .status
                .as_ref()
                .map(|s| {
                    STATUS_CODES.iter().position(|x| x == s).map(|p| p as i32).ok_or_else(|| {
                        check.err(format!("{mkey}.status"), format!("`{s}` is not one of unset, ok, error"))
                    })
                })
                .transpose()?;
            let attributes = m
                .attributes
                .iter()
                .enumerate()
                .map(|(j, a)| check.attribute_condition(&format!("{mkey}.attributes[{j}]"), a))
                .collect::<Result<_, _>>()?;
            let resource_attributes = m
                .resource_attributes
                .iter()
                .enumerate()
                .map(|(j, a)| check.attribute_condition(&format!("{mkey}.resource_attributes[{j}]"), a))
                .collect::<Result<_, _>>()?;
            let exception_event = m
                .exception_event
                .as_ref()
                .map(|s| check.string_matcher(&format!("{mkey}.exception_event"), s))
                .transpose()?;
            let milestone = r
                .milestone
                .as_ref()
                .map(|name| {
                    taxonomy.milestone(name).ok_or_else(|| {
                        check.err(
                            format!("{key}.milestone"),
                            format!("`{name}` is not a milestone of taxonomy.milestones"),
                        )
                    })
                })
                .transpose()?;
            let exception = r
                .exception
                .as_ref()
                .map(|name| {
                    if name == "none" {
                        return Ok(ExceptionLabel::Suppress);
                    }
                    taxonomy.class(name).map(ExceptionLabel::Class).ok_or_else(|| {
                        check.err(
                            format!("{key}.exception"),
                            format!("`{name}` is not a class of taxonomy.exception_classes"),
                        )
                    })
                })
                .transpose()?;
            if milestone.is_none() && exception.is_none() {
                return Err(check.err(key, "a rule must name a milestone, an exception or both"));
            }
            if r.reaches.is_some() && milestone.is_none() {
                return Err(check.err(format!("{key}.reaches"), "only meaningful together with milestone"));
            }
            if r.owner.is_some() && !matches!(exception, Some(ExceptionLabel::Class(_))) {
                return Err(check.err(format!("{key}.owner"), "only meaningful together with an exception class"));
            }
            rules.push(Rule {
                name: r.name.clone(),
                when: RuleMatch {
                    service,
                    span_name,
                    span_kinds,
                    status,
                    attributes,
                    resource_attributes,
                    exception_event,
                },
                milestone,
                reaches: r.reaches,
                exception,
                owner: r.owner.clone(),
                actor_attribute: r.actor_attribute.clone(),
            });
        }

        // Order traces.
        let o = &raw.order_traces;
        let close_on = match &o.close_on {
            Some(names) => names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    taxonomy.milestone(name).ok_or_else(|| {
                        check.err(
                            format!("order_traces.close_on[{i}]"),
                            format!("`{name}` is not a milestone of taxonomy.milestones"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            None => taxonomy.milestones.iter().rposition(|m| !m.off_path).into_iter().collect(),
        };
        let order_traces = OrderTraceConfig {
            service_name: o.service_name.clone().unwrap_or_else(|| "ordertrail".into()),
            passthrough: o.passthrough.unwrap_or(true),
            close_on,
            idle_close_after: o.idle_close_after.unwrap_or(Duration::from_secs(7 * 24 * 3600)),
            actor_attributes: o
                .actor_attributes
                .clone()
                .unwrap_or_else(|| vec!["order.actor".into(), "enduser.id".into()]),
        };
        if order_traces.idle_close_after.is_zero() {
            return Err(check.err("order_traces.idle_close_after", "must be greater than zero"));
        }

        let exporter = raw
            .exporters
            .otlp
            .as_ref()
            .map(|e| exporter_config_checked(&check, "exporters.otlp", "/v1/traces", e))
            .transpose()?;

        let storage = StorageConfig {
            directory: PathBuf::from(raw.storage.directory.clone().unwrap_or_else(|| "./ordertrail-data".into())),
            durability: match raw.storage.durability.as_deref().unwrap_or("durable") {
                "durable" => crate::store::Durability::Durable,
                "memory" => crate::store::Durability::Memory,
                other => {
                    return Err(check.err("storage.durability", format!("`{other}` is not one of durable, memory")))
                }
            },
            cache_bytes: check.positive("storage.cache_size_mib", raw.storage.cache_size_mib, 64)? * 1024 * 1024,
        };
        let memory_soft_limit = match raw.pipeline.memory_limit_mib {
            None => None,
            Some(limit) if limit < 64 => {
                return Err(check.err("pipeline.memory_limit_mib", "must be at least 64 MiB"));
            }
            Some(limit) => {
                let spike = raw.pipeline.memory_spike_limit_mib.unwrap_or(limit / 5);
                if spike >= limit {
                    return Err(check.err("pipeline.memory_spike_limit_mib", "must be below memory_limit_mib"));
                }
                Some((limit - spike) * 1024 * 1024)
            }
        };
        let pipeline = PipelineConfig {
            queue_size: check.positive("pipeline.queue_size", raw.pipeline.queue_size, 256)?,
            max_group_commit: check.positive("pipeline.max_group_commit", raw.pipeline.max_group_commit, 64)?,
            memory_soft_limit,
        };

        let dimensions = super::operations::dimensions(&check, &raw.dimensions)?;
        let sla = super::operations::sla(&check, &raw.sla, &taxonomy, &dimensions)?;
        let conformance = super::operations::conformance(&check, &raw.conformance, &taxonomy)?;
        let kpis = super::operations::kpis(&raw.kpis);
        let api = super::operations::api(&check, &raw.api)?;
        let metrics = super::operations::metrics(&check, &raw.telemetry.metrics)?;

        Ok(Config {
            source: file.to_string(),
            receivers: ReceiverConfig { grpc, http },
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
        })
    }
}

/// Validates an exporter section; also used for `--export-endpoint` on the command line.
pub fn exporter_from_raw(file: &str, raw: &RawOtlpExporter) -> Result<ExporterConfig, ConfigError> {
    exporter_config_checked(&Checker { file }, "exporters.otlp", "/v1/traces", raw)
}

/// Validates an OTLP client section found under `key`; `signal_path` (`/v1/traces`, `/v1/metrics`) completes
/// HTTP endpoints that name only the host.
pub(super) fn exporter_config_checked(
    check: &Checker,
    key: &str,
    signal_path: &str,
    raw: &RawOtlpExporter,
) -> Result<ExporterConfig, ConfigError> {
    let protocol = match raw.protocol.as_deref().unwrap_or("grpc") {
        "grpc" => ExportProtocol::Grpc,
        "http/protobuf" => ExportProtocol::HttpProtobuf,
        other => {
            return Err(check.err(format!("{key}.protocol"), format!("`{other}` is not one of grpc, http/protobuf")))
        }
    };
    let endpoint = raw.endpoint.clone().ok_or_else(|| check.err(format!("{key}.endpoint"), "is required"))?;
    let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
    if !scheme_ok || endpoint.len() <= "https://".len() {
        return Err(check.err(format!("{key}.endpoint"), format!("`{endpoint}` must be an http:// or https:// URL")));
    }
    let endpoint = match protocol {
        ExportProtocol::Grpc => endpoint,
        ExportProtocol::HttpProtobuf => {
            let trimmed = endpoint.trim_end_matches('/');
            if trimmed.ends_with(signal_path) {
                trimmed.to_string()
            } else {
                format!("{trimmed}{signal_path}")
            }
        }
    };
    for (name, value) in &raw.headers {
        let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name || value.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(check.err(format!("{key}.headers.{name}"), "not a valid header name and value"));
        }
    }
    let tls = match &raw.tls {
        Some(t) if !t.insecure => {
            if t.cert_file.is_some() != t.key_file.is_some() {
                return Err(check.err(format!("{key}.tls"), "cert_file and key_file go together"));
            }
            for (field, path) in [("ca_file", &t.ca_file), ("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
                if let Some(path) = path {
                    if !std::path::Path::new(path).is_file() {
                        return Err(check.err(format!("{key}.tls.{field}"), format!("file `{path}` does not exist")));
                    }
                }
            }
            Some(TlsConfig {
                ca_file: t.ca_file.as_ref().map(PathBuf::from),
                cert_file: t.cert_file.as_ref().map(PathBuf::from),
                key_file: t.key_file.as_ref().map(PathBuf::from),
                server_name_override: t.server_name_override.clone(),
            })
        }
        Some(_) => None,
        None if endpoint.starts_with("https://") => {
            Some(TlsConfig { ca_file: None, cert_file: None, key_file: None, server_name_override: None })
        }
        None => None,
    };
    if tls.is_some() && endpoint.starts_with("http://") {
        return Err(check.err(
            format!("{key}.endpoint"),
            "TLS is configured but the endpoint is http://; use https:// or tls.insecure",
        ));
    }
    let gzip = match raw.compression.as_deref().unwrap_or("gzip") {
        "gzip" => true,
        "none" | "" => false,
        other => return Err(check.err(format!("{key}.compression"), format!("`{other}` is not one of gzip, none"))),
    };
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(10));
    if timeout.is_zero() {
        return Err(check.err(format!("{key}.timeout"), "must be greater than zero"));
    }
    let batch = raw.batch.clone().unwrap_or_default();
    let retry = raw.retry_on_failure.clone().unwrap_or_default();
    let queue = raw.sending_queue.clone().unwrap_or_default();
    let retry = RetryConfig {
        enabled: retry.enabled.unwrap_or(true),
        initial_interval: retry.initial_interval.unwrap_or(Duration::from_secs(5)),
        max_interval: retry.max_interval.unwrap_or(Duration::from_secs(30)),
        max_elapsed_time: match retry.max_elapsed_time {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => None,
        },
    };
    if retry.initial_interval.is_zero() || retry.max_interval < retry.initial_interval {
        return Err(check.err(
            format!("{key}.retry_on_failure.max_interval"),
            "initial_interval must be positive and not above max_interval",
        ));
    }
    Ok(ExporterConfig {
        endpoint,
        protocol,
        headers: raw.headers.clone(),
        tls,
        gzip,
        timeout,
        send_batch_size: check.positive(&format!("{key}.batch.send_batch_size"), batch.send_batch_size, 2048)?,
        batch_timeout: batch.timeout.unwrap_or(Duration::from_millis(200)),
        retry,
        queue_size: check.positive(&format!("{key}.sending_queue.queue_size"), queue.queue_size, 64)?,
        num_consumers: check.positive(&format!("{key}.sending_queue.num_consumers"), queue.num_consumers, 4)?,
        max_queue_bytes: match queue.max_bytes {
            Some(b) if b < 1024 * 1024 => {
                return Err(check.err(format!("{key}.sending_queue.max_bytes"), "must be at least 1 MiB"));
            }
            Some(b) => b,
            None => 1024 * 1024 * 1024,
        },
    })
}

pub(super) fn is_snake_name(name: &str) -> bool {
    !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_capture_the_id_and_allow_query_strings() {
        let re = Regex::new(&template_to_regex("/api/orders/{id}/**").unwrap()).unwrap();
        assert_eq!(&re.captures("/api/orders/SO-1/release").unwrap()["id"], "SO-1");
        assert_eq!(&re.captures("/api/orders/SO-1").unwrap()["id"], "SO-1");
        assert_eq!(&re.captures("/api/orders/SO-1?x=1").unwrap()["id"], "SO-1");
        assert!(re.captures("/api/orders").is_none());
        assert!(re.captures("/v2/api/orders/SO-1").is_none());
        let exact = Regex::new(&template_to_regex("/api/{*}/orders/{id}/release").unwrap()).unwrap();
        assert_eq!(&exact.captures("/api/v1/orders/7/release").unwrap()["id"], "7");
        assert!(exact.captures("/api/v1/orders/7/cancel").is_none());
        assert!(template_to_regex("/api/orders").is_err());
        let pattern = KeyPattern { source: PatternSource::SpanName, regex: re.clone() };
        assert_eq!(pattern.capture("/api/orders/{id}/release"), None, "a route template is not an order");
        assert_eq!(pattern.capture("/api/orders/:id/release"), None);
        assert_eq!(pattern.capture("/api/orders/SO-1/release"), Some("SO-1"));
        assert!(template_to_regex("/api/{order}").is_err());
    }
}
