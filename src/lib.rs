//! ordertrail, the service: one business trace per customer order, built from the OpenTelemetry spans that a
//! distributor's middleware, ERP, WMS, TMS, EDI and finance systems already emit. See ARCHITECTURE.md for the map.
//!
//! This crate is the edges around the pure core (`ordertrail-core`): the OTLP receivers, the pipeline thread that
//! owns the engine, the store, the exporter, the order API, ordertrail's own metrics and the server that wires
//! them together. The binary (`src/cli/`) adds the command line and, with the `demo` feature, the simulator.

pub mod api;
pub mod auth;
pub mod clock;
pub mod connections;
pub mod event_log;
pub mod exporter;
pub mod google_rpc;
pub mod memory;
pub mod metrics;
pub mod notifier;
pub mod pipeline;
pub mod receiver;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
