use super::*;

fn mapping(region: &str, cluster: Option<&str>) -> GroupMapping {
    GroupMapping {
        region_groups: Some(Globs::new(region).unwrap()),
        cluster_groups: cluster.map(|c| Globs::new(c).unwrap()),
    }
}

fn ini(text: &str) -> Groups {
    ansible::parse(text, ansible::Format::Ini).unwrap()
}

const TWO_DCS: &str = "\
[mx_eu]
mx1.eu ansible_host=10.0.0.1
mx2.eu ansible_host=10.0.0.2
[imap_eu]
imap1.eu ansible_host=10.0.1.1 ansible_port=2222 ansible_become=yes
[dc_eu:children]
mx_eu
imap_eu
[mx_us]
mx1.us ansible_host=10.1.0.1
[dc_us:children]
mx_us
[mta:children]
mx_eu
mx_us
[all:vars]
ansible_user=deploy
mail_root=/srv/mail
[dc_eu:vars]
mail_root=/data/mail
[mx_eu:vars]
queue_max=20000
";

#[test]
fn groups_become_regions_clusters_and_roles_and_vars_merge_as_in_ansible() {
    let imported = import(
        &ini(TWO_DCS),
        "fleet",
        &mapping("dc_*", Some("mx_*,imap_*")),
    )
    .unwrap();
    assert_eq!(
        (imported.hosts, imported.regions, imported.clusters),
        (4, 2, 3)
    );
    assert_eq!(imported.left_out.get("ansible_become"), Some(&1));
    // What pony's own loader makes of the written inventory, host by host.
    let inventory =
        crate::inventory::parse(std::path::Path::new("fleet.yaml"), &imported.yaml).unwrap();
    let host = |name: &str| &inventory.hosts[inventory.host_id(name).unwrap()];
    let region = |name: &str| inventory.regions[host(name).region].name.as_str();
    let cluster = |name: &str| inventory.clusters[host(name).cluster].name.as_str();
    let var = |name: &str, key: &str| host(name).vars.get(key).cloned();
    assert_eq!((region("mx2.eu"), cluster("mx2.eu")), ("dc_eu", "mx_eu"));
    assert_eq!(
        (region("imap1.eu"), cluster("imap1.eu")),
        ("dc_eu", "imap_eu")
    );
    assert_eq!((region("mx1.us"), cluster("mx1.us")), ("dc_us", "mx_us"));
    assert_eq!(host("mx2.eu").roles, ["mta"]);
    assert!(host("imap1.eu").roles.is_empty());
    assert_eq!(host("mx2.eu").address.as_deref(), Some("10.0.0.2"));
    assert_eq!(host("imap1.eu").ssh.port, Some(2222));
    assert_eq!(host("mx1.us").ssh.port, None);
    for name in ["mx1.eu", "imap1.eu", "mx1.us"] {
        assert_eq!(host(name).ssh.user.as_deref(), Some("deploy"), "{name}");
    }
    // all < dc_eu < mx_eu < the host's own.
    assert_eq!(var("mx1.eu", "mail_root"), Some(Value::from("/data/mail")));
    assert_eq!(
        var("imap1.eu", "mail_root"),
        Some(Value::from("/data/mail"))
    );
    assert_eq!(var("mx1.us", "mail_root"), Some(Value::from("/srv/mail")));
    assert_eq!(var("mx1.eu", "queue_max"), Some(Value::from(20000)));
    assert_eq!(var("imap1.eu", "queue_max"), None);
    assert_eq!(var("imap1.eu", "ansible_become"), None);
    // Shared settings are written once: the fleet's user under defaults.
    let doc: Value = serde_yaml::from_str(&imported.yaml).unwrap();
    assert_eq!(doc["defaults"]["ssh"]["user"], Value::from("deploy"));
    assert_eq!(
        imported.yaml.matches("deploy").count(),
        1,
        "{}",
        imported.yaml
    );
}

#[test]
fn a_host_without_a_region_is_named_with_the_fix() {
    let errors = import(&ini("[web]\nw1\n"), "f", &mapping("dc_*", None)).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("host `w1` has no region"), "{errors:?}");
    assert!(errors[0].contains("--region-groups"), "{errors:?}");
    let errors = import(
        &ini("[dc_a]\nw1\n[dc_b]\nw1\n"),
        "f",
        &mapping("dc_*", None),
    )
    .unwrap_err();
    assert!(
        errors[0].contains("2 groups matching --region-groups"),
        "{errors:?}"
    );
}

#[test]
fn pony_region_and_cluster_vars_win_and_a_region_without_clusters_gets_one() {
    let groups = ini("[mx]\nm1\nm2 pony_cluster=edge\n[mx:vars]\npony_region=eu-west\n");
    let imported = import(
        &groups,
        "f",
        &GroupMapping {
            region_groups: None,
            cluster_groups: None,
        },
    )
    .unwrap();
    let doc: Value = serde_yaml::from_str(&imported.yaml).unwrap();
    let clusters = &doc["regions"]["eu-west"]["clusters"];
    assert!(
        clusters["eu-west-hosts"]["hosts"].get("m1").is_some(),
        "{}",
        imported.yaml
    );
    assert!(
        clusters["edge"]["hosts"].get("m2").is_some(),
        "{}",
        imported.yaml
    );
    assert!(!imported.yaml.contains("pony_region"), "{}", imported.yaml);
}
