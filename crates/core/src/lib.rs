//! ordertrail's pure core: what a span means for an order, and what the order's state means for the people who
//! act on it.
//!
//! Nothing here does I/O (except [`config::load`], which reads the file it is given), reads a clock or knows an
//! async runtime, an RPC or HTTP framework, or a store: every function that depends on time takes `now` (Unix
//! nanoseconds) as an argument. The service (`ordertrail`) owns the edges. Modules depend on each other in one
//! direction only:
//!
//! ```text
//! time, ids, calendar, insight  ◀─  config  ◀─  order  ◀─  engine, query, ocel  ◀─  notify (reads engine events)
//! ```

pub mod calendar;
pub mod config;
pub mod engine;
pub mod ids;
pub mod insight;
pub mod notify;
pub mod ocel;
pub mod order;
pub mod query;
pub mod time;
