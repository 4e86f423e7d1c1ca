use super::*;

const INV: &str = r#"
name: t
defaults:
  ssh: { user: deploy, port: 22 }
  vars: { mail_root: /srv/mail, tier: default }
regions:
  eu:
    ssh: { jump: bastion.eu }
    vars: { tier: region }
    clusters:
      eu-mx:
        roles: [mta]
        vars: { tier: cluster }
        hosts:
          mx-[01:03]: { address: "10.0.0.[11:13]" }
          mx-99: { roles: [canary], vars: { tier: host }, ssh: { port: 2222 } }
  us:
    clusters:
      us-store:
        roles: [store]
        hosts:
          st-1:
"#;

#[test]
fn inherits_nearest_wins() {
    let inv = parse(Path::new("inv.yaml"), INV).unwrap();
    assert_eq!(inv.hosts.len(), 5);
    let mx02 = &inv.hosts[inv.host_id("mx-02").unwrap()];
    assert_eq!(mx02.address.as_deref(), Some("10.0.0.12"));
    assert_eq!(mx02.vars["tier"], serde_yaml::Value::from("cluster"));
    assert_eq!(mx02.vars["mail_root"], serde_yaml::Value::from("/srv/mail"));
    assert_eq!(mx02.ssh.jump.as_deref(), Some("bastion.eu"));
    assert_eq!(mx02.ssh.user.as_deref(), Some("deploy"));
    let mx99 = &inv.hosts[inv.host_id("mx-99").unwrap()];
    assert_eq!(mx99.vars["tier"], serde_yaml::Value::from("host"));
    assert_eq!(mx99.ssh.port, Some(2222));
    assert_eq!(mx99.roles, vec!["mta", "canary"]);
    assert_eq!(mx99.destination(), "mx-99");
    let st1 = &inv.hosts[inv.host_id("st-1").unwrap()];
    assert_eq!(st1.vars["tier"], serde_yaml::Value::from("default"));
    assert_eq!(st1.ssh.jump, None);
    assert_eq!(inv.groups["mta"].len(), 4);
    assert_eq!(inv.groups["eu"].len(), 4);
    assert_eq!(inv.groups["canary"].len(), 1);
}

#[test]
fn tz_is_inherited_nearest_wins_and_checked() {
    let text = r#"
name: t
defaults: { tz: UTC }
regions:
  cn:
    tz: Asia/Shanghai
    clusters:
      gz: { hosts: { gz-1: null, gz-2: { tz: Asia/Urumqi } } }
      bj: { tz: Asia/Harbin, hosts: { bj-1: null } }
  eu:
    clusters:
      dub: { hosts: { dub-1: null } }
"#;
    let inv = parse(Path::new("inv.yaml"), text).unwrap();
    let tz = |h: &str| inv.hosts[inv.host_id(h).unwrap()].tz.clone();
    assert_eq!(tz("gz-1").as_deref(), Some("Asia/Shanghai"));
    assert_eq!(tz("gz-2").as_deref(), Some("Asia/Urumqi"));
    assert_eq!(tz("bj-1").as_deref(), Some("Asia/Harbin"));
    assert_eq!(tz("dub-1").as_deref(), Some("UTC"));
    let bad = text.replace("tz: Asia/Harbin", "tz: Asia/Harbn");
    let err = parse(Path::new("inv.yaml"), &bad).unwrap_err().to_string();
    assert!(
        err.contains("inv.yaml")
            && err.contains("cluster `bj`: unknown time zone `tz: Asia/Harbn`"),
        "{err}"
    );
}

#[test]
fn reports_all_problems_together() {
    let text = r#"
name: t
regions:
  eu:
    clusters:
      mx:
        hosts:
          mx: {}
          a-[1:2]: { address: "10.0.0.[1:3]" }
          b-[9:1]:
  us:
    clusters:
      us-c:
        roles: [eu]
        hosts:
          mx: {}
          us-1:
"#;
    let errors = parse(Path::new("inv.yaml"), text).unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("2 names but address"), "{text}");
    assert!(text.contains("start 9 is greater than end 1"), "{text}");
    assert!(text.contains("duplicate host `mx`"), "{text}");
    assert!(
        text.contains("cluster `mx` has the same name as a host"),
        "{text}"
    );
    assert!(
        text.contains("role `eu` has the same name as a region"),
        "{text}"
    );
}

#[test]
fn unknown_key_suggests() {
    let text = "name: t\nregions:\n  eu:\n    clusters:\n      c:\n        rolse: [mta]\n        hosts: { h: }\n";
    let errors = parse(Path::new("inv.yaml"), text).unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("inv.yaml:6:9"), "{text}");
    assert!(text.contains("unknown key `rolse`"), "{text}");
    assert!(text.contains("did you mean `roles`?"), "{text}");
}
