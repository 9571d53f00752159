use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh_sftp::server::StatusReply;

use super::*;

#[test]
fn filesystem_errors_map_to_the_status_codes_openssh_uses() {
    let code = |errno| status_for_io(&io::Error::from_raw_os_error(errno));
    assert_eq!(code(libc::ENOENT), StatusCode::NoSuchFile);
    assert_eq!(code(libc::ENOTDIR), StatusCode::NoSuchFile);
    assert_eq!(code(libc::ELOOP), StatusCode::NoSuchFile);
    assert_eq!(code(libc::EACCES), StatusCode::PermissionDenied);
    assert_eq!(code(libc::EPERM), StatusCode::PermissionDenied);
    assert_eq!(code(libc::EINVAL), StatusCode::BadMessage);
    assert_eq!(code(libc::ENOSYS), StatusCode::OpUnsupported);
    assert_eq!(code(libc::EEXIST), StatusCode::Failure);
    assert_eq!(code(libc::ENOSPC), StatusCode::Failure);
    // Errors without an errno go by their kind.
    let kind = |kind| status_for_io(&io::Error::new(kind, "x"));
    assert_eq!(kind(io::ErrorKind::NotFound), StatusCode::NoSuchFile);
    assert_eq!(
        kind(io::ErrorKind::PermissionDenied),
        StatusCode::PermissionDenied
    );
    assert_eq!(kind(io::ErrorKind::InvalidInput), StatusCode::BadMessage);
    assert_eq!(kind(io::ErrorKind::Unsupported), StatusCode::OpUnsupported);
    assert_eq!(kind(io::ErrorKind::Other), StatusCode::Failure);
}

#[test]
fn session_errors_map_to_status_codes_with_messages() {
    let reply = StatusReply::from(SftpError::TooManyHandles);
    assert_eq!(reply.status_code, StatusCode::Failure);
    assert!(reply.error_message.unwrap().contains("too many open"));
    let reply = StatusReply::from(SftpError::Io(io::Error::from_raw_os_error(libc::ENOENT)));
    assert_eq!(reply.status_code, StatusCode::NoSuchFile);
    assert!(reply.error_message.unwrap().contains("No such file"));
    assert_eq!(StatusReply::from(SftpError::Eof).status_code, StatusCode::Eof);
    assert_eq!(
        StatusReply::from(SftpError::NoSuchHandle("9".into())).status_code,
        StatusCode::Failure
    );
    assert_eq!(
        StatusReply::from(SftpError::Unsupported("x".into())).status_code,
        StatusCode::OpUnsupported
    );
    assert_eq!(
        StatusReply::from(SftpError::Malformed("x".into())).status_code,
        StatusCode::BadMessage
    );
}

#[test]
fn normalizing_removes_dots_and_applies_parents_without_the_filesystem() {
    let n = |p: &str| normalize(Path::new(p)).to_string_lossy().into_owned();
    assert_eq!(n("/home/u/./new/../file"), "/home/u/file");
    assert_eq!(n("/home/u/"), "/home/u");
    assert_eq!(n("/.."), "/");
    assert_eq!(n("/../../a"), "/a");
    assert_eq!(n("/a//b/./c/.."), "/a/b");
    assert_eq!(n("/"), "/");
}

#[test]
fn real_paths_are_canonical_when_they_exist_and_normalized_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir(root.join("real")).unwrap();
    std::os::unix::fs::symlink("real", root.join("link")).unwrap();
    let server = SftpServer::new(root.clone(), root.clone(), Accounts::default());
    let real = |p: &str| real_path(&server.resolve(p));
    let root_text = root.to_string_lossy().into_owned();
    assert_eq!(real("."), root_text);
    assert_eq!(real(""), root_text);
    assert_eq!(real("link/../real/."), format!("{root_text}/real"));
    // Symlinks resolve when the path exists...
    assert_eq!(real("link"), format!("{root_text}/real"));
    // ...and a path that does not exist is normalized lexically.
    assert_eq!(
        real("missing/../also-missing/x"),
        format!("{root_text}/also-missing/x")
    );
    assert_eq!(real("/no/such/./dir/.."), "/no/such");
}

/// Found by the `sftp_paths` fuzz target: `~//./root` left the home for
/// `/./root` (a joined absolute path replaces the home).
#[test]
fn a_tilde_path_with_doubled_slashes_stays_in_the_home() {
    let accounts = Accounts::parse("alice:x:1000:1000::/home/alice:/bin/bash\n", "");
    let home = Path::new("/home/me");
    assert_eq!(
        expand_tilde("~//./root", home, &accounts).unwrap(),
        "/home/me/./root"
    );
    assert_eq!(
        expand_tilde("~alice///etc/passwd", home, &accounts).unwrap(),
        "/home/alice/etc/passwd"
    );
}

#[test]
fn tilde_expands_to_homes() {
    let accounts = Accounts::parse(
        "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        "root:x:0:\nstaff:x:50:alice\n",
    );
    let home = Path::new("/home/me");
    assert_eq!(expand_tilde("~", home, &accounts).unwrap(), "/home/me/");
    assert_eq!(expand_tilde("~/a/b", home, &accounts).unwrap(), "/home/me/a/b");
    assert_eq!(
        expand_tilde("~alice/x", home, &accounts).unwrap(),
        "/home/alice/x"
    );
    assert_eq!(expand_tilde("plain/~x", home, &accounts).unwrap(), "plain/~x");
    assert_eq!(expand_tilde("~nobody/x", home, &accounts), None);
    assert_eq!(accounts.user_name(1000), "alice");
    assert_eq!(accounts.user_name(4242), "4242");
    assert_eq!(accounts.group_name(50), "staff");
}

#[test]
fn long_names_look_like_ls() {
    assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
    assert_eq!(mode_string(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
    assert_eq!(mode_string(libc::S_IFREG | 0o2644), "-rw-r-Sr--");
    assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
    assert_eq!(mode_string(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14 22:13:20 UTC
    assert_eq!(ls_date(1_700_000_000 - 3600, now), "Nov 14 21:13");
    assert_eq!(ls_date(0, now), "Jan  1  1970");
    assert_eq!(ls_date(951_782_400, now), "Feb 29  2000");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"12345").unwrap();
    std::fs::set_permissions(&file, Permissions::from_mode(0o640)).unwrap();
    let metadata = std::fs::symlink_metadata(&file).unwrap();
    let line = long_name("notes.txt", &metadata, &Accounts::default(), SystemTime::now());
    assert!(line.starts_with("-rw-r-----   1 "), "{line}");
    assert!(line.ends_with(" notes.txt"), "{line}");
    assert!(line.contains(&format!(" {} ", metadata.uid())), "{line}");
}

/// SFTP strings, as extension requests carry them.
fn sftp_strings(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn status_of(error: russh_sftp::client::error::Error) -> StatusCode {
    match error {
        russh_sftp::client::error::Error::Status(status) => status.status_code,
        other => panic!("expected a status, got {other:?}"),
    }
}

/// The protocol library's own client, in process over a duplex pipe:
/// what OpenSSH's client cannot be made to do (a thousand open handles,
/// readlink, a directory handle used as a file).
#[tokio::test]
async fn a_library_client_sees_limits_handles_listings_and_links() {
    use russh_sftp::client::RawSftpSession;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(root.join("f"), b"abc").unwrap();
    let (client, server) = tokio::io::duplex(1 << 20);
    let served = tokio::spawn(serve(
        server,
        SftpServer::new(root.clone(), root.clone(), Accounts::default()),
    ));
    let raw = RawSftpSession::new(client);
    let version = raw.init().await.unwrap();
    assert_eq!(version.version, 3);
    assert_eq!(
        version
            .extensions
            .get("posix-rename@openssh.com")
            .map(String::as_str),
        Some("1")
    );
    let limits = raw.limits().await.unwrap();
    assert_eq!(limits.max_open_handles, MAX_HANDLES as u64);
    assert_eq!(limits.max_read_len, u64::from(MAX_READ_LEN));

    // Reads end with an EOF status.
    let none = FileAttributes::empty();
    let file = raw.open("f", OpenFlags::READ, none.clone()).await.unwrap().handle;
    assert_eq!(raw.read(&file, 0, 100).await.unwrap().data, b"abc");
    assert_eq!(
        status_of(raw.read(&file, 3, 100).await.unwrap_err()),
        StatusCode::Eof
    );

    // Past the cap, opening fails clearly until a handle is closed.
    let mut handles = vec![file];
    while handles.len() < MAX_HANDLES {
        handles.push(raw.open("f", OpenFlags::READ, none.clone()).await.unwrap().handle);
    }
    match raw.opendir(".").await.unwrap_err() {
        russh_sftp::client::error::Error::Status(status) => {
            assert_eq!(status.status_code, StatusCode::Failure);
            assert!(status.error_message.contains("too many open"), "{status:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        status_of(raw.open("f", OpenFlags::READ, none.clone()).await.unwrap_err()),
        StatusCode::Failure
    );
    raw.close(handles.pop().unwrap()).await.unwrap();
    let listing = raw.opendir(".").await.unwrap().handle;

    // A listing: the dots first, then the entries, then EOF.
    let names: Vec<String> = raw
        .readdir(&listing)
        .await
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.filename)
        .collect();
    assert_eq!(names, [".", "..", "f"]);
    assert_eq!(
        status_of(raw.readdir(&listing).await.unwrap_err()),
        StatusCode::Eof
    );
    assert_eq!(
        status_of(raw.read(&listing, 0, 1).await.unwrap_err()),
        StatusCode::Failure
    );
    raw.close(&listing).await.unwrap();
    assert_eq!(
        status_of(raw.close(&listing).await.unwrap_err()),
        StatusCode::Failure
    );

    // OpenSSH's order: the target first, then the link.
    raw.symlink("f", "link").await.unwrap();
    assert_eq!(std::fs::read_link(root.join("link")).unwrap(), Path::new("f"));
    assert_eq!(raw.readlink("link").await.unwrap().files[0].filename, "f");

    // Plain rename never replaces; posix-rename does.
    std::fs::write(root.join("g"), b"g").unwrap();
    assert_eq!(
        status_of(raw.rename("f", "g").await.unwrap_err()),
        StatusCode::Failure
    );
    assert_eq!(std::fs::read(root.join("g")).unwrap(), b"g");
    match raw
        .extended("posix-rename@openssh.com", sftp_strings(&["f", "g"]))
        .await
        .unwrap()
    {
        Packet::Status(status) => assert_eq!(status.status_code, StatusCode::Ok),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(root.join("g")).unwrap(), b"abc");
    assert!(!root.join("f").exists());

    assert_eq!(
        status_of(raw.stat("f").await.unwrap_err()),
        StatusCode::NoSuchFile
    );
    match raw.extended("no-such@example.com", Vec::new()).await.unwrap() {
        Packet::Status(status) => assert_eq!(status.status_code, StatusCode::OpUnsupported),
        other => panic!("{other:?}"),
    }
    let home = raw.expand_path("~/g").await.unwrap();
    assert_eq!(home.files[0].filename, root.join("g").to_string_lossy());

    // The session ends when the client goes away.
    drop(raw);
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the server stops at the end of its input")
        .unwrap();
}
