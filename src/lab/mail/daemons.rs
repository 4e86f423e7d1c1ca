//! The mail daemons of one lab host: its folders and first release, Postfix and Dovecot
//! started on its own loopback address and waited for until they listen, stopped through
//! their control commands and then by pid; the `lo` addresses Postfix needs.

use super::{context, MailHost, MailLab, Service, FIRST_RELEASE, TEMPLATES};
use anyhow::{anyhow, bail, Context, Result};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Folders, the first release and the empty drain switches of one host.
pub(super) fn prepare(lab: &MailLab, h: &MailHost) -> Result<()> {
    let home = &h.home;
    for sub in [
        "postfix/spool",
        "postfix/data",
        "dovecot/run",
        "dovecot/state",
        "maildir",
        "log",
        "state",
    ] {
        std::fs::create_dir_all(home.join(sub))
            .with_context(|| format!("creating {}", home.join(sub).display()))?;
    }
    // Postfix insists that its data directory belongs to mail_owner; Dovecot delivers
    // and reads mail as `dovecot`.
    chown(&home.join("postfix/data"), "postfix")?;
    chown(&home.join("maildir"), "dovecot")?;
    // `lmtp-deny` stays empty: Dovecot's LMTP reads it where IMAP reads `imap-deny`.
    for switch in ["state/drain.cidr", "state/imap-deny", "state/lmtp-deny"] {
        std::fs::write(home.join(switch), "")?;
    }
    let release = home.join("releases").join(FIRST_RELEASE);
    let env = crate::playbook::template::environment();
    let ctx = minijinja::Value::from_serialize(context(lab, h, FIRST_RELEASE));
    for (name, text) in TEMPLATES {
        let rendered = env
            .render_str(text, &ctx)
            .map_err(|e| anyhow!("rendering {name} for {}: {e}", h.name))?;
        let path = release.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(&path, rendered).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(release.join("VERSION"), format!("{FIRST_RELEASE}\n"))?;
    let current = home.join("current");
    let _ = std::fs::remove_file(&current);
    std::os::unix::fs::symlink(format!("releases/{FIRST_RELEASE}"), &current)?;
    Ok(())
}

pub(super) fn start_service(h: &MailHost, service: Service) -> Result<()> {
    let mut command = match service {
        Service::Postfix => {
            let mut c = Command::new("postfix");
            c.arg("-c").arg(h.postfix_config()).arg("start");
            c
        }
        Service::Dovecot => {
            let mut c = Command::new("dovecot");
            c.arg("-c").arg(h.dovecot_config());
            c
        }
    };
    // The daemons keep whatever they inherit: their output goes to a file, never to a
    // pipe someone would wait on.
    let output = h
        .home
        .join("log")
        .join(format!("{service:?}-start.out").to_lowercase());
    let file = std::fs::File::create(&output)?;
    let status = command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("starting {service:?} on {}", h.name))?;
    if !status.success() {
        bail!(
            "{service:?} of lab host {} did not start: {} (its logs: {})",
            h.name,
            std::fs::read_to_string(&output).unwrap_or_default().trim(),
            h.home.join("log").display()
        );
    }
    Ok(())
}

pub(super) fn ports(service: Service) -> &'static [u16] {
    match service {
        Service::Postfix => &[25],
        Service::Dovecot => &[143, 24],
    }
}

pub(super) fn wait_listening(h: &MailHost, service: Service) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for &port in ports(service) {
        while std::net::TcpStream::connect_timeout(
            &(h.address, port).into(),
            Duration::from_millis(500),
        )
        .is_err()
        {
            if Instant::now() > deadline {
                bail!(
                    "{service:?} of lab host {} does not listen on {}:{port} (its log: {})",
                    h.name,
                    h.address,
                    h.home.join("log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Stops the service if it runs; returns whether it ran.
pub(super) fn stop_service(h: &MailHost, service: Service) -> Result<bool> {
    let (pid, mut command) = match service {
        Service::Postfix => {
            let mut c = Command::new("postfix");
            c.arg("-c").arg(h.postfix_config()).arg("stop");
            (h.postfix_pid(), c)
        }
        Service::Dovecot => {
            let mut c = Command::new("doveadm");
            c.arg("-c").arg(h.dovecot_config()).arg("stop");
            (h.dovecot_pid(), c)
        }
    };
    let Some(pid) = pid.filter(|p| alive(*p)) else {
        return Ok(false);
    };
    let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
    // The master ends its children; if it does not go within a while, it is ended by
    // its pid, which lives in this host's own folder.
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        if Instant::now() > deadline {
            let _ = crate::sys::kill(pid as i32, libc::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// Adds the address to `lo`; false when it was there already.
pub(super) fn add_address(address: Ipv4Addr) -> Result<bool> {
    let out = Command::new("ip")
        .args(["addr", "add", &format!("{address}/32"), "dev", "lo"])
        .output()
        .context("running `ip addr add` (package iproute2)")?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("File exists") || err.contains("Address already assigned") {
        return Ok(false);
    }
    bail!(
        "cannot add {address} to lo (Postfix listens only on an interface's address; this needs root): {}",
        err.trim()
    )
}

pub(super) fn chown(path: &Path, user: &str) -> Result<()> {
    let status = Command::new("chown")
        .arg(user)
        .arg(path)
        .status()
        .context("running chown")?;
    if !status.success() {
        bail!(
            "chown {user} {} failed (the mail lab needs root)",
            path.display()
        );
    }
    Ok(())
}

pub(super) fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a daemon's pid is alive: ours to signal, zombie or not (a pid of another
/// user is a recycled one, not the daemon).
pub(super) fn alive(pid: u32) -> bool {
    use crate::process::{pid_state, PidState};
    matches!(pid_state(pid), PidState::Running | PidState::Zombie)
}
