//! The committed CRD must be exactly what the Rust types generate.

#[test]
fn committed_crd_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/container.yaml");
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}; run `make crds` to generate it"));
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
