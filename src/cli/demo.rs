//! `ordertrail demo`: the embedded default configuration, a real server on loopback ports, and a simulator of a
//! distributor's systems sending through the real OpenTelemetry SDK, ending with each order's labelled timeline.
//! Then it keeps serving the ops console on its API listener until stopped, so that the first command a new user
//! runs shows the page, not only text.

use crate::timeline;
use ordertrail::clock::unix_nanos_now;
use ordertrail::server::{Server, ServerError};
use ordertrail_core::config::{default_config, ConfigError, Overrides};
use ordertrail_core::query;
use ordertrail_simulator as simulator;
use std::path::PathBuf;
use std::time::Duration;

/// The simulated systems all flush within a second of each other, so the demo settles sooner than production.
const DEMO_DELAY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("simulator failed: {0}")]
    Simulator(#[from] simulator::SimulatorError),
    #[error("cannot create a temporary data directory: {0}")]
    TempDir(std::io::Error),
}

#[derive(Debug)]
pub(crate) struct DemoOptions {
    pub(crate) export_endpoint: Option<String>,
    pub(crate) export_protocol: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) happy_orders: usize,
    /// Orders of a history with known delay causes, up to now, for the delay model and the patterns.
    pub(crate) history_orders: usize,
    /// Keep serving the console after the timelines, until `stop` completes.
    pub(crate) serve_console: bool,
}

/// Runs the demo and prints what it shows: the timelines, then the console's address while it serves it (until
/// `stop`), then the summary.
pub(crate) async fn run(options: DemoOptions, stop: impl std::future::Future<Output = ()>) -> Result<(), DemoError> {
    let mut config = default_config();
    let temp;
    let data_dir = match &options.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempdir().map_err(DemoError::TempDir)?;
            temp.clone()
        }
    };
    config.apply(&Overrides {
        grpc_listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        export_endpoint: options.export_endpoint.clone(),
        export_protocol: options.export_protocol.clone(),
        data_dir: Some(data_dir.clone()),
        api_http_listen: Some("127.0.0.1:0".into()),
        api_grpc_listen: Some("127.0.0.1:0".into()),
    })?;
    // The simulator replays two days of spans in a second, from seven services whose batches arrive in any
    // order: spans wait this long for their order, and milestones settle this long after they are reached.
    config.correlation.inherit_wait = DEMO_DELAY;
    config.sla.detection_delay = DEMO_DELAY;
    if let Some(exporter) = config.exporter.as_mut() {
        // A demo should show its result promptly rather than wait out the production retry budget.
        exporter.retry.max_elapsed_time = Some(Duration::from_secs(20));
        exporter.retry.initial_interval = Duration::from_millis(500);
    }
    // Spans wait, milestones settle, and clocks started then are judged a delay later. Orders that reach invoicing
    // close; the stalled one stays open, as it would in production until `idle_close_after`, its root in the
    // store since its first span.
    let wait = DEMO_DELAY * 3 + Duration::from_millis(1500);
    let config_for_render = config.clone();
    let server = Server::start(config).await?;
    let grpc = server.grpc_addr.expect("the demo enables gRPC");
    let simulated = simulator::run(&simulator::SimulatorOptions {
        endpoint: format!("http://{grpc}"),
        happy_orders: options.happy_orders,
        history_orders: options.history_orders,
        ..Default::default()
    })
    .await?;
    // Let spans waiting for their trace's order time out, milestones settle and clocks breach, as over days.
    tokio::time::sleep(wait).await;
    let pipeline = server.pipeline();
    pipeline.flush().await;
    let mut text = String::new();
    // The seed and the happy orders tell the story one by one; the history's orders speak through insight below.
    let told = simulated.order_ids.len() - simulated.order_ids.iter().filter(|k| is_history(k)).count();
    for key in simulated.order_ids.iter().take(told) {
        if let Some(order) = pipeline.order(key).await {
            text.push_str(&timeline::render(&config_for_render, &order, unix_nanos_now()));
            text.push('\n');
        }
    }
    let now = unix_nanos_now();
    let insight = pipeline
        .inspect(move |engine| {
            let config = engine.config();
            let at_risk =
                query::at_risk_orders(config, engine.orders(), &query::RiskFilter::default(), usize::MAX, now);
            let patterns = query::patterns(config, engine.pattern_book(), &query::PatternFilter::default(), 100, now);
            let bottlenecks = query::bottlenecks(config, engine.orders(), &query::BottleneckFilter::default());
            timeline::insight(&at_risk, &patterns, &bottlenecks)
        })
        .await
        .unwrap_or_default();
    text.push_str(&insight);
    text.push('\n');
    print!("{text}");
    if options.serve_console {
        if let Some(api) = server.api_http_addr {
            println!("The ops console (flow, stalled orders, team queues, each order's timeline): http://{api}/ui");
            println!("It stays up until Ctrl-C; `ordertrail demo --no-ui` exits at once.");
            use std::io::Write;
            let _ = std::io::stdout().flush();
            stop.await;
            println!();
        }
    }
    let counters = server.counters().clone();
    let engine = server.shutdown(Duration::from_secs(30)).await;
    print!("{}", timeline::summary(&counters, &engine, options.export_endpoint.as_deref()));
    if options.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}

/// Whether an order id is one of the simulator's history orders (`SO-3xxxx`).
fn is_history(order: &str) -> bool {
    order.strip_prefix("SO-3").is_some_and(|rest| rest.len() == 4)
}

fn tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ordertrail-demo-{}-{}", std::process::id(), unix_nanos_now()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
