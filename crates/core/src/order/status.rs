//! The statuses an order, its milestones, its SLA clocks and its exceptions can have, defined once.
//!
//! The API answers with their names (`as_str`, also their serde form), the OpenAPI document lists them as enums and
//! the proto comments name them; a test of the service checks both documents against [`ALL`](OrderStatus::ALL)
//! of each type, so a status added here cannot be forgotten there.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A status name that is not one of its type's; the message lists the allowed names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not one of {allowed}")]
pub struct UnknownStatus {
    pub given: String,
    pub allowed: String,
}

macro_rules! status {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every status, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name the API and the documents use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<$name, UnknownStatus> {
                $name::ALL.iter().copied().find(|s| s.as_str() == text).ok_or_else(|| UnknownStatus {
                    given: text.to_string(),
                    allowed: $name::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

status! {
    /// Whether anything is still awaited of an order.
    OrderStatus {
        /// Not closed yet.
        Open => "open",
        /// Closed by a `close_on` milestone or by idleness; its root span was emitted.
        Closed => "closed",
    }
}

status! {
    /// Where one milestone of one order stands.
    MilestoneStatus {
        /// A span reached it.
        Reached => "reached",
        /// Spans worked on it, none reached it.
        InProgress => "in_progress",
        /// Nothing seen yet.
        Pending => "pending",
    }
}

status! {
    /// Where one SLA clock stands.
    SlaStatus {
        /// Running, not yet due.
        Pending => "pending",
        /// `to` was reached in time.
        Met => "met",
        /// Due and `to` still not reached.
        Breached => "breached",
        /// `to` was reached after the deadline.
        Late => "late",
        /// The order closed or was cancelled before `to` and before the deadline.
        Stopped => "stopped",
    }
}

status! {
    /// The SLA standing of a whole order, the worst of its clocks.
    OrderSlaStatus {
        /// A deadline passed and its milestone is still missing.
        Breached => "breached",
        /// Every clock settled, some late.
        Late => "late",
        /// Every clock met or still running in time.
        OnTime => "on_time",
        /// No clock started.
        None => "none",
    }
}

status! {
    /// Whether an exception still holds an order up.
    ExceptionStatus {
        /// Not resolved.
        Open => "open",
        /// The milestone it concerned was reached later, or the finding turned out to be delivery order.
        Resolved => "resolved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_allowed() {
        for status in OrderSlaStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderSlaStatus>(), Ok(*status));
            assert_eq!(serde_json::to_string(status).unwrap(), format!("\"{status}\""));
        }
        let err = "overdue".parse::<OrderSlaStatus>().unwrap_err();
        assert_eq!(err.to_string(), "`overdue` is not one of breached, late, on_time, none");
        assert_eq!(MilestoneStatus::InProgress.as_str(), "in_progress");
    }
}
