//! `package:` as a POSIX sh script over dpkg and apt: the installed version from
//! `dpkg-query`; `deb:` installs the file with `dpkg -i` unless its version is in
//! place; `version:` installs exactly that version with `apt-get install NAME=VERSION`
//! (up or down), after `apt-cache show` confirmed apt knows it; no version installs
//! apt's candidate when nothing is installed; absent removes with `apt-get remove`
//! (`dpkg -r` without apt). The last line gives the versions before and after
//! (`PONY-RESULT changed name=x old=1.0 new=2.0 did=upgrade`); on a failure, stderr
//! has the command and what it printed.

use crate::playbook::ensure::{Package, Presence};
use crate::shell::quote;

/// The script ensuring `package`; with `check` it installs and removes nothing.
pub fn script(package: &Package, check: bool) -> String {
    let arg = |v: &Option<String>| quote(v.as_deref().unwrap_or(""));
    let state = match package.state {
        Presence::Present => "present",
        Presence::Absent => "absent",
    };
    format!(
        "name={name}; version={version}; deb={deb}; state={state}; check={check}\n{BODY}",
        name = arg(&package.name),
        version = arg(&package.version),
        deb = arg(&package.deb),
        check = u8::from(check),
    )
}

const BODY: &str = r#"fail() { printf '%s\n' "$*" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
installed() {
  s=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null) || return 0
  case $s in ii*|hi*) echo "${s#*|}" ;; esac
}
do_() {
  [ "$check" = 1 ] && return 0
  if out=$("$@" 2>&1); then
    [ -z "$out" ] || printf '%s\n' "$out"
  else
    s=$?
    fail "\`$*\` failed (exit $s): $(printf '%s\n' "$out" | tail -n 15)"
  fi
}
apt_install() {
  do_ apt-get install -y -q --allow-downgrades -o Dpkg::Options::=--force-confold "$1"
}
if [ -n "$deb" ]; then
  [ -f "$deb" ] || fail "no .deb file at $deb"
  p=$(dpkg-deb -f "$deb" Package 2>&1) || fail "$deb is not a Debian package: $p"
  want=$(dpkg-deb -f "$deb" Version)
  [ -z "$name" ] || [ "$name" = "$p" ] || fail "$deb holds the package $p, not $name"
  name=$p
fi
old=$(installed "$name")
if [ "$state" = absent ]; then
  if [ -z "$old" ]; then echo "PONY-RESULT unchanged name=$name old=none new=none did=none"; exit 0; fi
  if command -v apt-get >/dev/null 2>&1; then do_ apt-get remove -y -q "$name"; else do_ dpkg -r "$name"; fi
  want=
elif [ -n "$deb" ]; then
  [ "$old" != "$want" ] || { echo "PONY-RESULT unchanged name=$name old=$old new=$old did=none"; exit 0; }
  do_ dpkg -i "$deb"
elif [ -n "$version" ]; then
  [ "$old" != "$version" ] || { echo "PONY-RESULT unchanged name=$name old=$old new=$old did=none"; exit 0; }
  # apt-cache show NAME=VERSION prints nothing (and exits 0) for a version apt does not know.
  [ -n "$(apt-cache show "$name=$version" 2>/dev/null)" ] || fail "apt finds no version $version of $name (is the repository in the host's sources, and \`apt-get update\` run?); apt-cache policy $name says: $(apt-cache policy "$name" 2>&1 | head -n 6)"
  want=$version
  apt_install "$name=$version"
else
  [ -z "$old" ] || { echo "PONY-RESULT unchanged name=$name old=$old new=$old did=none"; exit 0; }
  want=$(apt-cache policy "$name" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
  case $want in ''|'(none)') fail "apt finds no package $name to install (is its repository in the host's sources, and \`apt-get update\` run?)" ;; esac
  apt_install "$name"
fi
if [ "$check" = 1 ]; then new=$want; else new=$(installed "$name"); fi
[ "$new" = "$want" ] || fail "after installing, $name is at version ${new:-none}, not $want"
if [ -z "$old" ]; then did=install
elif [ -z "$new" ]; then did=remove
elif dpkg --compare-versions "$new" gt "$old"; then did=upgrade
else did=downgrade; fi
echo "PONY-RESULT changed name=$name old=${old:-none} new=${new:-none} did=$did""#;

/// What a reply's fields say, for a person: `upgraded x 1.0 → 2.0`, or with `check`,
/// `would upgrade x 1.0 → 2.0`.
pub fn summary(fields: &super::Fields, check: bool) -> String {
    let name = fields.get("name").unwrap_or("?");
    let old = fields.get("old").unwrap_or("none");
    let new = fields.get("new").unwrap_or("none");
    let did = fields.get("did").unwrap_or("none");
    let (verb, past) = match did {
        "install" => ("install", "installed"),
        "upgrade" => ("upgrade", "upgraded"),
        "downgrade" => ("downgrade", "downgraded"),
        "remove" => ("remove", "removed"),
        _ => {
            return match old {
                "none" => format!("package {name} not installed, as asked"),
                v => format!("package {name} {v} already in place"),
            }
        }
    };
    let versions = match did {
        "install" => new.to_string(),
        "remove" => old.to_string(),
        _ => format!("{old} → {new}"),
    };
    if check {
        format!("would {verb} {name} {versions}")
    } else {
        format!("{past} {name} {versions}")
    }
}
