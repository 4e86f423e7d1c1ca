//! The corpus of bad inputs in `tests/bad/`: every case must be refused by `pony check`
//! with exit code 2, nothing on stdout, and a message on stderr that names the file (or the
//! command-line option) at fault and says what to change.
//!
//! A case is a folder `tests/bad/<case>/` with:
//! - `inventory.yaml` and `playbook.yaml`, checked with
//!   `pony check -i <case>/inventory.yaml <case>/playbook.yaml`;
//! - `args` (optional): the whole command line instead, one argument per line (for a missing
//!   file, `--limit` or `--secret-var`);
//! - `expect`: one substring per line that stderr must contain; a line starting with `!`
//!   is a substring stderr must NOT contain; `#` lines are comments. `{dir}` stands for the
//!   case's folder as passed on the command line (`tests/bad/<case>`);
//! - `ignore` (optional): a known problem in `src/` (the reason, one line). Such a case
//!   describes the message as it should be; it is left out of the corpus walk and run by
//!   its own `#[ignore]` test below. Fix src, delete the `ignore` file and the test's line.

mod support;

use assert_cmd::Command;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// At least this many active cases must be in the corpus.
const MINIMUM_CASES: usize = 24;

use support::crate_root as root;

#[derive(Debug)]
struct Case {
    name: String,
    /// `tests/bad/<name>`, relative to the crate root (the tests' working directory).
    dir: String,
    args: Vec<String>,
    must: Vec<String>,
    must_not: Vec<String>,
    ignore: Option<String>,
}

impl Case {
    fn load(name: &str) -> Result<Case, String> {
        let dir = format!("tests/bad/{name}");
        let path = root().join(&dir);
        let read = |file: &str| std::fs::read_to_string(path.join(file));
        let fill = |line: &str| line.replace("{dir}", &dir);
        let args = match read("args") {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(fill)
                .collect(),
            Err(_) => {
                for file in ["inventory.yaml", "playbook.yaml"] {
                    if !path.join(file).is_file() {
                        return Err(format!("{dir}: no `{file}` (and no `args` file)"));
                    }
                }
                vec![
                    "check".to_string(),
                    "-i".to_string(),
                    format!("{dir}/inventory.yaml"),
                    format!("{dir}/playbook.yaml"),
                ]
            }
        };
        let expect = read("expect").map_err(|e| format!("{dir}/expect: {e}"))?;
        let (mut must, mut must_not) = (Vec::new(), Vec::new());
        for line in expect.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.strip_prefix('!') {
                Some(absent) => must_not.push(fill(absent)),
                None => must.push(fill(line)),
            }
        }
        if must.len() < 2 {
            return Err(format!(
                "{dir}/expect: pin at least the file and one message substring"
            ));
        }
        let ignore = read("ignore").ok().map(|r| r.trim().to_string());
        Ok(Case {
            name: name.to_string(),
            dir,
            args,
            must,
            must_not,
            ignore,
        })
    }

    /// The command line with another subcommand than `check` (same inputs).
    fn args_for(&self, subcommand: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = subcommand.iter().map(|s| s.to_string()).collect();
        args.extend(self.args.iter().skip(1).cloned());
        args
    }

    /// Where the fault is: a file of the case, or `--limit` / `--secret-var` on the command line.
    fn names_the_culprit(&self, stderr: &str) -> bool {
        let names_option =
            |option: &str| self.args.iter().any(|a| a == option) && stderr.contains(option);
        stderr.contains(&format!("{}/", self.dir))
            || names_option("--limit")
            || names_option("--secret-var")
    }
}

/// Every case folder under `tests/bad/`, sorted by name.
fn corpus() -> Vec<Case> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("tests/bad"))
        .expect("tests/bad exists")
        .map(|e| e.expect("readable tests/bad entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let (cases, problems): (Vec<_>, Vec<_>) =
        names.iter().map(|n| Case::load(n)).partition(Result::is_ok);
    let problems: Vec<String> = problems.into_iter().map(|p| p.unwrap_err()).collect();
    assert!(
        problems.is_empty(),
        "malformed corpus cases:\n{}",
        problems.join("\n")
    );
    cases.into_iter().map(Result::unwrap).collect()
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn pony(args: &[String]) -> Outcome {
    let state = tempfile::tempdir().expect("temp dir");
    pony_in(state.path(), args)
}

/// Runs pony from the crate root with `state` as its state directory, no `PONY_*`
/// settings from the environment, and a time limit.
fn pony_in(state: &Path, args: &[String]) -> Outcome {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = Command::from_std(support::pony(state, &args))
        .timeout(Duration::from_secs(60))
        .output()
        .expect("pony runs");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a case with `pony check`; `Err` lists everything wrong with the outcome.
fn run_case(case: &Case) -> Result<Outcome, String> {
    let out = pony(&case.args);
    let mut wrong = Vec::new();
    if out.code != Some(2) {
        wrong.push(format!("exit code {:?}, expected 2", out.code));
    }
    if !out.stdout.is_empty() {
        wrong.push(format!("stdout is not empty:\n{}", out.stdout));
    }
    if !case.names_the_culprit(&out.stderr) {
        wrong.push(format!(
            "stderr names no file of `{}/` (nor `--limit` or `--secret-var`)",
            case.dir
        ));
    }
    if !out.stderr.contains("nothing ran") {
        wrong.push("stderr does not end with the `N errors found; nothing ran` summary".into());
    }
    for s in &case.must {
        if !out.stderr.contains(s.as_str()) {
            wrong.push(format!("missing   {s:?}"));
        }
    }
    for s in &case.must_not {
        if out.stderr.contains(s.as_str()) {
            wrong.push(format!("unwanted  {s:?}"));
        }
    }
    if wrong.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "── {} (pony {})\n  {}\n  stderr was:\n{}",
            case.name,
            case.args.join(" "),
            wrong.join("\n  "),
            indent(&out.stderr)
        ))
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn active(corpus: &[Case]) -> Vec<&Case> {
    corpus.iter().filter(|c| c.ignore.is_none()).collect()
}

#[test]
fn corpus_is_large_enough() {
    let corpus = corpus();
    let active = active(&corpus);
    assert!(
        active.len() >= MINIMUM_CASES,
        "only {} active cases in tests/bad (at least {MINIMUM_CASES} wanted)",
        active.len()
    );
}

#[test]
fn every_bad_input_is_refused_with_a_useful_message() {
    let corpus = corpus();
    let active = active(&corpus);
    let failures: Vec<String> = active
        .iter()
        .filter_map(|case| run_case(case).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} bad-input cases failed:\n\n{}",
        failures.len(),
        active.len(),
        failures.join("\n\n")
    );
}

/// `plan`, `graph` and `deploy` validate exactly like `check`: same exit code, same
/// report, nothing on stdout; `deploy` leaves its state directory untouched.
#[test]
fn plan_graph_and_deploy_refuse_every_bad_input_like_check() {
    let corpus = corpus();
    let mut failures = Vec::new();
    for case in active(&corpus) {
        let check = pony(&case.args);
        for sub in [
            &["plan", "--estimate"][..],
            &["graph", "--format", "json", "--tasks"][..],
            &["deploy", "--yes"][..],
            &["deploy", "--yes", "--dry-run"][..],
        ] {
            let args = case.args_for(sub);
            let state = tempfile::tempdir().expect("temp dir");
            let out = pony_in(state.path(), &args);
            let mut wrong = Vec::new();
            if out.code != Some(2) {
                wrong.push(format!("exit code {:?}, expected 2", out.code));
            }
            if !out.stdout.is_empty() {
                wrong.push(format!("stdout is not empty:\n{}", indent(&out.stdout)));
            }
            if out.stderr != check.stderr {
                wrong.push(format!(
                    "stderr differs from `check`:\n{}\n  check said:\n{}",
                    indent(&out.stderr),
                    indent(&check.stderr)
                ));
            }
            let left: Vec<String> = std::fs::read_dir(state.path())
                .expect("state dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            if !left.is_empty() {
                wrong.push(format!("the state directory is not empty: {left:?}"));
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "── {} (pony {})\n  {}",
                    case.name,
                    args.join(" "),
                    wrong.join("\n  ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Every error of a report is on its own `error: FILE...` line, and the summary counts them.
#[test]
fn the_summary_counts_every_error() {
    let corpus = corpus();
    let mut failures = Vec::new();
    for case in active(&corpus) {
        let out = pony(&case.args);
        let errors = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count();
        let summary = if errors == 1 {
            "1 error found; nothing ran".to_string()
        } else {
            format!("{errors} errors found; nothing ran")
        };
        if out.stderr.lines().last() != Some(summary.as_str()) {
            failures.push(format!(
                "── {}: expected the last line {summary:?}\n{}",
                case.name,
                indent(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ------------------------------------------------------------------ known problems in src/

/// Cases marked with an `ignore` file (a known problem in src/, with its reason) are
/// listed here; there are none now. To record one, add the file and its name here.
const KNOWN_PROBLEMS: &[&str] = &[];

#[test]
fn known_problems_are_listed_here() {
    let marked: BTreeSet<String> = corpus()
        .into_iter()
        .filter(|c| c.ignore.is_some())
        .map(|c| c.name)
        .collect();
    let listed: BTreeSet<String> = KNOWN_PROBLEMS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        marked, listed,
        "cases with an `ignore` file and KNOWN_PROBLEMS must agree"
    );
}
