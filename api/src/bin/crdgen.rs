//! Writes the generated CRD: `crdgen [PATH]` (default: standard output).
//! `make crds` runs it to refresh `crds/container.yaml`.

use std::io::Write;

fn main() -> std::io::Result<()> {
    let yaml = hatchway_api::crd::crd_yaml();
    match std::env::args_os().nth(1) {
        Some(path) if path == "-h" || path == "--help" => {
            println!(
                "usage: crdgen [PATH]\n\nWrites the Container CustomResourceDefinition as YAML to PATH, or to standard output."
            );
            Ok(())
        }
        Some(path) => std::fs::write(path, yaml),
        None => std::io::stdout().write_all(yaml.as_bytes()),
    }
}
