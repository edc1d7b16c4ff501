//! The embedded store: one redb file in the data directory.
//!
//! redb is pure Rust (no C toolchain, no background compaction threads), gives ACID transactions with a
//! copy-on-write B-tree, and one `commit()` is one fsync, which is what group commit needs. ARCHITECTURE.md has the
//! measured figures behind the choice.

use super::{Durability, ExportQueue, LoadedState, OrderReader, OrderStore, QueuedExport, StoreError};
use ordertrail_core::engine::{OrderWrite, StateChanges};
use ordertrail_core::notify::Notification;
use ordertrail_core::order::OrderRecord;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

const ORDERS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("orders");
/// Keyed by `kind` + NUL + `value`.
const ALIASES: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("aliases");
/// Spans waiting to inherit an order, keyed by technical trace id.
const PENDING: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("pending");
/// Technical traces known to concern orders, keyed by trace id.
const TRACES: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("traces");
/// The wake of every open order (`OrderWrite::wake_unix_nanos`), keyed (wake, order key), so that the orders not
/// in memory whose wake passed are found by one range read. The orders table holds each order's wake too (see
/// `encode_order`), which is how a commit finds the entry to replace without reading this one.
const WAKES: TableDefinition<'static, (u64, &str), ()> = TableDefinition::new("wakes");
/// The export queue: entry number → span count (4 bytes, little endian) followed by the encoded request.
const EXPORTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("exports");
/// Notifications waiting for their receivers, by key (one per order, event and notifier).
const NOTIFICATIONS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("notifications");
/// Insight records by name: `delay_model` and `patterns` (`ordertrail_core::insight::SavedInsight`).
const INSIGHT: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("insight");
const INSIGHT_RECORD: &str = "insight";

/// The page cache unless configured otherwise (`storage.cache_size_mib`).
const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The database, shared by the store and the export queue. Everything reads and writes through the read side
/// of the lock (redb serialises its writers itself); compaction alone takes the write side, because redb can
/// compact only a database nobody else is using.
type SharedDatabase = Arc<RwLock<Database>>;

#[derive(Debug)]
pub struct RedbStore {
    db: SharedDatabase,
    durability: Durability,
    queue: Arc<RedbExportQueue>,
    notifications: Arc<RedbNotificationQueue>,
}

/// The notification queue's handle on the database, shared with the notifier.
#[derive(Debug)]
pub(super) struct RedbNotificationQueue {
    db: SharedDatabase,
    entries: AtomicU64,
}

/// The export queue's handle on the database, shared with the exporter.
#[derive(Debug)]
pub(super) struct RedbExportQueue {
    db: SharedDatabase,
    path: PathBuf,
    /// When the file was last checked for compaction (Unix seconds), so that the check, which commits twice to
    /// the disk, runs at most once a minute however often the queue empties.
    checked_at: AtomicU64,
    next: AtomicU64,
    bytes: AtomicU64,
    entries: AtomicU64,
    /// Held across a write transaction and the counter update that follows it, so that an append and a removal
    /// cannot interleave between the two and leave the counters off for good. redb serialises writers anyway,
    /// so this costs no concurrency.
    write: std::sync::Mutex<()>,
}

fn shared(db: &SharedDatabase) -> RwLockReadGuard<'_, Database> {
    db.read().unwrap_or_else(|e| e.into_inner())
}

/// The bytes an entry of `len` bytes takes in the file. redb keeps a value too large for a shared 4 KiB page in
/// a page of its own, sized by a buddy allocator to a power of two: a 600 KB entry takes 1 MiB. The queue's bound
/// counts this, so that `sending_queue.max_bytes` bounds the file, not only the entries (a 1 GiB bound grew the
/// file to 2.4 GB when it counted entries).
fn stored_size(len: usize) -> u64 {
    const PAGE: usize = 4096;
    if len <= PAGE / 2 {
        len as u64
    } else {
        (len + 64).next_power_of_two().max(PAGE) as u64
    }
}

/// How far the file may outgrow the pages in use before an empty queue triggers compaction.
const COMPACT_SLACK: u64 = 64 * 1024 * 1024;

impl RedbExportQueue {
    /// Gives disk back once the queue has drained: redb reuses freed pages but never shrinks its file, so a
    /// backlog that grew the file to gigabytes would otherwise keep them for good. Looks only with an empty
    /// queue and at most once a minute, and compacts when at least half the file, and `COMPACT_SLACK`, is free.
    /// Compaction holds the database, so the engine's commits wait meanwhile; it moves only the pages in use,
    /// which is why it waits for half the file to be free.
    fn compact_if_drained(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.entries.load(Ordering::Relaxed) > 0 || now < self.checked_at.load(Ordering::Relaxed) + 60 {
            return;
        }
        self.checked_at.store(now, Ordering::Relaxed);
        let Ok(file_len) = std::fs::metadata(&self.path).map(|m| m.len()) else { return };
        if file_len <= COMPACT_SLACK {
            return;
        }
        let in_use = {
            let db = shared(&self.db);
            // Removals commit without waiting for the disk, and redb frees their pages only after later durable
            // commits; two empty ones release them, so that the pages in use are counted right.
            for _ in 0..2 {
                let Ok(tx) = db.begin_write() else { return };
                if tx.commit().is_err() {
                    return;
                }
            }
            let Ok(tx) = db.begin_write() else { return };
            let in_use = tx.stats().map(|s| s.allocated_pages() * s.page_size() as u64).ok();
            tx.abort().ok();
            match in_use {
                Some(in_use) => in_use,
                None => return,
            }
        };
        if file_len <= in_use + COMPACT_SLACK || file_len < 2 * in_use {
            return;
        }
        let _writing = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        match db.compact() {
            Ok(_) => {
                let after = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
                tracing::info!(before = file_len, after, "export queue drained: store file compacted");
            }
            Err(e) => tracing::warn!(error = %e, "store compaction failed; the file keeps its size for now"),
        }
    }
}

fn encode_entry(export: &QueuedExport) -> Vec<u8> {
    let mut value = Vec::with_capacity(4 + export.request.len());
    value.extend_from_slice(&export.spans.to_le_bytes());
    value.extend_from_slice(&export.request);
    value
}

fn decode_entry(number: u64, value: &[u8]) -> Result<QueuedExport, StoreError> {
    let (count, request) = value.split_at_checked(4).ok_or_else(|| StoreError::Corrupt {
        key: format!("exports/{number}"),
        reason: "entry shorter than its header".into(),
    })?;
    let spans = u32::from_le_bytes(count.try_into().expect("four bytes"));
    Ok(QueuedExport { spans, request: request.to_vec() })
}

impl ExportQueue for RedbExportQueue {
    fn read_after(&self, after: Option<u64>, max: usize) -> Result<Vec<(u64, QueuedExport)>, StoreError> {
        let db = shared(&self.db);
        let tx = db.begin_read().map_err(read_err)?;
        let table = tx.open_table(EXPORTS).map_err(read_err)?;
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for entry in table.range(start..).map_err(read_err)?.take(max) {
            let (number, value) = entry.map_err(read_err)?;
            out.push((number.value(), decode_entry(number.value(), value.value())?));
        }
        Ok(out)
    }

    fn remove(&self, entries: &[u64]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let writing = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let db = shared(&self.db);
        let mut tx = db.begin_write().map_err(write_err)?;
        // A removal lost in a crash only means a batch is sent again, so it does not wait for its own fsync; the
        // next state commit makes it durable.
        tx.set_durability(redb::Durability::Eventual);
        let (mut bytes, mut removed) = (0u64, 0u64);
        {
            let mut table = tx.open_table(EXPORTS).map_err(write_err)?;
            for number in entries {
                if let Some(old) = table.remove(number).map_err(write_err)? {
                    bytes += stored_size(old.value().len());
                    removed += 1;
                }
            }
        }
        tx.commit().map_err(write_err)?;
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.entries.fetch_sub(removed, Ordering::Relaxed);
        drop((db, writing));
        self.compact_if_drained();
        Ok(())
    }

    fn queued_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn queued_entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }
}

fn alias_key(kind: &str, value: &str) -> String {
    format!("{kind}\0{value}")
}

impl RedbStore {
    /// Opens (creating if needed) `ordertrail.redb` in `directory`.
    pub fn open(directory: &Path, durability: Durability) -> Result<RedbStore, StoreError> {
        RedbStore::open_with_cache(directory, durability, DEFAULT_CACHE_BYTES)
    }

    /// Opens with a page cache of `cache_bytes`. redb's own default is 1 GiB, which would count against
    /// ordertrail's memory limit and is far more than its access pattern (recent orders, the head of the export
    /// queue) needs.
    pub fn open_with_cache(
        directory: &Path,
        durability: Durability,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        create_private_dir(directory)
            .map_err(|source| StoreError::CreateDir { path: directory.display().to_string(), source })?;
        let path = directory.join("ordertrail.redb");
        let open_err = |reason: String| StoreError::Open { path: path.display().to_string(), reason };
        // The store holds approvers' e-mail addresses and customers' order data: only this user may read it.
        restrict_file(&path).map_err(|e| open_err(e.to_string()))?;
        let opened = catching_panics(|| {
            let db =
                redb::Builder::new().set_cache_size(cache_bytes).create(&path).map_err(|e| open_err(e.to_string()))?;
            // Create the tables up front so that readers never see them missing; a file that is not a redb
            // database or is damaged fails here, at startup, with its path.
            let tx = db.begin_write().map_err(|e| open_err(e.to_string()))?;
            tx.open_table(ORDERS).map_err(|e| open_err(e.to_string()))?;
            tx.open_table(ALIASES).map_err(|e| open_err(e.to_string()))?;
            tx.open_table(PENDING).map_err(|e| open_err(e.to_string()))?;
            tx.open_table(TRACES).map_err(|e| open_err(e.to_string()))?;
            tx.open_table(EXPORTS).map_err(|e| open_err(e.to_string()))?;
            tx.open_table(WAKES).map_err(|e| open_err(e.to_string()))?;
            tx.open_table(NOTIFICATIONS).map_err(|e| open_err(e.to_string()))?;
            tx.open_table(INSIGHT).map_err(|e| open_err(e.to_string()))?;
            give_legacy_orders_a_wake(&tx).map_err(|e| open_err(e.to_string()))?;
            tx.commit().map_err(|e| open_err(e.to_string()))?;
            Ok(db)
        });
        let db = match opened {
            Ok(result) => result?,
            Err(panic) => {
                return Err(open_err(format!(
                    "the file is damaged ({panic}); restore it from a backup, or move it away to start with an \
                     empty store (spans still queued for export in it are then lost)"
                )))
            }
        };
        let db = Arc::new(RwLock::new(db));
        // Counting the queue once at startup keeps the bound exact afterwards without a read per request.
        let (mut next, mut bytes, entries, notifications);
        {
            (next, bytes) = (0u64, 0u64);
            let guard = shared(&db);
            let tx = guard.begin_read().map_err(read_err)?;
            let table = tx.open_table(EXPORTS).map_err(read_err)?;
            entries = table.len().map_err(read_err)?;
            notifications = tx.open_table(NOTIFICATIONS).map_err(read_err)?.len().map_err(read_err)?;
            for entry in table.iter().map_err(read_err)? {
                let (number, value) = entry.map_err(read_err)?;
                next = number.value() + 1;
                bytes += stored_size(value.value().len());
            }
        }
        let queue = Arc::new(RedbExportQueue {
            db: db.clone(),
            path: path.clone(),
            checked_at: AtomicU64::new(0),
            next: AtomicU64::new(next),
            bytes: AtomicU64::new(bytes),
            entries: AtomicU64::new(entries),
            write: std::sync::Mutex::new(()),
        });
        let notifications = Arc::new(RedbNotificationQueue { db: db.clone(), entries: AtomicU64::new(notifications) });
        Ok(RedbStore { db, durability, queue, notifications })
    }
}

/// Creates `directory` and its missing parents readable by this user only. An existing directory keeps its mode:
/// it may be a mounted volume whose permissions the platform manages.
fn create_private_dir(directory: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(directory)
}

/// Creates the store file readable and writable by this user only, or takes group and other access away from
/// an existing one (older versions created it 0644).
fn restrict_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Runs `open`, turning a panic into its message. redb asserts on some damage (a truncated file) instead of
/// returning an error; at startup that must become an error naming the file, not an abort with exit code 101.
/// The panic hook is silenced meanwhile, so the operator sees one clear message rather than a backtrace.
fn catching_panics<T>(open: impl FnOnce() -> T) -> Result<T, String> {
    // Two stores opening at once (tests do) must not capture each other's silent hook and keep it for good.
    static HOOK_SWAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _swapping = HOOK_SWAP.lock().unwrap_or_else(|e| e.into_inner());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the store library stopped on an internal check".into())
    })
}

/// The first byte of an order's value since wakes are kept: then the wake (8 bytes, little endian, `u64::MAX` for
/// none), then the record as JSON. Earlier versions stored the JSON alone, which starts with `{`.
const ORDER_WITH_WAKE: u8 = 1;
const NO_WAKE: u64 = u64::MAX;

fn encode_order(write: &OrderWrite) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = Vec::with_capacity(512);
    value.push(ORDER_WITH_WAKE);
    value.extend_from_slice(&write.wake_unix_nanos.unwrap_or(NO_WAKE).to_le_bytes());
    serde_json::to_writer(&mut value, &write.record)?;
    Ok(value)
}

/// An order's value split into its wake, if the value has one, and its JSON record.
fn split_order(value: &[u8]) -> (Option<Option<u64>>, &[u8]) {
    match value {
        [ORDER_WITH_WAKE, wake @ ..] if wake.len() >= 8 => {
            let (wake, json) = wake.split_at(8);
            let wake = u64::from_le_bytes(wake.try_into().expect("eight bytes"));
            (Some((wake != NO_WAKE).then_some(wake)), json)
        }
        _ => (None, value),
    }
}

fn decode_order(key: &str, value: &[u8]) -> Result<OrderRecord, StoreError> {
    serde_json::from_slice(split_order(value).1)
        .map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
}

/// Gives the orders an earlier version stored without a wake one: at once for an open order, which the engine then
/// reads back and writes again with its real wake; none for a closed one. Runs at every open and finds nothing
/// to do after the first.
fn give_legacy_orders_a_wake(tx: &redb::WriteTransaction) -> Result<(), String> {
    let mut orders = tx.open_table(ORDERS).map_err(|e| e.to_string())?;
    let mut legacy: Vec<(String, OrderRecord)> = Vec::new();
    for entry in orders.iter().map_err(|e| e.to_string())? {
        let (key, value) = entry.map_err(|e| e.to_string())?;
        if split_order(value.value()).0.is_none() {
            let key = key.value().to_string();
            let record = decode_order(&key, value.value()).map_err(|e| e.to_string())?;
            legacy.push((key, record));
        }
    }
    if legacy.is_empty() {
        return Ok(());
    }
    let mut wakes = tx.open_table(WAKES).map_err(|e| e.to_string())?;
    for (key, record) in legacy {
        let wake = (!record.is_closed()).then_some(0);
        let value = encode_order(&OrderWrite { record, wake_unix_nanos: wake }).map_err(|e| e.to_string())?;
        orders.insert(key.as_str(), value.as_slice()).map_err(|e| e.to_string())?;
        if let Some(wake) = wake {
            wakes.insert((wake, key.as_str()), ()).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// One order from the orders table.
fn read_order(db: &SharedDatabase, key: &str) -> Result<Option<OrderRecord>, StoreError> {
    let db = shared(db);
    let tx = db.begin_read().map_err(read_err)?;
    let orders = tx.open_table(ORDERS).map_err(read_err)?;
    match orders.get(key).map_err(read_err)? {
        Some(value) => decode_order(key, value.value()).map(Some),
        None => Ok(None),
    }
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

impl OrderStore for RedbStore {
    fn load(&self, max_orders: usize) -> Result<LoadedState, StoreError> {
        let db = shared(&self.db);
        let tx = db.begin_read().map_err(read_err)?;
        let mut state = LoadedState::default();
        let orders = tx.open_table(ORDERS).map_err(read_err)?;
        // Only open orders are loaded, each known by its wake without decoding it; closed ones, and open ones
        // beyond the hot set, are read back when named. Memory at startup is bounded as it is afterwards.
        for entry in orders.iter().map_err(read_err)? {
            let (key, value) = entry.map_err(read_err)?;
            let stored_wake = split_order(value.value()).0;
            if matches!(stored_wake, Some(None)) {
                state.orders_left_in_store = true;
                continue;
            }
            if state.orders.len() >= max_orders {
                state.orders_left_in_store = true;
                break;
            }
            let order = decode_order(key.value(), value.value())?;
            // A value without a wake is an order written by an earlier version before this open could give it
            // one; it may be closed.
            if order.is_closed() {
                state.orders_left_in_store = true;
                continue;
            }
            state.stored_wakes.push((order.key.clone(), stored_wake.flatten()));
            state.orders.push(order);
        }
        let aliases = tx.open_table(ALIASES).map_err(read_err)?;
        for entry in aliases.iter().map_err(read_err)? {
            let (key, value) = entry.map_err(read_err)?;
            let key = key.value();
            let (kind, alias) = key
                .split_once('\0')
                .ok_or_else(|| StoreError::Corrupt { key: key.to_string(), reason: "alias key without kind".into() })?;
            state.aliases.push(super::decode_alias(kind, alias, value.value())?);
        }
        let pending = tx.open_table(PENDING).map_err(read_err)?;
        for entry in pending.iter().map_err(read_err)? {
            let (key, value) = entry.map_err(read_err)?;
            state.pending.push((key.value().to_vec(), value.value().to_vec()));
        }
        let traces = tx.open_table(TRACES).map_err(read_err)?;
        for entry in traces.iter().map_err(read_err)? {
            let (key, value) = entry.map_err(read_err)?;
            state.traces.push((key.value().to_vec(), value.value().to_vec()));
        }
        let insight = tx.open_table(INSIGHT).map_err(read_err)?;
        state.insight = insight.get(INSIGHT_RECORD).map_err(read_err)?.map(|v| v.value().to_vec());
        Ok(state)
    }

    fn commit(&mut self, changes: &StateChanges, exports: &[QueuedExport]) -> Result<(), StoreError> {
        if changes.is_empty() && exports.is_empty() {
            return Ok(());
        }
        let queue = self.queue.clone();
        let _writing = queue.write.lock().unwrap_or_else(|e| e.into_inner());
        let db = shared(&self.db);
        let mut tx = db.begin_write().map_err(write_err)?;
        if self.durability == Durability::Memory {
            tx.set_durability(redb::Durability::Eventual);
        }
        let first = self.queue.next.load(Ordering::Relaxed);
        let mut added_bytes = 0u64;
        let mut added_notifications = 0u64;
        {
            let mut queue = tx.open_table(EXPORTS).map_err(write_err)?;
            for (i, export) in exports.iter().enumerate() {
                let value = encode_entry(export);
                added_bytes += stored_size(value.len());
                queue.insert(first + i as u64, value.as_slice()).map_err(write_err)?;
            }
            for (table, rows) in [(PENDING, &changes.pending), (TRACES, &changes.traces)] {
                let mut table = tx.open_table(table).map_err(write_err)?;
                for (trace, value) in rows {
                    match value {
                        Some(bytes) => table.insert(trace.as_slice(), bytes.as_slice()).map(|_| ()),
                        None => table.remove(trace.as_slice()).map(|_| ()),
                    }
                    .map_err(write_err)?;
                }
            }
            let mut orders = tx.open_table(ORDERS).map_err(write_err)?;
            let mut wakes = tx.open_table(WAKES).map_err(write_err)?;
            for write in &changes.orders {
                let key = write.record.key.as_str();
                let value = encode_order(write).map_err(write_err)?;
                // The value replaced says which wake the index has for the order: no read of the index is needed,
                // and an unchanged wake (most writes) costs nothing more.
                let old_wake = orders
                    .insert(key, value.as_slice())
                    .map_err(write_err)?
                    .and_then(|old| split_order(old.value()).0.flatten());
                if old_wake != write.wake_unix_nanos {
                    if let Some(old) = old_wake {
                        wakes.remove((old, key)).map_err(write_err)?;
                    }
                    if let Some(new) = write.wake_unix_nanos {
                        wakes.insert((new, key), ()).map_err(write_err)?;
                    }
                }
            }
            let mut aliases = tx.open_table(ALIASES).map_err(write_err)?;
            for alias in &changes.aliases {
                let bytes = super::encode_alias(alias);
                aliases.insert(alias_key(&alias.kind, &alias.value).as_str(), bytes.as_slice()).map_err(write_err)?;
            }
            if let Some(learned) = &changes.insight {
                let mut insight = tx.open_table(INSIGHT).map_err(write_err)?;
                let stored = insight.get(INSIGHT_RECORD).map_err(write_err)?.map(|v| v.value().to_vec());
                let (merged, unreadable) = super::merge_insight(stored.as_deref(), learned);
                if let Some(e) = unreadable {
                    tracing::warn!(error = %e, "the stored insight record was unreadable and is replaced");
                }
                insight.insert(INSIGHT_RECORD, merged.as_slice()).map_err(write_err)?;
            }
            // Most groups tell nobody anything: the table is opened only for those that do.
            if !changes.notifications.is_empty() {
                let mut notifications = tx.open_table(NOTIFICATIONS).map_err(write_err)?;
                for notification in &changes.notifications {
                    // A key already queued stays as it is: the same event is not told twice.
                    if notifications.get(notification.key.as_str()).map_err(write_err)?.is_none() {
                        let bytes = super::encode_notification(notification);
                        notifications.insert(notification.key.as_str(), bytes.as_slice()).map_err(write_err)?;
                        added_notifications += 1;
                    }
                }
            }
        }
        tx.commit().map_err(write_err)?;
        self.notifications.entries.fetch_add(added_notifications, Ordering::Relaxed);
        // Only a committed append moves the counters, so a failed commit leaves the numbering without gaps.
        self.queue.next.store(first + exports.len() as u64, Ordering::Relaxed);
        self.queue.bytes.fetch_add(added_bytes, Ordering::Relaxed);
        self.queue.entries.fetch_add(exports.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn order(&self, key: &str) -> Result<Option<OrderRecord>, StoreError> {
        read_order(&self.db, key)
    }

    fn order_reader(&self) -> OrderReader {
        let db = self.db.clone();
        Box::new(move |key| read_order(&db, key))
    }

    fn due_wakes(&self, now: u64, max: usize, in_memory: &dyn Fn(&str) -> bool) -> Result<Vec<String>, StoreError> {
        let db = shared(&self.db);
        let tx = db.begin_read().map_err(read_err)?;
        let wakes = tx.open_table(WAKES).map_err(read_err)?;
        let mut due = Vec::new();
        let end = (now.saturating_add(1), "");
        for entry in wakes.range(..end).map_err(read_err)?.take(max.saturating_mul(8)) {
            let (key, _) = entry.map_err(read_err)?;
            let (_, order) = key.value();
            if !in_memory(order) {
                due.push(order.to_string());
                if due.len() >= max {
                    break;
                }
            }
        }
        Ok(due)
    }

    fn export_queue(&self) -> Arc<dyn ExportQueue> {
        self.queue.clone()
    }

    fn notification_queue(&self) -> Arc<dyn super::NotificationQueue> {
        self.notifications.clone()
    }
}

impl super::NotificationQueue for RedbNotificationQueue {
    /// One process uses the embedded store, so nothing is held: the notifier keeps track of what it is sending.
    fn take(&self, max: usize, _now: u64, _hold_until: u64, skip: &[String]) -> Result<Vec<Notification>, StoreError> {
        let skip: std::collections::HashSet<&str> = skip.iter().map(String::as_str).collect();
        let db = shared(&self.db);
        let tx = db.begin_read().map_err(read_err)?;
        let table = tx.open_table(NOTIFICATIONS).map_err(read_err)?;
        let mut waiting = Vec::new();
        // The queue is bounded by `notifications.queue_size`, so reading it whole to put the oldest first is too.
        for entry in table.iter().map_err(read_err)? {
            let (key, value) = entry.map_err(read_err)?;
            if !skip.contains(key.value()) {
                waiting.push(super::decode_notification(key.value(), value.value())?);
            }
        }
        waiting.sort_by(|a, b| (a.created_unix_nanos, &a.key).cmp(&(b.created_unix_nanos, &b.key)));
        waiting.truncate(max);
        Ok(waiting)
    }

    fn remove(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let db = shared(&self.db);
        let tx = db.begin_write().map_err(write_err)?;
        let mut removed = 0;
        {
            let mut table = tx.open_table(NOTIFICATIONS).map_err(write_err)?;
            for key in keys {
                if table.remove(key.as_str()).map_err(write_err)?.is_some() {
                    removed += 1;
                }
            }
        }
        tx.commit().map_err(write_err)?;
        self.entries.fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }

    fn queued(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordertrail_core::order::AliasRecord;

    #[test]
    fn notifications_are_queued_once_per_key_and_survive_reopening() {
        use ordertrail_core::config::NotificationEvent;
        let dir = tempfile::tempdir().unwrap();
        let notification = |key: &str, created: u64| Notification {
            key: key.into(),
            notifier: "hook".into(),
            team: "finance-billing".into(),
            event: NotificationEvent::SlaBreached,
            order: "SO-1".into(),
            body: "{}".into(),
            created_unix_nanos: created,
        };
        {
            let mut store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
            let first =
                StateChanges { notifications: vec![notification("b", 2), notification("a", 1)], ..Default::default() };
            store.commit(&first, &[]).unwrap();
            let again = StateChanges { notifications: vec![notification("a", 3)], ..Default::default() };
            store.commit(&again, &[]).unwrap();
            assert_eq!(store.notification_queue().queued(), 2);
        }
        let store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
        let queue = store.notification_queue();
        assert_eq!(queue.queued(), 2, "counted again at startup");
        let waiting = queue.take(10, 0, 0, &[]).unwrap();
        assert_eq!(waiting, vec![notification("a", 1), notification("b", 2)], "oldest first; the repeat not queued");
        queue.remove(&["a".to_string()]).unwrap();
        assert_eq!(queue.queued(), 1);
        assert_eq!(queue.take(10, 0, 0, &[]).unwrap(), vec![notification("b", 2)]);
        assert!(queue.take(10, 0, 0, &["b".to_string()]).unwrap().is_empty(), "one waiting for a retry is skipped");
    }

    #[test]
    fn committed_state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut order = OrderRecord::new("SO-1".into());
        order.span_count = 3;
        {
            let mut store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
            let changes = StateChanges {
                orders: vec![OrderWrite { record: order.clone(), wake_unix_nanos: Some(5) }],
                aliases: vec![AliasRecord {
                    kind: "shipment".into(),
                    value: "SH-1".into(),
                    orders: vec!["SO-1".into()],
                    over_cap: false,
                }],
                pending: vec![(vec![7; 16], Some(b"waiting".to_vec()))],
                traces: vec![(vec![8; 16], Some(b"orders".to_vec()))],
                notifications: Vec::new(),
                insight: Some(learned(3)),
            };
            store.commit(&changes, &[]).unwrap();
            // What a later commit learned is added to what the store holds, not put in its place.
            store.commit(&StateChanges { insight: Some(learned(2)), ..Default::default() }, &[]).unwrap();
        }
        let store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
        let state = store.load(10).unwrap();
        let saved = ordertrail_core::insight::SavedInsight::decode(state.insight.as_deref().unwrap()).unwrap();
        assert_eq!(saved.delay.samples("order_release"), 5);
        assert_eq!(state.orders, vec![order.clone()]);
        assert!(!state.orders_left_in_store);
        assert_eq!(state.aliases[0].value, "SH-1");
        assert_eq!(store.order("SO-1").unwrap(), Some(order));
        assert_eq!(store.order("SO-2").unwrap(), None);
        assert_eq!(state.pending, vec![(vec![7; 16], b"waiting".to_vec())]);
        assert_eq!(state.traces, vec![(vec![8; 16], b"orders".to_vec())]);
    }

    fn write(key: &str, wake: Option<u64>) -> OrderWrite {
        let mut record = OrderRecord::new(key.into());
        if wake.is_none() {
            record.closed_at_unix_nanos = Some(1);
        }
        OrderWrite { record, wake_unix_nanos: wake }
    }

    /// `n` settled `order_release` clocks, as the engine hands them over.
    fn learned(n: u64) -> ordertrail_core::insight::InsightChanges {
        let mut model = ordertrail_core::insight::delay::DelayModel::default();
        for i in 0..n {
            model.learn(
                &Default::default(),
                "order_release",
                &Default::default(),
                std::time::Duration::from_secs(60 * (i + 1)),
            );
        }
        ordertrail_core::insight::InsightChanges { learned: model, patterns: None, max_values_per_dimension: 200 }
    }

    fn commit_orders(store: &mut RedbStore, writes: Vec<OrderWrite>) {
        store.commit(&StateChanges { orders: writes, ..Default::default() }, &[]).unwrap();
    }

    #[test]
    fn the_index_of_wakes_follows_each_order_and_skips_orders_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
        commit_orders(&mut store, vec![write("SO-A", Some(30)), write("SO-B", Some(10)), write("SO-C", Some(20))]);
        let nothing_in_memory = |_: &str| false;
        assert_eq!(store.due_wakes(25, 10, &nothing_in_memory).unwrap(), ["SO-B", "SO-C"], "earliest first");
        // SO-B's wake moves later, SO-C closes: the index follows, with no entry left behind.
        commit_orders(&mut store, vec![write("SO-B", Some(40)), write("SO-C", None)]);
        assert_eq!(store.due_wakes(35, 10, &nothing_in_memory).unwrap(), ["SO-A"]);
        assert_eq!(store.due_wakes(u64::MAX, 10, &nothing_in_memory).unwrap(), ["SO-A", "SO-B"]);
        assert_eq!(store.due_wakes(u64::MAX, 1, &nothing_in_memory).unwrap(), ["SO-A"], "at most `max`");
        assert_eq!(store.due_wakes(u64::MAX, 10, &|key| key == "SO-A").unwrap(), ["SO-B"], "in memory: skipped");
        // The same wake written again changes nothing; the record itself is replaced.
        let mut again = write("SO-A", Some(30));
        again.record.span_count = 7;
        commit_orders(&mut store, vec![again]);
        assert_eq!(store.due_wakes(u64::MAX, 10, &nothing_in_memory).unwrap(), ["SO-A", "SO-B"]);
        assert_eq!(store.order("SO-A").unwrap().unwrap().span_count, 7);
    }

    #[test]
    fn startup_loads_open_orders_up_to_the_hot_set_and_leaves_the_rest_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
        let mut writes: Vec<OrderWrite> = (0..10).map(|n| write(&format!("SO-{n}"), Some(n))).collect();
        writes.push(write("SO-CLOSED", None));
        commit_orders(&mut store, writes);
        let state = store.load(4).unwrap();
        assert_eq!(state.orders.len(), 4);
        assert!(state.orders.iter().all(|o| !o.is_closed()));
        assert!(state.orders_left_in_store);
        let state = store.load(100).unwrap();
        assert_eq!(state.orders.len(), 10, "every open order, and no closed one");
        assert!(state.orders_left_in_store, "the closed order is still there, to be read back when named");
        assert!(store.order("SO-CLOSED").unwrap().is_some_and(|o| o.is_closed()));
    }

    #[test]
    fn orders_stored_by_an_earlier_version_are_given_a_wake_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
            // As earlier versions wrote them: the JSON record alone.
            let db = shared(&store.db);
            let tx = db.begin_write().unwrap();
            {
                let mut orders = tx.open_table(ORDERS).unwrap();
                for record in [write("SO-OPEN", Some(1)).record, write("SO-DONE", None).record] {
                    let json = serde_json::to_vec(&record).unwrap();
                    orders.insert(record.key.as_str(), json.as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
        assert_eq!(store.due_wakes(0, 10, &|_| false).unwrap(), ["SO-OPEN"], "due at once, the closed one never");
        assert_eq!(store.order("SO-OPEN").unwrap().unwrap().key, "SO-OPEN");
        assert!(store.order("SO-DONE").unwrap().unwrap().is_closed());
        assert_eq!(store.load(10).unwrap().orders.len(), 1);
    }

    fn export(n: u32) -> QueuedExport {
        QueuedExport { spans: n, request: vec![n.to_le_bytes()[0]; 10] }
    }

    #[test]
    fn the_export_queue_keeps_order_and_count_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
            store.commit(&StateChanges::default(), &[export(1), export(2)]).unwrap();
            store.commit(&StateChanges::default(), &[export(3)]).unwrap();
            let queue = store.export_queue();
            assert_eq!((queue.queued_entries(), queue.queued_bytes()), (3, 42));
            let first = queue.read_after(None, 2).unwrap();
            assert_eq!(first.iter().map(|(n, e)| (*n, e.spans)).collect::<Vec<_>>(), [(0, 1), (1, 2)]);
            assert_eq!(queue.read_after(Some(1), 10).unwrap()[0].1, export(3));
            queue.remove(&[0]).unwrap();
            assert_eq!((queue.queued_entries(), queue.queued_bytes()), (2, 28));
        }
        let mut store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
        let queue = store.export_queue();
        assert_eq!((queue.queued_entries(), queue.queued_bytes()), (2, 28));
        store.commit(&StateChanges::default(), &[export(4)]).unwrap();
        let numbers: Vec<u64> = queue.read_after(None, 10).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(numbers, [1, 2, 3], "numbering continues after the last entry");
    }

    #[test]
    fn the_queue_bound_counts_the_pages_entries_take_and_a_drained_queue_gives_the_disk_back() {
        assert_eq!(stored_size(100), 100);
        assert_eq!(stored_size(600_000), 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let mut store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
        let queue = store.export_queue();
        for round in 0..4u8 {
            let exports: Vec<QueuedExport> =
                (0..40).map(|_| QueuedExport { spans: 1, request: vec![round; 600_000] }).collect();
            store.commit(&StateChanges::default(), &exports).unwrap();
        }
        let path = dir.path().join("ordertrail.redb");
        let grown = std::fs::metadata(&path).unwrap().len();
        let counted = queue.queued_bytes();
        assert_eq!(counted, 160 << 20, "160 entries of 600 KB take 1 MiB pages");
        assert!(grown <= counted + COMPACT_SLACK, "file {grown} bytes, queue counted {counted}");
        let numbers: Vec<u64> = queue.read_after(None, 1000).unwrap().into_iter().map(|(n, _)| n).collect();
        queue.remove(&numbers).unwrap();
        let drained = std::fs::metadata(&path).unwrap().len();
        println!("queue disk result: 160 entries of 600 KB; counted {counted} bytes; file {grown} bytes full, {drained} drained");
        assert!(drained < 16 << 20, "the drained file is {drained} bytes, was {grown}");
        // The store still works after compaction.
        store.commit(&StateChanges::default(), &[export(9)]).unwrap();
        assert_eq!(queue.read_after(None, 10).unwrap().len(), 1);
        drop((store, queue));
        assert_eq!(RedbStore::open(dir.path(), Durability::Durable).unwrap().export_queue().queued_entries(), 1);
    }

    #[test]
    fn a_damaged_store_file_is_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ordertrail.redb"), vec![0x5a; 8192]).unwrap();
        let err = RedbStore::open(dir.path(), Durability::Durable).err().unwrap().to_string();
        assert!(err.starts_with("cannot open store") && err.contains("ordertrail.redb"), "{err}");
    }

    #[test]
    fn a_truncated_store_file_is_a_clear_error_naming_it_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = RedbStore::open(dir.path(), Durability::Durable).unwrap();
            let exports: Vec<QueuedExport> =
                (0..200u8).map(|n| QueuedExport { spans: 1, request: vec![n; 4096] }).collect();
            store.commit(&StateChanges::default(), &exports).unwrap();
        }
        let path = dir.path().join("ordertrail.redb");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 3).unwrap();
        let err =
            RedbStore::open(dir.path(), Durability::Durable).expect_err("a truncated store does not open").to_string();
        assert!(err.starts_with("cannot open store") && err.contains("ordertrail.redb"), "{err}");
    }

    #[test]
    fn the_data_directory_and_store_file_are_private_to_the_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("state").join("ordertrail");
        drop(RedbStore::open(&data, Durability::Durable).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(mode(&data.join("ordertrail.redb")), 0o600);
        // A store created 0644 by an older version is made private when opened.
        std::fs::set_permissions(data.join("ordertrail.redb"), std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(RedbStore::open(&data, Durability::Durable).unwrap());
        assert_eq!(mode(&data.join("ordertrail.redb")), 0o600);
    }

    #[test]
    fn an_unusable_data_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = RedbStore::open(&file, Durability::Durable).err().unwrap().to_string();
        assert!(err.starts_with("cannot create data directory"), "{err}");
    }
}
