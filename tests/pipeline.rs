//! End to end through the real server: spans sent with the OpenTelemetry SDK come out as labelled order traces.

mod common;

use common::*;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use ordertrail_core::ids;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_spans_become_labelled_order_traces_with_links_aliases_inheritance_and_multi_order_spans() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(test_config(sink_addr, dir.path(), "")).await;
    let addr = server.grpc_addr.unwrap();
    let portal = sdk_provider("customer-portal", addr);
    let erp = sdk_provider("erp", addr);
    let middleware = sdk_provider("integration-middleware", addr);
    let wms = sdk_provider("wms", addr);
    let tms = sdk_provider("tms", addr);
    let finance = sdk_provider("finance", addr);
    let none = Context::new();

    record(&portal, &none, "POST /api/orders", SpanKind::Server, vec![KeyValue::new("app.order.id", "SO-1")]);
    record(&portal, &none, "POST /api/orders", SpanKind::Server, vec![KeyValue::new("app.order.id", "SO-2")]);
    flush(&portal).await;
    record(
        &erp,
        &none,
        "credit.check",
        SpanKind::Internal,
        vec![KeyValue::new("order.id", "SO-1"), KeyValue::new("credit.decision", "blocked")],
    );
    // A technical trace whose keyed parent and unkeyed child are exported by different services.
    let release =
        record(&erp, &none, "publish orders.released", SpanKind::Producer, vec![KeyValue::new("order.id", "SO-1")]);
    record(&middleware, &release, "process orders.released", SpanKind::Consumer, vec![]);
    flush(&middleware).await;
    flush(&erp).await;
    record(
        &wms,
        &none,
        "pack.confirm",
        SpanKind::Internal,
        vec![KeyValue::new("order.id", "SO-1"), KeyValue::new("delivery.id", "DL-1")],
    );
    flush(&wms).await;
    record(
        &tms,
        &none,
        "carrier.book",
        SpanKind::Client,
        vec![KeyValue::new("delivery.id", "DL-1"), KeyValue::new("shipment.id", "SH-1")],
    );
    flush(&tms).await;
    record(&tms, &none, "shipment.pickup.confirm", SpanKind::Internal, vec![KeyValue::new("shipment.id", "SH-1")]);
    flush(&tms).await;
    let both = Value::Array(Array::String(vec![StringValue::from("SO-1"), StringValue::from("SO-2")]));
    record(&finance, &none, "invoice.batch.post", SpanKind::Internal, vec![KeyValue::new("order.ids", both)]);
    flush(&finance).await;

    let spans = sink
        .wait_for(WAIT, "both closing spans and the inherited consumer span", |spans| {
            let roots = spans
                .iter()
                .filter(|r| r.span.name.starts_with("order SO-") && r.span.name.ends_with(" closed"))
                .count();
            let inherited =
                spans.iter().any(|r| r.span.name == "process orders.released" && r.span.trace_id == trace_of("SO-1"));
            roots == 2 && inherited
        })
        .await;
    let in_trace = |order: &str| spans.iter().filter(|r| r.span.trace_id == trace_of(order)).collect::<Vec<_>>();
    let so1 = in_trace("SO-1");

    // Labels and the parent milestone span.
    let credit = so1.iter().find(|r| r.span.name == "credit.check").expect("credit check in the order trace");
    assert_eq!(credit.service, "erp", "the original resource is kept");
    assert_eq!(attr(&credit.span, "order.milestone").as_deref(), Some("credit_approval"));
    assert_eq!(attr(&credit.span, "order.milestone.reached").as_deref(), Some("false"));
    assert_eq!(attr(&credit.span, "order.exception.class").as_deref(), Some("policy"));
    assert_eq!(attr(&credit.span, "order.exception.owner").as_deref(), Some("commercial-controls"));
    assert_eq!(credit.span.parent_span_id, ids::milestone_span_id("SO-1", "credit_approval"));

    // Links both ways.
    let original = spans
        .iter()
        .find(|r| r.span.name == "credit.check" && r.span.trace_id != trace_of("SO-1"))
        .expect("original passed on");
    assert_eq!(credit.span.links[0].trace_id, original.span.trace_id);
    assert_eq!(credit.span.links[0].span_id, original.span.span_id);
    assert_eq!(original.span.links[0].trace_id, trace_of("SO-1"));
    assert_eq!(original.span.links[0].span_id, ids::root_span_id("SO-1"));
    assert_eq!(attr(&original.span, "order.id").as_deref(), Some("SO-1"));

    // Aliases: delivery then shipment.
    assert!(so1.iter().any(|r| r.span.name == "carrier.book" && r.service == "tms"));
    assert!(so1.iter().any(|r| r.span.name == "shipment.pickup.confirm"));
    assert!(so1.iter().any(|r| r.span.name == "shipment_confirmation" && r.service == "ordertrail"));

    // One span, two orders; the invoice closes both, and their roots (out since their first span) parent everything.
    for order in ["SO-1", "SO-2"] {
        let trace = in_trace(order);
        assert_eq!(trace.iter().filter(|r| r.span.name == "invoice.batch.post").count(), 1, "{order}");
        let root = trace.iter().find(|r| r.span.name == format!("order {order}")).expect("root");
        assert!(root.span.parent_span_id.is_empty());
        let milestone_ids: Vec<_> =
            trace.iter().filter(|r| r.service == "ordertrail").map(|r| r.span.span_id.clone()).collect();
        for r in &trace {
            let parent_known = r.span.parent_span_id.is_empty() || milestone_ids.contains(&r.span.parent_span_id);
            assert!(parent_known, "{order}: {} has a parent outside the order trace", r.span.name);
        }
    }
    let batch_original = spans.iter().find(|r| r.span.name == "invoice.batch.post" && r.span.links.len() == 2);
    assert!(batch_original.is_some(), "the original links to both order traces");

    // Milestone spans are unique within a trace.
    let mut milestone_spans: Vec<_> =
        so1.iter().filter(|r| r.service == "ordertrail").map(|r| r.span.span_id.clone()).collect();
    let before = milestone_spans.len();
    milestone_spans.dedup();
    assert_eq!(before, milestone_spans.len());

    for provider in [portal, erp, middleware, wms, tms, finance] {
        tokio::task::spawn_blocking(move || provider.shutdown()).await.unwrap().unwrap();
    }
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_spans_pass_on_unchanged_after_the_wait() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(test_config(sink_addr, dir.path(), "")).await;
    let portal = sdk_provider("customer-portal", server.grpc_addr.unwrap());
    record(&portal, &Context::new(), "GET /healthz", SpanKind::Server, vec![]);
    flush(&portal).await;
    let spans = sink.wait_for(WAIT, "the health check", |s| s.iter().any(|r| r.span.name == "GET /healthz")).await;
    let health = spans.iter().find(|r| r.span.name == "GET /healthz").unwrap();
    assert!(health.span.links.is_empty());
    assert!(attr(&health.span, "order.id").is_none());
    assert_eq!(server.engine_stats().await.spans_uncorrelated, 1);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_known_order_continues_its_trace_without_duplicate_milestones() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();

    let server = start_server(test_config(sink_addr, dir.path(), "")).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(
        &erp,
        &Context::new(),
        "credit.check",
        SpanKind::Internal,
        vec![KeyValue::new("order.id", "SO-7"), KeyValue::new("credit.decision", "approved")],
    );
    flush(&erp).await;
    sink.wait_for(WAIT, "the first milestone", |s| s.iter().any(|r| r.span.name == "credit_approval")).await;
    server.shutdown(Duration::from_secs(5)).await;

    let server = start_server(test_config(sink_addr, dir.path(), "")).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(
        &erp,
        &Context::new(),
        "credit.check",
        SpanKind::Internal,
        vec![KeyValue::new("order.id", "SO-7"), KeyValue::new("credit.decision", "approved")],
    );
    record(&erp, &Context::new(), "pricing.approve", SpanKind::Internal, vec![KeyValue::new("order.id", "SO-7")]);
    flush(&erp).await;
    let spans =
        sink.wait_for(WAIT, "the second milestone", |s| s.iter().any(|r| r.span.name == "pricing_approval")).await;
    let credit_milestones = spans.iter().filter(|r| r.span.name == "credit_approval").count();
    assert_eq!(credit_milestones, 1, "the milestone reached before the restart is not emitted again");
    let in_trace =
        spans.iter().filter(|r| r.span.trace_id == trace_of("SO-7") && r.span.name == "credit.check").count();
    assert_eq!(in_trace, 2, "both credit checks are in the one order trace");
    let order = server.pipeline().order("SO-7").await.expect("order known after restart");
    assert_eq!(order.span_count, 3);
    assert!(order.milestone("credit_approval").unwrap().reached.is_some());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_open_order_breaches_once_across_a_restart_however_few_the_hot_set_holds() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    // order_release (order capture to pick release) runs out 8 s after each capture, with no pick release sent.
    let yaml = ordertrail_core::config::DEFAULT_CONFIG_YAML.replacen("      within: 4h\n", "      within: 8s\n", 1);
    let config = || {
        let mut config = test_config_from(&yaml, sink_addr, dir.path(), "");
        config.correlation.max_orders = 8;
        config
    };
    // First run: forty orders captured, one request each, so that memory holds 8 and the rest are evicted to the
    // store; it stops before their deadlines.
    let server = start_server(config()).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    for n in 0..40 {
        let key = format!("SO-WAKE-{n}");
        record(&erp, &Context::new(), "order.create", SpanKind::Internal, vec![KeyValue::new("order.id", key)]);
        flush(&erp).await;
    }
    server.pipeline().flush().await;
    server.shutdown(Duration::from_secs(5)).await;

    // Second run: startup loads 8 open orders; the other 32 are woken from the store's index when their deadline
    // passes, and every clock breaches, once.
    let server = start_server(config()).await;
    let breaches = |spans: &[Received]| -> Vec<Vec<u8>> {
        spans.iter().filter(|r| r.span.name == "pick_release overdue").map(|r| r.span.trace_id.clone()).collect()
    };
    sink.wait_for(WAIT, "forty breach spans", |spans| breaches(spans).len() >= 40).await;
    // Long enough for a second breach of any order to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut traces = breaches(&sink.snapshot());
    assert_eq!(traces.len(), 40, "no order breached twice");
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 40, "every order breached");
    let stats = server.pipeline().inspect(|engine| engine.stats().clone()).await.unwrap();
    assert!(stats.orders_woken >= 32, "{} orders woken", stats.orders_woken);
    assert!(server.pipeline().orders().await.len() <= 8, "memory holds the hot set only while waking");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_orders_beyond_max_orders_live_in_the_store_and_come_back_when_named() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, dir.path(), "");
    config.correlation.max_orders = 16;
    let server = start_server(config).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    let none = Context::new();
    // Each flush is its own request and commit, so that earlier orders are on disk when memory is full.
    for n in 0..60 {
        record(&erp, &none, "order.create", SpanKind::Internal, vec![KeyValue::new("order.id", format!("SO-HOT-{n}"))]);
        flush(&erp).await;
    }
    record(
        &erp,
        &none,
        "credit.check",
        SpanKind::Internal,
        vec![KeyValue::new("order.id", "SO-HOT-0"), KeyValue::new("credit.decision", "approved")],
    );
    flush(&erp).await;
    let order = server.pipeline().order("SO-HOT-0").await.expect("the first order is known");
    assert_eq!(order.span_count, 2, "its second span joined the record read back from the store");
    let in_memory = server.pipeline().orders().await.len();
    assert!(in_memory <= 16, "{in_memory} orders in memory");
    let stats = server.pipeline().inspect(|engine| engine.stats().clone()).await.unwrap();
    assert_eq!(stats.orders_refused, 0);
    // Read back for this span, and for milestones that were still settling when their order was evicted.
    assert!(stats.orders_loaded >= 1);
    // Every order's capture milestone span went out once, evicted or not.
    let spans = sink
        .wait_for(WAIT, "sixty order_capture milestone spans", |spans| {
            spans.iter().filter(|r| r.span.name == "order_capture").count() >= 60
        })
        .await;
    let mut captured: Vec<_> =
        spans.iter().filter(|r| r.span.name == "order_capture").map(|r| r.span.trace_id.clone()).collect();
    captured.sort();
    captured.dedup();
    assert_eq!(captured.len(), 60, "one per order");
    assert_eq!(spans.iter().filter(|r| r.span.name == "order_capture").count(), 60, "none twice");
    // Its copy went into its own order trace.
    sink.wait_for(WAIT, "the credit check in SO-HOT-0's trace", |spans| {
        spans.iter().any(|r| r.span.name == "credit.check" && r.span.trace_id == ids::order_trace_id("SO-HOT-0"))
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}
