//! The wall clock, read only at the edges: the pipeline stamps each group of requests with one `now`, which the
//! pure core then takes as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix nanoseconds; 0 if the system clock is before 1970, and saturating in the year 2554.
pub fn unix_nanos_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(ordertrail_core::time::nanos).unwrap_or(0)
}
