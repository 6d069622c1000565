//! The layers of xtask's modules, checked on every `cargo test`: a module
//! imports (`crate::<module>`) only from its own top-level module and the
//! layers below it, no top-level modules import each other in a cycle, and
//! neither do the files of one folder (`repo/deb.rs`, `repo/debian.rs`).
//!
//! From the bottom: what every layer shares (`progress`, `report`, `testing`),
//! `host`, `distro`, `repo`, `objects`, `build`, `release`, `vm`, and the
//! command line on top (`main`, `preflight`, `test`, and the test-only
//! `recipe_tests` and `cli_tests`). A new
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
    &[
        "main",
        "preflight",
        "test",
        "recipe_tests",
        "cli_tests",
        "layering",
    ],
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

/// Every `crate::` path, whole: `["repo", "deb", "Package"]` for
/// `crate::repo::deb::Package`, one per member of a group (`use
/// crate::repo::{deb, rpm::Rpm}` gives `["repo", "deb"]` and `["repo", "rpm",
/// "Rpm"]`).
fn crate_paths(src: &str) -> Vec<Vec<String>> {
    let code = code_only(src);
    let mut paths = Vec::new();
    let mut at = 0;
    while let Some(n) = code[at..].find("crate::") {
        let start = at + n;
        at = start + "crate::".len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        use_tree(&code[at..], Vec::new(), &mut paths);
    }
    paths
}

/// Reads the path or use tree at the start of `s`, pushes `prefix` plus each
/// path it names, and returns how many bytes it read.
fn use_tree(s: &str, prefix: Vec<String>, paths: &mut Vec<Vec<String>>) -> usize {
    let blank = |s: &str| s.len() - s.trim_start().len();
    let given = prefix.len();
    let mut path = prefix;
    let mut i = 0;
    loop {
        i += blank(&s[i..]);
        if s[i..].starts_with('{') {
            i += 1;
            loop {
                i += blank(&s[i..]);
                let rest = &s[i..];
                if rest.is_empty() || rest.starts_with('}') {
                    return (i + 1).min(s.len());
                }
                if rest.starts_with(',') {
                    i += 1;
                    continue;
                }
                let read = use_tree(rest, path.clone(), paths);
                i += read.max(rest.chars().next().map_or(1, char::len_utf8));
            }
        }
        let name = ident(&s[i..]);
        if name.is_empty() {
            // `a::*`: the glob names a.
            if path.len() > given {
                paths.push(path);
            }
            return i;
        }
        i += name.len();
        path.push(name);
        let rest = &s[i..];
        if let Some(after) = rest.trim_start().strip_prefix("::") {
            i += rest.len() - after.len();
            continue;
        }
        paths.push(path);
        // `a as b`: b names nothing in the crate.
        let rest = &s[i..];
        if let Some(after) = rest.trim_start().strip_prefix("as") {
            if after.starts_with(char::is_whitespace) {
                let alias = blank(after);
                i += rest.len() - after.len() + alias + ident(&after[alias..]).len();
            }
        }
        return i;
    }
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

/// The files and folders directly in `dir`, by stem: `repo/deb.rs` and
/// `repo/deb/` are both `deb`.
fn siblings(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect()
}

/// Imports between the files of one folder, as (importing file, folder,
/// from, to): `repo/deb.rs` naming `crate::repo::debian` is `deb` -> `debian`
/// in `repo`. A file under `vm/sanitizer/` is `sanitizer` in `vm` and one of
/// its own files in `vm/sanitizer`.
fn file_imports() -> Vec<(String, String, String, String)> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let parts: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        let paths = crate_paths(&std::fs::read_to_string(&file).unwrap());
        for depth in 1..parts.len() {
            let folder = &parts[..depth];
            let from = &parts[depth];
            let names = siblings(&src.join(folder.join("/")));
            for path in &paths {
                if path.len() > depth && path[..depth] == *folder {
                    let to = &path[depth];
                    if to != from && names.contains(to) {
                        out.push((
                            relative.display().to_string(),
                            folder.join("/"),
                            from.clone(),
                            to.clone(),
                        ));
                    }
                }
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

/// Imports between the files of a folder that close a cycle and are not
/// broken yet, as (`folder/from`, `to`), each with why. The check ignores
/// these edges, so any other cycle still fails it; a broken one is taken off.
const CYCLES_NOT_BROKEN_YET: &[(&str, &str)] = &[];

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

#[test]
fn the_files_of_each_folder_import_each_other_in_no_cycle() {
    let imports = file_imports();
    let mut folders: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (_, folder, from, to) in &imports {
        let allowed = CYCLES_NOT_BROKEN_YET.contains(&(&format!("{folder}/{from}"), to));
        if !allowed {
            let edges = folders.entry(folder.clone()).or_default();
            edges.entry(from.clone()).or_default().insert(to.clone());
        }
    }
    let mut found = Vec::new();
    for (folder, edges) in &folders {
        if let Some(cycle) = cycle(edges) {
            found.push(format!("{folder}/: {}", cycle.join(" -> ")));
            for (file, f, from, to) in &imports {
                if f == folder && cycle.windows(2).any(|w| w[0] == *from && w[1] == *to) {
                    found.push(format!(
                        "  {file}: crate::{}::{to}",
                        folder.replace('/', "::")
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "import cycles between files:\n{}",
        found.join("\n")
    );
}

#[test]
fn whole_paths_are_read_through_groups_and_renames() {
    let src = r#"
use crate::repo::{deb, rpm::{self, Rpm as R}, debian::*};
let k = crate::distro::kernel::Kernel::default();
use crate::vm::vm_test as lab;
"#;
    let want: Vec<Vec<&str>> = vec![
        vec!["repo", "deb"],
        vec!["repo", "rpm", "self"],
        vec!["repo", "rpm", "Rpm"],
        vec!["repo", "debian"],
        vec!["distro", "kernel", "Kernel", "default"],
        vec!["vm", "vm_test"],
    ];
    assert_eq!(crate_paths(src), want);
}
