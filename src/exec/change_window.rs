//! Change windows (`window: "02:00-06:00 Asia/Shanghai"`): how long until a wave's window
//! opens, computed from a given instant so that it is testable at any hour.

use crate::playbook::Window;
use chrono::{DateTime, Timelike, Utc};
use std::time::Duration;

/// How long from `now` until the window opens, or `None` when it is open at `now`.
///
/// The window is the zone's local wall-clock time, across DST changes too: it is open
/// whenever the local time is inside it (on a fall-back day a window inside the repeated
/// hour opens twice, once in each offset), and the wait is to the first instant at which
/// it is open, found among the instants the local start time occurs (both of a repeated
/// one; for a start skipped by a spring-forward, the first instant after the gap), never
/// by counting wall-clock minutes, which an offset change makes an hour wrong.
pub fn wait_until_open(window: &Window, now: DateTime<Utc>) -> Option<Duration> {
    let zone: chrono_tz::Tz = window.time_zone.parse().ok()?;
    if is_open(window, &zone, now) {
        return None;
    }
    let today = now.with_timezone(&zone).date_naive();
    let (hour, minute) = (window.start_minute / 60, window.start_minute % 60);
    let mut next: Option<DateTime<Utc>> = None;
    for days in -1..=2 {
        let Some(date) = today.checked_add_signed(chrono::Duration::days(days)) else {
            continue;
        };
        let Some(start) = date.and_hms_opt(hour, minute, 0) else {
            continue;
        };
        for candidate in occurrences(&zone, start) {
            if candidate > now
                && is_open(window, &zone, candidate)
                && next.is_none_or(|n| candidate < n)
            {
                next = Some(candidate);
            }
        }
    }
    let next = next?;
    Some(
        (next - now)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_secs(1)),
    )
}

/// Whether the zone's local time at `at` is inside the window.
fn is_open(window: &Window, zone: &chrono_tz::Tz, at: DateTime<Utc>) -> bool {
    let local = at.with_timezone(zone);
    let minute = local.hour() * 60 + local.minute();
    let (start, end) = (window.start_minute, window.end_minute);
    if start == end {
        true
    } else if start < end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    }
}

/// The instants at which local time `start` occurs in `zone`: one, two (a repeated
/// hour), or none (a skipped one): then the first instant after the gap.
fn occurrences(zone: &chrono_tz::Tz, start: chrono::NaiveDateTime) -> Vec<DateTime<Utc>> {
    use chrono::offset::LocalResult;
    use chrono::TimeZone;
    match zone.from_local_datetime(&start) {
        LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
        LocalResult::Ambiguous(a, b) => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
        LocalResult::None => (1..=180)
            .find_map(|m| {
                zone.from_local_datetime(&(start + chrono::Duration::minutes(m)))
                    .earliest()
            })
            .map(|t| vec![t.with_timezone(&Utc)])
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn window(start: u32, end: u32, zone: &str) -> Window {
        Window {
            start_minute: start,
            end_minute: end,
            time_zone: zone.into(),
            text: String::new(),
        }
    }

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, hour, minute, 0).unwrap()
    }

    #[test]
    fn a_window_is_open_inside_and_waits_outside() {
        let w = window(2 * 60, 6 * 60, "UTC");
        assert_eq!(wait_until_open(&w, at(3, 0)), None);
        assert_eq!(wait_until_open(&w, at(2, 0)), None, "the start is inside");
        assert_eq!(
            wait_until_open(&w, at(6, 0)),
            Some(Duration::from_secs(20 * 3600)),
            "the end is outside: tomorrow 02:00"
        );
        assert_eq!(
            wait_until_open(&w, at(0, 30)),
            Some(Duration::from_secs(90 * 60))
        );
    }

    #[test]
    fn a_window_across_midnight() {
        let w = window(22 * 60, 3 * 60, "UTC");
        assert_eq!(wait_until_open(&w, at(23, 0)), None);
        assert_eq!(wait_until_open(&w, at(1, 0)), None);
        assert_eq!(
            wait_until_open(&w, at(3, 0)),
            Some(Duration::from_secs(19 * 3600))
        );
    }

    #[test]
    fn the_window_is_in_its_own_time_zone() {
        // 02:00-06:00 in Shanghai (UTC+8, no DST) is 18:00-22:00 UTC.
        let w = window(2 * 60, 6 * 60, "Asia/Shanghai");
        assert_eq!(wait_until_open(&w, at(19, 0)), None);
        assert_eq!(
            wait_until_open(&w, at(17, 0)),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            wait_until_open(&w, at(3, 0)),
            Some(Duration::from_secs(15 * 3600))
        );
    }

    /// New York falls back on 2026-11-01: 02:00 EDT (06:00 UTC) becomes 01:00 EST, so
    /// local 01:00-02:00 happens twice (05:00-06:00 UTC in EDT, 06:00-07:00 UTC in EST).
    fn fall_back(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, hour, minute, 0).unwrap()
    }

    #[test]
    fn a_run_waiting_before_a_fall_back_window_starts_at_its_local_start() {
        let w = window(60, 90, "America/New_York");
        // 00:40 EDT (04:40 UTC): opens at 01:00 EDT (05:00 UTC), not the next day.
        assert_eq!(
            wait_until_open(&w, fall_back(4, 40)),
            Some(Duration::from_secs(20 * 60))
        );
        // 01:10 EDT is inside.
        assert_eq!(wait_until_open(&w, fall_back(5, 10)), None);
        // 01:45 EDT (05:45 UTC): local time comes back to 01:00 at 01:00 EST (06:00 UTC).
        assert_eq!(
            wait_until_open(&w, fall_back(5, 45)),
            Some(Duration::from_secs(15 * 60))
        );
        // 01:10 EST (06:10 UTC) is inside: a run starting there starts at once.
        assert_eq!(wait_until_open(&w, fall_back(6, 10)), None);
        // 01:30 EST (06:30 UTC): the next 01:00 is tomorrow's, in EST (06:00 UTC on
        // 2026-11-02): 23h30m.
        assert_eq!(
            wait_until_open(&w, fall_back(6, 30)),
            Some(Duration::from_secs(23 * 3600 + 30 * 60))
        );
    }

    #[test]
    fn a_wait_across_a_fall_back_is_counted_in_real_time() {
        // 23:30 EDT on 2026-10-31 (03:30 UTC) for 03:00-04:00 local: 03:00 EST is 08:00
        // UTC, 4h30m later (counting wall-clock minutes said 3h30m).
        let w = window(3 * 60, 4 * 60, "America/New_York");
        assert_eq!(
            wait_until_open(&w, fall_back(3, 30)),
            Some(Duration::from_secs(4 * 3600 + 30 * 60))
        );
    }

    #[test]
    fn a_window_starting_in_a_spring_forward_gap_opens_after_the_gap() {
        // New York springs forward on 2026-03-08: 02:00 EST (07:00 UTC) becomes 03:00 EDT.
        // 02:30-04:00 local: 02:30 never happens; the window opens at 03:00 EDT.
        let w = window(2 * 60 + 30, 4 * 60, "America/New_York");
        let at = |h, m| Utc.with_ymd_and_hms(2026, 3, 8, h, m, 0).unwrap();
        // 01:30 EST (06:30 UTC): 30 minutes (counting wall-clock minutes said 60).
        assert_eq!(
            wait_until_open(&w, at(6, 30)),
            Some(Duration::from_secs(30 * 60))
        );
        // 03:10 EDT (07:10 UTC) is inside.
        assert_eq!(wait_until_open(&w, at(7, 10)), None);
    }
}
