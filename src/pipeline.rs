//! The pipeline: one thread owns the engine and the store; receivers hand it OTLP requests over a bounded queue.
//!
//! A request is acknowledged only after the state it changed is committed, and many requests share one commit
//! (group commit), so the cost of an fsync is spread over up to `pipeline.max_group_commit` requests. When the
//! queue is full, receivers answer UNAVAILABLE / 503 at once instead of buffering: memory stays bounded and the
//! sender's retry logic takes over.

use crate::clock::unix_nanos_now;
use crate::event_log::{EventKind, EventLog};
use crate::exporter::queue_entries;
use crate::memory::MemoryLimiter;
use crate::metrics::OrderMetrics;
use crate::store::{Durability, ExportQueue, OrderStore, QueuedExport, StoreError};
use crate::telemetry::Counters;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use ordertrail_core::config::Config;
use ordertrail_core::engine::events::{Event, KeyKind};
use ordertrail_core::engine::{Engine, EngineStats, Output, StateChanges};
use ordertrail_core::insight::patterns::PatternEvent;
use ordertrail_core::insight::SavedInsight;
use ordertrail_core::order::OrderRecord;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// How often the engine's clock advances when no request arrives: bounds how late a waiting span or an idle
/// order is handled.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("pipeline is full, retry later")]
    Busy,
    #[error("ordertrail is shutting down")]
    ShuttingDown,
    #[error("state could not be stored: {0}")]
    Store(String),
    #[error("the export queue is full ({0} bytes queued), retry later")]
    ExportQueueFull(u64),
    #[error("memory is above the limit, retry later")]
    MemoryLimit,
    /// The sender gave up (its deadline passed or it went away) before the engine reached the request, so it was
    /// not processed: answering it now could only make a retrying sender's spans count twice.
    #[error("the request's deadline passed before it was processed")]
    Abandoned,
}

/// Where the spans to export go.
#[derive(Debug)]
pub enum ExportSink {
    /// No exporter is configured: spans are labelled and recorded only.
    None,
    /// A bounded channel to the exporter (memory durability), carrying requests encoded as for the queue, with
    /// the largest number of spans an entry holds.
    Memory { export: mpsc::Sender<Vec<QueuedExport>>, max_spans_per_entry: usize },
    /// The store's persistent export queue, in the same commit as the state; `wake` tells the exporter.
    Queue { wake: Arc<Notify>, max_bytes: u64, max_spans_per_entry: usize },
}

/// A read-only question answered on the engine thread, so that it sees a consistent state.
type Inspection = Box<dyn FnOnce(&Engine) + Send>;

enum Command {
    Ingest { batch: Vec<ResourceSpans>, reply: oneshot::Sender<Result<(), IngestError>> },
    Order { key: String, reply: oneshot::Sender<Option<OrderRecord>> },
    Inspect(Inspection),
    Orders { reply: oneshot::Sender<Vec<OrderRecord>> },
    Flush { reply: oneshot::Sender<()> },
    Shutdown,
}

/// The receivers' and queries' side of the pipeline; cheap to clone.
#[derive(Clone)]
pub struct PipelineHandle {
    tx: SyncSender<Command>,
    counters: Arc<Counters>,
    memory: Option<Arc<MemoryLimiter>>,
    heartbeat: Heartbeat,
}

/// When the engine thread last went round its loop, which it does at least every [`TICK`]. Readiness reads it
/// instead of asking the engine, so that a probe never waits in the queue behind a burst of work.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat(Arc<std::sync::atomic::AtomicU64>);

impl Heartbeat {
    fn beat(&self) {
        self.0.store(unix_nanos_now(), Ordering::Relaxed);
    }

    /// How long ago the engine last went round its loop, as of `now` (Unix nanoseconds).
    pub fn age(&self, now: u64) -> Duration {
        Duration::from_nanos(now.saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

impl std::fmt::Debug for PipelineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The command queue holds closures, which have nothing to show.
        f.debug_struct("PipelineHandle").field("memory", &self.memory).finish_non_exhaustive()
    }
}

impl PipelineHandle {
    /// The engine thread's heartbeat, for readiness.
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Hands a request to the engine and waits until its state is committed. If the caller stops waiting (its
    /// future is dropped when the sender's deadline passes or its connection closes) before the engine reaches
    /// the request, the request is skipped rather than processed for nobody.
    pub async fn ingest(&self, batch: Vec<ResourceSpans>) -> Result<(), IngestError> {
        if self.memory.as_ref().is_some_and(|m| m.over_limit()) {
            Counters::add(&self.counters.requests_refused_memory, 1);
            return Err(IngestError::MemoryLimit);
        }
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Command::Ingest { batch, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                Counters::add(&self.counters.requests_refused_busy, 1);
                return Err(IngestError::Busy);
            }
            Err(TrySendError::Disconnected(_)) => return Err(IngestError::ShuttingDown),
        }
        answer.await.unwrap_or(Err(IngestError::ShuttingDown))
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.clone();
        let command = make(reply);
        // Queries wait for room rather than fail, so they go through a blocking send off the async threads.
        tokio::task::spawn_blocking(move || tx.send(command)).await.ok()?.ok()?;
        answer.await.ok()
    }

    /// Runs `question` on the engine thread against the current state; `None` when the pipeline has stopped.
    pub async fn inspect<T: Send + 'static>(&self, question: impl FnOnce(&Engine) -> T + Send + 'static) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.clone();
        let command = Command::Inspect(Box::new(move |engine: &Engine| {
            let _ = reply.send(question(engine));
        }));
        tokio::task::spawn_blocking(move || tx.send(command)).await.ok()?.ok()?;
        answer.await.ok()
    }

    /// The current record of one order, from memory or, for an evicted closed order, from the store.
    pub async fn order(&self, key: &str) -> Option<OrderRecord> {
        let key = key.to_string();
        self.ask(|reply| Command::Order { key, reply }).await.flatten()
    }

    /// All orders held in memory.
    pub async fn orders(&self) -> Vec<OrderRecord> {
        self.ask(|reply| Command::Orders { reply }).await.unwrap_or_default()
    }

    /// Returns once every request queued before it is processed, committed and handed to the exporter.
    pub async fn flush(&self) {
        self.ask(|reply| Command::Flush { reply }).await;
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

/// An engine with the state `store` holds: its orders (those the store loads; the rest are read back when named),
/// aliases, remembered traces and waiting spans. Also returns what restoring the waiting spans produced (spans that
/// could not wait), to send with the first group.
fn build_engine(config: &Arc<Config>, store: &dyn OrderStore, now: u64) -> Result<(Engine, Output), StoreError> {
    let state = store.load(config.correlation.max_orders)?;
    tracing::info!(
        orders = state.orders.len(),
        aliases = state.aliases.len(),
        waiting_traces = state.pending.len(),
        remembered_traces = state.traces.len(),
        queued_exports = store.export_queue().queued_entries(),
        "order state loaded"
    );
    let orders_left_in_store = state.orders_left_in_store;
    let insight = state.insight.as_deref().map(SavedInsight::decode);
    let mut engine = Engine::new(config.clone(), state.orders, state.aliases);
    match insight {
        Some(Ok(saved)) => engine.restore_insight(saved),
        // Learning starts again; the next save replaces the unreadable record.
        Some(Err(e)) => tracing::warn!(error = %e, "the stored insight is unreadable; the delay model starts empty"),
        None => {}
    }
    engine.correct_stored_wakes(state.stored_wakes);
    // Open orders beyond `correlation.max_orders` live in the store only and are read back when named: memory
    // holds a bounded hot set whatever the number of open orders.
    let reader = store.order_reader();
    engine.set_order_loader(
        Box::new(move |key| {
            reader(key).map_err(|e| {
                tracing::warn!(error = %e, order = %key, "reading an evicted order back from the store failed");
                e.to_string()
            })
        }),
        orders_left_in_store,
    );
    let mut carried = Output::default();
    // Traces first, so that restored waiting spans whose trace is known join their order at once.
    engine.restore_traces(state.traces, now);
    engine.restore_pending(state.pending, now, &mut carried);
    Ok((engine, carried))
}

/// The running pipeline thread.
#[derive(Debug)]
pub struct Pipeline {
    handle: PipelineHandle,
    /// The engine thread; it returns the engine's final counters.
    thread: Option<JoinHandle<EngineStats>>,
    store_healthy: Arc<AtomicBool>,
}

impl Pipeline {
    /// Loads state from `store` and starts the engine thread. Spans to export go to `export`.
    pub fn start(
        config: Arc<Config>,
        store: Box<dyn OrderStore>,
        export: ExportSink,
        counters: Arc<Counters>,
        metrics: Arc<OrderMetrics>,
        memory_soft_limit: Option<u64>,
    ) -> Result<Pipeline, StoreError> {
        let now = unix_nanos_now();
        let (engine, carried) = build_engine(&config, store.as_ref(), now)?;
        let (tx, rx) = sync_channel(config.pipeline.queue_size);
        let memory = memory_soft_limit.map(|limit| Arc::new(MemoryLimiter::start(limit)));
        let heartbeat = Heartbeat::default();
        heartbeat.beat();
        let worker = Worker {
            heartbeat: heartbeat.clone(),
            event_log: EventLog::default(),
            engine,
            queue: store.export_queue(),
            notifications: store.notification_queue(),
            unsaved_notifications: Vec::new(),
            store,
            export,
            durability: config.storage.durability,
            counters: counters.clone(),
            metrics,
            max_group: config.pipeline.max_group_commit,
            carried: Some(carried),
            store_healthy: Arc::new(AtomicBool::new(true)),
            unsaved_exports: Vec::new(),
            wake_warned_at: 0,
            next_wake_lookup: 0,
            sharing_warned_at: 0,
            next_adoption: 0,
            next_insight_refresh: now.saturating_add(INSIGHT_REFRESH_NANOS),
            needs_rebuild: false,
        };
        let store_healthy = worker.store_healthy.clone();
        let thread = std::thread::Builder::new()
            .name("ordertrail-engine".into())
            .stack_size(crate::memory::THREAD_STACK_BYTES)
            .spawn(move || worker.run(rx))
            .map_err(|e| StoreError::Open { path: "engine thread".into(), reason: e.to_string() })?;
        Ok(Pipeline { handle: PipelineHandle { tx, counters, memory, heartbeat }, thread: Some(thread), store_healthy })
    }

    /// False while the last state commit failed (a full disk, say); readiness reports it.
    pub fn store_healthy(&self) -> Arc<AtomicBool> {
        self.store_healthy.clone()
    }

    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// Processes what is queued, passes waiting spans on, commits, and stops the thread.
    /// Returns the engine's counters after its last commit, when the thread ended normally.
    pub async fn shutdown(mut self) -> Option<EngineStats> {
        let tx = self.handle.tx.clone();
        let _ = tokio::task::spawn_blocking(move || tx.send(Command::Shutdown)).await;
        let thread = self.thread.take()?;
        tokio::task::spawn_blocking(move || thread.join()).await.ok()?.ok()
    }
}

struct Worker {
    heartbeat: Heartbeat,
    event_log: EventLog,
    engine: Engine,
    store: Box<dyn OrderStore>,
    queue: Arc<dyn ExportQueue>,
    /// Where the notifications of a group are queued (with its commit), for the notifier to deliver.
    notifications: Arc<dyn crate::store::NotificationQueue>,
    /// Notifications of groups whose commit failed, committed first by the next successful commit, as
    /// `unsaved_exports`.
    unsaved_notifications: Vec<ordertrail_core::notify::Notification>,
    export: ExportSink,
    durability: Durability,
    counters: Arc<Counters>,
    metrics: Arc<OrderMetrics>,
    max_group: usize,
    /// Output produced while restoring state, sent with the first group.
    carried: Option<Output>,
    store_healthy: Arc<AtomicBool>,
    /// Export entries of groups whose commit failed, committed first by the next successful commit. While a
    /// commit is failing, new requests are refused, which keeps this bounded by what was in flight when the store
    /// failed.
    unsaved_exports: Vec<QueuedExport>,
    /// When a failed lookup of due wakes was last logged (ordertrail's clock).
    wake_warned_at: u64,
    /// When the store is next asked for due wakes (ordertrail's clock).
    next_wake_lookup: u64,
    /// When a failed look for other replicas' changes was last logged (ordertrail's clock).
    sharing_warned_at: u64,
    /// When the store is next asked to adopt stopped replicas (ordertrail's clock).
    next_adoption: u64,
    /// When the stored delay model is next read, with a shared store (ordertrail's clock).
    next_insight_refresh: u64,
    /// The engine is ahead of a shared store after a conflict and must be built again before taking on work.
    needs_rebuild: bool,
}

/// How often a replica sharing the store looks for replicas that stopped, to take over their queue and spans.
const ADOPTION_PERIOD_NANOS: u64 = 1_000_000_000;
/// How often a replica sharing the store reads the delay model the others added to: it judges clocks by what all
/// of them learned, a minute late at most.
const INSIGHT_REFRESH_NANOS: u64 = 60_000_000_000;
/// Technical traces with waiting spans looked up in the shared store per adoption period at most.
const WAITING_TRACES_LOOKED_UP: usize = 10_000;
/// How many times a group whose commit another replica's got in the way of is processed again before its
/// requests are refused (retryably).
const CONFLICT_ATTEMPTS: usize = 3;

/// A group's output and state changes, ready to commit.
struct Prepared {
    changes: StateChanges,
    exports: Vec<QueuedExport>,
    memory_entries: Option<Vec<QueuedExport>>,
    span_count: usize,
    events: Vec<Event>,
}

/// Orders read back per tick at most because their wake passed: a burst of due clocks (an outage's worth) is
/// worked through over several ticks instead of holding up span intake.
const WAKES_PER_TICK: usize = 1024;
/// How often the store is asked for due wakes: the engine's tick period.
const WAKE_LOOKUP_PERIOD_NANOS: u64 = 100_000_000;

impl Worker {
    /// Reads back the orders not in memory whose wake passed, so that this tick breaches their clocks, settles
    /// their milestones or closes them for idleness.
    fn wake_due_orders(&mut self, now: u64, out: &mut Output) {
        // Once per tick period, not after every group of requests: the lookup is a read transaction.
        if !self.engine.has_cold_orders() || now < self.next_wake_lookup {
            return;
        }
        self.next_wake_lookup = now.saturating_add(WAKE_LOOKUP_PERIOD_NANOS);
        let engine = &self.engine;
        match self.store.due_wakes(now, WAKES_PER_TICK, &|key| engine.is_hot(key)) {
            Ok(due) if !due.is_empty() => {
                self.engine.wake_orders(&due, now, out);
            }
            Ok(_) => {}
            // The orders stay due and are looked for again at the next tick; one warning a minute says so.
            Err(e) if now >= self.wake_warned_at.saturating_add(60_000_000_000) => {
                self.wake_warned_at = now;
                tracing::warn!(error = %e, "looking up orders due for a clock, settling or idle close failed");
            }
            Err(_) => {}
        }
    }

    fn run(mut self, rx: Receiver<Command>) -> EngineStats {
        loop {
            let mut group = Vec::new();
            match rx.recv_timeout(TICK) {
                Ok(command) => group.push(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while group.len() < self.max_group {
                match rx.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            if !self.step(group) {
                break;
            }
        }
        self.engine.stats().clone()
    }

    /// Before a group, when replicas share the store: forgets the orders in memory that another replica changed
    /// since, learns the aliases it learned, and from time to time takes over what a stopped replica left.
    fn share_with_others(&mut self, now: u64, out: &mut Output) {
        if !self.store.shared() {
            return;
        }
        let result = self.store.changes_by_others().map(|changes| {
            let engine = &self.engine;
            let stale: Vec<String> = changes
                .orders
                .into_iter()
                .filter(|(key, version)| engine.order(key).is_some_and(|o| o.revision < *version))
                .map(|(key, _)| key)
                .collect();
            let forgotten = self.engine.forget_orders(&stale);
            Counters::add(&self.counters.orders_changed_elsewhere, forgotten as u64);
            self.engine.learn_shared_aliases(changes.aliases, now, out);
        });
        if now >= self.next_insight_refresh {
            self.next_insight_refresh = now.saturating_add(INSIGHT_REFRESH_NANOS);
            match self.store.stored_insight().map(|stored| stored.as_deref().map(SavedInsight::decode)) {
                Ok(Some(Ok(saved))) => self.engine.refresh_delay_model(saved.delay),
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "the stored insight is unreadable; kept the model in memory")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reading the stored delay model failed; kept the model in memory"),
            }
        }
        let adopted = if now >= self.next_adoption {
            self.next_adoption = now.saturating_add(ADOPTION_PERIOD_NANOS);
            self.store
                .adopt_stopped_replicas()
                .map(|adopted| {
                    if adopted.replicas.is_empty() {
                        return;
                    }
                    tracing::warn!(
                        replicas = ?adopted.replicas,
                        export_entries = adopted.exports,
                        waiting_traces = adopted.pending.len(),
                        remembered_traces = adopted.traces.len(),
                        "took over what stopped replicas left"
                    );
                    Counters::add(&self.counters.replicas_adopted, adopted.replicas.len() as u64);
                    self.engine.restore_traces(adopted.traces, now);
                    self.engine.restore_pending(adopted.pending, now, out);
                })
                .and_then(|()| {
                    // When a replica stops, the gateway sends the rest of its traces elsewhere: spans waiting here may
                    // belong to a trace whose keyed span another replica saw, and the store says which orders it has.
                    let waiting = self.engine.waiting_traces(WAITING_TRACES_LOOKED_UP);
                    let known = self.store.remembered_traces(&waiting)?;
                    self.engine.learn_shared_traces(known, now, out);
                    Ok(())
                })
        } else {
            Ok(())
        };
        // Not fatal: the orders stay as they are (a commit based on a stale one is refused and done again), and the
        // look is made again before the next group. One warning a minute says so.
        if let Err(e) = result.and(adopted) {
            if now >= self.sharing_warned_at.saturating_add(60_000_000_000) {
                self.sharing_warned_at = now;
                tracing::warn!(error = %e, "looking for other replicas' changes in the shared store failed");
            }
        }
    }

    /// Builds the engine again from the shared store, after a commit another replica got in the way of: memory
    /// then holds what the store holds, as after a restart, and whatever the group did is undone.
    fn rebuild_engine(&mut self, now: u64) -> Result<Output, StoreError> {
        let (mut engine, carried) = build_engine(self.engine.config(), self.store.as_ref(), now)?;
        engine.take_over(&self.engine);
        self.engine = engine;
        // They were produced by the engine just replaced, for requests that were refused and will come again.
        self.unsaved_exports.clear();
        self.unsaved_notifications.clear();
        self.needs_rebuild = false;
        self.next_wake_lookup = 0;
        Ok(carried)
    }

    /// The notifications a group's events make, after those of a failed commit; beyond
    /// `notifications.queue_size` waiting, new ones are dropped and counted rather than holding up span intake.
    fn notifications_of(&mut self, events: &[Event], now: u64) -> Vec<ordertrail_core::notify::Notification> {
        let mut notifications = std::mem::take(&mut self.unsaved_notifications);
        let fresh = ordertrail_core::notify::notifications(self.engine.config(), events, now);
        if fresh.is_empty() {
            return notifications;
        }
        let limit = self.engine.config().notifications.queue_size as u64;
        let room = limit.saturating_sub(self.notifications.queued() + notifications.len() as u64);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if fresh.len() > room {
            let dropped = (fresh.len() - room) as u64;
            Counters::add(&self.counters.notifications_dropped, dropped);
            tracing::warn!(
                dropped,
                limit,
                "the notification queue is full (is a receiver down?); these notifications are dropped"
            );
        }
        notifications.extend(fresh.into_iter().take(room));
        notifications
    }

    /// Takes the engine's state changes and encodes the group's output into export entries.
    fn prepare(&mut self, out: Output, now: u64) -> Prepared {
        let mut changes = self.engine.take_changes();
        let span_count = out.span_count();
        let (spans, events) = out.into_parts();
        changes.notifications = self.notifications_of(&events, now);
        let mut exports = std::mem::take(&mut self.unsaved_exports);
        // The spans are encoded here, once: the exporter sends these bytes as they are, from the queue on disk or,
        // in memory mode, from its channel.
        let memory_entries = match &self.export {
            ExportSink::Queue { max_spans_per_entry, .. } => {
                if span_count > 0 {
                    exports.extend(queue_entries(spans, *max_spans_per_entry));
                }
                None
            }
            ExportSink::Memory { max_spans_per_entry, .. } if span_count > 0 => {
                Some(queue_entries(spans, *max_spans_per_entry))
            }
            ExportSink::Memory { .. } | ExportSink::None => None,
        };
        Prepared { changes, exports, memory_entries, span_count, events }
    }

    /// Commits a group. When another replica wrote one of its orders first, the engine is built again from the
    /// store and the group's requests (`retained`) processed again, a few times; then they are refused, retryably.
    fn commit(
        &mut self,
        mut prepared: Prepared,
        retained: &[Vec<ResourceSpans>],
        now: u64,
    ) -> (Prepared, Result<(), StoreError>) {
        let mut result = self.store.commit(&prepared.changes, &prepared.exports);
        let mut attempts = 0;
        while let Err(StoreError::Conflict { orders }) = &result {
            Counters::add(&self.counters.store_conflicts, 1);
            attempts += 1;
            tracing::debug!(orders = ?orders, attempts, "another replica wrote an order of this group first");
            // What the refused commit was to add to the stored insight goes back to the engine that learned it,
            // so that the rebuilt one takes it over and a later commit saves it.
            if let Some(insight) = prepared.changes.insight.take() {
                self.engine.insight_commit_failed(insight);
            }
            let mut out = match self.rebuild_engine(now) {
                Ok(carried) => carried,
                Err(e) => {
                    self.needs_rebuild = true;
                    return (prepared, Err(e));
                }
            };
            if attempts >= CONFLICT_ATTEMPTS {
                // The engine now holds what the store holds; what it restored goes out with the next group.
                self.carried = Some(out);
                break;
            }
            self.share_with_others(now, &mut out);
            for batch in retained {
                self.engine.process(batch.clone(), now, &mut out);
            }
            self.wake_due_orders(now, &mut out);
            self.engine.tick(now, &mut out);
            prepared = self.prepare(out, now);
            result = self.store.commit(&prepared.changes, &prepared.exports);
        }
        (prepared, result)
    }

    /// Handles one group of commands; returns false on shutdown.
    fn step(&mut self, group: Vec<Command>) -> bool {
        self.heartbeat.beat();
        let now = unix_nanos_now();
        let mut out = self.carried.take().unwrap_or_default();
        if self.needs_rebuild {
            match self.rebuild_engine(now) {
                Ok(carried) => {
                    out = carried;
                    self.store_healthy.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.needs_rebuild = true;
                    tracing::warn!(error = %e, "building the engine again from the shared store failed");
                }
            }
        }
        self.share_with_others(now, &mut out);
        let shared = self.store.shared();
        let mut acks = Vec::new();
        let mut flushes = Vec::new();
        let mut shutdown = false;
        // In a shared store a commit may have to be done again; the group's requests are kept for that.
        let mut retained = Vec::new();
        let queue_limit = match &self.export {
            ExportSink::Queue { max_bytes, .. } => Some(*max_bytes),
            _ => None,
        };
        for command in group {
            match command {
                Command::Ingest { batch, reply } => {
                    if reply.is_closed() {
                        Counters::add(&self.counters.requests_abandoned, 1);
                        continue;
                    }
                    // Until a failed commit has been retried successfully, nothing new is taken on: the engine is
                    // ahead of the store, and a sender told to retry would otherwise be processed twice.
                    if !self.store_healthy.load(Ordering::Relaxed) || self.needs_rebuild {
                        Counters::add(&self.counters.requests_refused_busy, 1);
                        let _ = reply.send(Err(IngestError::Store("the store is failing; retrying".into())));
                        continue;
                    }
                    // A full queue on disk means the backend is behind: refusing here, before any state changes,
                    // lets the sender retry the same request later.
                    if let Some(limit) = queue_limit {
                        let queued = self.queue.queued_bytes();
                        if queued >= limit {
                            Counters::add(&self.counters.requests_refused_queue_full, 1);
                            let _ = reply.send(Err(IngestError::ExportQueueFull(queued)));
                            continue;
                        }
                    }
                    if shared {
                        retained.push(batch.clone());
                    }
                    self.engine.process(batch, now, &mut out);
                    acks.push(reply);
                }
                Command::Order { key, reply } => {
                    let record = match self.engine.order(&key) {
                        Some(order) => Some(order.clone()),
                        None => self.store.order(&key).unwrap_or_else(|e| {
                            tracing::warn!(error = %e, order = %key, "order lookup in the store failed");
                            None
                        }),
                    };
                    let _ = reply.send(record);
                }
                Command::Inspect(question) => question(&self.engine),
                Command::Orders { reply } => {
                    let _ = reply.send(self.engine.orders().cloned().collect());
                }
                Command::Flush { reply } => flushes.push(reply),
                Command::Shutdown => shutdown = true,
            }
        }
        self.wake_due_orders(now, &mut out);
        self.engine.tick(now, &mut out);
        // With durable storage, spans still waiting for their order are on disk and wait on after a restart;
        // in memory mode they are passed on now rather than lost.
        if shutdown && self.durability == Durability::Memory {
            self.engine.flush_pending(now, &mut out);
        }
        if shutdown {
            self.engine.save_insight_now();
        }
        let prepared = self.prepare(out, now);
        let (prepared, result) = self.commit(prepared, &retained, now);
        let Prepared { changes, exports, memory_entries, span_count, events } = prepared;
        let conflicted = matches!(result, Err(StoreError::Conflict { .. }));
        let result = match result {
            Ok(()) => {
                // Revisions matter only where another replica may write the same order.
                if shared {
                    self.engine.committed(&changes);
                }
                Ok(())
            }
            Err(StoreError::Conflict { orders }) => {
                tracing::warn!(
                    orders = ?orders,
                    "other replicas kept writing this group's orders first; its requests are refused, to be retried"
                );
                Err(IngestError::Store("other replicas changed these orders at the same time; retry".into()))
            }
            Err(e) => {
                Counters::add(&self.counters.store_commit_failures, 1);
                tracing::error!(error = %e, "state commit failed; the requests in this group are refused");
                if !self.needs_rebuild {
                    // The output and the state changes stay in memory and go into the next commit, which the next
                    // tick attempts: what the engine already did is not done again, so dropping it here would lose it.
                    let mut changes = changes;
                    self.unsaved_notifications = std::mem::take(&mut changes.notifications);
                    self.engine.commit_failed(changes);
                    self.unsaved_exports = exports;
                }
                Err(IngestError::Store(e.to_string()))
            }
        };
        // Refused for a conflict, the store is healthy: the engine holds what it holds, and new requests are taken.
        self.store_healthy.store(result.is_ok() || conflicted, Ordering::Relaxed);
        log_events(self.engine.config(), &events, &mut self.event_log, now);
        self.metrics.observe(&events, now);
        self.metrics.sync(
            &self.counters,
            self.engine.stats(),
            self.engine.pending_spans(),
            self.engine.late_join_spans(),
        );
        self.metrics.set_export_queue(self.queue.queued_entries(), self.queue.queued_bytes());
        // The output of a group refused for a conflict was dropped with the engine that produced it.
        if span_count > 0 && !conflicted {
            Counters::add(&self.counters.export_spans_queued, span_count as u64);
        }
        if let ExportSink::Queue { wake, .. } = &self.export {
            // A successful commit may also have written entries of an earlier failed one, so it always wakes.
            if result.is_ok() {
                wake.notify_one();
            }
        }
        if let (ExportSink::Memory { export, .. }, Some(spans)) = (&self.export, memory_entries) {
            // Memory mode promises no durability, so its output goes out even when the commit failed. Waiting here
            // when the exporter's queue is full fills our own queue in turn, which makes the receivers answer
            // UNAVAILABLE: back-pressure reaches the senders instead of growing memory.
            if export.blocking_send(spans).is_err() {
                tracing::warn!("exporter stopped; spans of this group were not exported");
            }
        }
        for ack in acks {
            let _ = ack.send(result.clone());
        }
        for flush in flushes {
            let _ = flush.send(());
        }
        !shutdown
    }
}

/// Structured log lines for what operations must hear about without looking at a dashboard.
/// Sampled by `EventLog`: a few lines per kind a minute, then one summary.
fn log_events(config: &Config, events: &[Event], log: &mut EventLog, now: u64) {
    let mut summarise = |kind: EventKind, left: u64| {
        tracing::warn!(count = left, "{left} more {} in the last minute, not logged one by one", kind.summary());
    };
    log.roll(now, &mut summarise);
    for event in events {
        let kind = match event {
            // Once per value or trace in all: logged whatever the window's count.
            Event::KeyOverCap { kind, value, cap } => {
                let (what, setting) = match kind {
                    KeyKind::Alias(alias) => (format!("{alias} alias"), "correlation.max_orders_per_alias"),
                    KeyKind::Trace => ("technical trace".to_string(), "correlation.max_orders_per_trace"),
                };
                tracing::warn!(
                    value = %value.chars().take(128).collect::<String>(),
                    cap,
                    "{what} names more than {cap} orders ({setting}): it is no longer used to find orders"
                );
                continue;
            }
            Event::SlaBreached { .. } => EventKind::SlaBreach,
            Event::SlaWithdrawn { .. } => EventKind::SlaBreachWithdrawn,
            Event::SlaAtRisk { .. } => EventKind::OrderAtRisk,
            Event::Pattern(_) => EventKind::ExceptionPattern,
            Event::FindingWithdrawn { .. } => EventKind::FindingWithdrawn,
            Event::ExceptionRecorded { signature, .. } if signature.starts_with("conformance:") => {
                EventKind::ConformanceException
            }
            _ => continue,
        };
        if !log.admit(kind, now, &mut summarise) {
            continue;
        }
        match event {
            Event::SlaBreached { order, target, deadline_unix_nanos, owner, .. } => {
                let target = &config.sla.targets[*target];
                tracing::warn!(
                    order = %order,
                    target = %target.name,
                    milestone = %config.taxonomy.milestones[target.to].name,
                    owner = %owner,
                    deadline = %ordertrail_core::time::rfc3339(*deadline_unix_nanos),
                    "sla breach: milestone overdue"
                );
            }
            Event::SlaWithdrawn { order, target, .. } => {
                let target = &config.sla.targets[*target];
                tracing::warn!(
                    order = %order,
                    target = %target.name,
                    milestone = %config.taxonomy.milestones[target.to].name,
                    "sla breach withdrawn: a span that arrived late shows the milestone was reached in time"
                );
            }
            Event::FindingWithdrawn { order, signature, reason } => {
                tracing::warn!(order = %order, finding = %signature, "{reason}");
            }
            Event::SlaAtRisk { order, target, deadline_unix_nanos, owner, probability, basis, .. } => {
                let target = &config.sla.targets[*target];
                tracing::warn!(
                    order = %order,
                    target = %target.name,
                    milestone = %config.taxonomy.milestones[target.to].name,
                    owner = %owner,
                    deadline = %ordertrail_core::time::rfc3339(*deadline_unix_nanos),
                    reason = %ordertrail_core::notify::risk_reason(*probability, basis),
                    "order at risk: milestone likely to be late"
                );
            }
            Event::Pattern(PatternEvent::New { id, key, example, order, .. }) => {
                tracing::warn!(
                    pattern = %id,
                    class = %key.class,
                    milestone = key.milestone.as_deref().unwrap_or(""),
                    system = %key.system,
                    template = %key.template,
                    example = %example,
                    order = %order,
                    "new exception pattern"
                );
            }
            Event::Pattern(PatternEvent::RateJump { id, key, count, baseline_per_window, .. }) => {
                tracing::warn!(
                    pattern = %id,
                    class = %key.class,
                    system = %key.system,
                    template = %key.template,
                    count,
                    baseline = baseline_per_window,
                    "exception pattern rate jumped: {count} in the current window against {baseline_per_window:.1} before"
                );
            }
            Event::ExceptionRecorded { order, class, owner, milestone, signature, reason, .. }
                if signature.starts_with("conformance:") =>
            {
                tracing::warn!(
                    order = %order,
                    class = %class,
                    owner = %owner,
                    milestone = milestone.as_deref().unwrap_or(""),
                    reason = %reason,
                    "conformance exception"
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LoadedState, RedbStore};
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
    use ordertrail_core::engine::StateChanges;
    use std::sync::atomic::AtomicUsize;

    /// A real store whose next commits fail, as on a full disk.
    struct FailingStore {
        inner: RedbStore,
        failures_left: Arc<AtomicUsize>,
    }

    impl OrderStore for FailingStore {
        fn load(&self, max_orders: usize) -> Result<LoadedState, StoreError> {
            self.inner.load(max_orders)
        }
        fn due_wakes(&self, now: u64, max: usize, in_memory: &dyn Fn(&str) -> bool) -> Result<Vec<String>, StoreError> {
            self.inner.due_wakes(now, max, in_memory)
        }
        fn commit(&mut self, changes: &StateChanges, exports: &[QueuedExport]) -> Result<(), StoreError> {
            if self.failures_left.load(Ordering::SeqCst) > 0 {
                self.failures_left.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::Write("no space left on device".into()));
            }
            self.inner.commit(changes, exports)
        }
        fn order(&self, key: &str) -> Result<Option<OrderRecord>, StoreError> {
            self.inner.order(key)
        }
        fn order_reader(&self) -> crate::store::OrderReader {
            self.inner.order_reader()
        }
        fn export_queue(&self) -> Arc<dyn ExportQueue> {
            self.inner.export_queue()
        }
        fn notification_queue(&self) -> Arc<dyn crate::store::NotificationQueue> {
            self.inner.notification_queue()
        }
    }

    fn keyed_batch(order: &str, span: u8) -> Vec<ResourceSpans> {
        let attribute = KeyValue {
            key: "order.id".into(),
            value: Some(AnyValue { value: Some(Value::StringValue(order.into())) }),
            ..Default::default()
        };
        let span = Span {
            trace_id: vec![span; 16],
            span_id: vec![span; 8],
            name: "credit.check".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![attribute],
            ..Default::default()
        };
        vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_keeps_its_output_and_state_for_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ordertrail_core::config::default_config();
        // Milestones settle at the next tick: this test is about failed commits, not about waiting for spans.
        config.sla.detection_delay = Duration::ZERO;
        let config = Arc::new(config);
        let failures_left = Arc::new(AtomicUsize::new(3));
        let store = FailingStore {
            inner: RedbStore::open(dir.path(), Durability::Durable).unwrap(),
            failures_left: failures_left.clone(),
        };
        let queue = store.export_queue();
        let counters = Arc::new(Counters::default());
        let metrics = Arc::new(OrderMetrics::new(config.clone()));
        let sink = ExportSink::Queue { wake: Arc::new(Notify::new()), max_bytes: 1 << 30, max_spans_per_entry: 100 };
        let pipeline = Pipeline::start(config, Box::new(store), sink, counters.clone(), metrics, None).unwrap();
        let handle = pipeline.handle();

        // The commit of this request fails: the sender is told to retry, and nothing new is taken on meanwhile.
        let first = handle.ingest(keyed_batch("SO-DISK", 1)).await;
        assert!(matches!(first, Err(IngestError::Store(_))), "{first:?}");
        assert!(!pipeline.store_healthy().load(Ordering::SeqCst));
        // Ticks retry the commit until the store recovers (three failures, 100 ms apart).
        let mut recovered = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if failures_left.load(Ordering::SeqCst) == 0 && pipeline.store_healthy().load(Ordering::SeqCst) {
                recovered = true;
                break;
            }
        }
        assert!(recovered, "the commit is retried until it succeeds");
        handle.ingest(keyed_batch("SO-DISK", 2)).await.unwrap();
        handle.flush().await;
        assert!(Counters::get(&counters.store_commit_failures) >= 3);

        // The first request's output reached the queue although its commit failed at first: its copy in the
        // order trace, the enriched original and the milestone span, then the second request's spans.
        let entries = queue.read_after(None, 100).unwrap();
        let spans: u32 = entries.iter().map(|(_, e)| e.spans).sum();
        assert!(spans >= 4, "{spans} spans queued");
        pipeline.shutdown().await;
        // The queue handle shares the database, which must be closed before it is opened again.
        drop(queue);
        let reopened = RedbStore::open(dir.path(), Durability::Durable).unwrap();
        let order = reopened.order("SO-DISK").unwrap().expect("the order was committed after all");
        assert_eq!(order.span_count, 2);
        assert!(order.milestone("credit_approval").unwrap().span_emitted);
    }
}
