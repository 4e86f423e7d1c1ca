//! The CI examples (`examples/ci/`, docs/ci.md) run as their CI runs them: each pipeline's
//! YAML is parsed and its jobs' shell lines run in order with the real pony binary on
//! PATH, each job in a fresh checkout (the files the pipelines use, as a runner's clone
//! has them), artifacts and job outputs carried from job to job as the CI carries them,
//! over the default local inventory. A merge request runs check and plan only; the
//! default branch deploys the canary, which stops at its approval gate (exit 10: the job
//! passes), then the approval job resumes the run and the rest of the fleet follows.
//! Checked: each job's result against pony's exit code, the artifacts (the JUnit parses,
//! every JSON line parses), the hosts' files and the journal.
//!
//! Only what the examples use is emulated (`ci_examples/runner.rs`; a construct they don't
//! use panics, never passes unseen): GitHub's `needs`, `if` (`==`, `!=`, `always()`),
//! `run`, `id`, step outputs, job outputs, checkout, upload/download-artifact; GitLab's
//! stages, `rules` (`if` with `==`, `when: manual`: the test starts it, as the person who
//! approves), `needs`, `before_script`, `script`, artifacts and dotenv reports.

#[path = "ci_examples/runner.rs"]
mod runner;
mod support;

use runner::{github, gitlab, key_values, Job, Pipeline};
use std::path::Path;
use support::json_lines;

/// The JUnit report parses; each `<testcase>`'s name and verdict (`ok`, `failure`,
/// `error`, `skipped`).
fn junit(path: &Path) -> Vec<(String, &'static str)> {
    let xml = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    doc.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|n| {
            let verdict = ["failure", "error", "skipped"]
                .into_iter()
                .find(|v| n.children().any(|c| c.has_tag_name(*v)))
                .unwrap_or("ok");
            (n.attribute("name").unwrap().to_string(), verdict)
        })
        .collect()
}

/// The hosts of a JUnit report with the verdict `verdict`.
fn with_verdict(cases: &[(String, &str)], verdict: &str) -> Vec<String> {
    cases
        .iter()
        .filter(|(_, v)| *v == verdict)
        .map(|(h, _)| h.clone())
        .collect()
}

/// The JSON events file: every line parses; its `summary` event.
fn summary(path: &Path) -> serde_json::Value {
    let events = json_lines(&std::fs::read_to_string(path).unwrap());
    events
        .into_iter()
        .rfind(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("{}: no summary event", path.display()))
}

/// The 12 hosts of inventories/local.yaml; the canary is mx-gz-01.
const HOSTS: [&str; 12] = [
    "mx-gz-01",
    "web-gz-01",
    "imap-gz-01",
    "store-gz-01",
    "mx-dub-01",
    "mx-dub-02",
    "imap-dub-01",
    "store-dub-01",
    "mx-iad-01",
    "web-iad-01",
    "imap-iad-01",
    "store-iad-01",
];

/// The release a local host's `current` points to, if any.
fn live(job: &Job, host: &str) -> Option<String> {
    let link = job
        .dir()
        .join(".pony/hosts")
        .join(host)
        .join("srv/mail/current");
    std::fs::read_link(link)
        .ok()
        .map(|l| l.display().to_string())
}

/// A merge request: check and plan run and pass, and nothing else.
fn assert_merge_request(pipeline: &Pipeline) {
    let ran: Vec<&str> = pipeline
        .jobs
        .iter()
        .filter(|j| j.ran)
        .map(|j| j.name.as_str())
        .collect();
    assert_eq!(ran, ["check"], "a merge request only checks and plans");
    let check = pipeline.job("check");
    assert!(check.passed && check.stage_code() == 0, "{}", check.said());
    let plan = std::fs::read_to_string(check.report("plan.txt")).unwrap();
    assert!(plan.contains("canary") && plan.contains("world"), "{plan}");
    assert!(
        !check.dir().join(".pony/hosts").exists(),
        "check contacted hosts"
    );
}

/// The default branch: check; the canary stops at its gate (exit 10, the job passes);
/// the approval job resumes the run (exit 0); the artifacts, hosts and journal say so.
fn assert_rollout(pipeline: &Pipeline, approval: &str) {
    for job in ["check", "canary", approval] {
        let job = pipeline.job(job);
        assert!(job.ran && job.passed, "{}: {}", job.name, job.said());
    }
    let canary = pipeline.job("canary");
    assert_eq!(
        canary.stage_code(),
        0,
        "exit 10 is a passed job: {}",
        canary.said()
    );
    let stopped = summary(&canary.report("canary.jsonl"));
    assert_eq!(stopped["exit_code"], 10, "{stopped}");
    assert_eq!(stopped["outcome"], "awaiting_approval", "{stopped}");
    // The canary passed; the other hosts did not run yet.
    let cases = junit(&canary.report("canary.xml"));
    assert_eq!(cases.len(), 12, "{cases:?}");
    assert_eq!(with_verdict(&cases, "ok"), ["mx-gz-01"], "{cases:?}");
    assert_eq!(with_verdict(&cases, "skipped").len(), 11, "{cases:?}");
    // Nothing ran on them: their tasks never run are not counted as done.
    let xml = std::fs::read_to_string(canary.report("canary.xml")).unwrap();
    assert_eq!(
        xml.matches("finished (0 task(s) done)").count(),
        11,
        "{xml}"
    );
    let handed = key_values(&std::fs::read_to_string(canary.report("pony.env")).unwrap());
    let run = handed["PONY_RUN"].clone();
    assert_eq!(stopped["run_id"], run.as_str());
    assert_eq!(handed["PONY_AWAITING"], "canary");
    // After the canary job: the canary alone is on the release.
    for host in HOSTS {
        let expected = (host == "mx-gz-01").then(|| "releases/2.4.1".to_string());
        assert_eq!(live(canary, host), expected, "{host} after the canary");
    }

    let rest = pipeline.job(approval);
    assert_eq!(rest.stage_code(), 0, "{}", rest.said());
    let finished = summary(&rest.report("rest.jsonl"));
    assert_eq!(finished["exit_code"], 0, "{finished}");
    assert_eq!(finished["outcome"], "succeeded", "{finished}");
    let cases = junit(&rest.report("rest.xml"));
    assert_eq!(with_verdict(&cases, "ok").len(), 12, "{cases:?}");
    for host in HOSTS {
        assert_eq!(
            live(rest, host).as_deref(),
            Some("releases/2.4.1"),
            "{host}"
        );
    }

    // The journal: the canary's tasks, its approval gate and the stop (exit 10), the
    // resume with the approval, the gate passed, then every other host's tasks.
    let journal = support::journal(&rest.dir().join(".pony/runs").join(&run));
    let at = |what: &dyn Fn(&serde_json::Value) -> bool| {
        journal
            .iter()
            .position(what)
            .unwrap_or_else(|| panic!("not in the journal: {journal:#?}"))
    };
    let gate =
        at(&|r| r["type"] == "gate_waiting" && r["wave"] == "canary" && r["reason"] == "approve");
    let stop = at(&|r| r["type"] == "run_finished" && r["exit_code"] == 10);
    let resumed = at(&|r| r["type"] == "run_resumed" && r["command"] == "resume");
    let passed = at(&|r| r["type"] == "gate_passed" && r["wave"] == "canary");
    let end = at(&|r| r["type"] == "run_finished" && r["exit_code"] == 0);
    assert!(
        gate < stop && stop < resumed && resumed < passed && passed < end,
        "{journal:#?}"
    );
    for (i, record) in journal.iter().enumerate() {
        if record["type"] != "task_finished" {
            continue;
        }
        let label = record["label"].as_str().unwrap();
        if label.ends_with("@mx-gz-01") {
            assert!(i < gate, "the canary's {label} ran before its gate");
        } else {
            assert!(i > passed, "{label} ran before the canary was approved");
        }
    }
}

#[test]
fn the_github_workflow_checks_a_pull_request_and_rolls_out_main_with_an_approval() {
    let pr = github("pull_request", Pipeline::default());
    assert_merge_request(&pr);
    let push = github("push", Pipeline::default());
    assert_rollout(&push, "rest");
    // The job outputs that gate the approval job are those pony.env holds.
    let canary = push.job("canary");
    assert_eq!(canary.outputs["awaiting"], "canary");
    assert!(!canary.outputs["run"].is_empty());
}

#[test]
fn the_gitlab_pipeline_checks_a_merge_request_and_rolls_out_main_with_an_approval() {
    let mr = gitlab("merge_request_event", "feature", Pipeline::default());
    assert_merge_request(&mr);
    // A push to another branch runs nothing.
    let other = gitlab("push", "feature", Pipeline::default());
    assert!(other.jobs.is_empty());
    let main = gitlab("push", "main", Pipeline::default());
    assert_rollout(&main, "rest");
}

/// Fails on the canary: exit 1 after its rollback.
const FAILING: &str = r#"
name: failing
strategy:
  waves:
    - { name: canary, regions: [cn-south], hosts: canary, approve: true }
    - { name: world, regions: ["*"] }
  max_failures: 0
steps:
  - name: switch
    run: "echo 'release 2.4.2 is broken' >&2; exit 7"
"#;

/// A failed canary (pony exit 1) fails its job: its JUnit and events are still kept, the
/// approval job never runs, no other host was touched.
#[test]
fn a_failed_canary_fails_its_job_keeps_its_reports_and_the_rest_never_runs() {
    let push = github(
        "push",
        Pipeline {
            extra_files: vec![("examples/ci/failing.yaml", FAILING)],
            variables: vec![("PONY_PLAYBOOK", "examples/ci/failing.yaml")],
            ..Pipeline::default()
        },
    );
    let canary = push.job("canary");
    assert!(canary.ran && !canary.passed, "{}", canary.said());
    assert_eq!(canary.stage_code(), 1, "{}", canary.said());
    assert!(
        canary.said().contains("FAILED, rolled back"),
        "{}",
        canary.said()
    );
    assert_eq!(summary(&canary.report("canary.jsonl"))["exit_code"], 1);
    let cases = junit(&canary.report("canary.xml"));
    assert_eq!(with_verdict(&cases, "failure"), ["mx-gz-01"], "{cases:?}");
    assert_eq!(
        with_verdict(&cases, "ok"),
        Vec::<String>::new(),
        "{cases:?}"
    );
    assert!(
        push.artifacts.contains_key("pony-canary"),
        "kept although the job failed"
    );
    assert!(!push.job("rest").ran, "no approval after a failed canary");
    let hosts = std::fs::read_dir(canary.dir().join(".pony/hosts")).unwrap();
    let touched: Vec<String> = hosts
        .map(|h| h.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(touched, ["mx-gz-01"]);
}

/// An invalid playbook on a merge request: `pony check` exits 2 and the check job fails
/// with it, naming the problem.
#[test]
fn an_invalid_playbook_fails_the_merge_requests_check_with_exit_2() {
    let mr = gitlab(
        "merge_request_event",
        "feature",
        Pipeline {
            extra_files: vec![(
                "examples/ci/broken.yaml",
                "name: broken\nsteps:\n  - { name: a, run: 'true', needs: [nowhere] }\n",
            )],
            variables: vec![("PONY_PLAYBOOK", "examples/ci/broken.yaml")],
            ..Pipeline::default()
        },
    );
    let check = mr.job("check");
    assert!(check.ran && !check.passed, "{}", check.said());
    assert_eq!(check.stage_code(), 2, "{}", check.said());
    let said = check.said();
    assert!(
        said.contains("nowhere") && said.contains("invalid input"),
        "{said}"
    );
}
