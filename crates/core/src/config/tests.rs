use super::*;

#[test]
fn embedded_default_is_valid_and_has_the_distribution_taxonomy() {
    let config = parse(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_NAME).unwrap();
    let names: Vec<_> = config.taxonomy.milestones.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "order_capture",
            "credit_approval",
            "pricing_approval",
            "inventory_allocation",
            "pick_release",
            "pick_pack",
            "shipment_confirmation",
            "invoicing",
            "customer_notification",
            "order_cancellation"
        ]
    );
    assert!(config.taxonomy.milestones[8].off_path);
    assert_eq!(config.order_traces.close_on, vec![7]);
    assert!(config.correlation.order_keys.attributes.contains(&"app.order.id".to_string()));
}

#[test]
fn unknown_key_names_file_key_and_reason() {
    let err = parse("correlation:\n  inherit_wiat: 2s\n", "x.yaml").unwrap_err().to_string();
    assert!(err.starts_with("x.yaml: key `correlation"), "{err}");
    assert!(err.contains("unknown field `inherit_wiat`"), "{err}");
}

#[test]
fn a_wrong_type_names_its_line_and_column_in_the_file() {
    let err = parse("exporters:\n  otlp:\n    timeout: soon\n", "x.yaml").unwrap_err().to_string();
    assert!(err.starts_with("x.yaml: key `exporters.otlp.timeout`"), "{err}");
    assert!(err.contains("line 3 column 14"), "{err}");
}

#[test]
fn bad_regex_in_rule_is_located() {
    let yaml = DEFAULT_CONFIG_YAML.replace("(?i)invoice", "(?i)invoice(");
    let err = parse(&yaml, "y.yaml").unwrap_err().to_string();
    assert!(err.contains("rules["), "{err}");
    assert!(err.contains("span_name.regex"), "{err}");
    assert!(err.contains("invalid regular expression"), "{err}");
}

/// Walks the leaves of `value` outside lists, with their dotted paths.
fn leaves<'v>(value: &'v Value, path: String, out: &mut Vec<(String, &'v Value)>) {
    match value {
        Value::Mapping(map) => {
            for (key, child) in map {
                let key = key.as_str().unwrap_or("?");
                let path = if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
                leaves(child, path, out);
            }
        }
        other => out.push((path, other)),
    }
}

fn at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// A code default that is empty or absent means the code has no opinion: the taxonomy, rules, aliases and
/// targets describe a landscape and live in the default file only.
fn is_code_default(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        _ => true,
    }
}

#[test]
fn the_embedded_default_agrees_with_the_codes_defaults() {
    let stated: Value = yaml_serde::from_str(DEFAULT_CONFIG_YAML).unwrap();
    // The file read on its own: what it states, in the form the code serialises (durations, sizes).
    let file: RawConfig = yaml_serde::from_str(DEFAULT_CONFIG_YAML).unwrap();
    let file = yaml_serde::to_value(&file).unwrap();
    let code = yaml_serde::to_value(RawConfig::default()).unwrap();
    let mut stated_leaves = Vec::new();
    leaves(&stated, String::new(), &mut stated_leaves);
    let mut compared = 0;
    for (path, _) in &stated_leaves {
        let Some(code_value) = at(&code, path).filter(|v| is_code_default(v)) else { continue };
        assert_eq!(at(&file, path), Some(code_value), "default.yaml and the code disagree on `{path}`");
        compared += 1;
    }
    // The walk itself must not go wrong silently: default.yaml restates at least these many settings.
    assert!(compared >= 25, "only {compared} settings compared");
    // And every setting the code has a default for is in the effective default, so `print-default-config`
    // shows it.
    let effective = yaml_serde::to_value(default_raw()).unwrap();
    let mut code_leaves = Vec::new();
    leaves(&code, String::new(), &mut code_leaves);
    for (path, _) in code_leaves {
        assert!(at(&effective, &path).is_some(), "`{path}` is missing from the effective default");
    }
}

#[test]
fn the_effective_default_round_trips_through_its_yaml() {
    let printed = default_raw().to_yaml();
    let reread = parse_raw(&printed, "printed.yaml").unwrap();
    assert_eq!(reread, default_raw());
    reread.check("printed.yaml").unwrap();
}

#[test]
fn an_empty_file_is_the_embedded_default() {
    assert_eq!(parse_raw("", "empty.yaml").unwrap(), default_raw());
    assert_eq!(parse_raw("# nothing but a comment\n", "empty.yaml").unwrap(), default_raw());
    let err = parse("- a list\n", "list.yaml").unwrap_err().to_string();
    assert!(err.starts_with("list.yaml: key `(top level)`"), "{err}");
}

#[test]
fn a_partial_file_merges_over_the_default_maps_merging_and_lists_replacing() {
    let file = "\
correlation:
  order_keys:
    attributes: [sap.sales_order]
  aliases: []
taxonomy:
  exception_classes:
    carrier: { owner: transport-logistics }
exporters:
  otlp:
    endpoint: http://tempo:4317
api:
  trace_url_template: \"\"
";
    let config = parse(file, "partial.yaml").unwrap();
    let defaults = default_config();
    // A list replaces the default's.
    assert_eq!(config.correlation.order_keys.attributes, ["sap.sales_order"]);
    assert!(config.correlation.aliases.is_empty());
    // A map merges: the default's patterns stay next to the file's attributes, and its classes next to the new one.
    assert_eq!(config.correlation.order_keys.patterns.len(), defaults.correlation.order_keys.patterns.len());
    assert!(config.taxonomy.class("carrier").is_some() && config.taxonomy.class("policy").is_some());
    // What the file leaves out is the default's; an empty template turns the default's link off.
    assert_eq!(config.taxonomy.milestones.len(), defaults.taxonomy.milestones.len());
    assert_eq!(config.rules.len(), defaults.rules.len());
    assert_eq!(config.exporter.as_ref().map(|e| e.endpoint.as_str()), Some("http://tempo:4317"));
    assert_eq!(config.exporter.as_ref().map(|e| e.send_batch_size), Some(RawBatch::default().send_batch_size));
    assert_eq!(config.api.trace_url_template, None);
}

#[test]
fn a_file_with_its_own_milestones_brings_its_own_rules_targets_and_close_on() {
    let file = "\
taxonomy:
  milestones:
    - { name: booked, owner: sales }
    - { name: delivered, owner: logistics }
";
    let config = parse(file, "own.yaml").unwrap();
    assert_eq!(config.taxonomy.milestones.len(), 2);
    assert!(config.rules.is_empty(), "the default's rules name the default's milestones");
    assert!(config.sla.targets.is_empty());
    assert_eq!(config.order_traces.close_on, vec![1], "the last main-path milestone");
    // Everything else still comes from the default.
    assert_eq!(config.taxonomy.classes.len(), default_config().taxonomy.classes.len());
    assert_eq!(config.dimensions.len(), default_config().dimensions.len());
}

#[test]
fn the_shipped_backend_fragments_are_valid_on_their_own() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../collector-config");
    for fragment in ["ordertrail-to-tempo.yaml", "ordertrail-to-jaeger.yaml"] {
        let path = std::path::Path::new(root).join(fragment);
        let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.exporter.is_some(), "{fragment}");
        assert_eq!(config.rules.len(), default_config().rules.len(), "{fragment} keeps the default's rules");
    }
}

#[test]
fn a_null_or_empty_value_means_the_default() {
    let file = "\
correlation:
  order_keys:
  inherit_wait: ~
order_traces:
  actor_attributes:
storage:
  durability: ~
sla:
  calendars:
    weekdays:
      time_zone: Europe/Paris
      working_days:
api:
  trace_url_template: null
";
    let config = parse(file, "nulls.yaml").unwrap();
    let defaults = default_config();
    assert_eq!(config.correlation.order_keys.attributes, defaults.correlation.order_keys.attributes);
    assert_eq!(config.correlation.inherit_wait, defaults.correlation.inherit_wait);
    assert_eq!(config.order_traces.actor_attributes, defaults.order_traces.actor_attributes);
    assert_eq!(config.storage.durability, Durability::Durable);
    assert_eq!(config.api.trace_url_template, defaults.api.trace_url_template);
    let raw = parse_raw(file, "nulls.yaml").unwrap();
    assert_eq!(raw.sla.calendars["weekdays"].working_days, RawCalendar::default().working_days);
}

#[test]
fn a_key_that_only_the_default_states_is_named_as_the_defaults() {
    // The default's order_release target has an override by `segment`, a dimension this file no longer has.
    let err = parse("dimensions:\n  - { name: customer, attributes: [customer.id] }\n", "dims.yaml").unwrap_err();
    let err = err.to_string();
    assert!(err.starts_with("dims.yaml: key `sla.targets[0].overrides[0].dimension`"), "{err}");
    assert!(err.contains("`sla.targets` comes from the embedded default; state `sla.targets` in dims.yaml"), "{err}");
    // A key the file states is the file's own: no such note.
    let err = parse("sla:\n  targets:\n    - { name: t, from: order_capture, to: nowhere, within: 1h }\n", "own.yaml");
    let err = err.unwrap_err().to_string();
    assert!(err.contains("`nowhere` is not a milestone") && !err.contains("embedded default"), "{err}");
}

#[test]
fn a_default_class_can_be_changed_by_its_owner_alone_and_a_new_one_needs_an_owner() {
    let config = parse("taxonomy:\n  exception_classes:\n    policy: { owner: compliance }\n", "c.yaml").unwrap();
    assert_eq!(config.taxonomy.classes[config.taxonomy.policy].owner, "compliance");
    let file = "taxonomy:\n  exception_classes:\n    carrier: { description: late pickups }\n";
    let err = parse(file, "c.yaml").unwrap_err().to_string();
    assert!(err.starts_with("c.yaml: key `taxonomy.exception_classes.carrier.owner`: is required"), "{err}");
}

#[test]
fn a_key_given_twice_is_named_in_its_section_with_its_position() {
    let err = parse("correlation:\n  inherit_wait: 1s\n  inherit_wait: 2s\n", "twice.yaml").unwrap_err().to_string();
    assert!(err.starts_with("twice.yaml: key `correlation"), "{err}");
    assert!(err.contains("duplicate field `inherit_wait`") && err.contains("line 2"), "{err}");
}

#[test]
fn a_grpc_endpoint_given_as_host_and_port_uses_tls_unless_insecure_as_the_collector_does() {
    let endpoint = |otlp: &str| {
        let file = format!("exporters:\n  otlp:\n{otlp}");
        parse(&file, "exporter.yaml").map(|c| c.exporter.map(|e| (e.endpoint, e.tls.is_some())))
    };
    assert_eq!(endpoint("    endpoint: tempo:4317\n").unwrap(), Some(("https://tempo:4317".into(), true)));
    assert_eq!(
        endpoint("    endpoint: tempo:4317\n    tls: {insecure: true}\n").unwrap(),
        Some(("http://tempo:4317".into(), false))
    );
    assert_eq!(endpoint("    endpoint: 10.0.0.7:4317\n").unwrap(), Some(("https://10.0.0.7:4317".into(), true)));
    for bad in ["tempo", "tempo:port", ":4317", "tempo:4317/v1"] {
        let err = endpoint(&format!("    endpoint: \"{bad}\"\n")).unwrap_err().to_string();
        assert!(err.contains("exporters.otlp.endpoint") && err.contains("nor host:port"), "{bad}: {err}");
    }
}

#[test]
fn a_tls_minimum_version_may_be_written_as_a_number() {
    let dir = std::env::temp_dir();
    let file = dir.join(format!("ordertrail-tls-version-{}.pem", std::process::id()));
    std::fs::write(&file, "stand-in").unwrap();
    let path = file.display();
    for written in ["1.3", "\"1.3\""] {
        let yaml = format!("api:\n  http:\n    tls: {{cert_file: {path}, key_file: {path}, min_version: {written}}}\n");
        let config = parse(&yaml, "tls.yaml").unwrap();
        assert_eq!(config.api.http_tls.unwrap().min_version, crate::config::TlsVersion::Tls13, "{written}");
    }
    std::fs::remove_file(file).unwrap();
}
