//! The module graph has no import circle (docs/architecture.md, "Layers").
//!
//! For every module, the modules directly inside it form a graph: an edge A → B when a file
//! under A names `crate::…`, `super::…` or `self::…` paths that land under B, outside
//! comments and `#[cfg(test)]` modules. Items of the parent itself (its `mod.rs`) are not a
//! child, so `use super::Thing` is free. Each such graph must be acyclic: at the top, the
//! layers of docs/architecture.md; inside `exec/`, `plan/`, `state/`… the same rule again.
//! This reads the source as text, so it also catches a circle added by a `pub use`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let relative = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: ModPath = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The text without comments (so doc links don't count) and without the test module
/// that conventionally closes a file.
fn code_of(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    for line in text.lines() {
        let line = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    if let Some(at) = find_test_module(&code) {
        code.truncate(at);
    }
    code
}

fn find_test_module(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]") {
        let start = from + at;
        let rest = code[start + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod ") || rest.starts_with("pub mod ") {
            return Some(start);
        }
        from = start + 1;
    }
    None
}

/// Every path the code names from `crate`, `super` or `self`, with use-trees expanded.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            let boundary = start == 0 || {
                let before = bytes[start - 1] as char;
                !(before.is_alphanumeric() || before == '_' || before == ':')
            };
            if !boundary {
                continue;
            }
            let end = path_end(code, start);
            let text: String = code[start..end]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            paths.extend(expand(&text));
        }
    }
    paths
}

/// Where a path (with an optional braced use-tree) that starts at `start` ends.
fn path_end(code: &str, start: usize) -> usize {
    let mut depth = 0usize;
    for (offset, c) in code[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return start + offset,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return start + offset + 1;
                }
            }
            c if depth > 0 => {
                let _ = c;
            }
            c if c.is_alphanumeric() || c == '_' || c == ':' => {}
            _ => return start + offset,
        }
    }
    code.len()
}

fn expand(text: &str) -> Vec<Vec<String>> {
    let Some(open) = text.find('{') else {
        return vec![segments(text)];
    };
    let prefix = segments(text[..open].trim_end_matches(':'));
    let inner = text[open + 1..]
        .strip_suffix('}')
        .unwrap_or(&text[open + 1..]);
    let mut parts = Vec::new();
    let (mut depth, mut current) = (0usize, String::new());
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            _ => current.push(c),
        }
    }
    parts.push(current);
    let mut out = Vec::new();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if part == "self" {
            out.push(prefix.clone());
            continue;
        }
        for tail in expand(part) {
            out.push(prefix.iter().cloned().chain(tail).collect());
        }
    }
    out
}

fn segments(text: &str) -> Vec<String> {
    text.split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The deepest module a path names, given the modules that exist.
fn resolve(from: &ModPath, path: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let (mut current, rest): (ModPath, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.clone(), &path[1..]),
        Some("super") => {
            let mut base = from.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        _ => return None,
    };
    for segment in rest {
        let mut deeper = current.clone();
        deeper.push(segment.clone());
        if !modules.contains(&deeper) {
            break;
        }
        current = deeper;
    }
    Some(current)
}

type Edges = BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>>;

fn circles(edges: &Edges) -> Vec<Vec<ModPath>> {
    // Tarjan's strongly connected components; a component of two or more is a circle.
    struct Walk<'a> {
        edges: &'a Edges,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, node: &ModPath) {
            let n = self.index.len();
            self.index.insert(node.clone(), n);
            self.low.insert(node.clone(), n);
            self.stack.push(node.clone());
            let targets: Vec<ModPath> = self
                .edges
                .get(node)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            for target in targets {
                if !self.index.contains_key(&target) {
                    self.visit(&target);
                    let low = self.low[node].min(self.low[&target]);
                    self.low.insert(node.clone(), low);
                } else if self.stack.contains(&target) {
                    let low = self.low[node].min(self.index[&target]);
                    self.low.insert(node.clone(), low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    let done = &top == node;
                    component.push(top);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !walk.index.contains_key(node) {
            walk.visit(node);
        }
    }
    walk.found
}

fn import_edges(src: &Path) -> Edges {
    let mut files = Vec::new();
    source_files(src, &mut files);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges = Edges::new();
    for file in &files {
        let from = module_of(src, file);
        let code = code_of(&std::fs::read_to_string(file).expect("read source"));
        for path in named_paths(&code) {
            let Some(to) = resolve(&from, &path, &modules) else {
                continue;
            };
            let shared = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if shared < from.len() && shared < to.len() {
                let (a, b) = (from[..=shared].to_vec(), to[..=shared].to_vec());
                let shown = file.strip_prefix(src).unwrap_or(file).display().to_string();
                edges
                    .entry(a)
                    .or_default()
                    .entry(b)
                    .or_default()
                    .insert(shown);
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = import_edges(&src);
    assert!(
        edges.len() > 10,
        "the import reader found almost no edges in {}: it is broken",
        src.display()
    );
    let found = circles(&edges);
    let mut report = String::new();
    for circle in &found {
        let names: Vec<String> = circle.iter().map(|m| m.join("::")).collect();
        report.push_str(&format!("circle: {}\n", names.join(", ")));
        for a in circle {
            for (b, files) in &edges[a] {
                if circle.contains(b) {
                    let files: Vec<&String> = files.iter().collect();
                    report.push_str(&format!(
                        "  {} -> {}  ({:?})\n",
                        a.join("::"),
                        b.join("::"),
                        files
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "import circles in src/ (docs/architecture.md, Layers):\n{report}"
    );
}

#[test]
fn the_reader_sees_a_circle_it_is_shown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a; mod b; mod c;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "use crate::{b::Thing, c};\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "// use crate::c is only a comment\npub use crate::a::Other;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub struct C;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    let edges = import_edges(src);
    let found = circles(&edges);
    let names: Vec<Vec<String>> = found
        .iter()
        .map(|c| c.iter().map(|m| m.join("::")).collect())
        .collect();
    assert_eq!(names, vec![vec!["a".to_string(), "b".to_string()]]);
}
