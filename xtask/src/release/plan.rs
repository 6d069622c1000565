//! `cargo xtask plan`: the release build matrix, as the CI plan job hands it to
//! the build jobs.
//!
//! Every kernel of every release asked for (the same discovery as
//! `cargo xtask kernels`) is cut into shards of at most `--shard-size` kernels
//! of one release; each shard is one build job:
//!
//! ```text
//! {"include":[
//!   {"shard":"debian-11-001","distro":"debian-11","dist_name":"Debian-11-x86_64",
//!    "kernels":"5.10.0-30-amd64=5.10.218-1 5.10.0-32-amd64=5.10.223-1","count":2},
//!   ...]}
//! ```
//!
//! `kernels` pins each kernel as `RELEASE=VERSION`, the form
//! `cargo xtask build --kernel` takes, so a build job builds exactly what was
//! planned without fetching the metadata again. Shards run oldest to newest.
//!
//! `--missing-from FILE|URL` plans only the kernels a published `index.json`
//! has no module for (the scheduled run that keeps a release up with the
//! archive); with none missing the matrix is empty and `count=0` tells the
//! workflow to stop there.

use crate::distro::kernel::{release_cmp, Kernel};
use crate::distro::Distro;
use crate::host::needs::{self, Needs};
use crate::repo::kernels;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

/// Kernels per build job unless asked otherwise.
pub const DEFAULT_SHARD_SIZE: usize = 8;

/// GitHub Actions runs at most this many jobs from one matrix.
pub const MAX_JOBS: usize = 256;

#[derive(clap::Args)]
pub struct Args {
    /// Distro release to plan (repeatable), with every architecture its file
    /// lists. Default: every release under distros/.
    #[arg(long = "distro", value_name = "NAME", value_parser = crate::distro::recipe::parse)]
    pub distros: Vec<crate::distro::Recipe>,
    /// Kernels per build job.
    #[arg(long, default_value_t = DEFAULT_SHARD_SIZE, value_name = "N")]
    pub shard_size: usize,
    /// Only the N newest kernels of each release (cheap runs, e.g. pull requests).
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
    /// Plan only the kernels this published index.json (a file, or an http(s)
    /// URL such as the latest release's) holds no module for.
    #[arg(long, value_name = "FILE|URL")]
    pub missing_from: Option<String>,
    /// Append `matrix=<json>` and `count=<jobs>` to this file (a job's
    /// $GITHUB_OUTPUT) instead of printing the matrix; and `plan=<json>`, the
    /// matrix with the releases --keep-going left out, for `cargo xtask merge --plan`.
    #[arg(long, value_name = "FILE")]
    pub github_output: Option<PathBuf>,
    /// A release whose repository metadata cannot be read (an archive
    /// unreachable) is left out with a warning instead of failing the plan.
    #[arg(long)]
    pub keep_going: bool,
    /// Offline, no matrix: for every recipe in distros/ (each architecture it
    /// lists), the kernels its real-metadata fixture (xtask/tests/fixtures)
    /// lists, and the builder image and compiler each kernel gets.
    #[arg(long, conflicts_with_all = ["distros", "latest", "missing_from", "github_output"])]
    pub all: bool,
}

/// The matrix: GitHub's `strategy.matrix` with one `include` row per job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub include: Vec<Shard>,
}

/// The plan as the release job reads it back (`cargo xtask merge --plan`):
/// the matrix's rows, and the releases whose kernels could not be listed
/// (`--keep-going`). A bare matrix reads as a plan with none unplanned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub include: Vec<Shard>,
    #[serde(default)]
    pub unplanned: Vec<Unplanned>,
}

/// A release left out of the plan because its metadata could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplanned {
    pub distro: String,
    pub arch: String,
    pub error: String,
}

impl Record {
    /// The plan in `path` (a plan record or a bare matrix).
    pub fn read(path: &std::path::Path) -> Result<Record> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a plan (cargo xtask plan's matrix or the plan job's plan output)",
                path.display()
            )
        })
    }
}

/// One build job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// `debian-11-001`: unique in the matrix; names the job's artifact (`part-<shard>`).
    pub shard: String,
    pub distro: String,
    /// `x86_64`, `aarch64`: what the job passes to `cargo xtask build --arch`.
    pub arch: String,
    /// `Debian-11-x86_64`: the tarball the job writes is `<dist_name>.tar.gz`.
    pub dist_name: String,
    /// `RELEASE=VERSION` pins separated by single spaces.
    pub kernels: String,
    pub count: usize,
}

impl Args {
    /// `--all` is offline (distros/ and the fixtures); otherwise the
    /// repositories are read.
    pub fn needs(&self) -> Result<Needs> {
        Ok(if self.all {
            Needs::default()
        } else {
            Needs::new("plan").tools(needs::REPOSITORY)
        })
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.all {
        print!("{}", offline(&per_arch(crate::distro::all()?)?)?);
        return Ok(());
    }
    let releases = if args.distros.is_empty() {
        crate::distro::all()?
    } else {
        args.distros
            .iter()
            .map(|recipe| recipe.distro(None))
            .collect::<Result<Vec<_>>>()?
    };
    let distros = per_arch(releases)?;
    let mut planned = Vec::new();
    let mut unplanned = Vec::new();
    for distro in distros {
        // A release whose repositories need credentials nobody supplied here
        // (SLES in a workflow without the secret) is left out, saying what
        // it needs. Credentials supplied but unusable fail like an archive
        // that cannot be read.
        if let Some(note) = not_supplied(&distro) {
            eprintln!("note: {note}");
            continue;
        }
        let all = match kernels::discover(&distro)
            .with_context(|| format!("listing the kernels of {}", distro.name))
        {
            Ok(all) => all,
            Err(e) if args.keep_going => {
                eprintln!("warning: not planned: {e:#}");
                unplanned.push(Unplanned {
                    distro: distro.name.clone(),
                    arch: distro.arch.clone(),
                    error: crate::build::failures::one_line(&e),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let picked = match args.latest {
            Some(n) => kernels::select(&distro, &all, &[], Some(n))?,
            None => all,
        };
        planned.push((distro, picked));
    }
    let matrix = match &args.missing_from {
        Some(source) => {
            let published = published(source)?;
            let missing = missing(&planned, &published);
            let total: usize = missing.iter().map(|(_, k)| k.len()).sum();
            eprintln!(
                "{source}: {} module(s) published; {total} kernel(s) missing",
                published.len()
            );
            for (distro, kernels) in &missing {
                for k in kernels {
                    eprintln!("missing: {} {}", distro.name, k.release);
                }
            }
            if total == 0 {
                Matrix { include: vec![] }
            } else {
                plan(&missing, args.shard_size)?
            }
        }
        None => plan(&planned, args.shard_size)?,
    };
    for (distro, _) in &planned {
        let shards: Vec<&Shard> = matrix
            .include
            .iter()
            .filter(|s| s.distro == distro.name && s.arch == distro.arch)
            .collect();
        eprintln!(
            "{} ({}): {} kernel(s) in {} job(s)",
            distro.name,
            distro.arch,
            shards.iter().map(|s| s.count).sum::<usize>(),
            shards.len()
        );
    }
    eprintln!(
        "{} build job(s) of at most {} kernel(s)",
        matrix.include.len(),
        args.shard_size
    );
    let json = serde_json::to_string(&matrix)?;
    match args.github_output {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let record = serde_json::to_string(&Record {
                include: matrix.include.clone(),
                unplanned,
            })?;
            writeln!(
                file,
                "matrix={json}\ncount={}\nplan={record}",
                matrix.include.len()
            )
            .with_context(|| format!("writing {}", path.display()))?;
        }
        None => println!("{}", serde_json::to_string_pretty(&matrix)?),
    }
    Ok(())
}

/// Why `distro` is left out of the plan: its repositories need credentials
/// and the variable that names them is not set.
pub fn not_supplied(distro: &Distro) -> Option<String> {
    let crate::distro::Repo::RpmMd(repo) = &distro.repo else {
        return None;
    };
    let c = repo.credentials.as_ref().filter(|c| !c.supplied())?;
    Some(format!(
        "{} ({}) not planned: {} is not set; its repositories need {}",
        distro.name, distro.arch, c.env, c.help
    ))
}

/// Each release once per architecture its file lists.
fn per_arch(releases: Vec<Distro>) -> Result<Vec<Distro>> {
    let mut distros = Vec::new();
    for release in releases {
        for arch in &release.arches {
            match crate::distro::arch::Arch::from_name(arch) {
                Some(a) if *arch != release.arch => {
                    distros.push(crate::distro::find_for(&release.name, Some(a))?)
                }
                _ => distros.push(release.clone()),
            }
        }
    }
    Ok(distros)
}

/// What `plan --all` prints: per recipe and architecture, its builder image
/// and the repositories its kernels come from, then each kernel its real-metadata fixture lists with the compiler chosen
/// for it, or that it has no fixture (the recipe is checked by rendering
/// its commands only). Reads nothing but distros/ and the fixtures.
pub fn offline(distros: &[Distro]) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (mut with, mut without) = (0, 0);
    for d in distros {
        let b = &d.builder;
        let cross = b
            .cross_compile
            .as_deref()
            .map(|p| format!(" (cross: CROSS_COMPILE={p})"))
            .unwrap_or_default();
        writeln!(out, "{} {}: image {}{cross}", d.name, d.arch, b.image)?;
        let sources: Vec<String> = match &d.repo {
            crate::distro::Repo::Apt(apt) => apt
                .archives
                .iter()
                .map(|a| format!("{} ({})", a.mirror, a.suites.join(", ")))
                .collect(),
            crate::distro::Repo::RpmMd(rpm) => rpm.baseurls.clone(),
        };
        writeln!(out, "  kernels from {}", sources.join("; "))?;
        match crate::repo::fixtures::kernels(d)? {
            None => {
                without += 1;
                let rules: Vec<String> = b
                    .compilers
                    .iter()
                    .map(|r| format!(", {}* {}", r.release_prefix, r.cc))
                    .collect();
                writeln!(
                    out,
                    "  no fixture: checked by rendering only (compiler {}{})",
                    b.cc,
                    rules.concat()
                )?;
            }
            Some(found) => {
                with += 1;
                writeln!(
                    out,
                    "  fixture {}: {} kernel(s)",
                    found.dir,
                    found.kernels.len()
                )?;
                for m in &found.missing {
                    writeln!(out, "  fixture has no copy of {m}")?;
                }
                for k in &found.kernels {
                    writeln!(
                        out,
                        "    {:<32} {:<24} {:<12} cc {}",
                        k.release,
                        k.version,
                        if k.flavour.is_empty() {
                            "-"
                        } else {
                            &k.flavour
                        },
                        b.cc_for(&k.release)
                    )?;
                }
            }
        }
    }
    writeln!(
        out,
        "{} recipe architecture(s): {with} checked against a real-metadata fixture, {without} by rendering only",
        distros.len()
    )?;
    Ok(out)
}

/// `(distro, release)` of every module a published index.json lists.
pub type Published = std::collections::BTreeSet<(String, String)>;

/// The modules of the index.json at `source` (a file or an http(s) URL).
pub fn published(source: &str) -> Result<Published> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?
            .get(source)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .with_context(|| format!("downloading {source}"))?
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading {source}"))?
    };
    parse_published(&text).with_context(|| format!("{source} is not a release's index.json"))
}

/// [`published`] on the text of an index.json.
pub fn parse_published(text: &str) -> Result<Published> {
    #[derive(serde::Deserialize)]
    struct Index {
        format: u32,
        modules: Vec<Module>,
    }
    #[derive(serde::Deserialize)]
    struct Module {
        distro: String,
        release: String,
    }
    let index: Index = serde_json::from_str(text)?;
    if index.format != 1 {
        bail!(
            "index.json format {} (this xtask reads format 1)",
            index.format
        );
    }
    Ok(index
        .modules
        .into_iter()
        .map(|m| (m.distro, m.release))
        .collect())
}

/// The kernels of each release that `published` has no module for.
pub fn missing(
    planned: &[(Distro, Vec<Kernel>)],
    published: &Published,
) -> Vec<(Distro, Vec<Kernel>)> {
    planned
        .iter()
        .map(|(distro, kernels)| {
            let missing = kernels
                .iter()
                .filter(|k| !published.contains(&(distro.name.clone(), k.release.clone())))
                .cloned()
                .collect();
            (distro.clone(), missing)
        })
        .filter(|(_, kernels): &(Distro, Vec<Kernel>)| !kernels.is_empty())
        .collect()
}

/// Cuts each release's kernels (oldest first) into shards of at most
/// `shard_size`.
pub fn plan(releases: &[(Distro, Vec<Kernel>)], shard_size: usize) -> Result<Matrix> {
    if shard_size == 0 {
        bail!("--shard-size must be at least 1");
    }
    let mut include = Vec::new();
    let mut total = 0;
    for (distro, kernels) in releases {
        check_value(&distro.name, "distro name", &distro.name)?;
        let mut kernels = kernels.clone();
        kernels.sort_by(|a, b| release_cmp(&a.release, &b.release));
        kernels.dedup();
        for k in &kernels {
            check_value(&distro.name, "kernel release", &k.release)?;
            check_value(&distro.name, "kernel version", &k.version)?;
            if k.release.contains('=') {
                bail!(
                    "{}: kernel release {:?} contains '='",
                    distro.name,
                    k.release
                );
            }
        }
        total += kernels.len();
        // x86_64 shards keep the names they always had.
        let stem = match distro.arch.as_str() {
            "x86_64" => distro.name.clone(),
            arch => format!("{}-{arch}", distro.name),
        };
        for (i, chunk) in kernels.chunks(shard_size).enumerate() {
            include.push(Shard {
                shard: format!("{stem}-{:03}", i + 1),
                distro: distro.name.clone(),
                arch: distro.arch.clone(),
                dist_name: distro.dist_name(),
                kernels: chunk
                    .iter()
                    .map(|k| format!("{}={}", k.release, k.version))
                    .collect::<Vec<_>>()
                    .join(" "),
                count: chunk.len(),
            });
        }
    }
    if include.is_empty() {
        bail!("nothing to build: no release or no kernel was planned");
    }
    if include.len() > MAX_JOBS {
        bail!(
            "{total} kernels in shards of {shard_size} make {} build jobs, more than the {MAX_JOBS} one \
             matrix may hold; use --shard-size {} or more",
            include.len(),
            total.div_ceil(MAX_JOBS)
        );
    }
    Ok(Matrix { include })
}

/// Matrix values reach job names, artifact names and shell words: plain
/// characters only.
fn check_value(distro: &str, what: &str, value: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._+~-:=".contains(c);
    if value.is_empty() || !value.chars().all(plain) {
        bail!("{distro}: {what} {value:?} has characters a build matrix does not carry");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distro(name: &str, tarball: &str) -> Distro {
        let text = format!(
            r#"
name = "{name}"
tarball = "{tarball}"
family = "debian"
arch = "x86_64"
[repo]
type = "apt"
mirror = "http://deb.debian.org/debian"
suite = "bookworm"
flavours = ["amd64"]
archives = [{{ mirror = "http://deb.debian.org/debian", suites = ["bookworm"] }}]
[builder]
image = "debian:bookworm"
prepare = []
install_headers = "apt-get install -y linux-headers-{{release}}"
kdir = "/usr/src/linux-headers-{{release}}"
cc = "gcc-12"
"#
        );
        toml::from_str(&text).unwrap()
    }

    fn kernel(release: &str, version: &str) -> Kernel {
        Kernel::pinned(release, version)
    }

    fn kernels(n: usize) -> Vec<Kernel> {
        (1..=n)
            .map(|i| kernel(&format!("6.1.0-{i}-amd64"), &format!("6.1.{i}-1")))
            .collect()
    }

    #[test]
    fn shards_hold_at_most_n_kernels_of_one_release() {
        let releases = [
            (distro("debian-12", "Debian-12"), kernels(5)),
            (distro("debian-11", "Debian-11"), kernels(1)),
        ];
        let m = plan(&releases, 2).unwrap();
        let ids: Vec<&str> = m.include.iter().map(|s| s.shard.as_str()).collect();
        assert_eq!(
            ids,
            [
                "debian-12-001",
                "debian-12-002",
                "debian-12-003",
                "debian-11-001"
            ]
        );
        assert_eq!(
            m.include[0].kernels,
            "6.1.0-1-amd64=6.1.1-1 6.1.0-2-amd64=6.1.2-1"
        );
        assert_eq!(m.include[2].kernels, "6.1.0-5-amd64=6.1.5-1");
        assert_eq!(m.include[2].count, 1);
        assert_eq!(m.include[3].dist_name, "Debian-11-x86_64");
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.starts_with(r#"{"include":[{"shard":"debian-12-001","distro":"debian-12","arch":"x86_64","dist_name":"Debian-12-x86_64","kernels":"#), "{json}");
        assert!(!json.contains('\n'));
    }

    #[test]
    fn an_arm64_release_has_its_own_shards_and_tarball() {
        let mut arm = distro("debian-12", "Debian-12");
        arm.arch = "aarch64".into();
        let releases = [
            (distro("debian-12", "Debian-12"), kernels(1)),
            (arm, vec![kernel("6.1.0-1-arm64", "6.1.1-1")]),
        ];
        let m = plan(&releases, 8).unwrap();
        let rows: Vec<(&str, &str, &str)> = m
            .include
            .iter()
            .map(|s| (s.shard.as_str(), s.arch.as_str(), s.dist_name.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("debian-12-001", "x86_64", "Debian-12-x86_64"),
                ("debian-12-aarch64-001", "aarch64", "Debian-12-aarch64"),
            ]
        );
    }

    #[test]
    fn kernels_are_ordered_oldest_first() {
        let mut ks = kernels(10);
        ks.reverse();
        let m = plan(&[(distro("debian-12", "Debian-12"), ks)], 8).unwrap();
        assert!(m.include[0].kernels.starts_with("6.1.0-1-amd64="));
        assert!(m.include[1].kernels == "6.1.0-9-amd64=6.1.9-1 6.1.0-10-amd64=6.1.10-1");
    }

    #[test]
    fn too_many_jobs_names_the_shard_size_that_fits() {
        let err = plan(&[(distro("debian-12", "Debian-12"), kernels(600))], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("use --shard-size 3 or more"), "{err}");
        assert_eq!(
            plan(&[(distro("debian-12", "Debian-12"), kernels(600))], 3)
                .unwrap()
                .include
                .len(),
            200
        );
        assert!(plan(&[(distro("debian-12", "Debian-12"), kernels(1))], 0).is_err());
        assert!(plan(&[(distro("debian-12", "Debian-12"), vec![])], 8).is_err());
    }

    /// An index.json as `index::render` writes it.
    fn index_json(modules: &[(&str, &str)]) -> String {
        let entries: Vec<crate::build::index::Entry> = modules
            .iter()
            .map(|(distro, release)| crate::build::index::Entry {
                release: release.to_string(),
                arch: "x86_64".into(),
                uname_v: String::new(),
                distro: distro.to_string(),
                tarball: "Debian-12-x86_64.tar.gz".into(),
                tarball_sha256: "a".repeat(64),
                ko: format!("Debian-12-x86_64/{release}/toa.ko"),
                ko_sha256: "b".repeat(64),
            })
            .collect();
        crate::build::index::render("0.1.0", &entries)
    }

    #[test]
    fn missing_from_plans_only_the_kernels_an_index_lacks() {
        let all = kernels(5);
        let releases = [(distro("debian-12", "Debian-12"), all.clone())];
        // Published: all but 6.1.0-3 (and a kernel of another release with its name).
        let published = parse_published(&index_json(&[
            ("debian-12", "6.1.0-1-amd64"),
            ("debian-12", "6.1.0-2-amd64"),
            ("debian-11", "6.1.0-3-amd64"),
            ("debian-12", "6.1.0-4-amd64"),
            ("debian-12", "6.1.0-5-amd64"),
        ]))
        .unwrap();
        let missing = missing(&releases, &published);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].1, [kernel("6.1.0-3-amd64", "6.1.3-1")]);
        let m = plan(&missing, 8).unwrap();
        assert_eq!(m.include.len(), 1);
        assert_eq!(m.include[0].kernels, "6.1.0-3-amd64=6.1.3-1");

        // Everything published: nothing to plan.
        let all_published: Vec<(&str, String)> = all
            .iter()
            .map(|k| ("debian-12", k.release.clone()))
            .collect();
        let refs: Vec<(&str, &str)> = all_published
            .iter()
            .map(|(d, r)| (*d, r.as_str()))
            .collect();
        let published = parse_published(&index_json(&refs)).unwrap();
        assert!(super::missing(&releases, &published).is_empty());

        // An empty release index: every kernel.
        let published = parse_published(&index_json(&[])).unwrap();
        assert_eq!(super::missing(&releases, &published)[0].1.len(), 5);
    }

    #[test]
    fn a_file_that_is_not_an_index_is_refused() {
        assert!(parse_published("{}").is_err());
        assert!(parse_published(r#"{"format":2,"modules":[]}"#).is_err());
        let dir = crate::testing::scratch("plan-missing");
        let file = dir.join("index.json");
        std::fs::write(&file, index_json(&[("debian-12", "6.1.0-1-amd64")])).unwrap();
        let got = published(file.to_str().unwrap()).unwrap();
        assert!(got.contains(&("debian-12".to_string(), "6.1.0-1-amd64".to_string())));
        let err = format!(
            "{:#}",
            published(dir.join("nope").to_str().unwrap()).unwrap_err()
        );
        assert!(err.contains("reading"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `plan --all` over every recipe: each architecture of each file
    /// appears with its image and either kernels from its fixture (each
    /// with a compiler) or the explicit no-fixture line.
    #[test]
    fn plan_all_lists_every_recipe_offline() {
        let distros = per_arch(crate::distro::all().unwrap()).unwrap();
        let text = offline(&distros).unwrap();
        let blocks: Vec<&str> = text.lines().collect();
        for d in &distros {
            let head = format!("{} {}: image {}", d.name, d.arch, d.builder.image);
            let at = blocks
                .iter()
                .position(|l| l.starts_with(&head))
                .unwrap_or_else(|| panic!("{head} missing from:\n{text}"));
            let body: Vec<&str> = blocks[at + 1..]
                .iter()
                .take_while(|l| l.starts_with(' '))
                .copied()
                .collect();
            let no_fixture = body
                .iter()
                .any(|l| l.starts_with("  no fixture: checked by rendering only"));
            let kernels: Vec<&str> = body
                .iter()
                .filter(|l| l.starts_with("    "))
                .copied()
                .collect();
            assert!(
                no_fixture == kernels.is_empty(),
                "{head}: kernels or the no-fixture line:\n{}",
                body.join("\n")
            );
            for k in &kernels {
                assert!(k.contains(" cc "), "{k}");
            }
        }
        // The recipes with real-metadata fixtures list what those hold.
        assert!(text.contains("centos-stream-9 x86_64: image quay.io/centos/centos:stream9\n  kernels from https://mirror.stream.centos.org/9-stream/AppStream/x86_64/os/\n  fixture xtask/tests/fixtures/rpm/centos-stream-9: 5 kernel(s)\n"), "{text}");
        assert!(text.contains("debian-12 x86_64: image debian:bookworm\n  kernels from http://deb.debian.org/debian (bookworm, bookworm-updates, bookworm-backports); http://deb.debian.org/debian-security (bookworm-security)\n"), "{text}");
        assert!(text.contains("    5.14.0-547.el9.x86_64"), "{text}");
        assert!(text.contains("    6.4.0-150600.23.47-default"), "{text}");
        assert!(text.contains("    6.1.0-50-amd64"), "{text}");
        assert!(text.contains("centos-7.9 x86_64: image "), "{text}");
    }

    #[test]
    fn plan_all_takes_no_selection() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        assert!(Cli::try_parse_from(["plan", "--all"]).unwrap().args.all);
        assert!(Cli::try_parse_from(["plan", "--all", "--distro", "debian-12"]).is_err());
        assert!(Cli::try_parse_from(["plan", "--all", "--missing-from", "x"]).is_err());
    }

    /// SLES is planned only where its credentials are supplied; unset, it
    /// is left out with a note naming the variable.
    #[test]
    fn a_release_needing_credentials_is_left_out_only_without_them() {
        let sles = crate::distro::find("sles-12-sp5").unwrap();
        let crate::distro::Repo::RpmMd(repo) = &sles.repo else {
            panic!("rpm-md");
        };
        let env = repo.credentials.as_ref().unwrap().env.clone();
        let mut sles = sles.clone();
        let crate::distro::Repo::RpmMd(repo) = &mut sles.repo else {
            unreachable!()
        };
        let var = format!("TOA_TEST_PLAN_CREDENTIALS_{}", std::process::id());
        repo.credentials.as_mut().unwrap().env = var.clone();
        std::env::remove_var(&var);
        let note = not_supplied(&sles).expect("left out");
        assert!(
            note.starts_with(&format!(
                "sles-12-sp5 (x86_64) not planned: {var} is not set"
            )) && note.contains("SUSE Customer Center"),
            "{note}"
        );
        std::env::set_var(&var, "");
        assert!(not_supplied(&sles).is_some());
        std::env::set_var(&var, "/nonexistent/SCCcredentials");
        assert_eq!(not_supplied(&sles), None);
        std::env::remove_var(&var);
        assert_eq!(env, "TOA_SCC_CREDENTIALS");
        assert_eq!(
            not_supplied(&crate::distro::find("debian-12").unwrap()),
            None
        );
    }

    #[test]
    fn values_a_shell_word_cannot_carry_are_refused() {
        for bad in ["6.1 0", "6.1$(x)", "a'b", ""] {
            let err = plan(
                &[(distro("debian-12", "Debian-12"), vec![kernel(bad, "1")])],
                8,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("kernel release"), "{err}");
        }
    }
}
