//! Durable order state behind a trait: the embedded redb store (`redb_store.rs`, the default) or PostgreSQL
//! (`postgres_store.rs`).
//!
//! Only this module writes to the disk. The engine hands over whole order records, aliases and waiting spans to
//! write, and the pipeline the spans to export; the store writes one group of them in one transaction, so a commit
//! is all or nothing: after a crash, state and the export queue agree.

mod postgres_store;
mod redb_store;

pub use postgres_store::PostgresStore;
pub use redb_store::RedbStore;

use std::sync::Arc;

pub use ordertrail_core::config::Durability;
use ordertrail_core::engine::StateChanges;
use ordertrail_core::notify::Notification;
use ordertrail_core::order::{AliasRecord, OrderRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("cannot open store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store read failed: {0}")]
    Read(String),
    #[error("store write failed: {0}")]
    Write(String),
    #[error("corrupt record `{key}` in store: {reason}")]
    Corrupt { key: String, reason: String },
    /// Another replica wrote one of the group's orders (or the same new order) first; nothing was written.
    #[error("another replica changed order(s) {} first", .orders.join(", "))]
    Conflict { orders: Vec<String> },
}

/// What other replicas sharing the store changed since the last look.
#[derive(Debug, Default)]
pub struct ChangesByOthers {
    /// Orders another replica wrote, with the version it wrote: a copy in memory of an older revision is stale.
    pub orders: Vec<(String, u64)>,
    /// Aliases another replica wrote, as the store now holds them (with every replica's orders).
    pub aliases: Vec<AliasRecord>,
}

/// What a replica that stopped left in a shared store, taken over by this one.
#[derive(Debug, Default)]
pub struct Adopted {
    /// The replicas taken over.
    pub replicas: Vec<String>,
    /// Spans that waited to inherit an order there, as `LoadedState::pending`.
    pub pending: TraceRows,
    /// Technical traces remembered there, as `LoadedState::traces`.
    pub traces: TraceRows,
    /// Export entries now in this replica's queue.
    pub exports: u64,
}

/// Stored rows keyed by technical trace id: waiting spans, or a remembered trace's orders, as the engine encodes
/// them.
pub type TraceRows = Vec<(Vec<u8>, Vec<u8>)>;

/// Everything the engine needs at startup.
#[derive(Debug, Default)]
pub struct LoadedState {
    /// Open orders, at most as many as `load` was asked for.
    pub orders: Vec<OrderRecord>,
    /// The wake the store holds for each of `orders` (`Engine::correct_stored_wakes` compares them).
    pub stored_wakes: Vec<(String, Option<u64>)>,
    /// Whether the store holds orders not in `orders`: open ones beyond the number asked for, or closed ones.
    pub orders_left_in_store: bool,
    pub aliases: Vec<AliasRecord>,
    /// Spans that were waiting to inherit an order, as encoded by the engine: (technical trace id, spans).
    pub pending: Vec<(Vec<u8>, Vec<u8>)>,
    /// Remembered technical traces: (trace id, encoded orders and expiry).
    pub traces: Vec<(Vec<u8>, Vec<u8>)>,
    /// The insight record (`ordertrail_core::insight::SavedInsight`, encoded), if one was saved.
    pub insight: Option<Vec<u8>>,
}

/// The insight record after a commit carrying `learned`: the same merge for every store, so that the stored delay
/// model is the sum of what every replica learned.
fn merge_insight(
    stored: Option<&[u8]>,
    learned: &ordertrail_core::insight::InsightChanges,
) -> (Vec<u8>, Option<ordertrail_core::insight::InsightDecodeError>) {
    ordertrail_core::insight::SavedInsight::merged(stored, learned)
}

/// Reads one order from the store, from any thread.
pub type OrderReader = Box<dyn Fn(&str) -> Result<Option<OrderRecord>, StoreError> + Send>;

/// A durable home for order state.
pub trait OrderStore: Send {
    /// Reads up to `max_orders` open orders (the engine's hot set), and all aliases, waiting spans and remembered
    /// traces. The other orders stay in the store, read back when a span names them or their wake passes.
    fn load(&self, max_orders: usize) -> Result<LoadedState, StoreError>;
    /// Writes the changes and appends `exports` (encoded export requests) to the export queue, in one
    /// transaction; on success they survive a crash.
    fn commit(&mut self, changes: &StateChanges, exports: &[QueuedExport]) -> Result<(), StoreError>;
    /// One order, read from disk.
    fn order(&self, key: &str) -> Result<Option<OrderRecord>, StoreError>;
    /// A reader of single orders that the engine keeps, to read back the orders it evicted.
    fn order_reader(&self) -> OrderReader;
    /// Up to `max` orders whose wake (`OrderWrite::wake_unix_nanos`) is at or before `now`, earliest first,
    /// leaving out those `in_memory` names; at most `8 × max` entries of the index are looked at per call.
    fn due_wakes(&self, now: u64, max: usize, in_memory: &dyn Fn(&str) -> bool) -> Result<Vec<String>, StoreError>;
    /// The persistent export queue the exporter reads from.
    fn export_queue(&self) -> Arc<dyn ExportQueue>;
    /// The persistent queue of notifications the notifier delivers from; `StateChanges::notifications` go into it
    /// with the commit that caused them.
    fn notification_queue(&self) -> Arc<dyn NotificationQueue>;
    /// Whether other replicas write to this store too. Then a commit may be refused with
    /// [`StoreError::Conflict`], and the service looks for [`OrderStore::changes_by_others`] before each group and
    /// for [`OrderStore::adopt_stopped_replicas`] from time to time.
    fn shared(&self) -> bool {
        false
    }
    /// Orders and aliases other replicas wrote since the last call.
    fn changes_by_others(&mut self) -> Result<ChangesByOthers, StoreError> {
        Ok(ChangesByOthers::default())
    }
    /// The technical traces among `traces` that some replica remembers, as `LoadedState::traces`.
    fn remembered_traces(&self, _traces: &[Vec<u8>]) -> Result<TraceRows, StoreError> {
        Ok(Vec::new())
    }
    /// The insight record as the store holds it now: with replicas, the sum of what all of them saved.
    fn stored_insight(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    /// Takes over the export queue, waiting spans and remembered traces of replicas that stopped without handing
    /// them on (killed, or lost with their host).
    fn adopt_stopped_replicas(&mut self) -> Result<Adopted, StoreError> {
        Ok(Adopted::default())
    }
}

/// Notifications waiting for their receivers. Each is taken for a while by the replica sending it, so that another
/// replica sharing the store does not send it too; one taken by a replica that stopped is taken again once that
/// while is over.
pub trait NotificationQueue: Send + Sync + std::fmt::Debug {
    /// Up to `max` waiting notifications, oldest first, taken until `hold_until` (ordertrail's clock); those another
    /// replica took and still holds, and those in `skip` (waiting for a retry or their team's share), are left
    /// out, so that they do not hold up the ones behind them.
    fn take(&self, max: usize, now: u64, hold_until: u64, skip: &[String]) -> Result<Vec<Notification>, StoreError>;
    /// Removes delivered (or given up) notifications.
    fn remove(&self, keys: &[String]) -> Result<(), StoreError>;
    /// Notifications waiting, as last counted.
    fn queued(&self) -> u64;
}

fn encode_notification(notification: &Notification) -> Vec<u8> {
    serde_json::to_vec(notification).expect("strings and numbers encode")
}

fn decode_notification(key: &str, bytes: &[u8]) -> Result<Notification, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
}

/// An alias value as stored: the orders it names (an array, as earlier versions wrote), or `{"over_cap": true}`
/// for a value that named more orders than the cap allows. Both stores keep this encoding.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum StoredAlias {
    Orders(Vec<String>),
    OverCap { over_cap: bool },
}

fn encode_alias(alias: &AliasRecord) -> Vec<u8> {
    let stored = if alias.over_cap {
        serde_json::to_vec(&StoredAlias::OverCap { over_cap: true })
    } else {
        serde_json::to_vec(&alias.orders)
    };
    stored.expect("strings and booleans encode")
}

fn decode_alias(kind: &str, value: &str, bytes: &[u8]) -> Result<AliasRecord, StoreError> {
    let stored: StoredAlias = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { key: format!("{kind}\0{value}"), reason: e.to_string() })?;
    let (orders, over_cap) = match stored {
        StoredAlias::Orders(orders) => (orders, false),
        StoredAlias::OverCap { .. } => (Vec::new(), true),
    };
    Ok(AliasRecord { kind: kind.to_string(), value: value.to_string(), orders, over_cap })
}

/// One export request waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedExport {
    /// Spans in the request, for batching without decoding.
    pub spans: u32,
    /// An encoded `ExportTraceServiceRequest`.
    pub request: Vec<u8>,
}

/// The persistent export queue, shared by the pipeline (which appends through `OrderStore::commit`) and the
/// exporter (which reads and removes what was delivered). Entries are numbered in the order they were appended.
pub trait ExportQueue: Send + Sync {
    /// Up to `max` entries with numbers above `after` (all when `after` is `None`), in order.
    fn read_after(&self, after: Option<u64>, max: usize) -> Result<Vec<(u64, QueuedExport)>, StoreError>;
    /// Removes delivered (or undeliverable) entries.
    fn remove(&self, entries: &[u64]) -> Result<(), StoreError>;
    /// Bytes queued, for the bound on disk use.
    fn queued_bytes(&self) -> u64;
    /// Entries queued.
    fn queued_entries(&self) -> u64;
}
