//! Every file in `collector-config/`: the OpenTelemetry Collector configurations name only components they define,
//! in pipelines of the right shape, and only keys those components document; the ordertrail fragments are valid
//! ordertrail configurations; the Kubernetes manifests are of the kinds the gateway needs (the chart test validates
//! them against the Kubernetes schemas).
//!
//! The collector is not available here, so its configuration schema is written down below, component by component,
//! from the contrib repository's documentation and `config.go` files (the `mapstructure` tags), at the versions
//! current in November 2026. A key that is not listed is a typo or a key of another version.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_serde::Value;

/// The documented keys of one component type, as dotted paths; a path ending in `.*` stands for a free-form map
/// below it (header names, TLS settings).
struct Component {
    kind: &'static str,
    name: &'static str,
    keys: Vec<String>,
}

/// `configretry.BackOffConfig`, under `retry_on_failure`.
const RETRY: &[&str] =
    &["enabled", "initial_interval", "randomization_factor", "multiplier", "max_interval", "max_elapsed_time"];

/// `exporterhelper.QueueBatchConfig`, under `sending_queue`.
const QUEUE: &[&str] =
    &["enabled", "num_consumers", "queue_size", "storage", "block_on_overflow", "sizer", "wait_for_result", "batch.*"];

/// The OTLP exporter's own client settings (`otlpexporter.Config`: `configgrpc.ClientConfig` and `TimeoutConfig`).
const OTLP_CLIENT: &[&str] = &[
    "endpoint",
    "compression",
    "headers.*",
    "timeout",
    "balancer_name",
    "authority",
    "read_buffer_size",
    "write_buffer_size",
    "wait_for_ready",
    "auth.authenticator",
    "keepalive.time",
    "keepalive.timeout",
    "keepalive.permit_without_stream",
    "tls.insecure",
    "tls.insecure_skip_verify",
    "tls.ca_file",
    "tls.ca_pem",
    "tls.cert_file",
    "tls.cert_pem",
    "tls.key_file",
    "tls.key_pem",
    "tls.server_name_override",
    "tls.min_version",
    "tls.max_version",
    "tls.reload_interval",
];

/// The OTLP receiver's server settings.
const OTLP_SERVER: &[&str] = &[
    "protocols.grpc.endpoint",
    "protocols.grpc.transport",
    "protocols.grpc.max_recv_msg_size_mib",
    "protocols.grpc.max_concurrent_streams",
    "protocols.grpc.read_buffer_size",
    "protocols.grpc.write_buffer_size",
    "protocols.grpc.include_metadata",
    "protocols.grpc.keepalive.*",
    "protocols.grpc.tls.*",
    "protocols.grpc.auth.authenticator",
    "protocols.http.endpoint",
    "protocols.http.max_request_body_size",
    "protocols.http.include_metadata",
    "protocols.http.cors.*",
    "protocols.http.tls.*",
    "protocols.http.auth.authenticator",
    "protocols.http.traces_url_path",
];

/// `keys` under `prefix`.
fn under(prefix: &str, keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") }).collect()
}

/// The OTLP exporter: its client settings with retry and queue.
fn otlp_exporter(prefix: &str, with_endpoint: bool) -> Vec<String> {
    let client: Vec<&str> = OTLP_CLIENT.iter().copied().filter(|k| with_endpoint || *k != "endpoint").collect();
    let section = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
    let mut keys = under(prefix, &client);
    keys.extend(under(&section("retry_on_failure"), RETRY));
    keys.extend(under(&section("sending_queue"), QUEUE));
    keys
}

fn components() -> Vec<Component> {
    // loadbalancing's own settings (its `config.go`), and under `protocol.otlp` the OTLP exporter's but for the
    // endpoint, which the resolver provides.
    let mut loadbalancing = under(
        "",
        &[
            "routing_key",
            "routing_attributes",
            "timeout",
            "resolver.static.hostnames",
            "resolver.dns.hostname",
            "resolver.dns.port",
            "resolver.dns.interval",
            "resolver.dns.timeout",
            "resolver.k8s.service",
            "resolver.k8s.ports",
            "resolver.k8s.timeout",
            "resolver.k8s.return_hostnames",
            "resolver.aws_cloud_map.namespace",
            "resolver.aws_cloud_map.service_name",
            "resolver.aws_cloud_map.health_status",
            "resolver.aws_cloud_map.interval",
            "resolver.aws_cloud_map.timeout",
            "resolver.aws_cloud_map.port",
        ],
    );
    loadbalancing.extend(under("retry_on_failure", RETRY));
    loadbalancing.extend(under("sending_queue", QUEUE));
    loadbalancing.extend(otlp_exporter("protocol.otlp", false));
    vec![
        Component { kind: "receivers", name: "otlp", keys: under("", OTLP_SERVER) },
        Component {
            kind: "processors",
            name: "memory_limiter",
            keys: under(
                "",
                &["check_interval", "limit_mib", "spike_limit_mib", "limit_percentage", "spike_limit_percentage"],
            ),
        },
        Component {
            kind: "processors",
            name: "batch",
            keys: under(
                "",
                &["timeout", "send_batch_size", "send_batch_max_size", "metadata_keys", "metadata_cardinality_limit"],
            ),
        },
        Component { kind: "exporters", name: "otlp", keys: otlp_exporter("", true) },
        Component { kind: "exporters", name: "loadbalancing", keys: loadbalancing },
    ]
}

/// A finding about one file.
fn problems(file: &str, text: &str) -> Vec<String> {
    let config: Value = match yaml_serde::from_str(text) {
        Ok(config) => config,
        Err(e) => return vec![format!("{file}: not YAML: {e}")],
    };
    let mut found = Vec::new();
    let Some(top) = config.as_mapping() else { return vec![format!("{file}: not a mapping")] };
    for key in top.keys().filter_map(Value::as_str) {
        if !["receivers", "processors", "exporters", "extensions", "connectors", "service"].contains(&key) {
            found.push(format!("{file}: unknown top-level section `{key}`"));
        }
    }
    let known = components();
    let mut defined: BTreeSet<(String, String)> = BTreeSet::new();
    for kind in ["receivers", "processors", "exporters"] {
        let Some(section) = config.get(kind).and_then(Value::as_mapping) else { continue };
        for (id, settings) in section {
            let id = id.as_str().unwrap_or_default().to_string();
            defined.insert((kind.to_string(), id.clone()));
            let type_name = id.split('/').next().unwrap_or_default();
            let Some(component) = known.iter().find(|c| c.kind == kind && c.name == type_name) else {
                found.push(format!("{file}: {kind}.{id}: component type `{type_name}` is not one this test knows"));
                continue;
            };
            let mut paths = Vec::new();
            flatten(settings, String::new(), &mut paths);
            for path in paths {
                if !documented(&component.keys, &path) {
                    found.push(format!("{file}: {kind}.{id}.{path}: not a documented key of `{type_name}`"));
                }
            }
            if type_name == "loadbalancing" {
                found.extend(loadbalancing_rules(file, &id, settings));
            }
        }
    }
    let pipelines = config.get("service").and_then(|s| s.get("pipelines")).and_then(Value::as_mapping);
    let Some(pipelines) = pipelines else {
        found.push(format!("{file}: no service.pipelines"));
        return found;
    };
    for (name, pipeline) in pipelines {
        let name = name.as_str().unwrap_or_default();
        let signal = name.split('/').next().unwrap_or_default();
        if !["traces", "metrics", "logs"].contains(&signal) {
            found.push(format!("{file}: pipeline `{name}` is not of traces, metrics or logs"));
        }
        for kind in ["receivers", "processors", "exporters"] {
            let ids = pipeline.get(kind).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default();
            if ids.is_empty() && kind != "processors" {
                found.push(format!("{file}: pipeline `{name}` has no {kind}"));
            }
            for id in ids.iter().filter_map(Value::as_str) {
                if !defined.contains(&(kind.to_string(), id.to_string())) {
                    found.push(format!("{file}: pipeline `{name}` names {kind} `{id}`, which is not defined"));
                }
            }
        }
    }
    found
}

/// The rules the loadbalancing exporter's `Validate` and its resolver setup apply.
fn loadbalancing_rules(file: &str, id: &str, settings: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let routing_key = settings.get("routing_key").and_then(Value::as_str).unwrap_or("traceID");
    if !["traceID", "service", "resource", "metric", "streamID", "attributes"].contains(&routing_key) {
        found.push(format!("{file}: exporters.{id}.routing_key: `{routing_key}` is not a routing key"));
    }
    let attributes = settings.get("routing_attributes").is_some();
    if attributes != (routing_key == "attributes") {
        found.push(format!(
            "{file}: exporters.{id}: routing_attributes go with routing_key `attributes`, and only with it"
        ));
    }
    let resolvers = settings.get("resolver").and_then(Value::as_mapping).map_or(0, |r| r.len());
    if resolvers != 1 {
        found.push(format!("{file}: exporters.{id}.resolver: exactly one resolver, not {resolvers}"));
    }
    found
}

/// The dotted paths of every leaf below `value` (a list is a leaf).
fn flatten(value: &Value, prefix: String, paths: &mut Vec<String>) {
    match value.as_mapping() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let key = key.as_str().unwrap_or_default();
                let path = if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
                flatten(child, path, paths);
            }
        }
        _ => {
            if !prefix.is_empty() {
                paths.push(prefix);
            }
        }
    }
}

fn documented(keys: &[String], path: &str) -> bool {
    keys.iter().any(|key| match key.strip_suffix(".*") {
        Some(map) => path.strip_prefix(map).is_some_and(|rest| rest.starts_with('.')) || path == map,
        None => *key == path,
    })
}

fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("collector-config")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn is_manifest(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("apiVersion:"))
}

fn is_ordertrail_fragment(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ordertrail-"))
}

#[test]
fn every_collector_configuration_names_defined_components_and_documented_keys() {
    let mut checked = 0;
    for path in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        if is_manifest(&text) || is_ordertrail_fragment(&path) {
            continue;
        }
        let found = problems(&path.display().to_string(), &text);
        assert!(found.is_empty(), "{}", found.join("\n"));
        checked += 1;
    }
    assert!(checked >= 2, "the gateway configurations were checked");
}

#[test]
fn every_ordertrail_fragment_is_a_valid_configuration() {
    let fragments: Vec<PathBuf> = files().into_iter().filter(|p| is_ordertrail_fragment(p)).collect();
    assert!(fragments.len() >= 3);
    for fragment in fragments {
        let output = Command::new(env!("CARGO_BIN_EXE_ordertrail")).arg("validate-config").arg(&fragment).output();
        let output = output.unwrap();
        assert!(output.status.success(), "{}: {}", fragment.display(), String::from_utf8_lossy(&output.stderr));
    }
    // Behind a gateway that sends the raw spans on, ordertrail does not re-emit them.
    let printed = Command::new(env!("CARGO_BIN_EXE_ordertrail"))
        .args(["validate-config", "collector-config/ordertrail-behind-gateway.yaml", "--print"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&printed.stdout).contains("passthrough: false"));
}

#[test]
fn the_gateways_route_by_trace_id_and_tee_raw_spans_while_ordertrail_does_not() {
    for file in ["collector-config/gateway-k8s.yaml", "collector-config/gateway-static.yaml"] {
        let config: Value = yaml_serde::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let exporters = config["service"]["pipelines"]["traces"]["exporters"].as_sequence().unwrap();
        let names: Vec<&str> = exporters.iter().filter_map(Value::as_str).collect();
        assert!(names.contains(&"loadbalancing/ordertrail"), "{file}");
        assert!(names.iter().any(|n| n.starts_with("otlp/")), "{file}: the raw spans go to the backend too");
        assert_eq!(config["exporters"]["loadbalancing/ordertrail"]["routing_key"].as_str(), Some("traceID"), "{file}");
    }
}

#[test]
fn the_checker_finds_undefined_components_unknown_keys_and_a_misrouted_exporter() {
    let broken = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpont: 0.0.0.0:4317\n\
        exporters:\n  loadbalancing:\n    routing_key: traceID\n    routing_attributes: [order.id]\n\
        \x20   protocol:\n      otlp:\n        endpoint: x:4317\n    resolver:\n      static:\n        hostnames: [a]\n\
        \x20     dns:\n        hostname: b\n\
        service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [loadbalancing]\n";
    let found = problems("broken.yaml", broken).join("\n");
    for expected in [
        "receivers.otlp.protocols.grpc.endpont: not a documented key",
        "exporters.loadbalancing.protocol.otlp.endpoint: not a documented key",
        "routing_attributes go with routing_key `attributes`",
        "exactly one resolver, not 2",
        "names processors `batch`, which is not defined",
    ] {
        assert!(found.contains(expected), "missing `{expected}` in:\n{found}");
    }
}

#[test]
fn the_gateway_manifests_are_the_rbac_the_k8s_resolver_needs() {
    let text = std::fs::read_to_string("collector-config/gateway-k8s-rbac.yaml").unwrap();
    let kinds: Vec<String> = text
        .split("\n---\n")
        .filter_map(|doc| yaml_serde::from_str::<Value>(doc).ok())
        .filter_map(|doc| doc["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding"]);
    assert!(text.contains("endpointslices") && text.contains("watch"));
}
