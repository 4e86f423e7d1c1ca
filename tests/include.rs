//! `include:`: a file of steps (a role) with its own vars, templates relative to it,
//! deployed on real sshd hosts; plan and graph say where each included step came from;
//! a rollback rebuilds the playbook from the run's snapshot even once the role's files
//! are gone. (Cycles, missing files and name clashes are cases of tests/bad.)

mod support;

use std::path::Path;
use support::{code, lab_with, only_run, text};

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[test]
fn an_included_role_deploys_its_template_on_ssh_hosts_and_plan_and_graph_name_its_file() {
    let lab = lab_with(1, 1, 2);
    let dir = lab.dir.path();
    write(
        &dir.join("roles/postfix/tasks.yaml"),
        "vars:\n  relay: default-relay\n  port: 25\nsteps:\n  - name: config\n    template: { src: templates/main.cf.j2, dest: \"{{ root }}/main.cf\" }\n    rollback: rm -f {{ root }}/main.cf\n  - name: reload\n    needs: [config]\n    run: echo reloaded {{ relay }} > {{ root }}/reloaded\n",
    );
    write(
        &dir.join("roles/postfix/templates/main.cf.j2"),
        "relayhost = {{ relay }}:{{ port }} # {{ host.name }}\n",
    );
    let playbook = lab.playbook(
        "name: with-role\nsteps:\n  - name: prep\n    run: touch {{ root }}/prep\n  - include: roles/postfix/tasks.yaml\n    name: mta\n    needs: [prep]\n    vars: { relay: relay.example }\n  - name: after\n    needs: [mta/reload]\n    run: touch {{ root }}/after\n",
    );
    let pb = playbook.to_str().unwrap();
    let inv = lab.inventory.to_str().unwrap();

    let plan = lab.pony(&["plan", "-i", inv, pb]).output().unwrap();
    assert_eq!(code(&plan), 0, "{}", text(&plan));
    let shown = text(&plan);
    assert!(shown.contains("mta/config"), "{shown}");
    assert!(
        shown.contains("from ") && shown.contains("roles/postfix/tasks.yaml:5 (include mta)"),
        "{shown}"
    );
    assert!(
        shown.contains("roles/postfix/tasks.yaml:8 (include mta)"),
        "{shown}"
    );
    let graph = lab
        .pony(&["graph", "-i", inv, pb, "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(code(&graph), 0, "{}", text(&graph));
    let graph: serde_json::Value = serde_json::from_slice(&graph.stdout).unwrap();
    let reload = graph["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mta/reload")
        .unwrap();
    assert!(reload["from"]
        .as_str()
        .unwrap()
        .ends_with("roles/postfix/tasks.yaml:8 (include mta)"));
    let needs: Vec<&str> = reload["needs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["step"].as_str().unwrap())
        .collect();
    assert_eq!(needs, ["mta/config", "prep"]);

    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in lab.host_names() {
        let root = lab.root(&host);
        // The include's vars beat the role's defaults; the template came from the role's folder.
        assert_eq!(
            std::fs::read_to_string(root.join("main.cf")).unwrap(),
            format!("relayhost = relay.example:25 # {host}\n")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("reloaded")).unwrap(),
            "reloaded relay.example\n"
        );
        assert!(root.join("after").exists());
    }

    // The role is gone: the run's snapshot still holds it and its template.
    std::fs::rename(dir.join("roles"), dir.join("roles.moved")).unwrap();
    let (run, _) = only_run(&lab.state);
    let out = lab.pony(&["rollback", &run, "--yes"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in lab.host_names() {
        assert!(
            !lab.root(&host).join("main.cf").exists(),
            "{host}: rolled back"
        );
    }
}
