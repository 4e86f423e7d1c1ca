//! Change windows (`window: "02:00-06:00 Asia/Shanghai"`): how long until a wave's window
//! opens, computed from a given instant so that it is testable at any hour.

use crate::playbook::Window;
use chrono::{DateTime, Timelike, Utc};
use std::time::Duration;

/// How long from `now` until the window opens, or `None` when it is open at `now`.
pub fn wait_until_open(window: &Window, now: DateTime<Utc>) -> Option<Duration> {
    let zone: chrono_tz::Tz = window.time_zone.parse().ok()?;
    let local = now.with_timezone(&zone);
    let minute = local.hour() * 60 + local.minute();
    let (start, end) = (window.start_minute, window.end_minute);
    let open = if start == end {
        true
    } else if start < end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    };
    if open {
        return None;
    }
    let minutes = (start + 24 * 60 - minute) % (24 * 60);
    Some(Duration::from_secs(
        (u64::from(minutes) * 60)
            .saturating_sub(u64::from(local.second()))
            .max(1),
    ))
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
}
