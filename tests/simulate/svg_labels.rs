//! The timeline's wall-clock labels: UTC at each tick from the run's start, and the
//! local time of the regions whose change window is `local`.

use crate::simulate_local;
use crate::support::text;

/// The `(attribute, text)` of the SVG's `<text class="CLASS">` labels, in order.
fn labelled(doc: &roxmltree::Document, class: &str, attribute: &str) -> Vec<(String, String)> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("class") == Some(class))
        .map(|n| {
            (
                n.attribute(attribute).unwrap_or_default().to_string(),
                n.text().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_svg_has_wall_clock_labels_and_local_time_where_windows_are_local() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("timeline.svg");
    // 20:00 UTC on 10 March 2026; the world wave (eu-west, us-east) opens its window in
    // each host's local time: New York is UTC-4 since 8 March (16:00 EDT), Dublin UTC+0.
    // cn-south is taken by waves without a local window: no local time in its lane.
    let out = simulate_local(
        dir.path(),
        &[
            "--set",
            "strategy.waves.world.window=02:00-02:05 local",
            "--svg",
            svg.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");

    let clock = labelled(&doc, "clock", "data-utc");
    assert!(clock.len() >= 3, "a wall-clock label per tick: {clock:?}");
    assert_eq!(
        clock[0],
        (
            "2026-03-10T20:00:00Z".to_string(),
            "Mar 10 20:00 UTC".to_string()
        )
    );
    let at = |utc: &str| {
        chrono::DateTime::parse_from_rfc3339(utc)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let step = at(&clock[1].0) - at(&clock[0].0);
    assert!(step > chrono::Duration::zero(), "{clock:?}");
    let mut day = at(&clock[0].0).date_naive();
    for (i, (utc, label)) in clock.iter().enumerate() {
        let t = at(utc);
        assert_eq!(
            t,
            at(&clock[0].0) + step * i as i32,
            "ticks evenly spaced: {clock:?}"
        );
        let expected = if t.date_naive() != day {
            day = t.date_naive();
            t.format("%b %-d %H:%M UTC").to_string()
        } else if i == 0 {
            label.clone()
        } else {
            t.format("%H:%M").to_string()
        };
        assert_eq!(label, &expected, "{clock:?}");
    }

    // Each tick but the first (which would run into the lane's name) has the region's
    // local time: New York is UTC-4 (EDT) all along, Dublin UTC+0 (GMT).
    let local = labelled(&doc, "local-clock", "data-zone");
    for (zone, offset_hours, abbreviation) in
        [("America/New_York", -4, "EDT"), ("Europe/Dublin", 0, "GMT")]
    {
        let of_zone: Vec<&String> = local
            .iter()
            .filter(|(z, _)| z == zone)
            .map(|(_, l)| l)
            .collect();
        assert_eq!(
            of_zone.len(),
            clock.len() - 1,
            "{zone}: a local time per tick: {local:?}"
        );
        for ((utc, _), label) in clock[1..].iter().zip(&of_zone) {
            let local_time = at(utc) + chrono::Duration::hours(offset_hours);
            assert_eq!(
                **label,
                format!("{} {abbreviation}", local_time.format("%H:%M")),
                "{zone} at {utc}"
            );
        }
    }
    assert!(
        !local.iter().any(|(z, _)| z == "Asia/Shanghai"),
        "no local time for cn-south (no local window): {local:?}"
    );
}
