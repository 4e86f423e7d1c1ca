//! How the simulation writes a length of time: the one formatter its text report, its
//! timeline picture and its duration sources share. A leaf: it imports nothing of the
//! simulation, so the reports can use it and the duration table too.

/// `2h 05m`, `12m 30s`, `42s`, `1.3s`.
pub fn duration_text(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 60_000 {
        format!("{}s", ms / 1000)
    } else if ms < 3_600_000 {
        let s = ms / 1000;
        if s.is_multiple_of(60) {
            format!("{}m", s / 60)
        } else {
            format!("{}m {}s", s / 60, s % 60)
        }
    } else {
        let m = ms / 60_000;
        format!("{}h {:02}m", m / 60, m % 60)
    }
}
