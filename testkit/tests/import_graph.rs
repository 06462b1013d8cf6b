//! The workspace's crates have no import circles between their modules (issue 13): a module
//! may use the ones below it, never one that uses it back. This reads each crate's sources,
//! builds the graph of `crate::` references between modules (doc links and tests included,
//! plain comments excluded), and fails naming a circle if there is one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`a`, `sim::engine`) of every `.rs` file under `src`, except binaries and the
/// crate root.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("source dir is readable") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if name.is_empty() || name == "lib" || name == "main" {
                continue;
            }
            out.insert(name, p);
        }
    }
    out
}

/// Every path mentioned after `crate::` (expanding `crate::{a, b::c}` groups).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Up to the matching brace; split at top-level commas.
            let (mut depth, mut end) = (1usize, group.len());
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let mut d = 0usize;
            let mut item = String::new();
            for ch in group[..end].chars() {
                match ch {
                    '{' => d += 1,
                    '}' => d -= 1,
                    ',' if d == 0 => {
                        out.push(std::mem::take(&mut item).trim().to_string());
                        continue;
                    }
                    _ => {}
                }
                item.push(ch);
            }
            out.push(item.trim().to_string());
        } else {
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path);
        }
    }
    out
}

/// The module a `crate::` path lands in: its longest prefix that is a module.
fn owner(path: &str, mods: &BTreeMap<String, PathBuf>) -> Option<String> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].join("::"))
        .find(|m| mods.contains_key(m))
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let mut g = BTreeMap::new();
    for (name, file) in &mods {
        let text = std::fs::read_to_string(file).expect("source is readable");
        // Doc links count too: a module's documentation pointing up at its users is a
        // circle for a reader, if not for the compiler. Plain `//` comments do not count.
        let code: String = text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                !t.starts_with("//") || t.starts_with("///") || t.starts_with("//!")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let deps: BTreeSet<String> = crate_paths(&code)
            .iter()
            .filter_map(|p| owner(p, &mods))
            // A module's own children and itself are not imports of another module.
            .filter(|d| d != name && !d.starts_with(&format!("{name}::")))
            .collect();
        g.insert(name.clone(), deps);
    }
    g
}

/// A circle in `g`, if any, as the modules along it.
fn circle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut c = path[start..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Open);
        path.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

#[test]
fn the_checker_finds_a_circle_and_reads_groups() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        circle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    g.get_mut("c").map(BTreeSet::clear);
    assert_eq!(circle(&g), None);
    assert_eq!(
        crate_paths("use crate::{a::{X, Y}, b};\nlet z = crate::c::f();"),
        vec!["a::{X, Y}", "b", "c::f"]
    );
}

#[test]
fn no_crate_has_an_import_circle() {
    for krate in ["htlc", "router", "hub", "simulations", "contracts"] {
        let dir = src(krate);
        if !dir.exists() {
            continue;
        }
        let g = graph(&dir);
        assert!(g.len() > 2, "{krate}: too few modules read from {dir:?}");
        if let Some(c) = circle(&g) {
            panic!("{krate}: import circle {}", c.join(" → "));
        }
    }
}
