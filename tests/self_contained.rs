//! A run is self-contained: its snapshot holds the playbook, the inventory and every
//! template and upload source as they were at the start (content-addressed under
//! `<state dir>/blobs/sha256/`, one blob per distinct content across runs), so `pony
//! resume` and `pony rollback` work from any working directory with the files as they
//! were, even when the originals changed or are gone, and `pony status` says which
//! differ. With `--state postgres://…` the database holds the same, so another state
//! folder resumes with nothing but the database.

mod support;

use std::path::{Path, PathBuf};
use support::db::{pony_db, server};
use support::{code, only_run, pony, text, write_plan, TINY_INVENTORY};

/// A template named per region, an upload, then a step that fails on every host while
/// `marker` exists (so a first deploy stops before any file is placed).
fn playbook(marker: &Path) -> String {
    format!(
        r#"
name: selfc
steps:
  - name: check
    run: "test ! -e {marker}"
  - name: motd
    needs: [check]
    template: {{ src: "templates/motd-{{{{ host.region }}}}.j2", dest: motd }}
    rollback: rm -f motd
  - name: payload
    needs: [motd]
    upload: {{ src: files/payload.txt, dest: payload.txt }}
"#,
        marker = marker.display()
    )
}

/// The playbook, inventory, templates and upload source in `dir`.
fn project(dir: &Path) -> PathBuf {
    let marker = dir.join("stop");
    write_plan(dir, TINY_INVENTORY, playbook(&marker));
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::create_dir_all(dir.join("files")).unwrap();
    for region in ["r1", "r2"] {
        std::fs::write(
            dir.join(format!("templates/motd-{region}.j2")),
            format!("original {region} motd of {{{{ host.name }}}}\n"),
        )
        .unwrap();
    }
    std::fs::write(dir.join("files/payload.txt"), "original payload\n").unwrap();
    marker
}

/// `pony deploy` of the project in `dir` as a person types it there: relative paths.
fn deploy_from(dir: &Path, state: &Path) -> std::process::Output {
    pony(
        state,
        &["deploy", "-i", "inventory.yaml", "playbook.yaml", "--yes"],
    )
    .current_dir(dir)
    .output()
    .unwrap()
}

/// Changes one template, deletes the other and the upload source.
fn edit_and_delete(dir: &Path) {
    std::fs::write(dir.join("templates/motd-r1.j2"), "EDITED {{ host.name }}\n").unwrap();
    std::fs::remove_file(dir.join("templates/motd-r2.j2")).unwrap();
    std::fs::remove_file(dir.join("files/payload.txt")).unwrap();
}

fn host_file(state: &Path, host: &str, name: &str) -> String {
    std::fs::read_to_string(state.join("hosts").join(host).join(name))
        .unwrap_or_else(|e| panic!("{host}'s {name}: {e}"))
}

fn assert_original_files(state: &Path) {
    for (host, region) in [("h1", "r1"), ("h2", "r1"), ("h3", "r2"), ("h4", "r2")] {
        assert_eq!(
            host_file(state, host, "motd"),
            format!("original {region} motd of {host}\n")
        );
        assert_eq!(host_file(state, host, "payload.txt"), "original payload\n");
    }
}

#[test]
fn a_resume_from_another_directory_places_the_files_as_they_were_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (dir, state) = (dir.path(), dir.path().join("state"));
    let marker = project(dir);
    std::fs::write(&marker, "").unwrap();
    let first = deploy_from(dir, &state);
    assert_eq!(code(&first), 1, "{}", text(&first));
    let (run, run_dir) = only_run(&state);
    assert!(!state.join("hosts/h1/motd").exists(), "nothing placed yet");

    std::fs::remove_file(&marker).unwrap();
    edit_and_delete(dir);

    let resumed = pony(&state, &["resume", &run])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    assert_original_files(&state);

    let status = pony(&state, &["status", &run])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status));
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("files differ"), "{said}");
    for (change, name) in [
        ("changed", "templates/motd-r1.j2"),
        ("gone", "templates/motd-r2.j2"),
        ("gone", "files/payload.txt"),
    ] {
        let line = format!("{change}: {}", dir.join(name).display());
        assert!(said.contains(&line), "no `{line}` in:\n{said}");
    }
    assert!(!said.contains("playbook.yaml"), "{said}");

    let json = pony(&state, &["status", &run, "--output", "json"])
        .current_dir("/")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let changed: Vec<&str> = report["files_changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        [
            "files/payload.txt",
            "templates/motd-r1.j2",
            "templates/motd-r2.j2"
        ]
    );

    // The rollback too rebuilds the plan from the snapshot alone.
    let rolled_back = pony(&state, &["rollback", &run, "--yes"])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(code(&rolled_back), 0, "{}", text(&rolled_back));
    assert!(!state.join("hosts/h1/motd").exists());

    // The run's origin is absolute, whatever was typed.
    let origin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(
        origin["playbook_path"].as_str().unwrap(),
        dir.join("playbook.yaml").to_str().unwrap()
    );
}

#[test]
fn runs_of_the_same_files_share_one_blob_per_distinct_content() {
    let dir = tempfile::tempdir().unwrap();
    let (dir, state) = (dir.path(), dir.path().join("state"));
    project(dir);
    for _ in 0..2 {
        let run = deploy_from(dir, &state);
        assert_eq!(code(&run), 0, "{}", text(&run));
    }
    let mut manifests = Vec::new();
    for entry in std::fs::read_dir(state.join("runs")).unwrap() {
        let files = entry.unwrap().path().join("files.json");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&files).unwrap()).unwrap();
        manifests.push(manifest);
    }
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[0], manifests[1], "the same files, the same blobs");
    let sources: Vec<&String> = manifests[0]["files"].as_object().unwrap().keys().collect();
    assert_eq!(
        sources,
        [
            "files/payload.txt",
            "templates/motd-r1.j2",
            "templates/motd-r2.j2"
        ]
    );
    // The playbook, the inventory, two templates and the upload: five contents, five
    // blobs, each named by the sha256 of what it holds.
    let blobs: Vec<PathBuf> = std::fs::read_dir(state.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(blobs.len(), 5, "{blobs:?}");
    for blob in &blobs {
        let content = std::fs::read(blob).unwrap();
        assert_eq!(
            pony::exec::task::sha256(&content),
            blob.file_name().unwrap().to_str().unwrap()
        );
    }
}

#[test]
fn another_state_folder_resumes_from_the_database_alone_with_the_original_files() {
    let pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (state_a, state_b) = (dir.join("state-a"), dir.join("state-b"));
    let marker = project(dir);
    std::fs::write(&marker, "").unwrap();
    let first = pony_db(
        &state_a,
        &url,
        &["deploy", "-i", "inventory.yaml", "playbook.yaml", "--yes"],
    )
    .current_dir(dir)
    .output()
    .unwrap();
    assert_eq!(code(&first), 1, "{}", text(&first));
    let (run, _) = only_run(&state_a);

    // The first machine's folder and the original files are gone.
    std::fs::remove_dir_all(&state_a).unwrap();
    std::fs::remove_file(&marker).unwrap();
    edit_and_delete(dir);

    let resumed = pony_db(&state_b, &url, &["resume", &run])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    assert_original_files(&state_b);
}
