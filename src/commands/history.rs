//! `pony history`: recent runs from the state directory, newest first.
//!
//! Human output is a table (id, playbook, inventory, who, when, duration, outcome);
//! `--output json` prints one JSON object per run per line ([`RunSummary`]).

use crate::exit::Exit;
use crate::report::OutputFormat;
use crate::settings::Settings;
use crate::state::backend::Access;
use crate::state::runs::{self, RunState, RunSummary};
use crate::state::store::Store;
use std::io::Write;

pub fn run(settings: &Settings, limit: usize) -> anyhow::Result<Exit> {
    let store = Store::open(&super::store_settings(settings), Access::Read)?;
    let ids = store.list().map_err(|e| {
        anyhow::anyhow!(
            "cannot read the runs under {}: {e}",
            store.place().display()
        )
    })?;
    let summaries: Vec<RunSummary> = ids
        .iter()
        .take(limit)
        .map(|id| store.read_summary(id).summary)
        .collect();
    let mut out = crate::term::Stdout;
    match settings.output {
        OutputFormat::Json => {
            for summary in &summaries {
                serde_json::to_writer(&mut out, summary)?;
                out.write_all(b"\n")?;
            }
        }
        OutputFormat::Human => {
            if summaries.is_empty() {
                writeln!(out, "no runs under {}", store.place().display())?;
                if let Some(note) = store.empty_note() {
                    writeln!(out, "note: {note}")?;
                }
            } else {
                out.write_all(table(&summaries).as_bytes())?;
                for s in &summaries {
                    if let Some(problem) = &s.journal_problem {
                        writeln!(out, "note: {}: {problem}", s.run_id)?;
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(Exit::Success)
}

/// The history table, one run per line.
pub fn table(summaries: &[RunSummary]) -> String {
    let unknown = || "-".to_string();
    let mut rows: Vec<[String; 7]> = vec![[
        "RUN".into(),
        "PLAYBOOK".into(),
        "INVENTORY".into(),
        "WHO".into(),
        "WHEN".into(),
        "DURATION".into(),
        "OUTCOME".into(),
    ]];
    for s in summaries {
        let duration = match (s.state, s.duration_ms) {
            (_, Some(ms)) => runs::format_duration(ms),
            (RunState::Running, None) => "running".into(),
            (RunState::Stopped, None) => "stopped".into(),
            _ => unknown(),
        };
        rows.push([
            s.run_id.clone(),
            s.playbook.clone().unwrap_or_else(unknown),
            s.inventory.clone().unwrap_or_else(unknown),
            s.who
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(unknown),
            s.started
                .as_deref()
                .map(runs::format_time)
                .unwrap_or_else(unknown),
            duration,
            s.result.clone(),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == 5 {
                line.push_str(&format!("{cell:>width$}  ", width = widths[i]));
            } else if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}
