use super::*;

#[test]
fn accepting_new_host_keys_is_accept_new_not_no_checking() {
    assert!(matches!(known_hosts_check(true), KnownHosts::Add));
    assert!(matches!(known_hosts_check(false), KnownHosts::Strict));
}

#[test]
fn the_control_dir_is_made_private_and_a_planted_one_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("pony-ssh-test");
    let mode = |path: &Path| std::fs::symlink_metadata(path).unwrap().mode() & 0o7777;

    // A fresh one is made 0700, whatever the umask leaves; a second check passes.
    secure_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    secure_dir(&dir).unwrap();

    // Writable by others (planted, or loosened): refused, naming the path and the fix.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = secure_dir(&dir).unwrap_err().to_string();
    assert!(error.contains(&dir.display().to_string()), "{error}");
    assert!(error.contains("mode 0777"), "{error}");
    assert!(error.contains("rm -rf"), "{error}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o720)).unwrap();
    assert!(secure_dir(&dir).is_err(), "group-writable is refused too");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    secure_dir(&dir).unwrap();

    // A symbolic link is refused and not followed: its target stays as it was.
    let target = base.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = base.path().join("pony-ssh-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let error = secure_dir(&link).unwrap_err().to_string();
    assert!(error.contains("symbolic link"), "{error}");
    let dangling = base.path().join("pony-ssh-dangling");
    std::os::unix::fs::symlink(base.path().join("nothing"), &dangling).unwrap();
    assert!(secure_dir(&dangling).is_err());
    assert!(
        !base.path().join("nothing").exists(),
        "the link was not followed"
    );

    // Not a directory.
    let file = base.path().join("pony-ssh-file");
    std::fs::write(&file, "").unwrap();
    assert!(secure_dir(&file)
        .unwrap_err()
        .to_string()
        .contains("not a directory"));

    // Owned by someone else (only root can give a folder away to check this).
    if crate::sys::euid() == 0 {
        let theirs = base.path().join("pony-ssh-theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let error = secure_dir(&theirs).unwrap_err().to_string();
        assert!(error.contains("owned by uid 65534"), "{error}");
    }
}

#[test]
fn sweep_removes_dead_runs_dirs_and_keeps_live_and_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        path
    };
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let me = std::process::id().to_string();

    // A killed run: its master's socket no longer answers and its pony is gone.
    let dead = make(".ssh-connectionDEAD");
    drop(std::os::unix::net::UnixListener::bind(dead.join("master")).unwrap());
    std::fs::write(dead.join(OWNER_FILE), dead_pid.to_string()).unwrap();
    // The master exited and removed its socket; its pony is gone too.
    let gone = make(".ssh-connectionGONE");
    std::fs::write(gone.join(OWNER_FILE), dead_pid.to_string()).unwrap();
    // A master that still answers (a live run, or a dead one's within ControlPersist).
    let live = make(".ssh-connectionLIVE");
    let _listening = std::os::unix::net::UnixListener::bind(live.join("master")).unwrap();
    std::fs::write(live.join(OWNER_FILE), dead_pid.to_string()).unwrap();
    // A handshake in progress: no socket, no owner yet.
    let fresh = make(".ssh-connectionNEW");
    std::fs::write(fresh.join("log"), "").unwrap();
    // A running pony's master that died: that pony cleans up after itself.
    let mine = make(".ssh-connectionMINE");
    std::fs::write(mine.join(OWNER_FILE), me).unwrap();
    let other = make("unrelated");

    sweep_stale_control_dirs(dir.path());
    assert!(!dead.exists(), "a dead run's dir is removed");
    assert!(!gone.exists(), "a dead run's dir without socket is removed");
    assert!(live.join("master").exists(), "a live master is kept");
    assert!(fresh.exists(), "a handshake in progress is kept");
    assert!(mine.exists(), "a live pony's dir is kept");
    assert!(other.exists(), "only .ssh-connection* dirs are touched");
}
