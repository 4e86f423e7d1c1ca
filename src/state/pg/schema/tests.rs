use super::*;

fn table(name: &str, select: bool, write: bool) -> Relation {
    Relation {
        name: name.into(),
        sequence: false,
        owned_by: None,
        select,
        insert: write,
        update: write,
        delete: write,
        usage: false,
    }
}

fn sequence(name: &str, table: &str, usage: bool) -> Relation {
    Relation {
        name: name.into(),
        sequence: true,
        owned_by: Some(table.into()),
        select: false,
        insert: false,
        update: false,
        delete: false,
        usage,
    }
}

/// A schema as the docs' reader role sees it: USAGE, SELECT on every table, nothing more.
fn reader() -> Found {
    Found {
        role: "ro".into(),
        database: "ops".into(),
        exists: true,
        owner: Some("owner".into()),
        usage: true,
        create_schema: false,
        create_in_schema: false,
        relations: vec![
            table("control", true, false),
            sequence("control_id_seq", "control", false),
            table("journal", true, false),
            sequence("journal_seq_seq", "journal", false),
            table("runs", true, false),
            table(VERSIONS_TABLE, true, false),
        ],
    }
}

#[test]
fn a_reader_may_read_and_is_told_each_privilege_writing_needs() {
    let found = reader();
    assert!(found.may_read_version());
    assert!(found.missing(Access::Read, "pony").is_empty());
    assert_eq!(
        found.missing(Access::Control, "pony"),
        ["INSERT on control", "USAGE on control_id_seq"]
    );
    assert_eq!(
        found.missing(Access::Write, "pony"),
        [
            "INSERT on control, journal, runs",
            "UPDATE on control, journal, runs",
            "DELETE on control, journal, runs",
            "USAGE on control_id_seq, journal_seq_seq"
        ],
        "schema_migrations is only read"
    );
}

#[test]
fn a_writer_with_the_documented_grants_lacks_nothing_and_without_usage_lacks_it_first() {
    let mut found = reader();
    for relation in &mut found.relations {
        if relation.sequence {
            relation.usage = true;
        } else if relation.name != VERSIONS_TABLE {
            (relation.insert, relation.update, relation.delete) = (true, true, true);
        }
    }
    for access in [Access::Read, Access::Control, Access::Write] {
        assert!(found.missing(access, "pony").is_empty(), "{access:?}");
    }
    found.usage = false;
    assert!(!found.may_read_version());
    assert_eq!(
        found.missing(Access::Read, "pony"),
        ["USAGE on schema pony"]
    );
}

#[test]
fn the_grants_a_hint_prints_name_the_schema_and_the_role() {
    assert_eq!(
        Access::Read.grants("mail_eu", "ro"),
        "GRANT USAGE ON SCHEMA mail_eu TO ro; GRANT SELECT ON ALL TABLES IN SCHEMA mail_eu TO ro;"
    );
    assert!(Access::Control.grants("pony", "ops").contains(
        "GRANT INSERT ON pony.control TO ops; GRANT USAGE ON SEQUENCE pony.control_id_seq TO ops;"
    ));
    assert!(Access::Write
        .grants("pony", "ci")
        .contains("GRANT USAGE ON ALL SEQUENCES IN SCHEMA pony TO ci;"));
}

#[test]
fn migrations_are_numbered_in_order_from_one() {
    for (index, (version, _, _)) in MIGRATIONS.iter().enumerate() {
        assert_eq!(*version, index as i32 + 1);
    }
    assert_eq!(latest(), MIGRATIONS.len() as i32);
}
