//! `cargo xtask merge`: joins what sharded build jobs produced into one
//! tarball per distro release, then writes `index.json` and `SHA256SUMS`.
//!
//! Each part is a `<Name>-<arch>.tar.gz` that `cargo xtask build` wrote for a
//! subset of a release's kernels. Every module of every part is checked
//! (its bytes against the sha256 in the part's metadata.json, the default
//! toa.ko against the default release's) and the parts of one release must
//! agree: the same kernel in two parts must be the same toa.ko of the same
//! kernel package, and all parts must be of this toa version. The merged
//! tarball is what one build of all those kernels writes, byte for byte.

use crate::build::package::{self, KernelModule};
use crate::{build::index, host::cache};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Where the merged tarballs, index.json and SHA256SUMS go. Default: target/dist.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// What the build jobs produced: directories holding their `<Name>-<arch>.tar.gz`
    /// parts (one directory per job, as downloaded artifacts are laid out), or part
    /// tarballs themselves.
    /// Directories that hold no tarball (a job whose every kernel failed, or
    /// that left nothing) are reported, not refused; so are the kernels in the
    /// failure records (`*.failed.json`, from `cargo xtask build --failures`)
    /// beside the parts.
    #[arg(required = true, value_name = "PART")]
    pub parts: Vec<PathBuf>,
    /// The plan the parts were built from (`cargo xtask plan`'s matrix, or the
    /// plan job's `plan` output): every planned kernel no part holds a module
    /// for is reported as failed, with its job's failure record, or as a job
    /// that left no part (`part-<shard>` missing).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Write release notes (Markdown) to FILE: the kernels without a module
    /// and why, or that every planned kernel built.
    #[arg(long, value_name = "FILE")]
    pub notes: Option<PathBuf>,
}

/// What did not make it into the merged release.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Kernels planned, or recorded as failed, that no part holds a module
    /// for; sorted by release, architecture and kernel.
    pub failed: Vec<FailedKernel>,
    /// Releases the plan could not list the kernels of.
    pub unplanned: Vec<crate::release::plan::Unplanned>,
    /// Part directories with neither a tarball nor a failure record.
    pub empty: Vec<PathBuf>,
    /// How many kernels the plan held (0 without one).
    pub planned: usize,
}

/// One kernel without a module, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FailedKernel {
    pub distro: String,
    pub arch: String,
    pub release: String,
    pub why: String,
}

impl Report {
    /// The release notes' section on what is missing.
    pub fn notes(&self) -> String {
        const MAX: usize = 400;
        let mut out = String::new();
        if self.failed.is_empty() && self.unplanned.is_empty() {
            if self.planned > 0 {
                out.push_str(&format!("Every planned kernel built ({}).\n", self.planned));
            } else {
                out.push_str("No build job recorded a failed kernel.\n");
            }
            return out;
        }
        out.push_str("## Kernels without a module in this release\n\n");
        out.push_str(
            "These kernels did not build, so this release has no toa.ko for them. The daily \
             run plans every kernel the latest release lacks, so they are tried again.\n\n",
        );
        let clip = |s: &str| -> String {
            match s.char_indices().nth(MAX) {
                Some((at, _)) => format!("{} ...", &s[..at]),
                None => s.to_string(),
            }
        };
        for f in &self.failed {
            out.push_str(&format!(
                "- `{}` {} `{}`: {}\n",
                f.distro,
                f.arch,
                f.release,
                clip(&f.why)
            ));
        }
        for u in &self.unplanned {
            out.push_str(&format!(
                "- `{}` {}: its kernels could not be listed: {}\n",
                u.distro,
                u.arch,
                clip(&u.error)
            ));
        }
        out
    }
}

/// One merged tarball.
#[derive(Debug)]
pub struct Merged {
    pub tarball: PathBuf,
    pub kernels: usize,
    pub parts: usize,
}

pub fn run(args: Args) -> Result<()> {
    let out = args.out.unwrap_or_else(cache::dist_dir);
    let plan = args
        .plan
        .as_deref()
        .map(crate::release::plan::Record::read)
        .transpose()?;
    let (merged, report) = merge_reporting(&args.parts, &out, plan.as_ref())?;
    for dir in &report.empty {
        eprintln!(
            "note: part {} holds no tarball and no failure record",
            dir.display()
        );
    }
    for f in &report.failed {
        eprintln!("FAILED {} {} {}: {}", f.distro, f.arch, f.release, f.why);
    }
    for u in &report.unplanned {
        eprintln!("NOT PLANNED {} {}: {}", u.distro, u.arch, u.error);
    }
    if !report.failed.is_empty() || !report.unplanned.is_empty() {
        eprintln!(
            "{} kernel(s) without a module, {} release(s) not planned; the others are merged",
            report.failed.len(),
            report.unplanned.len()
        );
    }
    if let Some(path) = &args.notes {
        crate::host::fs::write_atomic(path, report.notes().as_bytes())?;
    }
    for m in &merged {
        println!(
            "{}: {} kernel(s) from {} part(s)",
            m.tarball.display(),
            m.kernels,
            m.parts
        );
    }
    println!("{}", out.join(index::INDEX).display());
    println!("{}", out.join(index::SUMS).display());
    Ok(())
}

/// Merges `parts` into `out` and indexes `out`.
#[cfg(test)]
pub fn merge(parts: &[PathBuf], out: &Path) -> Result<Vec<Merged>> {
    merge_reporting(parts, out, None).map(|(merged, _)| merged)
}

/// [`merge`], and what did not make it: failure records, empty parts and,
/// with `plan`, every planned kernel no part holds.
pub fn merge_reporting(
    parts: &[PathBuf],
    out: &Path,
    plan: Option<&crate::release::plan::Record>,
) -> Result<(Vec<Merged>, Report)> {
    let found = find_parts(parts)?;
    let mut records = Vec::new();
    for path in &found.records {
        records.push(crate::build::failures::Record::read(path)?);
    }
    if found.tarballs.is_empty() {
        let failed: usize = records.iter().map(|r| r.failed.len()).sum();
        bail!(
            "no part holds a built <Name>-<arch>.tar.gz ({} failure record(s) naming {failed} kernel(s), \
             {} empty part(s)): nothing to publish",
            records.len(),
            found.empty.len()
        );
    }
    let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for tarball in &found.tarballs {
        let name = file_name(tarball)?;
        groups.entry(name).or_default().push(tarball.clone());
    }
    let mut merged = Vec::new();
    // (distro, arch, release) of every module merged.
    let mut built = std::collections::BTreeSet::new();
    for (name, tarballs) in &groups {
        let stem = name.trim_end_matches(".tar.gz");
        let release = merge_release(stem, tarballs)?;
        for m in &release.modules {
            built.insert((
                release.distro.clone(),
                release.arch.clone(),
                m.release.clone(),
            ));
        }
        let tarball = package::write_tarball_with_default(
            out,
            stem,
            &release.distro,
            &release.arch,
            &release.modules,
            release.default.as_ref(),
        )?;
        merged.push(Merged {
            tarball,
            kernels: release.modules.len(),
            parts: tarballs.len(),
        });
    }
    let mut others = Vec::new();
    for entry in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tar.gz")
            && !name.starts_with('.')
            && name != index::SOURCE_TARBALL
            && !groups.contains_key(&name)
        {
            others.push(name);
        }
    }
    others.sort();
    if !others.is_empty() {
        eprintln!(
            "note: {} also holds {}, not from these parts; index.json lists them too",
            out.display(),
            others.join(", ")
        );
    }
    index::write_index(out)?;

    let mut report = Report {
        empty: found.empty.clone(),
        ..Report::default()
    };
    let mut failed: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for r in &records {
        for f in &r.failed {
            let key = (r.distro.clone(), r.arch.clone(), f.release.clone());
            if !built.contains(&key) {
                failed.entry(key).or_insert_with(|| f.error.clone());
            }
        }
    }
    if let Some(plan) = plan {
        report.unplanned = plan.unplanned.clone();
        for shard in &plan.include {
            let dir_name = format!("part-{}", shard.shard);
            let part = parts.iter().find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy() == dir_name)
            });
            let left_nothing = part.is_none_or(|p| found.empty.contains(p));
            for pin in shard.kernels.split_whitespace() {
                report.planned += 1;
                let release = pin.parse::<crate::distro::kernel::KernelSpec>()?.release;
                let key = (shard.distro.clone(), shard.arch.clone(), release);
                if built.contains(&key) || failed.contains_key(&key) {
                    continue;
                }
                let why = if left_nothing {
                    format!("its build job left no part ({dir_name}): it failed before packing or recording anything")
                } else {
                    format!("not in {dir_name}, and its build job recorded no failure for it")
                };
                failed.insert(key, why);
            }
        }
    }
    report.failed = failed
        .into_iter()
        .map(|((distro, arch, release), why)| FailedKernel {
            distro,
            arch,
            release,
            why,
        })
        .collect();
    report.failed.sort_by(|a, b| {
        (&a.distro, &a.arch)
            .cmp(&(&b.distro, &b.arch))
            .then_with(|| crate::distro::kernel::release_cmp(&a.release, &b.release))
    });
    Ok((merged, report))
}

/// What the part arguments hold.
#[derive(Debug, Default)]
struct Found {
    /// `*.tar.gz` directly in each directory, and each one given by name.
    tarballs: Vec<PathBuf>,
    /// `*.failed.json` beside them, or given by name.
    records: Vec<PathBuf>,
    /// Directories with neither.
    empty: Vec<PathBuf>,
}

fn find_parts(parts: &[PathBuf]) -> Result<Found> {
    let mut out = Found::default();
    let is_record =
        |name: &str| name.ends_with(crate::build::failures::SUFFIX) && !name.starts_with('.');
    for part in parts {
        let meta = std::fs::metadata(part).with_context(|| format!("part {}", part.display()))?;
        if meta.is_file() {
            let name = part
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if is_record(&name) {
                out.records.push(part.clone());
            } else {
                out.tarballs.push(part.clone());
            }
            continue;
        }
        let mut tarballs = Vec::new();
        let mut records = Vec::new();
        for entry in
            std::fs::read_dir(part).with_context(|| format!("reading {}", part.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_file() {
                continue;
            }
            if name.ends_with(".tar.gz") && !name.starts_with('.') && name != index::SOURCE_TARBALL
            {
                tarballs.push(entry.path());
            } else if is_record(&name) {
                records.push(entry.path());
            }
        }
        if tarballs.is_empty() && records.is_empty() {
            out.empty.push(part.clone());
        }
        tarballs.sort();
        records.sort();
        out.tarballs.extend(tarballs);
        out.records.extend(records);
    }
    Ok(out)
}

fn file_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.ends_with(".tar.gz") || name == ".tar.gz" {
        bail!("{}: a part is a <Name>-<arch>.tar.gz", path.display());
    }
    if name == index::SOURCE_TARBALL {
        bail!("{}: the source tarball is not a build part", path.display());
    }
    Ok(name)
}

/// `metadata.json` of a part, as `package::write_tarball` writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    distro: String,
    arch: String,
    toa_version: String,
    default_release: String,
    /// Set when a metapackage chose `default_release` (see `package`).
    #[serde(default)]
    default_from: Option<String>,
    modules: Vec<ModuleMeta>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleMeta {
    release: String,
    kernel_version: String,
    sha256: String,
}

/// A part, read and checked.
#[derive(Debug)]
struct Part {
    path: PathBuf,
    distro: String,
    arch: String,
    toa_version: String,
    /// The metapackage's kernel, where the part's build knew it.
    default: Option<crate::repo::kernels::DefaultKernel>,
    modules: Vec<KernelModule>,
}

/// Every regular file of a `.tar.gz`, by path.
fn read_entries(tarball: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let file =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = BTreeMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", tarball.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", tarball.display()))?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular => {}
            other => bail!(
                "{}: {} is a {other:?}, not a file",
                tarball.display(),
                entry.path()?.display()
            ),
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .with_context(|| format!("reading {path} in {}", tarball.display()))?;
        if out.insert(path.clone(), data).is_some() {
            bail!("{}: {path} appears twice", tarball.display());
        }
    }
    Ok(out)
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Reads the part `path` of the tarball `<stem>.tar.gz` and checks it against itself.
fn read_part(path: &Path, stem: &str) -> Result<Part> {
    let here = path.display();
    let mut files = read_entries(path)?;
    if let Some(stray) = files.keys().find(|p| !p.starts_with(&format!("{stem}/"))) {
        bail!("{here}: {stray} is outside {stem}/");
    }
    let meta_path = format!("{stem}/metadata.json");
    let meta_bytes = files
        .remove(&meta_path)
        .with_context(|| format!("{here} has no {meta_path}: not a build's tarball"))?;
    let meta: Metadata = serde_json::from_slice(&meta_bytes)
        .with_context(|| format!("{here}: reading {meta_path}"))?;
    if !stem.ends_with(&format!("-{}", meta.arch)) {
        bail!(
            "{here}: metadata.json says arch {} but the name does not end in -{}",
            meta.arch,
            meta.arch
        );
    }
    let default_ko = files
        .remove(&format!("{stem}/toa.ko"))
        .with_context(|| format!("{here} has no {stem}/toa.ko"))?;
    let mut modules: Vec<KernelModule> = Vec::new();
    for m in &meta.modules {
        if modules.iter().any(|k| k.release == m.release) {
            bail!("{here}: metadata.json lists {} twice", m.release);
        }
        let ko_path = format!("{stem}/{}/toa.ko", m.release);
        let ko = files
            .remove(&ko_path)
            .with_context(|| format!("{here}: metadata.json lists {ko_path}, which is missing"))?;
        let actual = sha256(&ko);
        if actual != m.sha256 {
            bail!(
                "{here}: {ko_path} has sha256 {actual}, but metadata.json says {}",
                m.sha256
            );
        }
        modules.push(KernelModule::new(&m.release, &m.kernel_version, ko));
    }
    if let Some(stray) = files.keys().next() {
        bail!("{here}: {stray} is not listed in metadata.json");
    }
    let Some(default) = modules.iter().find(|m| m.release == meta.default_release) else {
        bail!(
            "{here}: default_release {} is not among its modules",
            meta.default_release
        );
    };
    if default.ko != default_ko {
        bail!(
            "{here}: {stem}/toa.ko is not the toa.ko of default_release {}",
            meta.default_release
        );
    }
    Ok(Part {
        path: path.to_path_buf(),
        distro: meta.distro,
        arch: meta.arch,
        toa_version: meta.toa_version,
        default: meta
            .default_from
            .map(|from| crate::repo::kernels::DefaultKernel {
                release: meta.default_release,
                from,
            }),
        modules,
    })
}

/// One release merged from its parts, modules oldest first.
#[derive(Debug)]
struct Release {
    distro: String,
    arch: String,
    /// The metapackage's kernel: the top-level toa.ko (else the newest).
    default: Option<crate::repo::kernels::DefaultKernel>,
    modules: Vec<KernelModule>,
}

fn merge_release(stem: &str, tarballs: &[PathBuf]) -> Result<Release> {
    let ours = env!("CARGO_PKG_VERSION");
    let mut first: Option<Part> = None;
    let mut default: Option<crate::repo::kernels::DefaultKernel> = None;
    // release -> (module, the part it came from)
    let mut modules: BTreeMap<String, (KernelModule, PathBuf)> = BTreeMap::new();
    for path in tarballs {
        let part = read_part(path, stem)?;
        if let Some(first) = &first {
            if (&part.distro, &part.arch) != (&first.distro, &first.arch) {
                bail!(
                    "{} is {} {} but {} is {} {}",
                    part.path.display(),
                    part.distro,
                    part.arch,
                    first.path.display(),
                    first.distro,
                    first.arch
                );
            }
            if part.toa_version != first.toa_version {
                bail!(
                    "{} holds toa {} but {} holds toa {}: parts of one release come from one build of one version",
                    part.path.display(),
                    part.toa_version,
                    first.path.display(),
                    first.toa_version
                );
            }
        }
        if part.toa_version != ours {
            bail!(
                "{} holds toa {} but this is toa {ours}: merge with the xtask of the version that built it",
                part.path.display(),
                part.toa_version
            );
        }
        for m in &part.modules {
            match modules.get(&m.release) {
                None => {
                    modules.insert(m.release.clone(), (m.clone(), part.path.clone()));
                }
                Some((seen, from)) if seen.sha256 != m.sha256 => bail!(
                    "kernel {}: {} and {} hold different toa.ko (sha256 {} and {})",
                    m.release,
                    from.display(),
                    part.path.display(),
                    seen.sha256,
                    m.sha256
                ),
                Some((seen, from)) if seen.kernel_version != m.kernel_version => bail!(
                    "kernel {}: {} built it from kernel package {} but {} from {}",
                    m.release,
                    from.display(),
                    seen.kernel_version,
                    part.path.display(),
                    m.kernel_version
                ),
                Some(_) => {}
            }
        }
        // Parts of a release published earlier may name an older default:
        // the metapackage only moves on, so the newest kernel named wins.
        if let Some(d) = &part.default {
            let newer = default.as_ref().is_none_or(|seen| {
                crate::distro::kernel::release_cmp(&d.release, &seen.release)
                    == std::cmp::Ordering::Greater
            });
            if newer {
                default = Some(d.clone());
            }
        }
        if first.is_none() {
            first = Some(part);
        }
    }
    let first = first.context("no parts")?;
    let mut modules: Vec<KernelModule> = modules.into_values().map(|(m, _)| m).collect();
    modules.sort_by(|a, b| {
        crate::distro::kernel::release_cmp(&a.release, &b.release)
            .then_with(|| a.release.cmp(&b.release))
    });
    Ok(Release {
        distro: first.distro,
        arch: first.arch,
        default,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::package::write_tarball;

    fn module(release: &str, ko: &str) -> KernelModule {
        KernelModule::new(
            release,
            &format!("{}-1", release.trim_end_matches("-amd64")),
            ko.as_bytes().to_vec(),
        )
    }

    fn part(dir: &Path, name: &str, distro: &str, modules: &[KernelModule]) -> PathBuf {
        let part = dir.join(name);
        write_tarball(
            &part,
            &format!("{}-x86_64", title(distro)),
            distro,
            "x86_64",
            modules,
        )
        .unwrap();
        part
    }

    fn title(distro: &str) -> String {
        let mut s = distro.to_string();
        s[..1].make_ascii_uppercase();
        s
    }

    /// A tarball laid out like a build's, with whatever metadata and files are given.
    fn raw_part(dir: &Path, stem: &str, files: &[(&str, &[u8])]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{stem}.tar.gz"));
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("{stem}/{name}"), *data)
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    fn metadata(version: &str, default: &str, modules: &[(&str, &[u8])]) -> Vec<u8> {
        let modules: Vec<serde_json::Value> = modules
            .iter()
            .map(|(r, ko)| {
                serde_json::json!({"release": r, "kernel_version": "1", "sha256": sha256(ko)})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "distro": "debian-12", "arch": "x86_64", "toa_version": version,
            "default_release": default, "modules": modules,
        }))
        .unwrap()
    }

    #[test]
    fn two_parts_give_what_one_build_of_both_gives() {
        let dir = crate::testing::scratch("merge-equal");
        let (a, b, c) = (
            module("6.1.0-9-amd64", "nine"),
            module("6.1.0-10-amd64", "ten"),
            module("6.1.0-11-amd64", "eleven"),
        );
        // Shards are oldest first, but the merge must not depend on it.
        let p1 = part(&dir, "p1", "debian-12", std::slice::from_ref(&c));
        let p2 = part(&dir, "p2", "debian-12", &[a.clone(), b.clone()]);
        let p3 = part(
            &dir,
            "p3",
            "debian-11",
            &[module("5.10.0-30-amd64", "bullseye")],
        );
        let merged = merge(
            &[p1, p2, p3.join("Debian-11-x86_64.tar.gz")],
            &dir.join("out"),
        )
        .unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[1].kernels, merged[1].parts), (3, 2));

        let whole = dir.join("whole");
        write_tarball(
            &whole,
            "Debian-12-x86_64",
            "debian-12",
            "x86_64",
            &[a, b, c],
        )
        .unwrap();
        std::fs::copy(
            p3.join("Debian-11-x86_64.tar.gz"),
            whole.join("Debian-11-x86_64.tar.gz"),
        )
        .unwrap();
        index::write_index(&whole).unwrap();
        for name in [
            "Debian-12-x86_64.tar.gz",
            "Debian-11-x86_64.tar.gz",
            "index.json",
            "SHA256SUMS",
        ] {
            assert_eq!(
                std::fs::read(dir.join("out").join(name)).unwrap(),
                std::fs::read(whole.join(name)).unwrap(),
                "{name} differs from one build's"
            );
        }
        assert_eq!(
            package::read_from_tarball(
                &dir.join("out/Debian-12-x86_64.tar.gz"),
                "Debian-12-x86_64/toa.ko"
            )
            .unwrap(),
            b"eleven",
            "the newest kernel's module is the default"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_same_module_in_two_parts_is_merged_once() {
        let dir = crate::testing::scratch("merge-overlap");
        let a = module("6.1.0-9-amd64", "nine");
        let b = module("6.1.0-10-amd64", "ten");
        let p1 = part(&dir, "p1", "debian-12", &[a.clone(), b.clone()]);
        let p2 = part(&dir, "p2", "debian-12", std::slice::from_ref(&b));
        let merged = merge(&[p1, p2], &dir.join("out")).unwrap();
        assert_eq!(merged[0].kernels, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn different_modules_for_one_kernel_are_a_conflict() {
        let dir = crate::testing::scratch("merge-conflict");
        let p1 = part(
            &dir,
            "p1",
            "debian-12",
            &[module("6.1.0-9-amd64", "one build")],
        );
        let p2 = part(
            &dir,
            "p2",
            "debian-12",
            &[module("6.1.0-9-amd64", "another")],
        );
        let err = format!("{:#}", merge(&[p1, p2], &dir.join("out")).unwrap_err());
        assert!(
            err.contains("kernel 6.1.0-9-amd64:") && err.contains("hold different toa.ko"),
            "{err}"
        );
        assert!(!dir.join("out/index.json").exists());

        let p3 = part(&dir, "p3", "debian-12", &[module("6.1.0-9-amd64", "nine")]);
        let p4 = dir.join("p4");
        write_tarball(
            &p4,
            "Debian-12-x86_64",
            "debian-12",
            "x86_64",
            &[KernelModule::new(
                "6.1.0-9-amd64",
                "6.1.99-1",
                b"nine".to_vec(),
            )],
        )
        .unwrap();
        let err = format!("{:#}", merge(&[p3, p4], &dir.join("out")).unwrap_err());
        assert!(err.contains("from kernel package"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_toa_version_is_a_conflict() {
        let dir = crate::testing::scratch("merge-version");
        let ours = env!("CARGO_PKG_VERSION");
        let ko: &[u8] = b"nine";
        let p1 = raw_part(
            &dir.join("p1"),
            "Debian-12-x86_64",
            &[
                (
                    "metadata.json",
                    &metadata(ours, "6.1.0-9-amd64", &[("6.1.0-9-amd64", ko)]),
                ),
                ("toa.ko", ko),
                ("6.1.0-9-amd64/toa.ko", ko),
            ],
        );
        let p2 = raw_part(
            &dir.join("p2"),
            "Debian-12-x86_64",
            &[
                (
                    "metadata.json",
                    &metadata("0.0.1-old", "6.1.0-10-amd64", &[("6.1.0-10-amd64", ko)]),
                ),
                ("toa.ko", ko),
                ("6.1.0-10-amd64/toa.ko", ko),
            ],
        );
        merge(std::slice::from_ref(&p1), &dir.join("ok")).unwrap();
        let err = format!(
            "{:#}",
            merge(&[p1, p2.clone()], &dir.join("out")).unwrap_err()
        );
        assert!(
            err.contains("holds toa 0.0.1-old") && err.contains(&format!("holds toa {ours}")),
            "{err}"
        );
        let err = format!("{:#}", merge(&[p2], &dir.join("out")).unwrap_err());
        assert!(err.contains(&format!("this is toa {ours}")), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_part_that_disagrees_with_its_metadata_is_refused() {
        let dir = crate::testing::scratch("merge-sha");
        let ours = env!("CARGO_PKG_VERSION");
        let good: &[u8] = b"nine";
        let meta = metadata(ours, "6.1.0-9-amd64", &[("6.1.0-9-amd64", good)]);
        // (case, files of the part, what the error must say)
        type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, &'a str);
        let cases: [Case; 5] = [
            (
                "sha",
                vec![
                    ("metadata.json", &meta),
                    ("toa.ko", good),
                    ("6.1.0-9-amd64/toa.ko", b"tampered"),
                ],
                "but metadata.json says",
            ),
            (
                "default",
                vec![
                    ("metadata.json", &meta),
                    ("toa.ko", b"other"),
                    ("6.1.0-9-amd64/toa.ko", good),
                ],
                "is not the toa.ko of default_release",
            ),
            (
                "missing",
                vec![("metadata.json", &meta), ("toa.ko", good)],
                "which is missing",
            ),
            (
                "stray",
                vec![
                    ("metadata.json", &meta),
                    ("toa.ko", good),
                    ("6.1.0-9-amd64/toa.ko", good),
                    ("6.1.0-8-amd64/toa.ko", good),
                ],
                "6.1.0-8-amd64/toa.ko is not listed in metadata.json",
            ),
            ("nometa", vec![("toa.ko", good)], "not a build's tarball"),
        ];
        for (name, files, want) in cases {
            let p = raw_part(&dir.join(name), "Debian-12-x86_64", &files);
            let err = format!("{:#}", merge(&[p], &dir.join("out")).unwrap_err());
            assert!(err.contains(want), "{name}: {err}");
        }
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = format!("{:#}", merge(&[empty], &dir.join("out")).unwrap_err());
        assert!(
            err.contains("no part holds a built") && err.contains("1 empty part(s)"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn record(dir: &Path, distro: &str, failed: &[(&str, &str)]) {
        crate::build::failures::Record::new(
            distro,
            "x86_64",
            failed
                .iter()
                .map(|(release, error)| crate::build::failures::Failed {
                    release: release.to_string(),
                    version: "1".into(),
                    error: error.to_string(),
                })
                .collect(),
        )
        .write(&dir.join(format!("{}-x86_64.failed.json", title(distro))))
        .unwrap();
    }

    fn shard(shard: &str, distro: &str, releases: &[&str]) -> crate::release::plan::Shard {
        crate::release::plan::Shard {
            shard: shard.into(),
            distro: distro.into(),
            arch: "x86_64".into(),
            dist_name: format!("{}-x86_64", title(distro)),
            kernels: releases
                .iter()
                .map(|r| format!("{r}=1"))
                .collect::<Vec<_>>()
                .join(" "),
            count: releases.len(),
        }
    }

    // Failed before: a part directory with no tarball (every kernel of the
    // job failed) stopped the merge, so one failing shard failed the release.
    #[test]
    fn failed_and_missing_shards_are_reported_and_the_rest_is_published() {
        let dir = crate::testing::scratch("merge-partial");
        let parts = dir.join("parts");
        // Shard 1: kernel 9 built, 10 failed.
        let p1 = part(
            &parts,
            "part-debian-12-001",
            "debian-12",
            &[module("6.1.0-9-amd64", "nine")],
        );
        record(&p1, "debian-12", &[("6.1.0-10-amd64", "headers: HTTP 404")]);
        // Shard 2: its only kernel failed; only the record was uploaded.
        let p2 = parts.join("part-debian-12-002");
        std::fs::create_dir_all(&p2).unwrap();
        record(&p2, "debian-12", &[("6.1.0-11-amd64", "compiler mismatch")]);
        // Shard 3 left no artifact at all; debian-11's built.
        let p4 = part(
            &parts,
            "part-debian-11-001",
            "debian-11",
            &[module("5.10.0-30-amd64", "bullseye")],
        );
        let plan = crate::release::plan::Record {
            include: vec![
                shard(
                    "debian-12-001",
                    "debian-12",
                    &["6.1.0-9-amd64", "6.1.0-10-amd64"],
                ),
                shard("debian-12-002", "debian-12", &["6.1.0-11-amd64"]),
                shard("debian-12-003", "debian-12", &["6.1.0-12-amd64"]),
                shard("debian-11-001", "debian-11", &["5.10.0-30-amd64"]),
            ],
            unplanned: vec![crate::release::plan::Unplanned {
                distro: "ubuntu-22.04".into(),
                arch: "x86_64".into(),
                error: "archive.ubuntu.com: connection refused".into(),
            }],
        };
        let out = dir.join("out");
        let (merged, report) = merge_reporting(&[p1, p2, p4], &out, Some(&plan)).unwrap();
        assert_eq!(merged.len(), 2);
        let got: Vec<(&str, &str)> = report
            .failed
            .iter()
            .map(|f| (f.release.as_str(), f.why.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("6.1.0-10-amd64", "headers: HTTP 404"),
                ("6.1.0-11-amd64", "compiler mismatch"),
                (
                    "6.1.0-12-amd64",
                    "its build job left no part (part-debian-12-003): it failed before packing or recording anything"
                ),
            ]
        );
        assert_eq!(report.planned, 5);
        let index = std::fs::read_to_string(out.join("index.json")).unwrap();
        assert!(index.contains("6.1.0-9-amd64") && index.contains("5.10.0-30-amd64"));
        assert!(!index.contains("6.1.0-10-amd64"), "{index}");
        let notes = report.notes();
        assert!(notes.contains("## Kernels without a module in this release"));
        assert!(
            notes.contains("- `debian-12` x86_64 `6.1.0-10-amd64`: headers: HTTP 404\n"),
            "{notes}"
        );
        assert!(notes.contains("- `ubuntu-22.04` x86_64: its kernels could not be listed: archive.ubuntu.com: connection refused\n"), "{notes}");
        assert!(notes.contains("tried again"), "{notes}");

        // The plan file as the plan job writes it, through the command.
        let plan_file = dir.join("plan.json");
        std::fs::write(&plan_file, serde_json::to_string(&plan).unwrap()).unwrap();
        let notes_file = dir.join("notes.md");
        run(Args {
            out: Some(dir.join("out2")),
            parts: vec![
                parts.join("part-debian-12-001"),
                parts.join("part-debian-12-002"),
                parts.join("part-debian-11-001"),
            ],
            plan: Some(plan_file),
            notes: Some(notes_file.clone()),
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&notes_file).unwrap(), notes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_kernel_built_elsewhere_is_not_reported_and_all_built_says_so() {
        let dir = crate::testing::scratch("merge-rebuilt");
        // Shard 1 recorded kernel 10 as failed, but the latest release's
        // tarball (merged in by the daily run) holds it.
        let p1 = part(
            &dir,
            "part-debian-12-001",
            "debian-12",
            &[module("6.1.0-9-amd64", "nine")],
        );
        record(&p1, "debian-12", &[("6.1.0-10-amd64", "timeout")]);
        let latest = part(
            &dir,
            "latest",
            "debian-12",
            &[module("6.1.0-10-amd64", "ten")],
        );
        let plan = crate::release::plan::Record {
            include: vec![shard(
                "debian-12-001",
                "debian-12",
                &["6.1.0-9-amd64", "6.1.0-10-amd64"],
            )],
            unplanned: vec![],
        };
        let (_, report) = merge_reporting(&[p1, latest], &dir.join("out"), Some(&plan)).unwrap();
        assert_eq!(report.failed, []);
        assert_eq!(report.notes(), "Every planned kernel built (2).\n");
        // A bare matrix (cargo xtask plan's output) reads as a plan.
        let file = dir.join("matrix.json");
        std::fs::write(
            &file,
            serde_json::to_string(&crate::release::plan::Matrix {
                include: plan.include.clone(),
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(crate::release::plan::Record::read(&file).unwrap(), plan);
        std::fs::write(&file, "{\"shards\":[]}").unwrap();
        let err = format!(
            "{:#}",
            crate::release::plan::Record::read(&file).unwrap_err()
        );
        assert!(err.contains("is not a plan"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The acceptance proof on real builds: two Debian 11 kernels built one
    /// at a time and merged give the bytes that one build of both gives.
    /// Needs root, a builder (docker, podman or chroot) and the Debian archive;
    /// takes minutes, so it is not part of `cargo test`:
    /// `cargo test -p xtask merge_of_two_real_builds -- --ignored --nocapture`.
    #[test]
    #[ignore = "builds two real kernels' modules: needs root and minutes"]
    fn merge_of_two_real_builds_equals_one_build_of_both() {
        let distro = crate::distro::find("debian-11").unwrap();
        let all = crate::repo::kernels::discover(&distro).unwrap();
        assert!(all.len() >= 2, "debian-11 lists fewer than two kernels");
        let pair = &all[all.len() - 2..];
        let dir = crate::testing::scratch("merge-real");
        let dist = cache::dist_dir();
        let tarball = format!("{}.tar.gz", distro.dist_name());
        let build_into = |name: &str, kernels: &[crate::distro::kernel::Kernel]| -> PathBuf {
            let _ = std::fs::remove_file(dist.join(&tarball));
            crate::build::build(&distro, kernels, None, None, 1).unwrap();
            let to = dir.join(name);
            std::fs::create_dir_all(&to).unwrap();
            std::fs::copy(dist.join(&tarball), to.join(&tarball)).unwrap();
            to
        };
        let a = build_into("part-a", &pair[..1]);
        let b = build_into("part-b", &pair[1..]);
        let whole = build_into("whole", pair);
        index::write_index(&whole).unwrap();
        merge(&[a, b], &dir.join("merged")).unwrap();
        for name in [tarball.as_str(), index::INDEX, index::SUMS] {
            assert_eq!(
                std::fs::read(dir.join("merged").join(name)).unwrap(),
                std::fs::read(whole.join(name)).unwrap(),
                "{name}: the merge of two builds differs from one build of both"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
