//! Memory bounds, eviction, and what the store keeps across restarts.

use super::*;
#[test]
fn an_order_with_uncommitted_changes_is_not_evicted() {
    let yaml = DEFAULT_CONFIG_YAML.replace("  inherit_wait: 10s", "  inherit_wait: 10s\n  max_orders: 2");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "test.yaml").unwrap()), vec![], vec![]);
    // SO-A closes (invoiced) and, in the same group, two new orders arrive: without the guard SO-A would be
    // evicted before its closed record is taken for the commit.
    process(
        &mut engine,
        vec![
            milestone("finance", "invoice.post", "SO-A", T0),
            milestone("erp", "order.create", "SO-B", T0),
            milestone("erp", "order.create", "SO-C", T0),
        ],
        T0,
    );
    // SO-A closes when its invoicing settles.
    settle(&mut engine, T0);
    let changes = engine.take_changes();
    let closed_a = changes.orders.iter().find(|o| o.record.key == "SO-A").expect("SO-A's final state is committed");
    assert!(closed_a.record.is_closed());
    assert_eq!(closed_a.wake_unix_nanos, None, "a closed order needs no wake");
    assert_eq!(engine.stats().orders_refused, 1, "SO-C waits for room instead");
    // Once committed, SO-A may make room.
    process(&mut engine, vec![milestone("erp", "order.create", "SO-D", T0)], T0);
    assert!(engine.order("SO-A").is_none());
    assert!(engine.order("SO-D").is_some());
}

#[test]
fn a_remembered_technical_trace_survives_a_restart_and_is_forgotten_in_the_store_when_it_expires() {
    let config = Arc::new(default_config());
    let mut first = Engine::new(config.clone(), vec![], vec![]);
    // Trace 5 is tied to SO-T by its keyed span; an unkeyed span of trace 6 waits for its keyed one.
    process(&mut first, vec![spec("wms", "pick.confirm", 5, 1).attr("order.id", "SO-T")], T0);
    process(&mut first, vec![spec("wms", "db.query", 6, 2)], T0);
    let changes = first.take_changes();
    let stored = |rows: Vec<(Vec<u8>, Option<Vec<u8>>)>| -> Vec<(Vec<u8>, Vec<u8>)> {
        rows.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
    };
    let traces = stored(changes.traces);
    assert_eq!(traces.len(), 1);
    let pending = stored(changes.pending);
    assert_eq!(pending.len(), 1);

    // After the restart, a late unkeyed span of trace 5 joins SO-T at once instead of waiting and passing on.
    let mut second = Engine::new(config.clone(), records(changes.orders), vec![]);
    second.restore_traces(traces.clone(), T0 + SECOND);
    let mut out = Output::default();
    second.restore_pending(pending, T0 + SECOND, &mut out);
    let (spans, _) = process(&mut second, vec![spec("wms", "db.query", 5, 3)], T0 + SECOND);
    assert_eq!(in_order_trace(&spans, "SO-T").len(), 1, "the late span joined its order");
    assert_eq!(second.stats().spans_inherited, 1);
    assert_eq!(second.pending_spans(), 1, "trace 6 is still unknown, so its span waits again");

    // Ten minutes later (`trace_memory`) the trace is forgotten, and the store is told to forget it too.
    let mut out = Output::default();
    second.tick(T0 + 11 * 60 * SECOND, &mut out);
    let changes = second.take_changes();
    assert!(changes.traces.iter().any(|(k, v)| k == &vec![5u8; 16] && v.is_none()), "{:?}", changes.traces);

    // A restart after expiry drops the stale row instead of reviving it.
    let mut third = Engine::new(config, vec![], vec![]);
    third.restore_traces(traces, T0 + 11 * 60 * SECOND);
    let changes = third.take_changes();
    assert_eq!(changes.traces, vec![(vec![5u8; 16], None)]);
}

#[test]
fn correlation_coverage_is_counted_per_route_and_bounded() {
    let yaml = DEFAULT_CONFIG_YAML.replace("    max_coverage_routes: 500", "    max_coverage_routes: 3");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "test.yaml").unwrap()), vec![], vec![]);
    let spans = vec![
        spec("erp", "credit.check", 1, 1).attr("order.id", "SO-1"),
        spec("erp", "credit.check", 2, 2).attr("order.id", "SO-2"),
        spec("wms", "GET /stock", 3, 3).attr("http.route", "/stock/{sku}"),
        spec("tms", "carrier.poll", 4, 4),
    ];
    process(&mut engine, spans, T0);
    tick(&mut engine, T0 + 10 * SECOND);
    let coverage = &engine.stats().coverage;
    let get = |service: &str, route: &str| coverage.get(&(service.to_string(), route.to_string())).copied();
    assert_eq!(get("erp", "unknown"), Some(Coverage { correlated: 2, uncorrelated: 0 }));
    assert_eq!(get("wms", "/stock/{sku}"), Some(Coverage { correlated: 0, uncorrelated: 1 }), "{coverage:?}");
    assert_eq!(
        get("other", "other"),
        Some(Coverage { correlated: 0, uncorrelated: 1 }),
        "the third route is over the bound"
    );
    assert_eq!(coverage.len(), 3);
}

#[test]
fn a_span_name_never_becomes_a_route_label_unless_configured() {
    let names = ["approval from anna.berg@example.com", "charge card 4111 1111 1111 1111"];
    let spans = || {
        vec![
            spec("erp", names[0], 1, 1).attr("order.id", "SO-1"),
            spec("finance", names[1], 2, 2),
            spec("edi", "Export", 3, 3).attr("rpc.method", "Export"),
        ]
    };
    let mut engine = Engine::new(Arc::new(parse(DEFAULT_CONFIG_YAML, "test.yaml").unwrap()), vec![], vec![]);
    process(&mut engine, spans(), T0);
    tick(&mut engine, T0 + 10 * SECOND);
    let routes: Vec<String> = engine.stats().coverage.keys().map(|(_, route)| route.clone()).collect();
    assert!(routes.iter().all(|r| r == "unknown" || r == "Export"), "{routes:?}");
    assert!(routes.iter().any(|r| r == "Export"), "rpc.method is a route: {routes:?}");

    let yaml = DEFAULT_CONFIG_YAML.replace("route_from_span_name: false", "route_from_span_name: true");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "test.yaml").unwrap()), vec![], vec![]);
    process(&mut engine, spans(), T0);
    tick(&mut engine, T0 + 10 * SECOND);
    let routes: Vec<String> = engine.stats().coverage.keys().map(|(_, route)| route.clone()).collect();
    assert!(routes.iter().any(|r| r == names[0]), "configured to use span names: {routes:?}");
}

/// A stand-in for the service's store: order records and the index of their wakes, filled by `commit` as the
/// service's commit fills the real one.
#[derive(Default)]
struct TestStore {
    orders: HashMap<String, OrderRecord>,
    wake_of: HashMap<String, u64>,
    wakes: std::collections::BTreeSet<(u64, String)>,
}

type SharedTestStore = Arc<std::sync::Mutex<TestStore>>;

/// An engine holding at most `max_orders` orders in memory, whose evicted orders are read back from `store`.
fn hot_set_engine(max_orders: usize) -> (Engine, SharedTestStore) {
    let mut config = default_config();
    config.correlation.max_orders = max_orders;
    let mut engine = Engine::new(Arc::new(config), vec![], vec![]);
    let store = SharedTestStore::default();
    let reader = store.clone();
    engine.set_order_loader(Box::new(move |key| Ok(reader.lock().unwrap().orders.get(key).cloned())), false);
    (engine, store)
}

fn commit(engine: &mut Engine, store: &std::sync::Mutex<TestStore>) {
    let mut store = store.lock().unwrap();
    for write in engine.take_changes().orders {
        let key = write.record.key.clone();
        if let Some(old) = store.wake_of.remove(&key) {
            store.wakes.remove(&(old, key.clone()));
        }
        if let Some(wake) = write.wake_unix_nanos {
            store.wake_of.insert(key.clone(), wake);
            store.wakes.insert((wake, key.clone()));
        }
        store.orders.insert(key, write.record);
    }
}

/// Captures orders `SO-<n>` for each `n` in `numbers`, a second apart, each settled and committed on its own.
fn capture_orders(engine: &mut Engine, store: &std::sync::Mutex<TestStore>, numbers: std::ops::Range<u64>) {
    for n in numbers {
        let key = format!("SO-{n}");
        process(engine, vec![milestone("erp", "order.create", &key, T0 + n * SECOND)], T0 + n * SECOND);
        settle(engine, T0 + n * SECOND);
        commit(engine, store);
    }
}

/// A tick as the service runs it: first the orders not in memory whose wake has passed are read back.
fn tick_waking(
    engine: &mut Engine,
    store: &std::sync::Mutex<TestStore>,
    now: u64,
) -> (Vec<(String, Span)>, Vec<events::Event>) {
    let mut out = Output::default();
    if engine.has_cold_orders() {
        let due: Vec<String> = store
            .lock()
            .unwrap()
            .wakes
            .iter()
            .take_while(|(wake, _)| *wake <= now)
            .map(|(_, key)| key.clone())
            .filter(|key| !engine.is_hot(key))
            .collect();
        engine.wake_orders(&due, now, &mut out);
    }
    engine.tick(now, &mut out);
    let events = std::mem::take(&mut out.events);
    (collect(out), events)
}

#[test]
fn open_orders_beyond_the_hot_set_are_evicted_and_read_back_whole_when_named_again() {
    let (mut engine, store) = hot_set_engine(8);
    for n in 0..100u64 {
        let key = format!("SO-{n}");
        process(&mut engine, vec![milestone("erp", "order.create", &key, T0 + n * SECOND)], T0 + n * SECOND);
        settle(&mut engine, T0 + n * SECOND);
        commit(&mut engine, &store);
        assert!(engine.orders().count() <= 8, "the hot set stays within max_orders");
    }
    assert_eq!(engine.stats().orders_refused, 0, "no order is turned away for want of memory");
    assert!(engine.stats().orders_evicted >= 92);
    assert!(engine.order("SO-0").is_none(), "the first order was evicted");

    // A later span of the first order finds its whole record: the same order, one more span, the milestone span
    // not emitted a second time.
    let later = T0 + 200 * SECOND;
    let out = run_settled(&mut engine, vec![milestone("erp", "order.create", "SO-0", T0 + 150 * SECOND)], later);
    let order = engine.order("SO-0").expect("read back");
    assert_eq!(order.span_count, 2);
    assert!(order.milestone("order_capture").unwrap().span_emitted);
    assert_eq!(out.iter().filter(|(_, s)| s.name == "order_capture").count(), 0, "{out:?}");
    assert_eq!(engine.stats().orders_loaded, 1);
    assert_eq!(engine.stats().orders_created, 100, "not created a second time");
}

#[test]
fn an_evicted_order_still_breaches_its_deadline() {
    let (mut engine, store) = hot_set_engine(4);
    process(&mut engine, vec![milestone("erp", "order.create", "SO-LATE", T0)], T0);
    settle(&mut engine, T0);
    commit(&mut engine, &store);
    capture_orders(&mut engine, &store, 1..50);
    assert!(engine.order("SO-LATE").is_none(), "evicted");
    // order_release (order_capture → pick_release within 4h) runs out with no pick release for any order.
    let (_, events) = tick_waking(&mut engine, &store, T0 + 5 * 3600 * SECOND);
    let late: Vec<_> =
        events.iter().filter(|e| matches!(e, events::Event::SlaBreached { order, .. } if order == "SO-LATE")).collect();
    assert_eq!(late.len(), 1, "the evicted order's clock breached once");
    assert!(engine.order("SO-LATE").is_some_and(|o| o.slas.iter().any(|s| s.breached_at_unix_nanos.is_some())));
}

#[test]
fn an_order_the_store_cannot_read_back_is_not_replaced_by_a_blank_one() {
    let mut config = default_config();
    config.correlation.max_orders = 4;
    let mut engine = Engine::new(Arc::new(config), vec![], vec![]);
    let store = SharedTestStore::default();
    let reader = store.clone();
    // The store fails for SO-0 (a damaged record, a read error), and answers for every other order.
    engine.set_order_loader(
        Box::new(move |key| {
            if key == "SO-0" {
                Err("damaged record".to_string())
            } else {
                Ok(reader.lock().unwrap().orders.get(key).cloned())
            }
        }),
        false,
    );
    capture_orders(&mut engine, &store, 0..20);
    assert!(engine.order("SO-0").is_none());
    let refused = engine.stats().orders_refused;
    process(&mut engine, vec![milestone("erp", "order.create", "SO-0", T0 + 30 * SECOND)], T0 + 30 * SECOND);
    assert_eq!(engine.stats().orders_refused, refused + 1, "its span is turned away");
    assert!(engine.order("SO-0").is_none(), "no blank record takes its place");
    assert!(engine.take_changes().orders.iter().all(|o| o.record.key != "SO-0"), "nothing overwrites it in the store");
    assert_eq!(store.lock().unwrap().orders["SO-0"].span_count, 1);
}

#[test]
fn clocks_and_settling_milestones_are_held_in_memory_for_the_hot_set_only() {
    let (mut engine, store) = hot_set_engine(8);
    capture_orders(&mut engine, &store, 0..200);
    tick_waking(&mut engine, &store, T0 + 201 * SECOND);
    let stats = engine.stats();
    // Each order runs the clocks that start at order capture; only those of the orders in memory are indexed.
    let per_order = default_config().sla.targets.iter().filter(|t| t.from == 0).count() as u64;
    assert!(per_order > 0);
    assert!(stats.pending_deadlines <= 8 * per_order, "{} clocks indexed", stats.pending_deadlines);
    assert_eq!(store.lock().unwrap().wakes.len(), 200, "every open order has its wake in the store");
}

#[test]
fn every_evicted_order_breaches_once_when_its_wake_passes() {
    let (mut engine, store) = hot_set_engine(8);
    capture_orders(&mut engine, &store, 0..100);
    // Five hours on, order_release (4 h) has run out for every order; memory holds 8 at a time, so the rest are
    // read back over the following ticks, each once the orders before them are committed.
    let mut breached: Vec<String> = Vec::new();
    for t in 0..200u64 {
        let (_, events) = tick_waking(&mut engine, &store, T0 + 5 * 3600 * SECOND + t * SECOND / 10);
        commit(&mut engine, &store);
        for e in events {
            if let events::Event::SlaBreached { order, target, .. } = e {
                if target == order_release() {
                    breached.push(order);
                }
            }
        }
    }
    breached.sort();
    let mut expected: Vec<String> = (0..100).map(|n| format!("SO-{n}")).collect();
    expected.sort();
    assert_eq!(breached, expected, "each order's clock breached exactly once");
    assert!(engine.stats().orders_woken >= 92);
    assert!(engine.orders().count() <= 8, "the hot set stays within max_orders while waking");
}

#[test]
fn orders_not_loaded_at_startup_still_breach() {
    let (mut first, store) = hot_set_engine(1_000);
    for n in 0..50u64 {
        let key = format!("SO-{n}");
        process(&mut first, vec![milestone("erp", "order.create", &key, T0 + n * SECOND)], T0 + n * SECOND);
    }
    settle(&mut first, T0 + 50 * SECOND);
    commit(&mut first, &store);
    // The restart loads 10 orders, as the service's store does at most `max_orders`; the rest stay in the store.
    let mut config = default_config();
    config.correlation.max_orders = 10;
    let loaded: Vec<OrderRecord> = store.lock().unwrap().orders.values().take(10).cloned().collect();
    let mut second = Engine::new(Arc::new(config), loaded, vec![]);
    let reader = store.clone();
    second.set_order_loader(Box::new(move |key| Ok(reader.lock().unwrap().orders.get(key).cloned())), true);
    let mut breached = HashSet::new();
    // Ticks every 100 ms for 20 s: nothing is judged for the detection delay (10 s) after startup.
    for t in 0..200u64 {
        let (_, events) = tick_waking(&mut second, &store, T0 + 5 * 3600 * SECOND + t * SECOND / 10);
        commit(&mut second, &store);
        for e in events {
            if let events::Event::SlaBreached { order, target, .. } = e {
                assert!(breached.insert((order, target)), "no clock breaches twice");
            }
        }
    }
    let orders: HashSet<&str> =
        breached.iter().filter(|(_, t)| *t == order_release()).map(|(o, _)| o.as_str()).collect();
    assert_eq!(orders.len(), 50, "the clocks of all 50 orders breached, loaded at startup or not");
}

#[test]
fn a_stale_wake_is_corrected_when_the_order_is_woken_early() {
    let (mut engine, store) = hot_set_engine(4);
    capture_orders(&mut engine, &store, 0..20);
    assert!(engine.order("SO-0").is_none());
    // An earlier version wrote no wakes; the store then wakes its orders at once.
    {
        let mut s = store.lock().unwrap();
        let right = s.wake_of["SO-0"];
        s.wakes.remove(&(right, "SO-0".to_string()));
        s.wakes.insert((0, "SO-0".to_string()));
        s.wake_of.insert("SO-0".to_string(), 0);
    }
    let now = T0 + 30 * SECOND;
    tick_waking(&mut engine, &store, now);
    assert_eq!(engine.stats().orders_woken, 1);
    commit(&mut engine, &store);
    let wake = store.lock().unwrap().wake_of["SO-0"];
    assert!(wake > now, "written again with the wake of its running clocks");
    let config = default_config();
    let first_check = store.lock().unwrap().orders["SO-0"]
        .slas
        .iter()
        .map(|s| config.sla.risk_point(s.started_at_unix_nanos, s.deadline_unix_nanos))
        .min()
        .unwrap();
    assert!(wake >= first_check, "no sooner than its first check, a clock's risk point");
}

fn order_release() -> usize {
    default_config().sla.targets.iter().position(|t| t.name == "order_release").expect("a default target")
}

#[test]
fn an_evicted_order_closes_for_idleness_when_its_wake_passes() {
    let (mut engine, store) = hot_set_engine(4);
    capture_orders(&mut engine, &store, 0..20);
    assert!(engine.order("SO-0").is_none(), "evicted");
    // A week and a day later (idle_close_after: 7 days) every order is idle; SO-0 is read back and closed at once.
    let later = T0 + 8 * 24 * 3600 * SECOND;
    let mut closed = HashSet::new();
    for t in 0..20u64 {
        let (_, events) = tick_waking(&mut engine, &store, later + t * SECOND / 10);
        commit(&mut engine, &store);
        for e in events {
            if let events::Event::OrderClosed { order, reason, .. } = e {
                assert_eq!(reason, "idle");
                assert!(closed.insert(order), "closed once");
            }
        }
    }
    assert_eq!(closed.len(), 20, "every order closed for idleness, evicted or not");
    let s = store.lock().unwrap();
    assert!(s.orders.values().all(OrderRecord::is_closed));
    assert!(s.wakes.is_empty(), "a closed order leaves the index of wakes");
}

#[test]
fn a_clock_of_a_target_no_longer_configured_does_not_keep_an_order_waking() {
    let (mut engine, store) = hot_set_engine(1_000);
    capture_orders(&mut engine, &store, 0..1);
    let mut config = default_config();
    config.sla.targets.retain(|t| t.name != "order_release");
    let restarted = Engine::new(Arc::new(config), store.lock().unwrap().orders.values().cloned().collect(), vec![]);
    let order = restarted.order("SO-0").unwrap();
    let wake = restarted.wake_of(order).unwrap();
    let release = order.sla("order_release").expect("still recorded").deadline_unix_nanos;
    assert!(wake > release, "the removed target's deadline is not the wake");
}
