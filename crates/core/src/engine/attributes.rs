//! Reading and writing OTLP attributes without allocating on the common paths.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue};

/// The value of attribute `key`, if present.
pub(crate) fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

/// The value as a string, for scalar values.
pub(crate) fn scalar_string(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::StringValue(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        Value::IntValue(i) => Some(std::borrow::Cow::Owned(i.to_string())),
        Value::DoubleValue(d) => Some(std::borrow::Cow::Owned(d.to_string())),
        Value::BoolValue(b) => Some(std::borrow::Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// The value as a number, for numbers and numeric strings.
pub(crate) fn number(value: &Value) -> Option<f64> {
    match value {
        Value::IntValue(i) => Some(*i as f64),
        Value::DoubleValue(d) => Some(*d),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Calls `f` with every non-empty string a key attribute names: the value itself, or each element of an array.
pub(crate) fn for_each_key_string(value: &Value, mut f: impl FnMut(&str)) {
    let mut one = |v: &Value| match v {
        Value::StringValue(s) if !s.trim().is_empty() => f(s.trim()),
        Value::IntValue(i) => f(&i.to_string()),
        _ => {}
    };
    match value {
        Value::ArrayValue(array) => array.values.iter().filter_map(|v| v.value.as_ref()).for_each(&mut one),
        other => one(other),
    }
}

pub(crate) fn string(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

pub(crate) fn int(key: &str, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

pub(crate) fn double(key: &str, value: f64) -> KeyValue {
    kv(key, Value::DoubleValue(value))
}

pub(crate) fn boolean(key: &str, value: bool) -> KeyValue {
    kv(key, Value::BoolValue(value))
}

pub(crate) fn string_array(key: &str, values: &[String]) -> KeyValue {
    let values = values.iter().map(|v| AnyValue { value: Some(Value::StringValue(v.clone())) }).collect();
    kv(key, Value::ArrayValue(ArrayValue { values }))
}

/// Sets `kv.key` to `kv.value`, replacing an attribute of the same key.
pub(crate) fn upsert(attributes: &mut Vec<KeyValue>, kv: KeyValue) {
    match attributes.iter_mut().find(|a| a.key == kv.key) {
        Some(existing) => *existing = kv,
        None => attributes.push(kv),
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}
