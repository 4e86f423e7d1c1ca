//! Where the time of planning goes at scale, phase by phase and in-process: parsing the
//! inventory, parsing the playbook, building (and validating) the plan, the critical path,
//! and drawing the task graph. Same shape as `scripts/bench-plan` (10 regions x 2 clusters
//! x 500 hosts, a 10-step playbook, three waves); prints figures, asserts nothing.
//!
//!   cargo bench --bench plan_scale               # 10,000 hosts
//!   PONY_BENCH_HOSTS=1000 cargo bench --bench plan_scale   # 500 -> 1000 hosts per cluster

use pony::plan::render::{render, GraphFormat, Level};
use pony::plan::{build, PlanOptions};
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const REGIONS: usize = 10;
const CLUSTERS: usize = 2;
const RUNS: usize = 5;

const PLAYBOOK: &str = r#"
name: bench-rollout
vars: { version: "2.4.1", schema_version: "47", drain_wait_seconds: 600 }
strategy:
  waves:
    - { name: canary, regions: [cn-r1], hosts: canary, pause: 1m }
    - { name: china, regions: ["cn-*"] }
    - { name: world, regions: ["*"] }
  max_unavailable: 25%
  max_failures: 1%
  on_failure: rollback-region
steps:
  - name: stage
    run: mkdir -p {{ mail_root | quote }}/releases/{{ version | quote }}
    creates: "{{ mail_root }}/releases/{{ version }}"
    rollback: rm -rf {{ mail_root | quote }}/releases/{{ version | quote }}
    estimate: 20s
  - name: previous
    run: readlink {{ mail_root | quote }}/current || true
    capture: previous
    estimate: 1s
  - name: drain
    needs: [stage, previous]
    run: '{% if "mta" in host.roles %}postqueue -f; sleep {{ drain_wait_seconds }}{% else %}true{% endif %}'
    estimate: 30s
  - name: drain-imap
    needs: [stage, previous]
    run: echo {{ host.name }} {{ host.region }}
    estimate: 10s
  - name: switch
    needs: [drain, drain-imap]
    run: ln -sfn releases/{{ version }} {{ mail_root }}/current
    rollback: ln -sfn {{ previous }} {{ mail_root }}/current
    estimate: 1s
  - name: restart
    needs: [switch]
    run: systemctl restart postfix dovecot
    estimate: 10s
  - name: health
    needs: [restart]
    run: printf 'QUIT\r\n' | nc -w 3 127.0.0.1 25 | grep -q '^220'
    until: { retries: 10, delay: 3s }
    estimate: 2s
  - name: migrate-schema
    hosts: store
    per: region
    needs: [switch]
    run: echo migrate {{ schema_version }} in {{ host.region }}
    estimate: 30s
  - name: smtp-up
    hosts: mta
    needs: [health]
    probe: { smtp: { port: 25, starttls: true } }
    until: { retries: 20, delay: 3s }
    estimate: 2s
  - name: announce
    hosts: mta
    per: region
    needs: [health]
    run: echo "{{ playbook.name }} {{ version }} done in {{ host.region }}"
    estimate: 1s
"#;

/// Hosts `prefix-[first:last]` in blocks of 200, one /24 each, addresses in step.
fn blocks(
    out: &mut String,
    prefix: &str,
    first: usize,
    last: usize,
    net: (usize, usize),
    extra: &str,
) {
    let width = last.to_string().len().max(3);
    let mut start = first;
    while start <= last {
        let end = (start + 199).min(last);
        let subnet = net.1 + (start - first) / 200;
        writeln!(
            out,
            "          {prefix}-[{start:0width$}:{end:0width$}]: {{ {extra}address: \"10.{}.{subnet}.[11:{}]\" }}",
            net.0,
            end - start + 11
        )
        .unwrap();
        start = end + 1;
    }
}

fn inventory_text(hosts: usize) -> String {
    let mut out = String::from(
        "name: bench\ndefaults:\n  connection: ssh\n  ssh: { user: deploy, port: 22 }\n  vars: { mail_root: /srv/mail }\nregions:\n",
    );
    for r in 1..=REGIONS {
        let region = if r <= 3 {
            format!("cn-r{r}")
        } else {
            format!("ww-r{r}")
        };
        writeln!(out, "  {region}:\n    vars: {{ region_index: {r} }}\n    ssh: {{ jump: bastion.{region}.example.net }}\n    clusters:").unwrap();
        for c in 1..=CLUSTERS {
            if c % 2 == 1 {
                writeln!(
                    out,
                    "      s{r}-mx-{c}:\n        roles: [mta]\n        hosts:"
                )
                .unwrap();
                let mut first = 1;
                if r == 1 && c == 1 {
                    writeln!(
                        out,
                        "          mx-s1-canary: {{ roles: [canary], address: 10.1.255.1 }}"
                    )
                    .unwrap();
                    first = 2;
                }
                blocks(
                    &mut out,
                    &format!("mx-s{r}-c{c}"),
                    first,
                    hosts,
                    (r, c * 16),
                    "",
                );
            } else {
                writeln!(out, "      s{r}-mbox-{c}:\n        hosts:").unwrap();
                let half = hosts / 2;
                blocks(
                    &mut out,
                    &format!("imap-s{r}-c{c}"),
                    1,
                    half,
                    (r, c * 16),
                    "roles: [imap], ",
                );
                blocks(
                    &mut out,
                    &format!("store-s{r}-c{c}"),
                    half + 1,
                    hosts,
                    (r, c * 16 + 8),
                    "roles: [store], ",
                );
            }
        }
    }
    out
}

/// Peak resident memory of this process so far (Linux), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let hosts: usize = std::env::var("PONY_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let text = inventory_text(hosts);
    let (inv_path, pb_path) = (
        Path::new("bench-inventory.yaml"),
        Path::new("bench-playbook.yaml"),
    );
    let mut phases: Vec<(&str, Vec<Duration>)> = [
        "parse inventory",
        "parse playbook",
        "build plan",
        "critical path",
        "render json --tasks",
    ]
    .into_iter()
    .map(|p| (p, Vec::new()))
    .collect();
    let mut summary = String::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let inventory = pony::inventory::parse(inv_path, &text).unwrap_or_else(|e| panic!("{e}"));
        phases[0].1.push(t.elapsed());
        let t = Instant::now();
        let playbook = pony::playbook::parse(pb_path, PLAYBOOK).unwrap_or_else(|e| panic!("{e}"));
        phases[1].1.push(t.elapsed());
        let t = Instant::now();
        let plan = build(
            Arc::new(inventory),
            Arc::new(playbook),
            &PlanOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        phases[2].1.push(t.elapsed());
        let t = Instant::now();
        let path = plan.critical_path(|n| plan.estimated_duration(n));
        phases[3].1.push(t.elapsed());
        let t = Instant::now();
        let json = render(&plan, GraphFormat::Json, Level::Tasks);
        phases[4].1.push(t.elapsed());
        summary = format!(
            "{} hosts, {} steps, {} tasks, {} graph nodes, {} edges; critical path {} tasks; task graph JSON {:.1} MB",
            plan.host_count(),
            plan.playbook.steps.len(),
            plan.task_count(),
            plan.graph.node_count(),
            plan.graph.edge_count(),
            path.tasks,
            json.len() as f64 / 1e6
        );
    }
    println!("plan_scale: {REGIONS} regions x {CLUSTERS} clusters x {hosts} hosts; median of {RUNS} runs");
    println!("  {summary}");
    let mut total = Duration::ZERO;
    for (name, samples) in phases {
        let m = median(samples);
        if ["parse inventory", "parse playbook", "build plan"].contains(&name) {
            total += m;
        }
        println!("  {name:<20} {:>9.1} ms", m.as_secs_f64() * 1e3);
    }
    println!(
        "  {:<20} {:>9.1} ms   (what `pony check` does; target 2 s)",
        "check total",
        total.as_secs_f64() * 1e3
    );
    if let Some(mb) = peak_rss_mb() {
        println!(
            "  peak RSS             {mb:>9.1} MB   (whole bench, {RUNS} plans; target 500 MB)"
        );
    }
}
