//! The inventory file exactly as written (serde shapes); `super::load` turns it into the model.

use indexmap::IndexMap;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// IANA time zone for `window: "... local"` (inherited like other settings).
    pub tz: Option<String>,
    pub connection: Option<ConnectionKind>,
    pub ssh: Option<RawSsh>,
    #[serde(default)]
    pub vars: Vars,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    /// IANA time zone for `window: "... local"` (inherited like other settings).
    pub tz: Option<String>,
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
    /// IANA time zone for `window: "... local"` (inherited like other settings).
    pub tz: Option<String>,
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
    /// IANA time zone for `window: "... local"` (inherited like other settings).
    pub tz: Option<String>,
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
    /// How long one connection attempt may take (ssh `ConnectTimeout`).
    #[serde(default, deserialize_with = "connect_timeout")]
    pub connect_timeout: Option<Duration>,
    /// Connection attempts after the first failed one.
    #[serde(default, deserialize_with = "connect_retries")]
    pub connect_retries: Option<u32>,
    /// How long a host's master connection outlives pony (ssh `ControlPersist`).
    #[serde(default, deserialize_with = "control_persist")]
    pub control_persist: Option<Duration>,
}

/// The most connection retries a host may ask for.
pub const MAX_CONNECT_RETRIES: u32 = 20;

fn connect_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    whole_seconds(d, "connect_timeout")
}

fn control_persist<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    whole_seconds(d, "control_persist")
}

/// A duration like `3s` or `1m` in whole seconds, at least 1s: ssh's `ConnectTimeout` and
/// `ControlPersist` take whole seconds, and 0 means "no timeout" / "forever" to ssh.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    key: &str,
) -> Result<Option<Duration>, D::Error> {
    let value = Option::<serde_yaml::Value>::deserialize(deserializer)?;
    let Some(value) = value else { return Ok(None) };
    let duration = value
        .as_str()
        .and_then(|text| humantime::parse_duration(text.trim()).ok())
        .filter(|d| d.as_secs() > 0 && d.subsec_nanos() == 0);
    match duration {
        Some(d) => Ok(Some(d)),
        None => Err(serde::de::Error::custom(format!(
            "ssh `{key}: {}` is not a duration in whole seconds of at least 1s; write e.g. `{key}: 3s` or `{key}: 1m`",
            show(&value)
        ))),
    }
}

fn connect_retries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let value = Option::<serde_yaml::Value>::deserialize(d)?;
    let Some(value) = value else { return Ok(None) };
    match value.as_u64() {
        Some(n) if n <= u64::from(MAX_CONNECT_RETRIES) => Ok(Some(n as u32)),
        _ => Err(serde::de::Error::custom(format!(
            "ssh `connect_retries: {}` is not a number of retries from 0 to {MAX_CONNECT_RETRIES}; write e.g. `connect_retries: 1`",
            show(&value)
        ))),
    }
}

fn show(value: &serde_yaml::Value) -> String {
    serde_yaml::to_string(value)
        .unwrap_or_default()
        .trim()
        .to_string()
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
