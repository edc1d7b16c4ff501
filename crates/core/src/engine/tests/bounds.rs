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
    let closed_a = changes.orders.iter().find(|o| o.key == "SO-A").expect("SO-A's final state is committed");
    assert!(closed_a.is_closed());
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
    let mut second = Engine::new(config.clone(), changes.orders, vec![]);
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
