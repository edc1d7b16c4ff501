//! `correlation`: where order keys and alias keys are found, and how unkeyed spans inherit an order.

use super::check::{is_snake_name, Checker, ConfigError};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where order keys and alias keys are found, and how unkeyed spans inherit an order.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawCorrelation {
    /// Sources of the order key itself.
    pub order_keys: RawKeySources,
    /// Secondary business keys (shipment, delivery, invoice, ASN, PO…) that lead to orders once learned.
    pub aliases: Vec<RawAlias>,
    /// How long a span with no key waits for a keyed span of its technical trace.
    #[serde(with = "humantime_serde")]
    pub inherit_wait: Duration,
    /// Most spans held while waiting to inherit an order; beyond it spans pass on uncorrelated.
    pub max_pending_spans: usize,
    /// Most technical traces remembered with their orders.
    pub max_tracked_traces: usize,
    /// Keep the remembered technical traces in the store, so that a span arriving after a restart still joins the
    /// order its trace was tied to before. Costs one write per new technical trace.
    pub persist_trace_memory: bool,
    /// How long a technical trace's orders are remembered after its last span.
    #[serde(with = "humantime_serde")]
    pub trace_memory: Duration,
    /// Most orders held in memory (the hot set). Beyond it the oldest closed orders are evicted, then the open orders
    /// least recently active; the service reads an evicted order back from its store when a span, an SLA deadline
    /// or a settling milestone names it. New orders are refused only while every order in memory has changes not
    /// yet committed.
    pub max_orders: usize,
    /// Most alias values remembered.
    pub max_aliases: usize,
    /// Most orders one alias value may name. A value that comes to name more (a placeholder such as `N/A` in an
    /// alias attribute, or a consolidation far larger than the business has) is no alias: it stops naming orders,
    /// is counted and logged once, and spans carrying it find their orders some other way.
    pub max_orders_per_alias: usize,
    /// Most orders one technical trace may name and pass on to its unkeyed spans. A trace over it (a batch job
    /// touching thousands of orders) still records each keyed span on its own orders, but its unkeyed spans
    /// inherit nothing, instead of being copied into every order.
    pub max_orders_per_trace: usize,
    /// Spans passed on uncorrelated that are kept a while, so that an alias or a keyed span of their trace that
    /// arrives later still brings them into their order's trace.
    pub late_joins: RawLateJoins,
}

/// The memory of recently uncorrelated spans that may still join an order.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawLateJoins {
    /// How long an uncorrelated span is kept.
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
    /// Most spans kept; beyond it the oldest go first, counted.
    pub max_spans: usize,
    /// Most bytes of spans kept (their encoded size); beyond it the oldest go first, counted.
    pub max_bytes: u64,
}

impl Default for RawLateJoins {
    fn default() -> RawLateJoins {
        RawLateJoins { keep: Duration::from_secs(3600), max_spans: 20_000, max_bytes: 32 * 1024 * 1024 }
    }
}

impl Default for RawCorrelation {
    /// The order keys and aliases themselves come from the embedded default file: they describe a landscape,
    /// not a mechanism, so the code has none of its own.
    fn default() -> RawCorrelation {
        RawCorrelation {
            order_keys: RawKeySources::default(),
            aliases: Vec::new(),
            inherit_wait: Duration::from_secs(10),
            max_pending_spans: 100_000,
            max_tracked_traces: 200_000,
            persist_trace_memory: true,
            trace_memory: Duration::from_secs(600),
            max_orders: 1_000_000,
            max_aliases: 2_000_000,
            max_orders_per_alias: 100,
            max_orders_per_trace: 100,
            late_joins: RawLateJoins::default(),
        }
    }
}

/// Places a key can be read from.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawKeySources {
    /// Span attributes holding the key; an array value names several keys.
    pub attributes: Vec<String>,
    /// Resource attributes holding the key.
    pub resource_attributes: Vec<String>,
    /// Patterns over the span name or an attribute value such as `url.path` or `http.route`.
    pub patterns: Vec<RawPattern>,
}

/// A pattern that extracts a key from a string value.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPattern {
    /// What the pattern is applied to: `span.name` or the name of a span attribute.
    pub source: String,
    /// A path template such as `/api/orders/{id}/release`; `{id}` captures the key, `{*}` matches one segment,
    /// and a trailing `/**` matches the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A regular expression with a named group `id` that captures the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// One kind of alias key. Its source fields repeat those of [`RawKeySources`] because serde cannot combine
/// `flatten` with `deny_unknown_fields`, and refusing misspelt keys matters more here than the repetition.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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
    pub max_orders_per_alias: usize,
    pub max_orders_per_trace: usize,
    pub late_joins: LateJoinConfig,
}

/// Bounds of the memory of recently uncorrelated spans.
#[derive(Debug, Clone, Copy)]
pub struct LateJoinConfig {
    pub keep: Duration,
    pub max_spans: usize,
    pub max_bytes: u64,
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

impl RawCorrelation {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<CorrelationConfig, ConfigError> {
        let order_keys = self.order_keys.check(check, "correlation.order_keys")?;
        if order_keys.is_empty() {
            return Err(check.err("correlation.order_keys", "at least one source of the order key is needed"));
        }
        let mut aliases: Vec<AliasSource> = Vec::new();
        for (i, a) in self.aliases.iter().enumerate() {
            let key = format!("correlation.aliases[{i}]");
            if !is_snake_name(&a.kind) {
                return Err(check.err(format!("{key}.kind"), format!("`{}` must be lower snake case", a.kind)));
            }
            if aliases.iter().any(|x| x.kind == a.kind) {
                return Err(check.err(format!("{key}.kind"), format!("alias kind `{}` is defined twice", a.kind)));
            }
            let sources = RawKeySources {
                attributes: a.attributes.clone(),
                resource_attributes: a.resource_attributes.clone(),
                patterns: a.patterns.clone(),
            }
            .check(check, &key)?;
            if sources.is_empty() {
                return Err(check.err(key, "an alias needs at least one attribute, resource attribute or pattern"));
            }
            aliases.push(AliasSource { kind: a.kind.clone(), sources });
        }
        let correlation = CorrelationConfig {
            order_keys,
            aliases,
            inherit_wait: self.inherit_wait,
            max_pending_spans: check.positive("correlation.max_pending_spans", self.max_pending_spans)?,
            max_tracked_traces: check.positive("correlation.max_tracked_traces", self.max_tracked_traces)?,
            trace_memory: self.trace_memory,
            persist_trace_memory: self.persist_trace_memory,
            max_orders: check.positive("correlation.max_orders", self.max_orders)?,
            max_aliases: check.positive("correlation.max_aliases", self.max_aliases)?,
            max_orders_per_alias: check.positive("correlation.max_orders_per_alias", self.max_orders_per_alias)?,
            max_orders_per_trace: check.positive("correlation.max_orders_per_trace", self.max_orders_per_trace)?,
            late_joins: LateJoinConfig {
                keep: self.late_joins.keep,
                max_spans: self.late_joins.max_spans,
                max_bytes: self.late_joins.max_bytes,
            },
        };
        if correlation.trace_memory < correlation.inherit_wait {
            return Err(check.err("correlation.trace_memory", "must be at least inherit_wait"));
        }
        Ok(correlation)
    }
}

impl RawKeySources {
    fn check(&self, check: &Checker<'_>, key: &str) -> Result<KeySources, ConfigError> {
        for (i, a) in self.attributes.iter().enumerate() {
            if a.is_empty() {
                return Err(check.err(format!("{key}.attributes[{i}]"), "must not be empty"));
            }
        }
        let patterns = self
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| p.check(check, &format!("{key}.patterns[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(KeySources {
            attributes: self.attributes.clone(),
            resource_attributes: self.resource_attributes.clone(),
            patterns,
        })
    }
}

impl RawPattern {
    fn check(&self, check: &Checker<'_>, key: &str) -> Result<KeyPattern, ConfigError> {
        if self.source.is_empty() {
            return Err(check.err(format!("{key}.source"), "must not be empty"));
        }
        let source = if self.source == "span.name" {
            PatternSource::SpanName
        } else {
            PatternSource::Attribute(self.source.clone())
        };
        let regex = match (&self.template, &self.regex) {
            (Some(template), None) => {
                let compiled =
                    template_to_regex(template).map_err(|reason| check.err(format!("{key}.template"), reason))?;
                check.regex(format!("{key}.template"), &compiled)?
            }
            (None, Some(regex)) => {
                let compiled = check.regex(format!("{key}.regex"), regex)?;
                if !compiled.capture_names().any(|n| n == Some("id")) {
                    return Err(
                        check.err(format!("{key}.regex"), "needs a named group `(?P<id>...)` that captures the key")
                    );
                }
                compiled
            }
            _ => return Err(check.err(key, "give exactly one of template, regex")),
        };
        Ok(KeyPattern { source, regex })
    }
}

/// Turns `/api/orders/{id}/release` into an anchored regex; `{*}` matches one path segment and a trailing
/// `/**` the rest of the path. `{id:PATTERN}` constrains what the key may be, e.g. `{id:[A-Z]{2}-\d+}`, so that
/// a collection action such as `/api/orders/allocate` is not taken for an order named `allocate`.
pub fn template_to_regex(template: &str) -> Result<String, String> {
    if !template.contains("{id}") && !template.contains("{id:") {
        return Err("template must contain `{id}` or `{id:PATTERN}`".into());
    }
    let (body, tail) = match template.strip_suffix("/**") {
        Some(body) => (body, "(?:/.*)?"),
        None => (template, ""),
    };
    let mut out = String::from("^");
    let mut rest = body;
    while let Some(start) = rest.find('{') {
        out.push_str(&regex::escape(&rest[..start]));
        // The placeholder ends at its matching brace, so that a pattern may hold quantifiers such as `{2}`.
        let mut depth = 0usize;
        let end = rest[start..]
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(start + i)
            })
            .ok_or("unclosed `{` in template")?;
        match &rest[start + 1..end] {
            "id" => out.push_str("(?P<id>[^/?#]+)"),
            "*" => out.push_str("[^/?#]+"),
            other => match other.strip_prefix("id:") {
                // The template's next literal (or its end) bounds the capture; a pattern that may match `/` can
                // still cross segments, so patterns use `[^/?#]` where they mean "any".
                Some(pattern) if !pattern.is_empty() => out.push_str(&format!("(?P<id>(?:{pattern}))")),
                _ => return Err(format!("unknown placeholder `{{{other}}}`; use {{id}}, {{id:PATTERN}} or {{*}}")),
            },
        }
        rest = &rest[end + 1..];
    }
    out.push_str(&regex::escape(rest));
    out.push_str(tail);
    out.push_str("(?:[?#].*)?$");
    Ok(out)
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

    #[test]
    fn a_constrained_capture_leaves_collection_actions_alone() {
        let any_digit = Regex::new(&template_to_regex(r"/api/orders/{id:[^/?#]*\d[^/?#]*}/**").unwrap()).unwrap();
        let pattern = KeyPattern { source: PatternSource::SpanName, regex: any_digit };
        assert_eq!(pattern.capture("/api/orders/SO-10042/release"), Some("SO-10042"));
        assert_eq!(pattern.capture("/api/orders/10042"), Some("10042"));
        assert_eq!(pattern.capture("/api/orders/allocate"), None, "an action, not an order");
        assert_eq!(pattern.capture("/api/orders/bulk-release?x=1"), None);
        let exact = Regex::new(&template_to_regex(r"/orders/{id:[A-Z]{2}-\d{5}}").unwrap()).unwrap();
        assert_eq!(&exact.captures("/orders/SO-10042").unwrap()["id"], "SO-10042");
        assert!(exact.captures("/orders/SO-1004").is_none());
        assert!(template_to_regex("/orders/{id:}").is_err());
        assert!(template_to_regex("/orders/{id:[0-9]").is_err(), "unclosed");
    }
}
