//! The OTLP exporter: sends spans over gRPC or HTTP with a bounded number of requests in flight, and retries
//! retryable failures with exponential backoff and jitter.
//!
//! It reads from one of two places. With durable storage, from the persistent export queue the pipeline appends to
//! in the same transaction as the state: an entry is removed only once the backend accepted it, so a crash or an
//! outage loses nothing, and the queue's bound on disk pushes back on senders. With memory storage, from a bounded
//! channel, batching by size and time.

mod compress;
mod entries;
pub(crate) mod grpc;
pub(crate) mod http;
mod split;

pub use entries::queue_entries;

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
    /// The backend refused the request for its size; smaller requests with the same spans may pass.
    #[error("export request too large for the backend: {0}")]
    TooLarge(String),
}

/// One way of sending a request.
#[derive(Debug, Clone)]
enum Client {
    Grpc(grpc::GrpcClient),
    Http(http::HttpClient),
}

/// A request as it goes on the wire, compressed (and for gRPC framed) once for all its attempts.
#[derive(Debug, Clone)]
struct Prepared(bytes::Bytes);

impl Client {
    fn prepare(&self, parts: &[&[u8]]) -> Result<Prepared, ExportError> {
        match self {
            Client::Grpc(client) => client.prepare(parts).map(Prepared),
            Client::Http(client) => client.prepare(parts).map(Prepared),
        }
    }

    async fn send(&self, request: Prepared) -> Result<(), ExportError> {
        match self {
            Client::Grpc(client) => client.send(request.0).await,
            Client::Http(client) => client.send(request.0).await,
        }
    }
}

/// One export request, encoded: the encoded `ExportTraceServiceRequest`s it is made of (queue entries; joined,
/// they are one request, because a request is nothing but its repeated `resource_spans`), with its span count
/// and size. Spans are encoded once, in the pipeline, and sent as those bytes; they are decoded again only to cut
/// a request the backend refuses as too large.
#[derive(Debug, Default)]
struct Encoded {
    parts: Vec<Vec<u8>>,
    spans: u64,
    bytes: usize,
}

impl Encoded {
    fn push(&mut self, entry: QueuedExport) {
        self.spans += u64::from(entry.spans);
        self.bytes += entry.request.len();
        self.parts.push(entry.request);
    }

    fn from_spans(resource_spans: Vec<ResourceSpans>) -> Encoded {
        let spans = split::span_count(&resource_spans) as u64;
        let request = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
        Encoded { bytes: request.len(), spans, parts: vec![request] }
    }

    fn decode(&self) -> Result<Vec<ResourceSpans>, prost::DecodeError> {
        let mut request = ExportTraceServiceRequest::default();
        for part in &self.parts {
            request.merge(part.as_slice())?;
        }
        Ok(request.resource_spans)
    }
}

/// Semaphore permits for `n` consumers; tokio counts permits in `u32`, far above any sensible consumer count.
fn permits(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The running exporter; `shutdown` drains what it can within a deadline.
#[derive(Debug)]
pub struct Exporter {
    /// Where the pipeline hands encoded spans over, in memory mode.
    input: Option<mpsc::Sender<Vec<QueuedExport>>>,
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
    pub fn sender(&self) -> Option<mpsc::Sender<Vec<QueuedExport>>> {
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

async fn batch_loop(
    config: ExporterConfig,
    client: Client,
    mut rx: mpsc::Receiver<Vec<QueuedExport>>,
    counters: Arc<Counters>,
) {
    let in_flight = Arc::new(Semaphore::new(config.num_consumers));
    let retry = Arc::new(config.retry.clone());
    let max_bytes = config.max_batch_bytes;
    let mut batch: Vec<(u64, QueuedExport)> = Vec::new();
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
        if let Some(Some(entries)) = received {
            for entry in entries {
                spans += entry.spans as usize;
                batch.push((0, entry));
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + config.batch_timeout);
        }
        let full = spans >= config.send_batch_size;
        if !batch.is_empty() && (full || timed_out || closed) {
            spans = 0;
            deadline = None;
            for group in batches(std::mem::take(&mut batch), config.send_batch_size, max_bytes) {
                let permit = in_flight.clone().acquire_owned().await.expect("semaphore is never closed");
                let (client, retry, counters) = (client.clone(), retry.clone(), counters.clone());
                let mut request = Encoded::default();
                for (_, entry) in group {
                    request.push(entry);
                }
                tokio::spawn(async move {
                    deliver(&client, request, max_bytes, &retry, &counters).await;
                    drop(permit);
                });
            }
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
        for group in batches(entries, config.send_batch_size, config.max_batch_bytes) {
            let permit = in_flight.clone().acquire_owned().await.expect("semaphore is never closed");
            cursor = group.last().map(|(n, _)| *n);
            let (client, retry, counters, queue) = (client.clone(), retry.clone(), counters.clone(), queue.clone());
            let unremoved = unremoved.clone();
            let max_bytes = config.max_batch_bytes;
            tokio::spawn(async move {
                if let Err(numbers) = send_entries(&client, group, max_bytes, &retry, &counters, queue).await {
                    unremoved.lock().unwrap_or_else(|e| e.into_inner()).extend(numbers);
                }
                drop(permit);
            });
        }
    }
    let _ = in_flight.acquire_many(permits(config.num_consumers)).await;
}

/// Consecutive entries grouped into requests of at most `max_spans` spans and `max_bytes` encoded bytes. An
/// entry is never split here; one larger than `max_bytes` on its own is cut when it is sent.
fn batches(entries: Vec<(u64, QueuedExport)>, max_spans: usize, max_bytes: usize) -> Vec<Vec<(u64, QueuedExport)>> {
    let mut out: Vec<Vec<(u64, QueuedExport)>> = Vec::new();
    let (mut spans, mut bytes) = (0, 0);
    for entry in entries {
        let (n, size) = (entry.1.spans as usize, entry.1.request.len());
        match out.last_mut() {
            Some(group) if spans + n <= max_spans && bytes + size <= max_bytes => group.push(entry),
            _ => {
                out.push(vec![entry]);
                (spans, bytes) = (0, 0);
            }
        }
        spans += n;
        bytes += size;
    }
    out
}

/// Sends a group of entries and removes them; gives back the entries whose removal failed.
async fn send_entries(
    client: &Client,
    group: Vec<(u64, QueuedExport)>,
    max_bytes: usize,
    retry: &RetryConfig,
    counters: &Counters,
    queue: Arc<dyn ExportQueue>,
) -> Result<(), Vec<u64>> {
    let numbers: Vec<u64> = group.iter().map(|(n, _)| *n).collect();
    let mut request = Encoded::default();
    for (number, entry) in group {
        if split::is_export_request(&entry.request) {
            request.push(entry);
        } else {
            // The pipeline encoded it, so this is damage on disk: counted as failed, never retried forever, and
            // kept out of the request so that the backend does not refuse the good entries with it.
            Counters::add(&counters.export_spans_failed, u64::from(entry.spans));
            tracing::error!(entry = number, "undecodable export queue entry dropped");
        }
    }
    if request.spans > 0 {
        deliver(client, request, max_bytes, retry, counters).await;
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

/// The backoff before retry `attempt` (0-based): `initial_interval` times `multiplier` per attempt, capped at
/// `max_interval`, drawn within `randomization_factor` either side so that many senders recovering from one outage
/// do not retry in step (the collector's rule).
pub fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let growth = retry.multiplier.powi(i32::try_from(attempt.min(64)).unwrap_or(64));
    let cap = retry.max_interval.as_secs_f64();
    let base = (retry.initial_interval.as_secs_f64() * growth).min(cap);
    let factor = retry.randomization_factor;
    let jitter = if factor > 0.0 { rand::thread_rng().gen_range(1.0 - factor..=1.0 + factor) } else { 1.0 };
    Duration::from_secs_f64((base * jitter).min(cap))
}

/// Delivers a request in requests the backend accepts: cut to `max_bytes` first, and halved again whenever the
/// backend still refuses a request as too large. A span that is too large alone can never be delivered: it is
/// dropped, counted and logged by name, so that it does not hold an export worker or the spans behind it.
async fn deliver(client: &Client, request: Encoded, max_bytes: usize, retry: &RetryConfig, counters: &Counters) {
    let pieces = if request.bytes <= max_bytes {
        vec![request]
    } else {
        let Some(batch) = decoded(&request, counters) else { return };
        let (pieces, oversized) = split::by_bytes(batch, max_bytes);
        for span in oversized {
            drop_oversized(counters, &span, &format!("larger than exporters.otlp.batch.max_size_bytes ({max_bytes})"));
        }
        pieces.into_iter().map(Encoded::from_spans).collect()
    };
    // A stack, so that the halves of a refused request go out before the requests after it.
    let mut work: Vec<Encoded> = pieces.into_iter().rev().collect();
    while let Some(request) = work.pop() {
        if let Some(message) = send_with_retry(client, &request, retry, counters).await {
            let Some(batch) = decoded(&request, counters) else { continue };
            match split::halve(batch) {
                Ok((first, second)) => {
                    Counters::add(&counters.export_requests_halved, 1);
                    tracing::warn!(error = %message, "backend refused an export request as too large; sending it in halves");
                    work.push(Encoded::from_spans(second));
                    work.push(Encoded::from_spans(first));
                }
                Err(span) => drop_oversized(counters, &span, &message),
            }
        }
    }
}

/// The spans of a request that must be cut; `None` (counted as failed) if its bytes do not decode.
fn decoded(request: &Encoded, counters: &Counters) -> Option<Vec<ResourceSpans>> {
    match request.decode() {
        Ok(batch) => Some(batch),
        Err(e) => {
            Counters::add(&counters.export_spans_failed, request.spans);
            tracing::error!(error = %e, spans = request.spans, "undecodable export request dropped");
            None
        }
    }
}

fn drop_oversized(counters: &Counters, span: &split::Oversized, reason: &str) {
    Counters::add(&counters.export_spans_too_large, 1);
    tracing::error!(
        trace_id = %span.trace_id,
        span_id = %span.span_id,
        name = %span.name,
        bytes = span.bytes,
        reason,
        "span dropped: too large to export on its own"
    );
}

/// Sends one request, retrying retryable failures. Gives back the backend's message when it refused the request
/// as too large; every other outcome (delivered, refused for good, out of retry budget) is settled and counted here.
async fn send_with_retry(
    client: &Client,
    request: &Encoded,
    retry: &RetryConfig,
    counters: &Counters,
) -> Option<String> {
    let count = request.spans;
    let parts: Vec<&[u8]> = request.parts.iter().map(Vec::as_slice).collect();
    let prepared = match client.prepare(&parts) {
        Ok(prepared) => prepared,
        Err(e) => {
            Counters::add(&counters.export_spans_failed, count);
            tracing::error!(spans = count, error = %e, "export failed");
            return None;
        }
    };
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match client.send(prepared.clone()).await {
            Ok(()) => {
                Counters::add(&counters.export_spans_sent, count);
                return None;
            }
            Err(ExportError::TooLarge(message)) => return Some(message),
            Err(ExportError::Retryable { message, retry_after }) if retry.enabled => {
                let wait = retry_after.unwrap_or_else(|| backoff(retry, attempt));
                let out_of_budget = retry.max_elapsed_time.is_some_and(|max| started.elapsed() + wait > max);
                if out_of_budget {
                    Counters::add(&counters.export_spans_failed, count);
                    tracing::error!(spans = count, error = %message, "export gave up after the retry budget");
                    return None;
                }
                Counters::add(&counters.export_retries, 1);
                tracing::warn!(spans = count, error = %message, ?wait, "export failed, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => {
                Counters::add(&counters.export_spans_failed, count);
                tracing::error!(spans = count, error = %e, "export failed");
                return None;
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
        let groups =
            batches(vec![entry(1, 600), entry(2, 600), entry(3, 900), entry(4, 5000), entry(5, 10)], 2048, usize::MAX);
        let numbers: Vec<Vec<u64>> = groups.iter().map(|g| g.iter().map(|(n, _)| *n).collect()).collect();
        assert_eq!(numbers, [vec![1, 2], vec![3], vec![4], vec![5]]);
    }

    #[test]
    fn queue_entries_are_batched_up_to_the_byte_limit_too() {
        let entry = |n: u64, bytes: usize| (n, QueuedExport { spans: 1, request: vec![0; bytes] });
        let groups = batches(vec![entry(1, 600), entry(2, 400), entry(3, 1), entry(4, 5000), entry(5, 10)], 100, 1000);
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
            multiplier: 2.0,
            randomization_factor: 0.5,
        };
        for _ in 0..100 {
            let first = backoff(&retry, 0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150), "{first:?}");
            let third = backoff(&retry, 2);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(600), "{third:?}");
            assert!(backoff(&retry, 20) <= Duration::from_secs(1));
        }
        // The collector's defaults, and no randomisation: exactly 100 ms, 150 ms, 225 ms.
        let exact = RetryConfig { multiplier: 1.5, randomization_factor: 0.0, ..retry };
        assert_eq!(backoff(&exact, 0), Duration::from_millis(100));
        assert_eq!(backoff(&exact, 2), Duration::from_secs_f64(0.225));
        assert_eq!(backoff(&exact, u32::MAX), Duration::from_secs(1), "capped, without overflow");
    }
}
