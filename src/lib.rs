//! ordertrail: one business trace per customer order, built from the OpenTelemetry spans that a distributor's
//! middleware, ERP, WMS, TMS, EDI and finance systems already emit. See ARCHITECTURE.md for the map.

/// jemalloc: its statistics give the memory limiter the heap in use (see `memory.rs`), and it returns freed memory
/// to the system more readily than glibc's allocator after a burst.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod api;
pub mod calendar;
pub mod config;
pub mod demo;
pub mod engine;
pub mod exporter;
pub mod memory;
pub mod metrics;
pub mod order_state;
pub mod pipeline;
pub mod query;
pub mod receiver;
pub mod server;
pub mod store;
pub mod telemetry;
