//! The committed CRD must be exactly what the Rust types generate.

#[test]
fn committed_crd_matches_the_types() {
    // Read where the test runs (cargo and nextest set the variable): a
    // binary built from another clone sharing the target dir reads this one.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from);
    let path = dir.join("../crds/container.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `make crds` to generate it",
            path.display()
        )
    });
    let generated = hatchway_api::crd::crd_yaml();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map(|i| format!("first difference at line {}", i + 1))
            .unwrap_or_else(|| "lengths differ".to_owned());
        panic!(
            "crds/container.yaml is stale ({first}): the CRD types changed; run `make crds` and commit the result"
        );
    }
}
