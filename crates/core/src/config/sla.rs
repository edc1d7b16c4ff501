//! `sla`: service-level targets between milestones, with per-dimension overrides, and the business calendars
//! they count working time in.

use super::check::{is_snake_name, Checker, ConfigError};
use super::dimensions::Dimension;
use super::taxonomy::{ClassId, MilestoneId, Taxonomy};
use crate::calendar::{BusinessCalendar, WEEKDAYS};
use crate::insight::delay::RiskSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// SLA targets and calendars. The targets themselves come from the embedded default file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawSla {
    /// Business calendars by name; a target without a calendar counts wall-clock time.
    pub calendars: BTreeMap<String, RawCalendar>,
    /// Targets: milestone `to` must be reached within a duration of milestone `from`.
    pub targets: Vec<RawSlaTarget>,
    /// Exception class of a breach unless a target names another.
    pub exception_class: String,
    /// How long after a deadline (and after the clock became known) a breach is declared, so that a milestone
    /// whose span is still in flight is not reported overdue.
    #[serde(with = "humantime_serde")]
    pub detection_delay: Duration,
    /// A running clock that has used this share of the time from its start to its deadline puts its order at
    /// risk (shown in the console, told once to the owning team as `order_at_risk`) while the delay model has too
    /// few settled clocks of its target to judge by (`risk.min_samples`).
    pub at_risk_share: f64,
    /// The learned delay risk: a running clock is at risk once the durations of past clocks of its target (of
    /// orders with the same dimension value, else of all orders) say it breaches with at least this probability.
    pub risk: RawRisk,
}

/// `sla.risk`: how the learned durations judge running clocks.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawRisk {
    /// The breach probability at which an order is at risk, between 0 and 1.
    pub threshold: f64,
    /// Settled clocks a distribution needs before it is used.
    pub min_samples: u64,
    /// Values of each dimension learned on their own, per target; further values count for all orders only.
    pub max_values_per_dimension: usize,
}

impl Default for RawRisk {
    fn default() -> RawRisk {
        let d = RiskSettings::default();
        RawRisk {
            threshold: d.threshold,
            min_samples: d.min_samples,
            max_values_per_dimension: d.max_values_per_dimension,
        }
    }
}

impl RawRisk {
    fn check(&self, check: &Checker<'_>) -> Result<RiskSettings, ConfigError> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(check.err("sla.risk.threshold", "must be above 0 and at most 1 (a breach probability)"));
        }
        if self.min_samples == 0 {
            return Err(check.err("sla.risk.min_samples", "must be at least 1"));
        }
        Ok(RiskSettings {
            threshold: self.threshold,
            min_samples: self.min_samples,
            max_values_per_dimension: check
                .positive("sla.risk.max_values_per_dimension", self.max_values_per_dimension)?,
        })
    }
}

impl Default for RawSla {
    fn default() -> RawSla {
        RawSla {
            calendars: BTreeMap::new(),
            targets: Vec::new(),
            exception_class: "execution".into(),
            detection_delay: Duration::from_secs(10),
            at_risk_share: 0.75,
            risk: RawRisk::default(),
        }
    }
}

/// Working hours in a time zone.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawCalendar {
    /// IANA time zone, e.g. `America/Chicago`.
    pub time_zone: String,
    /// Working days, any of `mon` … `sun`.
    pub working_days: Vec<String>,
    /// Working hours as `HH:MM-HH:MM` in the calendar's time zone.
    pub working_hours: String,
    /// Dates (`YYYY-MM-DD`) that are not working days.
    pub holidays: Vec<String>,
}

impl Default for RawCalendar {
    fn default() -> RawCalendar {
        RawCalendar {
            time_zone: "UTC".into(),
            working_days: WEEKDAYS[..5].iter().map(|d| d.to_string()).collect(),
            working_hours: "00:00-24:00".into(),
            holidays: Vec::new(),
        }
    }
}

/// One SLA target.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawSlaTarget {
    /// Target name, e.g. `order_release`; names the KPI metric series and the breach span; lower snake case.
    pub name: String,
    /// Milestone whose arrival starts the clock.
    pub from: String,
    /// Milestone that must be reached in time.
    pub to: String,
    /// Allowed time, e.g. `4h` (working time when a calendar is named).
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    /// Calendar name from `sla.calendars`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
    /// Exception class recorded on a breach; `sla.exception_class` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_class: Option<String>,
    /// Other durations for orders with given dimension values; the first matching override wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RawSlaOverride>,
}

/// A different allowance for some orders.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawSlaOverride {
    /// Dimension name from `dimensions`.
    pub dimension: String,
    /// Values of the dimension this override applies to.
    pub values: Vec<String>,
    /// Allowed time for these orders.
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    /// Calendar for these orders; the target's when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SlaConfig {
    pub targets: Vec<SlaTarget>,
    pub detection_delay: Duration,
    pub at_risk_share: f64,
    pub risk: RiskSettings,
}

impl SlaConfig {
    /// When a clock from `started` to `deadline` puts its order at risk.
    pub fn risk_point(&self, started: u64, deadline: u64) -> u64 {
        let span = deadline.saturating_sub(started);
        // The share is checked to be within (0, 1), so the product is within 0..=span; Rust's float-to-integer
        // conversion saturates, and a clock of centuries loses nanoseconds, which does not matter.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let used = (span as f64 * self.at_risk_share) as u64;
        started.saturating_add(used.min(span))
    }
}

/// A compiled SLA target: `to` within `within` of `from`.
#[derive(Debug, Clone)]
pub struct SlaTarget {
    pub name: String,
    pub from: MilestoneId,
    pub to: MilestoneId,
    pub within: Duration,
    pub calendar: Option<Arc<BusinessCalendar>>,
    pub class: ClassId,
    pub overrides: Vec<SlaOverride>,
}

#[derive(Debug, Clone)]
pub struct SlaOverride {
    pub dimension: String,
    pub values: Vec<String>,
    pub within: Duration,
    pub calendar: Option<Arc<BusinessCalendar>>,
}

impl SlaTarget {
    /// The allowance for an order with these dimension values: the first matching override, else the target's.
    pub fn allowance(&self, dimensions: &BTreeMap<String, String>) -> (Duration, Option<&BusinessCalendar>) {
        for o in &self.overrides {
            if dimensions.get(&o.dimension).is_some_and(|v| o.values.contains(v)) {
                return (o.within, o.calendar.as_deref().or(self.calendar.as_deref()));
            }
        }
        (self.within, self.calendar.as_deref())
    }

    /// The deadline of an order whose clock started at `start` (Unix nanoseconds).
    pub fn deadline(&self, start: u64, dimensions: &BTreeMap<String, String>) -> (u64, Duration) {
        let (within, calendar) = self.allowance(dimensions);
        let due = match calendar {
            Some(calendar) => calendar.add_working_time(start, within),
            None => start.saturating_add(crate::time::nanos(within)),
        };
        (due, within)
    }
}

impl RawCalendar {
    fn check(&self, check: &Checker<'_>, key: &str) -> Result<BusinessCalendar, ConfigError> {
        BusinessCalendar::new(&self.time_zone, &self.working_days, &self.working_hours, &self.holidays)
            .map_err(|e| check.err(key, e.to_string()))
    }
}

impl RawSla {
    pub(crate) fn check(
        &self,
        check: &Checker<'_>,
        taxonomy: &Taxonomy,
        dimensions: &[Dimension],
    ) -> Result<SlaConfig, ConfigError> {
        let mut calendars = BTreeMap::new();
        for (name, c) in &self.calendars {
            calendars.insert(name.clone(), Arc::new(c.check(check, &format!("sla.calendars.{name}"))?));
        }
        let find_calendar =
            |key: String, name: &Option<String>| -> Result<Option<Arc<BusinessCalendar>>, ConfigError> {
                match name {
                    None => Ok(None),
                    Some(n) => calendars
                        .get(n)
                        .cloned()
                        .map(Some)
                        .ok_or_else(|| check.err(key, format!("calendar `{n}` is not defined under sla.calendars"))),
                }
            };
        let default_class = taxonomy.class_at(check, "sla.exception_class".into(), &self.exception_class)?;
        let mut targets: Vec<SlaTarget> = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let key = format!("sla.targets[{i}]");
            if !is_snake_name(&t.name) {
                return Err(check.err(format!("{key}.name"), format!("`{}` must be lower snake case", t.name)));
            }
            if targets.iter().any(|x| x.name == t.name) {
                return Err(check.err(format!("{key}.name"), format!("target `{}` is defined twice", t.name)));
            }
            let from = taxonomy.milestone_at(check, format!("{key}.from"), &t.from)?;
            let to = taxonomy.milestone_at(check, format!("{key}.to"), &t.to)?;
            if from == to {
                return Err(check.err(format!("{key}.to"), "must differ from `from`"));
            }
            if t.within.is_zero() {
                return Err(check.err(format!("{key}.within"), "must be greater than zero"));
            }
            let class = match &t.exception_class {
                Some(name) => taxonomy.class_at(check, format!("{key}.exception_class"), name)?,
                None => default_class,
            };
            let mut overrides = Vec::new();
            for (j, o) in t.overrides.iter().enumerate() {
                let okey = format!("{key}.overrides[{j}]");
                if !dimensions.iter().any(|d| d.name == o.dimension) {
                    return Err(check.err(
                        format!("{okey}.dimension"),
                        format!("`{}` is not a dimension defined under dimensions", o.dimension),
                    ));
                }
                if o.values.is_empty() {
                    return Err(check.err(format!("{okey}.values"), "must not be empty"));
                }
                if o.within.is_zero() {
                    return Err(check.err(format!("{okey}.within"), "must be greater than zero"));
                }
                overrides.push(SlaOverride {
                    dimension: o.dimension.clone(),
                    values: o.values.clone(),
                    within: o.within,
                    calendar: find_calendar(format!("{okey}.calendar"), &o.calendar)?,
                });
            }
            targets.push(SlaTarget {
                name: t.name.clone(),
                from,
                to,
                within: t.within,
                calendar: find_calendar(format!("{key}.calendar"), &t.calendar)?,
                class,
                overrides,
            });
        }
        if !(self.at_risk_share > 0.0 && self.at_risk_share < 1.0) {
            return Err(check.err("sla.at_risk_share", "must be between 0 and 1 (a share of the clock's time)"));
        }
        Ok(SlaConfig {
            targets,
            detection_delay: self.detection_delay,
            at_risk_share: self.at_risk_share,
            risk: self.risk.check(check)?,
        })
    }
}
