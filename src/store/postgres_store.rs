//! The state in PostgreSQL, behind the same traits as the embedded store: orders with their wakes, aliases, waiting
//! spans, remembered traces and the export queue, each group written in one transaction.
//!
//! This is the store one replica runs on; sharing it between replicas (row locks per order, claimed wakes, a
//! dead replica's queue drained by a live one) is the rest of issue 13, and needs the engine to re-read orders
//! another replica changed. Until then the store takes an advisory lock at startup, so that a second replica on the
//! same database stops with a clear error instead of corrupting the first one's orders.
//!
//! The driver is tokio-postgres with a deadpool pool, on a small runtime of the store's own: the traits are
//! called from the engine thread and from blocking tasks, and a call blocks its thread on a channel until the
//! query has run, whatever runtime (if any) that thread belongs to.

use super::{Durability, ExportQueue, LoadedState, OrderReader, OrderStore, QueuedExport, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use ordertrail_core::config::{PostgresConfig, PostgresUrl};
use ordertrail_core::engine::StateChanges;
use ordertrail_core::order::OrderRecord;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The schema, one step per version; a database is brought up to the last step at startup, inside a transaction
/// under an advisory lock, so that replicas starting together apply each step once.
const MIGRATIONS: &[&str] = &[
    // 1: the tables of the embedded store, with the wake as a column and an index on it.
    "CREATE TABLE ordertrail_orders (key text PRIMARY KEY, wake bigint, record bytea NOT NULL);
     CREATE INDEX ordertrail_orders_wake ON ordertrail_orders (wake) WHERE wake IS NOT NULL;
     CREATE TABLE ordertrail_aliases (kind text NOT NULL, value text NOT NULL, stored bytea NOT NULL,
                                      PRIMARY KEY (kind, value));
     CREATE TABLE ordertrail_pending (trace bytea PRIMARY KEY, spans bytea NOT NULL);
     CREATE TABLE ordertrail_traces (trace bytea PRIMARY KEY, stored bytea NOT NULL);
     CREATE TABLE ordertrail_exports (number bigserial PRIMARY KEY, spans integer NOT NULL, request bytea NOT NULL);",
];

/// The advisory locks, each a pair of the kind below and a hash of the schema the tables are in, so that
/// ordertrails in different schemas of one database do not hold each other up.
const MIGRATION_LOCK: i32 = 0x6f74_0001;
/// The lock one replica holds while it runs.
const REPLICA_LOCK: i32 = 0x6f74_0002;

/// The store's runtime, shut down in the background when the last user lets go (dropping a runtime inside another
/// one's task would panic), and how long a call may take before its caller is told it failed.
struct StoreRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    limit: Duration,
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl StoreRuntime {
    /// Runs `work` on the store's runtime and waits for it on this thread, at most `limit`: a database that
    /// stopped answering (a lost network, a host gone) fails the call, retryably, instead of holding the engine.
    fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("the runtime lives as long as the store");
        let limit = self.limit;
        runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(limit, work).await);
        });
        match rx.recv() {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(StoreError::Read(format!("PostgreSQL did not answer within {limit:?}"))),
            Err(_) => Err(StoreError::Read("the PostgreSQL call stopped before it answered".into())),
        }
    }
}

impl std::fmt::Debug for StoreRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreRuntime")
    }
}

#[derive(Debug, Clone)]
struct Shared {
    pool: Pool,
    runtime: Arc<StoreRuntime>,
}

pub struct PostgresStore {
    shared: Shared,
    durability: Durability,
    queue: Arc<PostgresExportQueue>,
    /// The connection that holds the replica lock for as long as the store is open.
    replica: Arc<deadpool_postgres::Object>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("durability", &self.durability).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct PostgresExportQueue {
    shared: Shared,
    bytes: AtomicU64,
    entries: AtomicU64,
}

/// An error with what the server said: tokio-postgres shows only "db error" for a refused statement, and keeps the
/// server's message, code and detail in its source.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = Some(e);
    while let Some(err) = source {
        let db = err
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .or_else(|| err.downcast_ref::<tokio_postgres::error::DbError>());
        if let Some(db) = db {
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            return format!("{} [{}]{detail}", db.message(), db.code().code());
        }
        source = err.source();
    }
    e.to_string()
}

fn read_err<E: std::error::Error + 'static>(e: E) -> StoreError {
    StoreError::Read(describe(&e))
}

fn write_err<E: std::error::Error + 'static>(e: E) -> StoreError {
    StoreError::Write(describe(&e))
}

/// Nanoseconds since the epoch fit a `bigint` until 2262.
fn db_time(nanos: u64) -> i64 {
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Connects, brings the schema up to date and takes the replica lock. Errors name `storage.postgres` and say
    /// what failed: the connection string, the connection, a migration, or another replica holding the lock.
    pub fn open(config: &PostgresConfig, durability: Durability) -> Result<PostgresStore, StoreError> {
        let open_err = |reason: String| StoreError::Open { path: "storage.postgres".into(), reason };
        let url = match &config.url {
            PostgresUrl::Env(name) => std::env::var(name)
                .map_err(|_| open_err(format!("environment variable `{name}` (url_env) is not set")))?,
            PostgresUrl::File(path) => std::fs::read_to_string(path)
                .map_err(|e| open_err(format!("cannot read url_file `{}`: {e}", path.display())))?,
        };
        let mut pg: tokio_postgres::Config =
            url.trim().parse().map_err(|e| open_err(format!("the connection string does not parse: {e}")))?;
        let timeout_ms = config.statement_timeout.as_millis();
        let options = pg.get_options().map(|o| format!("{o} ")).unwrap_or_default();
        pg.options(format!("{options}-c statement_timeout={timeout_ms}"));
        pg.application_name("ordertrail");
        // A connection to a host that vanished is noticed within a minute, not the kernel's two hours.
        pg.keepalives(true).keepalives_idle(Duration::from_secs(30));
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        let manager =
            Manager::from_config(pg, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ordertrail-postgres")
            .enable_all()
            .build()
            .map_err(|e| open_err(format!("cannot start the store's runtime: {e}")))?;
        // A call may take the statement timeout, plus the wait for a connection.
        let limit = config.statement_timeout + Duration::from_secs(15);
        let runtime = Arc::new(StoreRuntime { runtime: Some(runtime), limit });
        let pool = {
            let _entered = runtime.runtime.as_ref().expect("just built").enter();
            Pool::builder(manager)
                .max_size(config.pool_size + 1)
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(10)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| open_err(e.to_string()))?
        };
        let shared = Shared { pool, runtime };
        let pool = shared.pool.clone();
        let (replica, entries, bytes) = shared
            .runtime
            .run(async move {
                let mut client = pool.get().await.map_err(|e| format!("cannot connect: {}", describe(&e)))?;
                migrate(&mut client).await?;
                let replica = pool.get().await.map_err(|e| format!("cannot connect: {}", describe(&e)))?;
                // A replica that just stopped may still be letting go of its connection: a few tries first.
                let mut locked = false;
                for _ in 0..10 {
                    locked = replica
                        .query_one("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", &[&REPLICA_LOCK])
                        .await
                        .map_err(|e| describe(&e))?
                        .get(0);
                    if locked {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                if !locked {
                    return Err("another ordertrail already runs on this database; replicas cannot share it yet \
                                (issue 13), so run one"
                        .to_string());
                }
                let row = client
                    .query_one(
                        "SELECT count(*), coalesce(sum(length(request)), 0)::bigint FROM ordertrail_exports",
                        &[],
                    )
                    .await
                    .map_err(|e| describe(&e))?;
                let (entries, bytes): (i64, i64) = (row.get(0), row.get(1));
                Ok::<_, String>((replica, entries, bytes))
            })
            .map_err(|e| open_err(e.to_string()))?
            .map_err(open_err)?;
        let queue = Arc::new(PostgresExportQueue {
            shared: shared.clone(),
            bytes: AtomicU64::new(u64::try_from(bytes).unwrap_or(0)),
            entries: AtomicU64::new(u64::try_from(entries).unwrap_or(0)),
        });
        Ok(PostgresStore { shared, durability, queue, replica: Arc::new(replica) })
    }
}

async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), String> {
    let tx = client.transaction().await.map_err(|e| describe(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| describe(&e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS ordertrail_schema_migrations
             (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(|e| describe(&e))?;
    let applied: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM ordertrail_schema_migrations", &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if applied > known {
        return Err(format!(
            "the database's schema is at version {applied}, newer than this ordertrail knows ({known}); upgrade ordertrail"
        ));
    }
    for (version, step) in (1..).zip(MIGRATIONS).skip(usize::try_from(applied).unwrap_or(0)) {
        tx.batch_execute(step).await.map_err(|e| format!("migration {version}: {}", describe(&e)))?;
        tx.execute("INSERT INTO ordertrail_schema_migrations (version) VALUES ($1)", &[&version])
            .await
            .map_err(|e| describe(&e))?;
    }
    tx.commit().await.map_err(|e| describe(&e))
}

fn decode_order(key: &str, record: &[u8]) -> Result<OrderRecord, StoreError> {
    serde_json::from_slice(record).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
}

fn read_order(shared: &Shared, key: &str) -> Result<Option<OrderRecord>, StoreError> {
    let pool = shared.pool.clone();
    let owned = key.to_string();
    let row = shared.runtime.run(async move {
        let client = pool.get().await.map_err(read_err)?;
        client.query_opt("SELECT record FROM ordertrail_orders WHERE key = $1", &[&owned]).await.map_err(read_err)
    })??;
    row.map(|row| decode_order(key, row.get(0))).transpose()
}

impl PostgresStore {
    /// The replica lock lives with one connection. If that connection was lost (a database restart, a failover,
    /// an idle-session timeout), the lock went with it: it is taken again on a new connection before anything is
    /// written, and if another ordertrail took it meanwhile, nothing is.
    fn keep_replica_lock(&mut self) -> Result<(), StoreError> {
        if !self.replica.is_closed() {
            return Ok(());
        }
        let pool = self.shared.pool.clone();
        let retaken = self.shared.runtime.run(async move {
            let replica = pool.get().await.map_err(write_err)?;
            let row = replica
                .query_one("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", &[&REPLICA_LOCK])
                .await
                .map_err(write_err)?;
            Ok::<_, StoreError>(row.get::<_, bool>(0).then_some(replica))
        })??;
        match retaken {
            Some(replica) => {
                tracing::warn!("the connection holding the replica lock was lost; the lock is taken again");
                self.replica = Arc::new(replica);
                Ok(())
            }
            None => Err(StoreError::Write(
                "the replica lock was lost with its connection and another ordertrail holds it now; this one \
                 writes nothing more (stop it)"
                    .into(),
            )),
        }
    }
}

impl Drop for PostgresStore {
    /// Lets go of the replica lock at once, so that a restart in the same process (or the next replica) takes it.
    fn drop(&mut self) {
        let replica = self.replica.clone();
        let _ = self.shared.runtime.run(async move {
            let _ =
                replica.execute("SELECT pg_advisory_unlock($1, hashtext(current_schema()))", &[&REPLICA_LOCK]).await;
        });
    }
}

impl OrderStore for PostgresStore {
    fn load(&self, max_orders: usize) -> Result<LoadedState, StoreError> {
        let pool = self.shared.pool.clone();
        let limit = i64::try_from(max_orders).unwrap_or(i64::MAX).saturating_add(1);
        let (orders, closed, aliases, pending, traces) = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            let orders = client
                .query(
                    "SELECT key, wake, record FROM ordertrail_orders WHERE wake IS NOT NULL ORDER BY key LIMIT $1",
                    &[&limit],
                )
                .await
                .map_err(read_err)?;
            let closed: bool = client
                .query_one("SELECT EXISTS (SELECT 1 FROM ordertrail_orders WHERE wake IS NULL)", &[])
                .await
                .map_err(read_err)?
                .get(0);
            let aliases = client.query("SELECT kind, value, stored FROM ordertrail_aliases", &[]).await;
            let pending = client.query("SELECT trace, spans FROM ordertrail_pending", &[]).await;
            let traces = client.query("SELECT trace, stored FROM ordertrail_traces", &[]).await;
            Ok::<_, StoreError>((
                orders,
                closed,
                aliases.map_err(read_err)?,
                pending.map_err(read_err)?,
                traces.map_err(read_err)?,
            ))
        })??;
        let mut state = LoadedState { orders_left_in_store: closed || orders.len() > max_orders, ..Default::default() };
        for row in orders.iter().take(max_orders) {
            let key: String = row.get(0);
            let wake: Option<i64> = row.get(1);
            let order = decode_order(&key, row.get(2))?;
            state.stored_wakes.push((key, wake.and_then(|w| u64::try_from(w).ok())));
            state.orders.push(order);
        }
        for row in &aliases {
            state.aliases.push(super::decode_alias(row.get(0), row.get(1), row.get(2))?);
        }
        state.pending = pending.iter().map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1))).collect();
        state.traces = traces.iter().map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1))).collect();
        Ok(state)
    }

    fn commit(&mut self, changes: &StateChanges, exports: &[QueuedExport]) -> Result<(), StoreError> {
        if changes.is_empty() && exports.is_empty() {
            return Ok(());
        }
        self.keep_replica_lock()?;
        // The rows as columns, for one UNNEST statement per table: a group's commit is a handful of statements,
        // however many orders it touched.
        let mut order_keys = Vec::with_capacity(changes.orders.len());
        let mut order_wakes: Vec<Option<i64>> = Vec::with_capacity(changes.orders.len());
        let mut order_records = Vec::with_capacity(changes.orders.len());
        for write in &changes.orders {
            order_keys.push(write.record.key.clone());
            order_wakes.push(write.wake_unix_nanos.map(db_time));
            order_records.push(serde_json::to_vec(&write.record).map_err(write_err)?);
        }
        let alias_kinds: Vec<String> = changes.aliases.iter().map(|a| a.kind.clone()).collect();
        let alias_values: Vec<String> = changes.aliases.iter().map(|a| a.value.clone()).collect();
        let alias_stored: Vec<Vec<u8>> = changes.aliases.iter().map(super::encode_alias).collect();
        let split = |rows: &[(Vec<u8>, Option<Vec<u8>>)]| {
            let (put, gone): (Vec<_>, Vec<_>) = rows.iter().cloned().partition(|(_, v)| v.is_some());
            let (put_keys, put_values): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
                put.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).unzip();
            let gone: Vec<Vec<u8>> = gone.into_iter().map(|(k, _)| k).collect();
            (put_keys, put_values, gone)
        };
        let pending = split(&changes.pending);
        let traces = split(&changes.traces);
        let export_spans: Vec<i32> = exports.iter().map(|e| i32::try_from(e.spans).unwrap_or(i32::MAX)).collect();
        let export_requests: Vec<Vec<u8>> = exports.iter().map(|e| e.request.clone()).collect();
        let added_bytes: u64 = exports.iter().map(|e| e.request.len() as u64).sum();
        let added_entries = exports.len() as u64;
        let relaxed = self.durability == Durability::Memory;
        let pool = self.shared.pool.clone();
        self.shared.runtime.run(async move {
            let mut client = pool.get().await.map_err(write_err)?;
            let tx = client.transaction().await.map_err(write_err)?;
            if relaxed {
                // Memory durability: the commit does not wait for the WAL to reach the disk.
                tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await.map_err(write_err)?;
            }
            if !order_keys.is_empty() {
                tx.execute(
                    "INSERT INTO ordertrail_orders (key, wake, record)
                     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bytea[])
                     ON CONFLICT (key) DO UPDATE SET wake = EXCLUDED.wake, record = EXCLUDED.record",
                    &[&order_keys, &order_wakes, &order_records],
                )
                .await
                .map_err(write_err)?;
            }
            if !alias_kinds.is_empty() {
                tx.execute(
                    "INSERT INTO ordertrail_aliases (kind, value, stored)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[])
                     ON CONFLICT (kind, value) DO UPDATE SET stored = EXCLUDED.stored",
                    &[&alias_kinds, &alias_values, &alias_stored],
                )
                .await
                .map_err(write_err)?;
            }
            for (table, column, (put_keys, put_values, gone)) in
                [("ordertrail_pending", "spans", pending), ("ordertrail_traces", "stored", traces)]
            {
                if !put_keys.is_empty() {
                    let upsert = format!(
                        "INSERT INTO {table} (trace, {column}) SELECT * FROM UNNEST($1::bytea[], $2::bytea[])
                         ON CONFLICT (trace) DO UPDATE SET {column} = EXCLUDED.{column}"
                    );
                    tx.execute(upsert.as_str(), &[&put_keys, &put_values]).await.map_err(write_err)?;
                }
                if !gone.is_empty() {
                    let delete = format!("DELETE FROM {table} WHERE trace = ANY($1)");
                    tx.execute(delete.as_str(), &[&gone]).await.map_err(write_err)?;
                }
            }
            if !export_spans.is_empty() {
                tx.execute(
                    "INSERT INTO ordertrail_exports (spans, request)
                     SELECT e.spans, e.request
                     FROM UNNEST($1::integer[], $2::bytea[]) WITH ORDINALITY AS e(spans, request, n)
                     ORDER BY e.n",
                    &[&export_spans, &export_requests],
                )
                .await
                .map_err(write_err)?;
            }
            tx.commit().await.map_err(write_err)
        })??;
        self.queue.bytes.fetch_add(added_bytes, Ordering::Relaxed);
        self.queue.entries.fetch_add(added_entries, Ordering::Relaxed);
        Ok(())
    }

    fn order(&self, key: &str) -> Result<Option<OrderRecord>, StoreError> {
        read_order(&self.shared, key)
    }

    fn order_reader(&self) -> OrderReader {
        let shared = self.shared.clone();
        Box::new(move |key| read_order(&shared, key))
    }

    fn due_wakes(&self, now: u64, max: usize, in_memory: &dyn Fn(&str) -> bool) -> Result<Vec<String>, StoreError> {
        let pool = self.shared.pool.clone();
        let scan = i64::try_from(max.saturating_mul(8)).unwrap_or(i64::MAX);
        let now = db_time(now);
        let rows = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            client
                .query(
                    "SELECT key FROM ordertrail_orders WHERE wake IS NOT NULL AND wake <= $1 ORDER BY wake LIMIT $2",
                    &[&now, &scan],
                )
                .await
                .map_err(read_err)
        })??;
        Ok(rows.iter().map(|row| row.get::<_, String>(0)).filter(|key| !in_memory(key)).take(max).collect())
    }

    fn export_queue(&self) -> Arc<dyn ExportQueue> {
        self.queue.clone()
    }
}

impl ExportQueue for PostgresExportQueue {
    fn read_after(&self, after: Option<u64>, max: usize) -> Result<Vec<(u64, QueuedExport)>, StoreError> {
        let pool = self.shared.pool.clone();
        let after = after.map_or(-1, db_time);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            client
                .query(
                    "SELECT number, spans, request FROM ordertrail_exports WHERE number > $1 ORDER BY number LIMIT $2",
                    &[&after, &limit],
                )
                .await
                .map_err(read_err)
        })??;
        Ok(rows
            .iter()
            .map(|row| {
                let number: i64 = row.get(0);
                let spans: i32 = row.get(1);
                let export = QueuedExport { spans: u32::try_from(spans).unwrap_or(0), request: row.get(2) };
                (u64::try_from(number).unwrap_or(0), export)
            })
            .collect())
    }

    fn remove(&self, entries: &[u64]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let pool = self.shared.pool.clone();
        let numbers: Vec<i64> = entries.iter().map(|n| db_time(*n)).collect();
        let removed = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(write_err)?;
            client
                .query("DELETE FROM ordertrail_exports WHERE number = ANY($1) RETURNING length(request)", &[&numbers])
                .await
                .map_err(write_err)
        })??;
        let bytes: u64 = removed.iter().map(|row| u64::try_from(row.get::<_, i32>(0)).unwrap_or(0)).sum();
        // Rows are counted in by the commit that added them, after it committed, so a removal can come first
        // for a moment; the counters come out exact once both are done.
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.entries.fetch_sub(removed.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn queued_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn queued_entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }
}
