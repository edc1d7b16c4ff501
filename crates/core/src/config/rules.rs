//! `rules`: conditions on a span's service, name, kind, status, attributes and exception events, and the
//! milestone and exception they label it with. Compiled once here, so that the per-span path only runs matchers.

use super::check::{Checker, ConfigError};
use super::taxonomy::{ClassId, MilestoneId, Taxonomy};
use globset::GlobMatcher;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// A labelling rule: when all conditions of `match` hold, the labels of the rule apply.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Rule name, used in logs and on the span (`order.rule`).
    pub name: String,
    /// Conditions; all must hold. An empty match matches every span.
    #[serde(default, rename = "match")]
    pub when: RawMatch,
    /// Milestone this span concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestone: Option<String>,
    /// Whether the span reaches its milestone (true) or only works on it (false). Left out: true unless the
    /// span's status is error or the rule names an exception.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaches: Option<bool>,
    /// Exception class to record, or `none` to suppress the default classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// Owner of the exception, overriding the class owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Span attribute naming the actor (user, approver, system) that did this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_attribute: Option<String>,
}

/// Conditions of a rule.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// The resource's `service.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<RawStringMatch>,
    /// The span name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_name: Option<RawStringMatch>,
    /// Span kinds, any of `internal`, `server`, `client`, `producer`, `consumer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub span_kind: Vec<String>,
    /// Span status, one of `unset`, `ok`, `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Conditions on span attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<RawAttributeMatch>,
    /// Conditions on resource attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_attributes: Vec<RawAttributeMatch>,
    /// Requires an `exception` event; the string match applies to `exception.type` (use `{glob: "*"}` for any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_event: Option<RawStringMatch>,
}

/// A match on a string: exactly one of the fields.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawStringMatch {
    /// Equal to this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// Equal to one of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    /// Matches this glob (`*`, `?`, `[abc]`); case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// Matches this regular expression (unanchored; anchor with `^…$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A condition on one attribute: `key` plus exactly one test.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawAttributeMatch {
    /// Attribute key.
    pub key: String,
    /// The attribute is present (true) or absent (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// String form equals this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// String form equals one of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    /// String form matches this glob; case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// String form matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Numeric value greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Numeric value greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// Numeric value less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Numeric value less than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
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

/// The protocol number of a name in `names` (`SPAN_KINDS`, `STATUS_CODES`).
fn protocol_number(names: &[&str], name: &str) -> Option<i32> {
    names.iter().position(|x| *x == name).and_then(|p| i32::try_from(p).ok())
}

/// Checks the rules in order; the first error stops.
pub(crate) fn check_rules(check: &Checker<'_>, raw: &[RawRule], taxonomy: &Taxonomy) -> Result<Vec<Rule>, ConfigError> {
    let mut rules: Vec<Rule> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("rules[{i}]");
        if r.name.trim().is_empty() {
            return Err(check.err(format!("{key}.name"), "must not be empty"));
        }
        if rules.iter().any(|x| x.name == r.name) {
            return Err(check.err(format!("{key}.name"), format!("rule `{}` is defined twice", r.name)));
        }
        let when = r.when.check(check, &format!("{key}.match"))?;
        let milestone = r
            .milestone
            .as_ref()
            .map(|name| taxonomy.milestone_at(check, format!("{key}.milestone"), name))
            .transpose()?;
        let exception = r
            .exception
            .as_ref()
            .map(|name| {
                if name == "none" {
                    return Ok(ExceptionLabel::Suppress);
                }
                taxonomy.class_at(check, format!("{key}.exception"), name).map(ExceptionLabel::Class)
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
            when,
            milestone,
            reaches: r.reaches,
            exception,
            owner: r.owner.clone(),
            actor_attribute: r.actor_attribute.clone(),
        });
    }
    Ok(rules)
}

impl RawMatch {
    fn check(&self, check: &Checker<'_>, key: &str) -> Result<RuleMatch, ConfigError> {
        let service = self.service.as_ref().map(|s| s.check(check, &format!("{key}.service"))).transpose()?;
        let span_name = self.span_name.as_ref().map(|s| s.check(check, &format!("{key}.span_name"))).transpose()?;
        let mut span_kinds = Vec::new();
        for (j, k) in self.span_kind.iter().enumerate() {
            // `unspecified` is a protocol value, not something a rule can ask for.
            let kind = protocol_number(&SPAN_KINDS, k).filter(|n| *n > 0).ok_or_else(|| {
                check.err(
                    format!("{key}.span_kind[{j}]"),
                    format!("`{k}` is not one of internal, server, client, producer, consumer"),
                )
            })?;
            span_kinds.push(kind);
        }
        let status = self
            .status
            .as_ref()
            .map(|s| {
                protocol_number(&STATUS_CODES, s)
                    .ok_or_else(|| check.err(format!("{key}.status"), format!("`{s}` is not one of unset, ok, error")))
            })
            .transpose()?;
        let conditions = |field: &str, raw: &[RawAttributeMatch]| {
            raw.iter()
                .enumerate()
                .map(|(j, a)| a.check(check, &format!("{key}.{field}[{j}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(RuleMatch {
            service,
            span_name,
            span_kinds,
            status,
            attributes: conditions("attributes", &self.attributes)?,
            resource_attributes: conditions("resource_attributes", &self.resource_attributes)?,
            exception_event: self
                .exception_event
                .as_ref()
                .map(|s| s.check(check, &format!("{key}.exception_event")))
                .transpose()?,
        })
    }
}

impl RawStringMatch {
    fn check(&self, check: &Checker<'_>, key: &str) -> Result<StringMatcher, ConfigError> {
        let set = [self.equals.is_some(), self.one_of.is_some(), self.glob.is_some(), self.regex.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(check.err(key, "give exactly one of equals, one_of, glob, regex"));
        }
        if let Some(v) = &self.equals {
            return Ok(StringMatcher::Equals(v.clone()));
        }
        if let Some(v) = &self.one_of {
            if v.is_empty() {
                return Err(check.err(format!("{key}.one_of"), "must not be empty"));
            }
            return Ok(StringMatcher::OneOf(v.clone()));
        }
        if let Some(v) = &self.glob {
            return Ok(StringMatcher::Glob(check.glob(format!("{key}.glob"), v)?));
        }
        let pattern = self.regex.as_deref().unwrap_or_default();
        Ok(StringMatcher::Regex(check.regex(format!("{key}.regex"), pattern)?))
    }
}

impl RawAttributeMatch {
    fn check(&self, check: &Checker<'_>, key: &str) -> Result<AttributeCondition, ConfigError> {
        if self.key.is_empty() {
            return Err(check.err(format!("{key}.key"), "must not be empty"));
        }
        let string = RawStringMatch {
            equals: self.equals.clone(),
            one_of: self.one_of.clone(),
            glob: self.glob.clone(),
            regex: self.regex.clone(),
        };
        let numeric = [
            (NumericOp::Gt, self.gt),
            (NumericOp::Gte, self.gte),
            (NumericOp::Lt, self.lt),
            (NumericOp::Lte, self.lte),
        ];
        let numeric: Vec<_> = numeric.into_iter().filter_map(|(op, v)| v.map(|v| (op, v))).collect();
        let string_count = [self.equals.is_some(), self.one_of.is_some(), self.glob.is_some(), self.regex.is_some()]
            .iter()
            .filter(|s| **s)
            .count();
        let total = string_count + numeric.len() + usize::from(self.exists.is_some());
        if total != 1 {
            return Err(
                check.err(key, "give `key` and exactly one of exists, equals, one_of, glob, regex, gt, gte, lt, lte")
            );
        }
        let test = if let Some(exists) = self.exists {
            AttributeTest::Exists(exists)
        } else if let Some((op, value)) = numeric.first() {
            if !value.is_finite() {
                return Err(check.err(key, "numeric comparison needs a finite number"));
            }
            AttributeTest::Numeric(*op, *value)
        } else {
            AttributeTest::String(string.check(check, key)?)
        };
        Ok(AttributeCondition { key: self.key.clone(), test })
    }
}
