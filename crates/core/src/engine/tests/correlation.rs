//! Finding a span's orders, labelling it, and the spans emitted into order traces.

use super::*;
#[test]
fn keyed_span_is_reemitted_under_its_milestone_with_links_both_ways() {
    let mut engine = engine();
    let out = run_settled(
        &mut engine,
        vec![spec("erp", "credit.check", 1, 1).attr("order.id", "SO-1").attr("credit.decision", "approved")],
        T0,
    );
    let order_spans = in_order_trace(&out, "SO-1");
    let correlated = order_spans.iter().find(|s| s.name == "credit.check").expect("re-emitted span");
    assert_eq!(correlated.parent_span_id, ids::milestone_span_id("SO-1", "credit_approval"));
    assert_eq!(attr(correlated, "order.milestone").as_deref(), Some("credit_approval"));
    assert_eq!(attr(correlated, "order.milestone.reached").as_deref(), Some("true"));
    assert_eq!(correlated.links[0].trace_id, vec![1; 16]);
    assert_eq!(correlated.links[0].span_id, vec![1; 8]);
    // The milestone span is emitted once the reach has settled; its service is ordertrail.
    let milestone = out.iter().find(|(_, s)| s.name == "credit_approval").expect("milestone span");
    assert_eq!(milestone.0, "ordertrail");
    assert_eq!(milestone.1.parent_span_id, ids::root_span_id("SO-1"));
    // The original keeps its ids and links to the order trace's root.
    let original = out.iter().find(|(_, s)| s.trace_id == vec![1; 16]).expect("enriched original");
    assert_eq!(original.0, "erp");
    assert_eq!(original.1.links[0].trace_id, ids::order_trace_id("SO-1"));
    assert_eq!(original.1.links[0].span_id, ids::root_span_id("SO-1"));
    assert_eq!(attr(&original.1, "order.id").as_deref(), Some("SO-1"));
    // The root is out from the first span on, so the open order's trace is whole; it is not closed yet.
    let roots: Vec<_> = out.iter().filter(|(_, s)| s.name == "order SO-1").collect();
    assert_eq!(roots.len(), 1);
    assert!(roots[0].1.parent_span_id.is_empty());
    assert_eq!(roots[0].1.span_id, ids::root_span_id("SO-1"));
    assert!(out.iter().all(|(_, s)| s.name != "order SO-1 closed"));
    assert_eq!(engine.stats().spans_correlated, 1);
}

#[test]
fn blocked_credit_works_on_milestone_and_later_release_reaches_it() {
    let mut engine = engine();
    let out = run(
        &mut engine,
        vec![spec("erp", "credit.check", 1, 1).attr("order.id", "SO-1").attr("credit.decision", "blocked")],
        T0,
    );
    let span = in_order_trace(&out, "SO-1")[0];
    assert_eq!(attr(span, "order.milestone").as_deref(), Some("credit_approval"));
    assert_eq!(attr(span, "order.milestone.reached").as_deref(), Some("false"));
    assert_eq!(attr(span, "order.exception.class").as_deref(), Some("policy"));
    assert_eq!(attr(span, "order.exception.owner").as_deref(), Some("commercial-controls"));
    assert!(out.iter().all(|(_, s)| s.name != "credit_approval"), "not reached yet, so no milestone span");
    let order = engine.order("SO-1").unwrap();
    assert_eq!(order.open_exceptions().count(), 1);

    let out = run_settled(
        &mut engine,
        vec![spec("erp", "credit.check", 2, 2).attr("order.id", "SO-1").attr("credit.decision", "approved")],
        T0 + SECOND,
    );
    assert!(out.iter().any(|(_, s)| s.name == "credit_approval"));
    let order = engine.order("SO-1").unwrap();
    assert!(order.milestone("credit_approval").unwrap().reached.is_some());
    let credit_holds = order.open_exceptions().filter(|e| e.milestone.as_deref() == Some("credit_approval"));
    assert_eq!(credit_holds.filter(|e| e.class != "policy" || e.signature == "credit-hold").count(), 0);
    // No order capture was seen, so the approval is out of order; that finding stays open.
    assert_eq!(
        order.open_exceptions().map(|e| e.signature.as_str()).collect::<Vec<_>>(),
        ["conformance:credit_approval"]
    );
}

#[test]
fn aliases_are_learned_and_chained() {
    let mut engine = engine();
    run(&mut engine, vec![spec("wms", "pack.confirm", 1, 1).attr("order.id", "SO-1").attr("delivery.id", "DL-1")], T0);
    // Only the delivery: joins through the alias and teaches the shipment.
    let out = run(
        &mut engine,
        vec![spec("tms", "carrier.book", 2, 2).attr("delivery.id", "DL-1").attr("shipment.id", "SH-1")],
        T0,
    );
    assert_eq!(in_order_trace(&out, "SO-1").len(), 1);
    // Only the shipment.
    let out =
        run_settled(&mut engine, vec![spec("tms", "shipment.pickup.confirm", 3, 3).attr("shipment.id", "SH-1")], T0);
    let spans = in_order_trace(&out, "SO-1");
    assert!(spans.iter().any(|s| s.name == "shipment.pickup.confirm"));
    assert!(out.iter().any(|(_, s)| s.name == "shipment_confirmation"));
    let changes = engine.take_changes();
    let kinds: HashSet<_> = changes.aliases.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, HashSet::from(["delivery", "shipment"]));
}

#[test]
fn a_span_for_several_orders_belongs_to_each_order_trace() {
    let mut engine = engine();
    let ids = string_array("order.ids", &["SO-1", "SO-2"]);
    let out = run(&mut engine, vec![spec("finance", "invoice.batch.post", 1, 1).attr_kv(ids)], T0);
    assert_eq!(in_order_trace(&out, "SO-1").iter().filter(|s| s.name == "invoice.batch.post").count(), 1);
    assert_eq!(in_order_trace(&out, "SO-2").iter().filter(|s| s.name == "invoice.batch.post").count(), 1);
    // Each order's root is out from its first span; invoicing closes both once it has settled.
    assert!(out.iter().any(|(_, s)| s.name == "order SO-1"));
    assert!(out.iter().any(|(_, s)| s.name == "order SO-2"));
    let settled = settle(&mut engine, T0);
    assert!(settled.iter().any(|(_, s)| s.name == "order SO-1 closed"));
    assert!(settled.iter().any(|(_, s)| s.name == "order SO-2 closed"));
    let original = out.iter().find(|(_, s)| s.trace_id == vec![1; 16]).unwrap();
    assert_eq!(original.1.links.len(), 2);
}

#[test]
fn unkeyed_spans_inherit_from_their_trace_in_either_order() {
    let mut engine = engine();
    // The child arrives first and waits.
    let out = run(&mut engine, vec![spec("integration-middleware", "map ORDERS05 -> wms.order", 7, 2)], T0);
    assert!(out.is_empty());
    assert_eq!(engine.pending_spans(), 1);
    let out =
        run(&mut engine, vec![spec("erp", "publish orders.released", 7, 1).attr("order.id", "SO-1")], T0 + SECOND);
    let spans = in_order_trace(&out, "SO-1");
    assert!(spans.iter().any(|s| s.name == "map ORDERS05 -> wms.order"));
    assert_eq!(engine.pending_spans(), 0);
    // A later child joins at once.
    let out = run(&mut engine, vec![spec("integration-middleware", "process orders.released", 7, 3)], T0 + 2 * SECOND);
    assert_eq!(in_order_trace(&out, "SO-1").len(), 1);
    assert_eq!(engine.stats().spans_inherited, 2);
}

#[test]
fn spans_still_unkeyed_after_the_wait_pass_on_unchanged() {
    let mut engine = engine();
    let out = run(&mut engine, vec![spec("customer-portal", "GET /healthz", 9, 1)], T0);
    assert!(out.is_empty());
    let mut out = Output::default();
    engine.tick(T0 + 5 * SECOND, &mut out);
    assert!(out.is_empty(), "still within the 10 s wait");
    engine.tick(T0 + 11 * SECOND, &mut out);
    let spans = collect(out);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].1.trace_id, vec![9; 16]);
    assert!(spans[0].1.attributes.is_empty(), "passed on unchanged");
    assert_eq!(engine.stats().spans_uncorrelated, 1);
}

#[test]
fn the_wait_buffer_is_bounded_and_counts_overflow() {
    let yaml = DEFAULT_CONFIG_YAML.replace("inherit_wait: 10s", "inherit_wait: 10s\n  max_pending_spans: 2");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "t").unwrap()), vec![], vec![]);
    let out = run(&mut engine, (1..=3).map(|i| spec("x", "unkeyed", i, i)).collect(), T0);
    assert_eq!(out.len(), 1);
    assert_eq!(engine.pending_spans(), 2);
    assert_eq!(engine.stats().pending_overflow, 1);
    assert_eq!(engine.stats().spans_uncorrelated, 1);
}

#[test]
fn milestones_are_emitted_once_even_after_a_restart() {
    let mut engine = engine();
    let capture =
        || spec("customer-portal", "POST /api/orders", 1, 1).kind(SpanKind::Server).attr("app.order.id", "SO-1");
    let out = run_settled(&mut engine, vec![capture()], T0);
    assert_eq!(out.iter().filter(|(_, s)| s.name == "order_capture").count(), 1);
    let out = run_settled(&mut engine, vec![capture()], T0);
    assert_eq!(out.iter().filter(|(_, s)| s.name == "order_capture").count(), 0);

    let changes = engine.take_changes();
    let mut restarted = Engine::new(engine.config().clone(), records(changes.orders), changes.aliases);
    let out = run_settled(&mut restarted, vec![capture()], T0 + SECOND);
    assert_eq!(out.iter().filter(|(_, s)| s.name == "order_capture").count(), 0);
    assert!(out.iter().all(|(_, s)| s.name != "order SO-1"), "nor the root");
    // The trace continues: same order trace id, same parent.
    let spans = in_order_trace(&out, "SO-1");
    assert_eq!(spans[0].parent_span_id, ids::milestone_span_id("SO-1", "order_capture"));
    assert_eq!(restarted.order("SO-1").unwrap().span_count, 3);
}

#[test]
fn invoicing_closes_the_order_and_emits_unreached_milestones_and_the_closing_span() {
    let mut engine = engine();
    let first = run(
        &mut engine,
        vec![spec("erp", "pricing.check", 1, 1)
            .attr("order.id", "SO-1")
            .attr("pricing.decision", "exception")
            .error("variance")],
        T0,
    );
    let root = first.iter().find(|(_, s)| s.name == "order SO-1").expect("root on the first span").1.clone();
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.span_id, ids::root_span_id("SO-1"));
    let out =
        run_settled(&mut engine, vec![spec("finance", "invoice.create", 2, 2).attr("order.id", "SO-1")], T0 + SECOND);
    let closing = out.iter().find(|(_, s)| s.name == "order SO-1 closed").expect("closing span").1.clone();
    assert_eq!(closing.parent_span_id, ids::root_span_id("SO-1"));
    assert_eq!(closing.span_id, ids::closing_span_id("SO-1"));
    assert_eq!(closing.status.as_ref().unwrap().code, StatusCode::Error as i32, "an open pricing exception");
    let pricing = out.iter().find(|(_, s)| s.name == "pricing_approval").expect("unreached milestone span").1.clone();
    assert_eq!(attr(&pricing, "order.milestone.reached").as_deref(), Some("false"));
    assert!(engine.order("SO-1").unwrap().is_closed());
    // Nothing is emitted twice when a later span arrives.
    let out = run_settled(
        &mut engine,
        vec![spec("finance", "invoice.create", 3, 3).attr("order.id", "SO-1")],
        T0 + 2 * SECOND,
    );
    let again = ["order SO-1", "order SO-1 closed", "invoicing", "pricing_approval"];
    assert!(out.iter().all(|(_, s)| !again.contains(&s.name.as_str())));
}

#[test]
fn idle_orders_close_after_the_configured_period() {
    let yaml = DEFAULT_CONFIG_YAML.replace("idle_close_after: 168h", "idle_close_after: 10s");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "t").unwrap()), vec![], vec![]);
    run(
        &mut engine,
        vec![spec("erp", "credit.check", 1, 1).attr("order.id", "SO-1").attr("credit.decision", "approved")],
        T0,
    );
    let mut out = Output::default();
    engine.tick(T0 + 5 * SECOND, &mut out);
    assert!(out.is_empty());
    engine.tick(T0 + 11 * SECOND, &mut out);
    let spans = collect(out);
    let root = spans.iter().find(|(_, s)| s.name == "order SO-1 closed").expect("closing span after idle");
    assert_eq!(attr(&root.1, "order.close_reason").as_deref(), Some("idle"));
    // Pricing approval is skippable and nothing asked for it: allocation is what is expected next (issue 9).
    assert_eq!(attr(&root.1, "order.next_milestone").as_deref(), Some("inventory_allocation"));
    assert_eq!(attr(&root.1, "order.next_owner").as_deref(), Some("inventory-planning"));
}

#[test]
fn self_declared_labels_are_checked_against_the_taxonomy() {
    let yaml = DEFAULT_CONFIG_YAML.replace("trust_declared_labels_from: []", "trust_declared_labels_from: [erp]");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "test.yaml").unwrap()), vec![], vec![]);
    let out = run(
        &mut engine,
        vec![
            spec("erp", "custom.step", 1, 1).attr("order.id", "SO-1").attr("order.milestone", "pick_release"),
            spec("erp", "custom.step", 2, 2).attr("order.id", "SO-2").attr("order.milestone", "teleportation"),
        ],
        T0,
    );
    let ok = in_order_trace(&out, "SO-1")[0];
    assert_eq!(attr(ok, "order.milestone").as_deref(), Some("pick_release"));
    let bad = in_order_trace(&out, "SO-2")[0];
    assert_eq!(attr(bad, "order.exception.class").as_deref(), Some("data_quality"));
    assert!(attr(bad, "order.exception.reason").unwrap().contains("teleportation"));
    assert_eq!(engine.order("SO-2").unwrap().exceptions[0].class, "data_quality");
}

#[test]
fn failures_are_classified_by_the_semantic_conventions_when_no_rule_decides() {
    let mut engine = engine();
    let mut timeout = spec("erp", "HTTP POST", 1, 1).kind(SpanKind::Client).attr("order.id", "SO-1").error("upstream");
    timeout.attrs.push(attributes::int("http.response.status_code", 503));
    let mut invalid = spec("erp", "POST /api/orders", 2, 2).kind(SpanKind::Server).attr("order.id", "SO-2");
    invalid.attrs.push(attributes::int("http.response.status_code", 422));
    let crash = spec("wms", "label.print", 3, 3).attr("order.id", "SO-3").error("printer jammed");
    let out = run(&mut engine, vec![timeout, invalid, crash], T0);
    let class = |order: &str| attr(in_order_trace(&out, order)[0], "order.exception.class");
    assert_eq!(class("SO-1").as_deref(), Some("integration"));
    assert_eq!(class("SO-2").as_deref(), Some("data_quality"));
    assert_eq!(class("SO-3").as_deref(), Some("execution"));
    assert_eq!(
        attr(in_order_trace(&out, "SO-3")[0], "order.exception.owner").as_deref(),
        Some("operations-management")
    );
}

#[test]
fn a_failed_mapping_inherits_the_order_of_a_known_shipment_and_is_an_integration_exception() {
    let mut engine = engine();
    run(&mut engine, vec![spec("tms", "carrier.book", 1, 1).attr("order.ids", "SO-9").attr("shipment.id", "SH-9")], T0);
    let mut mapping =
        spec("integration-middleware", "map carrier.status -> erp.shipment_confirmation", 4, 3).error("field ShipDate");
    mapping.events.push(Event {
        name: "exception".into(),
        attributes: vec![kv("exception.type", "MappingError"), kv("exception.message", "field ShipDate")],
        ..Default::default()
    });
    // The mapping span comes first and waits; the client span names the shipment only in its URL path.
    let out = run(&mut engine, vec![mapping], T0);
    assert!(out.is_empty());
    let out = run(
        &mut engine,
        vec![spec("tms", "PUT /api/shipments/{id}/status", 4, 2)
            .kind(SpanKind::Client)
            .attr("url.path", "/api/shipments/SH-9/status")],
        T0,
    );
    let spans = in_order_trace(&out, "SO-9");
    let mapped = spans.iter().find(|s| s.name.starts_with("map carrier.status")).expect("inherited");
    assert_eq!(attr(mapped, "order.milestone").as_deref(), Some("shipment_confirmation"));
    assert_eq!(attr(mapped, "order.milestone.reached").as_deref(), Some("false"));
    assert_eq!(attr(mapped, "order.exception.class").as_deref(), Some("integration"));
    assert_eq!(attr(mapped, "order.exception.owner").as_deref(), Some("integration-team"));
}

#[test]
fn a_failed_message_between_systems_is_an_integration_exception() {
    let mut engine = engine();
    let consumer = spec("wms", "orders.inbound process", 1, 1).kind(SpanKind::Consumer).attr("order.id", "SO-1");
    let producer = spec("erp", "orders.outbound publish", 2, 2).kind(SpanKind::Producer).attr("order.id", "SO-2");
    let messaging = spec("edi-gateway", "asn.translate", 3, 3)
        .attr("order.id", "SO-3")
        .attr("messaging.system", "ibmmq")
        .error("segment N1 missing");
    let out =
        run(&mut engine, vec![consumer.error("unparseable payload"), producer.error("queue full"), messaging], T0);
    for order in ["SO-1", "SO-2", "SO-3"] {
        let class = attr(in_order_trace(&out, order)[0], "order.exception.class");
        assert_eq!(class.as_deref(), Some("integration"), "{order}");
    }
}

#[test]
fn the_default_key_pattern_takes_order_numbers_not_collection_actions() {
    let mut engine = engine();
    let action = spec("order-api", "POST /api/orders/allocate", 1, 1).attr("url.path", "/api/orders/allocate");
    let order = spec("order-api", "POST /api/orders/{id}/release", 2, 2).attr("url.path", "/api/orders/SO-77/release");
    run(&mut engine, vec![action, order], T0);
    assert!(engine.order("SO-77").is_some());
    assert!(engine.order("allocate").is_none(), "an action on the collection is no order");
    assert_eq!(engine.stats().orders_created, 1);
}

#[test]
fn a_span_with_only_an_alias_waits_for_the_span_that_teaches_it() {
    // The WMS reports the shipment before the middleware span that ties the shipment to its order arrives.
    let mut engine = engine();
    let wave = spec("wms", "wave.release", 1, 1).attr("shipment.id", "SH-9");
    let out = run(&mut engine, vec![wave], T0);
    assert!(out.is_empty(), "it waits instead of passing on uncorrelated: {out:?}");
    let teacher = spec("middleware", "shipment.map", 2, 2).attr("order.id", "SO-9").attr("shipment.id", "SH-9");
    let out = run(&mut engine, vec![teacher], T0 + SECOND);
    let in_trace = in_order_trace(&out, "SO-9");
    assert!(in_trace.iter().any(|s| s.name == "wave.release"), "the waiting span joined: {in_trace:?}");
    let original = out.iter().find(|(_, s)| s.name == "wave.release" && s.trace_id == vec![1; 16]).unwrap();
    assert_eq!(attr(&original.1, "order.id").as_deref(), Some("SO-9"), "its original goes out enriched");
    assert_eq!(engine.stats().spans_uncorrelated, 0);
}

#[test]
fn a_span_passed_on_uncorrelated_joins_its_order_late_when_its_alias_or_trace_arrives() {
    let mut engine = engine();
    let wave = spec("wms", "wave.release", 1, 1).attr("shipment.id", "SH-8");
    let child = spec("wms", "db.query", 3, 3);
    run(&mut engine, vec![wave, child], T0);
    // The wait runs out: both originals go out as they are, and both are kept.
    let mut out = Output::default();
    engine.tick(T0 + 60 * SECOND, &mut out);
    let passed = collect(out);
    assert_eq!(passed.len(), 2);
    assert_eq!(engine.stats().spans_uncorrelated, 2);
    assert_eq!(engine.late_join_spans(), 2);
    // Later, the alias is learned and a keyed span of the child's trace arrives: copies follow, originals do not.
    let teacher = spec("middleware", "shipment.map", 2, 2).attr("order.id", "SO-8").attr("shipment.id", "SH-8");
    let keyed = spec("wms", "pick.confirm", 3, 4).attr("order.id", "SO-8");
    let out = run(&mut engine, vec![teacher, keyed], T0 + 120 * SECOND);
    let in_trace: Vec<&str> = in_order_trace(&out, "SO-8").iter().map(|s| s.name.as_str()).collect();
    assert!(in_trace.contains(&"wave.release") && in_trace.contains(&"db.query"), "{in_trace:?}");
    let originals = out.iter().filter(|(_, s)| s.name == "wave.release" || s.name == "db.query");
    assert_eq!(originals.filter(|(_, s)| s.trace_id != ids::order_trace_id("SO-8").to_vec()).count(), 0);
    assert_eq!(engine.stats().spans_late_joined, 2);
    // The wave carries an alias, which may yet come to name another order (a consolidated shipment): it stays kept,
    // until its first expiry. The child, without one, is done.
    assert_eq!(engine.late_join_spans(), 1);
}

#[test]
fn the_late_join_memory_is_bounded_and_counts_what_it_drops() {
    let yaml = DEFAULT_CONFIG_YAML.replace("    max_spans: 20000", "    max_spans: 2");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "t").unwrap()), vec![], vec![]);
    let spans = (1..=5u8).map(|i| spec("wms", "db.query", i, i)).collect();
    run(&mut engine, spans, T0);
    let mut out = Output::default();
    engine.tick(T0 + 60 * SECOND, &mut out);
    assert_eq!(engine.late_join_spans(), 2);
    assert_eq!(engine.stats().late_joins_evicted, 3);
    // And what is kept is forgotten when its time is up (an hour by default).
    engine.tick(T0 + 2 * 3_600 * SECOND, &mut out);
    assert_eq!(engine.late_join_spans(), 0);
}

#[test]
fn an_alias_chain_is_learned_when_the_carrier_reports_before_the_warehouse() {
    let mut engine = engine();
    tick(&mut engine, T0);
    // The carrier's booking (delivery and shipment, no order) and its pickup (shipment only) arrive first; the
    // warehouse span tying the delivery to the order comes last, past the wait.
    let carrier = spec("tms", "carrier.book", 2, 2).attr("delivery.id", "DL-1").attr("shipment.id", "SH-1");
    run(&mut engine, vec![carrier], T0);
    let wait = crate::time::nanos(engine.config().correlation.inherit_wait);
    tick(&mut engine, T0 + wait + SECOND);
    let pickup = spec("tms", "shipment.pickup.confirm", 3, 3).attr("shipment.id", "SH-1");
    run(&mut engine, vec![pickup], T0 + wait + 2 * SECOND);
    tick(&mut engine, T0 + 2 * wait + 3 * SECOND);
    assert_eq!(engine.stats().spans_uncorrelated, 2, "both passed on after the wait");
    let pack = spec("wms", "pack.confirm", 1, 1).attr("order.id", "SO-1").attr("delivery.id", "DL-1");
    let at = T0 + 2 * wait + 4 * SECOND;
    let out = run_settled(&mut engine, vec![pack], at);
    // The booking joins through the delivery and, having joined, teaches the shipment, which brings in the pickup.
    let names: Vec<&str> = in_order_trace(&out, "SO-1").iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"carrier.book") && names.contains(&"shipment.pickup.confirm"), "{names:?}");
    assert_eq!(engine.stats().spans_late_joined, 2);
    let order = engine.order("SO-1").unwrap();
    assert!(order.milestone("shipment_confirmation").unwrap().reached.is_some());
}

#[test]
fn a_consolidated_booking_waits_for_its_second_delivery_and_joins_both_orders() {
    let mut engine = engine();
    tick(&mut engine, T0);
    run(&mut engine, vec![spec("wms", "pack.confirm", 1, 1).attr("order.id", "SO-1").attr("delivery.id", "DL-1")], T0);
    // One booking for two deliveries; the second delivery's packing is still on its way.
    let deliveries = string_array("delivery.id", &["DL-1", "DL-2"]);
    let booking = spec("tms", "carrier.book", 3, 3).attr_kv(deliveries).attr("shipment.id", "SH-1");
    let out = run(&mut engine, vec![booking], T0 + SECOND);
    assert!(out.iter().all(|(_, s)| s.name != "carrier.book"), "it waits for DL-2: {out:?}");
    let pack = spec("wms", "pack.confirm", 2, 2).attr("order.id", "SO-2").attr("delivery.id", "DL-2");
    let out = run(&mut engine, vec![pack], T0 + 2 * SECOND);
    for order in ["SO-1", "SO-2"] {
        assert!(in_order_trace(&out, order).iter().any(|s| s.name == "carrier.book"), "{order}");
    }
    let original = out.iter().map(|(_, s)| s).find(|s| s.name == "carrier.book" && s.trace_id == vec![3; 16]).unwrap();
    assert_eq!(original.links.len(), 2, "the original links to both order traces");
    // The shipment it taught names both orders.
    let out = run(
        &mut engine,
        vec![spec("tms", "shipment.pickup.confirm", 4, 4).attr("shipment.id", "SH-1")],
        T0 + 3 * SECOND,
    );
    for order in ["SO-1", "SO-2"] {
        assert!(in_order_trace(&out, order).iter().any(|s| s.name == "shipment.pickup.confirm"), "{order}");
    }
}

/// The default configuration with `max_orders_per_alias` and `max_orders_per_trace` set to `cap`.
fn capped_engine(cap: usize) -> Engine {
    capped_engine_with(cap, vec![], vec![])
}

fn over_cap_events(events: &[events::Event]) -> Vec<&events::Event> {
    events.iter().filter(|e| matches!(e, events::Event::KeyOverCap { .. })).collect()
}

#[test]
fn an_alias_value_shared_by_more_orders_than_the_cap_is_no_alias_and_is_reported_once() {
    let mut engine = capped_engine(3);
    // Every order system fills `shipment.id` with a placeholder until a real shipment exists.
    let keyed =
        |n: u8| spec("erp", "order.update", n, n).attr("order.id", &format!("SO-{n}")).attr("shipment.id", "N/A");
    let (_, events) = process(&mut engine, (1..=3).map(keyed).collect(), T0);
    assert!(over_cap_events(&events).is_empty(), "three orders are within the cap");
    // A carrier span naming only the placeholder would join all three: the value still names them.
    let (out, _) = process(&mut engine, vec![spec("tms", "carrier.status", 50, 50).attr("shipment.id", "N/A")], T0);
    assert_eq!(out.iter().filter(|(_, s)| s.name == "carrier.status" && s.trace_id != vec![50; 16]).count(), 3);

    let (_, events) = process(&mut engine, (4..=6).map(keyed).collect(), T0 + SECOND);
    let reported = over_cap_events(&events);
    assert_eq!(reported.len(), 1, "reported once, however many orders come after: {reported:?}");
    match reported[0] {
        events::Event::KeyOverCap { kind, value, cap } => {
            assert_eq!(kind, &events::KeyKind::Alias("shipment".into()));
            assert_eq!(value, "N/A");
            assert_eq!(*cap, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.stats().aliases_over_cap, 1);

    // From now on the placeholder names no order: a span carrying only it waits for its trace like any unkeyed
    // span and passes on uncorrelated, instead of being copied into every order that ever carried it.
    let (out, _) =
        process(&mut engine, vec![spec("tms", "carrier.status", 51, 51).attr("shipment.id", "N/A")], T0 + SECOND);
    assert!(out.is_empty(), "it waits for a keyed span of its trace");
    let (out, _) = tick(&mut engine, T0 + SECOND + 11 * SECOND);
    let carrier: Vec<_> = out.iter().filter(|(_, s)| s.span_id == vec![51; 8]).collect();
    assert_eq!(carrier.len(), 1, "only its original, uncorrelated");
    assert!(carrier[0].1.links.is_empty());

    // The store learns that the value is over the cap, with no orders, and a restarted engine keeps it so.
    let changes = engine.take_changes();
    let stored = changes.aliases.iter().find(|a| a.value == "N/A").expect("the placeholder is stored");
    assert!(stored.over_cap);
    assert!(stored.orders.is_empty());
    let mut restarted = capped_engine_with(3, records(changes.orders), changes.aliases);
    let (out, events) = process(&mut restarted, vec![keyed(7)], T0 + 20 * SECOND);
    assert!(over_cap_events(&events).is_empty(), "not reported again after a restart");
    assert_eq!(in_order_trace(&out, "SO-7").len(), 1);
    let (out, _) = process(
        &mut restarted,
        vec![spec("tms", "carrier.status", 52, 52).attr("shipment.id", "N/A")],
        T0 + 20 * SECOND,
    );
    assert!(out.is_empty());
}

#[test]
fn a_trace_naming_more_orders_than_the_cap_passes_nothing_on_to_its_unkeyed_spans() {
    let mut engine = capped_engine(3);
    // A nightly batch job: one technical trace, one keyed span per order.
    let keyed = |n: u8| spec("erp", "batch.reprice", 9, n).attr("order.id", &format!("SO-{n}"));
    let (_, events) = process(&mut engine, (1..=3).map(keyed).collect(), T0);
    assert!(over_cap_events(&events).is_empty());
    let (_, events) = process(&mut engine, (4..=8).map(keyed).collect(), T0);
    let reported = over_cap_events(&events);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(matches!(reported[0], events::Event::KeyOverCap { kind: events::KeyKind::Trace, .. }));
    assert_eq!(engine.stats().traces_over_cap, 1);
    // Each keyed span is still in its own order.
    for n in 1..=8 {
        assert!(engine.order(&format!("SO-{n}")).is_some());
    }
    // An unkeyed span of the batch's trace goes on at once, uncorrelated, instead of into eight orders.
    let (out, _) = process(&mut engine, vec![spec("erp", "SELECT prices", 9, 100)], T0 + SECOND);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1.trace_id, vec![9; 16]);
    assert!(out[0].1.links.is_empty());
    let (_, events) = process(&mut engine, vec![keyed(10)], T0 + SECOND);
    assert!(over_cap_events(&events).is_empty(), "reported once per trace");
}

#[test]
fn spans_waiting_for_a_trace_that_goes_over_the_cap_inherit_nothing_and_may_still_join_by_alias() {
    let mut engine = capped_engine(2);
    // The unkeyed span is exported first, as SDKs export children first; the batch's keyed spans come in one
    // request naming more orders than the cap.
    let (out, _) = process(&mut engine, vec![spec("erp", "SELECT prices", 9, 100)], T0);
    assert!(out.is_empty());
    let batch = vec![spec("erp", "batch.reprice", 9, 1).attr_kv(string_array("order.ids", &["SO-1", "SO-2", "SO-3"]))];
    let (out, events) = process(&mut engine, batch, T0);
    assert_eq!(over_cap_events(&events).len(), 1);
    assert!(out.iter().all(|(_, s)| s.span_id != vec![100; 8]), "it is not copied into the three orders");
    for order in ["SO-1", "SO-2", "SO-3"] {
        assert_eq!(in_order_trace(&out, order).len(), 1, "{order} has the keyed span only");
    }
    // A span of the trace that carries an alias waits for it, and joins its order when it is learned.
    let (out, _) = process(&mut engine, vec![spec("erp", "ship.notify", 9, 101).attr("shipment.id", "SH-77")], T0);
    assert!(out.is_empty(), "it waits for its alias");
    let teach = spec("tms", "shipment.book", 30, 30).attr("order.id", "SO-77").attr("shipment.id", "SH-77");
    let (out, _) = process(&mut engine, vec![teach], T0 + SECOND);
    assert_eq!(in_order_trace(&out, "SO-77").iter().filter(|s| s.name == "ship.notify").count(), 1);
    // The span that waited for the trace alone passes on uncorrelated when its wait runs out.
    let (out, _) = tick(&mut engine, T0 + 11 * SECOND);
    let waited: Vec<_> = out.iter().filter(|(_, s)| s.span_id == vec![100; 8]).collect();
    assert_eq!(waited.len(), 1, "{waited:?}");
    assert!(waited[0].1.links.is_empty());
}

#[test]
fn a_cap_lowered_since_a_value_was_stored_applies_at_restart_and_is_written_back() {
    let mut engine = capped_engine(5);
    let keyed =
        |n: u8| spec("erp", "order.update", n, n).attr("order.id", &format!("SO-{n}")).attr("shipment.id", "SH-C");
    process(&mut engine, (1..=3).map(keyed).collect(), T0);
    let changes = engine.take_changes();
    let stored = changes.aliases.iter().find(|a| a.value == "SH-C").unwrap();
    assert_eq!(stored.orders.len(), 3);
    assert!(!stored.over_cap);

    let mut restarted = capped_engine_with(2, records(changes.orders), changes.aliases);
    assert_eq!(restarted.stats().aliases_over_cap, 1);
    let rewritten = restarted.take_changes();
    let stored = rewritten.aliases.iter().find(|a| a.value == "SH-C").expect("written back by the first commit");
    assert!(stored.over_cap && stored.orders.is_empty());
    let (out, _) = process(&mut restarted, vec![spec("tms", "carrier.status", 60, 60).attr("shipment.id", "SH-C")], T0);
    assert!(out.is_empty(), "no longer an alias: it waits for its trace like any unkeyed span");
}

/// As `capped_engine`, with state loaded from a store.
fn capped_engine_with(cap: usize, orders: Vec<OrderRecord>, aliases: Vec<crate::order::AliasRecord>) -> Engine {
    let mut config = default_config();
    config.correlation.max_orders_per_alias = cap;
    config.correlation.max_orders_per_trace = cap;
    Engine::new(Arc::new(config), orders, aliases)
}
