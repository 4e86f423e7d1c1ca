//! `pony vault …` and the vault options of the commands that run a plan.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Where the vault key comes from (every command: deploy, resume and rollback need it).
#[derive(Debug, Args, Clone, Default)]
pub struct VaultKeyOptions {
    /// The vault key: a file holding a passphrase or age identities (`age-keygen`
    /// output). Without it, the environment variable PONY_VAULT_KEY holds the key
    /// itself; without both, a terminal is asked.
    #[arg(long, global = true, value_name = "FILE")]
    pub vault_key_file: Option<PathBuf>,
}

/// Vault files named on the command line (besides the playbook's `vault:`).
#[derive(Debug, Args, Clone, Default)]
pub struct VaultArgs {
    /// An encrypted vars file (`pony vault encrypt`): its vars are secret vars, as
    /// with --secret-var. Repeatable; later files win.
    #[arg(long = "vault", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Filled once the vaults are opened: each vault (absolute) and the names of its
    /// vars, which are then among the secret vars.
    #[arg(skip)]
    pub opened: Vec<(PathBuf, Vec<String>)>,
}

#[derive(Debug, Subcommand)]
pub enum VaultAction {
    /// Encrypt a plain vars file (YAML `name: value`) in place.
    Encrypt { file: PathBuf },
    /// Decrypt a vault in place (it is then plain text on disk).
    Decrypt { file: PathBuf },
    /// Decrypt into a private temporary file, open $EDITOR (default vi), encrypt again.
    Edit { file: PathBuf },
    /// Print a vault's plain text.
    View { file: PathBuf },
}
