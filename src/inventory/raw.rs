//! The inventory file exactly as written (serde shapes); `super::load` turns it into the model.

use indexmap::IndexMap;
use serde::Deserialize;
use std::collections::BTreeMap;

pub type Vars = BTreeMap<String, serde_yaml::Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInventory {
    pub name: String,
    #[serde(default)]
    pub defaults: RawDefaults,
    pub regions: IndexMap<String, RawRegion>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub connection: Option<ConnectionKind>,
    pub ssh: Option<RawSsh>,
    #[serde(default)]
    pub vars: Vars,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    pub connection: Option<ConnectionKind>,
    pub ssh: Option<RawSsh>,
    #[serde(default)]
    pub vars: Vars,
    #[serde(default)]
    pub clusters: IndexMap<String, RawCluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub connection: Option<ConnectionKind>,
    pub ssh: Option<RawSsh>,
    #[serde(default)]
    pub vars: Vars,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub hosts: IndexMap<String, Option<RawHost>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub address: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub connection: Option<ConnectionKind>,
    pub ssh: Option<RawSsh>,
    #[serde(default)]
    pub vars: Vars,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    pub jump: Option<String>,
    pub config_file: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// How pony reaches a host.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// The system OpenSSH client with one multiplexed master per host.
    #[default]
    Ssh,
    /// `sh -c` on the controller, in the host's own directory under the state dir.
    Local,
}
