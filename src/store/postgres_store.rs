//! The state in PostgreSQL, behind the same traits as the embedded store: orders with their wakes, aliases, waiting
//! spans, remembered traces and the export queue, each group written in one transaction; several replicas share it.
//!
//! How replicas share the store (the gateway routes by trace id, so a technical trace stays on one replica, and an
//! order's spans reach several):
//! - **Orders** carry a version. A commit writes an order only if the store still holds the version the replica
//!   read (`OrderRecord::revision`), and a new order only if no replica created it meanwhile; otherwise nothing of
//!   the group is written and the commit answers [`StoreError::Conflict`]. The service then builds its engine
//!   again from the store and processes the group again, so that a milestone span, a root span or a breach is
//!   committed by exactly one replica.
//! - Every order and alias write takes a number from one sequence and names its writer, so that each replica
//!   learns what the others changed before each group (`changes_by_others`): it forgets its copies of such orders
//!   and learns such aliases. Numbers are taken before commit, so a change can become visible after a later
//!   number; the look goes back half a second for that, and the version check above catches the rest.
//! - **Aliases** are merged, never overwritten: the orders two replicas learned for one value are united.
//! - **Wakes** (an order's next clock check, settling or idle close) are claimed for a while by the replica that
//!   handles them (`FOR UPDATE SKIP LOCKED`). A replica wakes at once the orders it wrote last; those another
//!   replica wrote only once their wake is two seconds past, by when that replica, if alive, has handled them.
//! - Each replica holds an advisory lock of its own for as long as it runs, and owns its export entries, waiting
//!   spans and remembered traces. A replica whose lock is gone (killed, its host lost) is **adopted** by a live
//!   one, which takes over those rows: its queue is sent, its waiting spans wait on.
//!
//! The driver is tokio-postgres with a deadpool pool, on a small runtime of the store's own: the traits are
//! called from the engine thread and from blocking tasks, and a call blocks its thread on a channel until the
//! query has run, whatever runtime (if any) that thread belongs to. The statements on the span path are prepared
//! once per connection (`prepare_cached`): a statement prepared on each call costs a second round trip.

use super::{
    Adopted, ChangesByOthers, Durability, ExportQueue, LoadedState, OrderReader, OrderStore, QueuedExport, StoreError,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use ordertrail_core::config::{PostgresConfig, PostgresTls, PostgresUrl};
use ordertrail_core::engine::StateChanges;
use ordertrail_core::notify::Notification;
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
    // 2: sharing between replicas: order versions, the numbered changes of orders and aliases and who wrote
    // them, wake claims, owners of the queue, waiting spans and remembered traces, and the replicas themselves.
    "CREATE SEQUENCE ordertrail_changes;
     ALTER TABLE ordertrail_orders ADD COLUMN version bigint NOT NULL DEFAULT 1,
         ADD COLUMN changed bigint NOT NULL DEFAULT 0, ADD COLUMN writer text NOT NULL DEFAULT '',
         ADD COLUMN claimed_by text, ADD COLUMN claimed_until bigint;
     CREATE INDEX ordertrail_orders_changed ON ordertrail_orders (changed);
     ALTER TABLE ordertrail_aliases ADD COLUMN changed bigint NOT NULL DEFAULT 0,
         ADD COLUMN writer text NOT NULL DEFAULT '';
     CREATE INDEX ordertrail_aliases_changed ON ordertrail_aliases (changed);
     ALTER TABLE ordertrail_pending ADD COLUMN owner text NOT NULL DEFAULT '';
     CREATE INDEX ordertrail_pending_owner ON ordertrail_pending (owner);
     ALTER TABLE ordertrail_traces ADD COLUMN owner text NOT NULL DEFAULT '';
     CREATE INDEX ordertrail_traces_owner ON ordertrail_traces (owner);
     ALTER TABLE ordertrail_exports ADD COLUMN owner text NOT NULL DEFAULT '';
     CREATE INDEX ordertrail_exports_owner ON ordertrail_exports (owner, number);
     CREATE TABLE ordertrail_replicas (id text PRIMARY KEY, lock_key integer NOT NULL,
                                       started_at timestamptz NOT NULL DEFAULT now());
     -- Rows written before replicas shared the store belong to a replica that no longer runs, adopted by the first.
     INSERT INTO ordertrail_replicas (id, lock_key) SELECT '', 0
         WHERE EXISTS (SELECT 1 FROM ordertrail_exports) OR EXISTS (SELECT 1 FROM ordertrail_pending)
            OR EXISTS (SELECT 1 FROM ordertrail_traces);",
    // 3: notifications waiting for their receivers, one per key; a replica sending one holds it for a while.
    "CREATE TABLE ordertrail_notifications (key text PRIMARY KEY, created bigint NOT NULL, body bytea NOT NULL,
                                            held_by text, held_until bigint);
     CREATE INDEX ordertrail_notifications_created ON ordertrail_notifications (created, key);",
    // 4: insight shared by the replicas: the delay model, to which each adds what it learned.
    "CREATE TABLE ordertrail_insight (name text PRIMARY KEY, body bytea NOT NULL);",
];

/// The one row of `ordertrail_insight` in use.
const INSIGHT_RECORD: &str = "insight";

/// The migration lock, a pair of this and a hash of the schema the tables are in, so that ordertrails in different
/// schemas of one database do not hold each other up. Each replica's own lock is the pair of that hash and the
/// replica's `lock_key`.
const MIGRATION_LOCK: i32 = 0x6f74_0001;

/// How far back the look for other replicas' changes goes: a change's number is taken inside its transaction, so
/// a change numbered below one already seen (or below the last number taken when a look began) may become visible
/// up to this much later. A number becomes the start of the looks only once a look that began this much after it
/// was recorded has run, so a replica that pauses (a long group, a rebuild) misses nothing for it.
const CHANGES_LOOK_BACK: Duration = Duration::from_millis(500);
/// The last change number taken by any replica, committed or not; 0 before the first.
const LAST_CHANGE_NUMBER: &str = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM ordertrail_changes";
/// Changes read per look at most; the rest are read at the next.
const CHANGES_PER_LOOK: i64 = 20_000;
/// A wake claimed by one replica is left to it for this long.
const WAKE_CLAIM_NANOS: i64 = 30_000_000_000;
/// How long past its wake an order another replica wrote waits for that replica before this one wakes it.
const WAKE_GRACE_NANOS: i64 = 2_000_000_000;

/// Liveness of other replicas: their lock is held by a session of this database.
const DEAD_REPLICAS: &str = "SELECT r.id FROM ordertrail_replicas r
     WHERE r.id <> $1 AND NOT EXISTS (
         SELECT 1 FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid = (hashtext(current_schema())::bigint & 4294967295)::oid
           AND l.objid = (r.lock_key::bigint & 4294967295)::oid)
     FOR UPDATE SKIP LOCKED";

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
    notifications: Arc<PostgresNotificationQueue>,
    shared: Shared,
    durability: Durability,
    queue: Arc<PostgresExportQueue>,
    /// The connection that holds this replica's lock for as long as the store is open.
    replica: Arc<deadpool_postgres::Object>,
    /// This replica's id (host, process, start) and the second key of its advisory lock.
    id: Arc<str>,
    lock_key: i32,
    /// The highest change number seen, with when it was seen; looks start from the one `CHANGES_LOOK_BACK` old.
    seen: std::collections::VecDeque<(std::time::Instant, i64)>,
    /// When the last complete look began.
    last_look: Option<std::time::Instant>,
    /// `correlation.max_orders_per_alias`: merged aliases over it are stored as over the cap.
    max_orders_per_alias: i64,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("durability", &self.durability).finish_non_exhaustive()
    }
}

/// The shared queue of notifications, delivered by whichever replica holds each.
#[derive(Debug)]
struct PostgresNotificationQueue {
    shared: Shared,
    replica: Arc<str>,
    entries: AtomicU64,
}

/// This replica's entries of the shared export queue.
#[derive(Debug)]
struct PostgresExportQueue {
    shared: Shared,
    owner: Arc<str>,
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
    // Otherwise the whole chain: the pool says only that it could not connect, the driver that the TLS handshake
    // failed, and the cause (a certificate for another name, an unknown issuer) comes last.
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        let cause = err.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
        source = err.source();
    }
    text
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
    /// Connects, brings the schema up to date, and joins the replicas sharing the store. Errors name
    /// `storage.postgres` and say what failed: the connection string, the connection or a migration.
    pub fn open(
        config: &PostgresConfig,
        durability: Durability,
        max_orders_per_alias: usize,
    ) -> Result<PostgresStore, StoreError> {
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
        let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match tls_to_server(&config.tls, &mut pg).map_err(open_err)? {
            Some(tls) => Manager::from_config(pg, tls, recycling),
            None => Manager::from_config(pg, tokio_postgres::NoTls, recycling),
        };
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
        let id: Arc<str> = replica_id().into();
        let registering = id.clone();
        let (replica, lock_key, numbered_at_open) = shared
            .runtime
            .run(async move {
                let mut client = pool.get().await.map_err(|e| format!("cannot connect: {}", describe(&e)))?;
                migrate(&mut client).await?;
                let numbered: i64 = client
                    .query_one(LAST_CHANGE_NUMBER, &[])
                    .await
                    .map_err(|e| format!("cannot read the change numbers: {}", describe(&e)))?
                    .get(0);
                let replica = pool.get().await.map_err(|e| format!("cannot connect: {}", describe(&e)))?;
                let lock_key = take_replica_lock(&replica, &registering).await.map_err(|e| e.to_string())?;
                Ok::<_, String>((replica, lock_key, numbered))
            })
            .map_err(|e| open_err(e.to_string()))?
            .map_err(open_err)?;
        // The looks start at `numbered_at_open`; what other replicas numbered up to it and had not committed yet
        // must be in what this replica loads next (the aliases), so the load waits out the look-back.
        std::thread::sleep(CHANGES_LOOK_BACK);
        tracing::info!(replica = %id, "joined the replicas sharing the PostgreSQL store");
        let queue = Arc::new(PostgresExportQueue {
            shared: shared.clone(),
            owner: id.clone(),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        });
        let notifications = Arc::new(PostgresNotificationQueue {
            shared: shared.clone(),
            replica: id.clone(),
            entries: AtomicU64::new(0),
        });
        Ok(PostgresStore {
            notifications,
            shared,
            durability,
            queue,
            replica: Arc::new(replica),
            id,
            lock_key,
            // Changes made before this replica opened the store are in what it loads (aliases) or reads when it needs
            // them (orders): the looks start at the number taken last then.
            seen: std::collections::VecDeque::from([(std::time::Instant::now(), numbered_at_open)]),
            last_look: None,
            max_orders_per_alias: i64::try_from(max_orders_per_alias).unwrap_or(i64::MAX),
        })
    }

    /// This replica's id, as the store's rows name it.
    pub fn replica(&self) -> &str {
        &self.id
    }
}

/// What `storage.postgres.tls` and the connection string's `sslmode` together ask for: a connector when the
/// connections are encrypted (the mode then set to `require`, so that a server without TLS is refused rather than
/// spoken to in plain text), `None` for plain text. A contradiction between the two stops startup.
fn tls_to_server(tls: &PostgresTls, pg: &mut tokio_postgres::Config) -> Result<Option<ServerNamedTls>, String> {
    use tokio_postgres::config::{Host, SslMode};
    let mode = pg.get_ssl_mode();
    // TLS verifies the server by name, over TCP. A Unix socket is local, and libpq speaks plain text over it
    // whatever sslmode says; an address alone (`hostaddr`) gives no name to verify.
    let sockets_only = !pg.get_hosts().is_empty() && pg.get_hosts().iter().all(|h| !matches!(h, Host::Tcp(_)));
    let wants_tls = match tls {
        PostgresTls::Required(_) => true,
        PostgresTls::AsConnectionStringSays => mode == SslMode::Require,
        PostgresTls::Off => false,
    };
    if wants_tls && sockets_only {
        if matches!(tls, PostgresTls::Required(_)) {
            return Err("storage.postgres.tls is set but the connection string's host is a Unix socket; TLS needs a \
                        host name (host=db.example) to verify"
                .into());
        }
        return Ok(None);
    }
    if wants_tls && pg.get_hosts().is_empty() {
        return Err("TLS needs host= in the connection string: the name the server's certificate is verified for \
                    (hostaddr alone gives none)"
            .into());
    }
    let verified = match tls {
        PostgresTls::Off if mode == SslMode::Require => {
            return Err("the connection string says sslmode=require but storage.postgres.tls.insecure is true".into())
        }
        PostgresTls::Off => return Ok(None),
        PostgresTls::AsConnectionStringSays if mode == SslMode::Require => {
            ordertrail_core::config::TlsConfig::system_roots()
        }
        PostgresTls::AsConnectionStringSays => return Ok(None),
        PostgresTls::Required(_) if mode == SslMode::Disable => {
            return Err("the connection string says sslmode=disable but storage.postgres.tls is set; remove one".into())
        }
        PostgresTls::Required(verified) => verified.clone(),
    };
    pg.ssl_mode(SslMode::Require);
    let client = crate::tls::client_config(&verified, "storage.postgres.tls").map_err(|e| format!("tls: {e}"))?;
    Ok(Some(ServerNamedTls {
        inner: tokio_postgres_rustls::MakeRustlsConnect::new(client),
        server_name: verified.server_name_override,
    }))
}

/// The rustls connector, verifying the server's certificate for `server_name_override` when one is given (a
/// connection by IP address to a server whose certificate names its DNS name, say) and for the host otherwise.
#[derive(Clone)]
struct ServerNamedTls {
    inner: tokio_postgres_rustls::MakeRustlsConnect,
    server_name: Option<String>,
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for ServerNamedTls
where
    tokio_postgres_rustls::MakeRustlsConnect: tokio_postgres::tls::MakeTlsConnect<S>,
{
    type Stream = <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::Stream;
    type TlsConnect = <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::TlsConnect;
    type Error = <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<Self::TlsConnect, Self::Error> {
        let name = self.server_name.as_deref().unwrap_or(host);
        tokio_postgres::tls::MakeTlsConnect::<S>::make_tls_connect(&mut self.inner, name)
    }
}

/// A replica's id: its host (the pod's name in Kubernetes), its process and when it started, readable in the
/// store's rows and logs, and never reused by a later process.
fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "ordertrail".into());
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{host}/{}/{:x}", std::process::id(), started)
}

/// Takes an advisory lock of this replica's own on `connection` and registers the replica; returns the lock's key.
/// The lock lives as long as the connection: when the process dies, or its host, the database lets go of it and
/// the other replicas see the replica is gone. The lock is taken before the row is written, so that no replica
/// takes a starting one for a dead one.
async fn take_replica_lock(connection: &deadpool_postgres::Object, id: &str) -> Result<i32, StoreError> {
    let existing: Option<i32> = connection
        .query_opt("SELECT lock_key FROM ordertrail_replicas WHERE id = $1", &[&id])
        .await
        .map_err(write_err)?
        .map(|row| row.get(0));
    for _ in 0..16 {
        let lock_key = existing.unwrap_or_else(rand::random::<i32>);
        let locked: bool = connection
            .query_one("SELECT pg_try_advisory_lock(hashtext(current_schema()), $1)", &[&lock_key])
            .await
            .map_err(write_err)?
            .get(0);
        if locked {
            connection
                .execute(
                    "INSERT INTO ordertrail_replicas (id, lock_key) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET lock_key = EXCLUDED.lock_key",
                    &[&id, &lock_key],
                )
                .await
                .map_err(write_err)?;
            return Ok(lock_key);
        }
        if existing.is_some() {
            break;
        }
    }
    Err(StoreError::Write(format!("cannot take the advisory lock of replica {id}")))
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
        let read = client
            .prepare_cached("SELECT record, version FROM ordertrail_orders WHERE key = $1")
            .await
            .map_err(read_err)?;
        client.query_opt(&read, &[&owned]).await.map_err(read_err)
    })??;
    row.map(|row| {
        let mut order = decode_order(key, row.get(0))?;
        order.revision = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
        Ok(order)
    })
    .transpose()
}

/// Whether a refused statement means that another replica's transaction got in the way (a deadlock between two
/// groups, a serialisation failure): then the group is processed again, like a conflict.
fn is_contention(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

impl PostgresStore {
    /// This replica's lock lives with one connection. If that connection was lost (a database restart, a failover,
    /// an idle-session timeout), the lock went with it, and another replica may have taken this one's rows over as
    /// those of a stopped replica: the lock and the registration are taken again on a new connection before
    /// anything is written. What was taken over is then sent (or judged) by both, which is at-least-once.
    fn keep_replica_lock(&mut self) -> Result<(), StoreError> {
        if !self.replica.is_closed() {
            return Ok(());
        }
        let pool = self.shared.pool.clone();
        let id = self.id.clone();
        let replica = self.shared.runtime.run(async move {
            let replica = pool.get().await.map_err(write_err)?;
            let lock_key = take_replica_lock(&replica, &id).await?;
            Ok::<_, StoreError>((replica, lock_key))
        })??;
        tracing::warn!(replica = %self.id, "the connection holding this replica's lock was lost; the lock is taken again");
        (self.replica, self.lock_key) = (Arc::new(replica.0), replica.1);
        Ok(())
    }
}

impl Drop for PostgresStore {
    /// Lets go of the lock at once, so that another replica takes over what this one leaves (export entries not
    /// yet sent, spans still waiting) without waiting for the connection to close.
    fn drop(&mut self) {
        let replica = self.replica.clone();
        let lock_key = self.lock_key;
        let _ = self.shared.runtime.run(async move {
            let _ = replica.execute("SELECT pg_advisory_unlock(hashtext(current_schema()), $1)", &[&lock_key]).await;
        });
    }
}

/// The rows of `(key, value-or-gone)` pairs as columns: those to put, and those to delete.
type SplitRows = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

fn split_rows(rows: &[(Vec<u8>, Option<Vec<u8>>)]) -> SplitRows {
    let mut put_keys = Vec::new();
    let mut put_values = Vec::new();
    let mut gone = Vec::new();
    for (key, value) in rows {
        match value {
            Some(value) => {
                put_keys.push(key.clone());
                put_values.push(value.clone());
            }
            None => gone.push(key.clone()),
        }
    }
    (put_keys, put_values, gone)
}

impl OrderStore for PostgresStore {
    /// Loads no order: every order is read when a span, a query or its wake names it, since another replica may
    /// change it at any time. Aliases are all loaded; waiting spans and remembered traces are this replica's
    /// (after a rebuild of the engine; a new replica has none until it adopts a stopped one's).
    fn load(&self, _max_orders: usize) -> Result<LoadedState, StoreError> {
        let pool = self.shared.pool.clone();
        let owner = self.id.to_string();
        let (aliases, pending, traces, insight) = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            let aliases = client.query("SELECT kind, value, stored FROM ordertrail_aliases", &[]).await;
            let pending = client.query("SELECT trace, spans FROM ordertrail_pending WHERE owner = $1", &[&owner]).await;
            let traces = client.query("SELECT trace, stored FROM ordertrail_traces WHERE owner = $1", &[&owner]).await;
            let insight =
                client.query_opt("SELECT body FROM ordertrail_insight WHERE name = $1", &[&INSIGHT_RECORD]).await;
            Ok::<_, StoreError>((
                aliases.map_err(read_err)?,
                pending.map_err(read_err)?,
                traces.map_err(read_err)?,
                insight.map_err(read_err)?,
            ))
        })??;
        let mut state = LoadedState {
            orders_left_in_store: true,
            insight: insight.map(|row| row.get::<_, Vec<u8>>(0)),
            ..Default::default()
        };
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
        // however many orders it touched. Orders go in key order, the order in which they are locked, so that
        // two groups locking the same orders do not each wait for the other.
        let mut writes: Vec<_> = changes.orders.iter().collect();
        writes.sort_unstable_by(|a, b| a.record.key.cmp(&b.record.key));
        let mut order_keys = Vec::with_capacity(writes.len());
        let mut order_wakes: Vec<Option<i64>> = Vec::with_capacity(writes.len());
        let mut order_records = Vec::with_capacity(writes.len());
        let mut order_expected: Vec<Option<i64>> = Vec::with_capacity(writes.len());
        for write in writes {
            order_keys.push(write.record.key.clone());
            order_wakes.push(write.wake_unix_nanos.map(db_time));
            order_records.push(serde_json::to_vec(&write.record).map_err(write_err)?);
            order_expected.push((write.record.revision > 0).then(|| db_time(write.record.revision)));
        }
        let alias_kinds: Vec<String> = changes.aliases.iter().map(|a| a.kind.clone()).collect();
        let alias_values: Vec<String> = changes.aliases.iter().map(|a| a.value.clone()).collect();
        let alias_stored: Vec<Vec<u8>> = changes.aliases.iter().map(super::encode_alias).collect();
        let pending = split_rows(&changes.pending);
        let traces = split_rows(&changes.traces);
        let export_spans: Vec<i32> = exports.iter().map(|e| i32::try_from(e.spans).unwrap_or(i32::MAX)).collect();
        let export_requests: Vec<Vec<u8>> = exports.iter().map(|e| e.request.clone()).collect();
        let notification_keys: Vec<String> = changes.notifications.iter().map(|n| n.key.clone()).collect();
        let notification_created: Vec<i64> =
            changes.notifications.iter().map(|n| db_time(n.created_unix_nanos)).collect();
        let notification_bodies: Vec<Vec<u8>> = changes.notifications.iter().map(super::encode_notification).collect();
        let added_bytes: u64 = exports.iter().map(|e| e.request.len() as u64).sum();
        let added_entries = exports.len() as u64;
        let learned = changes.insight.clone();
        let relaxed = self.durability == Durability::Memory;
        let pool = self.shared.pool.clone();
        let me = self.id.to_string();
        let cap = self.max_orders_per_alias;
        // Notifications the commit queued (a key already queued is not), counted in once it committed; the queue
        // is counted afresh at each take too, which sees other replicas' as well.
        let queued_notifications = Arc::new(AtomicU64::new(0));
        let queued_in = queued_notifications.clone();
        let outcome = self.shared.runtime.run(async move {
            let mut client = pool.get().await.map_err(write_err)?;
            let tx = client.transaction().await.map_err(write_err)?;
            if relaxed {
                // Memory durability: the commit does not wait for the WAL to reach the disk.
                tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await.map_err(write_err)?;
            }
            if !order_keys.is_empty() {
                // Rows are locked in key order first; then an order is written only at the version this replica
                // read, and a new one only if no replica created it meanwhile. The keys that were not written are
                // the conflict, and the transaction is dropped (rolled back) without writing anything.
                let lock = tx
                    .prepare_cached("SELECT 1 FROM ordertrail_orders WHERE key = ANY($1) ORDER BY key FOR UPDATE")
                    .await
                    .map_err(write_err)?;
                let locked = tx.execute(&lock, &[&order_keys]).await;
                match locked {
                    Ok(_) => {}
                    Err(e) if is_contention(&e) => return Ok(Some(order_keys)),
                    Err(e) => return Err(write_err(e)),
                }
                let write = tx
                    .prepare_cached(
                        "WITH input AS (
                             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bytea[], $4::bigint[])
                                 AS i(key, wake, record, expected)),
                         updated AS (
                             UPDATE ordertrail_orders o
                             SET wake = i.wake, record = i.record, version = o.version + 1,
                                 changed = nextval('ordertrail_changes'), writer = $5,
                                 claimed_by = NULL, claimed_until = NULL
                             FROM input i
                             WHERE o.key = i.key AND i.expected IS NOT NULL AND o.version = i.expected
                             RETURNING o.key),
                         inserted AS (
                             INSERT INTO ordertrail_orders (key, wake, record, version, changed, writer)
                             SELECT key, wake, record, 1, nextval('ordertrail_changes'), $5 FROM input
                             WHERE expected IS NULL ORDER BY key
                             ON CONFLICT (key) DO NOTHING
                             RETURNING key)
                         SELECT key FROM updated UNION ALL SELECT key FROM inserted",
                    )
                    .await
                    .map_err(write_err)?;
                let written = tx
                    .query(&write, &[&order_keys, &order_wakes, &order_records, &order_expected, &me])
                    .await
                    .map_err(|e| if is_contention(&e) { Err(e) } else { Ok(write_err(e)) });
                let written = match written {
                    Ok(rows) => rows,
                    Err(Ok(e)) => return Err(e),
                    Err(Err(_)) => return Ok(Some(order_keys)),
                };
                if written.len() < order_keys.len() {
                    let written: std::collections::HashSet<String> = written.iter().map(|r| r.get(0)).collect();
                    return Ok(Some(order_keys.into_iter().filter(|k| !written.contains(k)).collect()));
                }
            }
            if !alias_kinds.is_empty() {
                // Two replicas may learn orders for one value at the same moment: what is stored is the union of
                // both, over the cap when the union is.
                let merge = tx
                    .prepare_cached(
                        "INSERT INTO ordertrail_aliases AS a (kind, value, stored, changed, writer)
                         SELECT k, v, s, nextval('ordertrail_changes'), $4
                         FROM UNNEST($1::text[], $2::text[], $3::bytea[]) AS u(k, v, s) ORDER BY k, v
                         ON CONFLICT (kind, value) DO UPDATE SET
                             changed = EXCLUDED.changed, writer = EXCLUDED.writer,
                             stored = (
                                 WITH old AS (SELECT convert_from(a.stored, 'UTF8')::jsonb AS j),
                                      new AS (SELECT convert_from(EXCLUDED.stored, 'UTF8')::jsonb AS j),
                                      orders AS (
                                          SELECT DISTINCT e FROM old, jsonb_array_elements(
                                              CASE WHEN jsonb_typeof(old.j) = 'array' THEN old.j ELSE '[]' END) e
                                          UNION
                                          SELECT DISTINCT e FROM new, jsonb_array_elements(
                                              CASE WHEN jsonb_typeof(new.j) = 'array' THEN new.j ELSE '[]' END) e)
                                 SELECT CASE
                                     WHEN (SELECT jsonb_typeof(j) FROM old) = 'object'
                                       OR (SELECT jsonb_typeof(j) FROM new) = 'object'
                                       OR (SELECT count(*) FROM orders) > $5
                                     THEN convert_to('{\"over_cap\":true}', 'UTF8')
                                     ELSE convert_to((SELECT coalesce(jsonb_agg(e), '[]')::text FROM orders), 'UTF8')
                                 END)",
                    )
                    .await
                    .map_err(write_err)?;
                let merged = tx.execute(&merge, &[&alias_kinds, &alias_values, &alias_stored, &me, &cap]).await;
                match merged {
                    Ok(_) => {}
                    Err(e) if is_contention(&e) => return Ok(Some(Vec::new())),
                    Err(e) => return Err(write_err(e)),
                }
            }
            for (table, column, (put_keys, put_values, gone)) in
                [("ordertrail_pending", "spans", pending), ("ordertrail_traces", "stored", traces)]
            {
                if !put_keys.is_empty() {
                    let upsert = format!(
                        "INSERT INTO {table} (trace, {column}, owner)
                         SELECT t, v, $3 FROM UNNEST($1::bytea[], $2::bytea[]) AS u(t, v)
                         ON CONFLICT (trace) DO UPDATE SET {column} = EXCLUDED.{column}, owner = EXCLUDED.owner"
                    );
                    let upsert = tx.prepare_cached(&upsert).await.map_err(write_err)?;
                    tx.execute(&upsert, &[&put_keys, &put_values, &me]).await.map_err(write_err)?;
                }
                if !gone.is_empty() {
                    let delete = format!("DELETE FROM {table} WHERE trace = ANY($1)");
                    let delete = tx.prepare_cached(&delete).await.map_err(write_err)?;
                    tx.execute(&delete, &[&gone]).await.map_err(write_err)?;
                }
            }
            if !export_spans.is_empty() {
                let queue = tx
                    .prepare_cached(
                        "INSERT INTO ordertrail_exports (spans, request, owner)
                         SELECT e.spans, e.request, $3
                         FROM UNNEST($1::integer[], $2::bytea[]) WITH ORDINALITY AS e(spans, request, n)
                         ORDER BY e.n",
                    )
                    .await
                    .map_err(write_err)?;
                tx.execute(&queue, &[&export_spans, &export_requests, &me]).await.map_err(write_err)?;
            }
            if !notification_keys.is_empty() {
                // A key already queued (by this replica or another) stays as it is: an event is told once.
                let queue = tx
                    .prepare_cached(
                        "INSERT INTO ordertrail_notifications (key, created, body)
                         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bytea[])
                         ON CONFLICT (key) DO NOTHING",
                    )
                    .await
                    .map_err(write_err)?;
                let queued = tx
                    .execute(&queue, &[&notification_keys, &notification_created, &notification_bodies])
                    .await
                    .map_err(write_err)?;
                queued_in.store(queued, Ordering::Relaxed);
            }
            if let Some(learned) = &learned {
                // Last, to hold the row lock briefly: replicas add to the one model in turn. The row is created
                // empty first, so that two replicas saving for the first time do not each write only their own.
                let stored = async {
                    tx.execute(
                        "INSERT INTO ordertrail_insight (name, body) VALUES ($1, '') ON CONFLICT (name) DO NOTHING",
                        &[&INSIGHT_RECORD],
                    )
                    .await?;
                    let row = tx.query_one(
                        "SELECT body FROM ordertrail_insight WHERE name = $1 FOR UPDATE",
                        &[&INSIGHT_RECORD],
                    );
                    row.await.map(|row| row.get::<_, Vec<u8>>(0))
                };
                let stored = match stored.await {
                    Ok(stored) => stored,
                    Err(e) if is_contention(&e) => return Ok(Some(Vec::new())),
                    Err(e) => return Err(write_err(e)),
                };
                let (merged, unreadable) = super::merge_insight((!stored.is_empty()).then_some(&stored[..]), learned);
                if let Some(e) = unreadable {
                    tracing::warn!(error = %e, "the stored insight record was unreadable and is replaced");
                }
                tx.execute("UPDATE ordertrail_insight SET body = $2 WHERE name = $1", &[&INSIGHT_RECORD, &merged])
                    .await
                    .map_err(write_err)?;
            }
            match tx.commit().await {
                Ok(()) => Ok(None),
                Err(e) if is_contention(&e) => Ok(Some(Vec::new())),
                Err(e) => Err(write_err(e)),
            }
        })??;
        if let Some(orders) = outcome {
            return Err(StoreError::Conflict { orders });
        }
        self.queue.bytes.fetch_add(added_bytes, Ordering::Relaxed);
        self.queue.entries.fetch_add(added_entries, Ordering::Relaxed);
        self.notifications.entries.fetch_add(queued_notifications.load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(())
    }

    fn notification_queue(&self) -> Arc<dyn super::NotificationQueue> {
        self.notifications.clone()
    }

    fn order(&self, key: &str) -> Result<Option<OrderRecord>, StoreError> {
        read_order(&self.shared, key)
    }

    fn order_reader(&self) -> OrderReader {
        let shared = self.shared.clone();
        Box::new(move |key| read_order(&shared, key))
    }

    /// Claims the due orders this replica is to wake: those it wrote last at once, those another replica wrote
    /// once they are `WAKE_GRACE_NANOS` overdue (that replica, if alive, has handled them by then), none that
    /// another replica claimed within `WAKE_CLAIM_NANOS`. Claimed rows are skipped by other replicas' claims at the
    /// same moment (`SKIP LOCKED`); a commit of the order clears its claim.
    fn due_wakes(&self, now: u64, max: usize, in_memory: &dyn Fn(&str) -> bool) -> Result<Vec<String>, StoreError> {
        let pool = self.shared.pool.clone();
        let scan = i64::try_from(max.saturating_mul(8)).unwrap_or(i64::MAX);
        let claim_until = db_time(now).saturating_add(WAKE_CLAIM_NANOS);
        let others_due = db_time(now).saturating_sub(WAKE_GRACE_NANOS);
        let now = db_time(now);
        let me = self.id.to_string();
        let rows = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            client
                .query(
                    "WITH due AS (
                         SELECT key FROM ordertrail_orders
                         WHERE wake IS NOT NULL AND wake <= $1
                           AND (writer = $3 OR wake <= $5)
                           AND (claimed_until IS NULL OR claimed_until < $1 OR claimed_by = $3)
                         ORDER BY wake LIMIT $2 FOR UPDATE SKIP LOCKED)
                     UPDATE ordertrail_orders o SET claimed_by = $3, claimed_until = $4
                     FROM due WHERE o.key = due.key
                     RETURNING o.key, o.wake",
                    &[&now, &scan, &me, &claim_until, &others_due],
                )
                .await
                .map_err(read_err)
        })??;
        let mut due: Vec<(i64, String)> = rows.iter().map(|row| (row.get(1), row.get(0))).collect();
        due.sort_unstable();
        Ok(due.into_iter().map(|(_, key)| key).filter(|key| !in_memory(key)).take(max).collect())
    }

    fn export_queue(&self) -> Arc<dyn ExportQueue> {
        self.queue.clone()
    }

    fn shared(&self) -> bool {
        true
    }

    fn changes_by_others(&mut self) -> Result<ChangesByOthers, StoreError> {
        let now = std::time::Instant::now();
        // The look starts at the newest number recorded at least the look-back before the previous look began:
        // whatever was in flight when it was recorded had committed by then, and that look saw it.
        if let Some(previous) = self.last_look {
            while self.seen.get(1).is_some_and(|(at, _)| previous.saturating_duration_since(*at) >= CHANGES_LOOK_BACK) {
                self.seen.pop_front();
            }
        }
        let from = self.seen.front().map_or(0, |(_, number)| *number);
        let pool = self.shared.pool.clone();
        let me = self.id.to_string();
        let (numbered, orders, aliases) = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            // The last number taken, by any replica, before this look: later looks start there once it is safe
            // (above). Without it, a replica whose changes are mostly its own would start every look at the last
            // change of another's and read its own rows since then again and again.
            let last_number = client.prepare_cached(LAST_CHANGE_NUMBER).await.map_err(read_err)?;
            let numbered: i64 = client.query_one(&last_number, &[]).await.map_err(read_err)?.get(0);
            let orders_changed = client
                .prepare_cached(
                    "SELECT key, version, changed FROM ordertrail_orders WHERE changed > $1 AND writer <> $2
                     ORDER BY changed LIMIT $3",
                )
                .await
                .map_err(read_err)?;
            let orders = client.query(&orders_changed, &[&from, &me, &CHANGES_PER_LOOK]).await.map_err(read_err)?;
            let aliases_changed = client
                .prepare_cached(
                    "SELECT kind, value, stored, changed FROM ordertrail_aliases WHERE changed > $1 AND writer <> $2
                     ORDER BY changed LIMIT $3",
                )
                .await
                .map_err(read_err)?;
            let aliases = client.query(&aliases_changed, &[&from, &me, &CHANGES_PER_LOOK]).await.map_err(read_err)?;
            Ok::<_, StoreError>((numbered, orders, aliases))
        })??;
        let mut newest = from.max(numbered);
        let mut changes = ChangesByOthers::default();
        for row in &orders {
            changes.orders.push((row.get(0), u64::try_from(row.get::<_, i64>(1)).unwrap_or(0)));
            newest = newest.max(row.get(2));
        }
        for row in &aliases {
            changes.aliases.push(super::decode_alias(row.get(0), row.get(1), row.get(2))?);
            newest = newest.max(row.get(3));
        }
        // A full look may have left changes after its last row: the next look starts there, not further on.
        let full = i64::try_from(orders.len().max(aliases.len())).unwrap_or(i64::MAX) >= CHANGES_PER_LOOK;
        if full {
            let last_order = orders.last().map_or(i64::MAX, |r| r.get(2));
            let last_alias = aliases.last().map_or(i64::MAX, |r| r.get(3));
            newest = last_order.min(last_alias).min(newest);
            // Numbers recorded by earlier looks beyond it would skip what this look left for the next.
            while self.seen.len() > 1 && self.seen.back().is_some_and(|(_, n)| *n > newest) {
                self.seen.pop_back();
            }
        }
        // Recorded as seen when the answer came, not when the look began: waiting for a connection must not make the
        // number look older than it is.
        if self.seen.back().is_none_or(|(_, n)| *n < newest) {
            self.seen.push_back((std::time::Instant::now(), newest));
        }
        self.last_look = Some(now);
        Ok(changes)
    }

    fn remembered_traces(&self, traces: &[Vec<u8>]) -> Result<super::TraceRows, StoreError> {
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        let pool = self.shared.pool.clone();
        let traces = traces.to_vec();
        let rows = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            client
                .query("SELECT trace, stored FROM ordertrail_traces WHERE trace = ANY($1)", &[&traces])
                .await
                .map_err(read_err)
        })??;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn stored_insight(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let pool = self.shared.pool.clone();
        let row = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            client
                .query_opt("SELECT body FROM ordertrail_insight WHERE name = $1", &[&INSIGHT_RECORD])
                .await
                .map_err(read_err)
        })??;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)).filter(|body| !body.is_empty()))
    }

    fn adopt_stopped_replicas(&mut self) -> Result<Adopted, StoreError> {
        self.keep_replica_lock()?;
        let pool = self.shared.pool.clone();
        let me = self.id.to_string();
        let (adopted, bytes) = self.shared.runtime.run(async move {
            let mut client = pool.get().await.map_err(write_err)?;
            let tx = client.transaction().await.map_err(write_err)?;
            let dead: Vec<String> =
                tx.query(DEAD_REPLICAS, &[&me]).await.map_err(write_err)?.iter().map(|r| r.get(0)).collect();
            let mut adopted = Adopted::default();
            if dead.is_empty() {
                return Ok((adopted, 0));
            }
            // The entries get new numbers, after those this replica's exporter has read, so that it reads them.
            let exports = tx
                .query(
                    "UPDATE ordertrail_exports SET owner = $1, number = nextval('ordertrail_exports_number_seq')
                     WHERE owner = ANY($2) RETURNING length(request)",
                    &[&me, &dead],
                )
                .await
                .map_err(write_err)?;
            let mut taken = Vec::with_capacity(2);
            for (table, column) in [("ordertrail_pending", "spans"), ("ordertrail_traces", "stored")] {
                let take = format!("UPDATE {table} SET owner = $1 WHERE owner = ANY($2) RETURNING trace, {column}");
                taken.push(tx.query(take.as_str(), &[&me, &dead]).await.map_err(write_err)?);
            }
            let (pending, traces) = (&taken[0], &taken[1]);
            tx.execute("DELETE FROM ordertrail_replicas WHERE id = ANY($1)", &[&dead]).await.map_err(write_err)?;
            tx.commit().await.map_err(write_err)?;
            let bytes: u64 = exports.iter().map(|r| u64::try_from(r.get::<_, i32>(0)).unwrap_or(0)).sum();
            adopted.exports = exports.len() as u64;
            adopted.pending = pending.iter().map(|r| (r.get(0), r.get(1))).collect();
            adopted.traces = traces.iter().map(|r| (r.get(0), r.get(1))).collect();
            adopted.replicas = dead;
            Ok::<_, StoreError>((adopted, bytes))
        })??;
        self.queue.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.queue.entries.fetch_add(adopted.exports, Ordering::Relaxed);
        Ok(adopted)
    }
}

impl ExportQueue for PostgresExportQueue {
    fn read_after(&self, after: Option<u64>, max: usize) -> Result<Vec<(u64, QueuedExport)>, StoreError> {
        let pool = self.shared.pool.clone();
        let after = after.map_or(-1, db_time);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let owner = self.owner.to_string();
        let rows = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            let read = client
                .prepare_cached(
                    "SELECT number, spans, request FROM ordertrail_exports WHERE owner = $1 AND number > $2
                     ORDER BY number LIMIT $3",
                )
                .await
                .map_err(read_err)?;
            client.query(&read, &[&owner, &after, &limit]).await.map_err(read_err)
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
        let owner = self.owner.to_string();
        let removed = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(write_err)?;
            let delete = client
                .prepare_cached(
                    "DELETE FROM ordertrail_exports WHERE number = ANY($1) AND owner = $2 RETURNING length(request)",
                )
                .await
                .map_err(write_err)?;
            client.query(&delete, &[&numbers, &owner]).await.map_err(write_err)
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

impl super::NotificationQueue for PostgresNotificationQueue {
    /// Holds what it returns for this replica until `hold_until`, skipping rows another replica's take has locked
    /// at the same moment; a replica that stops holds nothing once its hold is over.
    fn take(&self, max: usize, now: u64, hold_until: u64, skip: &[String]) -> Result<Vec<Notification>, StoreError> {
        let pool = self.shared.pool.clone();
        let skip = skip.to_vec();
        let me = self.replica.to_string();
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let (now, hold_until) = (db_time(now), db_time(hold_until));
        let (rows, count) = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(read_err)?;
            let take = client
                .prepare_cached(
                    "WITH taken AS (
                         SELECT key FROM ordertrail_notifications
                         WHERE (held_until IS NULL OR held_until < $1 OR held_by = $2) AND key <> ALL($5)
                         ORDER BY created, key LIMIT $3 FOR UPDATE SKIP LOCKED)
                     UPDATE ordertrail_notifications n SET held_by = $2, held_until = $4
                     FROM taken WHERE n.key = taken.key
                     RETURNING n.key, n.body",
                )
                .await
                .map_err(read_err)?;
            let rows = client.query(&take, &[&now, &me, &limit, &hold_until, &skip]).await.map_err(read_err)?;
            let count: i64 =
                client.query_one("SELECT count(*) FROM ordertrail_notifications", &[]).await.map_err(read_err)?.get(0);
            Ok::<_, StoreError>((rows, count))
        })??;
        self.entries.store(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
        let mut taken =
            rows.iter().map(|row| super::decode_notification(row.get(0), row.get(1))).collect::<Result<Vec<_>, _>>()?;
        taken.sort_by(|a, b| (a.created_unix_nanos, &a.key).cmp(&(b.created_unix_nanos, &b.key)));
        Ok(taken)
    }

    fn remove(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let pool = self.shared.pool.clone();
        let keys = keys.to_vec();
        let removed = self.shared.runtime.run(async move {
            let client = pool.get().await.map_err(write_err)?;
            client
                .execute("DELETE FROM ordertrail_notifications WHERE key = ANY($1)", &[&keys])
                .await
                .map_err(write_err)
        })??;
        let _ = self.entries.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(removed)));
        Ok(())
    }

    fn queued(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode;

    fn tls_for(tls: &PostgresTls, url: &str) -> Result<(bool, SslMode), String> {
        let mut pg: tokio_postgres::Config = url.parse().unwrap();
        let connector = tls_to_server(tls, &mut pg)?;
        Ok((connector.is_some(), pg.get_ssl_mode()))
    }

    #[test]
    fn the_tls_section_and_the_connection_strings_sslmode_agree_or_startup_stops() {
        let section = PostgresTls::Required(ordertrail_core::config::TlsConfig::system_roots());
        // A `tls` section makes TLS required, so that a server without it is not spoken to in plain text.
        assert_eq!(tls_for(&section, "host=db").unwrap(), (true, SslMode::Require));
        assert_eq!(tls_for(&section, "host=db sslmode=prefer").unwrap(), (true, SslMode::Require));
        let err = tls_for(&section, "host=db sslmode=disable").unwrap_err();
        assert!(err.contains("sslmode=disable") && err.contains("storage.postgres.tls"), "{err}");
        // Without one, the connection string decides, and `require` is verified against the system's roots.
        let unset = PostgresTls::AsConnectionStringSays;
        assert_eq!(tls_for(&unset, "host=db").unwrap(), (false, SslMode::Prefer));
        assert_eq!(tls_for(&unset, "host=db sslmode=require").unwrap(), (true, SslMode::Require));
        // `tls.insecure` is plain text, and contradicts `require`.
        assert_eq!(tls_for(&PostgresTls::Off, "host=db").unwrap(), (false, SslMode::Prefer));
        let err = tls_for(&PostgresTls::Off, "postgres://db/x?sslmode=require").unwrap_err();
        assert!(err.contains("insecure"), "{err}");
        // A Unix socket is local: `sslmode=require` over it stays plain text, as libpq does; a `tls` section over
        // it, or over an address without a name, stops startup.
        assert_eq!(tls_for(&unset, "host=/var/run/postgresql sslmode=require").unwrap(), (false, SslMode::Require));
        let err = tls_for(&section, "host=/var/run/postgresql").unwrap_err();
        assert!(err.contains("Unix socket"), "{err}");
        let err = tls_for(&section, "hostaddr=10.0.0.5").unwrap_err();
        assert!(err.contains("hostaddr"), "{err}");
    }
}
