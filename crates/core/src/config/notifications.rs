//! `notifications`: what the owning team is told, and where. Each notifier names the teams (owners in the
//! taxonomy) and events it takes, and a webhook: a generic JSON body from a template, or the ready bodies of Slack
//! and Microsoft Teams incoming webhooks. Delivery is retried with the exporter's `retry_on_failure` fields and
//! rate-limited per team.

use super::check::{Checker, ConfigError};
use super::exporter::RawRetry;
use super::exporter::RetryConfig;
use super::taxonomy::Taxonomy;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The events a team can be told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    /// An exception was raised on an order for the first time (its class, milestone and pattern).
    ExceptionOpened,
    /// An SLA deadline passed without its milestone.
    SlaBreached,
    /// A breach was taken back: a late-arriving span showed the milestone was reached in time.
    BreachWithdrawn,
    /// A running clock used `sla.at_risk_share` of its time without its milestone: told before the breach.
    OrderAtRisk,
}

impl NotificationEvent {
    pub const ALL: [NotificationEvent; 4] = [
        NotificationEvent::ExceptionOpened,
        NotificationEvent::SlaBreached,
        NotificationEvent::BreachWithdrawn,
        NotificationEvent::OrderAtRisk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationEvent::ExceptionOpened => "exception_opened",
            NotificationEvent::SlaBreached => "sla_breached",
            NotificationEvent::BreachWithdrawn => "breach_withdrawn",
            NotificationEvent::OrderAtRisk => "order_at_risk",
        }
    }
}

/// Notifications, raw.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawNotifications {
    pub notifiers: Vec<RawNotifier>,
    /// Backoff between attempts of one notification; `max_elapsed_time: 0s` retries until the receiver takes it.
    pub retry_on_failure: RawNotificationRetry,
    /// Notifications sent to one team at most per `rate_limit.interval`, over all its notifiers; the rest wait.
    pub rate_limit: RawRateLimit,
    /// Notifications waiting in the store at most; beyond it new ones are dropped and counted, so that a receiver
    /// that is down never holds up span intake.
    pub queue_size: usize,
}

impl Default for RawNotifications {
    fn default() -> RawNotifications {
        RawNotifications {
            notifiers: Vec::new(),
            retry_on_failure: RawNotificationRetry::default(),
            rate_limit: RawRateLimit::default(),
            queue_size: 10_000,
        }
    }
}

/// `retry_on_failure` of notifications: the exporter's fields, with a notification given up on after an hour
/// unless stated otherwise (a section that states only some fields keeps this for the rest).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawNotificationRetry {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_elapsed_time: Duration,
    pub multiplier: f64,
    pub randomization_factor: f64,
}

impl Default for RawNotificationRetry {
    fn default() -> RawNotificationRetry {
        let exporter = RawRetry::default();
        RawNotificationRetry {
            enabled: exporter.enabled,
            initial_interval: exporter.initial_interval,
            max_interval: exporter.max_interval,
            max_elapsed_time: Duration::from_secs(3600),
            multiplier: exporter.multiplier,
            randomization_factor: exporter.randomization_factor,
        }
    }
}

impl RawNotificationRetry {
    fn check(&self, check: &Checker<'_>, key: &str) -> Result<RetryConfig, ConfigError> {
        RawRetry {
            enabled: self.enabled,
            initial_interval: self.initial_interval,
            max_interval: self.max_interval,
            max_elapsed_time: self.max_elapsed_time,
            multiplier: self.multiplier,
            randomization_factor: self.randomization_factor,
        }
        .check(check, key)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawRateLimit {
    pub per_team: usize,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RawRateLimit {
    fn default() -> RawRateLimit {
        RawRateLimit { per_team: 30, interval: Duration::from_secs(60) }
    }
}

/// One webhook.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawNotifier {
    /// A name of one's own, in logs and metrics.
    pub name: String,
    /// Owner teams whose events this notifier takes; all teams when empty.
    pub teams: Vec<String>,
    /// Events it takes; all when empty.
    pub events: Vec<NotificationEvent>,
    /// The webhook's URL. Slack's and Teams' URLs are secrets: give `endpoint_env` instead to read it from the
    /// environment.
    pub endpoint: Option<String>,
    pub endpoint_env: Option<String>,
    /// `slack`, `teams` or `json` (the generic body: every field of the event); `template` uses `template`.
    pub format: String,
    /// A JSON body with `{{field}}` placeholders (order, event, team, class, milestone, reason, target, deadline,
    /// trace_id, trace_url, summary), each replaced by its value as a JSON string's contents.
    pub template: Option<String>,
    /// Extra request headers, e.g. an `Authorization` of the receiver.
    pub headers: BTreeMap<String, String>,
    /// How long one delivery attempt may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RawNotifier {
    fn default() -> RawNotifier {
        RawNotifier {
            name: String::new(),
            teams: Vec::new(),
            events: Vec::new(),
            endpoint: None,
            endpoint_env: None,
            format: "json".into(),
            template: None,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The fields a template may name.
pub const TEMPLATE_FIELDS: [&str; 14] = [
    "order",
    "event",
    "team",
    "class",
    "milestone",
    "reason",
    "target",
    "deadline",
    "trace_id",
    "trace_url",
    "summary",
    "next_action",
    "runbook",
    "urgency",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifierFormat {
    Slack,
    Teams,
    Json,
    Template(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifierEndpoint {
    Url(String),
    Env(String),
}

#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub name: String,
    pub teams: BTreeSet<String>,
    pub events: BTreeSet<NotificationEvent>,
    pub endpoint: NotifierEndpoint,
    pub format: NotifierFormat,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
}

impl NotifierConfig {
    /// Whether this notifier takes `event` for `team`.
    pub fn takes(&self, event: NotificationEvent, team: &str) -> bool {
        (self.events.is_empty() || self.events.contains(&event)) && (self.teams.is_empty() || self.teams.contains(team))
    }
}

#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    pub notifiers: Vec<NotifierConfig>,
    pub retry: RetryConfig,
    pub per_team: usize,
    pub interval: Duration,
    pub queue_size: usize,
}

impl RawNotifications {
    pub(crate) fn check(&self, check: &Checker<'_>, taxonomy: &Taxonomy) -> Result<NotificationsConfig, ConfigError> {
        let owners: BTreeSet<&str> = taxonomy
            .milestones
            .iter()
            .map(|m| m.owner.as_str())
            .chain(taxonomy.classes.iter().map(|c| c.owner.as_str()))
            .collect();
        let mut names = BTreeSet::new();
        let mut notifiers = Vec::new();
        for (i, raw) in self.notifiers.iter().enumerate() {
            let key = format!("notifications.notifiers[{i}]");
            if raw.name.is_empty() {
                return Err(check.err(format!("{key}.name"), "every notifier needs a name"));
            }
            if !names.insert(raw.name.as_str()) {
                return Err(check.err(format!("{key}.name"), format!("`{}` is used twice", raw.name)));
            }
            for team in &raw.teams {
                if !owners.contains(team.as_str()) {
                    let known: Vec<&str> = owners.iter().copied().collect();
                    return Err(check.err(
                        format!("{key}.teams"),
                        format!("`{team}` owns no milestone or exception class; the teams are {}", known.join(", ")),
                    ));
                }
            }
            let endpoint = match (raw.endpoint.as_deref().filter(|e| !e.is_empty()), raw.endpoint_env.as_deref()) {
                (Some(_), Some(_)) => {
                    return Err(check.err(key, "give one of endpoint, endpoint_env, not both"));
                }
                (Some(url), None) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len() {
                        return Err(check.err(format!("{key}.endpoint"), format!("`{url}` is not an http(s) URL")));
                    }
                    NotifierEndpoint::Url(url.to_string())
                }
                (None, Some(env)) if !env.is_empty() => NotifierEndpoint::Env(env.to_string()),
                _ => return Err(check.err(key, "needs endpoint or endpoint_env")),
            };
            let format = match (raw.format.as_str(), &raw.template) {
                ("slack", None) => NotifierFormat::Slack,
                ("teams", None) => NotifierFormat::Teams,
                ("json", None) => NotifierFormat::Json,
                ("template", Some(template)) => {
                    check_template(template).map_err(|reason| check.err(format!("{key}.template"), reason))?;
                    NotifierFormat::Template(template.clone())
                }
                ("template", None) => return Err(check.err(format!("{key}.template"), "format template needs one")),
                ("slack" | "teams" | "json", Some(_)) => {
                    return Err(check.err(format!("{key}.template"), "is used only with format: template"))
                }
                (other, _) => {
                    return Err(check
                        .err(format!("{key}.format"), format!("`{other}` is not one of slack, teams, json, template")))
                }
            };
            if raw.timeout.is_zero() {
                return Err(check.err(format!("{key}.timeout"), "must be greater than zero"));
            }
            notifiers.push(NotifierConfig {
                name: raw.name.clone(),
                teams: raw.teams.iter().cloned().collect(),
                events: raw.events.iter().copied().collect(),
                endpoint,
                format,
                headers: raw.headers.clone(),
                timeout: raw.timeout,
            });
        }
        let retry = self.retry_on_failure.check(check, "notifications.retry_on_failure")?;
        let per_team = check.positive("notifications.rate_limit.per_team", self.rate_limit.per_team)?;
        if self.rate_limit.interval.is_zero() {
            return Err(check.err("notifications.rate_limit.interval", "must be greater than zero"));
        }
        let queue_size = check.positive("notifications.queue_size", self.queue_size)?;
        Ok(NotificationsConfig { notifiers, retry, per_team, interval: self.rate_limit.interval, queue_size })
    }
}

/// A template is valid when every placeholder is a known field and the body is JSON once they are filled in.
fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else { return Err("a `{{` is not closed by `}}`".into()) };
        let field = rest[start + 2..start + end].trim();
        if !TEMPLATE_FIELDS.contains(&field) {
            return Err(format!("`{{{{{field}}}}}` is not one of {}", TEMPLATE_FIELDS.join(", ")));
        }
        rest = &rest[start + end + 2..];
    }
    let filled = fill_template(template, &|_| "a \"quoted\" value\n".to_string());
    serde_json::from_str::<serde_json::Value>(&filled)
        .map(|_| ())
        .map_err(|e| format!("is not JSON once its placeholders are filled (they go inside JSON strings): {e}"))
}

/// `template` with each `{{field}}` replaced by `value(field)` escaped as the contents of a JSON string.
pub fn fill_template(template: &str, value: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let field = rest[start + 2..start + end].trim();
        let quoted = serde_json::to_string(&value(field)).unwrap_or_default();
        out.push_str(&quoted[1..quoted.len().saturating_sub(1)]);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_section_that_states_some_fields_keeps_the_hour_for_the_rest() {
        let raw: RawNotifications =
            yaml_serde::from_str("retry_on_failure:\n  initial_interval: 1s\n").expect("parses");
        assert_eq!(raw.retry_on_failure.max_elapsed_time, Duration::from_secs(3600));
        assert_eq!(raw.retry_on_failure.initial_interval, Duration::from_secs(1));
    }

    #[test]
    fn templates_name_known_fields_and_are_json_once_filled() {
        assert!(check_template(r#"{"text": "{{order}} is late: {{reason}}"}"#).is_ok());
        let err = check_template(r#"{"text": "{{ordr}}"}"#).unwrap_err();
        assert!(err.contains("`{{ordr}}` is not one of order"), "{err}");
        let err = check_template(r#"{"text": {{order}}}"#).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let filled = fill_template(r#"{"t":"{{ reason }}"}"#, &|_| "say \"hi\"\n".into());
        assert_eq!(filled, r#"{"t":"say \"hi\"\n"}"#);
    }
}
