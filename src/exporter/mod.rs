//! The OTLP exporter: sends spans over gRPC or HTTP with a bounded number of requests in flight, and retries
//! retryable failures with exponential backoff and jitter.
//!
//! It reads from one of two places. With durable storage, from the persistent export queue the pipeline appends to
//! in the same transaction as the state: an entry is removed only once the backend accepted it, so a crash or an
//! outage loses nothing, and the queue's bound on disk pushes back on senders. With memory storage, from a bounded
//! channel, batching by size and time.

pub(crate) mod grpc;
pub(crate) mod http;

use crate::store::{ExportQueue, QueuedExport};
use crate::telemetry::Counters;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use ordertrail_core::config::{ExportProtocol, ExporterConfig, RetryConfig};
use prost::Message;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;

/// Entries read from the persistent queue at a time.
const QUEUE_READ_AHEAD: usize = 64;
/// How often an idle exporter looks at the queue even without a wake-up, as a safety net.
const QUEUE_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid exporter setting: {0}")]
    Setup(String),
    /// Worth trying again: the backend is unavailable, overloaded or timed out.
    #[error("retryable export failure: {message}")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// The backend refused the data itself; sending it again would not help.
    #[error("permanent export failure: {0}")]
    Permanent(String),
}

/// One way of sending a request.
#[derive(Debug, Clone)]
enum Client {
    Grpc(grpc::GrpcClient),
    Http(http::HttpClient),
}

impl Client {
    async fn send(&self, batch: Vec<ResourceSpans>) -> Result<(), ExportError> {
        match self {
            Client::Grpc(client) => client.send(batch).await,
            Client::Http(client) => client.send(batch).await,
        }
    }
}

/// Semaphore permits for `n` consumers; tokio counts permits in `u32`, far above any sensible consumer count.
fn permits(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The running exporter; `shutdown` drains what it can within a deadline.
#[derive(Debug)]
pub struct Exporter {
    /// Where the pipeline hands spans over, in memory mode.
    input: Option<mpsc::Sender<Vec<ResourceSpans>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn client(config: &ExporterConfig) -> Result<Client, ExportError> {
    Ok(match config.protocol {
        ExportProtocol::Grpc => Client::Grpc(grpc::GrpcClient::new(config)?),
        ExportProtocol::HttpProtobuf => Client::Http(http::HttpClient::new(config)?),
    })
}

impl Exporter {
    /// Builds the client and starts batching from an in-memory channel. Connection happens lazily, so a backend
    /// that is down at startup does not stop ordertrail; its spans wait in the queue and are retried.
    pub fn start(config: ExporterConfig, counters: Arc<Counters>) -> Result<Exporter, ExportError> {
        let client = client(&config)?;
        let (input, rx) = mpsc::channel(config.queue_size);
        let (stop, _) = watch::channel(false);
        let task = tokio::spawn(batch_loop(config, client, rx, counters));
        Ok(Exporter { input: Some(input), stop, task })
    }

    /// Builds the client and starts sending from the persistent queue; `wake` is notified after each append.
    pub fn start_from_queue(
        config: ExporterConfig,
        counters: Arc<Counters>,
        queue: Arc<dyn ExportQueue>,
        wake: Arc<Notify>,
    ) -> Result<Exporter, ExportError> {
        let client = client(&config)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(queue_loop(config, client, queue, wake, stopped, counters));
        Ok(Exporter { input: None, stop, task })
    }

    /// The channel the pipeline hands spans to, in memory mode.
    pub fn sender(&self) -> Option<mpsc::Sender<Vec<ResourceSpans>>> {
        self.input.clone()
    }

    /// Stops the batching task at once, for a shutdown whose deadline has passed.
    pub fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }

    /// Sends what is queued and waits for requests in flight, for at most `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        drop(self.input);
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            abort.abort();
            tracing::warn!(?deadline, "exporter did not drain before the shutdown deadline");
        }
    }
}

fn count_spans(batch: &[ResourceSpans]) -> usize {
    batch.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

async fn batch_loop(
    config: ExporterConfig,
    client: Client,
    mut rx: mpsc::Receiver<Vec<ResourceSpans>>,
    counters: Arc<Counters>,
) {
    let in_flight = Arc::new(Semaphore::new(config.num_consumers));
    let retry = Arc::new(config.retry.clone());
    let mut batch: Vec<ResourceSpans> = Vec::new();
    let mut spans = 0;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let received = match deadline {
            Some(at) => tokio::select! {
                item = rx.recv() => Some(item),
                _ = tokio::time::sleep_until(at) => None,
            },
            None => Some(rx.recv().await),
        };
        let closed = matches!(received, Some(None));
        let timed_out = received.is_none();
        if let Some(Some(group)) = received {
            spans += count_spans(&group);
            batch.extend(group);
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + config.batch_timeout);
        }
        let full = spans >= config.send_batch_size;
        if !batch.is_empty() && (full || timed_out || closed) {
            let permit = in_flight.clone().acquire_owned().await.expect("semaphore is never closed");
            let (client, retry, counters) = (client.clone(), retry.clone(), counters.clone());
            let to_send = std::mem::take(&mut batch);
            let count = std::mem::take(&mut spans) as u64;
            deadline = None;
            tokio::spawn(async move {
                send_with_retry(&client, to_send, count, &retry, &counters).await;
                drop(permit);
            });
        }
        if closed {
            break;
        }
    }
    // Wait for the requests in flight by taking every permit.
    let _ = in_flight.acquire_many(permits(config.num_consumers)).await;
}

/// Sends the persistent queue's entries in order, several at a time, and removes each once delivered. At
/// shutdown it keeps going until the queue is empty or the caller's deadline aborts it; what is left stays on
/// disk for the next start.
async fn queue_loop(
    config: ExporterConfig,
    client: Client,
    queue: Arc<dyn ExportQueue>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let in_flight = Arc::new(Semaphore::new(config.num_consumers));
    let retry = Arc::new(config.retry.clone());
    let mut cursor: Option<u64> = None;
    // Delivered entries whose removal failed (a full disk, say): removed again before anything else is read,
    // so that they neither stay counted against the queue's bound nor wait for a restart to be sent twice.
    let unremoved: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    loop {
        let retry_removal = std::mem::take(&mut *unremoved.lock().unwrap_or_else(|e| e.into_inner()));
        if !retry_removal.is_empty() {
            let remover = queue.clone();
            let numbers = retry_removal.clone();
            if !matches!(tokio::task::spawn_blocking(move || remover.remove(&numbers)).await, Ok(Ok(()))) {
                unremoved.lock().unwrap_or_else(|e| e.into_inner()).extend(retry_removal);
                tokio::time::sleep(QUEUE_POLL).await;
                continue;
            }
        }
        let reader = queue.clone();
        let read = tokio::task::spawn_blocking(move || reader.read_after(cursor, QUEUE_READ_AHEAD)).await;
        let entries = match read {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the export queue; retrying");
                tokio::time::sleep(QUEUE_POLL).await;
                continue;
            }
            Err(_) => break,
        };
        if entries.is_empty() {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = stop.changed() => {}
                _ = tokio::time::sleep(QUEUE_POLL) => {}
            }
            continue;
        }
        for group in batches(entries, config.send_batch_size) {
            let permit = in_flight.clone().acquire_owned().await.expect("semaphore is never closed");
            cursor = group.last().map(|(n, _)| *n);
            let (client, retry, counters, queue) = (client.clone(), retry.clone(), counters.clone(), queue.clone());
            let unremoved = unremoved.clone();
            tokio::spawn(async move {
                if let Err(numbers) = send_entries(&client, group, &retry, &counters, queue).await {
                    unremoved.lock().unwrap_or_else(|e| e.into_inner()).extend(numbers);
                }
                drop(permit);
            });
        }
    }
    let _ = in_flight.acquire_many(permits(config.num_consumers)).await;
}

/// Consecutive entries grouped into requests of at most `max_spans` spans (an entry is never split).
fn batches(entries: Vec<(u64, QueuedExport)>, max_spans: usize) -> Vec<Vec<(u64, QueuedExport)>> {
    let mut out: Vec<Vec<(u64, QueuedExport)>> = Vec::new();
    let mut spans = 0;
    for entry in entries {
        let n = entry.1.spans as usize;
        match out.last_mut() {
            Some(group) if spans + n <= max_spans => group.push(entry),
            _ => {
                out.push(vec![entry]);
                spans = 0;
            }
        }
        spans += n;
    }
    out
}

/// Sends a group of entries and removes them; gives back the entries whose removal failed.
async fn send_entries(
    client: &Client,
    group: Vec<(u64, QueuedExport)>,
    retry: &RetryConfig,
    counters: &Counters,
    queue: Arc<dyn ExportQueue>,
) -> Result<(), Vec<u64>> {
    let numbers: Vec<u64> = group.iter().map(|(n, _)| *n).collect();
    let mut batch = Vec::new();
    let mut count = 0u64;
    for (number, entry) in &group {
        match ExportTraceServiceRequest::decode(entry.request.as_slice()) {
            Ok(request) => {
                batch.extend(request.resource_spans);
                count += u64::from(entry.spans);
            }
            Err(e) => {
                // The pipeline encoded it, so this is damage on disk: counted as failed, never retried forever.
                Counters::add(&counters.export_spans_failed, u64::from(entry.spans));
                tracing::error!(entry = number, error = %e, "undecodable export queue entry dropped");
            }
        }
    }
    if !batch.is_empty() {
        send_with_retry(client, batch, count, retry, counters).await;
    }
    // Delivered, permanently refused or out of retry budget: in each case the entry's fate is settled and
    // counted, so it leaves the queue.
    let to_remove = numbers.clone();
    match tokio::task::spawn_blocking(move || queue.remove(&to_remove)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot remove delivered entries from the export queue; retrying");
            Err(numbers)
        }
        Err(e) => {
            tracing::error!(error = %e, "export queue removal did not run; retrying");
            Err(numbers)
        }
    }
}

/// The backoff before retry `attempt` (0-based): exponential, capped, with ±50 % jitter so that many senders
/// recovering from one outage do not retry in step.
pub fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let base = retry.initial_interval.saturating_mul(2u32.saturating_pow(attempt.min(30))).min(retry.max_interval);
    let jitter = rand::thread_rng().gen_range(0.5..1.5);
    base.mul_f64(jitter).min(retry.max_interval)
}

async fn send_with_retry(
    client: &Client,
    batch: Vec<ResourceSpans>,
    count: u64,
    retry: &RetryConfig,
    counters: &Counters,
) {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match client.send(batch.clone()).await {
            Ok(()) => {
                Counters::add(&counters.export_spans_sent, count);
                return;
            }
            Err(ExportError::Retryable { message, retry_after }) if retry.enabled => {
                let wait = retry_after.unwrap_or_else(|| backoff(retry, attempt));
                let out_of_budget = retry.max_elapsed_time.is_some_and(|max| started.elapsed() + wait > max);
                if out_of_budget {
                    Counters::add(&counters.export_spans_failed, count);
                    tracing::error!(spans = count, error = %message, "export gave up after the retry budget");
                    return;
                }
                Counters::add(&counters.export_retries, 1);
                tracing::warn!(spans = count, error = %message, ?wait, "export failed, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => {
                Counters::add(&counters.export_spans_failed, count);
                tracing::error!(spans = count, error = %e, "export failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_entries_are_batched_up_to_the_span_limit_without_splitting() {
        let entry = |n: u64, spans: u32| (n, QueuedExport { spans, request: Vec::new() });
        let groups = batches(vec![entry(1, 600), entry(2, 600), entry(3, 900), entry(4, 5000), entry(5, 10)], 2048);
        let numbers: Vec<Vec<u64>> = groups.iter().map(|g| g.iter().map(|(n, _)| *n).collect()).collect();
        assert_eq!(numbers, [vec![1, 2], vec![3], vec![4], vec![5]]);
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let retry = RetryConfig {
            enabled: true,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(1),
            max_elapsed_time: None,
        };
        for _ in 0..100 {
            let first = backoff(&retry, 0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150), "{first:?}");
            let third = backoff(&retry, 2);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(600), "{third:?}");
            assert!(backoff(&retry, 20) <= Duration::from_secs(1));
        }
    }
}
