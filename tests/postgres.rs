//! The PostgreSQL store, against the PostgreSQL on 127.0.0.1:5432 (`ORDERTRAIL_TEST_POSTGRES` overrides the
//! connection string). Each test works in a schema of its own. Without a reachable database these tests say they
//! were skipped and pass, so that the test command works on any machine; `.ci/run` sets
//! `ORDERTRAIL_REQUIRE_POSTGRES=1`, which turns a missing database into a failure.

mod common;

use common::*;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, KeyValue};
use ordertrail::store::{OrderStore, PostgresStore, QueuedExport, StoreError};
use ordertrail_core::config::{Durability, PostgresConfig, PostgresTls, PostgresUrl, TlsConfig};
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
    Some(PostgresConfig {
        url: PostgresUrl::File(file),
        pool_size: 4,
        statement_timeout: Duration::from_secs(30),
        tls: PostgresTls::AsConnectionStringSays,
    })
}

fn write(key: &str, wake: Option<u64>, spans: u64) -> OrderWrite {
    let mut record = OrderRecord::new(key.into());
    record.span_count = spans;
    if wake.is_none() {
        record.closed_at_unix_nanos = Some(1);
    }
    OrderWrite { record, wake_unix_nanos: wake }
}

fn alias(value: &str, orders: &[&str]) -> AliasRecord {
    AliasRecord {
        kind: "shipment".into(),
        value: value.into(),
        orders: orders.iter().map(|o| o.to_string()).collect(),
        over_cap: false,
    }
}

fn open(config: &PostgresConfig) -> PostgresStore {
    PostgresStore::open(config, Durability::Durable, 3).unwrap()
}

fn conflict(result: Result<(), StoreError>) -> Vec<String> {
    match result {
        Err(StoreError::Conflict { orders }) => orders,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// `n` settled `order_release` clocks, as an engine hands them over.
fn learned(n: u64) -> ordertrail_core::insight::InsightChanges {
    let mut model = ordertrail_core::insight::delay::DelayModel::default();
    for i in 0..n {
        let took = std::time::Duration::from_secs(60 * (i + 1));
        model.learn(&Default::default(), "order_release", &Default::default(), took);
    }
    ordertrail_core::insight::InsightChanges { learned: model, patterns: None, max_values_per_dimension: 200 }
}

#[test]
fn state_and_the_export_queue_survive_a_restart_through_adoption_and_the_wake_index_follows_each_order() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = database(dir.path(), "store") else { return };
    {
        let mut store = open(&config);
        let changes = StateChanges {
            orders: vec![write("SO-A", Some(30), 1), write("SO-B", Some(10), 2), write("SO-DONE", None, 3)],
            aliases: vec![alias("SH-1", &["SO-A"])],
            pending: vec![(vec![7; 16], Some(b"waiting".to_vec())), (vec![9; 16], Some(b"waits on".to_vec()))],
            traces: vec![(vec![8; 16], Some(b"orders".to_vec()))],
            notifications: Vec::new(),
            insight: Some(learned(3)),
        };
        let exports: Vec<QueuedExport> =
            (1..=3).map(|n| QueuedExport { spans: n, request: vec![u8::try_from(n).unwrap(); 100] }).collect();
        store.commit(&changes, &exports).unwrap();
        assert_eq!(store.due_wakes(25, 10, &|_| false).unwrap(), ["SO-B"]);
        // SO-B's wake moves, the waiting spans are released: both follow.
        let mut later = write("SO-B", Some(40), 4);
        later.record.revision = 1;
        let later = StateChanges { orders: vec![later], pending: vec![(vec![7; 16], None)], ..Default::default() };
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
    // The next process is another replica: it loads no order (each is read when named) and takes over what the
    // stopped one left.
    let mut store = open(&config);
    // The other replica adds what it learned to the stored delay model: the model is the sum of both.
    store.commit(&StateChanges { insight: Some(learned(2)), ..Default::default() }, &[]).unwrap();
    let state = store.load(10).unwrap();
    let saved = ordertrail_core::insight::SavedInsight::decode(state.insight.as_deref().unwrap()).unwrap();
    assert_eq!(saved.delay.samples("order_release"), 5, "both replicas' samples");
    // What a running replica reads back to judge by what every replica learned.
    let read_back = store.stored_insight().unwrap().expect("the stored record");
    let read_back = ordertrail_core::insight::SavedInsight::decode(&read_back).unwrap();
    assert_eq!(read_back.delay.samples("order_release"), 5);
    assert!(state.orders.is_empty() && state.orders_left_in_store);
    assert!(state.pending.is_empty() && state.traces.is_empty(), "not this replica's until adopted");
    assert_eq!(state.aliases[0].orders, ["SO-A"]);
    let b = store.order("SO-B").unwrap().unwrap();
    assert_eq!((b.span_count, b.revision), (4, 2));
    assert!(store.order("SO-DONE").unwrap().unwrap().is_closed());
    assert_eq!(store.order("SO-NONE").unwrap(), None);
    let adopted = store.adopt_stopped_replicas().unwrap();
    assert_eq!(adopted.replicas.len(), 1, "{adopted:?}");
    assert_eq!(adopted.pending, vec![(vec![9; 16], b"waits on".to_vec())]);
    assert_eq!(adopted.traces, vec![(vec![8; 16], b"orders".to_vec())]);
    assert_eq!(adopted.exports, 2);
    let queue = store.export_queue();
    assert_eq!((queue.queued_entries(), queue.queued_bytes()), (2, 200), "the adopted entries are this replica's");
    let entries = queue.read_after(None, 10).unwrap();
    assert_eq!(entries.iter().map(|(_, e)| e.spans).collect::<Vec<_>>(), [2, 3], "still in order");
    assert!(store.adopt_stopped_replicas().unwrap().replicas.is_empty(), "adopted once");
    assert_eq!(store.load(10).unwrap().traces.len(), 1, "now this replica's own");
}

#[test]
fn replicas_write_an_order_only_at_the_version_they_read_and_merge_what_they_learn() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = database(dir.path(), "occ") else { return };
    let mut a = open(&config);
    let mut b = open(&config);
    let entry = QueuedExport { spans: 1, request: vec![1; 10] };
    // Both see SO-1 as new; the second to commit is refused, with nothing of its group written.
    a.commit(&StateChanges { orders: vec![write("SO-1", Some(50), 1)], ..Default::default() }, &[]).unwrap();
    let both_new =
        StateChanges { orders: vec![write("SO-1", Some(50), 7), write("SO-2", Some(50), 1)], ..Default::default() };
    assert_eq!(conflict(b.commit(&both_new, std::slice::from_ref(&entry))), ["SO-1"]);
    assert_eq!(b.order("SO-2").unwrap(), None, "nothing of the refused group was written");
    assert_eq!(b.export_queue().read_after(None, 10).unwrap().len(), 0);
    // Based on what it reads now, B's write goes through; A's copy is now stale and refused.
    let mut fresh = b.order("SO-1").unwrap().unwrap();
    assert_eq!(fresh.revision, 1);
    fresh.span_count = 2;
    b.commit(
        &StateChanges { orders: vec![OrderWrite { record: fresh, wake_unix_nanos: Some(50) }], ..Default::default() },
        &[],
    )
    .unwrap();
    let mut stale = write("SO-1", Some(50), 3);
    stale.record.revision = 1;
    assert_eq!(conflict(a.commit(&StateChanges { orders: vec![stale], ..Default::default() }, &[])), ["SO-1"]);
    // A learns what B changed; B does not see its own change.
    let seen = a.changes_by_others().unwrap();
    assert_eq!(seen.orders, [("SO-1".to_string(), 2)]);
    assert!(b.changes_by_others().unwrap().orders.is_empty());
    // Aliases two replicas learn for one value are merged, and over the cap (3 here) when the union is.
    a.commit(&StateChanges { aliases: vec![alias("SH-9", &["SO-1"])], ..Default::default() }, &[]).unwrap();
    b.commit(&StateChanges { aliases: vec![alias("SH-9", &["SO-2", "SO-3"])], ..Default::default() }, &[]).unwrap();
    let learned = a.changes_by_others().unwrap().aliases;
    let sh9 = learned.iter().find(|a| a.value == "SH-9").expect("A sees B's merge");
    let mut orders = sh9.orders.clone();
    orders.sort();
    assert_eq!(orders, ["SO-1", "SO-2", "SO-3"]);
    a.commit(&StateChanges { aliases: vec![alias("SH-9", &["SO-4"])], ..Default::default() }, &[]).unwrap();
    let over = b.changes_by_others().unwrap().aliases;
    assert!(over.iter().any(|a| a.value == "SH-9" && a.over_cap), "{over:?}");
}

/// Ends the database sessions that hold replica locks in `schema`, as a killed process, a lost host or a database
/// failover would.
fn end_lock_sessions(schema: &str) {
    let base = std::env::var("ORDERTRAIL_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3".into());
    let sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 \
         AND classid = (hashtext('{schema}')::bigint & 4294967295)::oid"
    );
    let ended = std::process::Command::new("psql").args(["-X", "-q", "-t", &base, "-c", &sql]).output().unwrap();
    assert!(ended.status.success() && String::from_utf8_lossy(&ended.stdout).contains('t'), "{ended:?}");
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_wake_is_claimed_by_one_replica_and_one_whose_writer_is_gone_is_still_woken() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = database(dir.path(), "wakes") else { return };
    let schema = format!("ot_wakes_{}", std::process::id());
    let mut a = open(&config);
    let b = open(&config);
    let second = 1_000_000_000;
    a.commit(&StateChanges { orders: vec![write("SO-W", Some(10 * second), 1)], ..Default::default() }, &[]).unwrap();
    // The writer wakes it at once; another replica leaves it to the writer for two seconds.
    assert!(b.due_wakes(11 * second, 10, &|_| false).unwrap().is_empty());
    assert_eq!(a.due_wakes(11 * second, 10, &|_| false).unwrap(), ["SO-W"]);
    // Claimed by A, it is not B's even when overdue.
    assert!(b.due_wakes(13 * second, 10, &|_| false).unwrap().is_empty());
    // A dies before handling it: once the claim runs out, B wakes it.
    end_lock_sessions(&schema);
    drop(a);
    assert_eq!(b.due_wakes(42 * second, 10, &|_| false).unwrap(), ["SO-W"]);
}

#[test]
fn a_replica_that_lost_its_lock_takes_it_again_and_its_rows_are_taken_over_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = database(dir.path(), "relock") else { return };
    let schema = format!("ot_relock_{}", std::process::id());
    let mut first = open(&config);
    let entry = QueuedExport { spans: 1, request: vec![1; 10] };
    first
        .commit(
            &StateChanges { orders: vec![write("SO-R", Some(5), 1)], ..Default::default() },
            std::slice::from_ref(&entry),
        )
        .unwrap();
    // The session holding the lock ends (a failover): another replica takes the entry over as a stopped one's,
    // and the first takes its lock again at its next commit, which goes through.
    end_lock_sessions(&schema);
    let mut second = open(&config);
    let adopted = second.adopt_stopped_replicas().unwrap();
    assert_eq!((adopted.replicas, adopted.exports), (vec![first.replica().to_string()], 1));
    let mut next = write("SO-R", Some(5), 2);
    next.record.revision = 1;
    first.commit(&StateChanges { orders: vec![next], ..Default::default() }, &[entry]).unwrap();
    assert_eq!(second.order("SO-R").unwrap().unwrap().span_count, 2);
    assert_eq!(first.export_queue().read_after(None, 10).unwrap().len(), 1, "only what it wrote since");
    assert!(second.adopt_stopped_replicas().unwrap().replicas.is_empty(), "the first one is alive again");
}

#[test]
fn a_bad_connection_string_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("url");
    let open = |url: &str| {
        std::fs::write(&file, url).unwrap();
        let url = PostgresUrl::File(file.clone());
        let tls = PostgresTls::AsConnectionStringSays;
        let config = PostgresConfig { url, pool_size: 1, statement_timeout: Duration::from_secs(5), tls };
        PostgresStore::open(&config, Durability::Durable, 100).unwrap_err().to_string()
    };
    let err = open("host=127.0.0.1 port=1 user=nobody password=hunter2 dbname=none connect_timeout=2");
    assert!(err.contains("storage.postgres") && err.contains("cannot connect"), "{err}");
    assert!(!err.contains("hunter2"), "the password is never shown: {err}");
    let err = open("host=127.0.0.1 port=not-a-port password=hunter2");
    assert!(err.contains("storage.postgres") && err.contains("does not parse"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_notification_is_queued_once_and_sent_by_one_replica_at_a_time() {
    use ordertrail_core::config::NotificationEvent;
    use ordertrail_core::notify::Notification;
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = database(dir.path(), "notify") else { return };
    let mut a = open(&config);
    let b = open(&config);
    let notification = |key: &str, created: u64| Notification {
        key: key.into(),
        notifier: "hook".into(),
        team: "integration-team".into(),
        event: NotificationEvent::ExceptionOpened,
        order: "SO-N".into(),
        body: "{}".into(),
        created_unix_nanos: created,
    };
    let changes = StateChanges {
        orders: vec![write("SO-N", Some(5), 1)],
        notifications: vec![notification("k2", 20), notification("k1", 10)],
        ..Default::default()
    };
    a.commit(&changes, &[]).unwrap();
    // The same key again (the event seen a second time) is not queued twice.
    let mut again = write("SO-N", Some(5), 2);
    again.record.revision = 1;
    let changes =
        StateChanges { orders: vec![again], notifications: vec![notification("k1", 30)], ..Default::default() };
    a.commit(&changes, &[]).unwrap();
    let (qa, qb) = (a.notification_queue(), b.notification_queue());
    assert_eq!(qa.queued(), 2, "counted in by the commit");
    let taken: Vec<String> = qb.take(10, 100, 1_000, &[]).unwrap().into_iter().map(|n| n.key).collect();
    assert_eq!(taken, ["k1", "k2"], "oldest first, each once");
    assert_eq!(qb.queued(), 2);
    // B holds them until 1,000: A gets none before, both after (B stopped sending them).
    assert!(qa.take(10, 500, 2_000, &[]).unwrap().is_empty());
    // One waiting for a retry does not hold up the one behind it.
    let behind: Vec<String> =
        qa.take(1, 1_001, 3_000, &["k1".to_string()]).unwrap().into_iter().map(|n| n.key).collect();
    assert_eq!(behind, ["k2"]);
    assert_eq!(qa.take(10, 1_001, 3_000, &[]).unwrap().len(), 2);
    qa.remove(&["k1".to_string(), "k2".to_string()]).unwrap();
    assert!(qb.take(10, 5_000, 6_000, &[]).unwrap().is_empty());
    assert_eq!(qa.queued(), 0);
}

/// TLS to the database, against the local server's own TLS (Debian turns it on with its `snakeoil` certificate
/// for `localhost`): the certificate is verified against the given CA and for the host or the override, a
/// server without TLS is refused rather than spoken to in plain text, and without a `tls` section nothing changes.
mod tls {
    use super::*;

    /// Runs `sql` in `schema` and returns what it printed.
    fn query(schema: &str, sql: &str) -> String {
        let base = std::env::var("ORDERTRAIL_TEST_POSTGRES")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3".into());
        let sql = format!("SET search_path = {schema}; {sql}");
        let out =
            std::process::Command::new("psql").args(["-X", "-q", "-A", "-t", &base, "-c", &sql]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether the connection holding `store`'s replica lock is encrypted, from the server's side (`pg_stat_ssl`).
    fn encrypted(schema: &str, store: &PostgresStore) -> bool {
        let sql = format!(
            "SELECT s.ssl FROM ordertrail_replicas r \
             JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
              AND l.classid = (hashtext('{schema}')::bigint & 4294967295)::oid \
              AND l.objid = (r.lock_key::bigint & 4294967295)::oid \
             JOIN pg_stat_ssl s ON s.pid = l.pid WHERE r.id = '{}'",
            store.replica()
        );
        match query(schema, &sql).as_str() {
            "t" => true,
            "f" => false,
            other => panic!("no lock session for {}: `{other}`", store.replica()),
        }
    }

    /// The server's certificate when it speaks TLS; `None` (and a line saying so) otherwise, unless PostgreSQL is
    /// required, as in `.ci/run`.
    fn server_certificate(schema: &str) -> Option<std::path::PathBuf> {
        let ssl = query(schema, "SHOW ssl");
        let cert = std::path::PathBuf::from(query(schema, "SHOW ssl_cert_file"));
        let usable = ssl == "on" && std::fs::read(&cert).is_ok();
        if !usable {
            assert!(
                std::env::var("ORDERTRAIL_REQUIRE_POSTGRES").is_err(),
                "the TLS tests need the database to speak TLS with a certificate readable here (ssl = {ssl}, \
                 ssl_cert_file = {})",
                cert.display()
            );
            println!("skipped: the database does not speak TLS with a readable certificate (ssl = {ssl})");
            return None;
        }
        Some(cert)
    }

    fn verified(ca_file: &Path, server_name: Option<&str>) -> PostgresTls {
        PostgresTls::Required(TlsConfig {
            ca_file: Some(ca_file.to_path_buf()),
            cert_file: None,
            key_file: None,
            server_name_override: server_name.map(str::to_string),
        })
    }

    /// `config` with `host=…` in its connection string changed to `host`, and `tls`.
    fn at(config: &PostgresConfig, dir: &Path, host: &str, tls: PostgresTls) -> PostgresConfig {
        let PostgresUrl::File(file) = &config.url else { unreachable!() };
        let url = std::fs::read_to_string(file).unwrap().replace("host=127.0.0.1", &format!("host={host}"));
        let file = dir.join(format!("url-{host}"));
        std::fs::write(&file, url).unwrap();
        PostgresConfig { url: PostgresUrl::File(file), tls, ..config.clone() }
    }

    fn refused(config: &PostgresConfig) -> String {
        PostgresStore::open(config, Durability::Durable, 3).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn the_server_is_verified_against_the_given_ca_and_for_its_name_and_the_connection_is_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let Some(config) = database(dir.path(), "tls") else { return };
        let schema = format!("ot_tls_{}", std::process::id());
        let Some(server_cert) = server_certificate(&schema) else { return };

        // By its name, trusting its certificate: encrypted, and the store works over it.
        let named = at(&config, dir.path(), "localhost", verified(&server_cert, None));
        let mut store = open(&named);
        assert!(encrypted(&schema, &store), "the replica's connection is TLS");
        store.commit(&StateChanges { orders: vec![write("SO-TLS", Some(5), 1)], ..Default::default() }, &[]).unwrap();
        assert_eq!(store.order("SO-TLS").unwrap().unwrap().span_count, 1);
        drop(store);

        // By address: the certificate names `localhost`, not 127.0.0.1, so only the override lets it through.
        let by_address = at(&config, dir.path(), "127.0.0.1", verified(&server_cert, None));
        let err = refused(&by_address);
        assert!(err.contains("storage.postgres") && err.contains("not valid for name \"127.0.0.1\""), "{err}");
        let overridden = at(&config, dir.path(), "127.0.0.1", verified(&server_cert, Some("localhost")));
        let store = open(&overridden);
        assert!(encrypted(&schema, &store));
        drop(store);

        // A CA that did not sign the server's certificate: refused, whatever the server says next.
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let other_ca = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        let other_ca_file = dir.path().join("other-ca.pem");
        std::fs::write(&other_ca_file, other_ca.pem()).unwrap();
        let err = refused(&at(&config, dir.path(), "localhost", verified(&other_ca_file, None)));
        assert!(err.contains("storage.postgres") && err.contains("invalid peer certificate: UnknownIssuer"), "{err}");

        // Without a `tls` section and without sslmode=require, the connection stays as it was: plain text.
        let store = open(&config);
        assert!(!encrypted(&schema, &store), "no tls section, no sslmode: plain text as before");
    }

    #[test]
    fn a_server_that_does_not_offer_tls_is_refused_when_tls_is_configured() {
        // A server that answers the TLS request with `N`, as PostgreSQL with `ssl = off` does; a downgrade by
        // someone in the path looks the same.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answering = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut connection, _) = listener.accept().unwrap();
            let mut request = [0u8; 8];
            connection.read_exact(&mut request).unwrap();
            connection.write_all(b"N").unwrap();
            request
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, format!("host=127.0.0.1 port={port} user=postgres dbname=test connect_timeout=3"))
            .unwrap();
        let ca = dir.path().join("ca.pem");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()).unwrap();
        let config = PostgresConfig {
            url: PostgresUrl::File(file),
            pool_size: 1,
            statement_timeout: Duration::from_secs(5),
            tls: verified(&ca, None),
        };
        let err = refused(&config);
        assert!(err.contains("storage.postgres") && err.contains("server does not support TLS"), "{err}");
        // What the client sent first was PostgreSQL's SSLRequest (length 8, code 80877103), not a startup message.
        let request = answering.join().unwrap();
        assert_eq!(request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    }
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

mod replicas {
    //! Three ordertrail processes on one database, fed the way a gateway collector routing by trace id feeds them,
    //! one of them killed with SIGKILL mid-stream and not restarted.

    use super::*;
    use crate::common::binary::{spawn, wait_ready, Ports, Server};
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue as Kv};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::collections::{HashMap, HashSet};

    const ORDERS: usize = 90;

    fn kv(key: &str, value: &str) -> Kv {
        Kv {
            key: key.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    /// One technical trace's request: `spans` as (span id, name, attributes, start offset in ms).
    struct Request {
        order: usize,
        trace: Vec<u8>,
        service: &'static str,
        spans: Vec<(u64, &'static str, Vec<Kv>, u64)>,
    }

    impl Request {
        fn encode(&self, t0: u64) -> ExportTraceServiceRequest {
            let spans = self
                .spans
                .iter()
                .map(|(id, name, attributes, offset_ms)| Span {
                    trace_id: self.trace.clone(),
                    span_id: id.to_be_bytes().to_vec(),
                    name: (*name).into(),
                    start_time_unix_nano: t0 + offset_ms * 1_000_000,
                    end_time_unix_nano: t0 + offset_ms * 1_000_000 + 1_000_000,
                    attributes: attributes.clone(),
                    ..Default::default()
                })
                .collect();
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", self.service)],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                    schema_url: String::new(),
                }],
            }
        }
    }

    fn trace_id(order: usize, system: u8) -> Vec<u8> {
        let mut id = vec![0xC0, system];
        id.extend_from_slice(&(order as u64).to_be_bytes());
        // The last byte routes, as the gateway's hash of the trace id would.
        id.extend_from_slice(&[1, 2, 3, 4, 5, u8::try_from((order * 7 + usize::from(system) * 3) % 251).unwrap()]);
        id
    }

    fn span_id(order: usize, n: u64) -> u64 {
        (0xD0 << 56) | ((order as u64) << 8) | n
    }

    /// Each order: its capture in the ERP's trace; in the warehouse's trace its release (even orders: the SLA
    /// `quick` is met) or only its packing (odd orders: the release never comes and `quick` breaches), either
    /// teaching the shipment alias; in the carrier's trace, first an unkeyed child that waits for its trace, then
    /// the shipment confirmation that names only the shipment, found through the alias another replica learned.
    fn requests() -> Vec<Vec<Request>> {
        let mut first = Vec::new();
        let mut second = Vec::new();
        let mut third = Vec::new();
        for order in 0..ORDERS {
            let key = format!("SO-REP-{order}");
            let shipment = format!("SH-REP-{order}");
            first.push(Request {
                order,
                trace: trace_id(order, 1),
                service: "erp",
                spans: vec![(span_id(order, 1), "order.create", vec![kv("order.id", &key)], 0)],
            });
            let warehouse = if order % 2 == 0 { "wave.release" } else { "pack.confirm" };
            first.push(Request {
                order,
                trace: trace_id(order, 2),
                service: "wms",
                spans: vec![(
                    span_id(order, 2),
                    warehouse,
                    vec![kv("order.id", &key), kv("shipment.id", &shipment)],
                    100,
                )],
            });
            second.push(Request {
                order,
                trace: trace_id(order, 3),
                service: "tms",
                spans: vec![(span_id(order, 3), "http.post", vec![kv("http.route", "/carrier/status")], 300)],
            });
            third.push(Request {
                order,
                trace: trace_id(order, 3),
                service: "tms",
                spans: vec![(span_id(order, 4), "shipment.confirm", vec![kv("shipment.id", &shipment)], 200)],
            });
        }
        vec![first, second, third]
    }

    /// Where the gateway sends a trace among the live replicas.
    fn route(trace: &[u8], live: &[u16]) -> u16 {
        live[usize::from(trace[15]) % live.len()]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_replicas_share_orders_and_a_killed_one_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let Some(postgres) = database(dir.path(), "replicas") else { return };
        let PostgresUrl::File(url_file) = &postgres.url else { unreachable!() };
        // The backend is down until after the kill: what the killed replica queued is all still in the database,
        // and anything that reaches the backend twice was emitted twice.
        let sink_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let config = dir.path().join("ordertrail.yaml");
        std::fs::write(
            &config,
            format!(
                "correlation:\n  inherit_wait: 3s\nsla:\n  detection_delay: 1s\n  targets:\n    - name: quick\n      \
                 from: order_capture\n      to: pick_release\n      within: 3s\nstorage:\n  postgres:\n    url_file: {}\n\
                 exporters:\n  otlp:\n    endpoint: http://127.0.0.1:1\n    retry_on_failure:\n      initial_interval: 100ms\n      \
                 max_interval: 500ms\n",
                url_file.display()
            ),
        )
        .unwrap();
        let mut replicas: Vec<(Option<Server>, Ports)> = Vec::new();
        for n in 0..3 {
            let (server, ports) = spawn(&config, &dir.path().join(format!("data-{n}")), Ports::ANY, sink_addr);
            wait_ready(ports.api_http).await;
            replicas.push((Some(server), ports));
        }
        let mut live: Vec<u16> = replicas.iter().map(|(_, p)| p.grpc).collect();
        let killed_port = live[2];
        let t0 = u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
            .unwrap();

        let mut sent = 0usize;
        let mut acknowledged: HashMap<(Vec<u8>, Vec<u8>), usize> = HashMap::new();
        let mut crossed_aliases = 0;
        let mut clients: HashMap<u16, TraceServiceClient<tonic::transport::Channel>> = HashMap::new();
        let rounds = requests();
        // Mid-way through the carriers' unkeyed spans: the killed replica leaves spans waiting for their trace,
        // whose keyed span then goes to another replica.
        let kill_after = rounds[0].len() + rounds[1].len() / 2;
        let spans_sent: usize = rounds.iter().flatten().map(|r| r.spans.len()).sum();
        for round in &rounds {
            for request in round {
                if sent == kill_after {
                    // SIGKILL: no shutdown code runs; the gateway's resolver then drops it from the ring.
                    let mut server = replicas[2].0.take().unwrap();
                    server.0.kill().unwrap();
                    server.0.wait().unwrap();
                    live.retain(|p| *p != killed_port);
                    clients.remove(&killed_port);
                }
                sent += 1;
                if request.service == "tms" && request.spans[0].1 == "shipment.confirm" {
                    let taught = route(&trace_id(request.order, 2), &live);
                    crossed_aliases += usize::from(taught != route(&request.trace, &live));
                }
                let encoded = request.encode(t0);
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 50, "request for order {} never acknowledged", request.order);
                    let port = route(&request.trace, &live);
                    let client = match clients.get(&port) {
                        Some(c) => c.clone(),
                        None => match TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
                            Ok(c) => clients.entry(port).or_insert(c).clone(),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    };
                    match client.clone().export(encoded.clone()).await {
                        Ok(_) => {
                            for (id, ..) in &request.spans {
                                acknowledged.insert((request.trace.clone(), id.to_be_bytes().to_vec()), request.order);
                            }
                            break;
                        }
                        Err(status) => {
                            assert!(
                                matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
                                "unexpected status {status:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            // Systems flush a moment apart.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(crossed_aliases > 0, "some aliases were taught on one replica and used on another");

        // The backend comes up; the live replicas send their queues and the killed one's.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sink = Sink::start_at(sink_addr).await;
        let order_of = |order: usize| trace_of(&format!("SO-REP-{order}"));
        let found = |spans: &[Received]| {
            let mut linked: HashSet<(Vec<u8>, Vec<u8>, Vec<u8>)> = HashSet::new();
            for r in spans {
                for link in &r.span.links {
                    linked.insert((r.span.trace_id.clone(), link.trace_id.clone(), link.span_id.clone()));
                }
            }
            acknowledged.iter().filter(|((t, s), o)| linked.contains(&(order_of(**o), t.clone(), s.clone()))).count()
        };
        let breaches = |spans: &[Received]| spans.iter().filter(|r| r.span.name == "pick_release overdue").count();
        sink.wait_for(
            Duration::from_secs(60),
            "every acknowledged span in its order trace, and the breaches",
            |spans| found(spans) == acknowledged.len() && breaches(spans) >= ORDERS / 2,
        )
        .await;
        // Anything still to come would be a duplicate.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let spans = sink.snapshot();
        let mut deliveries: HashMap<(Vec<u8>, Vec<u8>), usize> = HashMap::new();
        for r in &spans {
            *deliveries.entry((r.span.trace_id.clone(), r.span.span_id.clone())).or_default() += 1;
        }
        let duplicated = deliveries.values().filter(|n| **n > 1).count();
        println!(
            "replicas kill test: sent {} spans in {sent} requests, acknowledged {}, found in their order traces {}, \
             span ids delivered more than once {duplicated}, aliases used on another replica than taught {crossed_aliases}",
            spans_sent,
            acknowledged.len(),
            found(&spans),
        );
        let milestones = ["order_capture", "pick_release", "shipment_confirmation"];
        for order in 0..ORDERS {
            let trace = order_of(order);
            let named = |name: &str| spans.iter().filter(|r| r.span.trace_id == trace && r.span.name == name).count();
            for milestone in milestones {
                let expected = usize::from(milestone != "pick_release" || order % 2 == 0);
                assert_eq!(named(milestone), expected, "milestone span {milestone} of SO-REP-{order}");
            }
            assert_eq!(named("pick_release overdue"), order % 2, "breaches of SO-REP-{order}, each emitted once");
        }
        assert_eq!(duplicated, 0, "no span was emitted twice");
        let (mut adopted, mut conflicts) = (0.0, 0.0);
        for (_, ports) in replicas.iter().filter(|(server, _)| server.is_some()) {
            let url = format!("http://127.0.0.1:{}/metrics", ports.api_http);
            let text = reqwest::get(url).await.unwrap().text().await.unwrap();
            adopted += metric_value(&text, "ordertrail_replicas_adopted_total").unwrap_or(0.0);
            conflicts += metric_value(&text, "ordertrail_store_conflicts_total").unwrap_or(0.0);
        }
        println!("replicas kill test: commits done again after a conflict on the live replicas {conflicts}");
        assert_eq!(adopted, 1.0, "the killed replica was taken over once");
    }

    fn metric_value(text: &str, name: &str) -> Option<f64> {
        text.lines().find(|l| l.starts_with(name) && !l.starts_with('#'))?.rsplit(' ').next()?.parse().ok()
    }
}
