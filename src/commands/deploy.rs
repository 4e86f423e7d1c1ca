//! `pony deploy`: validate, confirm, then run the plan (or print it with `--dry-run`).

use super::load_plan;
use crate::cli::{DeployArgs, GlobalOptions};
use crate::diag::{closest, Diagnostic, Diagnostics};
use crate::events::Event;
use crate::exec::hosts::HostPool;
use crate::exec::{self, task, ExecOptions};
use crate::exit::Exit;
use crate::plan::{Node, Plan};
use crate::secret::Redactor;
use crate::state::journal::{Journal, Record};
use crate::state::run_dir::RunDir;
use crate::transport::ssh::SshOptions;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

pub fn run(global: &GlobalOptions, args: &DeployArgs) -> anyhow::Result<Exit> {
    let plan = load_plan(&args.plan)?;
    check_approvals(&plan, &args.approve)?;
    let redactor = redactor(&plan, args);
    if args.dry_run {
        print!("{}", dry_run(&plan, &redactor));
        return Ok(Exit::Success);
    }
    if !args.yes && !confirm(&plan)? {
        eprintln!("nothing deployed");
        return Ok(Exit::Invalid);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(execute(global, args, plan, redactor))
}

fn check_approvals(plan: &Plan, approvals: &[String]) -> Result<(), Diagnostics> {
    let mut errors = Diagnostics::default();
    let names: Vec<&str> = plan.waves.iter().map(|w| w.name.as_str()).collect();
    for wave in approvals {
        if !names.contains(&wave.as_str()) {
            let d = Diagnostic::new(
                Path::new("--approve"),
                format!("no wave `{wave}` in playbook `{}`", plan.playbook.name),
            );
            errors.push(match closest(wave, names.iter().copied()) {
                Some(best) => d.hint(format!("did you mean `{best}`?")),
                None => d.hint(format!("waves are: {}", names.join(", "))),
            });
        }
    }
    errors.into_result(())
}

fn redactor(plan: &Plan, args: &DeployArgs) -> Redactor {
    let hosts = plan.inventory.hosts.iter().map(|h| &h.vars);
    let extra = super::extra_vars(&args.plan);
    Redactor::new(
        std::iter::once(&plan.playbook.vars)
            .chain(hosts)
            .chain(std::iter::once(&extra)),
        args.plan.secret_vars.iter().map(|(_, v)| v.clone()),
    )
}

/// Without `--yes` a terminal is asked once, with the plan summary; anything else refuses.
fn confirm(plan: &Plan) -> Result<bool, Diagnostics> {
    if !std::io::stdin().is_terminal() {
        return Err(Diagnostic::new(
            &plan.playbook.file,
            "refusing to deploy without confirmation: stdin is not a terminal",
        )
        .hint("pass --yes (or set PONY_YES=1) to deploy from CI or scripts")
        .into());
    }
    eprint!("{}", super::plan::describe(plan, false));
    eprint!(
        "\nDeploy {} to {} hosts of {}? [y/N] ",
        plan.playbook.name,
        plan.host_count(),
        plan.inventory.name
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Every command per host in graph order, rendered; nothing is contacted.
pub fn dry_run(plan: &Plan, redactor: &Redactor) -> String {
    let mut out = String::new();
    let captures_note = "(captured at run time)";
    for &node in plan.topological_order() {
        match &plan.graph[node] {
            Node::Gate(w) => {
                let spec = &plan.playbook.strategy.waves[*w];
                out.push_str(&format!(
                    "# end of wave {}{}{}\n",
                    spec.name,
                    spec.pause
                        .map(|p| format!(", pause {}", humantime::format_duration(p)))
                        .unwrap_or_default(),
                    if spec.approve { ", approve" } else { "" }
                ));
            }
            Node::Join { .. } => {}
            Node::Task(t) => {
                let step = &plan.playbook.steps[t.step];
                let mut placeholders = crate::inventory::Vars::new();
                for s in &plan.playbook.steps {
                    if let Some(name) = &s.capture {
                        placeholders.insert(name.clone(), captures_note.into());
                    }
                }
                let ctx = task::context(plan, t, "DRY-RUN", &placeholders);
                let line = match task::render_task(plan, step, &ctx) {
                    Ok(spec) => {
                        let mut text = spec.action.describe();
                        if let Some(c) = &spec.creates {
                            text = format!("[creates {c}] {text}");
                        }
                        if let Some(u) = &spec.unless {
                            text = format!("[unless {u}] {text}");
                        }
                        text
                    }
                    Err(e) => format!("!! {e}"),
                };
                out.push_str(&format!(
                    "{}  {}\n",
                    plan.label(node),
                    redactor.redact(&line).replace('\n', "\n    ")
                ));
            }
        }
    }
    out
}

async fn execute(
    global: &GlobalOptions,
    args: &DeployArgs,
    plan: Plan,
    redactor: Redactor,
) -> anyhow::Result<Exit> {
    let plan = Arc::new(plan);
    let vars_snapshot = serde_json::json!({
        "vars": args.plan.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "secret_vars": args.plan.secret_vars.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "limit": args.plan.limit,
    });
    let run_dir = RunDir::create(
        &global.state_dir,
        &args.plan.inventory,
        &args.plan.playbook,
        &vars_snapshot,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot create the run folder under {}: {e}",
            global.state_dir.display()
        )
    })?;
    let journal = Journal::create(&run_dir.journal_path())?;
    journal
        .write(&Record::RunStarted {
            run_id: run_dir.id.clone(),
            playbook: plan.playbook.name.clone(),
            inventory: plan.inventory.name.clone(),
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            pid: std::process::id(),
            user: std::env::var("USER").unwrap_or_default(),
            host: hostname(),
        })
        .await;
    let ssh = SshOptions::new(&global.state_dir, args.accept_new_host_keys);
    let pool = HostPool::new(plan.clone(), ssh, global.state_dir.join("hosts")).prepare();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let reporters = crate::report::for_run(global);
    let reporting = tokio::spawn(crate::report::drive(receiver, reporters));
    let _ = sender.send(Event::RunStarted {
        run_id: run_dir.id.clone(),
        playbook: plan.playbook.name.clone(),
        inventory: plan.inventory.name.clone(),
        hosts: plan.host_count(),
        tasks: plan.task_count(),
        waves: plan.waves.iter().map(|w| w.name.clone()).collect(),
        regions: region_sizes(&plan),
    });
    let interrupts = watch_signals();
    let options = ExecOptions {
        run_dir: run_dir.clone(),
        journal: journal.clone(),
        redactor,
        approvals: args.approve.clone(),
        connections: global
            .connections
            .unwrap_or(plan.playbook.strategy.connections),
        interrupts,
    };
    let report = exec::run(plan.clone(), pool, options, sender).await;
    journal.close().await;
    let _ = reporting.await;
    Ok(report.exit)
}

/// Counts SIGINT/SIGTERM: the executor stops starting tasks at 1 and kills at 2.
fn watch_signals() -> tokio::sync::watch::Receiver<u32> {
    let (sender, receiver) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            count += 1;
            if sender.send(count).is_err() {
                return;
            }
        }
    });
    receiver
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Hosts per region taking part in the run, in inventory order.
pub fn region_sizes(plan: &Plan) -> Vec<(String, usize)> {
    let mut sizes = vec![0usize; plan.inventory.regions.len()];
    for wave in &plan.waves {
        for &host in &wave.hosts {
            sizes[plan.inventory.hosts[host].region] += 1;
        }
    }
    plan.inventory
        .regions
        .iter()
        .zip(sizes)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.name.clone(), n))
        .collect()
}
