//! Host patterns with Ansible's syntax and semantics: `all`, host or group names, shell
//! globs, unions with `:` or `,`, intersections `&x`, exclusions `!x`. A pattern, or any
//! term of it, that matches nothing is an error rather than a silent no-op. Ansible's
//! `~regex` terms are refused with the glob to use instead; names are case-sensitive, and
//! a name that differs only in case gets a suggestion.

use super::{HostId, Inventory};
use crate::diag::closest;
use std::fmt;

/// A parsed pattern, e.g. `mta:&cn-*:!mx-gz-99`.
#[derive(Debug, Clone)]
pub struct HostPattern {
    text: String,
    terms: Vec<Term>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Union,
    Intersect,
    Exclude,
}

#[derive(Debug, Clone)]
struct Term {
    op: Op,
    text: String,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    All,
    Name(String),
    Glob(glob::Pattern),
}

/// Why a pattern is unusable, with a suggestion where one is close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub pattern: String,
    pub problem: String,
    pub suggestion: Option<String>,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host pattern `{}`: {}", self.pattern, self.problem)
    }
}

/// A set of hosts as a membership vector over host ids (cheap to intersect at 10k hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSet {
    member: Vec<bool>,
}

impl HostSet {
    pub fn empty(size: usize) -> Self {
        HostSet {
            member: vec![false; size],
        }
    }

    pub fn full(size: usize) -> Self {
        HostSet {
            member: vec![true; size],
        }
    }

    pub fn contains(&self, host: HostId) -> bool {
        self.member.get(host).copied().unwrap_or(false)
    }

    pub fn insert(&mut self, host: HostId) {
        self.member[host] = true;
    }

    pub fn len(&self) -> usize {
        self.member.iter().filter(|m| **m).count()
    }

    pub fn is_empty(&self) -> bool {
        !self.member.iter().any(|m| *m)
    }

    pub fn iter(&self) -> impl Iterator<Item = HostId> + '_ {
        self.member
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(id, _)| id)
    }

    pub fn intersect(&mut self, other: &HostSet) {
        for (mine, theirs) in self.member.iter_mut().zip(&other.member) {
            *mine &= *theirs;
        }
    }

    pub fn union(&mut self, other: &HostSet) {
        for (mine, theirs) in self.member.iter_mut().zip(&other.member) {
            *mine |= *theirs;
        }
    }

    pub fn subtract(&mut self, other: &HostSet) {
        for (mine, theirs) in self.member.iter_mut().zip(&other.member) {
            *mine &= !*theirs;
        }
    }
}

/// The hosts `--limit` selects (every host without it), or the diagnostic to print.
pub fn select(
    inventory: &Inventory,
    limit: Option<&str>,
) -> Result<HostSet, crate::diag::Diagnostic> {
    let Some(limit) = limit else {
        return Ok(HostSet::full(inventory.hosts.len()));
    };
    HostPattern::parse(limit)
        .and_then(|p| p.resolve(inventory))
        .map_err(|e| {
            let d = crate::diag::Diagnostic::new(
                std::path::Path::new("--limit"),
                format!("{e} in inventory `{}`", inventory.name),
            );
            match e.suggestion {
                Some(s) => d.hint(format!("did you mean `{s}`?")),
                None => {
                    d.hint("use a host, region, cluster or role name, a glob, or `a:b`, `&a`, `!a`")
                }
            }
        })
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let fail = |problem: String| PatternError {
            pattern: text.to_string(),
            problem,
            suggestion: None,
        };
        // A regex may itself hold `:` or `,`, so it is recognised before the split.
        let regex_at = text
            .trim_start()
            .starts_with('~')
            .then_some(text.trim_start())
            .or_else(|| {
                [":~", ",~", "&~", "!~"]
                    .iter()
                    .filter_map(|sep| text.find(sep).map(|at| &text[at + 1..]))
                    .min_by_key(|rest| std::cmp::Reverse(rest.len()))
            });
        if let Some(regex) = regex_at {
            let regex = regex.trim_start_matches(['&', '!']);
            let regex = regex
                .split([':', ','])
                .next()
                .unwrap_or(regex)
                .trim_start_matches('~');
            return Err(PatternError {
                pattern: text.to_string(),
                problem: "regex patterns (`~…`) are not supported; use a shell glob (`*`, `?`, `[…]`) or a union of names (`a:b`)".into(),
                suggestion: regex_as_glob(regex),
            });
        }
        let mut terms = Vec::new();
        for raw in text.split([':', ',']).map(str::trim) {
            if raw.is_empty() {
                return Err(fail(
                    "has an empty term; separate names with `:` or `,`".into(),
                ));
            }
            let (op, name) = match raw.as_bytes()[0] {
                b'&' => (Op::Intersect, &raw[1..]),
                b'!' => (Op::Exclude, &raw[1..]),
                _ => (Op::Union, raw),
            };
            if name.is_empty() {
                return Err(fail(format!("`{raw}` has no name after the operator")));
            }
            let matcher = if name == "all" || name == "*" {
                Matcher::All
            } else if name.contains(['*', '?', '[']) {
                Matcher::Glob(
                    glob::Pattern::new(name)
                        .map_err(|e| fail(format!("bad glob `{name}`: {e}")))?,
                )
            } else {
                Matcher::Name(name.to_string())
            };
            terms.push(Term {
                op,
                text: name.to_string(),
                matcher,
            });
        }
        Ok(HostPattern {
            text: text.to_string(),
            terms,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The hosts the pattern selects. Ansible order: union of plain terms (or all hosts when
    /// there are none), then each `&` intersected, then each `!` removed.
    pub fn resolve(&self, inventory: &Inventory) -> Result<HostSet, PatternError> {
        let size = inventory.hosts.len();
        let mut unions = HostSet::empty(size);
        let mut any_union = false;
        let mut intersections = Vec::new();
        let mut exclusions = Vec::new();
        for term in &self.terms {
            let set = self.term_hosts(term, inventory)?;
            match term.op {
                Op::Union => {
                    any_union = true;
                    unions.union(&set);
                }
                Op::Intersect => intersections.push(set),
                Op::Exclude => exclusions.push(set),
            }
        }
        let mut result = if any_union {
            unions
        } else {
            HostSet::full(size)
        };
        for set in &intersections {
            result.intersect(set);
        }
        for set in &exclusions {
            result.subtract(set);
        }
        if result.is_empty() {
            return Err(PatternError {
                pattern: self.text.clone(),
                problem: "matches no host (its terms exclude each other)".into(),
                suggestion: None,
            });
        }
        Ok(result)
    }

    fn term_hosts(&self, term: &Term, inventory: &Inventory) -> Result<HostSet, PatternError> {
        let size = inventory.hosts.len();
        let mut set = HostSet::empty(size);
        match &term.matcher {
            Matcher::All => return Ok(HostSet::full(size)),
            Matcher::Name(name) => {
                if let Some(id) = inventory.host_id(name) {
                    set.insert(id);
                } else if let Some(hosts) = inventory.groups.get(name) {
                    hosts.iter().for_each(|&h| set.insert(h));
                }
            }
            Matcher::Glob(glob) => {
                for (id, host) in inventory.hosts.iter().enumerate() {
                    if glob.matches(&host.name) {
                        set.insert(id);
                    }
                }
                for (group, hosts) in &inventory.groups {
                    if glob.matches(group) {
                        hosts.iter().for_each(|&h| set.insert(h));
                    }
                }
            }
        }
        if set.is_empty() {
            // Names are case-sensitive (as in Ansible); `MX-GZ-01` is most likely `mx-gz-01`.
            let other_case = match &term.matcher {
                Matcher::Name(name) => inventory
                    .names()
                    .find(|n| n.eq_ignore_ascii_case(name))
                    .map(str::to_string),
                Matcher::Glob(glob) => {
                    let lower = term.text.to_lowercase();
                    let options = glob::MatchOptions {
                        case_sensitive: false,
                        ..Default::default()
                    };
                    inventory
                        .names()
                        .any(|n| glob.matches_with(n, options))
                        .then_some(lower)
                        .filter(|lower| {
                            glob::Pattern::new(lower)
                                .is_ok_and(|g| inventory.names().any(|n| g.matches(n)))
                        })
                }
                Matcher::All => None,
            };
            let problem = match other_case {
                Some(_) => format!(
                    "`{}` matches no host or group (names are case-sensitive)",
                    term.text
                ),
                None => format!("`{}` matches no host or group", term.text),
            };
            return Err(PatternError {
                pattern: self.text.clone(),
                problem,
                suggestion: other_case
                    .or_else(|| closest(&term.text, inventory.names()).map(str::to_string)),
            });
        }
        Ok(set)
    }
}

/// The glob for a regex that is only literals, `.` and `.*` (`^mx-gz-.*$` → `mx-gz-*`);
/// `None` for anything a glob cannot say (alternation, classes, repetition).
fn regex_as_glob(regex: &str) -> Option<String> {
    let body = regex.strip_prefix('^').unwrap_or(regex);
    let body = body.strip_suffix('$').unwrap_or(body);
    let mut glob = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' if chars.peek() == Some(&'*') => {
                chars.next();
                glob.push('*');
            }
            '.' if chars.peek() == Some(&'+') => {
                chars.next();
                glob.push_str("?*");
            }
            '.' => glob.push('?'),
            '\\' => match chars.next() {
                Some(escaped @ ('.' | '-' | '_')) => glob.push(escaped),
                _ => return None,
            },
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => glob.push(c),
            _ => return None,
        }
    }
    // Ansible's regexes match anywhere in the name, unless anchored.
    if !regex.starts_with('^') && !glob.starts_with('*') {
        glob.insert(0, '*');
    }
    if !regex.ends_with('$') && !glob.ends_with('*') {
        glob.push('*');
    }
    (!glob.is_empty()).then_some(glob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn inventory() -> Inventory {
        crate::inventory::parse(
            Path::new("t.yaml"),
            r#"
name: t
regions:
  cn-south:
    clusters:
      gz-mx-1: { roles: [mta], hosts: { "mx-gz-[01:04]": , mx-gz-99: { roles: [canary] } } }
      gz-st-1: { roles: [store], hosts: { "st-gz-[1:2]": } }
  cn-north:
    clusters:
      bj-mx-1: { roles: [mta], hosts: { "mx-bj-[1:3]": } }
  eu-west:
    clusters:
      ams-mx-1: { roles: [mta, imap], hosts: { "mx-ams-[1:2]": } }
"#,
        )
        .unwrap()
    }

    fn names(inv: &Inventory, pattern: &str) -> Vec<String> {
        let set = HostPattern::parse(pattern).unwrap().resolve(inv).unwrap();
        set.iter().map(|h| inv.hosts[h].name.clone()).collect()
    }

    #[test]
    fn all_names_groups_globs() {
        let inv = inventory();
        assert_eq!(names(&inv, "all").len(), 12);
        assert_eq!(names(&inv, "mx-gz-02"), vec!["mx-gz-02"]);
        assert_eq!(names(&inv, "store"), vec!["st-gz-1", "st-gz-2"]);
        assert_eq!(
            names(&inv, "mx-bj-*"),
            vec!["mx-bj-1", "mx-bj-2", "mx-bj-3"]
        );
        assert_eq!(names(&inv, "cn-*").len(), 10);
    }

    #[test]
    fn union_intersection_exclusion() {
        let inv = inventory();
        assert_eq!(
            names(&inv, "store,mx-ams-1"),
            vec!["st-gz-1", "st-gz-2", "mx-ams-1"]
        );
        assert_eq!(names(&inv, "store:mx-ams-1"), names(&inv, "store,mx-ams-1"));
        assert_eq!(names(&inv, "mta:&cn-*:!mx-gz-99").len(), 7);
        assert_eq!(names(&inv, "mta:&imap"), vec!["mx-ams-1", "mx-ams-2"]);
        assert_eq!(names(&inv, "!cn-*"), vec!["mx-ams-1", "mx-ams-2"]);
        assert_eq!(names(&inv, "canary"), vec!["mx-gz-99"]);
    }

    #[test]
    fn nothing_matched_is_an_error_with_suggestion() {
        let inv = inventory();
        let err = HostPattern::parse("mtaa")
            .unwrap()
            .resolve(&inv)
            .unwrap_err();
        assert!(err.problem.contains("matches no host or group"));
        assert_eq!(err.suggestion.as_deref(), Some("mta"));
        let err = HostPattern::parse("store:&eu-west")
            .unwrap()
            .resolve(&inv)
            .unwrap_err();
        assert!(err.problem.contains("matches no host"));
        assert!(HostPattern::parse("mta::store").is_err());
        assert!(HostPattern::parse("mta:!").is_err());
    }

    #[test]
    fn regex_is_refused_with_the_glob_to_use() {
        for (pattern, glob) in [
            ("~mx-gz-.*", Some("*mx-gz-*")),
            ("~^mx-gz-.*$", Some("mx-gz-*")),
            ("mta:&~^cn-.*", Some("cn-*")),
            ("~(mx|st)-gz-\\d+", None),
            ("~^mx\\.gz$", Some("mx.gz")),
        ] {
            let err = HostPattern::parse(pattern).unwrap_err();
            assert!(
                err.problem
                    .contains("regex patterns (`~…`) are not supported")
                    && err.problem.contains("glob"),
                "{pattern}: {err}"
            );
            assert_eq!(err.suggestion.as_deref(), glob, "{pattern}");
        }
        // A glob suggested for a regex selects what the regex meant.
        let inv = inventory();
        assert_eq!(
            names(&inv, "mx-bj-*"),
            vec!["mx-bj-1", "mx-bj-2", "mx-bj-3"]
        );
    }

    #[test]
    fn other_case_gets_a_suggestion() {
        let inv = inventory();
        for (pattern, suggestion) in [
            ("MX-GZ-01", "mx-gz-01"),
            ("Store", "store"),
            ("mta:&CN-*", "cn-*"),
            ("EU-WEST", "eu-west"),
        ] {
            let err = HostPattern::parse(pattern)
                .unwrap()
                .resolve(&inv)
                .unwrap_err();
            assert!(err.problem.contains("case-sensitive"), "{pattern}: {err}");
            assert_eq!(err.suggestion.as_deref(), Some(suggestion), "{pattern}");
        }
        let err = HostPattern::parse("nothing-like-it")
            .unwrap()
            .resolve(&inv)
            .unwrap_err();
        assert!(!err.problem.contains("case-sensitive"), "{err}");
    }
}
