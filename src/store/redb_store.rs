//! The embedded store: one redb file in the data directory.
//!
//! redb is pure Rust (no C toolchain, no background compaction threads), gives ACID transactions with a
//! copy-on-write B-tree, and one `commit()` is one fsync, which is what group commit needs. ARCHITECTURE.md has the
//! measured figures behind the choice.

use super::{LoadedState, OrderStore, StoreError};
use crate::engine::StateChanges;
use crate::order_state::{AliasRecord, OrderRecord};
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;

const ORDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("orders");
/// Keyed by `kind` + NUL + `value`.
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");

pub struct RedbStore {
    db: Database,
}

fn alias_key(kind: &str, value: &str) -> String {
    format!("{kind}\0{value}")
}

impl RedbStore {
    /// Opens (creating if needed) `ordertrail.redb` in `directory`.
    pub fn open(directory: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(directory)
            .map_err(|source| StoreError::CreateDir { path: directory.display().to_string(), source })?;
        let path = directory.join("ordertrail.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.to_string() })?;
        // Create the tables up front so that readers never see them missing.
        let tx = db.begin_write().map_err(|e| StoreError::Write(e.to_string()))?;
        tx.open_table(ORDERS).map_err(|e| StoreError::Write(e.to_string()))?;
        tx.open_table(ALIASES).map_err(|e| StoreError::Write(e.to_string()))?;
        tx.commit().map_err(|e| StoreError::Write(e.to_string()))?;
        Ok(RedbStore { db })
    }
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

impl OrderStore for RedbStore {
    fn load(&self) -> Result<LoadedState, StoreError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let mut state = LoadedState::default();
        let orders = tx.open_table(ORDERS).map_err(read_err)?;
        for entry in orders.iter().map_err(read_err)? {
            let (key, value) = entry.map_err(read_err)?;
            let order: OrderRecord = serde_json::from_slice(value.value())
                .map_err(|e| StoreError::Corrupt { key: key.value().to_string(), reason: e.to_string() })?;
            state.orders.push(order);
        }
        let aliases = tx.open_table(ALIASES).map_err(read_err)?;
        for entry in aliases.iter().map_err(read_err)? {
            let (key, value) = entry.map_err(read_err)?;
            let key = key.value();
            let (kind, alias) = key
                .split_once('\0')
                .ok_or_else(|| StoreError::Corrupt { key: key.to_string(), reason: "alias key without kind".into() })?;
            let orders: Vec<String> = serde_json::from_slice(value.value())
                .map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })?;
            state.aliases.push(AliasRecord { kind: kind.to_string(), value: alias.to_string(), orders });
        }
        Ok(state)
    }

    fn commit(&mut self, changes: &StateChanges) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut orders = tx.open_table(ORDERS).map_err(write_err)?;
            for order in &changes.orders {
                let bytes = serde_json::to_vec(order).map_err(write_err)?;
                orders.insert(order.key.as_str(), bytes.as_slice()).map_err(write_err)?;
            }
            let mut aliases = tx.open_table(ALIASES).map_err(write_err)?;
            for alias in &changes.aliases {
                let bytes = serde_json::to_vec(&alias.orders).map_err(write_err)?;
                aliases.insert(alias_key(&alias.kind, &alias.value).as_str(), bytes.as_slice()).map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)
    }

    fn order(&self, key: &str) -> Result<Option<OrderRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let orders = tx.open_table(ORDERS).map_err(read_err)?;
        match orders.get(key).map_err(read_err)? {
            Some(value) => serde_json::from_slice(value.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() }),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut order = OrderRecord::new("SO-1".into());
        order.span_count = 3;
        {
            let mut store = RedbStore::open(dir.path()).unwrap();
            let changes = StateChanges {
                orders: vec![order.clone()],
                aliases: vec![AliasRecord {
                    kind: "shipment".into(),
                    value: "SH-1".into(),
                    orders: vec!["SO-1".into()],
                }],
            };
            store.commit(&changes).unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let state = store.load().unwrap();
        assert_eq!(state.orders, vec![order.clone()]);
        assert_eq!(state.aliases[0].value, "SH-1");
        assert_eq!(store.order("SO-1").unwrap(), Some(order));
        assert_eq!(store.order("SO-2").unwrap(), None);
    }

    #[test]
    fn an_unusable_data_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = RedbStore::open(&file).err().unwrap().to_string();
        assert!(err.starts_with("cannot create data directory"), "{err}");
    }
}
