//! How a configuration file combines with the embedded default, as the OpenTelemetry Collector combines its config
//! sources: maps merge key by key, at any depth; everything else (lists, strings, numbers, `null`) given in the
//! file replaces the default's value. A file therefore states only what differs: `exporters.otlp.endpoint` alone
//! adds an exporter, `correlation.order_keys.attributes: [sap.sales_order]` replaces the key attributes and keeps
//! the default's patterns, and `aliases: []` removes the default's aliases.
//!
//! One exception keeps the taxonomy coherent: rules, SLA targets and `close_on` name milestones, so a file that
//! states its own `taxonomy.milestones` does not inherit the default's `rules`, `sla.targets` or
//! `order_traces.close_on`. They would name milestones the file's taxonomy may not have.

use yaml_serde::{Mapping, Value};

/// Merges `overlay` (the file) into `base` (the default).
pub(crate) fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Removes from the default what names the default's milestones, when the file brings its own milestones.
pub(crate) fn decouple_taxonomy(default: &mut Value, file: &Value) {
    let file_has_milestones = file.get("taxonomy").and_then(|t| t.get("milestones")).is_some_and(|m| !m.is_null());
    if !file_has_milestones {
        return;
    }
    if let Some(root) = default.as_mapping_mut() {
        root.remove("rules");
        for (section, key) in [("sla", "targets"), ("order_traces", "close_on")] {
            if let Some(map) = root.get_mut(section).and_then(Value::as_mapping_mut) {
                map.remove(key);
            }
        }
    }
}

/// An empty document (or one with only comments) is an empty mapping, not a null value.
pub(crate) fn document(value: Value) -> Value {
    match value {
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    #[test]
    fn maps_merge_and_everything_else_replaces() {
        let mut base = yaml("a: {x: 1, y: [1, 2], z: {deep: true, keep: 1}}\nb: 2\n");
        merge(&mut base, yaml("a: {y: [3], z: {deep: false}, w: new}\nc: 4\n"));
        assert_eq!(base, yaml("a: {x: 1, y: [3], z: {deep: false, keep: 1}, w: new}\nb: 2\nc: 4\n"));
        merge(&mut base, yaml("a: null"));
        assert_eq!(base.get("a"), Some(&Value::Null), "null replaces too");
    }

    #[test]
    fn a_file_with_its_own_milestones_drops_what_names_the_defaults() {
        let mut default = yaml(
            "rules: [r]\nsla: {targets: [t], detection_delay: 1s}\norder_traces: {close_on: [x], passthrough: true}\n",
        );
        decouple_taxonomy(&mut default, &yaml("exporters: {}"));
        assert!(default.get("rules").is_some(), "unchanged without milestones in the file");
        decouple_taxonomy(&mut default, &yaml("taxonomy: {milestones: [{name: a, owner: b}]}"));
        assert_eq!(default, yaml("sla: {detection_delay: 1s}\norder_traces: {passthrough: true}\n"));
    }
}
