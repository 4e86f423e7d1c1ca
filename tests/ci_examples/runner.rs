//! The CI emulation of tests/ci_examples.rs: a pipeline's jobs run as GitHub Actions or
//! GitLab CI runs them, each in a fresh checkout, artifacts, outputs and dotenv reports
//! carried from job to job. Only what the examples use is emulated; anything else panics.

use crate::support::crate_root;
use serde_yaml::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const GITHUB: &str = "examples/ci/github-actions.yml";
pub const GITLAB: &str = "examples/ci/gitlab-ci.yml";

/// The run of one job: whether it ran and passed, each shell line with its exit code and
/// output, and the checkout it ran in (kept for the checks).
pub struct Job {
    pub name: String,
    pub ran: bool,
    pub passed: bool,
    pub lines: Vec<(String, i32, String)>,
    pub dir: Option<tempfile::TempDir>,
    pub outputs: HashMap<String, String>,
}

impl Job {
    pub fn skipped(name: &str) -> Job {
        Job {
            name: name.to_string(),
            ran: false,
            passed: false,
            lines: Vec::new(),
            dir: None,
            outputs: HashMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .unwrap_or_else(|| panic!("job {} did not run", self.name))
            .path()
    }

    pub fn report(&self, file: &str) -> PathBuf {
        self.dir().join("pony-reports").join(file)
    }

    pub fn said(&self) -> String {
        self.lines
            .iter()
            .map(|(line, code, out)| format!("$ {line}  (exit {code})\n{out}"))
            .collect()
    }

    /// The exit code of the job's line that runs `pony-ci.sh STAGE`.
    pub fn stage_code(&self) -> i32 {
        let stage: Vec<_> = self
            .lines
            .iter()
            .filter(|(l, _, _)| l.contains("examples/ci/pony-ci.sh"))
            .collect();
        assert_eq!(stage.len(), 1, "{}: {}", self.name, self.said());
        stage[0].1
    }
}

/// A pipeline run: the files a checkout has besides the repository's, the variables a
/// test sets on every job, and the jobs in the order they ran.
#[derive(Default)]
pub struct Pipeline {
    pub extra_files: Vec<(&'static str, &'static str)>,
    pub variables: Vec<(&'static str, &'static str)>,
    pub artifacts: HashMap<String, tempfile::TempDir>,
    pub jobs: Vec<Job>,
}

impl Pipeline {
    pub fn job(&self, name: &str) -> &Job {
        self.jobs
            .iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no job {name}"))
    }

    /// A fresh checkout: the inventory and examples/ci/ as the repository has them.
    fn checkout(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = crate_root();
        copy_dir(&root.join("examples/ci"), &dir.path().join("examples/ci"));
        std::fs::create_dir_all(dir.path().join("inventories")).unwrap();
        std::fs::copy(
            root.join("inventories/local.yaml"),
            dir.path().join("inventories/local.yaml"),
        )
        .unwrap();
        for (path, text) in &self.extra_files {
            std::fs::write(dir.path().join(path), text).unwrap();
        }
        dir
    }

    /// Runs one shell line as the CI's shell does (`bash -e -c`), pony on PATH.
    fn shell(&self, dir: &Path, env: &[(String, String)], line: &str) -> (i32, String) {
        let mut command = Command::new("bash");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PONY_") {
                command.env_remove(name);
            }
        }
        let pony_dir = Path::new(env!("CARGO_BIN_EXE_pony")).parent().unwrap();
        let path = format!("{}:{}", pony_dir.display(), std::env::var("PATH").unwrap());
        let output = command
            .args(["-e", "-c", line])
            .current_dir(dir)
            .stdin(Stdio::null())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("PATH", path)
            .envs(env.iter().cloned())
            .envs(
                self.variables
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            crate::support::exit_text(&output),
        )
    }

    fn upload(&mut self, name: &str, from: &Path) {
        assert!(
            from.is_dir(),
            "artifact {name}: {} is missing",
            from.display()
        );
        let store = tempfile::tempdir().unwrap();
        copy_dir(from, store.path());
        self.artifacts.insert(name.to_string(), store);
    }

    fn download(&self, name: &str, to: &Path) {
        let store = self
            .artifacts
            .get(name)
            .unwrap_or_else(|| panic!("no artifact {name} was uploaded"));
        copy_dir(store.path(), to);
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(crate_root().join(path)).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn env_of(map: &Value) -> Vec<(String, String)> {
    let Some(map) = map.as_mapping() else {
        return Vec::new();
    };
    map.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            };
            (k.as_str().unwrap().to_string(), value)
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items
            .iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect(),
        other => panic!("not a list of names: {other:?}"),
    }
}

/// `KEY=VALUE` lines (GitHub's step outputs, GitLab's dotenv reports).
pub fn key_values(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A GitHub Actions run of the workflow for `event` (`pull_request` or `push`).
pub fn github(event: &str, mut pipeline: Pipeline) -> Pipeline {
    let doc = yaml(GITHUB);
    let workflow_env = env_of(&doc["env"]);
    for (name, job) in doc["jobs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let needs = strings(&job["needs"]);
        let needed: HashMap<&str, &Job> = pipeline
            .jobs
            .iter()
            .filter(|j| needs.contains(&j.name))
            .map(|j| (j.name.as_str(), j))
            .collect();
        let context = Context {
            event,
            needs: &needed,
            steps: &HashMap::new(),
        };
        let runs = needed.len() == needs.len()
            && needed.values().all(|j| j.passed)
            && job["if"].as_str().is_none_or(|c| context.holds(c));
        let run = if runs {
            github_job(&mut pipeline, event, name, job, &workflow_env)
        } else {
            Job::skipped(name)
        };
        pipeline.jobs.push(run);
    }
    pipeline
}

fn github_job(
    pipeline: &mut Pipeline,
    event: &str,
    name: &str,
    job: &Value,
    workflow_env: &[(String, String)],
) -> Job {
    let dir = pipeline.checkout();
    let mut env = workflow_env.to_vec();
    env.extend(env_of(&job["env"]));
    let mut steps: HashMap<String, HashMap<String, String>> = HashMap::new();
    let (mut passed, mut lines) = (true, Vec::new());
    let no_needs = HashMap::new();
    for step in job["steps"].as_sequence().unwrap() {
        match step["if"].as_str() {
            Some("always()") => {}
            Some(other) => panic!("{name}: unsupported step condition {other}"),
            None if !passed => continue,
            None => {}
        }
        let with = |key: &str| step["with"][key].as_str().unwrap().to_string();
        if let Some(action) = step["uses"].as_str() {
            match action.split('@').next().unwrap() {
                // The job's folder is the checkout.
                "actions/checkout" => {}
                "actions/upload-artifact" => {
                    pipeline.upload(&with("name"), &dir.path().join(with("path")))
                }
                "actions/download-artifact" => {
                    pipeline.download(&with("name"), &dir.path().join(with("path")))
                }
                other => panic!("{name}: unsupported action {other}"),
            }
            continue;
        }
        let line = step["run"].as_str().expect("a step runs or uses");
        assert!(
            !line.contains("${{"),
            "{name}: an expression in a run line: {line}"
        );
        let outputs = tempfile::NamedTempFile::new().unwrap();
        let context = Context {
            event,
            needs: &no_needs,
            steps: &steps,
        };
        let mut step_env = env.clone();
        for (k, v) in env_of(&step["env"]) {
            step_env.push((k, context.expand(&v)));
        }
        step_env.push(("GITHUB_OUTPUT".into(), outputs.path().display().to_string()));
        let (code, said) = pipeline.shell(dir.path(), &step_env, line);
        passed &= code == 0;
        lines.push((line.to_string(), code, said));
        if let Some(id) = step["id"].as_str() {
            let written = std::fs::read_to_string(outputs.path()).unwrap();
            steps.insert(id.to_string(), key_values(&written));
        }
    }
    let context = Context {
        event,
        needs: &no_needs,
        steps: &steps,
    };
    let outputs = env_of(&job["outputs"])
        .into_iter()
        .map(|(k, v)| (k, context.expand(&v)))
        .collect();
    Job {
        name: name.to_string(),
        ran: true,
        passed,
        lines,
        dir: Some(dir),
        outputs,
    }
}

/// What a GitHub expression can read here.
struct Context<'a> {
    event: &'a str,
    needs: &'a HashMap<&'a str, &'a Job>,
    steps: &'a HashMap<String, HashMap<String, String>>,
}

impl Context<'_> {
    fn value(&self, operand: &str) -> String {
        let operand = operand.trim();
        if let Some(text) = operand.strip_prefix('\'') {
            return text.strip_suffix('\'').unwrap().to_string();
        }
        let parts: Vec<&str> = operand.split('.').collect();
        match parts[..] {
            ["github", "event_name"] => self.event.to_string(),
            ["needs", job, "outputs", key] => self.needs[job].outputs[key].clone(),
            ["steps", step, "outputs", key] => {
                self.steps[step].get(key).cloned().unwrap_or_default()
            }
            // Repository variables: none are set in a test.
            ["vars", _] => String::new(),
            _ => panic!("unsupported expression {operand}"),
        }
    }

    fn holds(&self, condition: &str) -> bool {
        if let Some((a, b)) = condition.split_once("!=") {
            self.value(a) != self.value(b)
        } else if let Some((a, b)) = condition.split_once("==") {
            self.value(a) == self.value(b)
        } else {
            panic!("unsupported condition {condition}")
        }
    }

    /// `${{ … }}` in a value, each replaced by what it reads.
    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            let end = rest[start..].find("}}").unwrap() + start;
            out.push_str(&rest[..start]);
            out.push_str(&self.value(&rest[start + 3..end]));
            rest = &rest[end + 2..];
        }
        out + rest
    }
}

/// A GitLab CI pipeline of `source` (`merge_request_event` or `push`) on `branch`.
pub fn gitlab(source: &str, branch: &str, mut pipeline: Pipeline) -> Pipeline {
    let doc = yaml(GITLAB);
    let mut variables = env_of(&doc["variables"]);
    variables.push(("CI_PIPELINE_SOURCE".into(), source.into()));
    variables.push(("CI_DEFAULT_BRANCH".into(), "main".into()));
    if source != "merge_request_event" {
        variables.push(("CI_COMMIT_BRANCH".into(), branch.into()));
    }
    let stages = strings(&doc["stages"]);
    let mut jobs: Vec<(&str, &Value)> = doc
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap(), v))
        .filter(|(k, _)| !["default", "stages", "variables"].contains(k))
        .collect();
    let stage_of = |job: &Value| {
        let stage = job["stage"].as_str().unwrap();
        stages.iter().position(|s| s == stage).unwrap()
    };
    jobs.sort_by_key(|(_, job)| stage_of(job));
    let before = strings(&doc["default"]["before_script"]);
    for (name, job) in jobs {
        // The first rule that holds puts the job in the pipeline; none: it is not in it.
        let Some(rule) = job["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|r| gitlab_holds(r["if"].as_str().unwrap(), &variables))
        else {
            continue;
        };
        // `when: manual`: the test starts it, as the person who approves.
        assert!(
            matches!(rule["when"].as_str(), None | Some("manual")),
            "{name}: unsupported when"
        );
        // Without `needs`, a job waits for every job of the stages before its own.
        let needs: Vec<String> = match &job["needs"] {
            Value::Null => pipeline
                .jobs
                .iter()
                .filter(|j| stage_of(&doc[j.name.as_str()]) < stage_of(job))
                .map(|j| j.name.clone())
                .collect(),
            needs => strings(needs),
        };
        let needed: Vec<&Job> = pipeline
            .jobs
            .iter()
            .filter(|j| needs.contains(&j.name))
            .collect();
        if needed.len() != needs.len() || needed.iter().any(|j| !j.passed) {
            pipeline.jobs.push(Job::skipped(name));
            continue;
        }
        let run = gitlab_job(&pipeline, &doc, (name, job), &needed, &variables, &before);
        pipeline.jobs.push(run);
    }
    pipeline
}

/// Runs one GitLab job in a fresh checkout: the artifacts (`paths`) and dotenv variables
/// of the jobs it needs, `before_script` and `script` until a line fails, then its
/// artifacts checked.
fn gitlab_job(
    pipeline: &Pipeline,
    doc: &Value,
    (name, job): (&str, &Value),
    needed: &[&Job],
    variables: &[(String, String)],
    before: &[String],
) -> Job {
    let dir = pipeline.checkout();
    let mut env = variables.to_vec();
    for needed in needed {
        let artifacts = &doc[needed.name.as_str()]["artifacts"];
        for path in strings(&artifacts["paths"]) {
            copy_dir(&needed.dir().join(&path), &dir.path().join(&path));
        }
        if let Some(dotenv) = artifacts["reports"]["dotenv"].as_str() {
            let text = std::fs::read_to_string(needed.dir().join(dotenv)).unwrap();
            env.extend(key_values(&text));
        }
    }
    env.extend(env_of(&job["variables"]));
    let mut run = Job::skipped(name);
    run.ran = true;
    run.passed = true;
    for line in before.iter().chain(&strings(&job["script"])) {
        let (code, said) = pipeline.shell(dir.path(), &env, line);
        run.lines.push((line.clone(), code, said));
        if code != 0 {
            run.passed = false;
            break;
        }
    }
    let artifacts = &job["artifacts"];
    assert_eq!(artifacts["when"].as_str(), Some("always"), "{name}");
    for path in strings(&artifacts["paths"]) {
        assert!(
            dir.path().join(&path).exists(),
            "{name}: artifact {path} missing"
        );
    }
    // A JUnit test report GitLab reads: there when the job passed, and XML.
    if let Some(junit) = artifacts["reports"]["junit"].as_str() {
        let file = dir.path().join(junit);
        assert!(!run.passed || file.exists(), "{name}: no {junit}");
        if let Ok(xml) = std::fs::read_to_string(&file) {
            roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{junit}: {e}"));
        }
    }
    run.dir = Some(dir);
    run
}

/// A rule's `if`: `$VAR == "text"` or `$VAR == $OTHER`.
fn gitlab_holds(condition: &str, variables: &[(String, String)]) -> bool {
    let value = |operand: &str| -> Option<String> {
        let operand = operand.trim();
        match operand.strip_prefix('$') {
            Some(name) => variables
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone()),
            None => Some(operand.trim_matches('"').to_string()),
        }
    };
    let (a, b) = condition
        .split_once("==")
        .unwrap_or_else(|| panic!("unsupported rule {condition}"));
    value(a).is_some() && value(a) == value(b)
}
