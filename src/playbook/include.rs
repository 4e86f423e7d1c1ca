//! `include:` steps (Ansible's roles): a step `{ include: FILE, name:, vars:, hosts:,
//! needs: }` is replaced, before the playbook is deserialized, by the steps of FILE.
//!
//! FILE is a list of steps, or `{ vars: …, steps: […] }` (the vars are its defaults). It is
//! found relative to the file that includes it, as are its own includes and its steps'
//! `template:`/`upload:` sources (their `src` gets the included file's folder in front,
//! so that the playbook, the plan and a run's snapshot know each source by one name).
//! Each included step is named `<include name>/<step name>`; its `needs` (and a
//! handler's `listen`) on steps of the same file follow the renaming; it gets the include's `needs` and, without its own,
//! the include's `hosts`; its `vars:` are the file's defaults, then the include's
//! `vars:`, then its own. Cycles and missing files are refused.

use crate::diag::{Diagnostic, Diagnostics};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Reads an included file by its name relative to the top playbook's folder (a run's
/// snapshot reads its copy instead).
pub type Reader<'a> = &'a dyn Fn(&str) -> std::io::Result<String>;

/// The playbook's YAML with every include replaced by its steps.
#[derive(Debug, Default)]
pub struct Expanded {
    /// Each included step's name → where it came from: `FILE:LINE (include NAME)`.
    pub origins: BTreeMap<String, String>,
    /// Every file included, by its name relative to the top playbook's folder.
    pub files: Vec<String>,
}

/// Whether the playbook has any `include:` step (else it is read as it always was).
pub fn has_includes(value: &Value) -> bool {
    value
        .get("steps")
        .and_then(Value::as_sequence)
        .is_some_and(|steps| steps.iter().any(|s| s.get("include").is_some()))
}

/// Replaces the includes of `value` (the top playbook, `file`) in place.
pub fn expand(file: &Path, value: &mut Value, read: Reader) -> Result<Expanded, Diagnostics> {
    let mut expander = Expander {
        top: file,
        read,
        out: Expanded::default(),
        errors: Diagnostics::default(),
        chain: vec![normal(".", &file_name(file))],
    };
    if let Some(steps) = value.get_mut("steps").and_then(Value::as_sequence_mut) {
        let taken = std::mem::take(steps);
        *steps = expander.steps(taken, "", &file.display().to_string());
        expander.clashes(steps, file);
    }
    expander.errors.into_result(expander.out)
}

fn file_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct Expander<'a> {
    top: &'a Path,
    read: Reader<'a>,
    out: Expanded,
    errors: Diagnostics,
    /// The files being included, outermost first: a file met again is a cycle.
    chain: Vec<String>,
}

/// The keys an include step takes.
const INCLUDE_KEYS: &[&str] = &["include", "name", "vars", "hosts", "needs"];

impl Expander<'_> {
    fn error(&mut self, file: &str, message: String, hint: &str) {
        self.errors
            .push(Diagnostic::new(Path::new(file), message).hint(hint));
    }

    /// An included step whose name another step has too, named with where each is from.
    fn clashes(&mut self, steps: &[Value], file: &Path) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for step in steps {
            let Some(name) = step.get("name").and_then(Value::as_str) else {
                continue;
            };
            *seen.entry(name).or_default() += 1;
        }
        for (name, count) in seen {
            let Some(origin) = self.out.origins.get(name).filter(|_| count > 1) else {
                continue;
            };
            let message = format!("step `{name}` from {origin} clashes with another step of that name after inclusion (included steps are named `<include name>/<step name>`)");
            self.error(
                &file.display().to_string(),
                message,
                "rename the other step, or give the include another `name:`",
            );
        }
    }

    /// The steps of one file (`dir`: its folder relative to the top playbook's, `file`:
    /// its name for messages) with their includes expanded.
    fn steps(&mut self, steps: Vec<Value>, dir: &str, file: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for step in steps {
            let Some(include) = step.get("include") else {
                out.push(step);
                continue;
            };
            let Some(map) = step.as_mapping() else {
                continue;
            };
            let Some(path) = include.as_str().map(str::to_string) else {
                self.error(
                    file,
                    "`include:` must name a file".into(),
                    "write `include: roles/postfix.yaml`",
                );
                continue;
            };
            for key in map.keys().filter_map(Value::as_str) {
                if !INCLUDE_KEYS.contains(&key) {
                    self.error(
                        file,
                        format!("include `{path}`: unknown key `{key}`"),
                        "an include takes `include`, `name`, `vars`, `hosts` and `needs`",
                    );
                }
            }
            let name = match map.get("name").and_then(Value::as_str) {
                Some(name) => name.to_string(),
                None => Path::new(&path)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            if names.insert(name.clone(), 0).is_some() {
                self.error(
                    file,
                    format!(
                        "two includes are named `{name}`: their steps would have the same names"
                    ),
                    "give one of them its own `name:`",
                );
                continue;
            }
            out.extend(self.include(map, &path, &name, dir, file));
        }
        out
    }

    /// An included file's text, its name for messages, its `vars:` and its steps.
    fn read_file(
        &mut self,
        key: &str,
        name: &str,
        file: &str,
    ) -> Option<(String, String, Mapping, Vec<Value>)> {
        let shown = self.top.parent().unwrap_or(Path::new(".")).join(key);
        let text = match (self.read)(key) {
            Ok(text) => text,
            Err(e) => {
                self.error(
                    file,
                    format!("include `{name}`: cannot read {}: {e}", shown.display()),
                    "the path is relative to the file that includes it",
                );
                return None;
            }
        };
        let shown = shown.display().to_string();
        let (defaults, steps) = match serde_yaml::from_str::<Value>(&text) {
            Ok(Value::Sequence(steps)) => (Mapping::new(), steps),
            Ok(Value::Mapping(mut m))
                if m.keys()
                    .all(|k| matches!(k.as_str(), Some("vars" | "steps"))) =>
            {
                let vars = m
                    .remove("vars")
                    .and_then(|v| v.as_mapping().cloned())
                    .unwrap_or_default();
                match m.remove("steps") {
                    Some(Value::Sequence(steps)) => (vars, steps),
                    _ => (vars, Vec::new()),
                }
            }
            Ok(_) => {
                self.error(
                    &shown,
                    "an included file must hold a list of steps, or `vars:` and `steps:`".into(),
                    "write `steps:` with a list of steps (and `vars:` for their defaults)",
                );
                return None;
            }
            Err(e) => {
                self.errors
                    .push(Diagnostic::from_yaml(Path::new(&shown), &e));
                return None;
            }
        };
        Some((text, shown, defaults, steps))
    }

    /// One include's steps, renamed and given the include's vars, hosts and needs.
    fn include(
        &mut self,
        map: &Mapping,
        path: &str,
        name: &str,
        dir: &str,
        file: &str,
    ) -> Vec<Value> {
        let key = normal(dir, path);
        if let Some(at) = self.chain.iter().position(|f| *f == key) {
            let mut cycle: Vec<String> = self.chain[at..].to_vec();
            cycle.push(key);
            self.error(
                file,
                format!("include cycle: {}", cycle.join(" → ")),
                "an included file must not include itself, directly or through others",
            );
            return Vec::new();
        }
        let Some((text, shown, defaults, steps)) = self.read_file(&key, name, file) else {
            return Vec::new();
        };
        if !self.out.files.contains(&key) {
            self.out.files.push(key.clone());
        }
        let folder = match Path::new(&key).parent() {
            Some(p) if !p.as_os_str().is_empty() => format!("{}/", p.display()),
            _ => String::new(),
        };
        self.chain.push(key);
        let steps = self.steps(steps, &folder, &shown);
        self.chain.pop();
        // The file's own steps, its nested includes' already renamed.
        let inner_names: Vec<String> = steps
            .iter()
            .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        let mut vars = defaults;
        if let Some(Value::Mapping(given)) = map.get("vars") {
            vars.extend(given.clone());
        }
        let outer = Outer {
            name,
            vars: &vars,
            hosts: map.get("hosts"),
            needs: map.get("needs").and_then(Value::as_sequence),
            folder: &folder,
            inner_names: &inner_names,
        };
        steps
            .into_iter()
            .map(|step| {
                let before = step.get("name").and_then(Value::as_str).map(str::to_string);
                let step = outer.apply(step);
                if let (Some(before), Some(full)) =
                    (before, step.get("name").and_then(Value::as_str))
                {
                    let origin = match self.out.origins.remove(&before) {
                        Some(inner) => format!("{inner} via include {name}"),
                        None => format!("{shown}:{} (include {name})", line_of(&text, &before)),
                    };
                    self.out.origins.insert(full.to_string(), origin);
                }
                step
            })
            .collect()
    }
}

/// What an include gives each of its steps.
struct Outer<'a> {
    name: &'a str,
    vars: &'a Mapping,
    hosts: Option<&'a Value>,
    needs: Option<&'a Vec<Value>>,
    folder: &'a str,
    inner_names: &'a [String],
}

impl Outer<'_> {
    fn apply(&self, mut step: Value) -> Value {
        let Some(map) = step.as_mapping_mut() else {
            return step;
        };
        let renamed = |n: &str| {
            if self.inner_names.iter().any(|i| i == n) {
                format!("{}/{n}", self.name)
            } else {
                n.to_string()
            }
        };
        if let Some(Value::String(n)) = map.get_mut("name") {
            *n = format!("{}/{n}", self.name);
        }
        if let Some(Value::Sequence(needs)) = map.get_mut("needs") {
            for need in needs.iter_mut() {
                match need {
                    Value::String(n) => *n = renamed(n),
                    Value::Mapping(m) => {
                        if let Some(Value::String(n)) = m.get_mut("step") {
                            *n = renamed(n);
                        }
                    }
                    _ => {}
                }
            }
        }
        // A handler's `listen` names steps as `needs` does.
        if let Some(Value::Sequence(listen)) = map.get_mut("listen") {
            for heard in listen.iter_mut() {
                if let Value::String(n) = heard {
                    *n = renamed(n);
                }
            }
        }
        if let Some(extra) = self.needs {
            let needs = map
                .entry("needs".into())
                .or_insert_with(|| Value::Sequence(Vec::new()));
            if let Value::Sequence(needs) = needs {
                needs.extend(extra.iter().cloned());
            }
        }
        if let Some(hosts) = self.hosts {
            map.entry("hosts".into()).or_insert_with(|| hosts.clone());
        }
        if !self.vars.is_empty() {
            let mut vars = self.vars.clone();
            if let Some(Value::Mapping(own)) = map.get("vars") {
                vars.extend(own.clone());
            }
            map.insert("vars".into(), Value::Mapping(vars));
        }
        for field in ["template", "upload"] {
            if let Some(Value::String(src)) = map.get_mut(field).and_then(|t| t.get_mut("src")) {
                if !src.starts_with('/') {
                    *src = format!("{}{src}", self.folder);
                }
            }
        }
        step
    }
}

/// The line (1-based) of `name: NAME` in a file's text; 1 when not found as written.
fn line_of(text: &str, name: &str) -> usize {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches("- ").trim_start();
            line.strip_prefix("name:")
                .is_some_and(|rest| rest.trim().trim_matches(['"', '\'']) == name)
        })
        .map_or(1, |i| i + 1)
}

/// `path` relative to the top playbook's folder, from a file in `dir` (itself relative
/// to it, `""` or ending in `/`), with `.` and `..` resolved as far as the text goes.
fn normal(dir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(dir).join(path)
    };
    let mut out: Vec<Component> = Vec::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.iter().collect::<PathBuf>().display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_named_from_the_top_playbooks_folder() {
        assert_eq!(normal("", "roles/a.yaml"), "roles/a.yaml");
        assert_eq!(normal("roles/", "../common/b.yaml"), "common/b.yaml");
        assert_eq!(normal("", "../shared/c.yaml"), "../shared/c.yaml");
        assert_eq!(normal("roles/", "/etc/x.yaml"), "/etc/x.yaml");
    }

    #[test]
    fn nested_includes_rename_steps_and_needs_and_prefix_sources() {
        let files = std::collections::HashMap::from([
            ("roles/pf/tasks.yaml", "vars: { relay: r }\nsteps:\n  - include: ../common/base.yaml\n  - name: config\n    needs: [base/ready]\n    template: { src: t/main.cf.j2, dest: /x }\n"),
            ("roles/common/base.yaml", "- name: ready\n  run: 'true'\n"),
        ]);
        let read = |key: &str| {
            files
                .get(key)
                .map(|t| t.to_string())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        let mut value: Value = serde_yaml::from_str(
            "name: p\nsteps:\n  - { name: prep, run: 'true' }\n  - { include: roles/pf/tasks.yaml, name: mta, needs: [prep], vars: { relay: s } }\n",
        )
        .unwrap();
        let expanded = expand(Path::new("pb.yaml"), &mut value, &read).unwrap();
        let steps = value["steps"].as_sequence().unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["prep", "mta/base/ready", "mta/config"]);
        let config = &steps[2];
        assert_eq!(
            config["needs"],
            serde_yaml::from_str::<Value>("[mta/base/ready, prep]").unwrap()
        );
        assert_eq!(config["template"]["src"], "roles/pf/t/main.cf.j2");
        assert_eq!(config["vars"]["relay"], "s");
        assert_eq!(
            expanded.origins["mta/base/ready"],
            "roles/common/base.yaml:1 (include base) via include mta"
        );
        assert_eq!(
            expanded.origins["mta/config"],
            "roles/pf/tasks.yaml:4 (include mta)"
        );
        assert_eq!(
            expanded.files,
            ["roles/pf/tasks.yaml", "roles/common/base.yaml"]
        );
    }

    #[test]
    fn a_handlers_listen_follows_the_renaming_of_its_files_steps() {
        let read = |_: &str| {
            Ok("- { name: config, run: 'true' }\n- { name: reload, listen: [config, prep], run: 'true' }\n".to_string())
        };
        let mut value: Value = serde_yaml::from_str(
            "name: p\nsteps:\n  - { name: prep, run: 'true' }\n  - { include: role.yaml, name: mta }\n",
        )
        .unwrap();
        expand(Path::new("pb.yaml"), &mut value, &read).unwrap();
        let reload = &value["steps"][2];
        assert_eq!(reload["name"], "mta/reload");
        assert_eq!(
            reload["listen"],
            serde_yaml::from_str::<Value>("[mta/config, prep]").unwrap()
        );
    }

    #[test]
    fn an_included_steps_line_is_found_by_its_name() {
        let text = "vars: {}\nsteps:\n  - name: config\n    run: x\n  - name: \"reload\"\n";
        assert_eq!(line_of(text, "config"), 3);
        assert_eq!(line_of(text, "reload"), 5);
    }
}
