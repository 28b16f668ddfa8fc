//! Every TOML example in the README and `docs/` is what peapod accepts: a pod spec (a snippet
//! of `[[volumes]]` or `[[containers]]` without `[pod]` is checked under a `[pod]` of its own)
//! parses without a problem, and anything else is a config file that loads.

use std::path::{Path, PathBuf};

use crate::config::{Config, Overrides};
use crate::spec::PodSpec;

/// The README and every page of `docs/`.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The ```toml blocks of `text`: (line of the fence, content).
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start().starts_with("```toml") => {
                current = Some((i + 1, String::new()))
            }
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.push(current.take().expect("open"))
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    blocks
}

#[test]
fn every_toml_example_of_the_docs_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (line, block) in toml_blocks(&text) {
            let at = format!("{}:{line}", page.display());
            let pod_like = ["[[containers]]", "[[volumes]]", "[[init_containers]]"]
                .iter()
                .any(|k| block.contains(k));
            let result = if block.contains("[pod]") || pod_like {
                let text = if block.contains("[pod]") {
                    block.clone()
                } else {
                    format!("[pod]\nname = \"docs\"\n{block}")
                };
                PodSpec::parse(Path::new("/docs/pod.toml"), &text)
                    .map(drop)
                    .map_err(|e| e.to_string())
            } else {
                let f = dir.path().join("peapod.toml");
                std::fs::write(&f, &block).unwrap();
                Config::load(Some(&f), &Overrides::default())
                    .map(drop)
                    .map_err(|e| e.to_string())
            };
            checked += 1;
            if let Err(e) = result {
                failures.push(format!("{at}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 4, "only {checked} examples found");
}

/// The example pods of `configs/` (every `*.toml` with a `[pod]`) are valid specs.
#[test]
fn every_example_pod_is_accepted() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    for e in std::fs::read_dir(&configs).expect("configs/").flatten() {
        let path = e.path();
        let text = std::fs::read_to_string(&path).unwrap();
        if path.extension().is_some_and(|x| x == "toml") && text.contains("[pod]") {
            if let Err(e) = PodSpec::parse(&path, &text) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} example pods");
}
