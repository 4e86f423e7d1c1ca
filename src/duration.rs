//! Durations as pony prints them for people: one formatter ([`short`]) for reports,
//! summaries, simulations and messages, and one named variant ([`full`]) for a run's
//! length (`pony status`, `pony history`) and `plan --estimate`'s total, which shows
//! whole seconds and every unit. Tests pin both (`10.0s` and `1h 02m` in progress lines
//! and summaries; `12s` in the estimate and `1h 2m 5s` in a run's length), so they stay
//! two.
//!
//! Durations a person configured (a pause, a timeout) are echoed in the playbook's own
//! syntax with `humantime::format_duration`, not here.

use std::time::Duration;

/// `850ms`, `4.2s`, `42.0s`, `3m 05s`, `1h 02m`: two units at most, tenths of a second
/// below a minute.
pub fn short(duration: Duration) -> String {
    let ms = duration.as_millis() as u64;
    let secs = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if secs < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
    }
}

/// [`short`] in milliseconds (what journals and simulations count in).
pub fn short_ms(ms: u64) -> String {
    short(Duration::from_millis(ms))
}

/// A run's length and `plan --estimate`'s total: to the tenth of a second below ten
/// seconds (`900ms` for 907 ms, `1.3s`), else every unit down to the whole second (`12s`,
/// `12m 30s`, `1h 2m 5s`).
pub fn full(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis() / 100 * 100)
    } else if duration < Duration::from_secs(10) {
        short(duration)
    } else {
        humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keeps_two_units_and_tenths_only_below_ten_seconds() {
        let s = |ms| short_ms(ms);
        assert_eq!(s(0), "0ms");
        assert_eq!(s(7), "7ms");
        assert_eq!(s(999), "999ms");
        assert_eq!(s(1000), "1.0s");
        assert_eq!(s(9_049), "9.0s");
        assert_eq!(s(10_000), "10.0s");
        assert_eq!(s(59_900), "59.9s");
        assert_eq!(s(60_000), "1m 00s");
        assert_eq!(s(185_000), "3m 05s");
        assert_eq!(s(3_599_999), "59m 59s");
        assert_eq!(s(3_720_000), "1h 02m");
        assert_eq!(s(50 * 3_600_000), "50h 00m");
    }

    #[test]
    fn full_shows_every_unit_from_ten_seconds() {
        let f = |ms| full(Duration::from_millis(ms));
        assert_eq!(f(907), "900ms");
        assert_eq!(f(42), "0ms");
        assert_eq!(f(1300), "1.3s");
        assert_eq!(f(10_500), "10s");
        assert_eq!(f(750_000), "12m 30s");
        assert_eq!(f(3_725_000), "1h 2m 5s");
    }
}
