//! `target/dist/index.json` and `target/dist/SHA256SUMS`, made from what is in
//! target/dist.
//!
//! index.json lists every prebuilt module, one per line with its keys in a
//! fixed order and no spaces, so install_toa.sh picks its kernel's entry with
//! plain shell (no jq) while the file stays valid JSON:
//!
//! ```text
//! {"format":1,"toa_version":"0.1.0","modules":[
//! {"release":"6.1.0-50-amd64","arch":"x86_64","uname_v":"","distro":"debian-12","tarball":"Debian-12-x86_64.tar.gz","tarball_sha256":"…","ko":"Debian-12-x86_64/6.1.0-50-amd64/toa.ko","ko_sha256":"…"}
//! ]}
//! ```
//!
//! SHA256SUMS (`sha256sum -c` format) covers every file that ships.

use crate::host::fs::{sha256_file, write_atomic};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

pub const INDEX: &str = "index.json";
pub const SUMS: &str = "SHA256SUMS";
/// The source tarball (`cargo xtask source`); every other `*.tar.gz` is a
/// per-distro tarball of prebuilt modules.
pub const SOURCE_TARBALL: &str = "toa.tar.gz";

/// `metadata.json` inside a per-distro tarball, as `package` writes it.
#[derive(Debug, Deserialize)]
struct Metadata {
    distro: String,
    arch: String,
    toa_version: String,
    modules: Vec<ModuleMeta>,
}

#[derive(Debug, Deserialize)]
struct ModuleMeta {
    release: String,
    sha256: String,
}

/// One line of index.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub release: String,
    pub arch: String,
    /// `uname -v` the module needs where `release` alone is ambiguous; "" = any.
    pub uname_v: String,
    pub distro: String,
    pub tarball: String,
    pub tarball_sha256: String,
    pub ko: String,
    pub ko_sha256: String,
}

impl Entry {
    fn to_line(&self) -> String {
        format!(
            r#"{{"release":"{}","arch":"{}","uname_v":"{}","distro":"{}","tarball":"{}","tarball_sha256":"{}","ko":"{}","ko_sha256":"{}"}}"#,
            self.release,
            self.arch,
            self.uname_v,
            self.distro,
            self.tarball,
            self.tarball_sha256,
            self.ko,
            self.ko_sha256
        )
    }

    /// Every value goes into the file unescaped and is read back by sed-free
    /// shell pattern matching: only plain path/version characters are allowed.
    fn check(&self) -> Result<()> {
        let fields = [
            ("release", &self.release, false),
            ("arch", &self.arch, false),
            ("uname_v", &self.uname_v, true),
            ("distro", &self.distro, false),
            ("tarball", &self.tarball, false),
            ("tarball_sha256", &self.tarball_sha256, false),
            ("ko", &self.ko, false),
            ("ko_sha256", &self.ko_sha256, false),
        ];
        for (name, value, may_be_empty) in fields {
            if value.is_empty() && !may_be_empty {
                bail!("{}: `{name}` is empty", self.tarball);
            }
            let plain = |c: char| c.is_ascii_alphanumeric() || "._+~-/".contains(c);
            let ok = if name == "uname_v" {
                value.chars().all(|c| plain(c) || " #:()".contains(c))
            } else {
                value.chars().all(plain)
            };
            if !ok {
                bail!(
                    "{}: `{name}` = {value:?} has characters index.json does not carry",
                    self.tarball
                );
            }
        }
        for (name, value) in [
            ("tarball_sha256", &self.tarball_sha256),
            ("ko_sha256", &self.ko_sha256),
        ] {
            if value.len() != 64 || !value.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
                bail!("{}: `{name}` is not a sha256: {value:?}", self.tarball);
            }
        }
        Ok(())
    }
}

/// Writes `index.json` and then `SHA256SUMS` into `dist_dir` from the
/// tarballs, installers and source tarball found there.
pub fn write_index(dist_dir: &Path) -> Result<()> {
    let entries = collect(dist_dir)?;
    let mut index = render(env!("CARGO_PKG_VERSION"), &entries);
    with_programs(
        &mut index,
        &crate::objects::operator_cli::index_lines(dist_dir)?,
    );
    write_atomic(&dist_dir.join(INDEX), index.as_bytes())?;
    // The tarballs were hashed for the index; the other files are small.
    let known: BTreeMap<String, String> = entries
        .iter()
        .map(|e| (e.tarball.clone(), e.tarball_sha256.clone()))
        .collect();
    let sums = sha256sums(dist_dir, &known)?;
    write_atomic(&dist_dir.join(SUMS), sums.as_bytes())?;
    Ok(())
}

/// The index text for `entries`.
pub fn render(toa_version: &str, entries: &[Entry]) -> String {
    let mut out = format!("{{\"format\":1,\"toa_version\":\"{toa_version}\",\"modules\":[\n");
    let lines: Vec<String> = entries.iter().map(Entry::to_line).collect();
    if !lines.is_empty() {
        out.push_str(&lines.join(",\n"));
        out.push('\n');
    }
    out.push_str("]}\n");
    out
}

/// Adds the operator command's builds to a rendered index as a `programs`
/// list after `modules`, one entry a line (installers read modules by line);
/// without builds the index stays as it was.
fn with_programs(index: &mut String, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    if let Some(end) = index.strip_suffix("]}\n").map(str::len) {
        index.truncate(end);
        index.push_str(&format!("],\"programs\":[\n{}\n]}}\n", lines.join(",\n")));
    }
}

/// Per-distro tarballs in `dist_dir`, by name.
fn distro_tarballs(dist_dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(dist_dir).with_context(|| format!("reading {}", dist_dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file()
            && name.ends_with(".tar.gz")
            && !name.starts_with('.')
            && name != SOURCE_TARBALL
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// One entry per module of every per-distro tarball, each checked against the
/// bytes in the tarball.
pub fn collect(dist_dir: &Path) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for name in distro_tarballs(dist_dir)? {
        let path = dist_dir.join(&name);
        let stem = name.trim_end_matches(".tar.gz");
        let files = file_digests(&path, &format!("{stem}/metadata.json"))?;
        let meta_bytes = files.metadata.with_context(|| {
            format!("{name} is not a per-distro tarball (no {stem}/metadata.json)")
        })?;
        let meta: Metadata = serde_json::from_slice(&meta_bytes)
            .with_context(|| format!("{name}: reading {stem}/metadata.json"))?;
        if meta.toa_version != env!("CARGO_PKG_VERSION") {
            bail!(
                "{name} holds toa {} but this is toa {}: rebuild it (cargo xtask build --distro {}) or remove it",
                meta.toa_version,
                env!("CARGO_PKG_VERSION"),
                meta.distro
            );
        }
        if !stem.ends_with(&format!("-{}", meta.arch)) {
            bail!(
                "{name}: metadata says arch {} but the name does not end in -{}",
                meta.arch,
                meta.arch
            );
        }
        let tarball_sha256 = sha256_file(&path)?;
        for m in &meta.modules {
            let ko = format!("{stem}/{}/toa.ko", m.release);
            let actual = files
                .sha256
                .get(&ko)
                .with_context(|| format!("{} has no {ko}", path.display()))?
                .clone();
            if actual != m.sha256 {
                bail!(
                    "{name}: {ko} has sha256 {actual}, but its metadata.json says {}",
                    m.sha256
                );
            }
            let entry = Entry {
                release: m.release.clone(),
                arch: meta.arch.clone(),
                uname_v: String::new(),
                distro: meta.distro.clone(),
                tarball: name.clone(),
                tarball_sha256: tarball_sha256.clone(),
                ko,
                ko_sha256: actual,
            };
            entry.check()?;
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// What one pass over a per-distro tarball reads: its `metadata.json` and
/// the sha256 of each file in it, by path. (Reading each module on its own
/// decompressed the tarball once per kernel: 12 s of a warm build.)
struct TarballFiles {
    metadata: Option<Vec<u8>>,
    sha256: BTreeMap<String, String>,
}

fn file_digests(tarball: &Path, metadata: &str) -> Result<TarballFiles> {
    let file =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = TarballFiles {
        metadata: None,
        sha256: BTreeMap::new(),
    };
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", tarball.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", tarball.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data)
            .with_context(|| format!("reading {path} in {}", tarball.display()))?;
        let sha = hex::encode(Sha256::digest(&data));
        if path == metadata {
            out.metadata = Some(data);
        }
        out.sha256.insert(path, sha);
    }
    Ok(out)
}

/// Whether `name` (a file in target/dist) is published.
fn ships(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(".tar.gz")
            || name.ends_with(".sh")
            || name == INDEX
            || crate::objects::operator_cli::is_program(name))
}

/// `sha256sum` lines for every file that ships, by name; a file in `known`
/// (name to sha256) is not read again.
fn sha256sums(dist_dir: &Path, known: &BTreeMap<String, String>) -> Result<String> {
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(dist_dir).with_context(|| format!("reading {}", dist_dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && ships(&name) {
            names.push(name);
        }
    }
    names.sort();
    let mut out = String::new();
    for name in names {
        let sha = match known.get(&name) {
            Some(sha) => sha.clone(),
            None => sha256_file(&dist_dir.join(&name))?,
        };
        out.push_str(&format!("{sha}  {name}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::package::{write_tarball, KernelModule};

    #[test]
    fn index_has_one_line_per_module_and_is_json() {
        let dist = crate::testing::scratch("index-lines");
        write_tarball(
            &dist,
            "Debian-12-x86_64",
            "debian-12",
            "x86_64",
            &[
                KernelModule::new("6.1.0-49-amd64", "6.1.175-1", b"older".to_vec()),
                KernelModule::new("6.1.0-50-amd64", "6.1.176-1", b"newer".to_vec()),
            ],
        )
        .unwrap();
        write_tarball(
            &dist,
            "Debian-11-x86_64",
            "debian-11",
            "x86_64",
            &[KernelModule::new(
                "5.10.0-35-amd64",
                "5.10.237-1",
                b"bullseye".to_vec(),
            )],
        )
        .unwrap();
        std::fs::write(dist.join("toa.tar.gz"), b"source").unwrap();
        std::fs::write(dist.join("install_toa.sh"), b"#!/bin/bash\n").unwrap();
        std::fs::write(dist.join("build.log"), b"not shipped").unwrap();
        write_index(&dist).unwrap();

        let text = std::fs::read_to_string(dist.join(INDEX)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(
            lines[0],
            format!(
                "{{\"format\":1,\"toa_version\":\"{}\",\"modules\":[",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(lines[4], "]}");
        let tarball_sha = sha256_file(&dist.join("Debian-12-x86_64.tar.gz")).unwrap();
        assert_eq!(
            lines[3],
            format!(
                "{{\"release\":\"6.1.0-50-amd64\",\"arch\":\"x86_64\",\"uname_v\":\"\",\"distro\":\"debian-12\",\"tarball\":\"Debian-12-x86_64.tar.gz\",\"tarball_sha256\":\"{tarball_sha}\",\"ko\":\"Debian-12-x86_64/6.1.0-50-amd64/toa.ko\",\"ko_sha256\":\"{}\"}}",
                hex::encode(Sha256::digest(b"newer"))
            )
        );
        assert!(lines[1].starts_with("{\"release\":\"5.10.0-35-amd64\","));
        assert!(lines[1].ends_with("},") && lines[2].ends_with("},"));

        let json: serde_json::Value = serde_json::from_str(&text).expect("index.json is JSON");
        assert_eq!(json["format"], 1);
        let modules = json["modules"].as_array().unwrap();
        assert_eq!(modules.len(), 3);
        assert_eq!(modules[0]["distro"], "debian-11");
        assert_eq!(modules[1]["ko"], "Debian-12-x86_64/6.1.0-49-amd64/toa.ko");
        let keys: Vec<&String> = modules[2].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 8);

        let sums = std::fs::read_to_string(dist.join(SUMS)).unwrap();
        let named: Vec<&str> = sums.lines().map(|l| &l[66..]).collect();
        assert_eq!(
            named,
            [
                "Debian-11-x86_64.tar.gz",
                "Debian-12-x86_64.tar.gz",
                "index.json",
                "install_toa.sh",
                "toa.tar.gz"
            ]
        );
        assert!(sums.contains(&format!("{tarball_sha}  Debian-12-x86_64.tar.gz\n")));
        assert!(sums.contains(&format!(
            "{}  index.json\n",
            sha256_file(&dist.join(INDEX)).unwrap()
        )));
        std::fs::remove_dir_all(&dist).unwrap();
    }

    #[test]
    fn empty_dist_gives_an_empty_json_list() {
        let dist = crate::testing::scratch("index-empty");
        write_index(&dist).unwrap();
        let text = std::fs::read_to_string(dist.join(INDEX)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["modules"].as_array().unwrap().len(), 0);
        assert_eq!(
            std::fs::read_to_string(dist.join(SUMS)).unwrap(),
            format!("{}  index.json\n", sha256_file(&dist.join(INDEX)).unwrap())
        );
        std::fs::remove_dir_all(&dist).unwrap();
    }

    #[test]
    fn stray_tarball_without_metadata_is_an_error() {
        let dist = crate::testing::scratch("index-stray");
        std::fs::write(dist.join("Other-x86_64.tar.gz"), b"not a tarball").unwrap();
        let err = format!("{:#}", write_index(&dist).unwrap_err());
        assert!(err.contains("Other-x86_64.tar.gz"), "{err}");
        std::fs::remove_dir_all(&dist).unwrap();
    }

    #[test]
    fn values_the_shell_cannot_read_are_refused() {
        let mut e = Entry {
            release: "6.1.0-50-amd64".into(),
            arch: "x86_64".into(),
            uname_v: String::new(),
            distro: "debian-12".into(),
            tarball: "Debian-12-x86_64.tar.gz".into(),
            tarball_sha256: "a".repeat(64),
            ko: "Debian-12-x86_64/6.1.0-50-amd64/toa.ko".into(),
            ko_sha256: "b".repeat(64),
        };
        e.check().unwrap();
        e.uname_v = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2025-01-01)".into();
        e.check().unwrap();
        e.release = "6.1\"x".into();
        assert!(e.check().is_err());
        e.release = "6.1.0-50-amd64".into();
        e.ko_sha256 = "B".repeat(64);
        assert!(e.check().is_err());
    }

    #[test]
    fn a_build_in_dist_is_indexed_and_checksummed() {
        let dist = crate::testing::scratch("operator-index");
        write_index(&dist).unwrap();
        let text = std::fs::read_to_string(dist.join(INDEX)).unwrap();
        assert!(!text.contains("programs"), "no build, no list: {text}");
        std::fs::write(dist.join("toa-x86_64"), b"binary").unwrap();
        write_index(&dist).unwrap();
        let text = std::fs::read_to_string(dist.join(INDEX)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["programs"][0]["arch"], "x86_64");
        assert!(
            text.lines().any(|l| l.starts_with(r#"{"name":"toa","#)),
            "one program a line: {text}"
        );
        let sums = std::fs::read_to_string(dist.join(SUMS)).unwrap();
        let sha = crate::host::fs::sha256_file(&dist.join("toa-x86_64")).unwrap();
        assert!(sums.contains(&format!("{sha}  toa-x86_64\n")), "{sums}");
        std::fs::remove_dir_all(&dist).unwrap();
    }
}
