//! Labelling: which milestone a span concerns, whether it reaches it, and which exception it shows.
//!
//! Precedence, from strongest: a valid `order.milestone` / `order.exception.class` stated by the span itself, if
//! its service is one `taxonomy.trust_declared_labels_from` names (the emitting system knows best, but any
//! sender could claim a cancellation), then the first matching rule that names a milestone (respectively an exception),
//! then the built-in classification from the semantic conventions for failed spans.

use super::attributes::{find, number, scalar_string};
use super::input::SpanInput;
use crate::config::{
    AttributeCondition, AttributeTest, ClassId, Config, ExceptionLabel, MilestoneId, NumericOp, RuleMatch,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

/// The labels of one span; the same for every order the span concerns.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Labels {
    pub(crate) milestone: Option<MilestoneId>,
    pub(crate) reaches: bool,
    pub(crate) exception: Option<ExceptionFinding>,
    /// Data-quality findings about the span itself, e.g. an unknown self-declared milestone.
    pub(crate) findings: Vec<ExceptionFinding>,
    pub(crate) actor: Option<String>,
    /// The rule that set the milestone, if any.
    pub(crate) rule: Option<String>,
    /// The span stated its own milestone or exception but its service is not trusted to: ignored, counted.
    pub(crate) untrusted_declaration: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExceptionFinding {
    pub(crate) class: ClassId,
    pub(crate) owner: String,
    pub(crate) signature: String,
    pub(crate) reason: String,
}

const MILESTONE_ATTRIBUTE: &str = "order.milestone";
const REACHED_ATTRIBUTE: &str = "order.milestone.reached";
const CLASS_ATTRIBUTE: &str = "order.exception.class";
const OWNER_ATTRIBUTE: &str = "order.exception.owner";

fn status_code(input: &SpanInput) -> i32 {
    input.span.status.as_ref().map_or(StatusCode::Unset as i32, |s| s.code)
}

fn status_message(input: &SpanInput) -> &str {
    input.span.status.as_ref().map_or("", |s| s.message.as_str())
}

/// Computes the labels of `input` under `config`.
pub(crate) fn label(config: &Config, input: &SpanInput) -> Labels {
    let taxonomy = &config.taxonomy;
    let span = &input.span;
    let failed = status_code(input) == StatusCode::Error as i32;
    let mut labels = Labels::default();
    let mut reaches_from_rule: Option<bool> = None;
    let mut suppressed = false;

    // 1. What the span says about itself, from a trusted service.
    let trusted = taxonomy.trusts_declarations_of(&input.resource.service_name);
    if !trusted {
        labels.untrusted_declaration = [MILESTONE_ATTRIBUTE, CLASS_ATTRIBUTE, OWNER_ATTRIBUTE]
            .iter()
            .any(|key| find(&span.attributes, key).is_some());
    }
    let declared = |key: &str| if trusted { find(&span.attributes, key).and_then(scalar_string) } else { None };
    if let Some(value) = declared(MILESTONE_ATTRIBUTE) {
        match taxonomy.milestone(&value) {
            Some(id) => {
                labels.milestone = Some(id);
                reaches_from_rule = Some(match find(&span.attributes, REACHED_ATTRIBUTE) {
                    Some(Value::BoolValue(b)) => *b,
                    _ => !failed,
                });
            }
            None => labels.findings.push(ExceptionFinding {
                class: taxonomy.data_quality,
                owner: taxonomy.classes[taxonomy.data_quality].owner.clone(),
                signature: format!("finding:{MILESTONE_ATTRIBUTE}"),
                reason: format!("unknown milestone `{value}` in {MILESTONE_ATTRIBUTE}"),
            }),
        }
    }
    if let Some(value) = declared(CLASS_ATTRIBUTE) {
        match taxonomy.class(&value) {
            Some(class) => {
                let owner = find(&span.attributes, OWNER_ATTRIBUTE)
                    .and_then(scalar_string)
                    .map(|o| o.into_owned())
                    .unwrap_or_else(|| taxonomy.classes[class].owner.clone());
                let reason = non_empty(status_message(input)).unwrap_or("stated by the span").to_string();
                labels.exception =
                    Some(ExceptionFinding { class, owner, signature: format!("declared:{value}"), reason });
            }
            None => labels.findings.push(ExceptionFinding {
                class: taxonomy.data_quality,
                owner: taxonomy.classes[taxonomy.data_quality].owner.clone(),
                signature: format!("finding:{CLASS_ATTRIBUTE}"),
                reason: format!("unknown exception class `{value}` in {CLASS_ATTRIBUTE}"),
            }),
        }
    }

    // 2. Rules, first match per label.
    let mut actor_attribute: Option<&str> = None;
    for rule in &config.rules {
        let wants_milestone = labels.milestone.is_none() && rule.milestone.is_some();
        let wants_exception = labels.exception.is_none() && !suppressed && rule.exception.is_some();
        if !wants_milestone && !wants_exception {
            continue;
        }
        if !rule_matches(&rule.when, input) {
            continue;
        }
        let names_class = matches!(rule.exception, Some(ExceptionLabel::Class(_)));
        if wants_milestone {
            labels.milestone = rule.milestone;
            labels.rule = Some(rule.name.clone());
            reaches_from_rule = Some(rule.reaches.unwrap_or(!failed && !names_class));
        }
        if wants_exception {
            match rule.exception {
                Some(ExceptionLabel::Class(class)) => {
                    let owner = rule.owner.clone().unwrap_or_else(|| taxonomy.classes[class].owner.clone());
                    let reason = non_empty(status_message(input)).unwrap_or(&rule.name).to_string();
                    labels.exception = Some(ExceptionFinding { class, owner, signature: rule.name.clone(), reason });
                }
                Some(ExceptionLabel::Suppress) => suppressed = true,
                None => {}
            }
        }
        if actor_attribute.is_none() {
            actor_attribute = rule.actor_attribute.as_deref();
        }
        if labels.milestone.is_some() && (labels.exception.is_some() || suppressed) {
            break;
        }
    }
    labels.reaches = labels.milestone.is_some() && reaches_from_rule.unwrap_or(!failed);

    // 3. Built-in classification of failures.
    if labels.exception.is_none() && !suppressed {
        if let Some(class) = default_class(config, input, failed) {
            let reason = non_empty(status_message(input)).map(str::to_string).unwrap_or_else(|| default_reason(input));
            labels.exception = Some(ExceptionFinding {
                class,
                owner: taxonomy.classes[class].owner.clone(),
                signature: format!("default:{}", taxonomy.classes[class].name),
                reason,
            });
        }
    }

    // The actor: the rule's attribute, then the configured ones.
    labels.actor = actor_attribute
        .into_iter()
        .chain(config.order_traces.actor_attributes.iter().map(String::as_str))
        .find_map(|key| find(&span.attributes, key).and_then(scalar_string).map(|v| v.into_owned()));
    labels
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.trim().is_empty()).then_some(s)
}

fn http_status(attributes: &[KeyValue]) -> Option<i64> {
    find(attributes, "http.response.status_code")
        .or_else(|| find(attributes, "http.status_code"))
        .and_then(number)
        .map(whole_number)
}

/// The whole part of a number an attribute carries, saturating at the ends of `i64`, and 0 for NaN.
fn whole_number(n: f64) -> i64 {
    // Exactly Rust's float-to-integer conversion, which saturates and maps NaN to 0: a status code that is no
    // number at all still names the span's failure as before.
    #[allow(clippy::cast_possible_truncation)]
    let whole = n as i64;
    whole
}

fn default_reason(input: &SpanInput) -> String {
    match http_status(&input.span.attributes) {
        Some(code) => format!("{} answered HTTP {code}", input.span.name),
        None => format!("{} failed", input.span.name),
    }
}

const TRANSPORT_WORDS: [&str; 6] = ["timeout", "timed out", "connection", "refused", "unreachable", "reset"];

fn mentions_transport_failure(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    TRANSPORT_WORDS.iter().any(|w| lower.contains(w))
}

/// The semantic-convention classification: validation failures are data quality; a message between systems that
/// failed (a producer or consumer span, or one with `messaging.*` attributes), or a client that could not reach its
/// peer, is an integration failure; any other failure is an execution failure.
fn default_class(config: &Config, input: &SpanInput, failed: bool) -> Option<ClassId> {
    let taxonomy = &config.taxonomy;
    let span = &input.span;
    let status = http_status(&span.attributes);
    if matches!(status, Some(400) | Some(422)) {
        // Servers leave 4xx spans unset by convention, so the status code alone decides here.
        return Some(taxonomy.data_quality);
    }
    if !failed {
        return None;
    }
    let outbound = span.kind == SpanKind::Client as i32 || span.kind == SpanKind::Producer as i32;
    let grpc_unavailable =
        find(&span.attributes, "rpc.grpc.status_code").and_then(number).is_some_and(|c| c == 4.0 || c == 14.0);
    let error_type = find(&span.attributes, "error.type").and_then(scalar_string);
    let exception_text = span.events.iter().filter(|e| e.name == "exception").any(|e| {
        ["exception.type", "exception.message"]
            .iter()
            .filter_map(|k| find(&e.attributes, k).and_then(scalar_string))
            .any(|t| mentions_transport_failure(&t))
    });
    let transport = grpc_unavailable
        || matches!(status, Some(408) | Some(429) | Some(500..=599))
        || error_type.is_some_and(|t| mentions_transport_failure(&t))
        || exception_text;
    let messaging = span.kind == SpanKind::Producer as i32
        || span.kind == SpanKind::Consumer as i32
        || span.attributes.iter().any(|kv| kv.key.starts_with("messaging."));
    if messaging || outbound && transport {
        Some(taxonomy.integration)
    } else {
        Some(taxonomy.execution)
    }
}

fn rule_matches(when: &RuleMatch, input: &SpanInput) -> bool {
    let span = &input.span;
    if let Some(service) = &when.service {
        if !service.matches(&input.resource.service_name) {
            return false;
        }
    }
    if let Some(name) = &when.span_name {
        if !name.matches(&span.name) {
            return false;
        }
    }
    if !when.span_kinds.is_empty() && !when.span_kinds.contains(&span.kind) {
        return false;
    }
    if let Some(status) = when.status {
        if status_code(input) != status {
            return false;
        }
    }
    if !when.attributes.iter().all(|c| condition_holds(c, &span.attributes)) {
        return false;
    }
    let resource_attributes = input.resource.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
    if !when.resource_attributes.iter().all(|c| condition_holds(c, resource_attributes)) {
        return false;
    }
    if let Some(matcher) = &when.exception_event {
        let found = span.events.iter().filter(|e| e.name == "exception").any(|e| {
            find(&e.attributes, "exception.type").and_then(scalar_string).is_some_and(|t| matcher.matches(&t))
        });
        if !found {
            return false;
        }
    }
    true
}

fn condition_holds(condition: &AttributeCondition, attributes: &[KeyValue]) -> bool {
    let value = find(attributes, &condition.key);
    match &condition.test {
        AttributeTest::Exists(expected) => value.is_some() == *expected,
        AttributeTest::String(matcher) => value.is_some_and(|v| match v {
            Value::ArrayValue(array) => array
                .values
                .iter()
                .filter_map(|x| x.value.as_ref())
                .filter_map(scalar_string)
                .any(|s| matcher.matches(&s)),
            other => scalar_string(other).is_some_and(|s| matcher.matches(&s)),
        }),
        AttributeTest::Numeric(op, threshold) => value.and_then(number).is_some_and(|n| match op {
            NumericOp::Gt => n > *threshold,
            NumericOp::Gte => n >= *threshold,
            NumericOp::Lt => n < *threshold,
            NumericOp::Lte => n <= *threshold,
        }),
    }
}
