//! Counters shared by the receivers, the pipeline and the exporter. Every place that refuses or drops data has
//! one here, so an operator can tell "nothing arrived" from "it arrived and was turned away".

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counters {
    /// OTLP export requests accepted into the pipeline.
    pub requests_accepted: AtomicU64,
    /// Requests refused because the pipeline queue was full (answered UNAVAILABLE / 503).
    pub requests_refused_busy: AtomicU64,
    /// Requests refused because the persistent export queue reached `sending_queue.max_bytes`.
    pub requests_refused_queue_full: AtomicU64,
    /// Requests refused because resident memory was above the limit.
    pub requests_refused_memory: AtomicU64,
    /// Requests refused because the admission budget (or the sender's share of it) was taken.
    pub requests_refused_admission: AtomicU64,
    /// Requests skipped because their sender had given up (deadline passed, connection closed) before the engine
    /// reached them.
    pub requests_abandoned: AtomicU64,
    /// Connections closed on accept because the listener had `max_connections` open.
    pub connections_refused: AtomicU64,
    /// Connections whose TLS handshake failed or timed out (no certificate, or one not signed by the client CA,
    /// a plain-text client on a TLS port).
    pub tls_handshakes_failed: AtomicU64,
    /// Requests refused for a missing or wrong bearer token (401 / UNAUTHENTICATED).
    pub requests_unauthenticated: AtomicU64,
    /// Bytes the admission budget has reserved for requests being received and processed now (a gauge).
    pub admitted_bytes: AtomicU64,
    /// The admission budget in bytes (a gauge, set once at startup).
    pub admission_limit_bytes: AtomicU64,
    /// Requests whose body could not be decoded (answered INVALID_ARGUMENT / 400).
    pub requests_malformed: AtomicU64,
    /// Spans accepted by the receivers.
    pub spans_received: AtomicU64,
    /// Spans rejected for invalid ids (reported in `partial_success`).
    pub spans_rejected: AtomicU64,
    /// State commits that failed; their requests were answered UNAVAILABLE.
    pub store_commit_failures: AtomicU64,
    /// Commits refused because another replica wrote one of their orders first; the group was processed again.
    pub store_conflicts: AtomicU64,
    /// Orders in memory dropped because another replica changed them (read back fresh when next needed).
    pub orders_changed_elsewhere: AtomicU64,
    /// Stopped replicas whose export queue, waiting spans and remembered traces this replica took over.
    pub replicas_adopted: AtomicU64,
    /// Spans handed to the exporter.
    pub export_spans_queued: AtomicU64,
    /// Spans the backend acknowledged.
    pub export_spans_sent: AtomicU64,
    /// Spans given up on after a permanent error or the retry budget.
    pub export_spans_failed: AtomicU64,
    /// Export requests the backend refused as too large, sent again in halves.
    pub export_requests_halved: AtomicU64,
    /// Spans dropped because they were too large to export even in a request of their own.
    pub export_spans_too_large: AtomicU64,
    /// Export attempts retried after a retryable error.
    pub export_retries: AtomicU64,
    /// Notifications not queued because `notifications.queue_size` were already waiting.
    pub notifications_dropped: AtomicU64,
    /// Notifications a receiver took (answered 2xx).
    pub notifications_sent: AtomicU64,
    /// Notifications given up on: refused by the receiver, out of retry budget, or for a notifier no longer configured.
    pub notifications_failed: AtomicU64,
    /// Delivery attempts that failed and will be made again.
    pub notifications_retried: AtomicU64,
    /// Times a notification waited because its team had used its share of `notifications.rate_limit`.
    pub notifications_rate_limited: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
