//! `pony ping` and `pony exec` against a fleet of real sshd servers on loopback (12 hosts:
//! r1-c1-01 … r3-c2-02), and the generated completions and man page.

mod support;

use support::code;

use support::{lab, text};

fn json_lines(output: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

#[test]
fn ping_reports_a_killed_host_as_refused_and_a_hung_one_as_timeout() {
    let mut lab = lab();
    lab.fleet.kill("r1-c1-02").unwrap();
    lab.fleet.pause("r2-c2-01").unwrap();
    let inventory = lab.inventory.to_str().unwrap().to_string();

    // The hung host is given up on after one attempt (ping measures, it does not retry).
    let out = lab
        .pony(&["ping", "-i", &inventory, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "some host is unreachable: {}", text(&out));
    let lines = json_lines(&out);
    let pings: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "ping").collect();
    assert_eq!(pings.len(), 12, "{}", text(&out));
    for ping in &pings {
        assert_eq!(ping["schema"], 1);
        let host = ping["host"].as_str().unwrap();
        match host {
            "r1-c1-02" => {
                assert_eq!(ping["reachable"], false, "{ping}");
                assert_eq!(ping["reason"], "refused", "{ping}");
            }
            "r2-c2-01" => {
                assert_eq!(ping["reachable"], false, "{ping}");
                assert_eq!(ping["reason"], "timeout", "{ping}");
            }
            _ => {
                assert_eq!(ping["reachable"], true, "{ping}");
                assert!(ping["rtt_ms"].as_u64().is_some(), "{ping}");
                assert!(ping["reason"].is_null(), "{ping}");
            }
        }
    }
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "ping_summary");
    assert_eq!(summary["reachable"], 10);
    assert_eq!(summary["unreachable"], 2);

    // The human table says the same, with a shorter timeout.
    let out = lab
        .pony(&[
            "ping",
            "-i",
            &inventory,
            "--limit",
            "r1-c1-*:r2-c2-01",
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = |host: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("no row for {host}: {stdout}"))
            .to_string()
    };
    assert!(row("r1-c1-01").contains("reachable"), "{stdout}");
    assert!(
        row("r1-c1-02").contains("UNREACHABLE") && row("r1-c1-02").contains("refused"),
        "{stdout}"
    );
    assert!(
        row("r2-c2-01").contains("UNREACHABLE") && row("r2-c2-01").contains("timeout"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 hosts: 1 reachable, 2 unreachable (1 timeout, 1 refused)"),
        "{stdout}"
    );
}

#[test]
fn ping_of_a_healthy_fleet_exits_0() {
    let lab = lab();
    let inventory = lab.inventory.to_str().unwrap().to_string();
    let out = lab.pony(&["ping", "-i", &inventory]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("12 hosts: 12 reachable, 0 unreachable"),
        "{stdout}"
    );
}

#[test]
fn exec_folds_identical_output_of_12_hosts_into_one_group() {
    let lab = lab();
    let inventory = lab.inventory.to_str().unwrap().to_string();
    let out = lab
        .pony(&["exec", "-i", &inventory, "--", "echo", "postfix 3.7.11"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("12 hosts (exit 0): r1-c1-[01:02], r1-c2-[01:02], r2-c1-[01:02]"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("postfix 3.7.11").count(), 1, "{stdout}");
    assert!(
        stdout.contains("12 hosts: 12 ok, 0 failed; 1 distinct output"),
        "{stdout}"
    );

    let out = lab
        .pony(&[
            "exec",
            "-i",
            &inventory,
            "--output",
            "json",
            "--",
            "echo postfix 3.7.11",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "one group and the summary: {}", text(&out));
    assert_eq!(lines[0]["event"], "exec_group");
    assert_eq!(lines[0]["count"], 12);
    assert_eq!(lines[0]["hosts"].as_array().unwrap().len(), 12);
    assert_eq!(lines[0]["stdout"], "postfix 3.7.11\n");
    assert_eq!(lines[0]["exit_code"], 0);
    assert_eq!(lines[1]["event"], "exec_summary");
    assert_eq!(lines[1]["failed"], 0);
}

#[test]
fn exec_with_a_failing_host_exits_non_zero_and_shows_it_apart() {
    let mut lab = lab();
    lab.fleet.kill("r3-c2-02").unwrap();
    let inventory = lab.inventory.to_str().unwrap().to_string();
    let command = r#"if [ "$PONY_LAB_HOST" = r2-c1-01 ]; then echo 'queue not empty' >&2; exit 4; fi; echo drained"#;
    let out = lab
        .pony(&[
            "exec",
            "-i",
            &inventory,
            "--connections",
            "4",
            "--",
            command,
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let groups: Vec<&str> = stdout.split("\n\n").collect();
    assert!(groups[0].starts_with("10 hosts (exit 0)"), "{stdout}");
    assert!(groups[0].contains("drained"), "{stdout}");
    let failed = groups
        .iter()
        .find(|g| g.starts_with("1 host (exit 4): r2-c1-01"))
        .unwrap_or_else(|| panic!("no group for the failing host: {stdout}"));
    assert!(failed.contains("queue not empty"), "{failed}");
    let unreachable = groups
        .iter()
        .find(|g| g.starts_with("1 host (did not run (refused)): r3-c2-02"))
        .unwrap_or_else(|| panic!("no group for the dead host: {stdout}"));
    assert!(unreachable.contains("Connection refused"), "{unreachable}");
    assert!(stdout.contains("12 hosts: 10 ok, 2 failed"), "{stdout}");
}

#[test]
fn completions_and_man_page_come_from_the_command_line_definition() {
    let out = support::pony_bare()
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    for word in ["deploy", "ping", "exec", "--junit"] {
        assert!(script.contains(word), "completions lack {word}");
    }
    let out = support::pony_bare().arg("man").output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie") || page.contains("\n.TH "), "{page}");
    assert!(page.contains(".SH NAME"), "{page}");
    assert!(page.contains("deploy"), "{page}");

    // A reader that stops early (`| head -2`): the script (~70 KB) is more than a pipe
    // holds, so pony meets the closed pipe, and that is not a failure.
    let mut child = support::pony_bare()
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn exec_runs_the_command_as_typed_and_says_it_renders_no_template() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (inventory, _) = support::write_plan(dir.path(), support::TINY_INVENTORY, "");
    let out = support::pony(
        &state,
        &[
            "exec",
            "-i",
            inventory.to_str().unwrap(),
            "--limit",
            "h1",
            "--",
            "echo '{{ host.name }}'",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("{{ host.name }}"),
        "the shell saw the braces: {stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pony exec runs the command as typed"),
        "{}",
        support::text(&out)
    );
}
