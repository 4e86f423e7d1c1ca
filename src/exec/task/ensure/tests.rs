//! The scripts run by `sh` here, against stand-ins for the tools this machine cannot
//! let a test drive for real: a `systemctl` (the test machine has no systemd) and apt
//! with a repository (`apt-get`, `apt-cache`, `dpkg-query` keeping their state in a
//! folder). tests/ensure_actions.rs runs the init.d and .deb paths on real hosts.

use super::{package, parse, service};
use crate::playbook::ensure::{Package, Service};
use std::path::Path;
use std::process::Command;

/// Writes an executable stand-in `name` into `bin`.
fn tool(bin: &Path, name: &str, body: &str) {
    let path = bin.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&path)
        .status()
        .unwrap();
}

/// Runs `script` with the stand-ins in `bin` first on the PATH: (exit code, stdout, stderr).
fn sh(bin: &Path, script: &str) -> (i32, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
        )
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn last_line(stdout: &str) -> &str {
    stdout.trim_end().lines().last().unwrap_or_default()
}

#[test]
fn a_reply_is_the_last_result_line_with_its_fields() {
    let reply =
        parse("apt said this\nand that\nPONY-RESULT changed name=x old=1.0 new=2.0 did=upgrade\n")
            .unwrap();
    assert!(reply.changed);
    assert_eq!(reply.said, "apt said this\nand that\n");
    assert_eq!(reply.fields.get("old"), Some("1.0"));
    assert_eq!(
        package::summary(&reply.fields, false),
        "upgraded x 1.0 → 2.0"
    );
    assert!(!parse("PONY-RESULT unchanged did=none").unwrap().changed);
    assert!(parse("no result\n").is_none());
    assert!(parse("PONY-RESULT maybe\n").is_none());
}

#[test]
fn on_systemd_the_service_script_asks_systemctl_and_starts_only_a_stopped_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, state) = (dir.path().join("bin"), dir.path().join("state"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let sysd = dir.path().join("systemd");
    std::fs::create_dir_all(&sysd).unwrap();
    // A systemctl that knows one unit, `mta`, and keeps its state in files.
    tool(
        &bin,
        "systemctl",
        &format!(
            r#"S={state}; cmd=$1; shift; [ "$1" = -p ] && shift 3; [ "$1" = --quiet ] && shift
echo "$cmd $*" >> $S/calls
[ "$cmd" = show ] && {{ [ "$1" = mta ] && echo loaded || echo not-found; exit 0; }}
[ "$1" = mta ] || {{ echo "Unit $1.service not found." >&2; exit 5; }}
case $cmd in
  is-active) [ -f $S/active ] ;;
  is-enabled) [ -f $S/enabled ] ;;
  start|restart) touch $S/active ;;
  stop) rm -f $S/active ;;
  enable) touch $S/enabled; echo "Created symlink /etc/systemd/system/multi-user.target.wants/mta.service" ;;
  disable) rm -f $S/enabled ;;
  reload) : ;;
esac"#,
            state = state.display()
        ),
    );
    let mta: Service =
        serde_yaml::from_str("{ name: mta, state: started, enabled: true }").unwrap();
    let sysd = sysd.to_str().unwrap();
    let (code, out, err) = sh(&bin, &service::script(&mta, true, sysd));
    assert_eq!(
        (code, last_line(&out)),
        (
            0,
            "PONY-RESULT changed did=start,enable was=stopped via=systemctl"
        ),
        "{err}"
    );
    assert!(!state.join("active").exists(), "check mode changed nothing");
    let (code, out, err) = sh(&bin, &service::script(&mta, false, sysd));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Created symlink"),
        "what systemctl said is shown: {out}"
    );
    let reply = parse(&out).unwrap();
    assert_eq!(
        service::summary("mta", &reply.fields, false),
        "service mta started and enabled (stopped before) via systemctl"
    );
    assert!(state.join("active").exists() && state.join("enabled").exists());
    let (_, out, _) = sh(&bin, &service::script(&mta, false, sysd));
    assert_eq!(
        last_line(&out),
        "PONY-RESULT unchanged did=none was=running via=systemctl"
    );
    let reload: Service = serde_yaml::from_str("{ name: mta, state: reloaded }").unwrap();
    let (_, out, _) = sh(&bin, &service::script(&reload, false, sysd));
    assert_eq!(
        last_line(&out),
        "PONY-RESULT changed did=reload was=running via=systemctl"
    );
    let calls = std::fs::read_to_string(state.join("calls")).unwrap();
    assert_eq!(calls.matches("start mta").count(), 1, "{calls}");

    let unknown: Service = serde_yaml::from_str("{ name: nope, state: stopped }").unwrap();
    let (code, _, err) = sh(&bin, &service::script(&unknown, false, sysd));
    assert_eq!(
        (code, err.trim()),
        (1, "no service `nope`: systemd knows no unit nope")
    );
}

/// Stand-ins for apt with a repository that has mail-tools 1.0-1 and 2.0-1, keeping the
/// installed version in `state`.
fn fake_apt(bin: &Path, state: &Path) {
    let s = state.display();
    // apt knows mail-tools 1.0-1 and 2.0-1 (and, as the real one, shows nothing and exits 0
    // for a version it does not know); dpkg-query reports what apt-get installed.
    tool(
        bin,
        "dpkg-query",
        &format!(
            r#"[ "$3" = mail-tools ] && [ -s {s}/version ] || exit 1; printf 'ii |%s' "$(cat {s}/version)""#
        ),
    );
    tool(
        bin,
        "apt-cache",
        r#"case "$1 $2" in "show mail-tools=1.0-1"|"show mail-tools=2.0-1") echo "Package: mail-tools"; exit 0 ;; show*) exit 0 ;; esac
echo "mail-tools:"; echo "  Installed: 1.0-1"; echo "  Candidate: 2.0-1""#,
    );
    tool(
        bin,
        "apt-get",
        &format!(
            r#"echo "$*" >> {s}/calls; for a; do last=$a; done
case $1 in install) printf '%s' "${{last#mail-tools=}}" > {s}/version; echo "Setting up mail-tools (${{last#mail-tools=}}) ..." ;; remove) : > {s}/version ;; esac"#
        ),
    );
}

#[test]
fn with_a_version_the_package_script_asks_apt_and_says_old_and_new() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, state) = (dir.path().join("bin"), dir.path().join("state"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("version"), "1.0-1").unwrap();
    fake_apt(&bin, &state);
    let at = |version: &str| -> Package {
        serde_yaml::from_str(&format!("{{ name: mail-tools, version: '{version}' }}")).unwrap()
    };
    let (code, out, err) = sh(&bin, &package::script(&at("2.0-1"), true));
    assert_eq!(code, 0, "{err}");
    let reply = parse(&out).unwrap();
    assert_eq!(
        package::summary(&reply.fields, true),
        "would upgrade mail-tools 1.0-1 → 2.0-1"
    );
    assert!(!state.join("calls").exists(), "check mode ran no apt-get");
    let (code, out, err) = sh(&bin, &package::script(&at("2.0-1"), false));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        last_line(&out),
        "PONY-RESULT changed name=mail-tools old=1.0-1 new=2.0-1 did=upgrade"
    );
    let calls = std::fs::read_to_string(state.join("calls")).unwrap();
    assert_eq!(
        calls,
        "install -y -q --allow-downgrades -o Dpkg::Options::=--force-confold mail-tools=2.0-1\n"
    );
    let (_, out, _) = sh(&bin, &package::script(&at("2.0-1"), false));
    assert_eq!(
        last_line(&out),
        "PONY-RESULT unchanged name=mail-tools old=2.0-1 new=2.0-1 did=none"
    );
    let (_, out, _) = sh(&bin, &package::script(&at("1.0-1"), false));
    let reply = parse(&out).unwrap();
    assert_eq!(
        package::summary(&reply.fields, false),
        "downgraded mail-tools 2.0-1 → 1.0-1"
    );

    let (code, _, err) = sh(&bin, &package::script(&at("9.9"), false));
    assert_eq!(code, 1);
    assert!(
        err.starts_with("apt finds no version 9.9 of mail-tools"),
        "{err}"
    );
    assert!(
        err.contains("Candidate: 2.0-1"),
        "what apt-cache policy said: {err}"
    );

    let absent: Package = serde_yaml::from_str("{ name: mail-tools, state: absent }").unwrap();
    let (_, out, _) = sh(&bin, &package::script(&absent, false));
    let reply = parse(&out).unwrap();
    assert_eq!(
        package::summary(&reply.fields, false),
        "removed mail-tools 1.0-1"
    );
    let (_, out, _) = sh(&bin, &package::script(&absent, false));
    assert_eq!(
        last_line(&out),
        "PONY-RESULT unchanged name=mail-tools old=none new=none did=none"
    );
}

#[test]
fn the_line_write_keeps_the_files_mode_refuses_a_file_changed_since_the_read_and_works_under_become(
) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = dir.path().join("main.cf");
    std::fs::write(&path, "a = 1\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path_text = path.to_str().unwrap();
    let old = crate::exec::task::sha256(b"a = 1\n");
    // Under `become` the script goes through `sudo -n sh -s` and its here-document.
    let script = super::with_become(
        super::line::write_script(path_text, Some(&old), b"a = 2\nb = 'x'\n"),
        true,
    );
    let (code, out, err) = sh(&bin, &script);
    assert_eq!((code, out.trim()), (0, "PONY-RESULT changed"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\nb = 'x'\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The file is no longer what was read: refused, and left alone.
    let (code, _, err) = sh(
        &bin,
        &super::line::write_script(path_text, Some(&old), b"other\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("changed on the host while pony edited it"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\nb = 'x'\n");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(leftovers.len(), 2, "no temp file left: {leftovers:?}");
}
