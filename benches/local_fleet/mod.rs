//! What the database benches (`state_pg`, `regions`) share: an inventory of
//! `connection: local` hosts (20 per region: 2 clusters of 10), a chain of `true` steps,
//! the pony binary they run, medians, and their temp folder removed at the end.

use std::fmt::Write as _;
use std::path::PathBuf;

/// `regions` regions of 20 local hosts each, named `r1c1h01` and so on.
pub fn inventory(name: &str, regions: usize) -> String {
    let mut text = format!("name: {name}\ndefaults: {{ connection: local }}\nregions:\n");
    for r in 1..=regions {
        let _ = writeln!(text, "  r{r}:\n    clusters:");
        for c in 1..=2 {
            let _ = writeln!(text, "      r{r}c{c}:\n        hosts:");
            for h in 1..=10 {
                let _ = writeln!(text, "          r{r}c{c}h{h:02}: {{}}");
            }
        }
    }
    text
}

/// `steps` lines `- { name: sN, run: "true", needs: [sN-1] }`, for a playbook's `steps:`.
pub fn chained_steps(steps: usize) -> String {
    let mut text = String::new();
    for s in 1..=steps {
        let needs = if s == 1 {
            String::new()
        } else {
            format!(", needs: [s{}]", s - 1)
        };
        let _ = writeln!(text, "  - {{ name: s{s}, run: \"true\"{needs} }}");
    }
    text
}

/// `PONY_BIN`, else the release build.
pub fn pony_binary() -> PathBuf {
    std::env::var_os("PONY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/pony"))
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Removes the bench's folder when it ends, also on error.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
