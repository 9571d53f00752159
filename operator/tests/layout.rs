//! The operator's module layout, checked from its sources: the router's
//! modules depend on each other without a cycle (a request's way through
//! them reads top-down), and the reconciler uses nothing of the router's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of a file without comments and without its unit tests.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names `text` reaches through `super::` (as `super::a`, `super::{a, b}`
/// or `super::super::a`).
fn super_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("super::") {
        rest = &rest[at + "super::".len()..];
        let mut tail = rest;
        while let Some(t) = tail.strip_prefix("super::") {
            tail = t;
        }
        if let Some(group) = tail.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        } else {
            names.insert(
                tail.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    names
}

#[test]
fn the_router_modules_have_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/router");
    let module_of = |path: &Path| -> String {
        let rel = path.strip_prefix(&root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        first.trim_end_matches(".rs").to_owned()
    };
    let files = sources(&root);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f))
        .filter(|m| m != "mod")
        .collect();
    assert!(
        modules.contains("routes") && modules.contains("access"),
        "{modules:?}"
    );
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        if module == "mod" {
            continue;
        }
        let entry = uses.entry(module.clone()).or_default();
        entry.extend(
            super_names(&code(file))
                .into_iter()
                .filter(|n| n != &module && modules.contains(n)),
        );
    }
    // Depth-first search for a way back to where it started.
    fn path_back(
        uses: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        seen: &mut Vec<String>,
    ) -> bool {
        for next in uses.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if !seen.contains(next) {
                seen.push(next.clone());
                if path_back(uses, start, next, seen) {
                    return true;
                }
                seen.pop();
            }
        }
        false
    }
    for module in uses.keys() {
        let mut seen = vec![module.clone()];
        assert!(
            !path_back(&uses, module, module, &mut seen),
            "a cycle through router/{module}: {} (uses: {uses:#?})",
            seen.join(" → ")
        );
    }
}

#[test]
fn the_reader_finds_every_use_through_super() {
    // The reader itself, on the three ways code names a sibling module.
    assert_eq!(
        super_names("use super::{a, b::C};\nuse super::super::d;\nsuper::e::f();"),
        ["a", "b", "d", "e"].into_iter().map(String::from).collect()
    );
}

#[test]
fn the_reconciler_uses_nothing_of_the_router() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/reconcile");
    for file in sources(&root) {
        let code = code(&file);
        assert!(
            !code.contains("router::") && !super_names(&code).contains("router"),
            "{} uses the router",
            file.display()
        );
    }
}
