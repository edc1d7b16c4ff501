//! The PostgreSQL store, against the PostgreSQL on 127.0.0.1:5432 (`ORDERTRAIL_TEST_POSTGRES` overrides the
//! connection string). Each test works in a schema of its own. Without a reachable database these tests say they
//! were skipped and pass, so that the test command works on any machine; `.ci/run` sets
//! `ORDERTRAIL_REQUIRE_POSTGRES=1`, which turns a missing database into a failure.

mod common;

use common::*;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, KeyValue};
use ordertrail::store::{OrderStore, PostgresStore, QueuedExport};
use ordertrail_core::config::{Durability, PostgresConfig, PostgresUrl};
use ordertrail_core::engine::{OrderWrite, StateChanges};
use ordertrail_core::order::{AliasRecord, OrderRecord};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A connection string into a fresh schema, written to a file in `dir`; `None` (and a line saying so) when no
/// database answers and none is required.
fn database(dir: &Path, test: &str) -> Option<PostgresConfig> {
    let base = std::env::var("ORDERTRAIL_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3".into());
    let schema = format!("ot_{test}_{}", std::process::id());
    // Schemas of this test left by earlier runs go first, so that they do not pile up in the database.
    let cleanup = format!(
        "DO $$ DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ot\\_{test}\\_%' \
         LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); END LOOP; END $$; CREATE SCHEMA {schema};"
    );
    let setup =
        std::process::Command::new("psql").args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &base, "-c", &cleanup]).output();
    let ready = setup.as_ref().is_ok_and(|o| o.status.success());
    if !ready {
        let why = match &setup {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("psql: {e}"),
        };
        assert!(
            std::env::var("ORDERTRAIL_REQUIRE_POSTGRES").is_err(),
            "PostgreSQL is required (ORDERTRAIL_REQUIRE_POSTGRES) but not reachable at `{base}`: {why}"
        );
        println!("skipped: PostgreSQL not reachable at `{base}` ({why})");
        return None;
    }
    let url = format!("{base} options='-c search_path={schema}'");
    let file = dir.join("postgres-url");
    std::fs::write(&file, url).unwrap();
    Some(PostgresConfig { url: PostgresUrl::File(file), pool_size: 4, statement_timeout: Duration::from_secs(30) })
}

fn write(key: &str, wake: Option<u64>, spans: u64) -> OrderWrite {
    let mut record = OrderRecord::new(key.into());
    record.span_count = spans;
    if wake.is_none() {
        record.closed_at_unix_nanos = Some(1);
    }
    OrderWrite { record, wake_unix_nanos: wake }
}

#[test]
fn state_and_the_export_queue_survive_reopening_and_the_wake_index_follows_each_order() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = database(dir.path(), "store") else { return };
    {
        let mut store = PostgresStore::open(&config, Durability::Durable).unwrap();
        let changes = StateChanges {
            orders: vec![write("SO-A", Some(30), 1), write("SO-B", Some(10), 2), write("SO-DONE", None, 3)],
            aliases: vec![AliasRecord {
                kind: "shipment".into(),
                value: "SH-1".into(),
                orders: vec!["SO-A".into()],
                over_cap: false,
            }],
            pending: vec![(vec![7; 16], Some(b"waiting".to_vec()))],
            traces: vec![(vec![8; 16], Some(b"orders".to_vec()))],
        };
        let exports: Vec<QueuedExport> =
            (1..=3).map(|n| QueuedExport { spans: n, request: vec![u8::try_from(n).unwrap(); 100] }).collect();
        store.commit(&changes, &exports).unwrap();
        assert_eq!(store.due_wakes(25, 10, &|_| false).unwrap(), ["SO-B"]);
        // SO-B's wake moves, the waiting spans are released: both follow.
        let later = StateChanges {
            orders: vec![write("SO-B", Some(40), 4)],
            pending: vec![(vec![7; 16], None)],
            ..Default::default()
        };
        store.commit(&later, &[]).unwrap();
        assert_eq!(store.due_wakes(35, 10, &|_| false).unwrap(), ["SO-A"]);
        assert_eq!(store.due_wakes(u64::MAX, 10, &|key| key == "SO-A").unwrap(), ["SO-B"], "in memory: skipped");
        let queue = store.export_queue();
        assert_eq!((queue.queued_entries(), queue.queued_bytes()), (3, 300));
        let first = queue.read_after(None, 2).unwrap();
        assert_eq!(first.iter().map(|(_, e)| e.spans).collect::<Vec<_>>(), [1, 2], "in the order appended");
        queue.remove(&[first[0].0]).unwrap();
        assert_eq!((queue.queued_entries(), queue.queued_bytes()), (2, 200));
    }
    let store = PostgresStore::open(&config, Durability::Durable).unwrap();
    let state = store.load(10).unwrap();
    let mut keys: Vec<&str> = state.orders.iter().map(|o| o.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["SO-A", "SO-B"], "open orders only");
    assert!(state.orders_left_in_store, "the closed one is read back when named");
    assert_eq!(store.order("SO-B").unwrap().unwrap().span_count, 4);
    assert!(store.order("SO-DONE").unwrap().unwrap().is_closed());
    assert_eq!(store.order("SO-NONE").unwrap(), None);
    assert_eq!(state.aliases[0].orders, ["SO-A"]);
    assert!(state.pending.is_empty());
    assert_eq!(state.traces, vec![(vec![8; 16], b"orders".to_vec())]);
    let mut wakes = state.stored_wakes.clone();
    wakes.sort();
    assert_eq!(wakes, [("SO-A".to_string(), Some(30)), ("SO-B".to_string(), Some(40))]);
    let queue = store.export_queue();
    assert_eq!((queue.queued_entries(), queue.queued_bytes()), (2, 200), "counted again at startup");
    assert_eq!(store.load(1).unwrap().orders.len(), 1, "at most the hot set");
}

#[test]
fn a_second_replica_on_the_same_database_is_refused_until_sharing_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = database(dir.path(), "lock") else { return };
    let first = PostgresStore::open(&config, Durability::Durable).unwrap();
    let second = PostgresStore::open(&config, Durability::Durable).unwrap_err().to_string();
    assert!(second.contains("storage.postgres") && second.contains("another ordertrail"), "{second}");
    drop(first);
    PostgresStore::open(&config, Durability::Durable).expect("free again once the first one closed");
}

/// Ends the database session that holds the replica lock of `schema`, as a database restart or a failover would.
fn end_lock_session(schema: &str) {
    let base = std::env::var("ORDERTRAIL_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3".into());
    let sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = {} \
         AND objsubid = 2 AND objid = (hashtext('{schema}')::bigint & 4294967295)::oid",
        0x6f74_0002
    );
    let ended = std::process::Command::new("psql").args(["-X", "-q", "-t", &base, "-c", &sql]).output().unwrap();
    assert!(ended.status.success() && String::from_utf8_lossy(&ended.stdout).contains('t'), "{ended:?}");
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_replica_lock_lost_with_its_connection_is_taken_again_unless_another_replica_took_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = database(dir.path(), "relock") else { return };
    let schema = format!("ot_relock_{}", std::process::id());
    let changes = |n: u64| StateChanges { orders: vec![write("SO-R", Some(5), n)], ..Default::default() };
    let mut first = PostgresStore::open(&config, Durability::Durable).unwrap();
    first.commit(&changes(1), &[]).unwrap();
    // The session holding the lock ends: the next commit takes the lock again and goes through.
    end_lock_session(&schema);
    first.commit(&changes(2), &[]).unwrap();
    // It ends again, and another replica takes the lock meanwhile: the first writes nothing more.
    end_lock_session(&schema);
    let second = PostgresStore::open(&config, Durability::Durable).unwrap();
    let refused = first.commit(&changes(3), &[]).unwrap_err().to_string();
    assert!(refused.contains("another ordertrail holds it"), "{refused}");
    assert_eq!(second.order("SO-R").unwrap().unwrap().span_count, 2, "the refused commit wrote nothing");
}

#[test]
fn a_bad_connection_string_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("url");
    let open = |url: &str| {
        std::fs::write(&file, url).unwrap();
        let url = PostgresUrl::File(file.clone());
        let config = PostgresConfig { url, pool_size: 1, statement_timeout: Duration::from_secs(5) };
        PostgresStore::open(&config, Durability::Durable).unwrap_err().to_string()
    };
    let err = open("host=127.0.0.1 port=1 user=nobody password=hunter2 dbname=none connect_timeout=2");
    assert!(err.contains("storage.postgres") && err.contains("cannot connect"), "{err}");
    assert!(!err.contains("hunter2"), "the password is never shown: {err}");
    let err = open("host=127.0.0.1 port=not-a-port password=hunter2");
    assert!(err.contains("storage.postgres") && err.contains("does not parse"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordertrail_runs_on_postgresql_and_an_order_continues_across_a_restart() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let Some(postgres) = database(dir.path(), "server") else { return };
    let config = || {
        let mut config = test_config(sink_addr, &dir.path().join("unused"), "");
        config.storage.postgres = Some(postgres.clone());
        config
    };
    let server = start_server(config()).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(&erp, &Context::new(), "order.create", SpanKind::Internal, vec![KeyValue::new("order.id", "SO-PG-1")]);
    flush(&erp).await;
    sink.wait_for(WAIT, "SO-PG-1's capture milestone", |spans| {
        spans.iter().any(|r| r.span.name == "order_capture" && r.span.trace_id == trace_of("SO-PG-1"))
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
    assert!(!dir.path().join("unused").exists(), "the embedded store was not used");

    // After a restart on the same database: the order continues, and its milestone span is not sent again.
    let server = start_server(config()).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(
        &erp,
        &Context::new(),
        "credit.check",
        SpanKind::Internal,
        vec![KeyValue::new("order.id", "SO-PG-1"), KeyValue::new("credit.decision", "approved")],
    );
    flush(&erp).await;
    server.pipeline().flush().await;
    let order = server.pipeline().order("SO-PG-1").await.expect("the order, from PostgreSQL");
    assert_eq!(order.span_count, 2);
    sink.wait_for(WAIT, "the credit check in SO-PG-1's trace", |spans| {
        spans.iter().any(|r| r.span.name == "credit.check" && r.span.trace_id == trace_of("SO-PG-1"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let captures = sink.snapshot().iter().filter(|r| r.span.name == "order_capture").count();
    assert_eq!(captures, 1, "the milestone span went out once across the restart");
    server.shutdown(Duration::from_secs(5)).await;
}
