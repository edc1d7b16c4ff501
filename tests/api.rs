//! The order API through real gRPC and HTTP clients, on the seed's regional-distributor scenario sent by the real
//! OpenTelemetry SDK; and SLA deadlines across restarts of the real server.

mod common;

use common::*;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use ordertrail::api::proto::order_service_client::OrderServiceClient;
use ordertrail::api::proto::{GetOrderRequest, ListExceptionsRequest, ListOrdersRequest};
use ordertrail_simulator::{self as simulator, SimulatorOptions};
use serde_json::Value;
use std::time::Duration;
use tonic::codec::CompressionEncoding;

const SEED_ORDER: &str = "SO-10042";

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenario_answers_who_owns_the_stalled_order_over_http_and_grpc() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, dir.path(), "");
    // The simulator replays two days in a second from seven services; give each milestone time to arrive.
    config.sla.detection_delay = Duration::from_secs(2);
    let server = start_server(config).await;
    let simulated = simulator::run(&SimulatorOptions {
        endpoint: format!("http://{}", server.grpc_addr.unwrap()),
        happy_orders: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(simulated.order_ids[0], SEED_ORDER);
    let http = reqwest::Client::new();
    let api = format!("http://{}", server.api_http_addr.unwrap());

    // The invoice waits for a shipment confirmation that will never come: the order is stalled, its SLA is
    // breached, and the next action belongs to the integration team whose mapping failed.
    let order = eventually("the seed order to breach its SLA", Duration::from_secs(30), || async {
        let (status, body) = get_json(&http, &format!("{api}/v1/orders/{SEED_ORDER}")).await;
        let breached =
            |b: &Value| b["slas"].as_array().map_or(0, |s| s.iter().filter(|s| s["status"] == "breached").count());
        (status == 200 && breached(&body) == 2).then_some(body)
    })
    .await;
    assert_eq!(order["trace_id"], hex::encode(ordertrail_core::ids::order_trace_id(SEED_ORDER)));
    assert_eq!(order["trace_url"], format!("http://localhost:16686/trace/{}", order["trace_id"].as_str().unwrap()));
    assert_eq!(order["status"], "open");
    assert_eq!(order["stage"], "pick_pack");
    assert_eq!(order["next"]["milestone"], "shipment_confirmation");
    assert_eq!(order["next"]["milestone_owner"], "transport-logistics");
    assert_eq!(order["next"]["owner"], "integration-team");
    assert_eq!(order["next"]["blocked_by"]["class"], "integration");
    assert_eq!(order["next"]["overdue"], true);
    let exceptions = order["exceptions"].as_array().unwrap();
    let email = exceptions.iter().find(|e| e["signature"] == "approval-outside-system-of-record").unwrap();
    assert_eq!(email["class"], "policy");
    assert_eq!(email["status"], "open");
    assert_eq!(email["actor"], "j.moreau@regional-distributor.example");
    assert_eq!(email["milestone"], "pricing_approval");
    let invoice = exceptions.iter().find(|e| e["milestone"] == "invoicing").unwrap();
    assert_eq!(invoice["status"], "open");
    let overdue = exceptions.iter().find(|e| e["signature"] == "sla:shipment_confirmation_latency").unwrap();
    assert_eq!(
        (overdue["class"].as_str(), overdue["owner"].as_str()),
        (Some("execution"), Some("transport-logistics"))
    );
    let invoicing = order["milestones"].as_array().unwrap().iter().find(|m| m["name"] == "invoicing").unwrap();
    assert_eq!(invoicing["state"], "in_progress");
    let pricing = order["milestones"].as_array().unwrap().iter().find(|m| m["name"] == "pricing_approval").unwrap();
    assert_eq!(pricing["actor"], "j.moreau@regional-distributor.example");
    assert_eq!(pricing["system"], "erp");
    assert!(pricing["source"]["span_id"].as_str().unwrap().len() == 16);
    assert!(pricing["duration_ms"].as_u64().unwrap() > 0);

    // The same answer over gRPC.
    let mut grpc = OrderServiceClient::connect(format!("http://{}", server.api_grpc_addr.unwrap())).await.unwrap();
    let reply = grpc.get_order(GetOrderRequest { order_id: SEED_ORDER.into() }).await.unwrap().into_inner();
    assert_eq!(reply.stage, "pick_pack");
    assert_eq!(reply.sla_status, "breached");
    let next = reply.next.unwrap();
    assert_eq!((next.owner.as_str(), next.milestone.as_str()), ("integration-team", "shipment_confirmation"));
    assert!(next.deadline.is_some());
    assert_eq!(reply.exceptions.len(), exceptions.len());
    let missing = grpc.get_order(GetOrderRequest { order_id: "SO-NOPE".into() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let (status, body) = get_json(&http, &format!("{api}/v1/orders/SO-NOPE")).await;
    assert_eq!((status, body["status"].as_str()), (404, Some("NOT_FOUND")));

    // Lists: the stalled order is found by SLA status, owner and class; happy orders are not.
    let (_, breached) = get_json(&http, &format!("{api}/v1/orders?sla_status=breached")).await;
    let ids: Vec<&str> =
        breached["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [SEED_ORDER]);
    let (_, by_owner) =
        get_json(&http, &format!("{api}/v1/orders?owner=integration-team&exception_class=policy")).await;
    assert_eq!(by_owner["orders"][0]["order_id"], SEED_ORDER);
    let (_, on_time) = get_json(&http, &format!("{api}/v1/orders?sla_status=on_time&status=closed")).await;
    assert_eq!(on_time["orders"].as_array().unwrap().len(), 3, "{on_time}");
    let mut token = String::new();
    let mut pages = 0;
    let mut listed = Vec::new();
    loop {
        let (status, page) = get_json(&http, &format!("{api}/v1/orders?page_size=1&page_token={token}")).await;
        assert_eq!(status, 200);
        listed.extend(page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap().to_string()));
        pages += 1;
        token = page["next_page_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed.len(), simulated.order_ids.len());
    assert_eq!(pages, simulated.order_ids.len());
    let grpc_page = grpc
        .list_orders(ListOrdersRequest { sla_status: "breached".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc_page.orders.len(), 1);
    assert_eq!(grpc_page.orders[0].next.as_ref().unwrap().owner, "integration-team");
    let bad = grpc.list_orders(ListOrdersRequest { page_size: 5000, ..Default::default() }).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    for bad in ["?colour=red", "?since=yesterday", "?sla_status=fine", "?page_token=zz", "?page_size=-1"] {
        let (status, body) = get_json(&http, &format!("{api}/v1/orders{bad}")).await;
        assert_eq!((status, body["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{bad}: {body}");
    }

    // Exceptions grouped by class and owner.
    let (_, groups) = get_json(&http, &format!("{api}/v1/exceptions")).await;
    let policy = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["class"] == "policy" && g["owner"] == "commercial-controls")
        .unwrap();
    assert_eq!(policy["sample_orders"][0], SEED_ORDER);
    assert_eq!(policy["by_milestone"]["pricing_approval"], 1);
    let grpc_groups = grpc
        .list_exceptions(ListExceptionsRequest { class: "integration".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc_groups.groups.len(), 1);
    assert_eq!(grpc_groups.groups[0].owner, "integration-team");

    // The breach is in the order trace as a span of its own.
    let trace = trace_of(SEED_ORDER);
    let exported =
        eventually("the breach span to be exported", Duration::from_secs(10), || {
            let spans = sink.snapshot();
            let trace = trace.clone();
            async move {
                spans.into_iter().find(|r| r.span.trace_id == trace && r.span.name == "shipment_confirmation overdue")
            }
        })
        .await;
    assert_eq!(exported.service, "ordertrail");
    assert_eq!(attr(&exported.span, "order.exception.owner").as_deref(), Some("transport-logistics"));
    assert_eq!(exported.span.status.as_ref().unwrap().code, 2);

    // What the console asks: the seed order is the most overdue stalled order, its next action the integration
    // team's and not the warehouse's; its stage in the flow counts it as breached and blocked; its shipment number
    // finds it.
    let (status, stalled) = get_json(&http, &format!("{api}/v1/stalled")).await;
    assert_eq!(status, 200, "{stalled}");
    assert_eq!(stalled["orders"][0]["order_id"], SEED_ORDER, "{stalled}");
    assert_eq!(stalled["orders"][0]["owner"], "integration-team");
    assert!(stalled["orders"][0]["reason"].as_str().unwrap().contains("ShipDate"), "{stalled}");
    let (_, theirs) = get_json(&http, &format!("{api}/v1/stalled?owner=warehouse-operations")).await;
    assert!(theirs["orders"].as_array().unwrap().iter().all(|o| o["order_id"] != SEED_ORDER), "{theirs}");
    let (_, mine) = get_json(&http, &format!("{api}/v1/stalled?owner=integration-team")).await;
    assert_eq!(mine["total"], 1, "{mine}");
    let (_, flow) = get_json(&http, &format!("{api}/v1/flow")).await;
    let stage = flow["stages"].as_array().unwrap().iter().find(|s| s["stage"] == order["stage"]).unwrap();
    assert_eq!((&stage["open"], &stage["breached"], &stage["blocked"]), (&1.into(), &1.into(), &1.into()), "{flow}");
    assert_eq!(stage["exceptions"]["integration"], 1, "{flow}");
    assert!(flow["teams"].as_array().unwrap().contains(&"integration-team".into()), "{flow}");
    let (_, found) = get_json(&http, &format!("{api}/v1/search?q=SH-10042")).await;
    assert_eq!(found["matches"], serde_json::json!([{"order_id": SEED_ORDER, "via": "shipment", "value": "SH-10042"}]));
    let (status, _) = get_json(&http, &format!("{api}/v1/search?q=%20")).await;
    assert_eq!(status, 400, "an empty search is refused");
    let page = http.get(format!("{api}/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert!(page.text().await.unwrap().contains("/ui/console.js"));

    // Health, readiness, the OpenAPI document and metrics.
    for path in ["/healthz", "/readyz", "/openapi.yaml"] {
        assert_eq!(http.get(format!("{api}{path}")).send().await.unwrap().status().as_u16(), 200, "{path}");
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.api_grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest { service: "ordertrail.v1.OrderService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    // Server reflection lets grpcurl call the API without the proto files.
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.api_grpc_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("a list of services: {reply:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"ordertrail.v1.OrderService".to_string()), "{names:?}");
    }
    // Open orders by stage are recounted once a second.
    let text = eventually("the stage gauge", Duration::from_secs(5), || async {
        let text = http.get(format!("{api}/metrics")).send().await.unwrap().text().await.unwrap();
        text.contains("ordertrail_open_orders{stage=").then_some(text)
    })
    .await;
    for expected in [
        "ordertrail_sla_breaches_total{target=\"shipment_confirmation_latency\",milestone=\"shipment_confirmation\",owner=\"transport-logistics\"",
        "ordertrail_exceptions_total{class=\"policy\",owner=\"commercial-controls\",milestone=\"pricing_approval\"",
        // Routes come from route attributes only; the ERP's internal spans have none, and their names are not used.
        "ordertrail_spans_total{service=\"erp\",route=\"unknown\",correlation=\"correlated\"}",
        "ordertrail_spans_total{service=\"tms\",route=\"/api/shipments/{id}/status\",correlation=\"correlated\"}",
        "ordertrail_open_orders{stage=\"pick_pack\"} 1",
        "ordertrail_sla_duration_seconds_bucket{target=\"order_release\"",
        "ordertrail_order_fill_ratio_count",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    let open_metrics = http
        .get(format!("{api}/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(open_metrics.ends_with("# EOF\n"));
    let exemplar = open_metrics
        .lines()
        .find(|l| l.starts_with("ordertrail_milestone_transition_seconds_bucket") && l.contains(" # {trace_id=\""))
        .expect("a histogram bucket with an exemplar");
    let trace_id = exemplar.split("trace_id=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(trace_id.len(), 32);
    server.shutdown(Duration::from_secs(10)).await;
}

/// The default configuration with an `order_release` target short enough to expire during the test.
fn short_release_target() -> String {
    ordertrail_core::config::DEFAULT_CONFIG_YAML.replacen("      within: 4h\n", "      within: 3s\n", 1)
}

fn breach_spans(sink: &Sink, order: &str) -> Vec<Received> {
    let trace = trace_of(order);
    sink.snapshot().into_iter().filter(|r| r.span.trace_id == trace && r.span.name == "pick_release overdue").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_deadline_survives_a_restart_and_its_breach_is_reported_once() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = short_release_target();

    // First run: the order is captured and the server stops before its release deadline.
    let server = start_server(test_config_from(&yaml, sink_addr, dir.path(), "")).await;
    let portal = sdk_provider("customer-portal", server.grpc_addr.unwrap());
    record(&portal, &Context::new(), "order.create", SpanKind::Server, vec![KeyValue::new("order.id", "SO-R1")]);
    flush(&portal).await;
    server.pipeline().flush().await;
    // The clock starts once the capture has settled (the test config's settling delay is 300 ms).
    let pipeline = server.pipeline();
    let deadline = eventually("the release clock to start", Duration::from_secs(5), || {
        let pipeline = pipeline.clone();
        async move { pipeline.order("SO-R1").await?.slas.first().map(|s| s.deadline_unix_nanos) }
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
    assert!(breach_spans(&sink, "SO-R1").is_empty(), "stopped before the deadline");

    // Second run: the deadline passes while it runs, and the breach is reported.
    let server = start_server(test_config_from(&yaml, sink_addr, dir.path(), "")).await;
    let breach = eventually("the breach after the restart", Duration::from_secs(15), || {
        let found = breach_spans(&sink, "SO-R1");
        async move { found.into_iter().next() }
    })
    .await;
    let detected = breach.span.events.iter().find(|e| e.name == "sla.breach.detected").unwrap().time_unix_nano;
    assert!(detected >= deadline);
    assert!(
        detected - deadline < 1_000_000_000,
        "detected {} ms after the deadline",
        (detected - deadline) / 1_000_000
    );
    let api = format!("http://{}", server.api_http_addr.unwrap());
    let (_, order) = get_json(&reqwest::Client::new(), &format!("{api}/v1/orders/SO-R1")).await;
    assert_eq!(order["sla_status"], "breached");
    assert_eq!(order["next"]["milestone"], "credit_approval");
    server.shutdown(Duration::from_secs(5)).await;

    // Third run: the breach is remembered, not repeated.
    let server = start_server(test_config_from(&yaml, sink_addr, dir.path(), "")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.pipeline().flush().await;
    let (_, order) =
        get_json(&reqwest::Client::new(), &format!("http://{}/v1/orders/SO-R1", server.api_http_addr.unwrap())).await;
    let breaches: Vec<_> =
        order["exceptions"].as_array().unwrap().iter().filter(|e| e["signature"] == "sla:order_release").collect();
    assert_eq!(breaches.len(), 1);
    server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(breach_spans(&sink, "SO-R1").len(), 1, "exactly one breach span across three runs");
}

/// An OTLP/gRPC metrics backend that keeps every request.
#[derive(Clone, Default)]
struct MetricsBackend {
    requests: std::sync::Arc<std::sync::Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl MetricsService for MetricsBackend {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_over_otlp_with_the_order_trace_as_exemplar() {
    let backend = MetricsBackend::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(backend.clone()).accept_compressed(CompressionEncoding::Gzip))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let (_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = ordertrail_core::config::DEFAULT_CONFIG_YAML.replace(
        "telemetry:\n  metrics:\n",
        &format!("telemetry:\n  metrics:\n    otlp:\n      endpoint: http://{metrics_addr}\n      interval: 200ms\n"),
    );
    let server = start_server(test_config_from(&yaml, sink_addr, dir.path(), "")).await;
    let portal = sdk_provider("customer-portal", server.grpc_addr.unwrap());
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(&portal, &Context::new(), "order.create", SpanKind::Server, vec![KeyValue::new("order.id", "SO-M1")]);
    flush(&portal).await;
    record(&erp, &Context::new(), "credit.check", SpanKind::Internal, vec![KeyValue::new("order.id", "SO-M1")]);
    flush(&erp).await;

    let trace = trace_of("SO-M1");
    let exemplar_trace = eventually("a pushed transition histogram with an exemplar", Duration::from_secs(10), || {
        let requests = backend.requests.lock().unwrap().clone();
        async move {
            requests
                .iter()
                .rev()
                .flat_map(|r| &r.resource_metrics)
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .find_map(|m| match &m.data {
                    Some(Data::Histogram(h)) if m.name == "ordertrail_milestone_transition_seconds" => {
                        h.data_points.iter().flat_map(|p| &p.exemplars).map(|e| e.trace_id.clone()).next()
                    }
                    _ => None,
                })
        }
    })
    .await;
    assert_eq!(exemplar_trace, trace);
    let requests = backend.requests.lock().unwrap().clone();
    let last = requests.last().unwrap();
    let resource = last.resource_metrics[0].resource.as_ref().unwrap();
    assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"));
    let accepted = last.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "ordertrail_receiver_spans_accepted")
        .expect("pipeline counters are pushed too");
    match &accepted.data {
        Some(Data::Sum(sum)) => assert!(sum.is_monotonic && !sum.data_points.is_empty()),
        other => panic!("a monotonic sum, got {other:?}"),
    }
    server.shutdown(Duration::from_secs(5)).await;
}
