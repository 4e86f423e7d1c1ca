//! What people and CI read from a run against a fleet of real sshd servers on loopback:
//! the progress bars and summary on a terminal (a tmux pane), every line of
//! `--output json` against the documented schema (docs/events.md), and the JUnit file
//! parsed with an XML parser.

mod support;

use support::code;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{lab, text, Lab};

/// Two steps; `switch` fails on r2-c1-01 with a line on stderr and exit 7. With
/// `max_failures: 0` and `rollback-region`, region r2 is rolled back and r1, r3 succeed.
const FAILING: &str = r#"
name: report
strategy:
  max_unavailable: 100%
  max_failures: 0
  on_failure: rollback-region
steps:
  - name: stage
    run: mkdir -p {{ mail_root }}/releases/2.0
    rollback: rm -rf {{ mail_root }}/releases/2.0
  - name: switch
    needs: [stage]
    run: |
      if [ "$PONY_LAB_HOST" = r2-c1-01 ]; then
        echo "postfix/postconf: fatal: /etc/postfix/main.cf, line 12: missing '=' after attribute name" >&2
        exit 7
      fi
      ln -sfn releases/2.0 {{ mail_root }}/current
    rollback: rm -f {{ mail_root }}/current
"#;

/// A tmux server of our own (its socket in the lab's folder), killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Tmux {
        Tmux {
            socket: dir.join("tmux.sock"),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&self.socket);
        command
    }

    /// Runs `shell` in a detached 200×50 pane, then keeps the pane open.
    fn start(&self, shell: &str) {
        let status = self
            .command()
            .args(["new-session", "-d", "-x", "200", "-y", "50"])
            .arg(support::clean_shell_line(&format!(
                "{shell}; echo PONY-EXIT=$?; sleep 60"
            )))
            .status()
            .expect("tmux is needed for this test (scripts/test installs it)");
        assert!(status.success(), "tmux new-session failed");
    }

    /// The pane's text, scroll-back included.
    fn capture(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-J", "-S", "-"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's text once `PONY-EXIT=` appears, and the exit code.
    fn wait_for_exit(&self, limit: Duration) -> (String, i32) {
        let started = Instant::now();
        loop {
            let screen = self.capture();
            if let Some(code) = screen
                .lines()
                .find_map(|l| l.trim().strip_prefix("PONY-EXIT="))
            {
                return (screen.clone(), code.trim().parse().unwrap_or(-1));
            }
            assert!(
                started.elapsed() < limit,
                "pony did not finish within {limit:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[test]
fn a_terminal_gets_region_bars_failures_above_them_and_the_summary() {
    let lab = lab();
    let playbook = lab.playbook(FAILING);
    let tmux = Tmux::new(lab.dir.path());
    let command = [
        env!("CARGO_BIN_EXE_pony"),
        "--state-dir",
        lab.state.to_str().unwrap(),
        "deploy",
        "-i",
        lab.inventory.to_str().unwrap(),
        playbook.to_str().unwrap(),
        "--yes",
    ]
    .iter()
    .map(|a| shell_quote(a))
    .collect::<Vec<_>>()
    .join(" ");
    tmux.start(&format!("env -u RUST_LOG {command}"));
    let (screen, exit) = tmux.wait_for_exit(Duration::from_secs(90));
    // Keep the screen for whoever wants to look at it (the README shows one).
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-terminal-screen.txt"),
        &screen,
    );
    assert_eq!(exit, 1, "failed, rollback complete:\n{screen}");

    // One bar per region, in its final state, and the overall bar.
    for (region, tail) in [("r1", "done"), ("r2", "rolled back"), ("r3", "done")] {
        let bar = screen
            .lines()
            .find(|l| l.starts_with(&format!("{region} ")) && l.contains('['))
            .unwrap_or_else(|| panic!("no bar for region {region}:\n{screen}"));
        assert!(bar.contains(" 4/4"), "{bar}");
        assert!(bar.contains(tail), "{bar}");
    }
    let r2 = screen.lines().find(|l| l.starts_with("r2 ")).unwrap();
    assert!(r2.contains("1 failed"), "{r2}");
    let overall = screen
        .lines()
        .find(|l| l.starts_with("overall"))
        .unwrap_or_else(|| panic!("no overall bar:\n{screen}"));
    // Every host ran and ended: nothing is left to go, so no ETA (it never shows
    // `00:00:00`).
    assert!(
        overall.contains("12/12") && overall.contains("elapsed") && !overall.contains("ETA"),
        "{overall}"
    );
    // The failure was printed above the bars, with the step, exit code and stderr.
    let failure = screen
        .find("FAILED r2-c1-01 [r2] step switch: exit 7")
        .unwrap_or_else(|| panic!("no failure line:\n{screen}"));
    assert!(screen[failure..].contains("| postfix/postconf: fatal"));
    assert!(failure < screen.find("overall").unwrap());
    // The summary follows the bars.
    let table = screen
        .find("REGION")
        .unwrap_or_else(|| panic!("no summary:\n{screen}"));
    assert!(table > screen.find("overall").unwrap(), "{screen}");
    for needle in [
        "FAILED HOSTS",
        "SLOWEST STEPS",
        "failed; rollback complete",
        // r2-c1-01 failed and was rolled back: it still counts as failed.
        "12 hosts, 8 ok, 1 failed (rolled back), 4 rolled back, 0 not run (exit 1)",
        "journal: ",
        "logs: ",
    ] {
        assert!(screen.contains(needle), "no {needle:?}:\n{screen}");
    }
}

/// The canary (r1-c1-01) fails `switch`; with `max_failures: 0` the rollout stops there:
/// eleven hosts never start.
const FAILED_CANARY: &str = r#"
name: canary
strategy:
  max_unavailable: 100%
  max_failures: 0
  on_failure: rollback-region
  waves:
    - { name: canary, regions: [r1], hosts: r1-c1-01 }
    - { name: world, regions: ["*"] }
steps:
  - name: stage
    run: mkdir -p {{ mail_root }}/releases/2.0
    rollback: rm -rf {{ mail_root }}/releases/2.0
  - name: switch
    needs: [stage]
    run: |
      if [ "$PONY_LAB_HOST" = r1-c1-01 ]; then echo "bad config" >&2; exit 7; fi
      ln -sfn releases/2.0 {{ mail_root }}/current
    rollback: rm -f {{ mail_root }}/current
"#;

/// After a failed canary no host that never started is drawn as done: the regions the
/// rollout never reached show an empty bar and `not run`, the overall bar counts the one
/// host that ran and says how many did not, and no ETA is left on screen.
#[test]
fn a_failed_canary_draws_no_never_started_host_as_done() {
    let lab = lab();
    let playbook = lab.playbook(FAILED_CANARY);
    let tmux = Tmux::new(lab.dir.path());
    let command = [
        env!("CARGO_BIN_EXE_pony"),
        "--state-dir",
        lab.state.to_str().unwrap(),
        "deploy",
        "-i",
        lab.inventory.to_str().unwrap(),
        playbook.to_str().unwrap(),
        "--yes",
    ]
    .iter()
    .map(|a| shell_quote(a))
    .collect::<Vec<_>>()
    .join(" ");
    tmux.start(&format!("env -u RUST_LOG {command}"));
    let (screen, exit) = tmux.wait_for_exit(Duration::from_secs(90));
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-failed-canary-screen.txt"),
        &screen,
    );
    assert_eq!(exit, 1, "failed, rollback complete:\n{screen}");
    assert!(
        screen.contains("NOT RUN") || screen.contains("not run"),
        "{screen}"
    );
    let bar = |region: &str| {
        screen
            .lines()
            .rfind(|l| l.starts_with(&format!("{region} ")) && l.contains('['))
            .unwrap_or_else(|| panic!("no bar for {region}:\n{screen}"))
            .to_string()
    };
    for region in ["r2", "r3"] {
        let bar = bar(region);
        assert!(bar.contains(" 0/4"), "never started, not done: {bar}");
        assert!(bar.contains("not run"), "{bar}");
        assert!(!bar.contains("done"), "{bar}");
        assert!(!bar.contains('█'), "an empty bar: {bar}");
    }
    // r1: the canary ran (failed, rolled back); its three other hosts never started.
    let r1 = bar("r1");
    assert!(r1.contains(" 1/4"), "{r1}");
    assert!(r1.contains("3 not run") && !r1.contains("done"), "{r1}");
    let overall = screen
        .lines()
        .rfind(|l| l.starts_with("overall"))
        .unwrap_or_else(|| panic!("no overall bar:\n{screen}"));
    assert!(overall.contains(" 1/12"), "{overall}");
    assert!(overall.contains("11 not run"), "{overall}");
    assert!(!overall.contains("ETA"), "nothing left to go: {overall}");
}

/// The JSON lines of a run with `--output json` (and a JUnit file beside it).
fn failing_run(lab: &Lab, extra: &[&str]) -> std::process::Output {
    let playbook = lab.playbook(FAILING);
    lab.deploy(&playbook, extra)
}

/// Fields of every event kind, with their JSON types (docs/events.md).
fn schema(kind: &str) -> Option<&'static [(&'static str, &'static str)]> {
    Some(match kind {
        "run_started" => &[
            ("run_id", "string"),
            ("playbook", "string"),
            ("inventory", "string"),
            ("hosts", "integer"),
            ("tasks", "integer"),
            ("waves", "array"),
            ("regions", "array"),
        ],
        "wave_started" => &[("wave", "string"), ("hosts", "integer")],
        "gate_waiting" => &[
            ("wave", "string"),
            ("reason", "string"),
            ("seconds", "integer"),
        ],
        "gate_passed" => &[("wave", "string")],
        "wave_failed" => &[("wave", "string"), ("reason", "string")],
        "wave_skipped" => &[("wave", "string"), ("user", "string")],
        "task_interrupted" => &[("task", "task")],
        "rollback_task_started" => &[("task", "task")],
        "task_started" => &[("task", "task")],
        "task_finished" => &[
            ("task", "task"),
            ("changed", "boolean"),
            ("exit_code", "integer?"),
            ("duration_ms", "integer"),
            ("attempts", "integer"),
        ],
        "task_skipped" => &[("task", "task"), ("reason", "string")],
        "task_failed" => &[
            ("task", "task"),
            ("exit_code", "integer?"),
            ("error", "string"),
            ("stderr_tail", "string"),
            ("duration_ms", "integer"),
            ("attempts", "integer"),
        ],
        "host_finished" => &[
            ("host", "string"),
            ("region", "string"),
            ("cluster", "string"),
            ("outcome", "outcome"),
        ],
        "budget_exceeded" => &[
            ("cluster", "string"),
            ("region", "string"),
            ("failed_hosts", "integer"),
            ("max_failures", "integer"),
            ("action", "string"),
        ],
        "run_budget_exceeded" => &[
            ("failed_hosts", "integer"),
            ("max_failures_run", "integer"),
            ("action", "string"),
        ],
        "rollback_started" => &[("scope", "string"), ("hosts", "integer")],
        "rollback_task" => &[
            ("task", "task"),
            ("ok", "boolean"),
            ("exit_code", "integer?"),
            ("error", "string?"),
            ("duration_ms", "integer"),
        ],
        "rollback_not_attempted" => &[
            ("task", "task"),
            ("blocked_by", "string"),
            ("reason", "string"),
        ],
        "rollback_finished" => &[("scope", "string"), ("ok", "boolean")],
        "health_checked" => &[
            ("host", "string"),
            ("region", "string"),
            ("cluster", "string"),
            ("after", "string"),
            ("checked", "boolean"),
            ("ok", "boolean"),
            ("error", "string?"),
            ("duration_ms", "integer"),
        ],
        // `region` is left out when the whole run stops (`~`: may be absent).
        "stopped" => &[
            ("reason", "string"),
            ("region", "string~"),
            ("rollback", "boolean"),
        ],
        "summary" => &[
            ("run_id", "string"),
            ("outcome", "string"),
            ("exit_code", "integer"),
            ("hosts", "integer"),
            ("ok", "integer"),
            ("failed", "integer"),
            ("rolled_back", "integer"),
            ("cancelled", "integer"),
            ("rollback_failed", "integer"),
            ("incomplete", "array"),
            ("stopped_wave", "string?"),
            ("rollbacks_not_attempted", "array"),
            ("duration_ms", "integer"),
            ("regions", "array"),
            ("run_dir", "string"),
        ],
        _ => return None,
    })
}

fn check_type(value: &serde_json::Value, kind: &str, context: &str) {
    let ok = match kind {
        "string" => value.is_string(),
        "string?" => value.is_string() || value.is_null(),
        "integer" => value.is_u64() || value.is_i64(),
        "integer?" => value.is_u64() || value.is_i64() || value.is_null(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "outcome" => matches!(
            value.as_str(),
            Some("ok" | "failed" | "rolled_back" | "rollback_failed" | "cancelled" | "incomplete")
        ),
        "task" => {
            let task = value.as_object().expect("task is an object");
            assert!(task["id"].is_u64(), "{context}: task.id");
            for field in ["step", "host", "region", "cluster", "wave"] {
                assert!(
                    task[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{context}: task.{field}"
                );
            }
            assert_eq!(
                task.len(),
                6,
                "{context}: task has exactly the documented fields"
            );
            true
        }
        _ => unreachable!("{kind}"),
    };
    assert!(ok, "{context}: expected {kind}, got {value}");
}

#[test]
fn every_json_line_of_a_failed_and_rolled_back_run_follows_the_documented_schema() {
    let lab = lab();
    let out = failing_run(&lab, &["--output", "json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.md"))
            .expect("docs/events.md");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut kinds = Vec::new();
    for (n, line) in stdout.lines().enumerate() {
        let context = format!("line {}: {line}", n + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{context}: not JSON: {e}"));
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("{context}: not an object"));
        assert_eq!(object["schema"], 1, "{context}");
        let time = object["time"]
            .as_str()
            .unwrap_or_else(|| panic!("{context}: time"));
        humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{context}: time: {e}"));
        let kind = object["event"]
            .as_str()
            .unwrap_or_else(|| panic!("{context}: event"));
        let fields = schema(kind).unwrap_or_else(|| panic!("{context}: undocumented event"));
        assert!(
            docs.contains(&format!("### `{kind}`")),
            "{kind} is not in docs/events.md"
        );
        let mut present = 0;
        for (field, ty) in fields {
            let absent_ok = ty.strip_suffix('~');
            let Some(value) = object.get(*field) else {
                assert!(absent_ok.is_some(), "{context}: no field {field}");
                continue;
            };
            present += 1;
            check_type(
                value,
                absent_ok.unwrap_or(ty),
                &format!("{context}: {field}"),
            );
        }
        assert_eq!(
            object.len(),
            present + 3,
            "{context}: exactly the documented fields"
        );
        kinds.push(kind.to_string());
    }
    assert_eq!(kinds.first().map(String::as_str), Some("run_started"));
    assert_eq!(kinds.last().map(String::as_str), Some("summary"));
    for needed in [
        "task_started",
        "task_finished",
        "task_failed",
        "budget_exceeded",
        "rollback_started",
        "rollback_task",
        "rollback_finished",
        "host_finished",
    ] {
        assert!(
            kinds.iter().any(|k| k == needed),
            "no {needed} in {kinds:?}"
        );
    }
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed = events.iter().find(|e| e["event"] == "task_failed").unwrap();
    assert_eq!(failed["task"]["host"], "r2-c1-01");
    assert_eq!(failed["task"]["step"], "switch");
    assert_eq!(failed["task"]["region"], "r2");
    assert_eq!(failed["exit_code"], 7);
    assert!(failed["stderr_tail"]
        .as_str()
        .unwrap()
        .contains("missing '='"));
    let summary = events.last().unwrap();
    assert_eq!(summary["outcome"], "failed_rolled_back");
    assert_eq!(summary["exit_code"], 1);
    assert_eq!(summary["rolled_back"], 4);
    assert_eq!(summary["ok"], 8);
    for region in summary["regions"].as_array().unwrap() {
        for field in [
            "hosts",
            "ok",
            "failed",
            "rolled_back",
            "cancelled",
            "duration_ms",
        ] {
            assert!(region[field].is_u64(), "regions[].{field}: {region}");
        }
    }
    // The last outcome of every r2 host is rolled_back.
    for host in ["r2-c1-01", "r2-c1-02", "r2-c2-01", "r2-c2-02"] {
        let last = events
            .iter()
            .rev()
            .find(|e| e["event"] == "host_finished" && e["host"] == host)
            .unwrap_or_else(|| panic!("no host_finished for {host}"));
        assert_eq!(last["outcome"], "rolled_back", "{host}");
    }
    // Human text, if any, never goes to stdout with --output json.
    assert!(!stdout.contains("REGION"), "{stdout}");

    // One spelling of the outcome: the summary event, the journal and `pony status`.
    let run_id = summary["run_id"].as_str().unwrap();
    let journal = std::fs::read_to_string(
        Path::new(summary["run_dir"].as_str().unwrap()).join("journal.jsonl"),
    )
    .unwrap();
    let finished: serde_json::Value =
        serde_json::from_str(journal.lines().last().unwrap()).unwrap();
    assert_eq!(finished["type"], "run_finished");
    assert_eq!(finished["outcome"], summary["outcome"]);
    let status = lab
        .pony(&["--output", "json", "status", run_id])
        .output()
        .unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["outcome"], summary["outcome"]);
    let history = lab.pony(&["--output", "json", "history"]).output().unwrap();
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(history["outcome"], summary["outcome"]);
}

/// A JUnit `time` attribute: seconds with three decimals (milliseconds), as a count of
/// milliseconds.
fn seconds(text: &str) -> u64 {
    let (whole, millis) = text
        .split_once('.')
        .unwrap_or_else(|| panic!("time {text:?} has no decimals"));
    assert_eq!(millis.len(), 3, "time {text:?}");
    whole.parse::<u64>().unwrap() * 1000 + millis.parse::<u64>().unwrap()
}

#[test]
fn the_junit_report_has_a_suite_per_region_and_a_failure_for_the_failed_host() {
    let lab = lab();
    let junit = lab.path("reports/junit.xml");
    let out = failing_run(&lab, &["--junit", junit.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
    let doc =
        roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("invalid XML: {e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("12"));
    assert_eq!(root.attribute("failures"), Some("1"));
    let suites: Vec<roxmltree::Node> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    let names: Vec<&str> = suites.iter().filter_map(|s| s.attribute("name")).collect();
    assert_eq!(names, ["r1", "r2", "r3"]);
    for suite in &suites {
        let cases: Vec<roxmltree::Node> = suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), 4, "{xml}");
        assert_eq!(suite.attribute("tests"), Some("4"));
        for case in &cases {
            let host = case.attribute("name").unwrap();
            let region = suite.attribute("name").unwrap();
            assert!(host.starts_with(region), "{host} in suite {region}");
            assert!(case
                .attribute("classname")
                .unwrap()
                .starts_with(&format!("{region}.")));
            // A case's time (its first task's start to its host's last outcome) lies
            // within its suite's (the region's first task start to its last outcome).
            let time = seconds(case.attribute("time").unwrap());
            let suite_time = seconds(suite.attribute("time").unwrap());
            assert!(
                time <= suite_time,
                "{host}: {time}s is longer than its region's {suite_time}s"
            );
            let failure = case.children().find(|n| n.has_tag_name("failure"));
            if host == "r2-c1-01" {
                let failure = failure.unwrap_or_else(|| panic!("no failure for {host}: {xml}"));
                let message = failure.attribute("message").unwrap();
                assert!(message.contains("step switch"), "{message}");
                assert!(message.contains("exit 7"), "{message}");
                let body = failure.text().unwrap_or_default();
                assert!(body.contains("missing '=' after attribute name"), "{body}");
                assert!(body.contains("host outcome: rolled back"), "{body}");
            } else {
                assert!(failure.is_none(), "{host} did not fail: {xml}");
            }
            let skipped = case.children().any(|n| n.has_tag_name("skipped"));
            assert_eq!(
                skipped,
                region == "r2" && host != "r2-c1-01",
                "{host}: the rest of r2 was rolled back, not deployed"
            );
            let log = case
                .children()
                .find(|n| n.has_tag_name("system-out"))
                .and_then(|n| n.text())
                .unwrap_or_default();
            assert!(log.contains(&format!("logs/{host}.log")), "{log}");
        }
    }
    let r2 = suites[1];
    assert_eq!(r2.attribute("failures"), Some("1"));
    assert_eq!(r2.attribute("skipped"), Some("3"));
    // A human reporter ran at the same time on stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED r2-c1-01"), "{stdout}");
}

#[test]
fn colour_follows_the_color_option_and_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    let playbook = dir.path().join("playbook.yaml");
    std::fs::write(
        &inventory,
        "name: tiny\ndefaults: { connection: local }\nregions:\n  r1:\n    clusters:\n      c1: { hosts: { \"h[1:3]\": } }\n",
    )
    .unwrap();
    std::fs::write(
        &playbook,
        "name: tiny\nsteps:\n  - name: s\n    run: \"true\"\n",
    )
    .unwrap();
    let pony = |state: &str, extra: &[&str]| {
        let mut args = vec![
            "--state-dir".to_string(),
            dir.path().join(state).display().to_string(),
            "deploy".into(),
            "-i".into(),
            inventory.display().to_string(),
            playbook.display().to_string(),
            "--yes".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| {
        support::pony_bare()
            .args(args)
            .env_remove("NO_COLOR")
            .output()
            .unwrap()
    };
    // Not a terminal: no colour unless asked.
    let plain = run(pony("s1", &[]));
    assert_eq!(code(&plain), 0, "{}", text(&plain));
    assert!(!plain.stdout.contains(&0x1b), "{}", text(&plain));
    let forced = run(pony("s2", &["--color", "always"]));
    assert_eq!(code(&forced), 0, "{}", text(&forced));
    assert!(
        String::from_utf8_lossy(&forced.stdout).contains("\u{1b}["),
        "{}",
        text(&forced)
    );
    // A terminal: colour by default, none with NO_COLOR or --color never.
    for (state, env, extra, coloured) in [
        ("t1", "", &[][..], true),
        ("t2", "NO_COLOR=1 ", &[][..], false),
        ("t3", "", &["--color", "never"][..], false),
    ] {
        let tmux = Tmux::new(&dir.path().join(state));
        std::fs::create_dir_all(dir.path().join(state)).unwrap();
        let command = std::iter::once(env!("CARGO_BIN_EXE_pony").to_string())
            .chain(pony(state, extra))
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        tmux.start(&format!("env -u NO_COLOR {env}{command}"));
        let (_, exit) = tmux.wait_for_exit(Duration::from_secs(60));
        assert_eq!(exit, 0);
        let out = tmux
            .command()
            .args(["capture-pane", "-p", "-e", "-S", "-"])
            .output()
            .unwrap();
        let screen = String::from_utf8_lossy(&out.stdout);
        assert!(screen.contains("overall"), "{screen}");
        // SGR colour codes: 31-37 (foreground).
        let has_colour = (31..=37).any(|c| screen.contains(&format!("\u{1b}[{c}m")));
        assert_eq!(has_colour, coloured, "{env}{extra:?}: {screen:?}");
    }
}
