//! Cron schedules, as Kubernetes CronJobs write them: five fields (minute, hour, day of month,
//! month, day of week) in UTC, each `*`, a value, a range `a-b`, a step `*/n` or `a-b/n`, or a
//! list of those; month and weekday names (`JAN`, `MON`); `7` is Sunday too; and the macros
//! `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`). When both
//! day fields are restricted, a day matching either runs (Vixie cron's rule, which CronJobs
//! follow).
//!
//! Written here rather than taken from a crate: the crates that parse cron bring chrono and
//! proc-macro builders into a build that has jiff, for a parser of this size.

use jiff::civil::DateTime;
use jiff::{Timestamp, ToSpan, tz::TimeZone};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid cron schedule {schedule:?}: {why} (five fields: minute hour day-of-month month day-of-week, e.g. \"0 */6 * * *\")"
)]
pub struct CronError {
    schedule: String,
    why: String,
}

/// A parsed schedule: for each field, the set of values it allows (a bit per value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether the day-of-month and day-of-week fields were `*` (then only the other counts).
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + self.min);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{} {s:?} is not a number", self.name))?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} {v} is out of range {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// The bits `text` allows, and whether it was `*`.
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("{} step {s:?} is not a positive number", self.name)
                    })?;
                    (r, step)
                }
                None => (part, 1),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("{} range {range:?} runs backwards", self.name));
                }
                (a, b)
            } else {
                let v = self.value(range)?;
                // `5/15` means from 5 to the end, every 15.
                (v, if step > 1 { self.max } else { v })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok((bits, text == "*"))
    }
}

impl Schedule {
    pub fn parse(schedule: &str) -> Result<Schedule, CronError> {
        let err = |why: String| CronError {
            schedule: schedule.to_string(),
            why,
        };
        let expanded = match schedule.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(err(format!("unknown macro {other}"))),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields[..] else {
            return Err(err(format!("{} field(s), not 5", fields.len())));
        };
        let field = |name, min, max, names| Field {
            name,
            min,
            max,
            names,
        };
        let (minutes, _) = field("minute", 0, 59, &[]).parse(m).map_err(err)?;
        let (hours, _) = field("hour", 0, 23, &[]).parse(h).map_err(err)?;
        let (days, any_day) = field("day of month", 1, 31, &[]).parse(dom).map_err(err)?;
        let (months, _) = field("month", 1, 12, &MONTHS).parse(mon).map_err(err)?;
        let (mut weekdays, any_weekday) = field("day of week", 0, 7, &WEEKDAYS)
            .parse(dow)
            .map_err(err)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
        })
    }

    fn day_matches(&self, d: DateTime) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first time after `t` (strictly) the schedule fires, in UTC; None if it never does
    /// in the next five years (`0 0 30 2 *`).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let utc = TimeZone::UTC;
        let start = t.to_zoned(utc.clone()).datetime();
        // The next whole minute after t.
        let mut d = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.checked_add(5.years()).ok()?;
        while d < limit {
            if self.months & (1 << d.month()) == 0 {
                // The first minute of the next month.
                d = d
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .start_of_day();
                continue;
            }
            if !self.day_matches(d) {
                d = d
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if self.hours & (1 << d.hour()) == 0 {
                d = d
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << d.minute()) == 0 {
                d = d.checked_add(1.minute()).ok()?;
                continue;
            }
            return d.to_zoned(utc).ok().map(|z| z.timestamp());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn next(schedule: &str, after: &str) -> String {
        Schedule::parse(schedule)
            .expect("parses")
            .next_after(at(after))
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn next_fires_as_cronjobs_do() {
        assert_eq!(
            next("*/15 * * * *", "2026-12-08T00:41:08Z"),
            "2026-12-08T00:45:00Z"
        );
        assert_eq!(
            next("0 */6 * * *", "2026-12-08T00:41:08Z"),
            "2026-12-08T06:00:00Z"
        );
        assert_eq!(
            next("0 */6 * * *", "2026-12-08T06:00:00Z"),
            "2026-12-08T12:00:00Z",
            "strictly after"
        );
        assert_eq!(
            next("30 2 * * MON-FRI", "2026-12-11T03:00:00Z"),
            "2026-12-14T02:30:00Z",
            "Friday late: Monday"
        );
        assert_eq!(
            next("0 0 1 JAN *", "2026-12-08T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@daily", "2026-12-08T00:00:00Z"),
            "2026-12-09T00:00:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-12-08T10:59:59.5Z"),
            "2026-12-08T11:00:00Z"
        );
        assert_eq!(
            next("0 12 * * 7", "2026-12-08T00:00:00Z"),
            "2026-12-13T12:00:00Z",
            "7 is Sunday"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-12-08T00:06:00Z"),
            "2026-12-08T00:25:00Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        // Both day fields restricted: either matches (the 13th, or any Friday).
        assert_eq!(
            next("0 0 13 * FRI", "2026-12-08T00:00:00Z"),
            "2026-12-11T00:00:00Z"
        );
        assert_eq!(next("0 0 31 2 *", "2026-12-08T00:00:00Z"), "", "never");
    }

    #[test]
    fn a_bad_schedule_says_what_is_wrong_and_how_it_is_written() {
        for (s, why) in [
            ("* * * *", "4 field(s), not 5"),
            ("60 * * * *", "minute 60 is out of range 0-59"),
            ("* * * * FUNDAY", "day of week \"FUNDAY\" is not a number"),
            ("*/0 * * * *", "minute step \"0\" is not a positive number"),
            ("5-1 * * * *", "minute range \"5-1\" runs backwards"),
            ("@often", "unknown macro @often"),
        ] {
            let e = Schedule::parse(s).expect_err(s).to_string();
            assert!(
                e.contains(why) && e.contains("minute hour day-of-month"),
                "{s}: {e}"
            );
        }
    }
}
