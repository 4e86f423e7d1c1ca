//! The command line, as clap derive types only; `app` turns them into work.

mod inventory;
pub mod serve;
mod simulate;
mod values;
mod vault;

pub use inventory::InventoryAction;
pub use simulate::SimulateArgs;
pub use values::MAX_CONTROLLER_NAME;
use values::{parse_controller, parse_regions};
pub use vault::{VaultAction, VaultArgs, VaultKeyOptions};

use crate::plan::render::GraphFormat;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pony",
    version,
    about = "Roll out a global mail system: playbook + inventory → task graph → parallel rollout over SSH, with rollback",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes; `app` resolves them, with each command's own, into
/// [`crate::settings::Settings`] once, and nothing changes them after parsing.
#[derive(Debug, Args, Clone)]
pub struct GlobalOptions {
    /// Where runs, journals, logs, locks and local hosts' directories live.
    #[arg(long, global = true, env = "PONY_STATE_DIR", default_value = ".pony")]
    pub state_dir: PathBuf,
    /// Keep runs, journals and locks in PostgreSQL (postgres://USER@HOST/DB[?schema=NAME])
    /// instead of the state folder, so any machine that reaches it can see, resume and
    /// roll back a run; the state folder then keeps this machine's copy.
    #[arg(long, global = true, env = "PONY_STATE", value_name = "URL")]
    pub state: Option<String>,
    /// With --state postgres://…: how long an inventory's lease lasts without its
    /// holder's heartbeat (renewed every third of it); a dead holder is known by expiry.
    #[arg(long, global = true, env = "PONY_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub lease: std::time::Duration,
    /// human: progress and summary; json: one event per line on stdout.
    #[arg(long, global = true, env = "PONY_OUTPUT", value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Colour in human output (NO_COLOR is honoured by auto).
    #[arg(long, global = true, env = "PONY_COLOR", value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// More log lines (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and the final summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(flatten)]
    pub vault: VaultKeyOptions,
}

/// What a command that runs a plan (deploy, resume, rollback) also takes.
#[derive(Debug, Args, Clone, Default)]
pub struct RunOptions {
    /// Write a JUnit XML report when the run ends (one suite per region, one case per host).
    #[arg(long, env = "PONY_JUNIT", value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Hosts worked on at once over the whole run (overrides strategy.connections).
    #[arg(long, env = "PONY_CONNECTIONS", value_name = "N")]
    pub connections: Option<usize>,
    /// How many hosts of a cluster roll back at once (overrides strategy.rollback.pace):
    /// `window` holds one of the cluster's max_unavailable slots per host, `all` takes
    /// every host of the rollback at once.
    #[arg(long, env = "PONY_ROLLBACK_PACE", value_enum, value_name = "PACE")]
    pub rollback_pace: Option<PaceChoice>,
    /// Without a terminal (CI), an `approve:` gate waits this long for `pony approve RUN
    /// WAVE` from another shell before the run stops there with exit 10 (default: stop at
    /// once). With a terminal the question waits for an answer either way.
    #[arg(long, env = "PONY_APPROVAL_WAIT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub approval_wait: Option<std::time::Duration>,
    /// Run CMD with `sh -c` on this machine, the event's JSON on stdin, for every event a
    /// person must know about (run started/finished, approval waiting, host failed,
    /// region rolled back, verify check failed); repeatable. Added to the playbook's
    /// `notify:`. A notifier never slows the run: it is killed after --notify-timeout.
    #[arg(long, value_name = "CMD")]
    pub notify: Vec<String>,
    /// With --state postgres://…: work on these regions only (globs, `!` excludes,
    /// `,` between several, e.g. 'cn-*' or '!cn-*'); other controllers work on the rest
    /// of the run (`pony join RUN --regions …`), and waves wait for every region.
    #[arg(long, env = "PONY_REGIONS", value_name = "GLOBS", value_parser = parse_regions)]
    pub regions: Option<String>,
    /// This controller's name in the journal and `pony status` when the run is split by
    /// region (default: MACHINE:PID).
    #[arg(long, env = "PONY_CONTROLLER", value_name = "NAME", value_parser = parse_controller)]
    pub controller: Option<String>,
    /// With --regions: what this controller does when another controller of the run is
    /// lost (overrides strategy.on_controller_loss): `wait` for its regions to be taken
    /// over by `pony resume RUN --regions …`, or `stop` as on a first Ctrl-C.
    #[arg(
        long,
        env = "PONY_ON_CONTROLLER_LOSS",
        value_enum,
        value_name = "POLICY"
    )]
    pub on_controller_loss: Option<LossChoice>,
    /// How long one call of a --notify command may take before it is killed.
    #[arg(long, env = "PONY_NOTIFY_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub notify_timeout: std::time::Duration,
    /// Plain output (CI logs, pipes): at most one `progress:` line this often, with the
    /// hosts done, failed and running, and the time left; it also keeps CI jobs that
    /// stop silent builds alive. `0s` writes one at every task and host outcome.
    #[arg(long, env = "PONY_PROGRESS_EVERY", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub progress_every: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PaceChoice {
    Window,
    All,
}

impl From<PaceChoice> for crate::playbook::RollbackPace {
    fn from(choice: PaceChoice) -> Self {
        match choice {
            PaceChoice::Window => crate::playbook::RollbackPace::Window,
            PaceChoice::All => crate::playbook::RollbackPace::All,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LossChoice {
    Wait,
    Stop,
}

impl From<LossChoice> for crate::playbook::OnControllerLoss {
    fn from(choice: LossChoice) -> Self {
        match choice {
            LossChoice::Wait => crate::playbook::OnControllerLoss::Wait,
            LossChoice::Stop => crate::playbook::OnControllerLoss::Stop,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

impl From<OutputFormat> for crate::report::OutputFormat {
    fn from(format: OutputFormat) -> Self {
        match format {
            OutputFormat::Human => crate::report::OutputFormat::Human,
            OutputFormat::Json => crate::report::OutputFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl From<ColorChoice> for crate::term::ColorChoice {
    fn from(choice: ColorChoice) -> Self {
        match choice {
            ColorChoice::Auto => crate::term::ColorChoice::Auto,
            ColorChoice::Always => crate::term::ColorChoice::Always,
            ColorChoice::Never => crate::term::ColorChoice::Never,
        }
    }
}

/// The inventory used without `-i`: a path relative to the current folder, where the
/// pony source tree keeps its 12-host local miniature.
pub const DEFAULT_INVENTORY: &str = "inventories/local.yaml";

/// An inventory and the hosts of it a command works on.
#[derive(Debug, Args, Clone)]
pub struct HostsArgs {
    /// The inventory file (relative paths are from the current folder).
    #[arg(
        short,
        long,
        env = "PONY_INVENTORY",
        default_value = DEFAULT_INVENTORY
    )]
    pub inventory: PathBuf,
    /// Only hosts matching this pattern (Ansible syntax, e.g. `mta:&cn-*:!mx-gz-0099` on
    /// inventories/global.yaml: the MTAs of China but one).
    #[arg(short, long, env = "PONY_LIMIT")]
    pub limit: Option<String>,
}

/// An inventory and a playbook, as most commands take them.
#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// The inventory file (relative paths are from the current folder).
    #[arg(
        short,
        long,
        env = "PONY_INVENTORY",
        default_value = DEFAULT_INVENTORY
    )]
    pub inventory: PathBuf,
    /// The playbook file.
    #[arg(env = "PONY_PLAYBOOK")]
    pub playbook: PathBuf,
    /// Only hosts matching this pattern (Ansible syntax, e.g. `mta:&cn-*:!mx-gz-0099` on
    /// inventories/global.yaml: the MTAs of China but one).
    #[arg(short, long, env = "PONY_LIMIT")]
    pub limit: Option<String>,
    /// Set a variable for every host (overrides playbook and inventory vars).
    /// `-e`/`--extra-vars` are the same, for Ansible hands.
    #[arg(
        long = "var",
        short = 'e',
        visible_alias = "extra-vars",
        value_name = "KEY=VALUE",
        value_parser = parse_key_value
    )]
    pub vars: Vec<(String, String)>,
    /// Like --var, and the value is shown as *** wherever it would be printed.
    /// `KEY=@FILE` reads the value from FILE (one trailing newline dropped), `KEY=env:VAR`
    /// from the environment variable VAR: the value is then not on pony's command line.
    #[arg(long = "secret-var", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub secret_vars: Vec<(String, String)>,
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Refuse (exit 2) instead of warning when a --var is used by no template, is empty,
    /// or is put into a command unquoted while holding shell metacharacters.
    #[arg(long)]
    pub strict_vars: bool,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ if text.starts_with('@') => Err(format!(
            "`{text}`: pony takes no vars file; put the vars in the playbook's `vars:` or pass each as KEY=VALUE"
        )),
        _ if text.trim_start().starts_with('{') => Err(format!(
            "`{text}`: pony takes no JSON; pass each var as KEY=VALUE"
        )),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate an inventory and a playbook; print a one-line summary.
    Check(PlanArgs),
    /// Show waves, regions, clusters, task counts and the critical path.
    Plan {
        #[command(flatten)]
        plan: PlanArgs,
        /// Estimate the duration from the steps' `estimate:` values.
        #[arg(long)]
        estimate: bool,
    },
    /// Draw the graph of steps (or of every task with --tasks).
    Graph {
        #[command(flatten)]
        plan: PlanArgs,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Draw every task, join and wave gate instead of the steps.
        #[arg(long)]
        tasks: bool,
    },
    /// Roll a playbook out over an inventory.
    Deploy(DeployArgs),
    /// Run the deploy scheduler in virtual time over simulated hosts: how long the
    /// rollout takes, per wave and region, what holds it back, what failures cost.
    Simulate(SimulateArgs),
    /// List the hosts of an inventory (after --limit); `pony inventory import` turns an
    /// Ansible inventory into a pony one.
    #[command(args_conflicts_with_subcommands = true)]
    Inventory {
        #[command(flatten)]
        hosts: HostsArgs,
        #[arg(long, value_enum, default_value_t = InventoryFormat::Table)]
        format: InventoryFormat,
        #[command(subcommand)]
        action: Option<InventoryAction>,
    },
    /// Continue a run that stopped (crash, Ctrl-C, halt, approval) from its journal.
    Resume {
        /// The run id (see `pony history`).
        run: String,
        /// Pre-approve the `approve:` gate of this wave.
        #[arg(long, value_name = "WAVE")]
        approve: Vec<String>,
        /// Values of the run's `--secret-var`s (they are never stored); `KEY=@FILE` and
        /// `KEY=env:VAR` as for deploy.
        #[arg(long = "secret-var", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        secret_vars: Vec<(String, String)>,
        #[arg(long, env = "PONY_ACCEPT_NEW_HOST_KEYS", value_parser = clap::builder::BoolishValueParser::new())]
        accept_new_host_keys: bool,
        /// Go on past the wave whose failure stopped the run, leaving its unfinished hosts
        /// as they are (journaled with who and when). Without it the failed wave's hosts
        /// run again and the rollout goes on only once they succeed.
        #[arg(long)]
        skip_failed_wave: bool,
        #[command(flatten)]
        run_options: RunOptions,
    },
    /// Work on more regions of a run split between controllers (needs --state
    /// postgres://… and --regions): this controller takes the regions' leases and runs
    /// their tasks; waves wait for every controller.
    Join {
        /// The run id, or a unique prefix of one (see `pony history`).
        run: String,
        /// Pre-approve the `approve:` gate of this wave.
        #[arg(long, value_name = "WAVE")]
        approve: Vec<String>,
        /// Values of the run's `--secret-var`s (they are never stored).
        #[arg(long = "secret-var", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        secret_vars: Vec<(String, String)>,
        #[arg(long, env = "PONY_ACCEPT_NEW_HOST_KEYS", value_parser = clap::builder::BoolishValueParser::new())]
        accept_new_host_keys: bool,
        #[command(flatten)]
        run_options: RunOptions,
    },
    /// Roll back a finished or stopped run: every task the journal shows done and not yet
    /// rolled back, on every host it touched (or --limit), in reverse dependency order.
    Rollback {
        /// The run id, or a unique prefix of one (see `pony history`).
        run: String,
        /// Only these of the run's hosts (the pattern syntax of deploy's --limit).
        #[arg(short, long)]
        limit: Option<String>,
        /// Values of the run's `--secret-var`s (they are never stored); `KEY=@FILE` and
        /// `KEY=env:VAR` as for deploy.
        #[arg(long = "secret-var", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        secret_vars: Vec<(String, String)>,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long, env = "PONY_YES", value_parser = clap::builder::BoolishValueParser::new())]
        yes: bool,
        /// Accept the host keys of hosts never seen before (still refuse changed keys).
        #[arg(long, env = "PONY_ACCEPT_NEW_HOST_KEYS", value_parser = clap::builder::BoolishValueParser::new())]
        accept_new_host_keys: bool,
        #[command(flatten)]
        run_options: RunOptions,
    },
    /// Pause a running run from any shell on its machine: no new host starts; hosts in
    /// flight finish their tasks. Journaled with who, when and from where.
    Pause {
        /// The run id, or a unique prefix of one (see `pony history`).
        run: String,
    },
    /// Continue a paused run.
    Continue {
        /// The run id, or a unique prefix of one.
        run: String,
    },
    /// Stop a running run as the first Ctrl-C does (no new host starts, hosts in flight
    /// finish; exit 130, resumable), or with --rollback roll back every host it touched
    /// (exit 1 when all rolled back, 3 when a rollback failed).
    Abort {
        /// The run id, or a unique prefix of one.
        run: String,
        /// Roll back every host the run touched (in reverse dependency order, paced as
        /// the run's rollbacks are).
        #[arg(long)]
        rollback: bool,
    },
    /// Answer a running run's `approve:` gate from any shell (or pre-approve one it has
    /// not reached yet).
    Approve {
        /// The run id, or a unique prefix of one.
        run: String,
        /// The wave whose gate to approve.
        wave: String,
    },
    /// The state of a run (the latest without RUN): per region and wave, failures, waits.
    Status {
        run: Option<String>,
        /// Also read the dead man's switches on the hosts a stopped run left in flight
        /// under one: armed, firing, or fired (when, and its rollback's exit status).
        /// Connects to those hosts; changes nothing there.
        #[arg(long)]
        hosts: bool,
    },
    /// Tell someone about runs whose controller died with hosts in flight (its pid gone,
    /// or its database lease expired): each such run's notifiers (its playbook's
    /// `notify:` and --notify) get a `controller_gone` event, once per dead controller.
    /// One pass (for cron or a CI schedule), or with --every a pass every DURATION.
    Watch {
        /// Also run CMD with `sh -c`, the event's JSON on stdin; repeatable.
        #[arg(long, value_name = "CMD")]
        notify: Vec<String>,
        /// How long one call of a --notify command may take before it is killed.
        #[arg(long, env = "PONY_NOTIFY_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        notify_timeout: std::time::Duration,
        /// Keep watching: a pass every DURATION (e.g. `1m`) until stopped.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        every: Option<std::time::Duration>,
    },
    /// Live view over HTTP: run pages, gate buttons, `/metrics` (docs/serve.md).
    Serve(serve::ServeArgs),
    /// Recent runs: id, playbook, inventory, who, when, duration, outcome.
    History {
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// Break the lock of an inventory left by a dead or paused run. A lock (or database
    /// lease) whose run is still alive is refused (exit 4, naming it) unless `--force`.
    Unlock {
        /// The inventory's `name:` (as printed in the lock message).
        inventory: String,
        /// Break it even though its run is alive (that controller stops when it notices;
        /// two runs may work the same hosts until then).
        #[arg(long)]
        force: bool,
    },
    /// The state database (--state postgres://…): `pony db migrate` creates or migrates
    /// pony's schema, as a role that may (the other commands need fewer privileges).
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Open the SSH connection to every selected host in parallel; report reachability.
    Ping {
        #[command(flatten)]
        hosts: HostsArgs,
        #[arg(long, env = "PONY_ACCEPT_NEW_HOST_KEYS", value_parser = clap::builder::BoolishValueParser::new())]
        accept_new_host_keys: bool,
        /// Give up on a host that has not answered within this long (e.g. 5s, 1m).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Connections being opened at once per sshd (jump host or direct), as the
        /// playbook's `strategy.handshakes`.
        #[arg(long, default_value_t = crate::transport::connect::HANDSHAKES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        handshakes: usize,
        /// Hosts pinged at once (default 256).
        #[arg(long, env = "PONY_CONNECTIONS", value_name = "N")]
        connections: Option<usize>,
    },
    /// Run an ad-hoc command on many hosts; identical outputs are folded together.
    Exec {
        #[command(flatten)]
        hosts: HostsArgs,
        #[arg(long, env = "PONY_ACCEPT_NEW_HOST_KEYS", value_parser = clap::builder::BoolishValueParser::new())]
        accept_new_host_keys: bool,
        /// Kill the command on a host that runs longer than this (e.g. 30s, 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Connections being opened at once per sshd (jump host or direct), as the
        /// playbook's `strategy.handshakes`.
        #[arg(long, default_value_t = crate::transport::connect::HANDSHAKES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        handshakes: usize,
        /// Hosts the command runs on at once (default 256).
        #[arg(long, env = "PONY_CONNECTIONS", value_name = "N")]
        connections: Option<usize>,
        /// The command, run with `sh` on every host, as typed: it is not a template
        /// (`{{ var }}` is not rendered with inventory vars, as a playbook step would).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
    /// Start or stop a local fleet of real sshd servers on loopback, with an inventory.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Encrypt, decrypt, edit or view a vault: a vars file encrypted with age.
    #[command(subcommand)]
    Vault(VaultAction),
}

#[derive(Debug, Args, Clone)]
pub struct DeployArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Render and print every command per host in graph order; connect to nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Connect to every host and say what the deploy would do there, changing nothing:
    /// file steps whose content differs from the file in place, tasks a guard would skip,
    /// commands that would run. Takes no lock and writes no run.
    #[arg(long, conflicts_with = "dry_run")]
    pub check: bool,
    /// With --check: the unified diff of each file that would change (secrets masked).
    #[arg(long, requires = "check")]
    pub diff: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(short, long, env = "PONY_YES", value_parser = clap::builder::BoolishValueParser::new())]
    pub yes: bool,
    /// Pre-approve the `approve:` gate of this wave.
    #[arg(long, value_name = "WAVE")]
    pub approve: Vec<String>,
    /// Accept the host keys of hosts never seen before (still refuse changed keys).
    #[arg(long, env = "PONY_ACCEPT_NEW_HOST_KEYS", value_parser = clap::builder::BoolishValueParser::new())]
    pub accept_new_host_keys: bool,
    #[command(flatten)]
    pub run_options: RunOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InventoryFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Create pony's schema in the state database, or bring it to this pony's version,
    /// and say which migrations it applied (none when it is up to date). Run it as a
    /// role with CREATE on the database (it becomes the schema's owner), or as the
    /// schema's owner; once per installation and after each upgrade of pony (the other
    /// commands never migrate an existing schema). `status` and `history` need only USAGE
    /// and SELECT.
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum LabAction {
    /// Start sshd servers on 127.x addresses and write `<state dir>/lab/inventory.yaml`.
    Up {
        /// Regions × clusters per region × hosts per cluster.
        #[arg(long, default_value_t = 3)]
        regions: usize,
        #[arg(long, default_value_t = 2)]
        clusters: usize,
        #[arg(long, default_value_t = 2)]
        hosts: usize,
        /// Also run real Postfix and Dovecot on every host (MTAs relay to their region's
        /// stores over LMTP); needs root and the postfix, dovecot-imapd and dovecot-lmtpd
        /// packages.
        #[arg(long)]
        mail: bool,
    },
    /// Stop the lab's sshd servers (and its mail services).
    Down,
    /// Send numbered messages to the mail lab's MTAs for a while, then count them in the
    /// stores' Maildirs: sent, delivered, lost, duplicated. Exit 1 if any was lost.
    Traffic {
        /// Messages per second over all regions.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// How long to send.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
    },
}

/// A lease of at least a second (its heartbeat runs every third of it).
/// The longest lease: a dead controller's fleet stays locked this long at most.
pub const MAX_LEASE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn parse_lease(text: &str) -> Result<std::time::Duration, String> {
    let lease = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if lease < std::time::Duration::from_secs(1) {
        return Err(format!("a lease of {text} is too short: give at least 1s"));
    }
    if lease > MAX_LEASE {
        return Err(format!(
            "a lease of {text} is too long: give at most 24h (a dead controller's hosts stay locked for a whole lease)"
        ));
    }
    Ok(lease)
}

#[cfg(test)]
mod tests;
