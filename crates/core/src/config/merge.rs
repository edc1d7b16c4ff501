//! How a configuration file combines with the embedded default, as the OpenTelemetry Collector combines its config
//! sources: maps merge key by key, at any depth; everything else (lists, strings, numbers, `null`) given in the
//! file replaces the default's value. A file therefore states only what differs: `exporters.otlp.endpoint` alone
//! adds an exporter, `correlation.order_keys.attributes: [sap.sales_order]` replaces the key attributes and keeps
//! the default's patterns, and `aliases: []` removes the default's aliases.
//!
//! One exception keeps the taxonomy coherent: rules, SLA targets and `close_on` name milestones, so a file that
//! states its own `taxonomy.milestones` does not inherit the default's `rules`, `sla.targets` or
//! `order_traces.close_on`. They would name milestones the file's taxonomy may not have. Playbooks name milestones,
//! classes, their owning teams, SLA targets' milestones and dimensions, so a file that states any of its own
//! taxonomy, SLA targets or dimensions does not inherit the default's `playbooks`.
//!
//! A `null` (or an empty value) in the file states nothing: it is dropped before merging, so the default applies.

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
    let states = |key: &str| file.get("taxonomy").and_then(|t| t.get(key)).is_some_and(|m| !m.is_null());
    let own_targets = file.get("sla").and_then(|s| s.get("targets")).is_some_and(|t| !t.is_null());
    let own_dimensions = file.get("dimensions").is_some_and(|d| !d.is_null());
    let own_references = states("milestones") || states("exception_classes") || own_targets || own_dimensions;
    if own_references && file.get("playbooks").is_none() {
        if let Some(root) = default.as_mapping_mut() {
            root.remove("playbooks");
        }
    }
    let file_has_milestones = states("milestones");
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

/// The value with every mapping entry whose value is `null` removed, at any depth.
pub(crate) fn without_nulls(value: Value) -> Value {
    match value {
        Value::Mapping(map) => {
            Value::Mapping(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect())
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// Where `key` (a path such as `sla.targets[0].overrides[0].dimension`) leaves what `stated` contains, as the path
/// a file would state to replace the value: the first list on the way (lists replace as a whole), else the key
/// itself (maps merge, so a single key can be stated). `None` when `stated` holds all of `key`, or when `key` is no
/// path (`(top level)`).
pub(crate) fn first_unstated(stated: &Value, key: &str) -> Option<String> {
    if key.starts_with('(') {
        return None;
    }
    let mut current = Some(stated);
    let mut path = String::new();
    for segment in key.split('.') {
        let (name, indices) = segment.split_once('[').unwrap_or((segment, ""));
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        current = current.and_then(|value| value.get(name));
        let is_list = !indices.is_empty();
        match current {
            // Not stated from here on: the first list from here is what the file would replace.
            None if is_list => return Some(path),
            None => continue,
            Some(value) => {
                let mut value = value;
                for index in indices.split('[').filter(|i| !i.is_empty()) {
                    let index: usize = index.trim_end_matches(']').parse().ok()?;
                    // A list the file states is the file's down to its last item.
                    value = value.get(index)?;
                }
                current = Some(value);
            }
        }
    }
    current.is_none().then_some(path)
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
        assert_eq!(without_nulls(yaml("a: {b: null, c: [{d: ~, e: 1}]}\nf: null\n")), yaml("a: {c: [{e: 1}]}"));
    }

    #[test]
    fn the_first_unstated_part_of_a_key_is_where_the_default_begins() {
        let stated = yaml("sla: {detection_delay: 1s}\ndimensions: [{name: a}]\n");
        assert_eq!(first_unstated(&stated, "sla.targets[0].overrides[0].dimension").as_deref(), Some("sla.targets"));
        assert_eq!(first_unstated(&stated, "rules[2].milestone").as_deref(), Some("rules"));
        assert_eq!(first_unstated(&stated, "sla.exception_class").as_deref(), Some("sla.exception_class"));
        assert_eq!(first_unstated(&stated, "api.http.endpoint").as_deref(), Some("api.http.endpoint"));
        assert_eq!(first_unstated(&stated, "dimensions[0].name"), None);
        assert_eq!(first_unstated(&stated, "sla.detection_delay"), None);
        assert_eq!(first_unstated(&stated, "(top level)"), None);
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
