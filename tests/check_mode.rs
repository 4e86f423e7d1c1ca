//! `pony deploy --check --diff` against the real sshd fleet: it asks the hosts and
//! changes nothing on them (files, markers, no run written), shows each template's diff
//! against the file in place with secrets masked, the guards' answers and the commands
//! that would run; after a real deploy the same check finds every file unchanged.

mod support;

use support::{code, lab_with, text};

const PLAYBOOK: &str = r#"
name: checked
vars: { b: "20" }
steps:
  - name: conf
    template: { src: app.conf.j2, dest: "{{ root }}/etc/app.conf" }
  - name: guarded
    run: echo ran >> {{ root }}/guarded
    creates: "{{ root }}/etc"
  - name: restart
    needs: [conf]
    run: echo restarted >> {{ root }}/restarted
"#;

const TEMPLATE: &str = "a = 1\nb = {{ b }}\nc = 3\npassword = {{ db_password }}\n";

#[test]
fn check_and_diff_show_what_would_change_and_change_nothing() {
    let lab = lab_with(1, 1, 2);
    std::fs::write(lab.path("app.conf.j2"), TEMPLATE).unwrap();
    let playbook = lab.playbook(PLAYBOOK);
    let hosts = lab.host_names();
    for host in &hosts {
        std::fs::create_dir_all(lab.root(host).join("etc")).unwrap();
        std::fs::write(lab.root(host).join("etc/app.conf"), "a = 1\nb = 2\nc = 3\n").unwrap();
    }
    let before: Vec<Vec<String>> = hosts.iter().map(|h| files(&lab.root(h))).collect();
    let check = |extra: &[&str]| {
        let mut args = vec!["--check", "--secret-var", "db_password=hunter2"];
        args.extend_from_slice(extra);
        lab.deploy(&playbook, &args)
    };
    let out = check(&["--diff"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    for (host, files_before) in hosts.iter().zip(&before) {
        assert!(report.contains(&format!("\n{host}\n")), "{report}");
        // Nothing written on the host: the same files with the same content.
        assert_eq!(&files(&lab.root(host)), files_before, "{host}");
    }
    assert!(report.contains("-b = 2\n"), "{report}");
    assert!(report.contains("+b = 20\n"), "{report}");
    assert!(report.contains("+password = ***\n"), "{report}");
    assert!(!report.contains("hunter2") && !text(&out).contains("hunter2"));
    assert!(report.contains("skipped: creates:"), "{report}");
    assert!(report.contains("restart  would run"), "{report}");
    assert!(
        report.contains("summary: 2 would run, 2 would change a file, 0 unchanged, 2 skipped by a guard, 0 unknown"),
        "{report}"
    );
    // No run was written, and no lock is left.
    assert!(
        !lab.state.join("runs").exists()
            || std::fs::read_dir(lab.state.join("runs")).unwrap().count() == 0
    );
    // Without --diff: the verdicts, no diff.
    let plain = String::from_utf8_lossy(&check(&[]).stdout).to_string();
    assert!(
        plain.contains("would change") && !plain.contains("+b = 20"),
        "{plain}"
    );

    // Deployed for real, the check finds the files in place.
    let deployed = lab.deploy(&playbook, &["--secret-var", "db_password=hunter2"]);
    assert_eq!(code(&deployed), 0, "{}", text(&deployed));
    let after = check(&["--diff"]);
    let report = String::from_utf8_lossy(&after.stdout).to_string();
    assert!(
        report.contains("0 would change a file, 2 unchanged"),
        "{report}"
    );
    assert!(!report.contains("would change /"), "{report}");
}

/// `--diff` without `--check`, and `--check` with `--dry-run`, are usage errors.
#[test]
fn diff_needs_check_and_check_is_not_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for args in [
        vec!["deploy", "--diff", "playbooks/mail-rollout.yaml"],
        vec![
            "deploy",
            "--check",
            "--dry-run",
            "playbooks/mail-rollout.yaml",
        ],
    ] {
        let out = support::pony(&state, &args).output().unwrap();
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
    }
}

/// Every file under `root` with its content, sorted.
fn files(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let content = std::fs::read_to_string(&path).unwrap_or_default();
                found.push(format!("{}: {content}", path.display()));
            }
        }
    }
    found.sort();
    found
}
