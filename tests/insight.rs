//! Insight through the real server: the simulator's history (a slow warehouse, a failing carrier mapping, a credit
//! backlog) sent by the real OpenTelemetry SDK, then the orders at risk, the delay model, the recurring patterns and
//! the bottlenecks over HTTP and gRPC, the at-risk spans in the order traces with their recommended action, and the
//! model and patterns kept across a restart.

mod common;

use common::*;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use ordertrail::api::proto::insight_service_client::InsightServiceClient;
use ordertrail::api::proto::{GetBottlenecksRequest, GetDelayModelRequest, ListAtRiskRequest, ListPatternsRequest};
use ordertrail_simulator::{self as simulator, SimulatorOptions};
use serde_json::Value as Json;
use std::time::Duration;

const SHIPDATE: &str = "field ShipDate: expected yyyy-MM-dd, got <date>";

async fn get_json(url: &str) -> Json {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_puts_orders_at_risk_groups_its_failures_and_is_remembered_across_a_restart() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = test_config(sink_addr, dir.path(), "");
        config.sla.detection_delay = Duration::from_secs(2);
        config
    };
    let server = start_server(config()).await;
    simulator::run(&SimulatorOptions {
        endpoint: format!("http://{}", server.grpc_addr.unwrap()),
        happy_orders: 0,
        history_orders: 150,
        ..Default::default()
    })
    .await
    .unwrap();
    let api = format!("http://{}", server.api_http_addr.unwrap());

    // In-flight orders of the slow warehouse or the failing carrier are at risk, by what their kind took before.
    let at_risk = eventually("orders at risk", Duration::from_secs(30), || {
        let url = format!("{api}/v1/risk");
        async move {
            let body = get_json(&url).await;
            (body["orders"].as_array().is_some_and(|o| !o.is_empty())).then_some(body)
        }
    })
    .await;
    let clocks = at_risk["orders"].as_array().unwrap();
    for c in clocks {
        let p = c["probability"].as_f64().expect("a learned probability, not the fixed share");
        assert!(p >= 0.5, "{c}");
        assert!(c["basis"].as_str().unwrap().contains("past orders"), "{c}");
    }
    assert!(
        clocks.iter().any(|c| c["basis"].as_str().unwrap().contains("warehouse WH-SOUTH")
            || c["basis"].as_str().unwrap().contains("carrier Baltic Road Lines")),
        "a known cause decides some: {clocks:?}"
    );
    let first = clocks[0]["order_id"].as_str().unwrap().to_string();
    let order = get_json(&format!("{api}/v1/orders/{first}")).await;
    let target = clocks[0]["target"].clone();
    let sla = order["slas"].as_array().unwrap().iter().find(|s| s["target"] == target).expect("the clock").clone();
    assert!(sla["at_risk_at"].is_string(), "marked in the record: {sla}");
    assert!(sla["risk_probability"].as_f64().unwrap() >= 0.5);

    // The at-risk span is in the order trace, with its owner and basis.
    let trace = ordertrail_core::ids::order_trace_id(&first);
    let target_name = target.as_str().unwrap().to_string();
    let warning = eventually("the at-risk span in the order trace", Duration::from_secs(15), || {
        let of_target = |r: &Received| {
            r.span.attributes.iter().any(|kv| {
                kv.key == "order.sla.target"
                    && matches!(&kv.value, Some(v) if matches!(&v.value, Some(Value::StringValue(s)) if *s == target_name))
            })
        };
        let found = sink.snapshot().into_iter().find(|r| r.span.name.ends_with(" at risk") && r.span.trace_id == trace && of_target(r));
        async move { found }
    })
    .await;
    let attr = |key: &str| {
        warning.span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
    };
    assert!(
        attr("order.risk.basis").is_some() && attr("order.owner").is_some() && attr("order.risk.probability").is_some()
    );

    // The model, by target and value: WH-SOUTH's releases breach far more often than all orders'.
    let model = get_json(&format!("{api}/v1/risk/model")).await;
    let release = model["targets"].as_array().unwrap().iter().find(|t| t["target"] == "order_release").unwrap().clone();
    let south = release["values"].as_array().unwrap().iter().find(|v| v["value"] == "WH-SOUTH").unwrap().clone();
    assert!(
        south["breach_share"].as_f64().unwrap() > release["all"]["breach_share"].as_f64().unwrap() + 0.3,
        "{south} vs {}",
        release["all"]
    );
    let samples = release["all"]["samples"].as_u64().unwrap();
    assert!(samples >= 100, "{samples}");

    // The carrier mapping failure is one pattern over many orders, with its playbook.
    let patterns = get_json(&format!("{api}/v1/patterns?class=integration")).await;
    let shipdate = patterns["patterns"].as_array().unwrap().iter().find(|p| p["template"] == SHIPDATE).unwrap().clone();
    assert_eq!(shipdate["system"], "integration-middleware");
    assert_eq!(shipdate["playbook"], "carrier-status-mapping");
    let affected = shipdate["orders_affected"].as_u64().unwrap();
    assert!(affected >= 5 && affected == shipdate["total"].as_u64().unwrap(), "{shipdate}");

    // The same over gRPC.
    let mut grpc = InsightServiceClient::connect(format!("http://{}", server.api_grpc_addr.unwrap())).await.unwrap();
    let listed = grpc
        .list_patterns(ListPatternsRequest { class: "integration".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let by_grpc = listed.patterns.iter().find(|p| p.template == SHIPDATE).unwrap();
    assert_eq!((by_grpc.orders_affected, by_grpc.playbook.as_str()), (affected, "carrier-status-mapping"));
    let risk = grpc.list_at_risk(ListAtRiskRequest::default()).await.unwrap().into_inner();
    // More clocks may have reached their risk point since; none is taken back.
    for c in clocks {
        let (order, target) = (c["order_id"].as_str().unwrap(), c["target"].as_str().unwrap());
        assert!(risk.orders.iter().any(|r| r.order_id == order && r.target == target), "{order} {target}");
    }
    let delay = grpc.get_delay_model(GetDelayModelRequest {}).await.unwrap().into_inner();
    assert!(delay.targets.iter().any(|t| t.target == "order_release" && t.all.unwrap().samples == samples));
    let bottlenecks = grpc
        .get_bottlenecks(GetBottlenecksRequest { to: "pick_release".into(), dimension: "warehouse".into() })
        .await
        .unwrap()
        .into_inner();
    let values = &bottlenecks.transitions[0].dimensions[0].values;
    assert_eq!(values[0].value, "WH-SOUTH", "the slow warehouse stands out: {values:?}");
    assert!(values[0].breach_share > 0.5);
    let refused = grpc.list_at_risk(ListAtRiskRequest { target: "nonsense".into(), ..Default::default() }).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::InvalidArgument);
    server.shutdown(Duration::from_secs(10)).await;

    // After a restart on the same store, the model and the patterns are still there.
    let server = start_server(config()).await;
    let api = format!("http://{}", server.api_http_addr.unwrap());
    let model = get_json(&format!("{api}/v1/risk/model")).await;
    let release = model["targets"].as_array().unwrap().iter().find(|t| t["target"] == "order_release").unwrap().clone();
    assert_eq!(release["all"]["samples"].as_u64().unwrap(), samples, "the model was kept");
    let patterns = get_json(&format!("{api}/v1/patterns?class=integration")).await;
    let kept = patterns["patterns"].as_array().unwrap().iter().find(|p| p["template"] == SHIPDATE).unwrap().clone();
    assert_eq!(kept["total"], shipdate["total"], "the patterns were kept");
    server.shutdown(Duration::from_secs(10)).await;
}
