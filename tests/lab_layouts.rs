//! `pony lab up` for several layouts, then the `try:` command it prints, run for real
//! from another folder: every layout the lab offers must give an inventory and a
//! playbook that deploy. Each host's files are checked, and the journal's end.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use support::exit_text;

fn pony(cwd: &Path, state: &Path, args: &[&str]) -> Output {
    support::pony_bare()
        .current_dir(cwd)
        .env("PONY_STATE_DIR", state)
        .args(args)
        .output()
        .expect("pony runs")
}

/// Stops the lab however the test ends.
struct LabDown {
    cwd: PathBuf,
    state: PathBuf,
}

impl Drop for LabDown {
    fn drop(&mut self) {
        let _ = pony(&self.cwd, &self.state, &["lab", "down"]);
    }
}

/// Splits the printed command into words (the lab quotes a path with `'…'` when needed).
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in command.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn up_and_try(regions: usize, clusters: usize, hosts: usize) {
    let work = tempfile::tempdir().expect("temp dir");
    let cwd = work.path().to_path_buf();
    // A state dir with a space: the printed command must quote it.
    let state = cwd.join("lab state");
    let (r, c, h) = (regions.to_string(), clusters.to_string(), hosts.to_string());
    let up = pony(
        &cwd,
        &state,
        &[
            "lab",
            "up",
            "--regions",
            &r,
            "--clusters",
            &c,
            "--hosts",
            &h,
        ],
    );
    let _down = LabDown {
        cwd: cwd.clone(),
        state: state.clone(),
    };
    assert!(up.status.success(), "{}", exit_text(&up));
    let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
    let command = stdout
        .lines()
        .find_map(|l| l.strip_prefix("try: "))
        .unwrap_or_else(|| panic!("no `try:` line\n{}", exit_text(&up)));
    let args = words(command);
    assert_eq!(args[0], "pony", "{command}");
    // From another folder than the one `lab up` ran in (the state dir is absolute, so
    // the printed paths are too).
    let elsewhere = cwd.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let args: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    let run = pony(&elsewhere, &state, &args);
    let layout = format!("{regions}×{clusters}×{hosts}");
    assert_eq!(
        run.status.code(),
        Some(0),
        "{layout}: {command}\n{}",
        exit_text(&run)
    );

    let names: Vec<PathBuf> = std::fs::read_dir(state.join("lab/hosts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), regions * clusters * hosts, "{layout}");
    for root in &names {
        let mail = root.join("srv/mail");
        let current = std::fs::read_link(mail.join("current"))
            .unwrap_or_else(|e| panic!("{layout}: {}: {e}", mail.display()));
        assert_eq!(current, Path::new("releases/2.4.1"), "{layout}");
        let running = std::fs::read_to_string(mail.join("state/running")).unwrap();
        assert_eq!(running.trim(), "2.4.1", "{layout}: {}", root.display());
        assert!(!mail.join("state/accepting-off").exists(), "{layout}");
    }
    // Every region has a store host, so the schema migrated once per region.
    let schemas = names
        .iter()
        .filter(|r| r.join("srv/mail/schema").exists())
        .count();
    assert_eq!(schemas, regions, "{layout}: one migrate-schema per region");

    let runs: Vec<PathBuf> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{layout}");
    let journal = std::fs::read_to_string(runs[0].join("journal.jsonl")).unwrap();
    let last = journal.lines().last().unwrap_or_default();
    assert!(
        last.contains("run_finished") && last.contains("succeeded"),
        "{layout}: {last}"
    );
}

#[test]
fn one_host() {
    up_and_try(1, 1, 1);
}

#[test]
fn one_cluster_of_two() {
    up_and_try(1, 1, 2);
}

#[test]
fn two_regions_of_one_host() {
    up_and_try(2, 1, 1);
}

#[test]
fn the_default_shape_of_three_regions() {
    up_and_try(3, 2, 2);
}
