//! Recurring appointments: the occurrences of a series, each at the same civil
//! time in the clinic's zone (09:00 stays 09:00 across a DST change), every N
//! weeks or every N months (a day the month lacks — the 31st in April — falls on
//! its last day; each occurrence counts from the first, so the 31st comes back in
//! May), until a count or an end date.

use crate::{Interval, ScheduleError};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span};

/// The most occurrences one series may have.
pub const MAX_OCCURRENCES: u32 = 260;

/// How often a series repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frequency {
    /// Every `n` weeks (1: weekly).
    Weeks(u32),
    /// Every `n` months, on the first occurrence's day of the month.
    Months(u32),
}

/// Where a series stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// After this many occurrences (the first included).
    Count(u32),
    /// On this civil date (an occurrence on it included).
    Until(Date),
}

/// A series: its first occurrence in civil time, its length, how it repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    pub first: DateTime,
    pub duration: SignedDuration,
    pub frequency: Frequency,
    pub end: End,
}

impl Series {
    /// Every occurrence, in order: its index in the series and its interval.
    pub fn occurrences(&self, tz: &TimeZone) -> Result<Vec<(u32, Interval)>, ScheduleError> {
        let step = match self.frequency {
            Frequency::Weeks(0) | Frequency::Months(0) => {
                return Err(ScheduleError::NotPositive("the interval"))
            }
            Frequency::Weeks(n) | Frequency::Months(n) => n,
        };
        if !self.duration.is_positive() {
            return Err(ScheduleError::NotPositive("the duration"));
        }
        let limit = match self.end {
            End::Count(0) => return Err(ScheduleError::NotPositive("the count")),
            End::Count(n) if n > MAX_OCCURRENCES => {
                return Err(ScheduleError::TooManyOccurrences(MAX_OCCURRENCES))
            }
            End::Count(n) => n,
            End::Until(_) => MAX_OCCURRENCES + 1,
        };
        let range = |e: jiff::Error| ScheduleError::OutOfRange(e.to_string());
        let mut out = Vec::new();
        for index in 0..limit {
            let offset = i64::from(index) * i64::from(step);
            let span = match self.frequency {
                Frequency::Weeks(_) => Span::new().try_weeks(offset).map_err(range)?,
                Frequency::Months(_) => Span::new().try_months(offset).map_err(range)?,
            };
            let at = self.first.checked_add(span).map_err(range)?;
            if let End::Until(last) = self.end {
                if at.date() > last {
                    break;
                }
                if index == MAX_OCCURRENCES {
                    return Err(ScheduleError::TooManyOccurrences(MAX_OCCURRENCES));
                }
            }
            let start = tz.to_timestamp(at).map_err(range)?;
            out.push((index, Interval::new(start, start + self.duration)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn paris() -> TimeZone {
        TimeZone::get("Europe/Paris").unwrap()
    }

    fn local(tz: &TimeZone, i: &Interval) -> String {
        tz.to_datetime(i.start).to_string()
    }

    #[test]
    fn weekly_keeps_the_civil_time_across_dst() {
        let tz = paris();
        let series = Series {
            first: date(2026, 3, 19).at(9, 0, 0, 0),
            duration: SignedDuration::from_mins(30),
            frequency: Frequency::Weeks(1),
            end: End::Count(3),
        };
        let occurrences = series.occurrences(&tz).unwrap();
        let civil: Vec<String> = occurrences.iter().map(|(_, i)| local(&tz, i)).collect();
        assert_eq!(
            civil,
            [
                "2026-03-19T09:00:00",
                "2026-03-26T09:00:00",
                "2026-04-02T09:00:00"
            ]
        );
        // 08:00Z before the change, 07:00Z after it.
        assert_eq!(occurrences[1].1.start.to_string(), "2026-03-26T08:00:00Z");
        assert_eq!(occurrences[2].1.start.to_string(), "2026-04-02T07:00:00Z");
    }

    #[test]
    fn every_n_weeks_until_a_date_includes_that_date() {
        let series = Series {
            first: date(2026, 1, 5).at(14, 0, 0, 0),
            duration: SignedDuration::from_mins(45),
            frequency: Frequency::Weeks(2),
            end: End::Until(date(2026, 2, 16)),
        };
        let days: Vec<String> = series
            .occurrences(&paris())
            .unwrap()
            .iter()
            .map(|(_, i)| paris().to_datetime(i.start).date().to_string())
            .collect();
        assert_eq!(
            days,
            ["2026-01-05", "2026-01-19", "2026-02-02", "2026-02-16"]
        );
    }

    #[test]
    fn monthly_on_the_31st_falls_on_short_months_last_day_and_comes_back() {
        let tz = paris();
        let series = Series {
            first: date(2026, 1, 31).at(10, 0, 0, 0),
            duration: SignedDuration::from_mins(30),
            frequency: Frequency::Months(1),
            end: End::Count(4),
        };
        let days: Vec<String> = series
            .occurrences(&tz)
            .unwrap()
            .iter()
            .map(|(_, i)| tz.to_datetime(i.start).date().to_string())
            .collect();
        assert_eq!(
            days,
            ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]
        );
    }

    #[test]
    fn limits_are_checked() {
        let base = Series {
            first: date(2026, 1, 5).at(9, 0, 0, 0),
            duration: SignedDuration::from_mins(30),
            frequency: Frequency::Weeks(1),
            end: End::Count(MAX_OCCURRENCES + 1),
        };
        assert_eq!(
            base.occurrences(&paris()),
            Err(ScheduleError::TooManyOccurrences(MAX_OCCURRENCES))
        );
        let forever = Series {
            end: End::Until(date(2040, 1, 1)),
            ..base
        };
        assert_eq!(
            forever.occurrences(&paris()),
            Err(ScheduleError::TooManyOccurrences(MAX_OCCURRENCES))
        );
        let zero = Series {
            frequency: Frequency::Months(0),
            end: End::Count(2),
            ..base
        };
        assert!(zero.occurrences(&paris()).is_err());
        let none = Series {
            end: End::Count(0),
            ..base
        };
        assert!(none.occurrences(&paris()).is_err());
    }
}
