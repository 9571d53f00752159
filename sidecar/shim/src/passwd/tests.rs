use super::*;

const PASSWD: &str = "\
# comment
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
broken:x:notanumber:1::/:/bin/sh
short:x:5
+nisuser::::::
app:x:1000:1000:App User,,,:/home/app:\r
";

const GROUP: &str = "\
root:x:0:
wheel:x:10:app,root
docker:x:999:app
app:x:1000:
nogroup:x:65534:
bad:x:zz:app
";

#[test]
fn passwd_entries_are_parsed_and_junk_is_skipped() {
    let users = parse_passwd(PASSWD);
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["root", "daemon", "nobody", "app"]);
    let app = &users[3];
    assert_eq!((app.uid, app.gid), (1000, 1000));
    assert_eq!(app.home, "/home/app");
    assert_eq!(
        app.shell, "",
        "an empty shell field stays empty (the caller falls back)"
    );
}

#[test]
fn users_are_found_by_name_and_by_uid() {
    let db = UserDb {
        users: parse_passwd(PASSWD),
        groups: parse_group(GROUP),
    };
    assert_eq!(db.by_name("nobody").map(|u| u.uid), Some(65534));
    assert_eq!(db.by_uid(0).map(|u| u.name.as_str()), Some("root"));
    assert!(db.by_name("ghost").is_none());
    assert!(db.by_uid(4242).is_none());
}

#[test]
fn supplementary_groups_include_the_primary_group_once() {
    let db = UserDb {
        users: parse_passwd(PASSWD),
        groups: parse_group(GROUP),
    };
    assert_eq!(db.groups_of("app", 1000), vec![1000, 10, 999]);
    assert_eq!(db.groups_of("root", 0), vec![0, 10]);
    assert_eq!(db.groups_of("nobody", 65534), vec![65534]);
}

#[test]
fn a_root_without_etc_files_is_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = UserDb::load(dir.path());
    assert!(db.users.is_empty() && db.groups.is_empty());
}

#[test]
fn files_under_a_root_are_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
    let db = UserDb::load(dir.path());
    assert_eq!(db.users.len(), 4);
    assert_eq!(db.groups.len(), 5);
}
