//! ordertrail's own metrics: counters, gauges and histograms exposed as Prometheus or OpenMetrics text and pushed
//! as OTLP. We keep our own small registry because histograms must carry the order's trace id as an exemplar in
//! both OpenMetrics and OTLP, and every metric needs a configurable limit on its label sets; prometheus-client
//! offers neither a way to read its values back into OTLP nor such a limit.

pub mod orders;
pub mod push;
pub mod registry;

pub use orders::OrderMetrics;
pub use push::MetricsPusher;
pub use registry::{Counter, Exemplar, Gauge, Histogram, Registry};
