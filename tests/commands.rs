//! The read-only commands on the shipped inventories and playbook: `check`, `plan`,
//! `graph` (dot, mermaid, json) and `inventory`, and usage errors.
//! `dot` output is fed to Graphviz; a missing `dot` fails the test (never skips).

mod support;

use assert_cmd::Command;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const LOCAL: &str = "inventories/local.yaml";
const GLOBAL: &str = "inventories/global.yaml";
const PLAYBOOK: &str = "playbooks/mail-rollout.yaml";

use support::crate_root as root;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn pony(args: &[&str]) -> Outcome {
    let state = tempfile::tempdir().expect("temp dir");
    pony_in(state.path(), args)
}

/// Runs pony from the crate root with `state` as its state directory (where the local
/// inventory's hosts have their directories).
fn pony_in(state: &Path, args: &[&str]) -> Outcome {
    let output = Command::from_std(support::pony(state, args))
        .timeout(Duration::from_secs(60))
        .output()
        .expect("pony runs");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs pony and insists on exit 0; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = pony(args);
    assert_eq!(
        out.code,
        Some(0),
        "pony {} failed:\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// The number written just before `word` in `line`: `6,543 hosts` → 6543.
fn count_before(line: &str, word: &str) -> usize {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches([',', ';']) == word)
        .unwrap_or_else(|| panic!("no `{word}` in {line:?}"));
    assert!(at > 0, "nothing before `{word}` in {line:?}");
    words[at - 1]
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no number before `{word}` in {line:?}"))
}

fn check_summary(inventory: &str, extra: &[&str]) -> (usize, usize, usize, usize) {
    let mut args = vec!["check", "-i", inventory, PLAYBOOK];
    args.extend_from_slice(extra);
    let out = pony(&args);
    assert_eq!(out.code, Some(0), "pony check failed:\n{}", out.stderr);
    assert!(
        out.stderr.is_empty(),
        "check prints nothing but its summary; stderr:\n{}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "check prints exactly one line:\n{}",
        out.stdout
    );
    let line = lines[0];
    assert!(line.starts_with("ok:"), "{line:?}");
    (
        count_before(line, "hosts"),
        count_before(line, "regions"),
        count_before(line, "clusters"),
        count_before(line, "tasks"),
    )
}

#[test]
fn check_local_prints_one_ok_line_with_counts() {
    let (hosts, regions, clusters, tasks) = check_summary(LOCAL, &[]);
    assert_eq!((hosts, regions, clusters), (12, 3, 6));
    assert!(tasks >= hosts, "{tasks} tasks for {hosts} hosts");
}

#[test]
fn check_global_prints_one_ok_line_with_counts() {
    let (hosts, regions, clusters, tasks) = check_summary(GLOBAL, &[]);
    assert_eq!((hosts, regions, clusters), (6543, 7, 14));
    assert!(tasks >= hosts, "{tasks} tasks for {hosts} hosts");
}

#[test]
fn check_with_limit_counts_only_the_selected_hosts() {
    let (all_hosts, _, _, all_tasks) = check_summary(GLOBAL, &[]);
    let (hosts, regions, clusters, tasks) = check_summary(GLOBAL, &["--limit", "mta:&cn-*"]);
    assert!(hosts > 0 && hosts < all_hosts, "{hosts} of {all_hosts}");
    assert!(tasks < all_tasks, "{tasks} of {all_tasks}");
    // cn-south, cn-north, cn-east: one MTA cluster each.
    assert_eq!((regions, clusters), (3, 3));
}

#[test]
fn plan_lists_the_waves_in_order_and_the_critical_path() {
    for inventory in [LOCAL, GLOBAL] {
        let out = ok(&["plan", "-i", inventory, PLAYBOOK]);
        let mut last = 0;
        for wave in ["canary", "china", "world"] {
            let line = out
                .lines()
                .position(|l| l.starts_with("wave ") && l.contains(&format!(" {wave}:")))
                .unwrap_or_else(|| panic!("no wave `{wave}` in the plan of {inventory}:\n{out}"));
            assert!(line >= last, "wave `{wave}` out of order:\n{out}");
            last = line;
        }
        for region in ["cn-south", "eu-west", "us-east"] {
            assert!(out.contains(region), "no region `{region}`:\n{out}");
        }
        assert!(out.contains("critical path"), "{out}");
        assert!(
            !out.contains("estimate:"),
            "no estimate without --estimate:\n{out}"
        );
    }
}

#[test]
fn plan_estimate_prints_an_estimate() {
    let out = ok(&["plan", "-i", LOCAL, PLAYBOOK, "--estimate"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("estimate:"))
        .unwrap_or_else(|| panic!("no `estimate:` line:\n{out}"));
    assert!(
        line.chars().any(|c| c.is_ascii_digit()) && (line.contains('s') || line.contains('m')),
        "the estimate has no duration: {line:?}"
    );
}

/// Feeds `dot` text to Graphviz and returns the SVG.
fn graphviz(dot: &str) -> String {
    let child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            panic!("Graphviz `dot` cannot be run ({e}); install it: apt-get install -y graphviz")
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dot.as_bytes())
        .expect("writing to dot");
    let output = child.wait_with_output().expect("dot runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dot refused the graph: {stderr}\n{dot}"
    );
    assert!(
        !stderr.contains("syntax error") && !stderr.contains("Error"),
        "dot complained: {stderr}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn graph_dot_steps_is_valid_graphviz() {
    let dot = ok(&["graph", "-i", LOCAL, PLAYBOOK, "--format", "dot"]);
    assert!(dot.trim_start().starts_with("digraph"), "{dot}");
    let svg = graphviz(&dot);
    assert!(svg.contains("<svg"), "{svg}");
    for step in ["stage", "switch", "migrate-schema"] {
        assert!(dot.contains(step), "step `{step}` is not drawn:\n{dot}");
    }
    // Graphviz escapes `-` in SVG text: count the drawn nodes instead.
    assert!(svg.matches("class=\"node\"").count() >= 8, "{svg}");
}

#[test]
fn graph_dot_tasks_is_valid_graphviz() {
    let dot = ok(&["graph", "-i", LOCAL, PLAYBOOK, "--format", "dot", "--tasks"]);
    assert!(dot.trim_start().starts_with("digraph"), "{dot}");
    let svg = graphviz(&dot);
    assert!(svg.contains("<svg"), "{svg}");
    assert!(
        dot.contains("stage@mx-gz-01"),
        "the canary host's tasks are drawn:\n{dot}"
    );
    let (_, _, _, tasks) = check_summary(LOCAL, &[]);
    let drawn = svg.matches("class=\"node\"").count();
    assert!(drawn >= tasks, "{drawn} nodes drawn for {tasks} tasks");
}

#[test]
fn graph_mermaid_starts_with_flowchart() {
    for tasks in [false, true] {
        let mut args = vec!["graph", "-i", LOCAL, PLAYBOOK, "--format", "mermaid"];
        if tasks {
            args.push("--tasks");
        }
        let out = ok(&args);
        assert!(
            out.starts_with("flowchart"),
            "mermaid (tasks: {tasks}) starts with {:?}",
            out.lines().next()
        );
    }
}

#[test]
fn graph_json_has_steps_and_nodes() {
    let steps: Value =
        serde_json::from_str(&ok(&["graph", "-i", LOCAL, PLAYBOOK, "--format", "json"]))
            .expect("step graph is JSON");
    let list = steps["steps"].as_array().expect("`steps` is a list");
    let names: Vec<&str> = list.iter().filter_map(|s| s["name"].as_str()).collect();
    for step in ["stage", "previous", "switch", "health", "migrate-schema"] {
        assert!(names.contains(&step), "no step `{step}` in {names:?}");
    }

    let tasks: Value = serde_json::from_str(&ok(&[
        "graph", "-i", LOCAL, PLAYBOOK, "--format", "json", "--tasks",
    ]))
    .expect("task graph is JSON");
    let nodes = tasks["nodes"].as_array().expect("`nodes` is a list");
    let (_, _, _, task_count) = check_summary(LOCAL, &[]);
    let task_nodes = nodes.iter().filter(|n| n["kind"] == "task").count();
    assert_eq!(
        task_nodes, task_count,
        "task nodes in the JSON vs tasks in `check`"
    );
    assert!(
        nodes.iter().any(|n| n["kind"] == "gate"),
        "wave gates are nodes"
    );
    assert!(
        tasks["edges"].as_array().is_some_and(|e| !e.is_empty()),
        "the task graph has edges"
    );
}

fn inventory_json(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["inventory", "-i", GLOBAL, "--format", "json"];
    args.extend_from_slice(extra);
    let out: Value = serde_json::from_str(&ok(&args)).expect("inventory is JSON");
    out["hosts"].as_array().expect("`hosts` is a list").clone()
}

#[test]
fn inventory_json_lists_every_global_host() {
    let hosts = inventory_json(&[]);
    assert!(hosts.len() >= 6000, "{} hosts", hosts.len());
    let names: BTreeSet<&str> = hosts.iter().filter_map(|h| h["name"].as_str()).collect();
    assert_eq!(names.len(), hosts.len(), "host names are unique");
    for host in &hosts {
        for field in ["name", "address", "region", "cluster", "roles"] {
            assert!(!host[field].is_null(), "host without `{field}`: {host}");
        }
    }
}

#[test]
fn inventory_limit_narrows() {
    let all = inventory_json(&[]);
    let hosts = inventory_json(&["--limit", "mta:&cn-*"]);
    assert!(
        !hosts.is_empty() && hosts.len() < all.len(),
        "{} of {}",
        hosts.len(),
        all.len()
    );
    for host in &hosts {
        let region = host["region"].as_str().unwrap_or_default();
        let roles = host["roles"].as_array().expect("roles");
        assert!(region.starts_with("cn-"), "{host}");
        assert!(roles.iter().any(|r| r == "mta"), "{host}");
    }
    let expected = all
        .iter()
        .filter(|h| {
            h["region"].as_str().unwrap_or_default().starts_with("cn-")
                && h["roles"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r == "mta"))
        })
        .count();
    assert_eq!(hosts.len(), expected);
}

#[test]
fn inventory_table_has_a_header_and_a_summary() {
    let out = ok(&["inventory", "-i", LOCAL]);
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    for column in ["HOST", "REGION", "CLUSTER", "ROLES"] {
        assert!(header.contains(&column), "header {:?}", lines[0]);
    }
    assert_eq!(lines.len(), 1 + 12 + 1, "header, 12 hosts, summary:\n{out}");
    assert!(lines.iter().any(|l| l.starts_with("mx-gz-01 ")), "{out}");
    assert!(
        lines.last().is_some_and(|l| l.starts_with("12 hosts")),
        "{out}"
    );

    let narrowed = ok(&["inventory", "-i", GLOBAL, "--limit", "mta:&cn-*"]);
    assert!(narrowed
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("HOST")));
    let rows = narrowed.lines().count() - 2;
    assert_eq!(rows, inventory_json(&["--limit", "mta:&cn-*"]).len());
}

/// The summary line under a `--limit` counts the selected hosts' regions and clusters.
#[test]
fn inventory_table_summary_counts_the_selection() {
    let hosts = inventory_json(&["--limit", "mta:&cn-*"]);
    let regions: BTreeSet<&str> = hosts.iter().filter_map(|h| h["region"].as_str()).collect();
    let clusters: BTreeSet<&str> = hosts.iter().filter_map(|h| h["cluster"].as_str()).collect();
    let out = ok(&["inventory", "-i", GLOBAL, "--limit", "mta:&cn-*"]);
    let summary = out.lines().last().expect("a summary line");
    assert_eq!(count_before(summary, "regions"), regions.len(), "{summary}");
    assert_eq!(
        count_before(summary, "clusters"),
        clusters.len(),
        "{summary}"
    );
}

#[test]
fn usage_errors_exit_2_with_nothing_on_stdout() {
    for args in [
        &["check", "-i", LOCAL, PLAYBOOK, "--no-such-flag"][..],
        &["no-such-command"][..],
        &["graph", "-i", LOCAL, PLAYBOOK, "--format", "png"][..],
        &["check", "-i", LOCAL, PLAYBOOK, "--var", "novalue"][..],
        &["plan", "-i", LOCAL][..],
        &["check", "-i", LOCAL, PLAYBOOK, "-e", "@vars.yml"][..],
        &[
            "check",
            "-i",
            LOCAL,
            PLAYBOOK,
            "--extra-vars",
            r#"{"version": "2"}"#,
        ][..],
    ] {
        let out = pony(args);
        assert_eq!(out.code, Some(2), "pony {}: {}", args.join(" "), out.stderr);
        assert!(
            out.stdout.is_empty(),
            "pony {}: stdout {:?}",
            args.join(" "),
            out.stdout
        );
        assert!(
            out.stderr.contains("error") || out.stderr.contains("Usage"),
            "pony {}: {}",
            args.join(" "),
            out.stderr
        );
    }
}

#[test]
fn help_and_version_exit_0() {
    let help = ok(&["--help"]);
    for command in ["check", "plan", "graph", "inventory"] {
        assert!(help.contains(command), "{help}");
    }
    assert!(ok(&["--version"]).starts_with("pony "));
}

// ------------------------------------------------------------------ vars and templates

/// Writes `yaml` as a playbook in a fresh directory.
fn playbook_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("playbook.yaml");
    std::fs::write(&path, yaml).expect("write playbook");
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// The hosts of the local inventory, as `pony inventory` lists them.
fn local_hosts() -> Vec<String> {
    ok(&["inventory", "-i", LOCAL])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.contains('-'))
        .map(str::to_string)
        .collect()
}

/// A value behind `default`, behind `is defined`, in a branch never taken, or captured by
/// an earlier step is not "not defined": check accepts the playbook silently, and deploy
/// renders what the templates say on every host.
const OPTIONAL_VARS: &str = r#"
name: optional-vars
vars: { layout: split }
steps:
  - name: previous
    run: echo old-release
    capture: previous
  - name: write
    needs: [previous]
    run: >-
      printf '%s|%s|%s|%s\n'
      {{ owner | default("mail") | quote }}
      {% if relay is defined %}{{ relay | quote }}{% else %}direct{% endif %}
      {% if layout == "legacy" %}{{ legacy_dir | quote }}{% else %}split{% endif %}
      {{ previous | quote }} > rendered.txt
"#;

#[test]
fn default_is_defined_and_untaken_branches_pass_check_and_render_on_deploy() {
    let (_dir, playbook) = playbook_file(OPTIONAL_VARS);
    let out = pony(&["check", "-i", LOCAL, &playbook]);
    assert_eq!(out.code, Some(0), "check refused:\n{}", out.stderr);
    assert!(
        out.stdout.starts_with("ok: optional-vars on local"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.is_empty(), "check warned:\n{}", out.stderr);

    let hosts = local_hosts();
    assert_eq!(hosts.len(), 12, "{hosts:?}");
    for (extra, expected) in [
        (&[][..], "mail|direct|split|old-release\n"),
        (
            &["-e", "owner=postfix", "--var", "relay=mx.example.test"][..],
            "postfix|mx.example.test|split|old-release\n",
        ),
    ] {
        let state = tempfile::tempdir().expect("temp dir");
        let mut args = vec!["deploy", "--yes", "-i", LOCAL, &playbook];
        args.extend_from_slice(extra);
        let out = pony_in(state.path(), &args);
        assert_eq!(
            out.code,
            Some(0),
            "deploy failed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        for host in &hosts {
            let file = state.path().join("hosts").join(host).join("rendered.txt");
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(text, expected, "{host} with {extra:?}");
        }
    }
}

/// A `--var` no template uses (a typo) and an empty one are accepted with a warning that
/// names them; `-e` and `--extra-vars` are `--var`.
#[test]
fn unused_and_empty_vars_warn_and_name_the_var() {
    let out = pony(&["check", "-i", LOCAL, PLAYBOOK, "--var", "verison=2.0"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("ok: mail-rollout"), "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "warning: --var: `verison` is not used by any template of playbooks/mail-rollout.yaml"
        ) && out.stderr.contains("did you mean `version`?"),
        "{}",
        out.stderr
    );
    for flag in ["-e", "--extra-vars", "--var"] {
        let out = pony(&["check", "-i", LOCAL, PLAYBOOK, flag, "version="]);
        assert_eq!(out.code, Some(0), "{flag}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("warning: --var: `version` is set to an empty value"),
            "{flag}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("is not used"),
            "{flag}: {}",
            out.stderr
        );
    }
    // A var the playbook uses, with a plain value: not a word.
    let out = pony(&["check", "-i", LOCAL, PLAYBOOK, "-e", "version=2.5.0"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

/// `-e` reaches the templates exactly like `--var`.
#[test]
fn extra_vars_alias_sets_the_value() {
    for flag in ["-e", "--extra-vars", "--var"] {
        let out = ok(&[
            "deploy",
            "--dry-run",
            "-i",
            LOCAL,
            PLAYBOOK,
            flag,
            "version=9.8.7",
        ]);
        assert!(out.contains("v=9.8.7"), "{flag}:\n{out}");
        assert!(!out.contains("v=2.4.1"), "{flag}:\n{out}");
    }
}

/// With --strict-vars the typo of the issue is refused before anything runs: no run
/// folder, no host directory.
#[test]
fn strict_vars_refuses_an_unused_var_and_nothing_runs() {
    let state = tempfile::tempdir().expect("temp dir");
    let out = pony_in(
        state.path(),
        &[
            "deploy",
            "--yes",
            "--strict-vars",
            "-i",
            LOCAL,
            PLAYBOOK,
            "-e",
            "verison=2.0",
        ],
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("error: --var: `verison` is not used by any template")
            && out.stderr.contains("did you mean `version`?")
            && out.stderr.ends_with("1 error found; nothing ran\n"),
        "{}",
        out.stderr
    );
    let left: Vec<_> = std::fs::read_dir(state.path())
        .expect("state dir")
        .collect();
    assert!(left.is_empty(), "deploy left {left:?}");
}

/// A value with shell metacharacters rendered unquoted into a command is named with its
/// step and var; `| quote` and a quoted shell word that the value cannot leave are fine.
#[test]
fn unquoted_shell_metacharacters_warn_naming_step_and_var() {
    let (_dir, playbook) = playbook_file(
        r#"
name: quoting
vars: { version: "1.0", note: "two words" }
steps:
  - name: stage
    run: mkdir -p {{ mail_root | quote }}/releases/{{ version }}
  - name: note
    run: echo {{ note | quote }} '{{ note }}' "{{ note }}" > note.txt
  - name: motd
    run: echo {{ note }} > motd.txt
"#,
    );
    let out = pony(&[
        "check",
        "-i",
        LOCAL,
        &playbook,
        "--var",
        "version=2.0; touch pwned",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "step `stage`: `run` puts `version` into the command unquoted, and its value from --var holds shell metacharacters: space, `;`"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "step `motd`: `run` puts `note` into the command unquoted, and its value from the playbook's vars holds shell metacharacters: space"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("write `{{ version | quote }}`"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("step `note`"), "{}", out.stderr);

    // Quoted, the same value is not a word; nor is a value without metacharacters.
    let out = pony(&["check", "-i", LOCAL, &playbook, "--var", "version=2.0"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("`version`"), "{}", out.stderr);
    // --strict-vars refuses on the --var, not on the playbook's own value.
    let out = pony(&[
        "check",
        "--strict-vars",
        "-i",
        LOCAL,
        &playbook,
        "--var",
        "version=2.0",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: ") && out.stderr.contains("`note`"),
        "{}",
        out.stderr
    );
}

// ------------------------------------------------------------------ docs

const FROM_ANSIBLE: &str = "playbooks/examples/from-ansible.yaml";

/// The pony playbook of docs/from-ansible.md is the file in playbooks/examples, word for
/// word, and it passes `pony check` on the local inventory without a warning.
#[test]
fn from_ansible_example_is_the_file_and_passes_check() {
    let doc = std::fs::read_to_string(root().join("docs/from-ansible.md")).expect("the doc");
    let file = std::fs::read_to_string(root().join(FROM_ANSIBLE)).expect("the example");
    let block = doc
        .split_once("<!-- from-ansible.yaml -->\n```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(block, _)| block)
        .expect("docs/from-ansible.md has the marked ```yaml block");
    assert_eq!(
        block, file,
        "the doc's pony playbook differs from {FROM_ANSIBLE}"
    );

    let out = pony(&["check", "-i", LOCAL, FROM_ANSIBLE]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.starts_with("ok: from-ansible on local:"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

/// What the doc says the example does, it does: with `-e version=…` every MTA ends on the
/// new release, the "handler" marks it running, and the announcement runs once.
#[test]
fn from_ansible_example_deploys_on_the_local_inventory() {
    let state = tempfile::tempdir().expect("temp dir");
    let out = pony_in(
        state.path(),
        &[
            "deploy",
            "--yes",
            "-i",
            LOCAL,
            FROM_ANSIBLE,
            "-e",
            "version=2.4.2",
        ],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let mtas: Vec<String> = ok(&["inventory", "-i", LOCAL, "--limit", "mta"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.contains('-'))
        .map(str::to_string)
        .collect();
    assert!(mtas.len() >= 2, "{mtas:?}");
    for host in &mtas {
        let mail = state.path().join("hosts").join(host).join("srv/mail");
        let current =
            std::fs::read_link(mail.join("current")).unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(current, Path::new("releases/2.4.2"), "{host}");
        assert!(mail.join("releases/2.4.2").is_dir(), "{host}");
        let running = std::fs::read_to_string(mail.join("running")).expect("running");
        assert_eq!(running, "2.4.2\n", "{host}");
    }
    for host in local_hosts().iter().filter(|h| !mtas.contains(h)) {
        assert!(
            !state.path().join("hosts").join(host).join("srv").exists(),
            "{host} is no MTA and was touched"
        );
    }
    // The journal: one announcement for the whole run, with the rendered text.
    let runs: Vec<PathBuf> = std::fs::read_dir(state.path().join("runs"))
        .expect("runs")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let journal = std::fs::read_to_string(runs[0].join("journal.jsonl")).expect("journal");
    let announced: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|e| e["type"] == "task_finished" && e["label"] == "announce@run")
        .collect();
    assert_eq!(announced.len(), 1, "{journal}");
    assert_eq!(announced[0]["state"], "succeeded", "{journal}");
    assert_eq!(
        announced[0]["output_tail"], "release 2.4.2 is live on from-ansible",
        "{journal}"
    );
}

/// Every `--limit '…'` pattern the README shows selects hosts of inventories/global.yaml.
#[test]
fn readme_limit_examples_work_on_the_global_inventory() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let patterns: BTreeSet<&str> = readme
        .split("--limit '")
        .skip(1)
        .filter_map(|rest| rest.split_once('\'').map(|(p, _)| p))
        .collect();
    assert!(!patterns.is_empty(), "the README shows no --limit example");
    for pattern in patterns {
        let out = pony(&["inventory", "-i", GLOBAL, "--limit", pattern]);
        assert_eq!(out.code, Some(0), "--limit '{pattern}': {}", out.stderr);
        assert!(
            out.stdout.lines().count() > 2,
            "--limit '{pattern}': {}",
            out.stdout
        );
    }
}

#[test]
fn plan_shows_what_each_gate_checks() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("verify.yaml");
    std::fs::write(
        &playbook,
        r#"name: verified
strategy:
  waves:
    - name: canary
      regions: ["*"]
      hosts: mx-dub-01
      pause: 10m
      max_failures: 1
      verify:
        - { name: queue, run: "postqueue -j | wc -l", every: 30s, compare: median, baseline: "mx-dub-02", tolerance: "50%" }
        - { name: smtp, probe: { smtp: { port: 25 } }, every: 1m }
    - { name: rest, regions: ["*"] }
steps:
  - { name: stage, run: "true" }
"#,
    )
    .unwrap();
    let out = ok(&["plan", "-i", LOCAL, playbook.to_str().unwrap()]);
    assert!(
        out.contains("verify queue: run `postqueue -j | wc -l` on the wave's hosts every 30s; fails when the median exceeds the median on mx-dub-02 by more than 50%"),
        "{out}"
    );
    assert!(
        out.contains("verify smtp: probe {\"smtp\":{\"port\":25,\"starttls\":false}} on the wave's hosts every 1m"),
        "{out}"
    );
    assert!(
        out.contains(
            "  max_failures 1 of the wave (1 of 1 hosts), then on_failure for the whole run"
        ),
        "{out}"
    );
}
