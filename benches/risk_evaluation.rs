//! Delay risk, evaluated honestly: a simulated history of orders with known delay causes (a slow warehouse, a
//! carrier whose status the middleware fails to map, a credit backlog; `ordertrail_simulator::history`) is replayed
//! through the engine in the order its spans would arrive, with the engine ticking every simulated minute. Every
//! `<milestone> at risk` the engine raises is compared with what followed: did that clock breach? For each lead time
//! (how long before the deadline the flag had to be raised), precision and recall of the learned model are printed
//! next to a naive baseline that flags a clock once half its allowance has passed without its milestone.
//!
//! Run: `cargo bench --bench risk_evaluation -- [--orders N] [--threshold P] [--seed S]`. It prints a Markdown table
//! for BENCHMARKS.md. The engine is the pure core, so the figures do not depend on the machine.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use ordertrail_core::config::default_config;
use ordertrail_core::engine::events::Event;
use ordertrail_core::engine::{Engine, Output};
use ordertrail_simulator::history::{generate, DelayCause, HistoryOptions, HistoryStep, StepValue};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const MINUTE: u64 = 60_000_000_000;
const HOUR: u64 = 60 * MINUTE;
/// Monday 2026-03-02 00:00 UTC: the history starts on a week's first day.
const START: u64 = 1_772_409_600 * 1_000_000_000;
/// Spans reach ordertrail this long after they end: an SDK's batch interval.
const ARRIVAL_DELAY: u64 = 5_000_000_000;
/// Clocks that start in the first fifth of the history are not scored: the model is still learning.
const WARM_UP_SHARE: f64 = 0.2;
const LEAD_TIMES_MINUTES: [u64; 7] = [0, 15, 30, 60, 120, 240, 480];

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// One step as the span its system exports, in a technical trace of its own.
fn span_of(step: &HistoryStep, n: u64) -> ResourceSpans {
    let attributes = step
        .attributes
        .iter()
        .map(|(key, value)| {
            kv(
                key,
                match value {
                    StepValue::Text(v) => Value::StringValue(v.clone()),
                    StepValue::Int(v) => Value::IntValue(*v),
                    StepValue::Float(v) => Value::DoubleValue(*v),
                },
            )
        })
        .collect();
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&n.to_be_bytes());
    trace_id[8] = 0x5a;
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: n.to_be_bytes().to_vec(),
        name: step.name.into(),
        start_time_unix_nano: step.start_unix_nanos,
        end_time_unix_nano: step.end_unix_nanos(),
        attributes,
        status: step.error.as_ref().map(|message| Status { code: StatusCode::Error as i32, message: message.clone() }),
        ..Default::default()
    };
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", Value::StringValue(step.system.into()))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope { name: step.system.into(), ..Default::default() }),
            spans: vec![span],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One scored clock.
struct Clock {
    deadline: u64,
    breached: bool,
    /// When the engine found it at risk.
    flagged: Option<u64>,
    /// When the baseline flags it: half its allowance used without its milestone.
    baseline: Option<u64>,
    causes: Vec<DelayCause>,
}

#[derive(Default, Clone, Copy)]
struct Score {
    true_positives: u64,
    flagged: u64,
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "–".into()
    } else {
        #[allow(clippy::cast_precision_loss)]
        let r = a as f64 / b as f64;
        format!("{r:.2}")
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut orders, mut threshold, mut seed) = (3000usize, None::<f64>, 11u64);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--orders" => orders = args.next().and_then(|v| v.parse().ok()).expect("--orders N"),
            "--threshold" => threshold = args.next().and_then(|v| v.parse().ok()),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed S"),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    let history = generate(&HistoryOptions {
        orders,
        start_unix_nanos: START,
        spacing: Duration::from_secs(20 * 60),
        seed,
        first_number: 100_000,
    });
    let mut config = default_config();
    if let Some(t) = threshold {
        config.sla.risk.threshold = t;
    }
    config.correlation.max_orders = orders * 2;
    let config = Arc::new(config);
    let mut engine = Engine::new(config.clone(), Vec::new(), Vec::new());

    // Every step's span, by when it arrives.
    let mut arrivals: Vec<(u64, u64, &HistoryStep)> = Vec::new();
    for (i, order) in history.iter().enumerate() {
        for (j, step) in order.steps.iter().enumerate() {
            let n = (i as u64) << 8 | j as u64;
            arrivals.push((step.end_unix_nanos() + ARRIVAL_DELAY, n, step));
        }
    }
    arrivals.sort_by_key(|(at, n, _)| (*at, *n));
    let end = arrivals.last().map_or(START, |(at, _, _)| *at);

    let started = std::time::Instant::now();
    let mut raised = 0u64;
    let mut record = |out: Output| {
        raised += out.events.iter().filter(|e| matches!(e, Event::SlaAtRisk { .. })).count() as u64;
    };
    let mut clock = START;
    let mut next = arrivals.iter().peekable();
    while clock <= end + 48 * HOUR {
        while let Some((at, n, step)) = next.peek().copied().filter(|(at, _, _)| *at <= clock) {
            let mut out = Output::default();
            engine.process(vec![span_of(step, *n)], *at, &mut out);
            record(out);
            next.next();
        }
        let mut out = Output::default();
        engine.tick(clock, &mut out);
        record(out);
        clock += MINUTE;
    }
    let replay = started.elapsed();

    // What happened to every clock, from the records; the flag time is the record's own mark.
    // A share of a span of weeks in nanoseconds: positive and far below u64::MAX.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let warm_up = START + ((end - START) as f64 * WARM_UP_SHARE) as u64;
    let targets: Vec<String> = config.sla.targets.iter().map(|t| t.name.clone()).collect();
    let mut clocks: Vec<(usize, Clock)> = Vec::new();
    for order in &history {
        let Some(record) = engine.order(&order.id) else { continue };
        for s in &record.slas {
            let Some(target) = targets.iter().position(|t| *t == s.target) else { continue };
            if s.started_at_unix_nanos < warm_up || s.deadline_unix_nanos > end || s.stopped_at_unix_nanos.is_some() {
                continue;
            }
            let reached = s.reached_at_unix_nanos;
            let half = s.started_at_unix_nanos + (s.deadline_unix_nanos - s.started_at_unix_nanos) / 2;
            clocks.push((
                target,
                Clock {
                    deadline: s.deadline_unix_nanos,
                    breached: reached.is_none_or(|r| r > s.deadline_unix_nanos),
                    flagged: s.at_risk_at_unix_nanos,
                    baseline: reached.is_none_or(|r| r > half).then_some(half),
                    causes: order.causes.clone(),
                },
            ));
        }
    }

    let breaches = clocks.iter().filter(|(_, c)| c.breached).count() as u64;
    println!(
        "Replayed {orders} orders ({} spans) over {:.1} days in {:.1} s ({raised} at-risk events); scored {} clocks \
         started after the first {:.0} % of the history, {breaches} of which breached. Threshold {}.\n",
        arrivals.len(),
        (end - START) as f64 / (24 * HOUR) as f64,
        replay.as_secs_f64(),
        clocks.len(),
        WARM_UP_SHARE * 100.0,
        config.sla.risk.threshold,
    );
    println!("| flagged at least … before the deadline | model precision | model recall | baseline precision | baseline recall | model flags | baseline flags |");
    println!("|---|---|---|---|---|---|---|");
    for lead in LEAD_TIMES_MINUTES {
        let lead_nanos = lead * MINUTE;
        let score = |flag: fn(&Clock) -> Option<u64>| {
            let mut s = Score::default();
            for (_, c) in &clocks {
                if flag(c).is_some_and(|at| at.saturating_add(lead_nanos) <= c.deadline) {
                    s.flagged += 1;
                    s.true_positives += u64::from(c.breached);
                }
            }
            s
        };
        let (model, baseline) = (score(|c| c.flagged), score(|c| c.baseline));
        let label = if lead == 0 {
            "0 (any time before it)".to_string()
        } else {
            humantime::format_duration(Duration::from_secs(lead * 60)).to_string()
        };
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            ratio(model.true_positives, model.flagged),
            ratio(model.true_positives, breaches),
            ratio(baseline.true_positives, baseline.flagged),
            ratio(baseline.true_positives, breaches),
            model.flagged,
            baseline.flagged,
        );
    }

    // Per target and per cause: recall at one hour's lead, and how early the model's flags came.
    println!("\n| target | clocks | breaches | model recall ≥ 1 h ahead | baseline recall ≥ 1 h ahead | model precision ≥ 1 h | median lead of the model's true flags |");
    println!("|---|---|---|---|---|---|---|");
    for (t, name) in targets.iter().enumerate() {
        let mine: Vec<&Clock> = clocks.iter().filter(|(x, _)| *x == t).map(|(_, c)| c).collect();
        let ahead = |at: Option<u64>, c: &Clock| at.is_some_and(|a| a + HOUR <= c.deadline);
        let breached: Vec<&&Clock> = mine.iter().filter(|c| c.breached).collect();
        let model_tp = breached.iter().filter(|c| ahead(c.flagged, c)).count() as u64;
        let base_tp = breached.iter().filter(|c| ahead(c.baseline, c)).count() as u64;
        let model_flags = mine.iter().filter(|c| ahead(c.flagged, c)).count() as u64;
        let mut leads: Vec<u64> =
            breached.iter().filter_map(|c| c.flagged.filter(|a| *a <= c.deadline).map(|a| c.deadline - a)).collect();
        leads.sort_unstable();
        let median = leads.get(leads.len() / 2).map_or("–".into(), |l| {
            humantime::format_duration(Duration::from_secs(l / 1_000_000_000 / 60 * 60)).to_string()
        });
        println!(
            "| {name} | {} | {} | {} | {} | {} | {median} |",
            mine.len(),
            breached.len(),
            ratio(model_tp, breached.len() as u64),
            ratio(base_tp, breached.len() as u64),
            ratio(model_tp, model_flags),
        );
    }
    println!("\n| delay cause | breached clocks | model recall ≥ 1 h ahead | baseline recall ≥ 1 h ahead |");
    println!("|---|---|---|---|");
    let mut by_cause: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for (_, c) in clocks.iter().filter(|(_, c)| c.breached) {
        let causes: Vec<&str> =
            if c.causes.is_empty() { vec!["none (chance)"] } else { c.causes.iter().map(|x| x.as_str()).collect() };
        for cause in causes {
            let e = by_cause.entry(cause).or_default();
            e.0 += 1;
            e.1 += u64::from(c.flagged.is_some_and(|a| a + HOUR <= c.deadline));
            e.2 += u64::from(c.baseline.is_some_and(|a| a + HOUR <= c.deadline));
        }
    }
    for (cause, (n, model, base)) in by_cause {
        println!("| {cause} | {n} | {} | {} |", ratio(model, n), ratio(base, n));
    }
}
