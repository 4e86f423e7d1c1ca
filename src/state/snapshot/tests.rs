//! The snapshot written and read back.

use super::*;

const INVENTORY: &str = "name: one\ndefaults: { connection: local }\nregions:\n  r1:\n    clusters:\n      c1:\n        hosts:\n          h1: {}\n          h2: {}\n";
const PLAYBOOK: &str = "name: greet\nsteps:\n  - { name: hello, run: \"echo {{ greeting }} {{ token }}\" }\n  - { name: motd, template: { src: \"t/{{ host.name }}.j2\", dest: /tmp/motd } }\n";

fn written(dir: &Path, vars: SnapshotVars) -> Snapshot {
    let inventory = dir.join("inv.yaml");
    let playbook = dir.join("sub/pb.yaml");
    std::fs::create_dir_all(dir.join("sub/t")).unwrap();
    std::fs::create_dir_all(dir.join("state/runs/run")).unwrap();
    std::fs::write(&inventory, INVENTORY).unwrap();
    std::fs::write(&playbook, PLAYBOOK).unwrap();
    for host in ["h1", "h2"] {
        std::fs::write(dir.join(format!("sub/t/{host}.j2")), "hi {{ host.name }}").unwrap();
    }
    let snapshot = Snapshot {
        dir: dir.to_path_buf(),
        vars: vars.clone(),
        origin: Origin {
            inventory_path: inventory.clone(),
            playbook_path: playbook.clone(),
        },
        files: None,
    };
    let given = [("token".to_string(), "s3cret".to_string())];
    let mut options = snapshot.plan_options(Secrets::Given(&given)).unwrap();
    options
        .extra_vars
        .entry("greeting".into())
        .or_insert_with(|| "hi".into());
    let plan = crate::plan::build(
        Arc::new(crate::inventory::load(&inventory).unwrap()),
        Arc::new(crate::playbook::load(&playbook).unwrap()),
        &options,
    )
    .unwrap();
    Snapshot::write(
        &dir.join("state/runs/run"),
        &inventory,
        &playbook,
        vars,
        &plan,
        "run",
    )
    .unwrap()
}

#[test]
fn sources_are_held_by_content_and_read_from_the_snapshot_only() {
    let dir = tempfile::tempdir().unwrap();
    let vars = SnapshotVars {
        vars: BTreeMap::from([("greeting".to_string(), "hi".to_string())]),
        secret_vars: vec!["token".into()],
        limit: None,
        vaults: Vec::new(),
    };
    let snapshot = written(dir.path(), vars);
    let manifest = snapshot.files.clone().unwrap();
    // Both hosts' templates, named as the playbook names them; one blob each, plus
    // the playbook's and the inventory's.
    let names: Vec<&str> = manifest.files.keys().map(String::as_str).collect();
    assert_eq!(names, ["t/h1.j2", "t/h2.j2"]);
    assert!(manifest.playbook.path.is_absolute());
    let blobs = std::fs::read_dir(dir.path().join("state").join(BLOBS_DIR))
        .unwrap()
        .count();
    assert_eq!(
        blobs, 3,
        "h1's and h2's templates have one content: one blob"
    );
    assert!(snapshot.changed_files().is_empty());

    std::fs::write(dir.path().join("sub/t/h1.j2"), "changed").unwrap();
    std::fs::remove_file(dir.path().join("sub/t/h2.j2")).unwrap();
    let changes: Vec<(String, &str)> = snapshot
        .changed_files()
        .into_iter()
        .map(|c| (c.name, c.change))
        .collect();
    assert_eq!(
        changes,
        [
            ("t/h1.j2".to_string(), "changed"),
            ("t/h2.j2".to_string(), "gone")
        ]
    );
    let loaded = Snapshot::load(&snapshot.dir).unwrap();
    let given = [("token".to_string(), "s3cret".to_string())];
    let plan = loaded.plan(Secrets::Given(&given)).unwrap();
    assert_eq!(
        plan.playbook.read_source("t/h1.j2").unwrap(),
        b"hi {{ host.name }}"
    );
    assert_eq!(
        plan.playbook.read_source("t/h2.j2").unwrap(),
        b"hi {{ host.name }}"
    );
    let not_held = plan.playbook.read_source("t/h3.j2").unwrap_err();
    assert!(
        not_held.to_string().contains("not in the run's snapshot"),
        "{not_held}"
    );
}

#[test]
fn what_is_written_loads_back_into_the_same_plan_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let vars = SnapshotVars {
        vars: BTreeMap::from([("greeting".to_string(), "hi".to_string())]),
        secret_vars: vec!["token".into()],
        limit: Some("h2".into()),
        vaults: Vec::new(),
    };
    let first = written(dir.path(), vars.clone());
    // The original files may change or go: the snapshot does not.
    std::fs::remove_file(dir.path().join("inv.yaml")).unwrap();
    let snapshot = Snapshot::load(&first.dir).unwrap();
    assert_eq!(snapshot.vars, vars);
    assert_eq!(
        snapshot.origin.playbook_path,
        dir.path().join("sub/pb.yaml")
    );
    // Secret values are not on disk.
    let on_disk = std::fs::read_to_string(first.dir.join(VARS_FILE)).unwrap();
    assert!(!on_disk.contains("s3cret"));

    let given = [("token".to_string(), "s3cret".to_string())];
    let plan = snapshot.plan(Secrets::Given(&given)).unwrap();
    assert_eq!(plan.host_count(), 1, "the limit came back");
    assert_eq!(plan.extra_vars["greeting"], serde_yaml::Value::from("hi"));
    assert_eq!(plan.extra_vars["token"], serde_yaml::Value::from("s3cret"));
    assert_eq!(plan.playbook.dir(), dir.path().join("sub"));

    let shown = snapshot.plan(Secrets::Placeholder).unwrap();
    assert_eq!(
        shown.extra_vars["token"],
        serde_yaml::Value::from(SECRET_PLACEHOLDER)
    );

    match snapshot.plan(Secrets::Given(&[])) {
        Err(SnapshotError::MissingSecrets { names }) => assert_eq!(names, ["token"]),
        other => panic!("expected MissingSecrets, got {other:?}"),
    }
}

#[test]
fn a_damaged_snapshot_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = written(dir.path(), SnapshotVars::default());
    std::fs::write(snapshot.dir.join(VARS_FILE), "{\"vars\": [1]}").unwrap();
    let error = Snapshot::load(&snapshot.dir).unwrap_err();
    assert!(matches!(error, SnapshotError::Json { .. }), "{error:?}");
    assert!(error.to_string().contains("vars.json"), "{error}");
    std::fs::remove_file(snapshot.dir.join(ORIGIN_FILE)).unwrap();
    std::fs::write(snapshot.dir.join(VARS_FILE), "{}").unwrap();
    let error = Snapshot::load(&snapshot.dir).unwrap_err();
    assert!(matches!(error, SnapshotError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("run.json"), "{error}");
}
