//! The library's shape, checked: each module uses only its own layer and those below it (see
//! the crate's documentation), `host` and `wasm` never use each other, and the graph of modules
//! has no cycle. Read from the sources: every `crate::...` path outside comments is an arrow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of a unit (a top-level module, or a module of `host`, `wasm` or `run`).
fn layer(unit: &str) -> u8 {
    match unit.split("::").next().unwrap_or(unit) {
        "host" | "wasm" | "images" => 2,
        "run" => 3,
        "admission" | "loader" | "daemon" | "client" | "node" => 4,
        _ => 1,
    }
}

/// The folders whose modules are units of their own.
const FOLDERS: [&str; 3] = ["host", "wasm", "run"];

/// The unit of a source file `rel` (relative to `src/`), `None` for the binary's own files.
fn unit_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let top = parts.first()?.clone();
    if ["main", "commands", "logging", "lib"].contains(&top.as_str()) {
        return None;
    }
    if FOLDERS.contains(&top.as_str()) {
        return match parts.get(1).map(String::as_str) {
            None | Some("mod") => Some(top),
            Some(m) => Some(format!("{top}::{m}")),
        };
    }
    Some(top)
}

/// The unit a path `crate::a::b...` names.
fn unit_named(path: &str) -> String {
    let mut it = path.split("::");
    let a = it.next().unwrap_or_default();
    match (FOLDERS.contains(&a), it.next()) {
        (true, Some(b)) if b.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => {
            format!("{a}::{b}")
        }
        _ => a.to_string(),
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// unit -> the units it uses, from the sources under `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(unit) = unit_of(f.strip_prefix(src).unwrap()) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        let uses = g.entry(unit.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let to = unit_named(&path);
                // `crate::{a, b}`: each item.
                if path.is_empty() && rest.starts_with('{') {
                    let items = rest[1..].split('}').next().unwrap_or_default();
                    for item in items.split(',') {
                        let to = unit_named(item.trim());
                        if !to.is_empty() && to != unit {
                            uses.insert(to);
                        }
                    }
                } else if !to.is_empty() && to != unit {
                    uses.insert(to);
                }
            }
        }
    }
    g
}

/// A cycle of `g`, if it has one.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut c = stack[at..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_module_uses_a_layer_above_it_and_the_graph_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    assert!(g.len() > 20, "{} units: the sources were not read", g.len());
    let mut wrong = Vec::new();
    for (from, tos) in &g {
        for to in tos {
            let folder = |u: &str| u.split("::").next().unwrap_or_default().to_string();
            let sideways =
                layer(to) == layer(from) && layer(from) == 2 && folder(to) != folder(from);
            if layer(to) > layer(from) || sideways {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows up or across:\n{}",
        wrong.join("\n")
    );
    assert_eq!(cycle(&g), None, "a cycle");
}
