//! Business calendars: working days, working hours and holidays in a time zone, and the one question SLAs ask of
//! them, "when does this much working time after that instant run out?".
//!
//! The arithmetic walks day by day in local time, so daylight-saving changes move working hours with the wall
//! clock as people experience them, and a day shortened by a DST change has less working time.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::collections::BTreeSet;
use std::time::Duration;

/// Weekday names as configured, Monday first.
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Longest span of calendar days searched for working time; a deadline further away than this is treated as
/// never, which only a calendar with almost no working days could produce.
const MAX_DAYS_SEARCHED: usize = 3 * 366;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CalendarError {
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
    #[error("`{0}` is not one of mon, tue, wed, thu, fri, sat, sun")]
    Weekday(String),
    #[error("`{0}` is not working hours of the form HH:MM-HH:MM with the start before the end")]
    Hours(String),
    #[error("`{0}` is not a date of the form YYYY-MM-DD")]
    Holiday(String),
    #[error("a calendar needs at least one working day")]
    NoWorkingDays,
}

#[derive(Debug, Clone)]
pub struct BusinessCalendar {
    time_zone: TimeZone,
    time_zone_name: String,
    /// Indexed Monday = 0.
    working_days: [bool; 7],
    /// Minutes after local midnight; `close` may be 1440 for "until midnight".
    open_minute: u32,
    close_minute: u32,
    holidays: BTreeSet<Date>,
}

fn parse_minute(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl BusinessCalendar {
    pub fn new(
        time_zone: &str,
        working_days: &[String],
        working_hours: &str,
        holidays: &[String],
    ) -> Result<BusinessCalendar, CalendarError> {
        let tz = TimeZone::get(time_zone).map_err(|_| CalendarError::TimeZone(time_zone.to_string()))?;
        let mut days = [false; 7];
        for day in working_days {
            let i = WEEKDAYS
                .iter()
                .position(|w| w.eq_ignore_ascii_case(day.trim()))
                .ok_or_else(|| CalendarError::Weekday(day.clone()))?;
            days[i] = true;
        }
        if !days.iter().any(|d| *d) {
            return Err(CalendarError::NoWorkingDays);
        }
        let hours = || CalendarError::Hours(working_hours.to_string());
        let (open, close) = working_hours.split_once('-').ok_or_else(hours)?;
        let (open, close) = (parse_minute(open).ok_or_else(hours)?, parse_minute(close).ok_or_else(hours)?);
        if open >= close {
            return Err(hours());
        }
        let holidays = holidays
            .iter()
            .map(|h| h.trim().parse::<Date>().map_err(|_| CalendarError::Holiday(h.clone())))
            .collect::<Result<_, _>>()?;
        Ok(BusinessCalendar {
            time_zone: tz,
            time_zone_name: time_zone.to_string(),
            working_days: days,
            open_minute: open,
            close_minute: close,
            holidays,
        })
    }

    pub fn time_zone_name(&self) -> &str {
        &self.time_zone_name
    }

    fn is_working_day(&self, date: Date) -> bool {
        self.working_days[usize::from(date.weekday().to_monday_zero_offset().unsigned_abs())]
            && !self.holidays.contains(&date)
    }

    /// The instant `minute` minutes after local midnight of `date`, in Unix nanoseconds. Times that fall in a DST
    /// gap resolve as the wall clock does (the "compatible" rule of RFC 5545).
    fn local_instant(&self, date: Date, minute: u32) -> Option<i128> {
        let (date, minute) = if minute >= 1440 { (date.tomorrow().ok()?, minute - 1440) } else { (date, minute) };
        // Both fit: `minute` is below 1440 here, so the hour is below 24 and the minute below 60.
        let (hour, minute) = (i8::try_from(minute / 60).ok()?, i8::try_from(minute % 60).ok()?);
        let at = date.at(hour, minute, 0, 0);
        Some(at.to_zoned_datetime(self.time_zone.clone()).ok()?.timestamp().as_nanosecond())
    }

    /// The working intervals (open, close) from `start_unix_nanos` on, day by day for at most three years, the
    /// first cut at `start_unix_nanos`; an instant the time zone cannot express ends them.
    fn working_intervals(&self, start_unix_nanos: u64) -> impl Iterator<Item = (i128, i128)> + '_ {
        let cursor = i128::from(start_unix_nanos);
        let first = Timestamp::from_nanosecond(cursor).ok().map(|t| t.to_zoned_datetime(self.time_zone.clone()).date());
        std::iter::successors(first, |date| date.tomorrow().ok())
            .take(MAX_DAYS_SEARCHED)
            .filter(|date| self.is_working_day(*date))
            .map_while(move |date| {
                let open = self.local_instant(date, self.open_minute)?;
                let close = self.local_instant(date, self.close_minute)?;
                Some((cursor.max(open), close))
            })
            .filter(|(from, to)| from < to)
    }

    /// The instant at which `within` of working time, counted from `start_unix_nanos`, is used up. Returns
    /// `u64::MAX` when no such instant lies within three years.
    pub fn add_working_time(&self, start_unix_nanos: u64, within: Duration) -> u64 {
        let mut remaining = i128::try_from(within.as_nanos()).unwrap_or(i128::MAX);
        for (from, close) in self.working_intervals(start_unix_nanos) {
            if remaining <= close - from {
                return u64::try_from(from + remaining).unwrap_or(u64::MAX);
            }
            remaining -= close - from;
        }
        u64::MAX
    }

    /// The working time between two instants: what a clock counting in this calendar shows at `end` when it
    /// started at `start`. Zero when `end` is not after `start`; a span longer than the three years searched
    /// counts those three years.
    pub fn working_time_between(&self, start_unix_nanos: u64, end_unix_nanos: u64) -> Duration {
        let end = i128::from(end_unix_nanos);
        let worked: i128 = self
            .working_intervals(start_unix_nanos)
            .take_while(|(from, _)| *from < end)
            .map(|(from, close)| close.min(end) - from)
            .sum();
        Duration::from_nanos(u64::try_from(worked.max(0)).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(text: &str) -> u64 {
        u64::try_from(text.parse::<Timestamp>().unwrap().as_nanosecond()).unwrap()
    }

    fn weekdays() -> Vec<String> {
        ["mon", "tue", "wed", "thu", "fri"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn working_time_stops_at_closing_and_resumes_next_working_morning() {
        let cal = BusinessCalendar::new("America/Chicago", &weekdays(), "08:00-18:00", &[]).unwrap();
        // Friday 2026-11-20 16:00 CST (22:00 UTC) plus 4 working hours: 2 on Friday, 2 on Monday from 08:00.
        let due = cal.add_working_time(nanos("2026-11-20T22:00:00Z"), Duration::from_secs(4 * 3600));
        assert_eq!(due, nanos("2026-11-23T16:00:00Z"));
    }

    #[test]
    fn a_start_before_opening_counts_from_opening_and_holidays_are_skipped() {
        let cal = BusinessCalendar::new("UTC", &weekdays(), "09:00-17:00", &["2026-12-25".into()]).unwrap();
        // Thursday 2026-12-24 at 06:00: the day's 8 hours, then Friday the 25th is a holiday, then Monday.
        let due = cal.add_working_time(nanos("2026-12-24T06:00:00Z"), Duration::from_secs(10 * 3600));
        assert_eq!(due, nanos("2026-12-28T11:00:00Z"));
    }

    #[test]
    fn the_dst_change_moves_working_hours_with_the_wall_clock() {
        let cal = BusinessCalendar::new("Europe/Berlin", &weekdays(), "08:00-18:00", &[]).unwrap();
        // Friday 2026-10-23 17:00 CEST (15:00 UTC) plus 2 working hours ends Monday 09:00 CET, which is 08:00 UTC.
        let due = cal.add_working_time(nanos("2026-10-23T15:00:00Z"), Duration::from_secs(2 * 3600));
        assert_eq!(due, nanos("2026-10-26T08:00:00Z"));
    }

    #[test]
    fn working_time_between_is_the_inverse_of_adding_working_time() {
        let cal = BusinessCalendar::new("America/Chicago", &weekdays(), "08:00-18:00", &[]).unwrap();
        let start = nanos("2026-11-20T22:00:00Z");
        for hours in [0, 1, 2, 3, 4, 13, 40] {
            let within = Duration::from_secs(hours * 3600);
            let due = cal.add_working_time(start, within);
            assert_eq!(cal.working_time_between(start, due), within, "{hours} h");
        }
        // Over the weekend nothing is counted: Friday 18:00 CST to Monday 08:00 CST is no working time.
        assert_eq!(
            cal.working_time_between(nanos("2026-11-21T00:00:00Z"), nanos("2026-11-23T14:00:00Z")),
            Duration::ZERO
        );
        assert_eq!(cal.working_time_between(start, start - 1), Duration::ZERO);
    }

    #[test]
    fn around_the_clock_calendar_is_wall_clock_time() {
        let all: Vec<String> = WEEKDAYS.iter().map(|s| s.to_string()).collect();
        let cal = BusinessCalendar::new("UTC", &all, "00:00-24:00", &[]).unwrap();
        let start = nanos("2026-11-20T22:00:00Z");
        assert_eq!(cal.add_working_time(start, Duration::from_secs(50 * 3600)), start + 50 * 3600 * 1_000_000_000);
    }

    #[test]
    fn bad_calendars_are_refused_with_the_reason() {
        let err = |tz: &str, days: &[String], hours: &str, hol: &[String]| {
            BusinessCalendar::new(tz, days, hours, hol).unwrap_err().to_string()
        };
        assert_eq!(err("Mars/Olympus", &weekdays(), "08:00-18:00", &[]), "unknown time zone `Mars/Olympus`");
        assert!(err("UTC", &["funday".into()], "08:00-18:00", &[]).contains("funday"));
        assert!(err("UTC", &weekdays(), "18:00-08:00", &[]).contains("HH:MM-HH:MM"));
        assert!(err("UTC", &weekdays(), "8-18", &[]).contains("HH:MM-HH:MM"));
        assert!(err("UTC", &weekdays(), "08:00-18:00", &["25/12/2026".into()]).contains("YYYY-MM-DD"));
        assert_eq!(err("UTC", &[], "08:00-18:00", &[]), "a calendar needs at least one working day");
    }
}
