//! Change windows in each region's own time zone.

use super::*;

const ZONED_INVENTORY: &str = r#"
name: t
defaults: { connection: local }
regions:
  r1:
    tz: Asia/Shanghai
    clusters:
      c1: { hosts: { "a[1:2]": } }
  r2:
    tz: Europe/Berlin
    clusters:
      c2: { hosts: { "b[1:2]": } }
"#;

/// 20:00 UTC: 04:00 in Shanghai (inside 02:00-05:00), 21:00 in Berlin (5h before it).
fn eight_pm_utc() -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc.with_ymd_and_hms(2026, 3, 10, 20, 0, 0).unwrap()
}

#[tokio::test]
async fn a_local_window_opens_each_regions_hosts_in_that_regions_own_window() {
    let playbook = r#"name: p
strategy:
  waves: [{ name: all, regions: ["*"], window: "02:00-05:00 local" }]
steps:
  - { name: deploy, run: echo deploy >> log }
"#;
    let mut run = start_with(ZONED_INVENTORY, playbook, eight_pm_utc);
    let mut seen = Vec::new();
    // The Berlin hosts' wait and the Shanghai hosts' ends come in either order (the
    // test waited for the wait first, and hung when a host finished before it).
    let finished = |seen: &[Event], host: &str| {
        seen.iter()
            .any(|e| matches!(e, Event::HostFinished { host: h, .. } if h == host))
    };
    while !(seen.iter().any(|e| matches!(e, Event::GateWaiting { .. }))
        && finished(&seen, "a1")
        && finished(&seen, "a2"))
    {
        run.until(&mut seen, |_| true).await;
    }
    for host in ["a1", "a2"] {
        assert_eq!(run.read(host, "log").as_deref(), Some("deploy\n"), "{host}");
    }
    let waits: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Event::GateWaiting {
                reason, seconds, ..
            } => Some((reason.to_string(), *seconds)),
            _ => None,
        })
        .collect();
    assert_eq!(
        waits,
        vec![(
            "window 02:00-05:00 local (Europe/Berlin)".to_string(),
            5 * 3600
        )]
    );
    assert_eq!(started_hosts(&seen), vec!["a1", "a2"]);
    for host in ["b1", "b2"] {
        assert!(
            run.read(host, "log").is_none(),
            "{host} waits for Berlin's window"
        );
    }
    // Berlin's window is hours away: the run is left there.
    run.report.abort();
}
