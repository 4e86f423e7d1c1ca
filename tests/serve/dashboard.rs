//! `examples/grafana/`'s dashboards against a real scrape of `/metrics`: every metric
//! name their PromQL asks for is one the scrape exports.

/// Every metric name in the PromQL of `examples/grafana/`'s dashboards is one this
/// scrape has (a sample line's name: a histogram's `_bucket`, `_sum`, `_count`).
pub fn asks_only_for_exported_metrics(scrape: &str) {
    let exported: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let dir = crate::support::crate_root()
        .join("examples")
        .join("grafana");
    let mut asked = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        collect_exprs(&dashboard, &mut exprs);
        assert!(!exprs.is_empty(), "{}: no PromQL", path.display());
        for expr in exprs {
            asked.extend(promql_metric_names(&expr));
        }
    }
    assert!(asked.len() >= 4, "{asked:?}");
    for name in &asked {
        assert!(
            exported.contains(name.as_str()),
            "the dashboard asks for `{name}`, which /metrics does not export ({exported:?})"
        );
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.as_str()) {
                    ("expr", Some(expr)) => out.push(expr.to_string()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The metric names of a PromQL expression: its identifiers outside label matchers
/// (`{…}`), grouping lists (`by (…)`), strings and range selectors (`[5m]`), that are
/// neither functions (followed by `(`) nor keywords.
fn promql_metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 10] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let (mut names, mut i, mut skip_list) = (Vec::new(), 0, false);
    while i < chars.len() {
        let c = chars[i];
        if c == '{' || c == '[' || c == '"' {
            let close = match c {
                '{' => '}',
                '[' => ']',
                _ => '"',
            };
            i += 1 + chars[i + 1..].iter().position(|&d| d == close).unwrap();
        } else if c == '(' && skip_list {
            i += 1 + chars[i + 1..].iter().position(|&d| d == ')').unwrap();
            skip_list = false;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let rest: String = chars[i..].iter().collect();
            let rest = rest.trim_start();
            let next = rest.chars().next();
            // `sum by (…) (…)`: an aggregation with its grouping first.
            let grouped = ["by", "without"].iter().any(|k| {
                rest.strip_prefix(k)
                    .is_some_and(|r| r.trim_start().starts_with('('))
            });
            if grouped {
                continue;
            }
            if KEYWORDS.contains(&word.as_str()) {
                skip_list = matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
            } else if next != Some('(') {
                names.push(word);
            }
            continue;
        }
        i += 1;
    }
    names
}
