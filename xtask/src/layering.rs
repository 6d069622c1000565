//! The layers of xtask's modules, checked on every `cargo test`: a module
//! imports (`crate::<module>`) only from its own top-level module and the
//! layers below it, and no top-level modules import each other in a cycle.
//!
//! From the bottom: what every layer shares (`progress`, `report`, `testing`),
//! `host`, `distro`, `repo`, `objects`, `build`, `release`, `vm`, and the
//! command line on top (`main`, `preflight`, `test`, `recipe_tests`). A new
//! top-level module must be given its place in `LAYERS`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. Modules of one layer may import each other (no cycles).
const LAYERS: &[&[&str]] = &[
    &["progress", "report", "testing"],
    &["host"],
    &["distro"],
    &["repo"],
    &["objects"],
    &["build"],
    &["release"],
    &["vm"],
    &["main", "preflight", "test", "recipe_tests", "layering"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The source with comments, strings and character literals blanked out
/// (lifetimes are kept: they name nothing).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            out.push(' ');
            i += j;
        } else if let Some(len) = raw_string(rest) {
            out.push_str("\"\"");
            i += len;
        } else if b[i] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest.as_bytes()[j] != b'"' {
                j += if rest.as_bytes()[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i += (j + 1).min(rest.len());
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), else a lifetime.
            let len = if rest[1..].starts_with('\\') {
                rest.get(3..).and_then(|r| r.find('\'')).map(|n| n + 4)
            } else {
                rest[1..]
                    .chars()
                    .next()
                    .filter(|c| rest[1 + c.len_utf8()..].starts_with('\''))
                    .map(|c| c.len_utf8() + 2)
            };
            match len {
                Some(len) => {
                    out.push_str("' '");
                    i += len;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a raw (byte) string literal at the start of `s`.
fn raw_string(s: &str) -> Option<usize> {
    let after_r = s.strip_prefix("br").or_else(|| s.strip_prefix('r'))?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    let body = after_r[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&close)?;
    Some(s.len() - body.len() + end + close.len())
}

/// The top-level names each `crate::` path starts with, in order: one for
/// `crate::a::b`, one per member for `use crate::{a::b, c::{d, e}}`.
fn crate_refs(src: &str) -> Vec<String> {
    let code = code_only(src);
    let mut refs = Vec::new();
    let mut at = 0;
    while let Some(n) = code[at..].find("crate::") {
        let start = at + n;
        at = start + "crate::".len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // a longer name ending in "crate"
        }
        let rest = code[at..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut member_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => member_start = true,
                    c if member_start && (c.is_alphanumeric() || c == '_') => {
                        member_start = false;
                        refs.push(ident(&group[j..]));
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                refs.push(name);
            }
        }
    }
    refs
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `repo/rpm.rs` and `repo.rs` are
/// `repo`.
fn top_module(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// Every file's imports of other top-level modules: (file, module) pairs.
/// A name that is no module (`crate::Command`) is the crate root's: `main`.
fn imports() -> Vec<(String, String, String)> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let from = top_module(relative);
        let text = std::fs::read_to_string(&file).unwrap();
        for name in crate_refs(&text) {
            let to = if layer(&name).is_some() {
                name
            } else {
                "main".to_string()
            };
            if to != from {
                out.push((relative.display().to_string(), from.clone(), to));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Layer violations: a module importing from a layer above its own.
fn upward(imports: &[(String, String, String)]) -> Vec<String> {
    imports
        .iter()
        .filter(|(_, from, to)| layer(to) > layer(from))
        .map(|(file, from, to)| {
            format!(
                "{file}: crate::{to} ({from} is layer {}, {to} is layer {})",
                layer(from).unwrap(),
                layer(to).unwrap()
            )
        })
        .collect()
}

/// A cycle among top-level modules, as `a -> b -> a`, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
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
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(found) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(found);
        }
    }
    None
}

#[test]
fn every_top_level_module_has_a_layer() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(src_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() || name.ends_with(".rs") {
            let module = name.trim_end_matches(".rs").to_string();
            if layer(&module).is_none() {
                missing.push(module);
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "modules with no place in LAYERS: {missing:?}"
    );
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let found = upward(&imports());
    assert!(
        found.is_empty(),
        "imports from a higher layer (order: {LAYERS:?}):\n{}",
        found.join("\n")
    );
}

#[test]
fn top_level_modules_import_each_other_in_no_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, from, to) in imports() {
        edges.entry(from).or_default().insert(to);
    }
    if let Some(found) = cycle(&edges) {
        let files: Vec<String> = imports()
            .into_iter()
            .filter(|(_, from, to)| found.windows(2).any(|w| w[0] == *from && w[1] == *to))
            .map(|(file, _, to)| format!("{file}: crate::{to}"))
            .collect();
        panic!("import cycle: {}\n{}", found.join(" -> "), files.join("\n"));
    }
}

#[test]
fn the_scan_reads_groups_and_skips_comments_and_strings() {
    let src = r##"
use crate::{host::cache, repo::{deb, rpm},
    vm};
// crate::release in a comment
/* crate::build in a block /* nested */ crate::objects */
let s = "crate::distro in a string \" crate::vm";
let r = r#"crate::distro in a raw string"#;
let c = '"'; let l: &'static str = "";
fn f<'a>(x: &'a str) { crate::report::render(x); }
let y = mycrate::thing;
"##;
    assert_eq!(crate_refs(src), ["host", "repo", "vm", "report"]);
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        edges.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
    edges.get_mut("c").unwrap().remove("a");
    assert_eq!(cycle(&edges), None);
}
