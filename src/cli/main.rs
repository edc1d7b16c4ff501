//! The `ordertrail` command line: `run`, `validate-config`, `print-default-config`, `trace-id`, and with the
//! `demo` feature (on by default) `demo` and `simulate`.

#[cfg(feature = "demo")]
mod demo;
#[cfg(feature = "demo")]
mod timeline;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ordertrail::server::Server;
use ordertrail_core::config::{self, Overrides};
use std::path::PathBuf;
use std::time::Duration;

/// jemalloc, chosen here in the binary and not in the library: it returns freed memory to the system soon after a
/// burst (see `.cargo/config.toml`), which the memory limiter, watching resident memory, relies on.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Heads the printed default, which has no comments of its own.
const PRINTED_DEFAULT_HEADER: &str = "\
# ordertrail's effective default configuration: the embedded default (crates/core/src/config/default.yaml, with
# comments) over the built-in defaults of every setting. A file given with --config is merged over this: it needs
# only what differs. Maps merge, lists and single values replace, null removes an optional setting.
";

#[derive(Parser)]
#[command(
    name = "ordertrail",
    version,
    about = "One business trace per customer order, from the OpenTelemetry spans your systems already emit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object per line for a log pipeline (Loki, Elasticsearch).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where order traces go, shared by `run` and `demo`.
#[derive(Args)]
struct ExportArgs {
    /// Where to export order traces, e.g. http://tempo:4317.
    #[arg(long)]
    export_endpoint: Option<String>,
    /// Export protocol: grpc or http/protobuf.
    #[arg(long)]
    export_protocol: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Receive OTLP, correlate and label spans, export order traces.
    Run {
        /// Configuration file (YAML); the embedded default when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// OTLP/gRPC listen address, e.g. 0.0.0.0:4317.
        #[arg(long)]
        grpc_listen: Option<String>,
        /// OTLP/HTTP listen address, e.g. 0.0.0.0:4318.
        #[arg(long)]
        http_listen: Option<String>,
        #[command(flatten)]
        export: ExportArgs,
        /// Data directory of the embedded store.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP order API, /metrics and health listen address, e.g. 0.0.0.0:8080.
        #[arg(long)]
        api_http_listen: Option<String>,
        /// gRPC order API listen address, e.g. 0.0.0.0:8081.
        #[arg(long)]
        api_grpc_listen: Option<String>,
    },
    /// Check a configuration file, merged over the embedded default; exit 0 when valid.
    ValidateConfig {
        file: PathBuf,
        /// Also print the configuration the file amounts to, merged over the default.
        #[arg(long)]
        print: bool,
    },
    /// Print the trace id of an order, to paste into Jaeger or Tempo.
    TraceId { order: String },
    /// Print the effective default configuration: every setting with its value.
    PrintDefaultConfig,
    /// Write the object-centric event log (OCEL 2.0 JSON) of the orders a running ordertrail holds, for pm4py and
    /// other process-mining tools: orders and their shipments, deliveries, invoices…; milestones, exceptions and
    /// SLA breaches.
    ExportOcel {
        /// The running ordertrail's HTTP API.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// Environment variable holding an API token, when `api.auth` is on.
        #[arg(long)]
        token_env: Option<String>,
        /// Orders first seen at or after (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Orders first seen before (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Where to write the log; standard output when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Run the embedded default with a simulated distributor (ERP, middleware, WMS, TMS, EDI, finance).
    #[cfg(feature = "demo")]
    Demo {
        #[command(flatten)]
        export: ExportArgs,
        /// Keep the state in this directory instead of a temporary one.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Orders that go through without trouble, besides the seed scenario.
        #[arg(long, default_value_t = 5)]
        orders: usize,
        /// Exit after the timelines instead of serving the ops console until Ctrl-C.
        #[arg(long)]
        no_ui: bool,
        /// Orders of a history with known delay causes (a slow warehouse, a carrier mapping failure, a credit
        /// backlog), captured every 20 minutes up to now: what the delay model learns from, and orders in flight.
        #[arg(long, default_value_t = 300)]
        history: usize,
    },
    /// Send the simulated distributor's spans (the seed scenario and happy orders) to a running ordertrail or
    /// collector over OTLP/gRPC, through the OpenTelemetry SDK.
    #[cfg(feature = "demo")]
    Simulate {
        /// OTLP/gRPC endpoint to send to.
        #[arg(long, default_value = "http://127.0.0.1:4317")]
        endpoint: String,
        /// Orders that go through without trouble, besides the seed scenario.
        #[arg(long, default_value_t = 5)]
        orders: usize,
        /// Orders of a history with known delay causes, captured every 20 minutes up to now.
        #[arg(long, default_value_t = 0)]
        history: usize,
    },
}

/// Asks a running ordertrail for its OCEL 2.0 log.
async fn export_ocel(
    api: &str,
    token_env: Option<&str>,
    since: Option<String>,
    until: Option<String>,
) -> anyhow::Result<String> {
    let url = format!("{}/v1/ocel", api.trim_end_matches('/'));
    let query: Vec<(&str, String)> =
        [("since", since), ("until", until)].into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    let mut request = reqwest::Client::new().get(&url).query(&query);
    if let Some(name) = token_env {
        let token = std::env::var(name).map_err(|_| anyhow::anyhow!("--token-env: `{name}` is not set"))?;
        request = request.bearer_auth(token.trim());
    }
    let response = request.send().await.map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    Ok(body)
}

/// Logs to standard error at `default` level unless `RUST_LOG` says otherwise. Text has colours only on a
/// terminal (and not with `NO_COLOR`), so that a container's log does not fill with escape codes.
fn init_logging(default: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The async runtime. Its threads get 8 MiB stacks rather than tokio's 2 MiB: decoding, cloning and encoding
/// recurse once per level of a nested attribute value, and the receivers accept 128 levels.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(ordertrail::memory::THREAD_STACK_BYTES)
        .build()
        .context("cannot start the async runtime")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::ValidateConfig { file, print } => {
            let (raw, _) = config::load_checked(&file)?;
            if print {
                print!("{}", raw.to_yaml());
            } else {
                println!("{}: valid", file.display());
            }
            Ok(())
        }
        Command::TraceId { order } => {
            println!("{}", hex::encode(ordertrail_core::ids::order_trace_id(&order)));
            Ok(())
        }
        Command::ExportOcel { api, token_env, since, until, output } => {
            init_logging("warn", cli.log_format);
            let runtime = runtime()?;
            let body = runtime.block_on(export_ocel(&api, token_env.as_deref(), since, until))?;
            match output {
                Some(path) => {
                    std::fs::write(&path, body).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?
                }
                None => println!("{body}"),
            }
            Ok(())
        }
        Command::PrintDefaultConfig => {
            print!("{PRINTED_DEFAULT_HEADER}{}", config::default_raw().to_yaml());
            Ok(())
        }
        Command::Run {
            config: file,
            grpc_listen,
            http_listen,
            export: ExportArgs { export_endpoint, export_protocol },
            data_dir,
            api_http_listen,
            api_grpc_listen,
        } => {
            init_logging("info", cli.log_format);
            let mut config = match &file {
                Some(path) => config::load(path)?,
                None => config::default_config(),
            };
            config.apply(&Overrides {
                grpc_listen,
                http_listen,
                export_endpoint,
                export_protocol,
                data_dir,
                api_http_listen,
                api_grpc_listen,
            })?;
            let runtime = runtime()?;
            runtime.block_on(async {
                let server = Server::start(config).await?;
                wait_for_signal().await;
                tracing::info!("shutting down");
                server.shutdown(Duration::from_secs(10)).await;
                anyhow::Ok(())
            })
        }
        #[cfg(feature = "demo")]
        Command::Demo { export: ExportArgs { export_endpoint, export_protocol }, data_dir, orders, no_ui, history } => {
            init_logging("warn", cli.log_format);
            let runtime = runtime()?;
            let options = demo::DemoOptions {
                export_endpoint,
                export_protocol,
                data_dir,
                happy_orders: orders,
                history_orders: history,
                serve_console: !no_ui,
            };
            runtime.block_on(demo::run(options, wait_for_signal()))?;
            Ok(())
        }
        #[cfg(feature = "demo")]
        Command::Simulate { endpoint, orders, history } => {
            init_logging("warn", cli.log_format);
            let runtime = runtime()?;
            let simulated = runtime.block_on(ordertrail_simulator::run(&ordertrail_simulator::SimulatorOptions {
                endpoint,
                happy_orders: orders,
                history_orders: history,
                ..Default::default()
            }))?;
            println!("{}", simulated.order_ids.join("\n"));
            Ok(())
        }
    }
}
