//! ordertrail: one business trace per customer order, built from the OpenTelemetry spans that a distributor's
//! middleware, ERP, WMS, TMS, EDI and finance systems already emit. See ARCHITECTURE.md for the map.

pub mod api;
pub mod calendar;
pub mod config;
pub mod demo;
pub mod engine;
pub mod exporter;
pub mod metrics;
pub mod order_state;
pub mod pipeline;
pub mod query;
pub mod receiver;
pub mod server;
pub mod store;
pub mod telemetry;
