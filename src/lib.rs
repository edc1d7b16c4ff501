//! ordertrail: one business trace per customer order, built from the OpenTelemetry spans that a distributor's
//! middleware, ERP, WMS, TMS, EDI and finance systems already emit. See ARCHITECTURE.md for the map.

pub mod config;
pub mod engine;
pub mod order_state;
pub mod store;
pub mod telemetry;
pub mod pipeline;
pub mod receiver;
pub mod exporter;
pub mod demo;
pub mod server;
