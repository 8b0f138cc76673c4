//! Hours, exceptions and slots, across DST changes in Paris and New York, at day
//! boundaries and around bookings.

use super::*;
use jiff::civil::{date, time};

fn paris() -> TimeZone {
    TimeZone::get("Europe/Paris").unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn range(start: Time, end: Time) -> TimeRange {
    TimeRange::new(start, end).unwrap()
}

fn weekdays(start: Time, end: Time) -> Vec<WeeklyHours> {
    [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
    ]
    .into_iter()
    .map(|weekday| WeeklyHours {
        weekday,
        hours: range(start, end),
    })
    .collect()
}

fn rules(minutes: i64, buffer: i64, step: i64) -> SlotRules {
    SlotRules {
        duration: SignedDuration::from_mins(minutes),
        buffer_after: SignedDuration::from_mins(buffer),
        step: SignedDuration::from_mins(step),
        not_before: None,
    }
}

fn show(tz: &TimeZone, slots: &[Interval]) -> Vec<String> {
    slots
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.start.display_with_offset(tz.to_offset(s.start)),
                s.end.display_with_offset(tz.to_offset(s.end))
            )
        })
        .collect()
}

#[test]
fn weekly_hours_in_the_clinics_zone() {
    let hours = Hours {
        weekly: weekdays(time(9, 0, 0, 0), time(12, 0, 0, 0)),
        exceptions: vec![],
    };
    // Monday 2026-01-05, Paris is UTC+1.
    let open = hours
        .open_between(&paris(), ts("2026-01-05T00:00Z"), ts("2026-01-06T00:00Z"))
        .unwrap();
    assert_eq!(
        open,
        [Interval::new(
            ts("2026-01-05T08:00Z"),
            ts("2026-01-05T11:00Z")
        )]
    );
}

#[test]
fn spring_forward_night_skips_the_missing_hour() {
    // Sunday 2026-03-29: clocks go 02:00 → 03:00 in Paris.
    let hours = Hours {
        weekly: vec![WeeklyHours {
            weekday: Weekday::Sunday,
            hours: range(time(1, 0, 0, 0), time(4, 0, 0, 0)),
        }],
        exceptions: vec![],
    };
    let tz = paris();
    let open = hours
        .open_between(&tz, ts("2026-03-28T00:00Z"), ts("2026-03-30T00:00Z"))
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].duration(), SignedDuration::from_hours(2));
    let slots = free_slots(&open, &[], &rules(60, 0, 60)).unwrap();
    assert_eq!(
        show(&tz, &slots),
        [
            "2026-03-29T01:00:00+01:00/2026-03-29T03:00:00+02:00",
            "2026-03-29T03:00:00+02:00/2026-03-29T04:00:00+02:00",
        ]
    );
}

#[test]
fn fall_back_night_has_the_repeated_hour_twice() {
    // Sunday 2026-10-25: clocks go 03:00 → 02:00 in Paris.
    let hours = Hours {
        weekly: vec![WeeklyHours {
            weekday: Weekday::Sunday,
            hours: range(time(1, 0, 0, 0), time(4, 0, 0, 0)),
        }],
        exceptions: vec![],
    };
    let tz = paris();
    let open = hours
        .open_between(&tz, ts("2026-10-24T00:00Z"), ts("2026-10-26T00:00Z"))
        .unwrap();
    assert_eq!(open[0].duration(), SignedDuration::from_hours(4));
    let slots = free_slots(&open, &[], &rules(60, 0, 60)).unwrap();
    assert_eq!(
        show(&tz, &slots),
        [
            "2026-10-25T01:00:00+02:00/2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+02:00/2026-10-25T02:00:00+01:00",
            "2026-10-25T02:00:00+01:00/2026-10-25T03:00:00+01:00",
            "2026-10-25T03:00:00+01:00/2026-10-25T04:00:00+01:00",
        ]
    );
}

#[test]
fn a_dst_week_keeps_civil_opening_times() {
    // The week of the spring change: 09:00 local every weekday, whatever the offset.
    let hours = Hours {
        weekly: weekdays(time(9, 0, 0, 0), time(10, 0, 0, 0)),
        exceptions: vec![],
    };
    let tz = paris();
    let open = hours
        .open_between(&tz, ts("2026-03-26T00:00Z"), ts("2026-04-01T00:00Z"))
        .unwrap();
    let starts: Vec<String> = open
        .iter()
        .map(|i| {
            i.start
                .display_with_offset(tz.to_offset(i.start))
                .to_string()
        })
        .collect();
    assert_eq!(
        starts,
        [
            "2026-03-26T09:00:00+01:00",
            "2026-03-27T09:00:00+01:00",
            "2026-03-30T09:00:00+02:00",
            "2026-03-31T09:00:00+02:00",
        ]
    );
}

#[test]
fn another_zone_and_its_own_dst_date() {
    // New York changes on 2026-03-08, three weeks before Paris.
    let tz = TimeZone::get("America/New_York").unwrap();
    let hours = Hours {
        weekly: weekdays(time(8, 0, 0, 0), time(9, 0, 0, 0)),
        exceptions: vec![],
    };
    let open = hours
        .open_between(&tz, ts("2026-03-06T00:00Z"), ts("2026-03-10T00:00Z"))
        .unwrap();
    assert_eq!(
        open,
        [
            Interval::new(ts("2026-03-06T13:00Z"), ts("2026-03-06T14:00Z")),
            Interval::new(ts("2026-03-09T12:00Z"), ts("2026-03-09T13:00Z")),
        ]
    );
}

#[test]
fn hours_until_midnight_and_the_search_window_cuts_at_day_boundaries() {
    let hours = Hours {
        weekly: vec![WeeklyHours {
            weekday: Weekday::Friday,
            hours: range(time(22, 0, 0, 0), Time::midnight()),
        }],
        exceptions: vec![],
    };
    let tz = paris();
    // Friday 2026-01-09 22:00–24:00 Paris = 21:00–23:00 UTC; a window starting at
    // 22:00 UTC (23:00 Paris) sees the last hour only.
    let open = hours
        .open_between(&tz, ts("2026-01-09T22:00Z"), ts("2026-01-10T12:00Z"))
        .unwrap();
    assert_eq!(
        open,
        [Interval::new(
            ts("2026-01-09T22:00Z"),
            ts("2026-01-09T23:00Z")
        )]
    );
    // A window in UTC that starts on the civil day before (Thursday 23:30 UTC is
    // already Friday 00:30 in Paris) still finds Friday's hours.
    let open = hours
        .open_between(&tz, ts("2026-01-08T23:30Z"), ts("2026-01-10T00:00Z"))
        .unwrap();
    assert_eq!(open.len(), 1);
}

#[test]
fn exceptions_close_days_cut_hours_and_add_extra_ones() {
    let tz = paris();
    let monday = date(2026, 1, 5);
    let tuesday = date(2026, 1, 6);
    let saturday = date(2026, 1, 10);
    let hours = Hours {
        weekly: weekdays(time(9, 0, 0, 0), time(17, 0, 0, 0)),
        exceptions: vec![
            Exception {
                date: monday,
                change: Change::Closed,
                hours: None,
            },
            Exception {
                date: tuesday,
                change: Change::Closed,
                hours: Some(range(time(12, 0, 0, 0), time(14, 0, 0, 0))),
            },
            Exception {
                date: saturday,
                change: Change::Open,
                hours: Some(range(time(10, 0, 0, 0), time(12, 0, 0, 0))),
            },
        ],
    };
    let open = hours
        .open_between(&tz, ts("2026-01-05T00:00Z"), ts("2026-01-11T00:00Z"))
        .unwrap();
    let civil: Vec<String> = open
        .iter()
        .map(|i| {
            format!(
                "{} {}-{}",
                tz.to_datetime(i.start).date(),
                tz.to_datetime(i.start).time(),
                tz.to_datetime(i.end).time()
            )
        })
        .collect();
    assert_eq!(
        civil,
        [
            "2026-01-06 09:00:00-12:00:00",
            "2026-01-06 14:00:00-17:00:00",
            "2026-01-07 09:00:00-17:00:00",
            "2026-01-08 09:00:00-17:00:00",
            "2026-01-09 09:00:00-17:00:00",
            "2026-01-10 10:00:00-12:00:00",
        ]
    );
    assert!(!hours
        .covers(
            &tz,
            Interval::new(ts("2026-01-06T10:30Z"), ts("2026-01-06T11:30Z"))
        )
        .unwrap());
    assert!(hours
        .covers(
            &tz,
            Interval::new(ts("2026-01-06T13:00Z"), ts("2026-01-06T14:00Z"))
        )
        .unwrap());
}

#[test]
fn extra_hours_need_times_and_intervals_must_not_be_empty() {
    let hours = Hours {
        weekly: vec![],
        exceptions: vec![Exception {
            date: date(2026, 1, 5),
            change: Change::Open,
            hours: None,
        }],
    };
    assert_eq!(
        hours.open_between(&paris(), ts("2026-01-05T00:00Z"), ts("2026-01-06T00:00Z")),
        Err(ScheduleError::OpenWithoutHours(date(2026, 1, 5)))
    );
    assert!(TimeRange::new(time(10, 0, 0, 0), time(9, 0, 0, 0)).is_err());
    assert!(TimeRange::new(time(10, 0, 0, 0), time(10, 0, 0, 0)).is_err());
}

#[test]
fn slots_avoid_bookings_and_keep_buffers_on_the_grid() {
    let open = [Interval::new(
        ts("2026-01-05T08:00Z"),
        ts("2026-01-05T12:00Z"),
    )];
    // A booking 09:00–09:40 UTC with its own 10-minute buffer: busy until 09:50.
    let busy = [Interval::new(
        ts("2026-01-05T09:00Z"),
        ts("2026-01-05T09:50Z"),
    )];
    let slots = free_slots(&open, &busy, &rules(30, 15, 15)).unwrap();
    let starts: Vec<String> = slots.iter().map(|s| s.start.to_string()).collect();
    // 08:15 + 30 min + 15 min buffer = 09:00: touches, allowed; 08:30 would run
    // into it. After it, the next grid point after 09:50 is 10:00.
    assert_eq!(
        starts[..3],
        [
            "2026-01-05T08:00:00Z",
            "2026-01-05T08:15:00Z",
            "2026-01-05T10:00:00Z"
        ]
    );
    // The last slot ends at closing time; its buffer may run past it.
    assert_eq!(slots.last().unwrap().end, ts("2026-01-05T12:00Z"));
    for slot in &slots {
        let held = Interval::new(slot.start, slot.end + SignedDuration::from_mins(15));
        assert!(!busy.iter().any(|b| b.overlaps(&held)));
    }
}

#[test]
fn slots_never_start_before_now_and_rules_are_checked() {
    let open = [Interval::new(
        ts("2026-01-05T08:00Z"),
        ts("2026-01-05T10:00Z"),
    )];
    let mut r = rules(30, 0, 30);
    r.not_before = Some(ts("2026-01-05T08:10Z"));
    let slots = free_slots(&open, &[], &r).unwrap();
    assert_eq!(slots[0].start, ts("2026-01-05T08:30Z"));
    assert_eq!(slots.len(), 3);
    assert!(free_slots(&open, &[], &rules(0, 0, 15)).is_err());
    assert!(free_slots(&open, &[], &rules(30, 0, 0)).is_err());
    assert!(free_slots(&open, &[], &rules(30, -5, 15)).is_err());
}

#[test]
fn a_month_for_twenty_practitioners_is_cheap() {
    // Not a timing assertion: the bench measures speed. This checks the shape of a
    // month's answer (every slot inside hours, none overlapping a booking).
    let tz = paris();
    let hours = Hours {
        weekly: weekdays(time(8, 0, 0, 0), time(19, 0, 0, 0)),
        exceptions: vec![],
    };
    let (from, to) = (ts("2026-03-01T00:00Z"), ts("2026-04-01T00:00Z"));
    let open = hours.open_between(&tz, from, to).unwrap();
    assert_eq!(open.len(), 22);
    let busy: Vec<Interval> = open
        .iter()
        .map(|o| {
            Interval::new(
                o.start + SignedDuration::from_hours(2),
                o.start + SignedDuration::from_mins(150),
            )
        })
        .collect();
    let slots = free_slots(&open, &busy, &rules(30, 0, 15)).unwrap();
    assert!(slots
        .iter()
        .all(|s| open.iter().any(|o| o.start <= s.start && s.end <= o.end)));
    assert!(slots.iter().all(|s| !busy.iter().any(|b| b.overlaps(s))));
}

#[test]
fn the_year_is_the_clinics() {
    let at = ts("2026-12-31T23:30Z");
    assert_eq!(year_in(&paris(), at), 2027);
    assert_eq!(
        year_in(&TimeZone::get("America/New_York").unwrap(), at),
        2026
    );
    assert_eq!(year_in(&TimeZone::UTC, at), 2026);
}

#[test]
fn zones_are_iana_names() {
    assert!(zone("Europe/Paris").is_some());
    assert!(zone("America/Argentina/Buenos_Aires").is_some());
    assert!(zone("UTC").is_some());
    assert!(zone("Mars/Olympus").is_none());
    assert!(zone("").is_none());
    assert!(zone("+02:00").is_none());
    assert!(zone("Europe/Paris\n").is_none());
}
