//! Orders: the durable record of each ([`record`]), the statuses it and its parts can have ([`status`]), and how
//! far it has come and who holds it up ([`progress`]). The engine writes records, the queries read them, the store
//! keeps them.

pub mod progress;
pub mod record;
pub mod status;

pub use record::{AliasRecord, ExceptionState, MilestoneState, OrderRecord, Reach, SlaState};
pub use status::{ExceptionStatus, MilestoneStatus, OrderSlaStatus, OrderStatus, SlaStatus, UnknownStatus};
