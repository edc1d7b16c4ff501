//! The real `ordertrail` binary as a child process: started on a config file with ports read from its log,
//! killed when dropped, and measured from `/proc`.

use super::eventually;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The ports a running binary listens on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) grpc: u16,
    pub(crate) http: u16,
    pub(crate) api_http: u16,
    pub(crate) api_grpc: u16,
}

impl Ports {
    /// Port 0 everywhere: the binary binds whatever is free, so no port is picked, dropped and hoped for.
    pub(crate) const ANY: Ports = Ports { grpc: 0, http: 0, api_http: 0, api_grpc: 0 };

    /// The ports of the binary's `ordertrail listening` log line, e.g. `grpc=Some(127.0.0.1:41234)`.
    fn from_log_line(line: &str) -> Option<Ports> {
        // `otlp_grpc=127.0.0.1:4317 (plain text)`: the address is the value's first word.
        let port = |field: &str| -> Option<u16> {
            let value = line.split(&format!(" {field}=")).nth(1)?.split(' ').next()?;
            value.rsplit(':').next()?.parse().ok()
        };
        Some(Ports {
            grpc: port("otlp_grpc")?,
            http: port("otlp_http")?,
            api_http: port("api_http")?,
            api_grpc: port("api_grpc")?,
        })
    }
}

/// A child process that is killed when dropped, so that a failing test leaves no server behind.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary, exporting to `sink`, with its state in `data`, listening on `ports` (`Ports::ANY` for fresh
/// ones); returns it with the ports it bound, read from its log. A restart passes the ports of the first start, as
/// a restarted service keeps its address; senders keep sending there.
pub(crate) fn spawn(
    config: &std::path::Path,
    data: &std::path::Path,
    ports: Ports,
    sink: SocketAddr,
) -> (Server, Ports) {
    spawn_command(Command::new(env!("CARGO_BIN_EXE_ordertrail")), config, data, ports, sink)
}

/// As [`spawn`], with the open-file limit (soft and hard) set to `open_files` by util-linux `prlimit`, which
/// then runs the binary in its own process.
pub(crate) fn spawn_with_open_files(
    open_files: u64,
    config: &std::path::Path,
    data: &std::path::Path,
    sink: SocketAddr,
) -> (Server, Ports) {
    let mut command = Command::new("prlimit");
    command.arg(format!("--nofile={open_files}:{open_files}")).arg("--").arg(env!("CARGO_BIN_EXE_ordertrail"));
    spawn_command(command, config, data, Ports::ANY, sink)
}

fn spawn_command(
    mut command: Command,
    config: &std::path::Path,
    data: &std::path::Path,
    ports: Ports,
    sink: SocketAddr,
) -> (Server, Ports) {
    let mut child = command
        .args(["run", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--grpc-listen", &format!("127.0.0.1:{}", ports.grpc)])
        .args(["--http-listen", &format!("127.0.0.1:{}", ports.http)])
        .args(["--api-http-listen", &format!("127.0.0.1:{}", ports.api_http)])
        .args(["--api-grpc-listen", &format!("127.0.0.1:{}", ports.api_grpc)])
        .args(["--export-endpoint", &format!("http://{sink}")])
        // Warnings, and the one line that says where the server listens.
        .env("RUST_LOG", "warn,ordertrail::server=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (found, listening) = std::sync::mpsc::channel();
    // The child's log goes on to the test's stderr, as if inherited; the listening line is also handed over.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if let Some(ports) = line.contains("ordertrail listening").then(|| Ports::from_log_line(&line)).flatten() {
                let _ = found.send(ports);
            }
        }
    });
    let server = Server(child);
    let bound = listening.recv_timeout(Duration::from_secs(30)).expect("the binary logs where it listens");
    (server, bound)
}

pub(crate) async fn wait_ready(api_http: u16) {
    let client = reqwest::Client::new();
    eventually("the server to become ready", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let response = client.get(format!("http://127.0.0.1:{api_http}/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        }
    })
    .await;
}

/// Open file descriptors of a process, from `/proc/<pid>/fd`.
pub(crate) fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A counter's value from a Prometheus text page, 0 when absent.
pub(crate) fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A gauge's value from a Prometheus text page (gauges render as floats), `None` when absent.
pub(crate) fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// Peak resident memory of a process, from `VmHWM` in `/proc/<pid>/status`, in bytes.
pub(crate) fn peak_resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}
