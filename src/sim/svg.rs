//! The timeline picture of a simulation (`--svg FILE`): one lane per region, one row per
//! cluster with a bar per wave it took part in (red outline when hosts failed, a red bar
//! while its rollback ran), pauses and approvals as bands across every lane, change
//! windows as grey bands in the lanes of the regions that waited for them. The time axis
//! reads elapsed time and the wall clock (UTC, from the run's start); a region whose
//! hosts open their change window in `local` time gets its zone's local time in its
//! lane's head. Plain SVG, no script; readable at 7 regions × 14 clusters. The run page
//! of `pony serve` draws a real run's journal with the same code ([`render_run`]).

use super::report::{ClusterBars, RegionSpan, Simulation};
use crate::report::thousands;
use std::fmt::Write;

const WIDTH: f64 = 1200.0;
const LABEL: f64 = 210.0;
const PLOT: f64 = WIDTH - LABEL - 30.0;
const ROW: f64 = 16.0;
const LANE_HEAD: f64 = 20.0;
const TOP: f64 = 70.0;
const WAVE_COLOURS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step that gives at most about a dozen ticks.
fn tick_step(total_ms: u64) -> u64 {
    const STEPS: [u64; 14] = [
        1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000, 7_200_000,
        10_800_000, 21_600_000, 43_200_000, 86_400_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| total_ms / s <= 12)
        .unwrap_or(86_400_000 * (total_ms / 86_400_000 / 12 + 1))
}

/// The picture of a simulation (with `--compare`, the by-hand baseline's total in the
/// title).
pub fn render(sim: &Simulation, baseline: Option<&Simulation>) -> String {
    let mut title = format!(
        "pony simulate: {} on {} — {} hosts, total {}",
        sim.playbook,
        sim.inventory,
        thousands(sim.hosts),
        crate::duration::short_ms(sim.total_ms)
    );
    if let Some(base) = baseline {
        let _ = write!(
            title,
            " (by hand: {}, {:.1}x longer)",
            crate::duration::short_ms(base.total_ms),
            base.total_ms as f64 / sim.total_ms.max(1) as f64
        );
    }
    let line = format!(
        "start {} · seed {} · bound most by {}",
        sim.start,
        sim.seed,
        sim.bound_most()
            .map(|b| b.limit.as_str())
            .unwrap_or("nothing")
    );
    draw(sim, &title, &line)
}

/// The picture of a real run's journal ([`super::journal::timeline`]) so far.
pub fn render_run(sim: &Simulation, run_id: &str, running: bool) -> String {
    let title = format!(
        "run {run_id}: {} on {} — {} hosts, {} {}",
        sim.playbook,
        sim.inventory,
        thousands(sim.hosts),
        if running { "so far" } else { "total" },
        crate::duration::short_ms(sim.total_ms)
    );
    draw(
        sim,
        &title,
        &format!("start {} · from the journal", sim.start),
    )
}

fn draw(sim: &Simulation, title: &str, line: &str) -> String {
    let total = sim.total_ms.max(1);
    let x = |ms: u64| LABEL + PLOT * (ms.min(total) as f64 / total as f64);
    let rows: usize = sim.regions.iter().map(|r| r.clusters.len()).sum();
    let height = TOP + sim.regions.len() as f64 * (LANE_HEAD + 4.0) + rows as f64 * ROW + 70.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="Helvetica, Arial, sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    header(&mut s, title, line);
    let start = chrono::DateTime::parse_from_rfc3339(&sim.start)
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok();
    // Time axis.
    let bottom = height - 60.0;
    time_axis(&mut s, &x, total, bottom, start);
    let mut y = TOP;
    for region in &sim.regions {
        let lane_rows = region.clusters.len() as f64 * ROW;
        let lane_top = y;
        let _ = writeln!(
            s,
            r##"<rect x="0" y="{lane_top:.1}" width="{WIDTH}" height="{:.1}" fill="#f4f6f8" fill-opacity="0.6"/>"##,
            LANE_HEAD + lane_rows
        );
        window_bands(&mut s, &x, sim, region, lane_top, lane_rows);
        let span = match (region.start_ms, region.end_ms) {
            (Some(a), Some(b)) => format!(
                "{} → {}",
                crate::duration::short_ms(a),
                crate::duration::short_ms(b)
            ),
            _ => "not started".into(),
        };
        let _ = writeln!(
            s,
            r##"<text x="6" y="{:.1}" font-weight="bold">{} <tspan font-weight="normal" fill="#555">{} hosts · {}</tspan></text>"##,
            lane_top + 14.0,
            escape(&region.name),
            thousands(region.hosts),
            escape(&span)
        );
        if let (true, Some(start), Some(zone)) = (region.local_window, start, region.zones.first())
        {
            local_clock(&mut s, &x, total, start, zone, lane_top + 14.0);
        }
        y += LANE_HEAD;
        for cluster in &region.clusters {
            cluster_row(&mut s, &x, sim, cluster, y);
            y += ROW;
        }
        y += 4.0;
    }
    gate_bands(&mut s, &x, sim, bottom);
    // Legend.
    legend(&mut s, sim, bottom);
    s.push_str("</svg>\n");
    s
}

/// The title and the line under it.
fn header(s: &mut String, title: &str, line: &str) {
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="34" fill="#555">{}</text>"##,
        escape(line)
    );
}

/// The time axis: a faint line per tick, labelled with the time elapsed and, above it,
/// the wall clock in UTC (the date at the first tick and where the day changes).
fn time_axis(
    s: &mut String,
    x: &dyn Fn(u64) -> f64,
    total: u64,
    bottom: f64,
    start: Option<chrono::DateTime<chrono::Utc>>,
) {
    let step = tick_step(total);
    let mut t = 0;
    let mut day = None;
    while t <= total {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{bottom:.1}" stroke="#e4e4e4"/><text x="{0:.1}" y="{1:.0}" text-anchor="middle" fill="#555">{2}</text>"##,
            x(t),
            TOP - 6.0,
            crate::duration::short_ms(t)
        );
        if let Some(start) = start {
            let at = start + chrono::Duration::milliseconds(t as i64);
            let label = if day != Some(at.date_naive()) {
                day = Some(at.date_naive());
                at.format("%b %-d %H:%M UTC").to_string()
            } else {
                at.format("%H:%M").to_string()
            };
            let _ = writeln!(
                s,
                r##"<text class="clock" data-utc="{}" x="{:.1}" y="{:.0}" text-anchor="middle" fill="#333">{}</text>"##,
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                x(t),
                TOP - 20.0,
                label
            );
        }
        t += step;
    }
}

/// A region's local time at each tick but the first, in its lane's head (its hosts open
/// their change windows in their own zone's time).
fn local_clock(
    s: &mut String,
    x: &dyn Fn(u64) -> f64,
    total: u64,
    start: chrono::DateTime<chrono::Utc>,
    zone: &str,
    y: f64,
) {
    let Ok(tz) = zone.parse::<chrono_tz::Tz>() else {
        return;
    };
    let step = tick_step(total);
    // From the second tick: the first would run into the region's name and figures.
    let mut t = step;
    while t <= total {
        let at = (start + chrono::Duration::milliseconds(t as i64)).with_timezone(&tz);
        let _ = writeln!(
            s,
            r##"<text class="local-clock" data-zone="{}" data-local="{}" x="{:.1}" y="{y:.1}" text-anchor="middle" font-size="9" fill="#777">{}</text>"##,
            escape(zone),
            at.format("%Y-%m-%dT%H:%M"),
            x(t),
            at.format("%H:%M %Z")
        );
        t += step;
    }
}

/// The change windows a region's hosts waited for, shaded in its lane.
fn window_bands(
    s: &mut String,
    x: &dyn Fn(u64) -> f64,
    sim: &Simulation,
    region: &RegionSpan,
    lane_top: f64,
    lane_rows: f64,
) {
    for g in sim.gates.iter().filter(|g| g.kind == "window") {
        let zone = g
            .detail
            .rsplit_once('(')
            .map(|(_, z)| z.trim_end_matches(')').to_string());
        let in_wave = region
            .clusters
            .iter()
            .any(|c| c.bars.iter().any(|b| b.wave == g.wave));
        let here = match &zone {
            Some(z) => region.zones.contains(z),
            None => in_wave,
        };
        if here && in_wave {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{lane_top:.1}" width="{:.1}" height="{:.1}" fill="#9aa0a6" fill-opacity="0.35"><title>{} waits for {}</title></rect>"##,
                x(g.start_ms),
                (x(g.end_ms) - x(g.start_ms)).max(1.0),
                LANE_HEAD + lane_rows,
                escape(&region.name),
                escape(&g.detail)
            );
        }
    }
}

/// One cluster's row: its name, a bar per wave it took part in, its rollback.
fn cluster_row(
    s: &mut String,
    x: &dyn Fn(u64) -> f64,
    sim: &Simulation,
    cluster: &ClusterBars,
    y: f64,
) {
    let _ = writeln!(
        s,
        r##"<text x="16" y="{:.1}" fill="#333">{} <tspan fill="#777">{}×, {} at once</tspan></text>"##,
        y + 12.0,
        escape(&cluster.name),
        cluster.hosts,
        cluster.slots
    );
    for bar in &cluster.bars {
        let wave = sim
            .waves
            .iter()
            .position(|w| w.name == bar.wave)
            .unwrap_or(0);
        let colour = WAVE_COLOURS[wave % WAVE_COLOURS.len()];
        let stroke = if bar.failed_hosts > 0 {
            r##" stroke="#d62728" stroke-width="2""##
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="2" fill="{colour}"{stroke}><title>{} wave {}: {} → {}{}</title></rect>"#,
            x(bar.start_ms),
            y + 2.0,
            (x(bar.end_ms) - x(bar.start_ms)).max(1.5),
            ROW - 4.0,
            escape(&cluster.name),
            escape(&bar.wave),
            crate::duration::short_ms(bar.start_ms),
            crate::duration::short_ms(bar.end_ms),
            if bar.failed_hosts > 0 {
                format!(", {} failed hosts", bar.failed_hosts)
            } else {
                String::new()
            }
        );
    }
    if let Some((a, b)) = cluster.rollback {
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="4" fill="#d62728"><title>{} rolled back {} → {}</title></rect>"##,
            x(a),
            y + ROW - 5.0,
            (x(b) - x(a)).max(2.0),
            escape(&cluster.name),
            crate::duration::short_ms(a),
            crate::duration::short_ms(b)
        );
    }
}

/// Pauses and approvals hold every lane (drawn over the lanes).
fn gate_bands(s: &mut String, x: &dyn Fn(u64) -> f64, sim: &Simulation, bottom: f64) {
    for g in sim.gates.iter().filter(|g| g.kind != "window") {
        let colour = if g.kind == "soak" {
            "#f5d76e"
        } else {
            "#c39bd3"
        };
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.35"><title>{} {} {} → {}</title></rect>"#,
            x(g.start_ms),
            (x(g.end_ms) - x(g.start_ms)).max(1.0),
            bottom - TOP,
            escape(&g.wave),
            escape(&g.detail),
            crate::duration::short_ms(g.start_ms),
            crate::duration::short_ms(g.end_ms)
        );
    }
}

/// The legend: a swatch per wave, then the bands' and the rollback's.
fn legend(s: &mut String, sim: &Simulation, bottom: f64) {
    let mut lx = 10.0;
    let ly = bottom + 22.0;
    for (i, wave) in sim.waves.iter().enumerate() {
        let colour = WAVE_COLOURS[i % WAVE_COLOURS.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="10" fill="{colour}"/><text x="{:.1}" y="{ly:.1}">wave {}</text>"#,
            ly - 9.0,
            lx + 16.0,
            escape(&wave.name)
        );
        lx += 30.0 + 7.0 * wave.name.len() as f64 + 20.0;
    }
    for (colour, text, opacity) in [
        ("#f5d76e", "soak", "0.6"),
        ("#c39bd3", "approval", "0.6"),
        ("#9aa0a6", "waiting for a change window", "0.5"),
        ("#d62728", "rollback", "1"),
    ] {
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="10" fill="{colour}" fill-opacity="{opacity}"/><text x="{:.1}" y="{ly:.1}">{text}</text>"#,
            ly - 9.0,
            lx + 16.0
        );
        lx += 30.0 + 6.5 * text.len() as f64;
    }
}
