//! `pony inventory import` of Ansible inventories, through the binary: a 1,050-host INI
//! inventory in 7 datacentre groups (children groups, group and host vars, ranges) and the
//! same fleet as `ansible-inventory --list` JSON both become a pony inventory that `pony
//! check` accepts and `pony inventory` lists with the regions, clusters, roles, addresses,
//! users and ports the Ansible inventory gave; a host that maps to no region is refused
//! with exit 2, naming the file, the host and the fix, and nothing is written.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use support::{code, exit_text, pony_bare};

const DCS: [&str; 7] = ["ams", "fra", "iad", "sjc", "gru", "sin", "syd"];
const MX_PER_DC: usize = 100;
const IMAP_PER_DC: usize = 50;

/// What `pony inventory --format json` must show for a host.
#[derive(Debug, PartialEq)]
struct Expected {
    region: String,
    cluster: String,
    roles: Vec<String>,
    address: String,
    user: String,
    port: Option<u64>,
}

fn address(dc: usize, kind: usize, n: usize) -> String {
    format!("10.{dc}.{kind}.{n}")
}

/// The fleet: per datacentre `mx_<dc>` (`mx-<dc>-[001:100]`) and `imap_<dc>` groups
/// under `dc_<dc>:children`; `mta` and `imap` groups of groups; the user from `all`,
/// the imap port from `imap_<dc>:vars`, one host's port of its own.
fn fleet() -> (String, serde_json::Value, BTreeMap<String, Expected>) {
    let mut ini = String::from(
        "[all:vars]\nansible_user=deploy\nansible_python_interpreter=/usr/bin/python3\n\n",
    );
    let mut expected = BTreeMap::new();
    let mut groups = serde_json::Map::new();
    let mut hostvars = serde_json::Map::new();
    let mut add = |name: String, vars: serde_json::Value| {
        hostvars.insert(name, vars);
    };
    for (d, dc) in DCS.iter().enumerate() {
        let mut mx_hosts = Vec::new();
        ini.push_str(&format!("[mx_{dc}]\n"));
        for n in 1..=MX_PER_DC {
            let name = format!("mx-{dc}-{n:03}");
            let own_port = (n == 7).then_some(2207);
            ini.push_str(&format!("{name} ansible_host={}", address(d, 1, n)));
            if let Some(port) = own_port {
                ini.push_str(&format!(" ansible_port={port}"));
            }
            ini.push('\n');
            let mut vars = serde_json::json!({ "ansible_host": address(d, 1, n), "ansible_user": "deploy", "ansible_python_interpreter": "/usr/bin/python3" });
            if let Some(port) = own_port {
                vars["ansible_port"] = port.into();
            }
            add(name.clone(), vars);
            mx_hosts.push(name.clone());
            expected.insert(
                name,
                Expected {
                    region: format!("dc_{dc}"),
                    cluster: format!("mx_{dc}"),
                    roles: vec!["mta".into()],
                    address: address(d, 1, n),
                    user: "deploy".into(),
                    port: own_port,
                },
            );
        }
        // A range line: Ansible expands `imap-<dc>-[01:50]`; no address, so the name is it.
        ini.push_str(&format!("\n[imap_{dc}]\nimap-{dc}-[01:{IMAP_PER_DC}]\n\n[imap_{dc}:vars]\nansible_port=2222\n\n[dc_{dc}:children]\nmx_{dc}\nimap_{dc}\n\n"));
        let mut imap_hosts = Vec::new();
        for n in 1..=IMAP_PER_DC {
            let name = format!("imap-{dc}-{n:02}");
            add(
                name.clone(),
                serde_json::json!({ "ansible_user": "deploy", "ansible_port": 2222, "ansible_python_interpreter": "/usr/bin/python3" }),
            );
            imap_hosts.push(name.clone());
            expected.insert(
                name.clone(),
                Expected {
                    region: format!("dc_{dc}"),
                    cluster: format!("imap_{dc}"),
                    roles: vec!["imap".into()],
                    address: name,
                    user: "deploy".into(),
                    port: Some(2222),
                },
            );
        }
        groups.insert(format!("mx_{dc}"), serde_json::json!({ "hosts": mx_hosts }));
        groups.insert(
            format!("imap_{dc}"),
            serde_json::json!({ "hosts": imap_hosts }),
        );
        groups.insert(
            format!("dc_{dc}"),
            serde_json::json!({ "children": [format!("mx_{dc}"), format!("imap_{dc}")] }),
        );
    }
    let children =
        |prefix: &str| -> String { DCS.iter().map(|dc| format!("{prefix}_{dc}\n")).collect() };
    ini.push_str(&format!(
        "[mta:children]\n{}\n[imap:children]\n{}",
        children("mx"),
        children("imap")
    ));
    let dc_groups: Vec<String> = DCS.iter().map(|dc| format!("dc_{dc}")).collect();
    let mut all_children = dc_groups.clone();
    all_children.extend([
        "mta".to_string(),
        "imap".to_string(),
        "ungrouped".to_string(),
    ]);
    groups.insert(
        "all".into(),
        serde_json::json!({ "children": all_children }),
    );
    groups.insert("mta".into(), serde_json::json!({ "children": DCS.iter().map(|dc| format!("mx_{dc}")).collect::<Vec<_>>() }));
    groups.insert("imap".into(), serde_json::json!({ "children": DCS.iter().map(|dc| format!("imap_{dc}")).collect::<Vec<_>>() }));
    groups.insert("ungrouped".into(), serde_json::json!({ "hosts": [] }));
    groups.insert("_meta".into(), serde_json::json!({ "hostvars": hostvars }));
    (ini, serde_json::Value::Object(groups), expected)
}

fn import(dir: &Path, input: &Path, out: &Path) -> std::process::Output {
    pony_bare()
        .current_dir(dir)
        .args(["inventory", "import"])
        .arg(input)
        .args([
            "--region-groups",
            "dc_*",
            "--cluster-groups",
            "mx_*,imap_*",
            "--name",
            "mail",
        ])
        .arg("--to")
        .arg(out)
        .output()
        .unwrap()
}

/// `pony inventory --format json` of the imported file, by host.
fn listed(dir: &Path, inventory: &Path) -> BTreeMap<String, Expected> {
    let out = pony_bare()
        .current_dir(dir)
        .args(["inventory", "--format", "json", "-i"])
        .arg(inventory)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["inventory"], "mail");
    doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
            (
                text(&h["name"]),
                Expected {
                    region: text(&h["region"]),
                    cluster: text(&h["cluster"]),
                    roles: h["roles"].as_array().unwrap().iter().map(text).collect(),
                    address: text(&h["address"]),
                    user: text(&h["ssh"]["user"]),
                    port: h["ssh"]["port"].as_u64(),
                },
            )
        })
        .collect()
}

fn check(dir: &Path, inventory: &Path) {
    let playbook = dir.join("p.yaml");
    std::fs::write(
        &playbook,
        "name: p\nsteps:\n  - { name: hello, run: \"true\" }\n",
    )
    .unwrap();
    let out = pony_bare()
        .current_dir(dir)
        .args(["check", "-i"])
        .arg(inventory)
        .arg(&playbook)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
}

#[test]
fn an_ini_and_a_list_json_of_1050_hosts_in_7_datacentres_import_to_the_same_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let (ini, json, expected) = fleet();
    assert_eq!(expected.len(), DCS.len() * (MX_PER_DC + IMAP_PER_DC));
    let ini_file = dir.path().join("hosts.ini");
    std::fs::write(&ini_file, ini).unwrap();
    let json_file = dir.path().join("list.json");
    std::fs::write(&json_file, serde_json::to_string_pretty(&json).unwrap()).unwrap();

    for input in [&ini_file, &json_file] {
        let out_file = dir.path().join(format!(
            "{}.pony.yaml",
            input.file_stem().unwrap().to_string_lossy()
        ));
        let out = import(dir.path(), input, &out_file);
        assert_eq!(code(&out), 0, "{}: {}", input.display(), exit_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("imported 1,050 hosts in 7 regions, 14 clusters"),
            "{stderr}"
        );
        assert!(
            stderr.contains("left out: `ansible_python_interpreter` on 1,050 hosts"),
            "{stderr}"
        );
        check(dir.path(), &out_file);
        let listed = listed(dir.path(), &out_file);
        assert_eq!(listed.len(), expected.len());
        for (name, want) in &expected {
            assert_eq!(
                listed.get(name),
                Some(want),
                "{}: host {name}",
                input.display()
            );
        }
        // Written once per level, not once per host.
        let yaml = std::fs::read_to_string(&out_file).unwrap();
        assert_eq!(
            yaml.matches("user: deploy").count(),
            1,
            "{}",
            input.display()
        );
        assert_eq!(
            yaml.matches("port: 2222").count(),
            DCS.len(),
            "{}",
            input.display()
        );
    }
}

#[test]
fn a_host_in_no_region_group_is_refused_naming_the_file_the_host_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("hosts.ini");
    std::fs::write(&ini, "[dc_ams]\nmx1\n[web]\nstray1\n").unwrap();
    let out_file = dir.path().join("out.yaml");
    let out = import(dir.path(), &ini, &out_file);
    assert_eq!(code(&out), 2, "{}", exit_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hosts.ini"), "{stderr}");
    assert!(stderr.contains("host `stray1` has no region"), "{stderr}");
    assert!(stderr.contains("pony_region"), "{stderr}");
    assert!(!out_file.exists(), "nothing is written");

    std::fs::write(&ini, "[dc_ams]\nmx1 ansible_port=\"22\n").unwrap();
    let out = import(dir.path(), &ini, &out_file);
    assert_eq!(code(&out), 2, "{}", exit_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hosts.ini:2"), "{stderr}");
    assert!(!out_file.exists(), "nothing is written");
}

/// A fleet of `connection: local` hosts, as a CMDB would print it.
fn local_fleet(hosts: &[&str]) -> String {
    let hosts: String = hosts
        .iter()
        .map(|h| format!("          {h}: {{}}\n"))
        .collect();
    format!("name: cmdb\ndefaults:\n  connection: local\nregions:\n  r1:\n    clusters:\n      c1:\n        hosts:\n{hosts}")
}

#[test]
fn a_dynamic_inventory_runs_once_and_a_resume_uses_the_fleet_it_printed_at_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("fleet-now.yaml"), local_fleet(&["h1", "h2"])).unwrap();
    let script = path("cmdb.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = --list ] || exit 9\necho called >> {}\ncat {}\n",
            path("calls").display(),
            path("fleet-now.yaml").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let playbook = path("p.yaml");
    std::fs::write(
        &playbook,
        format!(
            "name: p\nstrategy: {{ max_unavailable: 100% }}\nsteps:\n  - {{ name: mark, run: \"echo {{{{ host.name }}}} > marked\" }}\n  - {{ name: hold, needs: [mark], run: \"touch holding; while [ ! -e {} ]; do sleep 0.05; done; touch held\" }}\n",
            path("gate").display()
        ),
    )
    .unwrap();
    let state = path("state");
    let host_file = |host: &str, file: &str| state.join("hosts").join(host).join(file);
    let calls = || {
        std::fs::read_to_string(path("calls"))
            .unwrap_or_default()
            .lines()
            .count()
    };

    let mut deploy = support::Reaped::new(
        support::pony(&state, &["deploy", "-i"])
            .arg(&script)
            .arg(&playbook)
            .arg("--yes")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::wait_until("both hosts holding", || {
        ["h1", "h2"]
            .iter()
            .all(|h| host_file(h, "holding").exists())
    });
    deploy.child().kill().unwrap();
    deploy.child().wait().unwrap();
    assert_eq!(calls(), 1, "the command ran once for the deploy");

    // The CMDB now says otherwise; the run keeps the fleet it started with.
    std::fs::write(path("fleet-now.yaml"), local_fleet(&["h1", "h3"])).unwrap();
    std::fs::write(path("gate"), "").unwrap();
    let (run, _) = support::only_run(&state);
    let status = support::pony(&state, &["status", &run, "--output", "json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["files_changed"], serde_json::json!([]), "{status:#}");
    let resumed = support::pony(&state, &["resume", &run]).output().unwrap();
    assert_eq!(code(&resumed), 0, "{}", exit_text(&resumed));
    assert_eq!(calls(), 1, "a resume does not run the command again");
    for host in ["h1", "h2"] {
        assert!(host_file(host, "held").exists(), "{host}");
        assert_eq!(
            std::fs::read_to_string(host_file(host, "marked"))
                .unwrap()
                .trim(),
            host
        );
    }
    assert!(
        !state.join("hosts").join("h3").exists(),
        "h3 joined the CMDB after the start"
    );

    // A new deploy runs the command again and gets today's fleet.
    let out = support::pony(&state, &["deploy", "-i"])
        .arg(&script)
        .arg(&playbook)
        .arg("--yes")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    assert_eq!(calls(), 2);
    assert!(host_file("h3", "held").exists());
}

#[test]
fn a_dynamic_inventory_may_print_ansible_list_json_with_pony_region_vars_and_its_failure_is_named()
{
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ec2.sh");
    let json = r#"{"_meta":{"hostvars":{"mx1":{"ansible_host":"10.9.0.1","pony_region":"eu"},"mx2":{"ansible_host":"10.9.0.2","pony_region":"us","pony_cluster":"edge"}}},"all":{"children":["mta"]},"mta":{"hosts":["mx1","mx2"]}}"#;
    std::fs::write(&script, format!("#!/bin/sh\ncat <<'J'\n{json}\nJ\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = pony_bare()
        .args(["inventory", "--format", "json", "-i"])
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = doc["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(
        (hosts[0]["region"].as_str(), hosts[0]["cluster"].as_str()),
        (Some("eu"), Some("eu-hosts"))
    );
    assert_eq!(
        (hosts[1]["region"].as_str(), hosts[1]["cluster"].as_str()),
        (Some("us"), Some("edge"))
    );
    assert_eq!(hosts[1]["address"], "10.9.0.2");
    assert_eq!(hosts[1]["roles"], serde_json::json!(["mta"]));

    std::fs::write(
        &script,
        "#!/bin/sh\necho 'cmdb: connection refused' >&2\nexit 3\n",
    )
    .unwrap();
    let out = pony_bare()
        .args(["inventory", "-i"])
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", exit_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ec2.sh") && stderr.contains("cmdb: connection refused"),
        "{stderr}"
    );
}
