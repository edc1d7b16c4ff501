//! The OTLP exporter: batches spans by size and time, sends them over gRPC or HTTP with a bounded number of
//! requests in flight, and retries retryable failures with exponential backoff and jitter.

pub(crate) mod grpc;
pub(crate) mod http;

use crate::config::{ExportProtocol, ExporterConfig, RetryConfig};
use crate::telemetry::Counters;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

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
#[derive(Clone)]
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

/// The running exporter; `input` takes groups of spans, `shutdown` drains them.
pub struct Exporter {
    input: mpsc::Sender<Vec<ResourceSpans>>,
    task: JoinHandle<()>,
}

impl Exporter {
    /// Builds the client and starts the batching task. Connection happens lazily, so a backend that is down at
    /// startup does not stop ordertrail; its spans wait in the queue and are retried.
    pub fn start(config: ExporterConfig, counters: Arc<Counters>) -> Result<Exporter, ExportError> {
        let client = match config.protocol {
            ExportProtocol::Grpc => Client::Grpc(grpc::GrpcClient::new(&config)?),
            ExportProtocol::HttpProtobuf => Client::Http(http::HttpClient::new(&config)?),
        };
        let (input, rx) = mpsc::channel(config.queue_size);
        let task = tokio::spawn(batch_loop(config, client, rx, counters));
        Ok(Exporter { input, task })
    }

    pub fn sender(&self) -> mpsc::Sender<Vec<ResourceSpans>> {
        self.input.clone()
    }

    /// Stops the batching task at once, for a shutdown whose deadline has passed.
    pub fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }

    /// Sends what is queued and waits for requests in flight, for at most `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        drop(self.input);
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
    let _ = in_flight.acquire_many(config.num_consumers as u32).await;
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
