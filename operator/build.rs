//! The operator embeds the web page's files (operator/src/router/ui.rs):
//! ours from web/, xterm.js from web/node_modules, which `npm ci` installs
//! from web/package-lock.json (hack/deps does it for every make target).

use std::path::Path;

const NEEDED: [&str; 3] = [
    "node_modules/@xterm/xterm/lib/xterm.js",
    "node_modules/@xterm/xterm/css/xterm.css",
    "node_modules/@xterm/addon-fit/lib/addon-fit.js",
];

fn main() {
    // Read when the script runs, not baked in when it was compiled: a
    // script built for another checkout sharing the target directory
    // would look in that checkout.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let web = Path::new(&manifest_dir).join("../web");
    println!(
        "cargo:rerun-if-changed={}",
        web.join("package-lock.json").display()
    );
    for file in NEEDED {
        let path = web.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        assert!(
            path.is_file(),
            "{} is missing: the web page's pinned assets are not installed; run `hack/deps test` \
             (or `npm ci --prefix web`)",
            path.display()
        );
    }
}
