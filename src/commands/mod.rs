//! One module per subcommand, plus the loading every plan-based command shares.

pub mod check;
pub mod completions;
pub mod control;
pub mod db;
pub mod deploy;
pub mod deploy_check;
pub mod dry_run;
pub mod exec;
pub mod graph;
pub mod history;
pub mod inventory;
pub mod lab;
pub mod ping;
pub mod plan;
pub mod resume;
pub mod run;
pub mod simulate;
pub mod status;
pub mod vault;
pub mod watch;

use crate::cli::{PlanArgs, DEFAULT_INVENTORY};
use crate::diag::{Diagnostic, Diagnostics};
use crate::inventory::Vars;
use crate::plan::{Plan, PlanOptions};
use crate::settings::Settings;
use std::path::Path;
use std::sync::Arc;

/// A valid plan, and the warnings about its vars (a `--var` no template uses, …) that
/// the command prints before anything else.
pub struct Loaded {
    pub plan: Plan,
    pub warnings: Vec<Diagnostic>,
}

impl Loaded {
    /// Prints the warnings on stderr and gives the plan: what a command that loaded one
    /// does first.
    pub fn print_warnings(self) -> Plan {
        for warning in &self.warnings {
            eprintln!("warning: {warning}");
        }
        self.plan
    }
}

/// Loads and validates both files and builds the plan; problems in the inventory and the
/// playbook are reported together.
pub fn load_plan(args: &PlanArgs) -> Result<Loaded, Diagnostics> {
    load_plan_edited(args, None)
}

/// A change to the playbook's YAML before it is validated (`pony simulate --set`).
pub type PlaybookEdit<'a> = &'a dyn Fn(&mut serde_yaml::Value) -> Result<(), Diagnostics>;

/// [`load_plan`] with the playbook's YAML changed by `edit` first.
pub fn load_plan_edited(
    args: &PlanArgs,
    edit: Option<PlaybookEdit>,
) -> Result<Loaded, Diagnostics> {
    let inventory = missing_default_inventory(&args.inventory)
        .map_or_else(|| crate::inventory::load(&args.inventory), Err);
    let (playbook, mut errors) = match edit {
        None => crate::playbook::load_partial(&args.playbook),
        Some(edit) => edited_playbook(&args.playbook, edit)?,
    };
    let (inventory, playbook) = match (inventory, playbook) {
        (Ok(i), Some(p)) => (i, p),
        (i, _) => {
            if let Err(e) = i {
                errors.extend(e);
            }
            return Err(errors.sorted());
        }
    };
    let options = PlanOptions {
        limit: args.limit.clone(),
        extra_vars: extra_vars(args),
    };
    // Problems in the playbook's values and in the plan are reported together.
    match crate::plan::build(Arc::new(inventory), Arc::new(playbook), &options) {
        Ok(plan) => {
            let plan = errors.into_result(plan)?;
            let warnings = check::vet_vars(&plan, args)?;
            Ok(Loaded { plan, warnings })
        }
        Err(plan_errors) => {
            errors.extend(plan_errors);
            Err(errors.sorted())
        }
    }
}

fn edited_playbook(
    path: &Path,
    edit: PlaybookEdit,
) -> Result<(Option<crate::playbook::Playbook>, Diagnostics), Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::new(path, format!("cannot read playbook: {e}"))
            .hint("pass an existing playbook, e.g. playbooks/mail-rollout.yaml")
    })?;
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| Diagnostic::from_yaml(path, &e))?;
    edit(&mut value)?;
    let text = serde_yaml::to_string(&value).expect("a YAML value serializes");
    Ok(crate::playbook::parse_partial(path, &text))
}

/// When no `-i` was given and the default inventory is not in the current folder, an
/// error that says so (rather than a hint to pass the very path that failed).
pub fn missing_default_inventory(path: &Path) -> Option<Diagnostics> {
    if path != Path::new(DEFAULT_INVENTORY) || path.exists() {
        return None;
    }
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "the current folder".into());
    Some(
        Diagnostic::new(
            path,
            format!(
                "cannot read the inventory: `{DEFAULT_INVENTORY}` (the default without -i) is not in {cwd}"
            ),
        )
        .hint(format!(
            "pass the inventory with -i FILE (or set PONY_INVENTORY); the default is relative to the current folder, so it is found only in the pony source tree (e.g. -i /path/to/pony/{DEFAULT_INVENTORY})"
        ))
        .into(),
    )
}

/// `--var` and `--secret-var` values as vars.
pub fn extra_vars(args: &PlanArgs) -> Vars {
    args.vars
        .iter()
        .chain(&args.secret_vars)
        .map(|(k, v)| (k.clone(), serde_yaml::Value::String(v.clone())))
        .collect()
}

pub use crate::report::thousands;

/// What opening the state store takes from the settings.
pub fn store_settings(settings: &Settings) -> crate::state::store::StoreSettings {
    crate::state::store::StoreSettings {
        url: settings.state.clone(),
        state_dir: settings.state_dir.clone(),
        lease: settings.lease,
    }
}
