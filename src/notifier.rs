//! Delivers the notifications the pipeline queued in the store to the teams' webhooks: retried with backoff,
//! rate-limited per team, removed once a receiver took one or it is given up on. It runs beside intake and never
//! holds it up: a receiver that is down only lets the queue grow, up to `notifications.queue_size`.
//!
//! Delivery is at least once: a notification removed only after its receiver answered 2xx is sent again if the
//! process dies in between. Each request carries the notification's key in `Idempotency-Key`, one per order,
//! event and notifier, so that a receiver can drop the repeat.

use crate::store::NotificationQueue;
use crate::telemetry::Counters;
use ordertrail_core::config::{Config, NotifierConfig, NotifierEndpoint, RetryConfig};
use ordertrail_core::notify::Notification;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the queue is looked at.
const POLL: Duration = Duration::from_millis(500);
/// Notifications taken from the store per look.
const BATCH: usize = 100;
/// How long a replica holds the notifications it took, so that no other replica sends them meanwhile; it takes
/// them again (and so holds them longer) at each look.
const HOLD: Duration = Duration::from_secs(60);
/// A round of sending ends after this long, well within the hold on what it took.
const ROUND_BUDGET: Duration = Duration::from_secs(30);
/// How long a notification for a notifier this replica does not know stays queued for a replica that does.
const UNKNOWN_NOTIFIER_KEPT_NANOS: u64 = 24 * 3_600_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("notifications.notifiers[{index}].endpoint_env: environment variable `{name}` is not set")]
    EndpointEnv { index: usize, name: String },
    #[error("notifications.notifiers[{index}]: the endpoint is not an http(s) URL")]
    Endpoint { index: usize },
    #[error("notifications.notifiers[{index}].headers: {reason}")]
    Header { index: usize, reason: String },
    #[error("cannot build the HTTP client of the notifier: {0}")]
    Client(#[source] reqwest::Error),
}

/// One notifier, ready to send.
#[derive(Debug)]
struct Target {
    name: String,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
}

/// What happened to one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// The receiver refused it for good (a 4xx other than 408 and 429): sending again cannot help.
    Refused(String),
    /// A timeout, a connection failure, a 5xx, 408 or 429: worth another attempt.
    Failed(String),
}

/// A notification being sent: its attempts so far and when the next may go.
#[derive(Debug)]
struct Attempts {
    first: tokio::time::Instant,
    count: u32,
    next: tokio::time::Instant,
}

/// Notifications sent per team in the current window, as send times.
#[derive(Debug, Default)]
struct RateLimit {
    sent: HashMap<String, VecDeque<tokio::time::Instant>>,
}

impl RateLimit {
    fn allows(&mut self, team: &str, now: tokio::time::Instant, per_team: usize, interval: Duration) -> bool {
        let sent = self.sent.entry(team.to_string()).or_default();
        while sent.front().is_some_and(|t| now.duration_since(*t) >= interval) {
            sent.pop_front();
        }
        sent.len() < per_team
    }

    fn record(&mut self, team: &str, now: tokio::time::Instant) {
        self.sent.entry(team.to_string()).or_default().push_back(now);
    }

    /// How long until the team's oldest send in the window leaves it.
    fn next_share(&self, team: &str, interval: Duration) -> Duration {
        let now = tokio::time::Instant::now();
        self.sent
            .get(team)
            .and_then(|sent| sent.front())
            .map_or(Duration::ZERO, |first| (*first + interval).saturating_duration_since(now))
    }
}

/// Resolves the notifiers' endpoints and headers, and starts delivering until `stop` turns true; `None` when no
/// notifier is configured. What is still queued then stays in the store for the next start.
pub fn start(
    config: &Config,
    queue: Arc<dyn NotificationQueue>,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, NotifierError> {
    let settings = &config.notifications;
    if settings.notifiers.is_empty() {
        return Ok(None);
    }
    let targets = settings.notifiers.iter().enumerate().map(|(i, n)| target(i, n)).collect::<Result<Vec<_>, _>>()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(NotifierError::Client)?;
    let delivery = Delivery {
        targets: targets.into_iter().map(|t| (t.name.clone(), t)).collect(),
        client,
        queue,
        counters,
        retry: settings.retry.clone(),
        per_team: settings.per_team,
        interval: settings.interval,
        attempts: HashMap::new(),
        deferred: HashMap::new(),
        limits: RateLimit::default(),
    };
    Ok(Some(tokio::spawn(delivery.run(stop))))
}

fn target(index: usize, notifier: &NotifierConfig) -> Result<Target, NotifierError> {
    let endpoint = match &notifier.endpoint {
        NotifierEndpoint::Url(url) => url.clone(),
        NotifierEndpoint::Env(name) => std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| NotifierError::EndpointEnv { index, name: name.clone() })?
            .trim()
            .to_string(),
    };
    if reqwest::Url::parse(&endpoint).map_or(true, |url| !matches!(url.scheme(), "http" | "https")) {
        return Err(NotifierError::Endpoint { index });
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &notifier.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| NotifierError::Header { index, reason: format!("`{name}`: {e}") })?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|e| NotifierError::Header { index, reason: format!("the value of `{name}`: {e}") })?;
        headers.insert(name, value);
    }
    Ok(Target { name: notifier.name.clone(), endpoint, headers, timeout: notifier.timeout })
}

struct Delivery {
    targets: HashMap<String, Target>,
    client: reqwest::Client,
    queue: Arc<dyn NotificationQueue>,
    counters: Arc<Counters>,
    retry: RetryConfig,
    per_team: usize,
    interval: Duration,
    /// Notifications that failed at least once, by key.
    attempts: HashMap<String, Attempts>,
    /// Notifications waiting for their team's share or for a replica that knows their notifier, until when.
    deferred: HashMap<String, tokio::time::Instant>,
    limits: RateLimit,
}

impl Delivery {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            self.round(&mut stop).await;
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                // A dropped sender means the server is gone too.
                changed = stop.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Keys not to take this round: those waiting for their backoff, their team's share or a notifier this
    /// replica does not know. Each map holds only keys still queued, so this is bounded by the queue.
    fn waiting(&mut self, now: tokio::time::Instant) -> Vec<String> {
        self.deferred.retain(|_, until| *until > now);
        self.attempts
            .iter()
            .filter(|(_, a)| a.next > now)
            .map(|(key, _)| key.clone())
            .chain(self.deferred.keys().cloned())
            .collect()
    }

    /// One look at the queue: the oldest notifications that are due go out, one at a time, each removed as soon
    /// as it is taken. A round ends well within the hold on what it took, and at once when the server stops.
    async fn round(&mut self, stop: &mut watch::Receiver<bool>) {
        let started = tokio::time::Instant::now();
        let skip = self.waiting(started);
        let queue = self.queue.clone();
        let now = crate::clock::unix_nanos_now();
        let hold = now.saturating_add(u64::try_from(HOLD.as_nanos()).unwrap_or(u64::MAX));
        let taken = tokio::task::spawn_blocking(move || queue.take(BATCH, now, hold, &skip)).await;
        let due = match taken {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the notification queue; trying again");
                return;
            }
            Err(_) => return,
        };
        for notification in due {
            let now = tokio::time::Instant::now();
            if *stop.borrow() || now.duration_since(started) >= ROUND_BUDGET {
                return;
            }
            if !self.limits.allows(&notification.team, now, self.per_team, self.interval) {
                // Counted once per wait: a deferred notification is not taken again until its team has a share.
                Counters::add(&self.counters.notifications_rate_limited, 1);
                let wait = self.limits.next_share(&notification.team, self.interval);
                self.deferred.insert(notification.key.clone(), now + wait);
                continue;
            }
            let Some(target) = self.targets.get(&notification.notifier) else {
                self.unknown_notifier(&notification, now).await;
                continue;
            };
            let outcome = tokio::select! {
                outcome = send(&self.client, target, &notification) => outcome,
                // Stopping mid-send leaves the notification queued: it goes out after the restart.
                _ = stop.changed() => return,
            };
            match outcome {
                Outcome::Delivered => {
                    Counters::add(&self.counters.notifications_sent, 1);
                    self.limits.record(&notification.team, now);
                    self.attempts.remove(&notification.key);
                    self.remove(notification.key).await;
                }
                Outcome::Refused(reason) => {
                    tracing::warn!(
                        notifier = %target.name, order = %notification.order, event = notification.event.as_str(),
                        reason, "the receiver refused a notification; it is not sent again"
                    );
                    Counters::add(&self.counters.notifications_failed, 1);
                    self.attempts.remove(&notification.key);
                    self.remove(notification.key).await;
                }
                Outcome::Failed(reason) => {
                    let attempts = self.attempts.entry(notification.key.clone()).or_insert(Attempts {
                        first: now,
                        count: 0,
                        next: now,
                    });
                    attempts.count += 1;
                    let spent = now.duration_since(attempts.first);
                    let given_up = !self.retry.enabled || self.retry.max_elapsed_time.is_some_and(|max| spent >= max);
                    if given_up {
                        tracing::warn!(
                            notifier = %target.name, order = %notification.order, attempts = attempts.count,
                            reason, "a notification could not be delivered within the retry budget; given up"
                        );
                        Counters::add(&self.counters.notifications_failed, 1);
                        self.attempts.remove(&notification.key);
                        self.remove(notification.key).await;
                    } else {
                        attempts.next = now + backoff(&self.retry, attempts.count);
                        Counters::add(&self.counters.notifications_retried, 1);
                        tracing::debug!(
                            notifier = %target.name, order = %notification.order, reason,
                            "notification failed; retrying"
                        );
                    }
                }
            }
        }
    }

    /// A notification for a notifier this replica does not know: during a rolling update another replica may know
    /// it, so it stays queued; one no replica took for a day is dropped and counted.
    async fn unknown_notifier(&mut self, notification: &Notification, now: tokio::time::Instant) {
        let age = crate::clock::unix_nanos_now().saturating_sub(notification.created_unix_nanos);
        if age >= UNKNOWN_NOTIFIER_KEPT_NANOS {
            tracing::warn!(
                notifier = %notification.notifier, order = %notification.order,
                "a notification for a notifier no replica has configured for a day is dropped"
            );
            Counters::add(&self.counters.notifications_failed, 1);
            self.remove(notification.key.clone()).await;
        } else {
            tracing::debug!(notifier = %notification.notifier, "a notification for a notifier this replica does not know waits");
            self.deferred.insert(notification.key.clone(), now + HOLD);
        }
    }

    /// Removes one notification; if the store refuses, it stays queued and is sent again: at least once.
    async fn remove(&self, key: String) {
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || queue.remove(&[key])).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove a delivered notification from the queue"),
        }
    }
}

/// The wait before attempt `count + 1`: the initial interval times the multiplier per attempt, capped, jittered.
fn backoff(retry: &RetryConfig, count: u32) -> Duration {
    let exponent = i32::try_from(count.saturating_sub(1)).unwrap_or(i32::MAX);
    let base = retry.initial_interval.as_secs_f64() * retry.multiplier.powi(exponent);
    let capped = base.min(retry.max_interval.as_secs_f64());
    let jitter = retry.randomization_factor * capped;
    let drawn = if jitter > 0.0 { rand::thread_rng().gen_range(capped - jitter..=capped + jitter) } else { capped };
    Duration::from_secs_f64(drawn.max(0.0))
}

async fn send(client: &reqwest::Client, target: &Target, notification: &Notification) -> Outcome {
    let request = client
        .post(&target.endpoint)
        .timeout(target.timeout)
        .headers(target.headers.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", notification.key.as_str())
        .body(notification.body.clone());
    match request.send().await {
        Ok(response) if response.status().is_success() => Outcome::Delivered,
        Ok(response) => {
            let status = response.status();
            let retryable = status.is_server_error()
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            let reason = format!("HTTP {status}");
            if retryable {
                Outcome::Failed(reason)
            } else {
                Outcome::Refused(reason)
            }
        }
        Err(e) if e.is_timeout() => Outcome::Failed(format!("no answer within {:?}", target.timeout)),
        // A request that cannot even be built will not build next time either.
        Err(e) if e.is_builder() => Outcome::Refused(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_lets_a_team_send_its_share_per_interval() {
        let mut limits = RateLimit::default();
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            assert!(limits.allows("finance", start, 3, Duration::from_secs(60)));
            limits.record("finance", start);
        }
        assert!(!limits.allows("finance", start, 3, Duration::from_secs(60)), "the fourth waits");
        assert!(limits.allows("warehouse", start, 3, Duration::from_secs(60)), "another team has its own share");
        assert!(limits.allows("finance", start + Duration::from_secs(60), 3, Duration::from_secs(60)));
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap() {
        let retry = RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
            max_elapsed_time: None,
            multiplier: 2.0,
            randomization_factor: 0.0,
        };
        let waits: Vec<u64> = (1..=6).map(|n| backoff(&retry, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    }
}
