//! The playbook file exactly as written (serde shapes); `super::load` validates it.

use crate::inventory::Vars;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlaybook {
    pub name: String,
    #[serde(default)]
    pub vars: Vars,
    #[serde(default)]
    pub strategy: RawStrategy,
    /// Commands told about the events a person must know about (`crate::notify`).
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    /// What "this host serves" means, checked after a host's rollback.
    pub health: Option<RawHealth>,
    /// Encrypted vars files (a path or a list, relative to the playbook), opened with
    /// the key before loading (`crate::commands::vault`); checked here for its shape.
    pub vault: Option<serde_yaml::Value>,
    pub steps: Vec<RawStep>,
}

/// `health:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// How long a host may take to pass every check (default 60s).
    pub wait: Option<Scalar>,
    /// How often the failing checks are tried again within `wait` (default 2s).
    pub every: Option<Scalar>,
    pub checks: Vec<RawHealthCheck>,
}

/// One health check as written: a command or a probe, on the hosts of `hosts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub name: String,
    pub run: Option<String>,
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub probe: Option<Probe>,
    pub hosts: Option<String>,
}

/// A notifier as written: a command, or a command with its own timeout.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawNotify {
    Command(String),
    Full {
        command: String,
        timeout: Option<Scalar>,
    },
}

/// A duration or a limit as written: `30` or `"10m"` / `"25%"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Number(u64),
    Text(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::Text(t) => write!(f, "{t}"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStrategy {
    #[serde(default)]
    pub waves: Vec<RawWave>,
    pub max_unavailable: Option<Scalar>,
    pub max_failures: Option<Scalar>,
    pub on_failure: Option<OnFailure>,
    pub connections: Option<usize>,
    pub sessions_per_host: Option<usize>,
    pub handshakes: Option<usize>,
    pub rollback: Option<RawRollback>,
    pub max_failures_run: Option<Scalar>,
    /// Default failure budget of every wave (a wave's own `max_failures` overrides it).
    pub max_failures_wave: Option<Scalar>,
    pub unreachable: Option<Unreachable>,
    pub max_unreachable: Option<usize>,
    /// In a run split by region: what the other controllers do when one is lost.
    pub on_controller_loss: Option<OnControllerLoss>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollback {
    pub pace: Option<RollbackPace>,
}

/// How many hosts of a cluster roll back at once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackPace {
    /// A host being rolled back holds one of its cluster's `max_unavailable` slots.
    #[default]
    Window,
    /// Every host of the rollback's scope at once.
    All,
}

impl std::fmt::Display for RollbackPace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RollbackPace::Window => "window",
            RollbackPace::All => "all",
        })
    }
}

/// In a run split between controllers by region (`--regions`): what the other
/// controllers do when one is lost (its region leases expired with work left).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnControllerLoss {
    /// Go on with their own regions and wait at the next barrier for the lost regions
    /// until `pony resume RUN --regions …` takes them over.
    #[default]
    Wait,
    /// Stop as on a first Ctrl-C: no new host starts, hosts in flight finish; the run
    /// ends interrupted (resumable).
    Stop,
}

impl OnControllerLoss {
    /// The playbook's spelling, as events show it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnControllerLoss::Wait => "wait",
            OnControllerLoss::Stop => "stop",
        }
    }
}

/// What a host that cannot be reached at all does to the run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unreachable {
    /// It is a failed host like any other (the failure budget counts it).
    #[default]
    Fail,
    /// It is reported `unreachable` and left alone, outside the failure budget.
    Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWave {
    pub name: String,
    #[serde(default)]
    pub regions: Vec<String>,
    pub hosts: Option<String>,
    pub pause: Option<Scalar>,
    #[serde(default)]
    pub approve: bool,
    pub window: Option<String>,
    /// Failed hosts the wave tolerates (count or % of its hosts) before `on_failure`
    /// applies to the whole run.
    pub max_failures: Option<Scalar>,
    /// Checks run during the wave's soak (`pause:`) and before its `approve:` question.
    #[serde(default)]
    pub verify: Vec<RawCheck>,
}

/// One `verify:` check of a wave, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub name: String,
    pub run: Option<String>,
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub probe: Option<Probe>,
    pub hosts: Option<String>,
    pub every: Option<Scalar>,
    /// `median`: compare the number `run` prints against the `baseline` hosts.
    pub compare: Option<String>,
    pub baseline: Option<String>,
    pub tolerance: Option<Scalar>,
}

/// What happens when a cluster's failures go beyond `max_failures`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Stop starting tasks, let running ones finish, roll nothing back.
    Halt,
    /// Stop the region and roll back every host the run touched in it.
    #[default]
    RollbackRegion,
    /// Stop everything and roll back every touched host.
    RollbackAll,
}

impl OnFailure {
    /// The playbook's spelling, as events and `plan` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Halt => "halt",
            OnFailure::RollbackRegion => "rollback-region",
            OnFailure::RollbackAll => "rollback-all",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub name: String,
    pub hosts: Option<String>,
    pub run: Option<String>,
    pub rollback: Option<String>,
    #[serde(default)]
    pub needs: Vec<RawNeed>,
    pub per: Option<Per>,
    pub creates: Option<String>,
    pub unless: Option<String>,
    pub capture: Option<String>,
    pub until: Option<RawUntil>,
    pub timeout: Option<Scalar>,
    pub retries: Option<u32>,
    pub retry_delay: Option<Scalar>,
    #[serde(rename = "become", default)]
    pub become_root: bool,
    pub upload: Option<RawTransfer>,
    pub template: Option<RawTransfer>,
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub probe: Option<Probe>,
    pub estimate: Option<Scalar>,
    /// The everyday actions (`super::ensure`): a line in a file, a service's state, a
    /// package at a version.
    pub line: Option<super::ensure::Line>,
    pub service: Option<super::ensure::Service>,
    pub package: Option<super::ensure::Package>,
    /// A host pattern (template) naming the one host that runs the step's commands on
    /// behalf of each target.
    pub delegate: Option<String>,
    pub delegate_parallel: Option<usize>,
    /// The bound of the step's dead man's switch on its host.
    pub dead_man: Option<Scalar>,
    /// A mail built-in (`{ action: drain_mta, … }`) or a list of them, checked and
    /// expanded by `super::mail`.
    pub mail: Option<serde_yaml::Value>,
    /// Vars of this step only (an included step gets its file's and its include's).
    #[serde(default)]
    pub vars: Vars,
    /// How a `run` step reports a change: `true`, `false`, `{ stdout_contains: T }` or
    /// `{ stdout_lacks: T }`; checked by hand in `super::step` for a clear message.
    pub changed_when: Option<serde_yaml::Value>,
    /// Makes the step a handler: it runs on a host only when one of these steps changed
    /// something there.
    pub listen: Option<Vec<String>>,
}

/// `needs:` entries: a step name, or `{ step: X, scope: run }`. Deserialized by hand so
/// that a bad entry says what is wrong instead of "did not match any variant".
#[derive(Debug)]
pub enum RawNeed {
    Step(String),
    Scoped(RawScopedNeed),
}

impl<'de> Deserialize<'de> for RawNeed {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawNeed;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a step name or `{ step: NAME, scope: auto|run }`")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<RawNeed, E> {
                Ok(RawNeed::Step(name.to_string()))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<RawNeed, M::Error> {
                RawScopedNeed::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawNeed::Scoped)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScopedNeed {
    pub step: String,
    #[serde(default)]
    pub scope: NeedScope,
}

/// How far `needs` reaches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NeedScope {
    /// The same host's task, else the same region's, else the run's (SPEC §3).
    #[default]
    Auto,
    /// Every task of the step, everywhere.
    Run,
}

/// What one task of a step targets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    #[default]
    Host,
    Region,
    Run,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUntil {
    pub retries: u32,
    pub delay: Option<Scalar>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransfer {
    pub src: String,
    pub dest: String,
    pub mode: Option<String>,
}

/// A protocol check made through a port forward over the host's SSH connection (SPEC §8).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Probe {
    Smtp {
        #[serde(default = "port_25")]
        port: u16,
        #[serde(default)]
        starttls: bool,
        /// The address the service listens on, as the host sees it (a template;
        /// default 127.0.0.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Text the banner must contain (a template), e.g. the release.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<String>,
    },
    Lmtp {
        #[serde(default = "port_24")]
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<String>,
    },
    Imap {
        #[serde(default = "port_143")]
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Text the greeting must contain (a template).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<String>,
        /// Log in (and out) as this user: a login that works, not only a greeting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        login: Option<ImapLogin>,
    },
    Http {
        #[serde(default = "port_80")]
        port: u16,
        #[serde(default = "root_path")]
        path: String,
        #[serde(default = "status_200")]
        status: u16,
        body: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    Tcp {
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// A message through this host's MTA (SMTP) to a mailbox, confirmed over IMAP at
    /// the store: mail flows, not only daemons answering.
    Mailflow {
        /// The recipient (a template), e.g. `probe@{{ mail_domain }}`.
        to: String,
        /// The MTA's SMTP port and address as the host sees it (default 127.0.0.1).
        #[serde(default = "port_25")]
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Where the mailbox is read.
        imap: MailflowImap,
    },
}

/// The mailbox a mail-flow probe looks in (templates; a `--secret-var` keeps the
/// password out of logs and the journal).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailflowImap {
    /// The store's address as the probed host sees it.
    pub address: String,
    #[serde(default = "port_143")]
    pub port: u16,
    pub user: String,
    pub password: String,
}

/// An IMAP probe's credentials (templates; a `--secret-var` keeps the password out of
/// logs and the journal).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImapLogin {
    pub user: String,
    pub password: String,
}

impl Probe {
    /// The port and the address to connect to on the host (default 127.0.0.1).
    pub fn target(&self) -> (&str, u16) {
        let (address, port) = match self {
            Probe::Smtp { address, port, .. }
            | Probe::Lmtp { address, port, .. }
            | Probe::Imap { address, port, .. }
            | Probe::Http { address, port, .. }
            | Probe::Tcp { address, port }
            | Probe::Mailflow { address, port, .. } => (address, *port),
        };
        (address.as_deref().unwrap_or("127.0.0.1"), port)
    }

    /// The probe as logs show it: JSON, with any login password masked.
    pub fn describe(&self) -> String {
        let mut shown = self.clone();
        if let Probe::Imap {
            login: Some(login), ..
        } = &mut shown
        {
            login.password = "********".into();
        }
        if let Probe::Mailflow { imap, .. } = &mut shown {
            imap.password = "********".into();
        }
        serde_json::to_string(&shown).unwrap_or_default()
    }

    /// Every template string of the probe, with its field.
    pub fn templates(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        let (address, expect, login) = match self {
            Probe::Smtp {
                address, expect, ..
            }
            | Probe::Lmtp {
                address, expect, ..
            } => (address, expect, None),
            Probe::Imap {
                address,
                expect,
                login,
                ..
            } => (address, expect, login.as_ref()),
            Probe::Http { address, .. } | Probe::Tcp { address, .. } => (address, &None, None),
            Probe::Mailflow {
                address, to, imap, ..
            } => {
                out.push(("probe to", to.as_str()));
                out.push(("probe imap address", imap.address.as_str()));
                out.push(("probe imap user", imap.user.as_str()));
                out.push(("probe imap password", imap.password.as_str()));
                (address, &None, None)
            }
        };
        if let Some(a) = address {
            out.push(("probe address", a.as_str()));
        }
        if let Some(e) = expect {
            out.push(("probe expect", e.as_str()));
        }
        if let Some(l) = login {
            out.push(("probe login user", l.user.as_str()));
            out.push(("probe login password", l.password.as_str()));
        }
        out
    }

    /// The probe with its templates rendered by `render`.
    pub fn rendered<E>(
        &self,
        mut render: impl FnMut(&'static str, &str) -> Result<String, E>,
    ) -> Result<Probe, E> {
        let mut probe = self.clone();
        let mut field = |name: &'static str, value: &mut Option<String>| -> Result<(), E> {
            if let Some(v) = value.as_mut() {
                *v = render(name, v)?;
            }
            Ok(())
        };
        match &mut probe {
            Probe::Smtp {
                address, expect, ..
            }
            | Probe::Lmtp {
                address, expect, ..
            } => {
                field("probe address", address)?;
                field("probe expect", expect)?;
            }
            Probe::Imap {
                address,
                expect,
                login,
                ..
            } => {
                field("probe address", address)?;
                field("probe expect", expect)?;
                if let Some(l) = login {
                    l.user = render("probe login user", &l.user)?;
                    l.password = render("probe login password", &l.password)?;
                }
            }
            Probe::Http { address, .. } | Probe::Tcp { address, .. } => {
                field("probe address", address)?
            }
            Probe::Mailflow {
                address, to, imap, ..
            } => {
                field("probe address", address)?;
                *to = render("probe to", to)?;
                imap.address = render("probe imap address", &imap.address)?;
                imap.user = render("probe imap user", &imap.user)?;
                imap.password = render("probe imap password", &imap.password)?;
            }
        }
        Ok(probe)
    }
}

fn port_25() -> u16 {
    25
}
fn port_24() -> u16 {
    24
}
fn port_143() -> u16 {
    143
}
fn port_80() -> u16 {
    80
}
fn root_path() -> String {
    "/".into()
}
fn status_200() -> u16 {
    200
}
