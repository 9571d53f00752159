//! The gateway proofs reproduce `api/tests/vectors/gateway-auth.json`
//! (computed independently, with Python's hmac) byte for byte. The file is
//! read at run time: a missing file or any changed digit fails this test.
//! It is a copy of `../shared/test-vectors/gateway-auth.json`, kept in the
//! repository so a clone alone runs `make test`; where the shared original
//! is beside the clone, the two must be identical.

use hatchway_api::proof::{
    CtrKey, ctr_key, request_auth, respond_auth, verify_request_auth, verify_respond_auth,
};
use serde_json::Value;
use std::path::PathBuf;

/// This crate's directory when the test runs (cargo and nextest set
/// `CARGO_MANIFEST_DIR`): a test binary built from another clone that
/// shares the target dir still reads this clone's files.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
}

fn vectors() -> PathBuf {
    crate_dir().join("tests/vectors/gateway-auth.json")
}

#[test]
fn the_copy_of_the_vectors_is_the_shared_original() {
    // The independently computed original, when the shared directory is
    // beside the clone.
    let shared_path = crate_dir().join("../../shared/test-vectors/gateway-auth.json");
    let Ok(shared) = std::fs::read(&shared_path) else {
        eprintln!(
            "{} is not here: only the repository's copy is checked",
            shared_path.display()
        );
        return;
    };
    let path = vectors();
    let copy = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        copy == shared,
        "{} differs from {}: copy the shared file over it",
        path.display(),
        shared_path.display()
    );
}

fn field<'a>(case: &'a Value, name: &str) -> Option<&'a str> {
    case.get(name)
        .map(|v| v.as_str().unwrap_or_else(|| panic!("{name} is not a string")))
}

#[test]
fn gateway_auth_vectors_match_byte_for_byte() {
    let path = vectors();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the vectors at {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("vectors file is JSON");
    let cases = doc["cases"].as_array().expect("vectors file has a `cases` array");
    assert!(
        cases.len() >= 3,
        "expected at least 3 vector cases, found {}",
        cases.len()
    );

    let mut checked = 0;
    for case in cases {
        let name = field(case, "name").expect("every case has a name");
        let root = field(case, "root_secret").expect("every case has a root_secret");
        let uid = field(case, "container_uid").expect("every case has a container_uid");
        let want_key = field(case, "ctr_key_hex").expect("every case has ctr_key_hex");

        let key = ctr_key(root.as_bytes(), uid);
        assert_eq!(key.expose_hex(), want_key, "{name}: ctr_key");
        assert_eq!(CtrKey::from_hex(want_key).unwrap(), key, "{name}: parsed key");
        checked += 1;

        let Some(cert_hex) = field(case, "server_cert_der_hex") else {
            continue;
        };
        let cert = hex::decode(cert_hex).unwrap_or_else(|e| panic!("{name}: certificate hex: {e}"));
        let want_req =
            field(case, "request_auth_hex").expect("a case with a certificate has request_auth_hex");
        let want_resp =
            field(case, "respond_auth_hex").expect("a case with a certificate has respond_auth_hex");

        assert_eq!(request_auth(&key, &cert), want_req, "{name}: request_auth");
        assert_eq!(respond_auth(&key, want_req), want_resp, "{name}: respond_auth");
        assert!(
            verify_request_auth(&key, &cert, want_req),
            "{name}: request_auth verifies"
        );
        assert!(
            verify_respond_auth(&key, want_req, want_resp),
            "{name}: respond_auth verifies"
        );
        checked += 2;
    }
    assert_eq!(checked, 7, "every vector field was checked");
}

#[test]
fn proofs_from_one_case_never_verify_in_another() {
    let text = std::fs::read_to_string(vectors()).expect("vectors file is readable");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let with_cert: Vec<_> = cases
        .iter()
        .filter(|c| c.get("server_cert_der_hex").is_some())
        .collect();
    assert!(with_cert.len() >= 2);
    let (real, attacker) = (with_cert[0], with_cert[1]);
    let key = CtrKey::from_hex(field(real, "ctr_key_hex").unwrap()).unwrap();
    let real_cert = hex::decode(field(real, "server_cert_der_hex").unwrap()).unwrap();
    // A proof made for the attacker's certificate is useless against the real gateway.
    assert!(!verify_request_auth(
        &key,
        &real_cert,
        field(attacker, "request_auth_hex").unwrap()
    ));
    // A response made for one request never answers another.
    assert!(!verify_respond_auth(
        &key,
        field(real, "request_auth_hex").unwrap(),
        field(attacker, "respond_auth_hex").unwrap()
    ));
    // The other container's key does not prove anything for this certificate.
    let other = CtrKey::from_hex(field(&cases[2], "ctr_key_hex").unwrap()).unwrap();
    assert_ne!(other, key);
    assert!(!verify_request_auth(
        &other,
        &real_cert,
        field(real, "request_auth_hex").unwrap()
    ));
}
