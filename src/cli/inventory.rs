//! The subcommands of `pony inventory` (listing the hosts is `pony inventory` itself).

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum InventoryAction {
    /// Write a pony inventory from an Ansible one: INI, YAML, or the JSON of
    /// `ansible-inventory --list` (the format is guessed; --from says it). Groups
    /// matching --region-groups become regions, those matching --cluster-groups clusters
    /// (else one per region, `<region>-hosts`), the other groups roles; `pony_region`/`pony_cluster`
    /// variables win. `ansible_host`, `_port`, `_user`, `_ssh_private_key_file` and
    /// `_connection: local` map to pony's settings; other `ansible_*` variables are
    /// reported and left out. The result is checked as `pony check` would.
    Import {
        /// The Ansible inventory file.
        file: PathBuf,
        /// The input's format when the guess is wrong.
        #[arg(long, value_enum)]
        from: Option<crate::inventory::import::ansible::Format>,
        /// Groups that are regions, as globs over group names (`dc_*`; `,` between
        /// several).
        #[arg(long, value_name = "GLOB")]
        region_groups: Option<String>,
        /// Groups that are clusters, as globs (`mx_*,imap_*`); without it, one cluster
        /// per region, named `<region>-hosts`.
        #[arg(long, value_name = "GLOB")]
        cluster_groups: Option<String>,
        /// The pony inventory's `name` (default: the file's name without extension).
        #[arg(long)]
        name: Option<String>,
        /// Write the inventory to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
    },
}
