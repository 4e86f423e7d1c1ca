//! The pages of `pony serve`, rendered on the server: the list of runs (as `pony
//! history`) and a run's page, whose `<main>` the server re-renders as the journal grows
//! and sends over its event stream (the page's script swaps it in).

use super::view::{GateView, HostCounts, HostState, HostsView};
use crate::commands::status::Report;
use crate::state::runs::{self, RunState, RunSummary};
use std::fmt::Write;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body`; with `live`, the script that follows the run's events.
pub fn page(title: &str, body: &str, live: bool) -> String {
    let script = if live {
        format!("<script>{SCRIPT}</script>")
    } else {
        String::new()
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\
         <header><a href=\"/\">pony</a></header>\n{body}\n{script}</body></html>\n",
        escape(title)
    )
}

/// The list of runs, newest first.
pub fn index(summaries: &[RunSummary], place: &str) -> String {
    let mut body = format!(
        "<h1>Runs</h1><p class=\"muted\">under {}</p>\n",
        escape(place)
    );
    if summaries.is_empty() {
        body.push_str("<p id=\"no-runs\">no runs yet</p>");
        return page("pony runs", &body, false);
    }
    body.push_str(
        "<table id=\"runs\"><tr><th>run</th><th>playbook</th><th>inventory</th><th>who</th>\
         <th>when</th><th>duration</th><th>outcome</th></tr>\n",
    );
    let dash = || "-".to_string();
    for s in summaries {
        let duration = match (s.state, s.duration_ms) {
            (_, Some(ms)) => runs::format_duration(ms),
            (RunState::Running, None) => "running".into(),
            _ => dash(),
        };
        let _ = writeln!(
            body,
            "<tr class=\"run {state}\"><td><a href=\"/runs/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.playbook.clone().unwrap_or_else(dash)),
            escape(&s.inventory.clone().unwrap_or_else(dash)),
            escape(&s.who.clone().filter(|w| !w.is_empty()).unwrap_or_else(dash)),
            escape(&s.started.as_deref().map(runs::format_time).unwrap_or_else(dash)),
            escape(&duration),
            escape(&s.result),
            state = state_class(s.state),
            id = escape(&s.run_id),
        );
    }
    body.push_str("</table>");
    page("pony runs", &body, false)
}

fn state_class(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Finished => "finished",
        RunState::Stopped => "stopped",
        RunState::Unknown => "unknown",
    }
}

/// What a run page's buttons need: the CSRF token of the viewer who holds the token.
pub struct Buttons<'a> {
    pub csrf: &'a str,
}

/// The run page's `<main>` content: header, what it waits for, buttons (with `buttons`),
/// waves and gates, hosts per region and cluster, failures, commands from others.
pub fn run_main(
    report: &Report,
    hosts: Option<&HostsView>,
    plan_error: Option<&str>,
    buttons: Option<Buttons>,
) -> String {
    let run = report.run;
    let mut out = String::new();
    let dash = || "-".to_string();
    let _ = writeln!(
        out,
        "<h1>Run <span id=\"run-id\">{}</span></h1>\n<p class=\"summary\">{} on {} by {}, started {} \
         &middot; <b id=\"result\" class=\"{}\">{}</b></p>",
        escape(&run.run_id),
        escape(&run.playbook.clone().unwrap_or_else(dash)),
        escape(&run.inventory.clone().unwrap_or_else(dash)),
        escape(&run.who.clone().unwrap_or_else(dash)),
        escape(&run.started.as_deref().map(runs::format_time).unwrap_or_else(dash)),
        state_class(run.state),
        escape(&run.result),
    );
    if let Some(waiting) = &report.waiting {
        let _ = writeln!(
            out,
            "<p id=\"waiting\" class=\"waiting {}\">waits for {}</p>",
            escape(&waiting.reason),
            escape(&waiting.message)
        );
    }
    if let Some(eta) = &report.eta {
        let _ = writeln!(
            out,
            "<p id=\"eta\" data-left-ms=\"{}\" data-at=\"{}\">ETA: {}</p>",
            eta.left_ms,
            escape(eta.at.as_deref().unwrap_or("")),
            escape(&eta.words())
        );
    }
    if let (Some(buttons), true) = (buttons, run.state == RunState::Running) {
        out.push_str(&controls_form(report, hosts, &buttons));
    }
    match hosts {
        Some(hosts) => {
            out.push_str(&waves_table(hosts));
            out.push_str(&regions_table(hosts));
        }
        None => {
            let _ = writeln!(
                out,
                "<p class=\"problem\">the run's plan does not rebuild from its snapshot ({}): \
                 hosts are not counted</p>",
                escape(plan_error.unwrap_or("unknown"))
            );
        }
    }
    out.push_str(&failures(report));
    out.push_str(&commands(report));
    out
}

/// The gate buttons: approve (only when an approval gate waits), pause or continue,
/// abort, abort with rollback; each a form that POSTs with the CSRF token.
fn controls_form(report: &Report, hosts: Option<&HostsView>, buttons: &Buttons) -> String {
    let id = escape(&report.run.run_id);
    let csrf = escape(buttons.csrf);
    let form = |action: &str, wave: Option<&str>, label: &str, class: &str| {
        let wave = wave
            .map(|w| {
                format!(
                    "<input type=\"hidden\" name=\"wave\" value=\"{}\">",
                    escape(w)
                )
            })
            .unwrap_or_default();
        format!(
            "<form method=\"post\" action=\"/runs/{id}/control\" class=\"control\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">{wave}\
             <button id=\"{action}\" class=\"{class}\" type=\"submit\">{}</button></form>",
            escape(label)
        )
    };
    let mut out = String::from("<div id=\"controls\">");
    if let Some(wave) = hosts.and_then(|h| h.approvable.as_deref()) {
        out.push_str(&form(
            "approve",
            Some(wave),
            &format!("approve wave {wave}"),
            "go",
        ));
    }
    if report.run.paused.is_some() {
        out.push_str(&form("continue", None, "continue", "go"));
    } else {
        out.push_str(&form("pause", None, "pause", ""));
    }
    out.push_str(&form("abort", None, "abort", "stop"));
    out.push_str(&form("abort_rollback", None, "abort and roll back", "stop"));
    out.push_str("</div>\n");
    out
}

fn counts_cells(counts: &HostCounts) -> String {
    HostState::ALL
        .iter()
        .map(|&s| {
            let n = counts.get(s);
            let class = if n > 0 { s.name() } else { "zero" };
            format!(
                "<td class=\"n {class}\" data-state=\"{}\">{n}</td>",
                s.name()
            )
        })
        .collect()
}

fn state_headings() -> String {
    HostState::ALL
        .iter()
        .map(|s| format!("<th>{}</th>", s.words()))
        .collect()
}

fn waves_table(hosts: &HostsView) -> String {
    let mut out = format!(
        "<h2>Waves</h2><table id=\"waves\"><tr><th>wave</th><th>gate</th><th>hosts</th>{}</tr>\n",
        state_headings()
    );
    for wave in &hosts.waves {
        let gate = match &wave.gate {
            GateView::None => "-".to_string(),
            GateView::Passed => "passed".into(),
            GateView::Waiting(reason) => {
                format!("<b class=\"waiting\">waiting: {}</b>", escape(reason))
            }
            GateView::Stopped(reason) => {
                format!("<b class=\"failed\">stopped: {}</b>", escape(reason))
            }
            GateView::PreApproved => "pre-approved".into(),
            GateView::Ahead if wave.approve => "ahead (asks for approval)".into(),
            GateView::Ahead => "ahead".into(),
        };
        let _ = writeln!(
            out,
            "<tr class=\"wave\" data-wave=\"{name}\"><td>{name}</td><td>{gate}</td><td class=\"n\">{}</td>{}</tr>",
            wave.counts.total(),
            counts_cells(&wave.counts),
            name = escape(&wave.name),
        );
    }
    out.push_str("</table>\n");
    out
}

fn regions_table(hosts: &HostsView) -> String {
    let mut out = format!(
        "<h2>Hosts per region</h2><table id=\"regions\"><tr><th>region / cluster</th><th>hosts</th>{}</tr>\n",
        state_headings()
    );
    for region in &hosts.regions {
        let _ = writeln!(
            out,
            "<tr class=\"region\" data-region=\"{name}\"><td>{name}</td><td class=\"n\">{}</td>{}</tr>",
            region.counts.total(),
            counts_cells(&region.counts),
            name = escape(&region.name),
        );
        for (cluster, counts) in &region.clusters {
            let _ = writeln!(
                out,
                "<tr class=\"cluster\" data-cluster=\"{name}\"><td>&nbsp;&nbsp;{name}</td><td class=\"n\">{}</td>{}</tr>",
                counts.total(),
                counts_cells(counts),
                name = escape(cluster),
            );
        }
    }
    let _ = writeln!(
        out,
        "<tr class=\"total\"><td>all</td><td class=\"n\">{}</td>{}</tr></table>",
        hosts.total.total(),
        counts_cells(&hosts.total)
    );
    out
}

fn failures(report: &Report) -> String {
    if report.failed.is_empty() {
        return String::new();
    }
    let mut out = format!("<h2>Failures ({})</h2>\n", report.failed.len());
    for f in &report.failed {
        let rolled = match f.rolled_back {
            Some(true) => " &middot; rolled back",
            Some(false) => " &middot; <b>rollback failed</b>",
            None => "",
        };
        let _ = writeln!(
            out,
            "<div class=\"failure\"><p><b>{}</b> exit {}{}{rolled}</p><pre>{}</pre></div>",
            escape(f.label),
            f.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            f.error
                .map(|e| format!(": {}", escape(e)))
                .unwrap_or_default(),
            escape(f.output_tail),
        );
    }
    out
}

fn commands(report: &Report) -> String {
    let mut out = String::new();
    if let Some(paused) = &report.run.paused {
        let _ = writeln!(
            out,
            "<p id=\"paused\">paused by {} at {}</p>",
            escape(&paused.by),
            escape(&runs::format_time(&paused.time))
        );
    }
    if report.controls.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "<h2>Commands ({})</h2><table id=\"commands\"><tr><th>when</th><th>command</th><th>by</th><th>answer</th></tr>",
        report.controls.len()
    );
    for c in report.controls {
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.accepted { "accepted" } else { "refused" },
            escape(&runs::format_time(&c.time)),
            escape(&c.command),
            escape(&c.by),
            escape(&c.message),
        );
    }
    out.push_str("</table>\n");
    out
}

/// The run's timeline from its journal (drawn in the page) and, when one was kept, its
/// simulation's: the same drawing (`sim::svg`), one above the other on the same width.
/// The kept picture is a file of the state folder: it is shown as an image (served by
/// `/runs/ID/simulation.svg`), where no script of it could run, and is not sent again
/// with each update.
pub fn timelines(run_id: &str, real: Option<&str>, simulated: bool) -> String {
    let mut out = String::from("<h2>Timeline</h2><div id=\"timelines\">");
    if let Some(svg) = real {
        let _ = write!(
            out,
            "<figure id=\"timeline-real\"><figcaption>the run, from its journal</figcaption>{}</figure>",
            strip_prolog(svg)
        );
    }
    if simulated {
        let _ = write!(
            out,
            "<figure id=\"timeline-simulated\"><figcaption>its simulation \
             (<code>pony simulate --save</code> of the same playbook and inventory)</figcaption>\
             <img src=\"/runs/{}/simulation.svg\" alt=\"the simulated timeline\" width=\"1200\"></figure>",
            escape(run_id)
        );
    } else {
        out.push_str(
            "<p class=\"muted\" id=\"no-simulation\">no simulation kept for this run's files \
             (<code>pony simulate --save</code> keeps one)</p>",
        );
    }
    out.push_str("</div>\n");
    out
}

/// An SVG document as an element to put inside HTML (an XML prolog, if any, dropped).
fn strip_prolog(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |at| &svg[at..])
}
