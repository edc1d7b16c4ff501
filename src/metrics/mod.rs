//! The metrics ordertrail publishes ([`orders`]), the process's own series read at scrape time ([`process`]), and
//! their periodic OTLP push ([`push`]), built on the registry
//! of `ordertrail-metrics`: our own small registry, because histograms must carry the order's trace id as an
//! exemplar in both OpenMetrics and OTLP, and every metric needs a configurable limit on its label sets;
//! prometheus-client offers neither a way to read its values back into OTLP nor such a limit.

pub mod orders;
pub mod process;
pub mod push;

pub use orders::OrderMetrics;
pub use push::MetricsPusher;
