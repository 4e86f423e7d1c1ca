//! Ansible inventories as Ansible writes them, read into one shape ([`Groups`]): the INI
//! format (`[group]`, `[group:vars]`, `[group:children]`, host ranges with an optional
//! stride, `key=value` host variables), the YAML format rooted at `all` (`hosts`, `vars`,
//! `children`), and the JSON of `ansible-inventory --list` or of a dynamic inventory
//! script (groups with `hosts`/`vars`/`children` lists, host variables under
//! `_meta.hostvars`).

use indexmap::{IndexMap, IndexSet};
use serde_yaml::{Mapping, Value};

/// Variables as Ansible gives them (values kept typed: numbers, booleans, strings).
pub type Vars = IndexMap<String, Value>;

/// One group: its own hosts, child groups and variables.
#[derive(Debug, Default, Clone)]
pub struct Group {
    pub hosts: IndexSet<String>,
    pub children: IndexSet<String>,
    pub vars: Vars,
}

/// A whole Ansible inventory: groups by name (`all` and `ungrouped` included when
/// present) and each host's own variables, hosts in the order first seen.
#[derive(Debug, Default)]
pub struct Groups {
    pub groups: IndexMap<String, Group>,
    pub host_vars: IndexMap<String, Vars>,
}

/// Which of Ansible's inventory formats a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Ini,
    Yaml,
    /// `ansible-inventory --list` (or a dynamic inventory script's output).
    Json,
}

impl Format {
    /// The format the text looks like: JSON starts with `{`, YAML with `all:` (or `---`).
    pub fn guess(text: &str) -> Format {
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .unwrap_or("");
        if first.starts_with('{') {
            Format::Json
        } else if first == "---" || first.starts_with("all:") {
            Format::Yaml
        } else {
            Format::Ini
        }
    }
}

/// A problem with the input, at a line when known.
pub type ParseError = (Option<usize>, String);

pub fn parse(text: &str, format: Format) -> Result<Groups, ParseError> {
    match format {
        Format::Ini => parse_ini(text),
        Format::Yaml => parse_yaml(text),
        Format::Json => parse_json(text),
    }
}

impl Groups {
    fn group(&mut self, name: &str) -> &mut Group {
        self.groups.entry(name.to_string()).or_default()
    }

    fn add_host(&mut self, group: &str, host: &str, vars: Vars) {
        self.group(group).hosts.insert(host.to_string());
        self.host_vars
            .entry(host.to_string())
            .or_default()
            .extend(vars);
    }
}

fn parse_ini(text: &str) -> Result<Groups, ParseError> {
    enum Section {
        Hosts(String),
        Vars(String),
        Children(String),
    }
    let mut groups = Groups::default();
    let mut section = Section::Hosts("ungrouped".into());
    for (index, raw) in text.lines().enumerate() {
        let line_no = Some(index + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header
                .strip_suffix(']')
                .ok_or((line_no, format!("`{line}`: a section header ends with `]`")))?;
            section = match header.split_once(':') {
                Some((group, "vars")) => Section::Vars(group.to_string()),
                Some((group, "children")) => Section::Children(group.to_string()),
                Some((_, kind)) => {
                    return Err((
                        line_no,
                        format!("`[{header}]`: unknown section kind `{kind}` (Ansible knows `:vars` and `:children`)"),
                    ))
                }
                None => Section::Hosts(header.to_string()),
            };
            let (Section::Hosts(g) | Section::Vars(g) | Section::Children(g)) = &section;
            groups.group(g);
            continue;
        }
        match &section {
            Section::Hosts(group) => {
                let words = split_words(line).map_err(|e| (line_no, e))?;
                let (pattern, assignments) = words.split_first().expect("a non-empty line");
                let vars = assignments
                    .iter()
                    .map(|a| key_value(a))
                    .collect::<Result<Vars, String>>()
                    .map_err(|e| (line_no, e))?;
                for host in expand_hosts(pattern).map_err(|e| (line_no, e))? {
                    groups.add_host(group, &host, vars.clone());
                }
            }
            Section::Vars(group) => {
                let (key, value) = key_value(line).map_err(|e| (line_no, e))?;
                groups.group(group).vars.insert(key, value);
            }
            Section::Children(group) => {
                let child = line.split_whitespace().next().unwrap_or(line).to_string();
                groups.group(&child);
                groups.group(group).children.insert(child);
            }
        }
    }
    Ok(groups)
}

/// Splits a host line into words, keeping quoted values (`motd="hello world"`) whole.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if word.is_empty() => break,
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (None, c) => word.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("`{line}`: a quote is never closed"));
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

/// `key=value`, the value read as YAML would read it (`2222` a number, `yes` a string).
fn key_value(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected `key=value`"))?;
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() {
        return Err(format!("`{text}`: the variable has no name"));
    }
    let typed = match serde_yaml::from_str::<Value>(value) {
        Ok(v @ (Value::Number(_) | Value::Bool(_)))
            if !value.eq_ignore_ascii_case("yes") && !value.eq_ignore_ascii_case("no") =>
        {
            v
        }
        _ => Value::String(value.to_string()),
    };
    Ok((key.to_string(), typed))
}

/// Ansible host patterns: `mx[01:20].example.net`, `web-[a:f]`, a stride as
/// `[0:10:2]`; several ranges in one name multiply.
pub fn expand_hosts(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| format!("`{pattern}`: `[` is never closed"))?;
    let inner = &pattern[open + 1..close];
    let parts: Vec<&str> = inner.split(':').collect();
    let items: Vec<String> = match parts.as_slice() {
        [start, end] => super::super::range::expand(&format!("[{start}:{end}]"))
            .map_err(|e| format!("`{pattern}`: {}", e.reason))?,
        [start, end, stride] => {
            let bad = || format!("`{pattern}`: a range with a stride is numeric, as `[0:10:2]`");
            let (s, e, step): (u64, u64, u64) = (
                start.parse().map_err(|_| bad())?,
                end.parse().map_err(|_| bad())?,
                stride.parse().map_err(|_| bad())?,
            );
            if step == 0 || s > e {
                return Err(bad());
            }
            (s..=e)
                .step_by(step as usize)
                .map(|n| format!("{n:0width$}", width = start.len()))
                .collect()
        }
        _ => {
            return Err(format!(
                "`{pattern}`: expected `[start:end]` or `[start:end:stride]`"
            ))
        }
    };
    let rest = expand_hosts(&pattern[close + 1..])?;
    let prefix = &pattern[..open];
    Ok(items
        .iter()
        .flat_map(|item| rest.iter().map(move |tail| format!("{prefix}{item}{tail}")))
        .collect())
}

fn parse_yaml(text: &str) -> Result<Groups, ParseError> {
    let root: Value = serde_yaml::from_str(text)
        .map_err(|e| (e.location().map(|l| l.line()), format!("not YAML: {e}")))?;
    let mut groups = Groups::default();
    let Value::Mapping(top) = root else {
        return Err((
            None,
            "a YAML inventory is a map of groups, rooted at `all:`".into(),
        ));
    };
    for (name, body) in &top {
        yaml_group(&mut groups, &key_text(name), body)?;
    }
    Ok(groups)
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn yaml_group(groups: &mut Groups, name: &str, body: &Value) -> Result<(), ParseError> {
    groups.group(name);
    let empty = Mapping::new();
    let body = match body {
        Value::Mapping(m) => m,
        Value::Null => &empty,
        _ => {
            return Err((
                None,
                format!("group `{name}`: expected a map of hosts, vars, children"),
            ))
        }
    };
    for (key, value) in body {
        match key_text(key).as_str() {
            "hosts" => {
                for (host, vars) in value.as_mapping().unwrap_or(&empty) {
                    let vars = mapping_vars(vars, &format!("host `{}`", key_text(host)))?;
                    for expanded in expand_hosts(&key_text(host)).map_err(|e| (None, e))? {
                        groups.add_host(name, &expanded, vars.clone());
                    }
                }
            }
            "vars" => {
                let vars = mapping_vars(value, &format!("group `{name}` vars"))?;
                groups.group(name).vars.extend(vars);
            }
            "children" => {
                for (child, child_body) in value.as_mapping().unwrap_or(&empty) {
                    let child = key_text(child);
                    yaml_group(groups, &child, child_body)?;
                    groups.group(name).children.insert(child);
                }
            }
            other => {
                return Err((
                    None,
                    format!(
                    "group `{name}`: unknown key `{other}` (a group has hosts, vars and children)"
                ),
                ))
            }
        }
    }
    Ok(())
}

fn mapping_vars(value: &Value, what: &str) -> Result<Vars, ParseError> {
    match value {
        Value::Null => Ok(Vars::new()),
        Value::Mapping(m) => Ok(m.iter().map(|(k, v)| (key_text(k), v.clone())).collect()),
        _ => Err((None, format!("{what}: expected a map of variables"))),
    }
}

fn parse_json(text: &str) -> Result<Groups, ParseError> {
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (Some(e.line()), format!("not JSON: {e}")))?;
    let top = root
        .as_object()
        .ok_or((None, "the `--list` JSON is an object of groups".to_string()))?;
    let mut groups = Groups::default();
    let to_yaml = |v: &serde_json::Value| serde_yaml::to_value(v).unwrap_or(Value::Null);
    for (name, body) in top {
        if name == "_meta" {
            continue;
        }
        groups.group(name);
        // Old scripts may give a group as a bare list of hosts.
        if let Some(hosts) = body.as_array() {
            for host in hosts.iter().filter_map(|h| h.as_str()) {
                groups.add_host(name, host, Vars::new());
            }
            continue;
        }
        for host in body["hosts"].as_array().into_iter().flatten() {
            if let Some(host) = host.as_str() {
                groups.add_host(name, host, Vars::new());
            }
        }
        for child in body["children"].as_array().into_iter().flatten() {
            if let Some(child) = child.as_str() {
                groups.group(child);
                groups.group(name).children.insert(child.to_string());
            }
        }
        if let Some(vars) = body["vars"].as_object() {
            let vars: Vars = vars.iter().map(|(k, v)| (k.clone(), to_yaml(v))).collect();
            groups.group(name).vars.extend(vars);
        }
    }
    if let Some(host_vars) = root["_meta"]["hostvars"].as_object() {
        for (host, vars) in host_vars {
            let vars: Vars = vars
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), to_yaml(v)))
                .collect();
            groups
                .host_vars
                .entry(host.clone())
                .or_default()
                .extend(vars);
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_ranges_strides_and_quoted_values() {
        let groups = parse_ini(
            "loose.example.net\n[mx_eu]\nmx[01:03].eu ansible_port=2222 motd=\"hi there\"\n[odd]\nw[1:5:2]\n[eu:children]\nmx_eu\n[eu:vars]\nqueue_max=20000\nflag=yes\n",
        )
        .unwrap();
        assert_eq!(groups.groups["ungrouped"].hosts.len(), 1);
        let mx: Vec<_> = groups.groups["mx_eu"].hosts.iter().cloned().collect();
        assert_eq!(mx, ["mx01.eu", "mx02.eu", "mx03.eu"]);
        let odd: Vec<_> = groups.groups["odd"].hosts.iter().cloned().collect();
        assert_eq!(odd, ["w1", "w3", "w5"]);
        assert_eq!(
            groups.host_vars["mx02.eu"]["ansible_port"],
            Value::from(2222)
        );
        assert_eq!(groups.host_vars["mx02.eu"]["motd"], Value::from("hi there"));
        assert!(groups.groups["eu"].children.contains("mx_eu"));
        assert_eq!(groups.groups["eu"].vars["queue_max"], Value::from(20000));
        assert_eq!(groups.groups["eu"].vars["flag"], Value::from("yes"));
    }

    #[test]
    fn ini_errors_name_the_line() {
        let (line, text) = parse_ini("[a]\nh1\n[a:weird]\n").unwrap_err();
        assert_eq!(line, Some(3));
        assert!(text.contains("unknown section kind `weird`"), "{text}");
        let (line, text) = parse_ini("[a]\nh1 x=\"open\n").unwrap_err();
        assert_eq!(line, Some(2));
        assert!(text.contains("quote"), "{text}");
    }

    #[test]
    fn yaml_and_json_give_the_same_groups() {
        let yaml = "all:\n  vars: { dc: x }\n  children:\n    eu:\n      children:\n        mx_eu:\n          hosts:\n            mx[1:2]: { ansible_host: 10.0.0.1 }\n";
        let json = r#"{"_meta":{"hostvars":{"mx1":{"ansible_host":"10.0.0.1"},"mx2":{"ansible_host":"10.0.0.1"}}},
            "all":{"children":["eu","ungrouped"],"vars":{"dc":"x"}},"eu":{"children":["mx_eu"]},"mx_eu":{"hosts":["mx1","mx2"]}}"#;
        for groups in [parse_yaml(yaml).unwrap(), parse_json(json).unwrap()] {
            assert!(groups.groups["all"].children.contains("eu"));
            assert!(groups.groups["eu"].children.contains("mx_eu"));
            assert_eq!(groups.groups["mx_eu"].hosts.len(), 2);
            assert_eq!(
                groups.host_vars["mx2"]["ansible_host"],
                Value::from("10.0.0.1")
            );
            assert_eq!(groups.groups["all"].vars["dc"], Value::from("x"));
        }
    }

    #[test]
    fn the_format_is_guessed_from_the_first_line() {
        assert_eq!(Format::guess("# c\n{\"all\":{}}"), Format::Json);
        assert_eq!(Format::guess("all:\n  hosts: {}"), Format::Yaml);
        assert_eq!(Format::guess("[web]\nh1"), Format::Ini);
    }
}
