//! `service:` as a POSIX sh script: systemctl where the host runs systemd
//! (`/run/systemd/system` exists), else the host's `service` command or
//! `/etc/init.d/NAME` (and update-rc.d for `enabled`). `started`/`stopped` act only when
//! the service is not so already, and are then checked (a daemon that dies at once is a
//! failure, not a start); `restarted`/`reloaded` always act. The last line says what was
//! done (`PONY-RESULT changed did=start,enable was=stopped via=systemctl`); what the
//! service manager printed goes before it, and on a failure to stderr with the command.

use crate::playbook::ensure::Service;
use crate::shell::quote;

/// Where a host that runs systemd has its runtime folder (the test of `sd_booted()`).
pub const SYSTEMD_DIR: &str = "/run/systemd/system";

/// The script ensuring `service`; with `check` it acts on nothing and says what it would do.
pub fn script(service: &Service, check: bool, systemd_dir: &str) -> String {
    let want = service.state.map(|s| s.as_str()).unwrap_or("");
    let enable = match service.enabled {
        Some(true) => "true",
        Some(false) => "false",
        None => "",
    };
    format!(
        "name={name}; want={want}; enable={enable}; check={check}; sysd={sysd}\n{BODY}",
        name = quote(&service.name),
        want = quote(want),
        enable = quote(enable),
        check = u8::from(check),
        sysd = quote(systemd_dir),
    )
}

const BODY: &str = r#"fail() { printf '%s\n' "$*" >&2; exit 1; }
if [ -d "$sysd" ] && command -v systemctl >/dev/null 2>&1; then
  via=systemctl
  case $(systemctl show -p LoadState --value "$name" 2>&1) in
    not-found) fail "no service \`$name\`: systemd knows no unit $name" ;;
  esac
  manage() { systemctl "$1" "$name"; }
  shown() { echo "systemctl $1 $name"; }
  running() { systemctl is-active --quiet "$name"; }
  enabled() { systemctl is-enabled --quiet "$name" 2>/dev/null; }
else
  [ -x "/etc/init.d/$name" ] || fail "no service \`$name\`: this host runs no systemd and has no /etc/init.d/$name"
  if command -v service >/dev/null 2>&1; then via=service; else via=init.d; fi
  svc() { if [ $via = service ]; then service "$name" "$1"; else "/etc/init.d/$name" "$1"; fi; }
  manage() {
    case $1 in
      enable) update-rc.d "$name" defaults && update-rc.d "$name" enable ;;
      disable) update-rc.d "$name" disable ;;
      *) svc "$1" ;;
    esac
  }
  shown() {
    case $1 in
      enable|disable) echo "update-rc.d $name $1" ;;
      *) if [ $via = service ]; then echo "service $name $1"; else echo "/etc/init.d/$name $1"; fi ;;
    esac
  }
  running() { svc status >/dev/null 2>&1; }
  enabled() { ls /etc/rc[2345].d/S[0-9][0-9]"$name" >/dev/null 2>&1; }
fi
did=
act() {
  did=${did:+$did,}$1
  [ "$check" = 1 ] && return 0
  if out=$(manage "$1" 2>&1); then
    [ -z "$out" ] || printf '%s\n' "$out"
  else
    s=$?
    fail "\`$(shown "$1")\` failed (exit $s): $out"
  fi
}
if running; then was=running; else was=stopped; fi
case $want in
  started) if [ $was = stopped ]; then act start
      [ "$check" = 1 ] || running || fail "\`$(shown start)\` succeeded but \`$name\` is not running; \`$(shown status)\` says: $(manage status 2>&1)"
    fi ;;
  stopped) if [ $was = running ]; then act stop
      [ "$check" = 1 ] || ! running || fail "\`$(shown stop)\` succeeded but \`$name\` is still running"
    fi ;;
  restarted) act restart ;;
  reloaded) act reload ;;
esac
if [ -n "$enable" ]; then
  if enabled; then is=true; else is=false; fi
  if [ "$is" != "$enable" ]; then
    if [ "$enable" = true ]; then act enable; else act disable; fi
  fi
fi
if [ -n "$did" ]; then r=changed; else r=unchanged; fi
echo "PONY-RESULT $r did=${did:-none} was=$was via=$via""#;

/// What a reply's fields say, for a person: `started (was stopped) via service`, or
/// with `check`, `would start (stopped now)`.
pub fn summary(name: &str, fields: &super::Fields, check: bool) -> String {
    let did: Vec<&str> = fields
        .get("did")
        .filter(|d| *d != "none")
        .map(|d| d.split(',').collect())
        .unwrap_or_default();
    let was = fields.get("was").unwrap_or("?");
    let via = fields.get("via").unwrap_or("?");
    if did.is_empty() {
        return format!("service {name} already as asked ({was}) via {via}");
    }
    let done: Vec<String> = did
        .iter()
        .map(|verb| {
            let past = match *verb {
                "start" => "started",
                "stop" => "stopped",
                "restart" => "restarted",
                "reload" => "reloaded",
                "enable" => "enabled",
                "disable" => "disabled",
                other => other,
            };
            if check {
                format!("would {verb}")
            } else {
                past.to_string()
            }
        })
        .collect();
    let now = if check { "now" } else { "before" };
    format!(
        "service {name} {} ({was} {now}) via {via}",
        done.join(" and ")
    )
}
