//! The everyday actions, each a state to ensure on the host rather than a command:
//! `line:` (a line in a file, Ansible's `lineinfile`), `service:` (a service started,
//! stopped, restarted or reloaded, enabled or not) and `package:` (a package at a version,
//! through apt/dpkg). Their fields are templates, rendered per target like `run`; this
//! module holds their shapes as written (the same type once rendered) and the checks that
//! need no host. Running them is `crate::exec::task::ensure`'s.

use serde::{Deserialize, Serialize};

/// One everyday action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensure {
    Line(Line),
    Service(Service),
    Package(Package),
}

/// `line:`: the line present in (or absent from) the file at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub path: String,
    /// A regular expression (Rust `regex` syntax, close to Python's `re` that Ansible
    /// uses) matched against each line: present replaces the last matching line, absent
    /// removes every matching one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<String>,
    /// The whole line (without its newline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(default)]
    pub state: Presence,
    /// Create the file (mode 0644) when it does not exist; otherwise a missing file fails
    /// the task.
    #[serde(default)]
    pub create: bool,
}

/// `service:`: the state of a service, through systemctl on a systemd host, else the
/// host's `service` command or `/etc/init.d/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServiceState>,
    /// Started at boot (systemctl enable/disable; update-rc.d without systemd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `package:`: a Debian package installed (at `version`, or from a `deb` file) or removed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The exact version apt installs (`apt-get install NAME=VERSION`, up or down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub state: Presence,
    /// A .deb file on the host, installed with dpkg unless that version is in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deb: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Running (started if it is not; unchanged if it is).
    Started,
    /// Not running (stopped if it is).
    Stopped,
    /// Restarted, always (a change every time).
    Restarted,
    /// Told to reload its configuration, always (a change every time).
    Reloaded,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Started => "started",
            ServiceState::Stopped => "stopped",
            ServiceState::Restarted => "restarted",
            ServiceState::Reloaded => "reloaded",
        }
    }
}

/// A problem with an action as written: what, and how to fix it.
pub struct Problem {
    pub message: String,
    pub hint: String,
}

fn problem(message: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem {
        message: message.into(),
        hint: hint.into(),
    }
}

/// Whether a field is a template (its value known only per host).
fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

impl Ensure {
    pub fn kind(&self) -> &'static str {
        match self {
            Ensure::Line(_) => "line",
            Ensure::Service(_) => "service",
            Ensure::Package(_) => "package",
        }
    }

    /// Every template string of the action with its field.
    pub fn templates(&self) -> Vec<(&'static str, &str)> {
        let fields: Vec<(&'static str, Option<&String>)> = match self {
            Ensure::Line(l) => vec![
                ("line path", Some(&l.path)),
                ("line regexp", l.regexp.as_ref()),
                ("line line", l.line.as_ref()),
            ],
            Ensure::Service(s) => vec![("service name", Some(&s.name))],
            Ensure::Package(p) => vec![
                ("package name", p.name.as_ref()),
                ("package version", p.version.as_ref()),
                ("package deb", p.deb.as_ref()),
            ],
        };
        fields
            .into_iter()
            .filter_map(|(field, value)| value.map(|v| (field, v.as_str())))
            .collect()
    }

    /// The action with its templates rendered by `render` (then checked again: a field
    /// that was a template is checked only now).
    pub fn rendered<E: From<String>>(
        &self,
        mut render: impl FnMut(&'static str, &str) -> Result<String, E>,
    ) -> Result<Ensure, E> {
        let mut opt = |field: &'static str, value: &Option<String>| {
            value.as_ref().map(|v| render(field, v)).transpose()
        };
        let rendered = match self {
            Ensure::Line(l) => Ensure::Line(Line {
                regexp: opt("line regexp", &l.regexp)?,
                line: opt("line line", &l.line)?,
                path: opt("line path", &Some(l.path.clone()))?.unwrap_or_default(),
                ..l.clone()
            }),
            Ensure::Service(s) => Ensure::Service(Service {
                name: opt("service name", &Some(s.name.clone()))?.unwrap_or_default(),
                ..s.clone()
            }),
            Ensure::Package(p) => Ensure::Package(Package {
                name: opt("package name", &p.name)?,
                version: opt("package version", &p.version)?,
                deb: opt("package deb", &p.deb)?,
                ..p.clone()
            }),
        };
        match rendered.problems(false).into_iter().next() {
            Some(p) => Err(E::from(format!("{} ({})", p.message, p.hint))),
            None => Ok(rendered),
        }
    }

    /// What `--dry-run` and the host's log show.
    pub fn describe(&self) -> String {
        match self {
            Ensure::Line(l) => {
                let how = match (&l.state, &l.regexp, &l.line) {
                    (Presence::Present, Some(re), Some(line)) => {
                        format!("line `{line}` (replacing the last line matching `{re}`)")
                    }
                    (Presence::Present, _, line) => {
                        format!("line `{}`", line.as_deref().unwrap_or_default())
                    }
                    (Presence::Absent, Some(re), _) => format!("no line matching `{re}`"),
                    (Presence::Absent, None, line) => {
                        format!("no line `{}`", line.as_deref().unwrap_or_default())
                    }
                };
                let create = if l.create { ", created if missing" } else { "" };
                format!("ensure {how} in {}{create}", l.path)
            }
            Ensure::Service(s) => {
                let mut wants = Vec::new();
                if let Some(state) = s.state {
                    wants.push(state.as_str().to_string());
                }
                match s.enabled {
                    Some(true) => wants.push("enabled".into()),
                    Some(false) => wants.push("disabled".into()),
                    None => {}
                }
                format!("ensure service {} {}", s.name, wants.join(" and "))
            }
            Ensure::Package(p) => {
                let name = p.name.as_deref().unwrap_or("the package");
                match (p.state, &p.deb, &p.version) {
                    (Presence::Absent, _, _) => format!("ensure package {name} absent"),
                    (Presence::Present, Some(deb), _) => match &p.name {
                        Some(name) => format!("ensure package {name} installed from {deb}"),
                        None => format!("ensure the package in {deb} installed"),
                    },
                    (Presence::Present, None, Some(v)) => {
                        format!("ensure package {name} at version {v}")
                    }
                    (Presence::Present, None, None) => format!("ensure package {name} installed"),
                }
            }
        }
    }

    /// What is wrong with the action as written (`templated`: fields that are templates
    /// are not checked yet, their value being known per host only).
    pub fn problems(&self, templated: bool) -> Vec<Problem> {
        let checkable = |text: &str| !(templated && is_template(text));
        let mut out = Vec::new();
        match self {
            Ensure::Line(l) => {
                if l.path.trim().is_empty() {
                    out.push(problem(
                        "`line` has an empty `path`",
                        "give the file to edit, e.g. `path: /etc/postfix/main.cf`",
                    ));
                }
                if l.state == Presence::Present && l.line.is_none() {
                    out.push(problem(
                        "`line` with `state: present` has no `line:`",
                        "give the whole line to ensure, e.g. `line: 'smtpd_banner = $myhostname ESMTP'`",
                    ));
                }
                if l.state == Presence::Absent && l.line.is_none() && l.regexp.is_none() {
                    out.push(problem(
                        "`line` with `state: absent` has neither `regexp:` nor `line:`",
                        "give `regexp:` (lines matching it are removed) or `line:` (lines equal to it are removed)",
                    ));
                }
                if let Some(line) = l.line.as_deref().filter(|t| checkable(t)) {
                    if line.contains('\n') {
                        out.push(problem(
                            "`line` has a `line:` of more than one line",
                            "give one line (without its newline); use `template:` for a block of lines",
                        ));
                    }
                }
                if let Some(re) = l.regexp.as_deref().filter(|t| checkable(t)) {
                    if let Err(e) = regex::bytes::Regex::new(re) {
                        let why = e.to_string();
                        let why = why.lines().last().unwrap_or_default().trim().to_string();
                        out.push(problem(
                            format!("`line` has a bad `regexp` `{re}`: {why}"),
                            "write a regular expression like `^smtpd_banner\\s*=` (Rust regex syntax, as Python's re)",
                        ));
                    }
                }
            }
            Ensure::Service(s) => {
                if s.name.trim().is_empty() || (checkable(&s.name) && s.name.contains(['/', ' '])) {
                    out.push(problem(
                        format!("`service` has a bad `name` `{}`", s.name),
                        "give the service's name, e.g. `name: postfix` (no path, no spaces)",
                    ));
                }
                if s.state.is_none() && s.enabled.is_none() {
                    out.push(problem(
                        "`service` says neither `state:` nor `enabled:`",
                        "give `state: started|stopped|restarted|reloaded` and/or `enabled: true|false`",
                    ));
                }
            }
            Ensure::Package(p) => out.extend(package_problems(p, templated)),
        }
        out
    }
}

fn package_problems(p: &Package, templated: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    match (&p.name, &p.deb, p.state) {
        (None, None, _) => out.push(problem(
            "`package` has neither `name:` nor `deb:`",
            "give the package's `name:` (from apt), or `deb:` a .deb file on the host",
        )),
        (_, Some(_), Presence::Absent) => out.push(problem(
            "`package` with `state: absent` has a `deb:`",
            "to remove a package give its `name:` only",
        )),
        _ => {}
    }
    if p.version.is_some() && p.deb.is_some() {
        out.push(problem(
            "`package` has both `version:` and `deb:`",
            "a .deb file carries its own version: remove `version:`",
        ));
    }
    if p.version.is_some() && p.state == Presence::Absent {
        out.push(problem(
            "`package` with `state: absent` has a `version:`",
            "remove `version:` (absent means no version at all)",
        ));
    }
    let bad_name = |n: &str| {
        !(templated && is_template(n))
            && (n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.:".contains(c)))
    };
    if let Some(name) = p.name.as_deref().filter(|n| bad_name(n)) {
        out.push(problem(
            format!("`package` has a bad `name` `{name}`"),
            "give a Debian package name, e.g. `name: postfix` (letters, digits, `+ - . :`)",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(yaml: &str) -> Ensure {
        Ensure::Line(serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn a_line_needs_its_line_and_a_regexp_that_compiles_unless_it_is_a_template() {
        let ok = line("{ path: /etc/x, regexp: '^a\\s*=', line: 'a = 1' }");
        assert!(ok.problems(true).is_empty());
        let messages = |e: &Ensure, templated| -> Vec<String> {
            e.problems(templated)
                .into_iter()
                .map(|p| p.message)
                .collect()
        };
        assert_eq!(
            messages(&line("{ path: /etc/x, regexp: 'a(' }"), true),
            [
                "`line` with `state: present` has no `line:`",
                "`line` has a bad `regexp` `a(`: error: unclosed group"
            ]
        );
        let templated = line("{ path: /etc/x, regexp: '{{ re }}(', line: a }");
        assert!(templated.problems(true).is_empty());
        assert_eq!(templated.problems(false).len(), 1);
        let absent = line("{ path: /etc/x, state: absent }");
        assert!(messages(&absent, true)[0].contains("neither `regexp:` nor `line:`"));
    }

    #[test]
    fn a_package_is_named_or_a_deb_and_a_service_says_what_it_wants() {
        let package = |yaml: &str| Ensure::Package(serde_yaml::from_str(yaml).unwrap());
        assert!(package("{ name: postfix, version: '3.7-1' }")
            .problems(true)
            .is_empty());
        assert!(package("{ deb: /tmp/x.deb }").problems(true).is_empty());
        assert_eq!(package("{ version: '1' }").problems(true).len(), 1);
        assert_eq!(
            package("{ name: x, deb: /x.deb, version: '1' }")
                .problems(true)
                .len(),
            1
        );
        assert_eq!(package("{ name: 'a b' }").problems(true).len(), 1);
        let service = Ensure::Service(serde_yaml::from_str("{ name: postfix }").unwrap());
        assert_eq!(service.problems(true).len(), 1);
        let service: Service =
            serde_yaml::from_str("{ name: postfix, state: started, enabled: true }").unwrap();
        assert_eq!(
            Ensure::Service(service).describe(),
            "ensure service postfix started and enabled"
        );
    }
}
