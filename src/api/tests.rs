//! The statuses the API answers with are defined once, in the core (`ordertrail_core::order::status`); these tests
//! hold the OpenAPI document and the proto comments to those definitions, so that a status added in the core
//! cannot be forgotten in a contract.

use ordertrail_core::order::{ExceptionStatus, MilestoneStatus, OrderSlaStatus, OrderStatus, SlaStatus};
use yaml_serde::Value;

fn names<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> Vec<String> {
    all.iter().map(|s| as_str(*s).to_string()).collect()
}

/// (OpenAPI schema, property, proto message, proto field, the allowed names)
fn status_fields() -> Vec<(&'static str, &'static str, &'static str, &'static str, Vec<String>)> {
    let order = names(OrderStatus::ALL, OrderStatus::as_str);
    let order_sla = names(OrderSlaStatus::ALL, OrderSlaStatus::as_str);
    let sla = names(SlaStatus::ALL, SlaStatus::as_str);
    vec![
        ("Milestone", "state", "Milestone", "state", names(MilestoneStatus::ALL, MilestoneStatus::as_str)),
        ("Milestone", "sla_status", "Milestone", "sla_status", sla.clone()),
        ("Exception", "status", "OrderException", "status", names(ExceptionStatus::ALL, ExceptionStatus::as_str)),
        ("Sla", "status", "Sla", "status", sla),
        ("Order", "status", "Order", "status", order.clone()),
        ("Order", "sla_status", "Order", "sla_status", order_sla.clone()),
        ("OrderSummary", "status", "OrderSummary", "status", order.clone()),
        ("OrderSummary", "sla_status", "OrderSummary", "sla_status", order_sla.clone()),
        ("", "status", "ListOrdersRequest", "status", order),
        ("", "sla_status", "ListOrdersRequest", "sla_status", order_sla),
    ]
}

fn enum_names(value: &Value) -> Vec<String> {
    value
        .get("enum")
        .and_then(Value::as_sequence)
        .map(|names| names.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn the_openapi_document_lists_exactly_the_core_statuses() {
    let document: Value = yaml_serde::from_str(include_str!("openapi.yaml")).unwrap();
    let parameters = document["paths"]["/v1/orders"]["get"]["parameters"].as_sequence().unwrap();
    for (schema, property, _, _, expected) in status_fields() {
        let listed = if schema.is_empty() {
            let parameter = parameters.iter().find(|p| p["name"].as_str() == Some(property)).unwrap();
            enum_names(&parameter["schema"])
        } else {
            enum_names(&document["components"]["schemas"][schema]["properties"][property])
        };
        assert_eq!(listed, expected, "openapi.yaml {schema}.{property}");
    }
}

/// The names a proto comment lists, e.g. `pending, met, breached, late or stopped (the order closed …).`
fn comment_names(comment: &str) -> Vec<String> {
    let list = comment.split(['(', '.']).next().unwrap_or_default();
    list.split(',')
        .flat_map(|part| part.split(" or "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn the_proto_comments_name_exactly_the_core_statuses() {
    let proto = include_str!("../../proto/ordertrail/v1/orders.proto");
    for (_, _, message, field, expected) in status_fields() {
        let body = proto.split(&format!("message {message} {{")).nth(1).unwrap_or_else(|| panic!("message {message}"));
        let body = body.split("\n}").next().unwrap();
        let lines: Vec<&str> = body.lines().map(str::trim).collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("string {field} = ")))
            .unwrap_or_else(|| panic!("{message}.{field}"));
        let comment = lines[..at].iter().rev().take_while(|l| l.starts_with("//")).last().copied().unwrap_or_default();
        let listed = comment_names(comment.trim_start_matches("//"));
        assert_eq!(listed, expected, "orders.proto {message}.{field}: `{comment}`");
    }
}
