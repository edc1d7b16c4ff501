//! Durable order state behind a trait, so that a PostgreSQL implementation can replace the embedded one.
//!
//! Only this module touches the disk. The engine hands over whole order records and aliases to write; the store
//! writes one group of them in one transaction, so a commit is all or nothing.

mod redb_store;

pub use redb_store::RedbStore;

use crate::engine::StateChanges;
use crate::order_state::{AliasRecord, OrderRecord};

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
}

/// A durable home for order state.
pub trait OrderStore: Send {
    /// Reads all orders and aliases.
    fn load(&self) -> Result<LoadedState, StoreError>;
    /// Writes the changes durably in one transaction; on success they survive a crash.
    fn commit(&mut self, changes: &StateChanges) -> Result<(), StoreError>;
    /// One order, read from disk.
    fn order(&self, key: &str) -> Result<Option<OrderRecord>, StoreError>;
}
