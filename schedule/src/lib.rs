//! A clinic's calendar arithmetic, free of any database or HTTP: a practitioner's
//! weekly working hours and dated exceptions, written in the clinic's civil time
//! (IANA time zone), become absolute open intervals ([`Hours::open_between`]); free
//! slots are cut from them around existing bookings and buffers ([`free_slots`]).
//!
//! Civil times are turned into instants the way people read a clock: a time that a
//! DST change skips (02:30 on a spring-forward night in Paris) is taken one offset
//! later (03:30), and a time that occurs twice (02:30 on an autumn night) is its
//! first occurrence — the "compatible" rule of RFC 5545 and Temporal. So hours of
//! 01:00–04:00 last two hours on the spring night and four on the autumn night, and
//! slots step in real time through them.
//!
//! Every interval is half-open, `[start, end)`.

pub mod recurrence;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// What the arithmetic refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// An interval whose end is not after its start (`00:00` as an end means
    /// midnight at the end of the day).
    #[error("an interval must end after it starts: {start}–{end}")]
    EmptyInterval { start: Time, end: Time },
    /// Extra opening hours without times.
    #[error("extra opening hours on {0} need a start and an end time")]
    OpenWithoutHours(Date),
    /// A slot rule out of range (zero or negative length or step).
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    /// A series longer than the limit.
    #[error("a series may have at most {0} occurrences")]
    TooManyOccurrences(u32),
    /// A date or instant outside what the calendar can represent.
    #[error("date out of range: {0}")]
    OutOfRange(String),
}

/// An absolute, half-open interval `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Interval {
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        Self { start, end }
    }

    pub fn duration(&self) -> SignedDuration {
        self.end.duration_since(self.start)
    }

    fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Civil start and end times within one day; an end of `00:00` is the midnight
/// that ends the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Time,
    pub end: Time,
}

impl TimeRange {
    /// Checked: the end must come after the start (or be the day's end, `00:00`).
    pub fn new(start: Time, end: Time) -> Result<Self, ScheduleError> {
        if end != Time::midnight() && end <= start {
            return Err(ScheduleError::EmptyInterval { start, end });
        }
        Ok(Self { start, end })
    }

    /// This range on `date`, as civil date-times.
    fn on(&self, date: Date) -> Result<(DateTime, DateTime), ScheduleError> {
        let start = date.to_datetime(self.start);
        let end = if self.end == Time::midnight() {
            date.tomorrow()
                .map_err(|e| ScheduleError::OutOfRange(e.to_string()))?
                .to_datetime(Time::midnight())
        } else {
            date.to_datetime(self.end)
        };
        Ok((start, end))
    }
}

/// One weekly working interval: e.g. Mondays 09:00–12:30.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeeklyHours {
    pub weekday: Weekday,
    pub hours: TimeRange,
}

/// What a dated exception does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Not working (leave, a public holiday): the whole day without hours, or
    /// only the hours given.
    Closed,
    /// Extra hours beyond the weekly ones.
    Open,
}

/// A dated exception to the weekly hours, in the clinic's civil time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub date: Date,
    pub change: Change,
    /// `None`: the whole day (only for [`Change::Closed`]).
    pub hours: Option<TimeRange>,
}

/// A practitioner's working hours: weekly intervals and dated exceptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hours {
    pub weekly: Vec<WeeklyHours>,
    pub exceptions: Vec<Exception>,
}

impl Hours {
    /// The instants this practitioner works between `from` and `to`, in `tz`:
    /// sorted, merged, clipped to `[from, to)`.
    pub fn open_between(
        &self,
        tz: &TimeZone,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Interval>, ScheduleError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let range = |e: jiff::Error| ScheduleError::OutOfRange(e.to_string());
        // A day's hours may start on the civil day before `from` (an interval ending
        // at midnight, or an offset far from UTC): start one day early.
        let first = tz.to_datetime(from).date().yesterday().map_err(range)?;
        let last = tz.to_datetime(to).date();
        let mut open = Vec::new();
        let mut date = first;
        while date <= last {
            for (start, end) in self.civil_hours(date)? {
                let start = tz.to_timestamp(start).map_err(range)?;
                let end = tz.to_timestamp(end).map_err(range)?;
                let clipped = Interval::new(start.max(from), end.min(to));
                if clipped.start < clipped.end {
                    open.push(clipped);
                }
            }
            date = date.tomorrow().map_err(range)?;
        }
        Ok(merge(open))
    }

    /// Whether the practitioner works during the whole of `slot`.
    pub fn covers(&self, tz: &TimeZone, slot: Interval) -> Result<bool, ScheduleError> {
        let open = self.open_between(tz, slot.start, slot.end)?;
        Ok(open.len() == 1 && open[0] == slot)
    }

    /// One civil day's working intervals, sorted and merged.
    fn civil_hours(&self, date: Date) -> Result<Vec<(DateTime, DateTime)>, ScheduleError> {
        let exceptions: Vec<&Exception> =
            self.exceptions.iter().filter(|e| e.date == date).collect();
        let mut hours = Vec::new();
        if !exceptions
            .iter()
            .any(|e| e.change == Change::Closed && e.hours.is_none())
        {
            for weekly in self.weekly.iter().filter(|w| w.weekday == date.weekday()) {
                hours.push(weekly.hours.on(date)?);
            }
        }
        for e in exceptions.iter().filter(|e| e.change == Change::Open) {
            let range = e.hours.ok_or(ScheduleError::OpenWithoutHours(date))?;
            hours.push(range.on(date)?);
        }
        let mut hours = merge(hours);
        for e in exceptions.iter().filter(|e| e.change == Change::Closed) {
            if let Some(range) = e.hours {
                hours = subtract(&hours, range.on(date)?);
            }
        }
        Ok(hours)
    }
}

/// How slots are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRules {
    /// The appointment's length.
    pub duration: SignedDuration,
    /// Time kept free after it (cleaning, notes); it may run past closing time
    /// but never into another booking.
    pub buffer_after: SignedDuration,
    /// Slots start every `step` from the start of each open interval.
    pub step: SignedDuration,
    /// No slot starts before this instant (now, for a search of the future).
    pub not_before: Option<Timestamp>,
}

impl SlotRules {
    fn check(&self) -> Result<(), ScheduleError> {
        if !self.duration.is_positive() {
            return Err(ScheduleError::NotPositive("the duration"));
        }
        if !self.step.is_positive() {
            return Err(ScheduleError::NotPositive("the step"));
        }
        if self.buffer_after.is_negative() {
            return Err(ScheduleError::NotPositive("the buffer"));
        }
        Ok(())
    }
}

/// The free slots: each inside one open interval, its appointment and buffer
/// overlapping no busy interval (bookings with their own buffers), starting on
/// the grid of `rules.step` from its open interval's start. Sorted.
pub fn free_slots(
    open: &[Interval],
    busy: &[Interval],
    rules: &SlotRules,
) -> Result<Vec<Interval>, ScheduleError> {
    rules.check()?;
    let busy = merge(busy.to_vec());
    let mut slots = Vec::new();
    for window in merge(open.to_vec()) {
        let mut start = window.start;
        if let Some(floor) = rules.not_before {
            if floor > start {
                start = next_on_grid(window.start, floor, rules.step);
            }
        }
        // The first busy interval that could overlap a slot from `start` on.
        let mut b = busy.partition_point(|i| i.end <= start);
        loop {
            let end = start + rules.duration;
            if end > window.end {
                break;
            }
            let held = Interval::new(start, end + rules.buffer_after);
            while b < busy.len() && busy[b].end <= held.start {
                b += 1;
            }
            match busy.get(b) {
                Some(blocking) if blocking.overlaps(&held) => {
                    start = next_on_grid(window.start, blocking.end, rules.step);
                }
                _ => {
                    slots.push(Interval::new(start, end));
                    start += rules.step;
                }
            }
        }
    }
    Ok(slots)
}

/// The first instant at or after `at` on the grid `origin + n × step`.
fn next_on_grid(origin: Timestamp, at: Timestamp, step: SignedDuration) -> Timestamp {
    let since = at.duration_since(origin).as_nanos();
    let step_ns = step.as_nanos();
    if since <= 0 || step_ns <= 0 {
        return origin.max(at);
    }
    let steps = (since + step_ns - 1) / step_ns;
    let offset = i64::try_from(steps.saturating_mul(step_ns)).unwrap_or(i64::MAX);
    origin + SignedDuration::from_nanos(offset)
}

/// Sorts and merges overlapping or touching intervals.
fn merge<T: Ord + Copy + Bounds>(mut intervals: Vec<T>) -> Vec<T> {
    intervals.sort();
    let mut merged: Vec<T> = Vec::with_capacity(intervals.len());
    for next in intervals {
        match merged.last_mut() {
            Some(last) if next.lo() <= last.hi() => {
                if next.hi() > last.hi() {
                    last.set_hi(next.hi());
                }
            }
            _ => merged.push(next),
        }
    }
    merged
}

/// Removes `cut` from sorted, merged civil intervals.
fn subtract(
    hours: &[(DateTime, DateTime)],
    cut: (DateTime, DateTime),
) -> Vec<(DateTime, DateTime)> {
    let mut left = Vec::with_capacity(hours.len() + 1);
    for &(start, end) in hours {
        if end <= cut.0 || cut.1 <= start {
            left.push((start, end));
            continue;
        }
        if start < cut.0 {
            left.push((start, cut.0));
        }
        if cut.1 < end {
            left.push((cut.1, end));
        }
    }
    left
}

/// The two ends of an interval, for [`merge`].
trait Bounds {
    type Point: Ord + Copy;
    fn lo(&self) -> Self::Point;
    fn hi(&self) -> Self::Point;
    fn set_hi(&mut self, hi: Self::Point);
}

impl Bounds for Interval {
    type Point = Timestamp;
    fn lo(&self) -> Timestamp {
        self.start
    }
    fn hi(&self) -> Timestamp {
        self.end
    }
    fn set_hi(&mut self, hi: Timestamp) {
        self.end = hi;
    }
}

impl Bounds for (DateTime, DateTime) {
    type Point = DateTime;
    fn lo(&self) -> DateTime {
        self.0
    }
    fn hi(&self) -> DateTime {
        self.1
    }
    fn set_hi(&mut self, hi: DateTime) {
        self.1 = hi;
    }
}

/// The IANA time zone of that name (from the bundled tz database), if it is one.
pub fn zone(name: &str) -> Option<TimeZone> {
    // Only names: offsets and POSIX rules are not clinic time zones.
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
    {
        return None;
    }
    TimeZone::get(name)
        .ok()
        .filter(|tz| tz.iana_name().is_some())
}

/// The calendar year an instant falls in, in the clinic's zone: what an invoice
/// issued then is numbered in (23:30 UTC on 31 December is already the new year
/// in Paris).
pub fn year_in(tz: &TimeZone, at: Timestamp) -> i16 {
    tz.to_datetime(at).year()
}

#[cfg(test)]
mod tests;
