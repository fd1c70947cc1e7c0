//! The runtime library's modules import one way (schema → models → sampler and gate →
//! workflows): no circle among its top-level modules, and the schema and the solver are
//! leaves. Read from the `crate::` paths of the source, comments and test code left out; run it alone with
//! `cargo test --release -p unpersonal-runtime --test it imports`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules each library module names through `crate::`, outside test code.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        // The binary (main.rs, cli/) is the top layer; lib.rs only declares the modules.
        if matches!(module.as_str(), "main" | "cli" | "lib") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Test modules sit at the end of a file.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let code = code.split("#[cfg(all(test").next().unwrap();
        // Comments (documentation links included) import nothing.
        let code: String = code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let entry = graph.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                entry.insert(name);
            }
        }
    }
    graph
}

/// A circle of imports, if any.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

#[test]
fn the_library_imports_one_way() {
    let graph = imports();
    assert!(graph.len() > 10, "{graph:?}");
    if let Some(found) = circle(&graph) {
        panic!("an import circle: {}\n{graph:#?}", found.join(" → "));
    }
    // The schema reads files and nothing else of the library; the solver knows only the schema.
    let leaf = |module: &str, allowed: &[&str]| {
        let extra: Vec<_> =
            graph[module].iter().filter(|m| !allowed.contains(&m.as_str())).collect();
        assert!(extra.is_empty(), "{module} imports {extra:?}");
    };
    leaf("bundle", &["files"]);
    leaf("solver", &["bundle"]);
    leaf("files", &[]);
}
