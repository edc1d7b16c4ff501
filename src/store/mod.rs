//! Durable order state behind a trait, so that a PostgreSQL implementation can replace the embedded one.
//!
//! Only this module writes to the disk. The engine hands over whole order records, aliases and waiting spans to
//! write, and the pipeline the spans to export; the store writes one group of them in one transaction, so a commit
//! is all or nothing: after a crash, state and the export queue agree.

mod redb_store;

pub use redb_store::RedbStore;

use std::sync::Arc;

pub use ordertrail_core::config::Durability;
use ordertrail_core::engine::StateChanges;
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
}

/// Everything the engine needs at startup.
#[derive(Debug, Default)]
pub struct LoadedState {
    pub orders: Vec<OrderRecord>,
    pub aliases: Vec<AliasRecord>,
    /// Spans that were waiting to inherit an order, as encoded by the engine: (technical trace id, spans).
    pub pending: Vec<(Vec<u8>, Vec<u8>)>,
    /// Remembered technical traces: (trace id, encoded orders and expiry).
    pub traces: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads one order from the store, from any thread.
pub type OrderReader = Box<dyn Fn(&str) -> Result<Option<OrderRecord>, StoreError> + Send>;

/// A durable home for order state.
pub trait OrderStore: Send {
    /// Reads all orders, aliases and waiting spans.
    fn load(&self) -> Result<LoadedState, StoreError>;
    /// Writes the changes and appends `exports` (encoded export requests) to the export queue, in one
    /// transaction; on success they survive a crash.
    fn commit(&mut self, changes: &StateChanges, exports: &[QueuedExport]) -> Result<(), StoreError>;
    /// One order, read from disk.
    fn order(&self, key: &str) -> Result<Option<OrderRecord>, StoreError>;
    /// A reader of single orders that the engine keeps, to read back the orders it evicted.
    fn order_reader(&self) -> OrderReader;
    /// The persistent export queue the exporter reads from.
    fn export_queue(&self) -> Arc<dyn ExportQueue>;
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
