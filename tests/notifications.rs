//! Notifications to the owning team, delivered to a real HTTP server that fails, times out and recovers, and across
//! a restart of the real server: each event reaches its receiver once, and none is lost.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use ordertrail_simulator::{self as simulator, SimulatorOptions};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEED_ORDER: &str = "SO-10042";

/// How the receiver answers its next requests; after the plan, `then`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Accept,
    /// 503, as a webhook behind a proxy whose backend is down.
    Unavailable,
    /// No answer for longer than the notifier waits.
    Hang,
}

#[derive(Default)]
struct Received {
    plan: VecDeque<Answer>,
    then: Option<Answer>,
    /// Every request: its `Idempotency-Key`, its JSON body and how it was answered.
    requests: Vec<(String, serde_json::Value, Answer)>,
}

type Receiver = Arc<Mutex<Received>>;

async fn receive(State(received): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    let answer = {
        let mut r = received.lock().unwrap();
        let answer = r.plan.pop_front().or(r.then).unwrap_or(Answer::Accept);
        r.requests.push((key, json, answer));
        answer
    };
    match answer {
        Answer::Accept => StatusCode::NO_CONTENT,
        Answer::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            StatusCode::NO_CONTENT
        }
    }
}

async fn start_receiver(plan: Vec<Answer>, then: Answer) -> (Receiver, SocketAddr) {
    let received: Receiver =
        Arc::new(Mutex::new(Received { plan: plan.into(), then: Some(then), ..Default::default() }));
    let app = axum::Router::new().route("/hook", post(receive)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, addr)
}

/// Notifiers for every team and event, in the generic JSON format, retrying quickly.
fn notifications_yaml(receiver: SocketAddr) -> String {
    format!(
        "notifications:
  notifiers:
    - name: all-teams
      format: json
      endpoint: http://{receiver}/hook
      timeout: 300ms
    - name: integration-slack
      teams: [integration-team]
      events: [exception_opened]
      format: slack
      endpoint: http://{receiver}/hook
      timeout: 300ms
  retry_on_failure:
    initial_interval: 100ms
    max_interval: 400ms
    max_elapsed_time: 0s
  rate_limit:
    per_team: 1000
    interval: 1m
"
    )
}

/// The test configuration with the notifiers; the simulator replays two days in a second from seven services, so
/// each milestone gets two seconds to arrive before a clock is judged.
fn config_with(sink: SocketAddr, dir: &std::path::Path, receiver: SocketAddr) -> ordertrail_core::config::Config {
    let mut config = test_config(sink, dir, &notifications_yaml(receiver));
    config.sla.detection_delay = Duration::from_secs(2);
    config
}

/// Keys the receiver accepted, with how many times each.
fn accepted(received: &Receiver) -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    for (key, _, answer) in &received.lock().unwrap().requests {
        if *answer == Answer::Accept {
            *keys.entry(key.clone()).or_default() += 1;
        }
    }
    keys
}

async fn run_seed(server: &ordertrail::server::Server) {
    simulator::run(&SimulatorOptions {
        endpoint: format!("http://{}", server.grpc_addr.unwrap()),
        happy_orders: 2,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// The seed order's notifications the test waits for: its integration exception, told to everyone and to the
/// integration team's Slack, and its two SLA breaches.
fn seed_notified(keys: &BTreeMap<String, usize>) -> bool {
    let has = |prefix: &str, event: &str| keys.keys().any(|k| k.starts_with(prefix) && k.contains(event));
    let breaches = keys.keys().filter(|k| k.starts_with(&format!("all-teams/{SEED_ORDER}/sla_breached"))).count();
    has(&format!("all-teams/{SEED_ORDER}/exception_opened/integration"), "exception_opened")
        && has(&format!("integration-slack/{SEED_ORDER}/exception_opened/integration"), "exception_opened")
        && breaches == 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_reaches_its_team_once_through_failures_and_timeouts() {
    let (_sink, sink_addr) = Sink::start(None).await;
    // The receiver fails three times, then does not answer in time, then takes everything.
    let plan = vec![Answer::Unavailable, Answer::Unavailable, Answer::Unavailable, Answer::Hang];
    let (received, receiver) = start_receiver(plan, Answer::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config_with(sink_addr, dir.path(), receiver)).await;
    run_seed(&server).await;
    let keys = eventually("the seed order's notifications", Duration::from_secs(40), || {
        let keys = accepted(&received);
        async move { seed_notified(&keys).then_some(keys) }
    })
    .await;
    // Let anything sent twice arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let keys = accepted(&received).into_iter().chain(keys).collect::<BTreeMap<_, _>>();
    let twice: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "each notification is taken once: {twice:?}");

    let requests = received.lock().unwrap().requests.clone();
    let answers: Vec<Answer> = requests.iter().map(|r| r.2).collect();
    assert_eq!(answers[..4], [Answer::Unavailable, Answer::Unavailable, Answer::Unavailable, Answer::Hang]);
    // What failed came again: every key that was refused or timed out was taken later.
    for (key, _, answer) in &requests {
        if *answer != Answer::Accept {
            assert_eq!(keys.get(key), Some(&1), "{key} failed once and was delivered later");
        }
    }
    // Only teams' own events: the integration team's Slack got only integration-team exceptions.
    let slack: Vec<&serde_json::Value> =
        requests.iter().filter(|r| r.0.starts_with("integration-slack/")).map(|r| &r.1).collect();
    assert!(!slack.is_empty());
    for body in &slack {
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("Owner: integration-team") && text.contains("<http"), "{text}");
    }
    // The generic body names the order, team and event, and links the order trace.
    let breach = requests
        .iter()
        .find(|r| r.0.starts_with(&format!("all-teams/{SEED_ORDER}/sla_breached")) && r.2 == Answer::Accept)
        .map(|r| r.1.clone())
        .unwrap();
    assert_eq!(breach["order"], SEED_ORDER);
    assert_eq!(breach["event"], "sla_breached");
    assert!(breach["trace_url"]
        .as_str()
        .unwrap()
        .ends_with(&hex::encode(ordertrail_core::ids::order_trace_id(SEED_ORDER))));
    assert!(!breach["team"].as_str().unwrap().is_empty() && !breach["deadline"].as_str().unwrap().is_empty());
    let failed_attempts = requests.iter().filter(|r| r.2 != Answer::Accept).count();
    println!(
        "notifications: {} taken once each; {failed_attempts} attempts refused (503) or unanswered and made again",
        keys.len()
    );
    let counters = server.counters();
    assert!(ordertrail::telemetry::Counters::get(&counters.notifications_retried) >= 4);
    assert_eq!(ordertrail::telemetry::Counters::get(&counters.notifications_failed), 0);
    assert_eq!(ordertrail::telemetry::Counters::get(&counters.notifications_sent), keys.len() as u64);
    let metrics = reqwest::get(format!("http://{}/metrics", server.api_http_addr.unwrap())).await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains(&format!("ordertrail_notifications_sent_total {}", keys.len())), "{text}");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_queued_while_the_receiver_is_down_are_delivered_after_a_restart() {
    let (_sink, sink_addr) = Sink::start(None).await;
    let (received, receiver) = start_receiver(Vec::new(), Answer::Unavailable).await;
    let dir = tempfile::tempdir().unwrap();
    let config = || config_with(sink_addr, dir.path(), receiver);
    let server = start_server(config()).await;
    run_seed(&server).await;
    // Every notification of the seed order was tried and refused while the receiver was down.
    let tried = eventually("the seed order's notifications to be tried", Duration::from_secs(40), || {
        let tried: BTreeMap<String, usize> =
            received.lock().unwrap().requests.iter().map(|r| (r.0.clone(), 1)).collect();
        async move { seed_notified(&tried).then_some(tried) }
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
    assert!(accepted(&received).is_empty());

    // The receiver is back, ordertrail restarts on the same store: what was queued goes out, once.
    received.lock().unwrap().then = Some(Answer::Accept);
    let server = start_server(config()).await;
    let keys = eventually("the queued notifications after the restart", Duration::from_secs(30), || {
        let keys = accepted(&received);
        let all = tried.keys().all(|k| keys.contains_key(k));
        async move { all.then_some(keys) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let keys = accepted(&received).into_iter().chain(keys).collect::<BTreeMap<_, _>>();
    assert!(keys.values().all(|n| *n == 1), "each once: {keys:?}");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owning_team_is_told_an_order_is_at_risk_before_it_breaches() {
    use opentelemetry::trace::SpanKind;
    use opentelemetry::{Context, KeyValue};
    let (_sink, sink_addr) = Sink::start(None).await;
    let (received, receiver) = start_receiver(Vec::new(), Answer::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, dir.path(), &notifications_yaml(receiver));
    // Capture to release within 8 s, judged a second late: at risk at 6 s (75 %, told at 7 s), breached at 8 s
    // (told at 9 s).
    config.sla.detection_delay = Duration::from_secs(1);
    let release = config.sla.targets.iter_mut().find(|t| t.name == "order_release").unwrap();
    release.within = Duration::from_secs(8);
    release.overrides.clear();
    let server = start_server(config).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(&erp, &Context::new(), "order.create", SpanKind::Internal, vec![KeyValue::new("order.id", "SO-RISK")]);
    flush(&erp).await;
    let told = eventually("the at-risk and the breach notifications", Duration::from_secs(30), || {
        let told: Vec<(String, Answer)> =
            received.lock().unwrap().requests.iter().map(|r| (r.0.clone(), r.2)).collect();
        async move {
            let breached = told.iter().any(|(k, _)| k.starts_with("all-teams/SO-RISK/sla_breached/order_release"));
            breached.then_some(told)
        }
    })
    .await;
    let keys: Vec<&str> =
        told.iter().map(|(k, _)| k.as_str()).filter(|k| k.starts_with("all-teams/SO-RISK/")).collect();
    assert_eq!(
        keys,
        ["all-teams/SO-RISK/order_at_risk/order_release", "all-teams/SO-RISK/sla_breached/order_release"],
        "at risk first, once, then the breach"
    );
    let body = received.lock().unwrap().requests.iter().find(|r| r.0.contains("order_at_risk")).unwrap().1.clone();
    assert_eq!((body["team"].as_str(), body["event"].as_str()), (Some("warehouse-operations"), Some("order_at_risk")));
    server.shutdown(Duration::from_secs(5)).await;
}
