//! The registry through its three renderings.

use super::*;
use crate::text::{format_float, format_timestamp};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;

const TRACE: [u8; 16] = [0xab; 16];
const SPAN: [u8; 8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];

fn exemplar(timestamp_unix_nanos: u64) -> Option<Exemplar> {
    Some(Exemplar { trace_id: TRACE, span_id: SPAN, timestamp_unix_nanos })
}

fn attribute(kv: &KeyValue) -> (String, Option<any_value::Value>) {
    (kv.key.clone(), kv.value.clone().and_then(|v| v.value))
}

fn metrics(request: &ExportMetricsServiceRequest) -> &[otlp::Metric] {
    &request.resource_metrics[0].scope_metrics[0].metrics
}

#[test]
fn counter_renders_with_total_suffix_in_both_formats() {
    let registry = Registry::new(10);
    let orders = registry.counter("ordertrail_orders", "Orders seen.", &["channel"]);
    orders.add(&["edi"], 2);
    orders.add(&["web"], 1);
    orders.add(&["edi"], 3);
    assert_eq!(
        registry.render_prometheus(),
        "# HELP ordertrail_orders_total Orders seen.\n\
         # TYPE ordertrail_orders_total counter\n\
         ordertrail_orders_total{channel=\"edi\"} 5\n\
         ordertrail_orders_total{channel=\"web\"} 1\n"
    );
    assert_eq!(
        registry.render_openmetrics(),
        "# HELP ordertrail_orders Orders seen.\n\
         # TYPE ordertrail_orders counter\n\
         ordertrail_orders_total{channel=\"edi\"} 5\n\
         ordertrail_orders_total{channel=\"web\"} 1\n\
         # EOF\n"
    );
}

#[test]
fn set_total_mirrors_an_external_counter() {
    let registry = Registry::new(10);
    let spans = registry.counter("ordertrail_spans_received", "Spans.", &[]);
    spans.set_total(&[], 41);
    spans.set_total(&[], 42);
    assert!(registry.render_prometheus().contains("\nordertrail_spans_received_total 42\n"));
}

#[test]
fn a_metric_without_labels_shows_zero_from_the_start() {
    let registry = Registry::new(10);
    registry.counter("ordertrail_requests", "", &[]);
    registry.gauge("ordertrail_queue_depth", "", &[]);
    assert_eq!(
        registry.render_prometheus(),
        "# TYPE ordertrail_requests_total counter\n\
         ordertrail_requests_total 0\n\
         # TYPE ordertrail_queue_depth gauge\n\
         ordertrail_queue_depth 0.0\n"
    );
}

#[test]
fn gauge_renders_and_replace_all_drops_unlisted_series() {
    let registry = Registry::new(10);
    let open = registry.gauge("ordertrail_open_orders", "Open orders by stage.", &["stage"]);
    open.set(&["picked"], 3.0);
    open.set(&["shipped"], 7.5);
    assert_eq!(
        registry.render_openmetrics(),
        "# HELP ordertrail_open_orders Open orders by stage.\n\
         # TYPE ordertrail_open_orders gauge\n\
         ordertrail_open_orders{stage=\"picked\"} 3.0\n\
         ordertrail_open_orders{stage=\"shipped\"} 7.5\n\
         # EOF\n"
    );
    open.replace_all(vec![(vec!["invoiced".into()], 2.0), (vec!["picked".into()], 1.0)]);
    let text = registry.render_prometheus();
    assert!(text.contains("ordertrail_open_orders{stage=\"invoiced\"} 2.0\n"), "{text}");
    assert!(text.contains("ordertrail_open_orders{stage=\"picked\"} 1.0\n"), "{text}");
    assert!(!text.contains("shipped"), "{text}");
    open.replace_all(Vec::new());
    assert!(!registry.render_prometheus().contains("ordertrail_open_orders{"));
}

#[test]
fn replace_all_beyond_the_limit_uses_the_overflow_series() {
    let registry = Registry::new(1);
    let open = registry.gauge("ordertrail_open_orders", "", &["stage"]);
    open.replace_all(vec![(vec!["b".into()], 2.0), (vec!["a".into()], 1.0), (vec!["c".into()], 3.0)]);
    assert_eq!(
        registry.render_prometheus(),
        "# TYPE ordertrail_open_orders gauge\n\
         ordertrail_open_orders{stage=\"a\"} 1.0\n\
         ordertrail_open_orders{stage=\"\",otel_metric_overflow=\"true\"} 3.0\n"
    );
    assert_eq!(registry.overflowed(), 2);
    open.replace_all(vec![(vec!["a".into()], 1.0)]);
    assert!(!registry.render_prometheus().contains("otel_metric_overflow"));
}

#[test]
fn histogram_renders_cumulative_buckets_unit_and_exemplars() {
    let registry = Registry::new(10);
    let transition = registry.histogram(
        "ordertrail_milestone_transition_seconds",
        "Time between milestones.",
        "seconds",
        &["to"],
        &[0.5, 1.0, 60.0],
    );
    transition.observe(&["shipped"], 0.25, None);
    transition.observe(&["shipped"], 0.75, exemplar(1_700_000_000_123_000_000));
    transition.observe(&["shipped"], 1.0, None);
    transition.observe(&["shipped"], 90.0, exemplar(1_700_000_001_000_000_000));
    assert_eq!(
        registry.render_prometheus(),
        "# HELP ordertrail_milestone_transition_seconds Time between milestones.\n\
         # TYPE ordertrail_milestone_transition_seconds histogram\n\
         ordertrail_milestone_transition_seconds_bucket{to=\"shipped\",le=\"0.5\"} 1\n\
         ordertrail_milestone_transition_seconds_bucket{to=\"shipped\",le=\"1.0\"} 3\n\
         ordertrail_milestone_transition_seconds_bucket{to=\"shipped\",le=\"60.0\"} 3\n\
         ordertrail_milestone_transition_seconds_bucket{to=\"shipped\",le=\"+Inf\"} 4\n\
         ordertrail_milestone_transition_seconds_sum{to=\"shipped\"} 92.0\n\
         ordertrail_milestone_transition_seconds_count{to=\"shipped\"} 4\n"
    );
    let trace = "abababababababababababababababab";
    assert_eq!(
        registry.render_openmetrics(),
        format!(
            "# HELP ordertrail_milestone_transition_seconds Time between milestones.\n\
             # TYPE ordertrail_milestone_transition_seconds histogram\n\
             # UNIT ordertrail_milestone_transition_seconds seconds\n\
             ordertrail_milestone_transition_seconds_bucket{{to=\"shipped\",le=\"0.5\"}} 1\n\
             ordertrail_milestone_transition_seconds_bucket{{to=\"shipped\",le=\"1.0\"}} 3 \
             # {{trace_id=\"{trace}\",span_id=\"0102030405060708\"}} 0.75 1700000000.123\n\
             ordertrail_milestone_transition_seconds_bucket{{to=\"shipped\",le=\"60.0\"}} 3\n\
             ordertrail_milestone_transition_seconds_bucket{{to=\"shipped\",le=\"+Inf\"}} 4 \
             # {{trace_id=\"{trace}\",span_id=\"0102030405060708\"}} 90.0 1700000001.0\n\
             ordertrail_milestone_transition_seconds_sum{{to=\"shipped\"}} 92.0\n\
             ordertrail_milestone_transition_seconds_count{{to=\"shipped\"}} 4\n\
             # EOF\n"
        )
    );
}

#[test]
fn the_latest_exemplar_per_bucket_wins_and_nan_is_ignored() {
    let registry = Registry::new(10);
    let h = registry.histogram("h_seconds", "", "seconds", &[], &[1.0]);
    h.observe(&[], 0.1, exemplar(1_000_000_000));
    h.observe(&[], 0.2, exemplar(2_000_000_000));
    h.observe(&[], f64::NAN, exemplar(3_000_000_000));
    let text = registry.render_openmetrics();
    assert!(text.contains("} 0.2 2.0\n"), "{text}");
    assert!(text.contains("h_seconds_count 2\n"), "{text}");
}

#[test]
fn negative_observations_leave_out_sum_and_count_in_openmetrics_only() {
    let registry = Registry::new(10);
    let skew = registry.histogram("clock_skew_seconds", "", "seconds", &[], &[0.0, 1.0]);
    skew.observe(&[], -0.5, None);
    assert!(!registry.render_openmetrics().contains("clock_skew_seconds_sum"));
    assert!(registry.render_prometheus().contains("clock_skew_seconds_sum -0.5\n"));
    let point = match &metrics(&registry.to_otlp(Resource::default(), InstrumentationScope::default(), 1, 2))[0].data {
        Some(otlp::metric::Data::Histogram(h)) => h.data_points[0].clone(),
        other => panic!("expected a histogram, got {other:?}"),
    };
    assert_eq!((point.sum, point.min, point.count), (None, Some(-0.5), 1));
}

#[test]
fn label_values_and_help_are_escaped() {
    let registry = Registry::new(10);
    let c = registry.counter("weird", "Back\\slash \"quoted\"\nnext line.", &["value"]);
    c.add(&["a\\b\"c\nd"], 1);
    let prometheus = registry.render_prometheus();
    assert!(prometheus.contains("# HELP weird_total Back\\\\slash \"quoted\"\\nnext line.\n"), "{prometheus}");
    assert!(prometheus.contains("weird_total{value=\"a\\\\b\\\"c\\nd\"} 1\n"), "{prometheus}");
    let openmetrics = registry.render_openmetrics();
    assert!(openmetrics.contains("# HELP weird Back\\\\slash \\\"quoted\\\"\\nnext line.\n"), "{openmetrics}");
}

#[test]
fn new_label_sets_beyond_the_limit_go_to_one_overflow_series() {
    let registry = Registry::new(2);
    let c = registry.counter("orders", "", &["customer", "channel"]);
    c.add(&["c1", "edi"], 1);
    c.add(&["c2", "edi"], 1);
    c.add(&["c3", "edi"], 1);
    c.add(&["c4", "web"], 5);
    c.add(&["c1", "edi"], 1);
    assert_eq!(registry.overflowed(), 2);
    assert_eq!(
        registry.render_prometheus(),
        "# TYPE orders_total counter\n\
         orders_total{customer=\"c1\",channel=\"edi\"} 2\n\
         orders_total{customer=\"c2\",channel=\"edi\"} 1\n\
         orders_total{customer=\"\",channel=\"\",otel_metric_overflow=\"true\"} 6\n"
    );
    let request = registry.to_otlp(Resource::default(), InstrumentationScope::default(), 1, 2);
    let points = match &metrics(&request)[0].data {
        Some(otlp::metric::Data::Sum(sum)) => sum.data_points.clone(),
        other => panic!("expected a sum, got {other:?}"),
    };
    assert_eq!(points.len(), 3);
    assert_eq!(
        points[2].attributes.iter().map(attribute).collect::<Vec<_>>(),
        vec![(OVERFLOW_ATTRIBUTE.to_string(), Some(any_value::Value::BoolValue(true)))]
    );
}

#[test]
fn registering_a_name_twice_returns_the_same_family() {
    let registry = Registry::new(10);
    registry.counter("orders", "", &["channel"]).add(&["edi"], 1);
    registry.counter("orders", "", &["channel"]).add(&["edi"], 1);
    assert!(registry.render_prometheus().contains("orders_total{channel=\"edi\"} 2\n"));
}

#[test]
#[should_panic(expected = "registered twice with different definitions")]
fn registering_a_name_with_another_kind_panics() {
    let registry = Registry::new(10);
    registry.counter("orders", "", &[]);
    registry.gauge("orders", "", &[]);
}

#[test]
#[should_panic(expected = "same sample names")]
fn clashing_sample_names_panic() {
    let registry = Registry::new(10);
    registry.counter("orders", "", &[]);
    registry.gauge("orders_total", "", &[]);
}

#[test]
#[should_panic(expected = "invalid metric name")]
fn an_invalid_name_panics() {
    Registry::new(10).gauge("orders-open", "", &[]);
}

#[test]
#[should_panic(expected = "must end with its unit")]
fn a_unit_must_end_the_name() {
    Registry::new(10).histogram("transition", "", "seconds", &[], &[1.0]);
}

#[test]
fn otlp_carries_cumulative_sums_gauges_and_histograms_with_exemplars() {
    let registry = Registry::new(10);
    registry.counter("orders", "Orders.", &["channel"]).add(&["edi"], 3);
    registry.gauge("open", "Open.", &[]).set(&[], 4.5);
    let h = registry.histogram("transition_seconds", "Transitions.", "seconds", &["to"], &[1.0, 10.0]);
    h.observe(&["shipped"], 0.5, None);
    h.observe(&["shipped"], 5.0, exemplar(1_234));
    h.observe(&["shipped"], 7.0, None);
    h.observe(&["shipped"], 50.0, None);
    registry.gauge("unused", "", &["x"]);
    let resource = Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("ordertrail".into())) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let request = registry.to_otlp(resource.clone(), InstrumentationScope::default(), 100, 200);
    assert_eq!(request.resource_metrics[0].resource, Some(resource));
    let metrics = metrics(&request);
    assert_eq!(metrics.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["orders", "open", "transition_seconds"]);

    let Some(otlp::metric::Data::Sum(sum)) = &metrics[0].data else { panic!("orders is not a sum") };
    assert!(sum.is_monotonic);
    assert_eq!(sum.aggregation_temporality, otlp::AggregationTemporality::Cumulative as i32);
    let point = &sum.data_points[0];
    assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (100, 200));
    assert_eq!(point.value, Some(otlp::number_data_point::Value::AsInt(3)));
    assert_eq!(
        point.attributes.iter().map(attribute).collect::<Vec<_>>(),
        vec![("channel".to_string(), Some(any_value::Value::StringValue("edi".into())))]
    );

    let Some(otlp::metric::Data::Gauge(gauge)) = &metrics[1].data else { panic!("open is not a gauge") };
    assert_eq!(gauge.data_points[0].value, Some(otlp::number_data_point::Value::AsDouble(4.5)));

    assert_eq!(metrics[2].unit, "s");
    let Some(otlp::metric::Data::Histogram(histogram)) = &metrics[2].data else {
        panic!("transition_seconds is not a histogram")
    };
    assert_eq!(histogram.aggregation_temporality, otlp::AggregationTemporality::Cumulative as i32);
    let point = &histogram.data_points[0];
    assert_eq!(point.explicit_bounds, vec![1.0, 10.0]);
    assert_eq!(point.bucket_counts, vec![1, 2, 1], "OTLP bucket counts are per bucket, not cumulative");
    assert_eq!((point.count, point.sum, point.min, point.max), (4, Some(62.5), Some(0.5), Some(50.0)));
    assert_eq!(point.exemplars.len(), 1);
    let exemplar = &point.exemplars[0];
    assert_eq!(exemplar.trace_id, TRACE.to_vec());
    assert_eq!(exemplar.span_id, SPAN.to_vec());
    assert_eq!(exemplar.time_unix_nano, 1_234);
    assert_eq!(exemplar.value, Some(otlp::exemplar::Value::AsDouble(5.0)));
}

#[test]
fn floats_and_timestamps_use_canonical_forms() {
    assert_eq!(format_float(1.0), "1.0");
    assert_eq!(format_float(0.005), "0.005");
    assert_eq!(format_float(f64::INFINITY), "+Inf");
    assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
    assert_eq!(format_float(f64::NAN), "NaN");
    assert_eq!(format_timestamp(1_700_000_000_000_000_001), "1700000000.000000001");
    assert_eq!(format_timestamp(5_000_000_000), "5.0");
}

#[test]
fn handles_are_send_sync_and_shared_between_clones() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Registry>();
    assert_send_sync::<Counter>();
    assert_send_sync::<Gauge>();
    assert_send_sync::<Histogram>();
    let registry = Registry::new(10);
    let c = registry.counter("orders", "", &[]);
    let clone = registry.clone();
    std::thread::spawn(move || c.add(&[], 2)).join().expect("the thread does not panic");
    assert!(clone.render_prometheus().contains("orders_total 2\n"));
}
