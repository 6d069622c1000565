//! `cargo xtask source`: `target/dist/toa.tar.gz`, the source an origin builds
//! toa.ko from with only gcc, make and its kernel headers.
//!
//! ```text
//! toa-<version>/Kbuild, Makefile, *.c, *.h       the C glue (toa-kmod/kbuild)
//! toa-<version>/rust/toa_core-<arch>-<flavour>.o  the audited Rust core objects
//! toa-<version>/rust-src/Cargo.toml, src/*.rs     their sources, for reference
//! toa-<version>/dkms.conf, README.md
//! ```
//!
//! Same inputs, same bytes: entries sorted, owner root, fixed modes, mtime 0,
//! gzip header without name or time.

use crate::host::needs::{self, Needs};
use crate::{build::index, host::cache, objects::kmod};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const DKMS_CONF: &str = include_str!("../../../dist/dkms.conf");
const README: &str = include_str!("../../../dist/source-README.md");

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    /// The toa command embeds the eBPF programs, which clang compiles.
    pub fn needs(&self) -> Result<Needs> {
        Ok(Needs::new("source").rust().tools(&[needs::BPF_COMPILER]))
    }
}

pub fn run(_args: Args) -> Result<()> {
    let objects = kmod::build_all(&cache::cache_dir().join("kmod-objects"))?;
    let dist = cache::dist_dir();
    let tarball = write_source_tarball(&dist, &objects)?;
    let programs = crate::objects::operator_cli::build_into(&dist)?;
    index::write_index(&dist)?;
    println!("{}", tarball.display());
    programs.iter().for_each(|p| println!("{}", p.display()));
    Ok(())
}

/// The top directory inside toa.tar.gz.
pub fn top_dir() -> String {
    format!("toa-{}", env!("CARGO_PKG_VERSION"))
}

fn render(template: &str) -> String {
    template.replace("@TOA_VERSION@", env!("CARGO_PKG_VERSION"))
}

/// Files of `dir` (not below it) that `keep` accepts, by name.
fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && keep(&name) {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every (path in the tarball, bytes) of the source tarball.
fn entries(objects: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>> {
    let root = cache::project_root();
    let top = top_dir();
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut out = Vec::new();
    let kbuild = files_in(&root.join("toa-kmod/kbuild"), |n| {
        n == "Kbuild" || n == "Makefile" || n.ends_with(".c") || n.ends_with(".h")
    })?;
    if !kbuild.iter().any(|(n, _)| n == "Kbuild") || !kbuild.iter().any(|(n, _)| n == "Makefile") {
        bail!("toa-kmod/kbuild has no Kbuild or Makefile");
    }
    for (name, path) in kbuild {
        let mut data = read(&path)?;
        if name == "Kbuild" {
            data = with_version_default(&data);
        }
        out.push((format!("{top}/{name}"), data));
    }
    if objects.is_empty() {
        bail!("no Rust core objects to ship");
    }
    for object in objects {
        let name = object
            .file_name()
            .context("object without a file name")?
            .to_string_lossy();
        out.push((format!("{top}/rust/{name}"), read(object)?));
    }
    out.push((
        format!("{top}/rust-src/Cargo.toml"),
        read(&root.join("toa-kmod/Cargo.toml"))?,
    ));
    for (name, path) in files_in(&root.join("toa-kmod/src"), |n| n.ends_with(".rs"))? {
        out.push((format!("{top}/rust-src/src/{name}"), read(&path)?));
    }
    out.push((format!("{top}/dkms.conf"), render(DKMS_CONF).into_bytes()));
    out.push((format!("{top}/README.md"), render(README).into_bytes()));
    out.sort();
    Ok(out)
}

/// Kbuild's `TOA_VERSION ?= ...` default set to this version, so a plain
/// `make` in the tarball stamps the module with the version it ships as.
fn with_version_default(kbuild: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(kbuild);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with("TOA_VERSION ?=") {
            out.push_str(&format!("TOA_VERSION ?= {}\n", env!("CARGO_PKG_VERSION")));
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// Writes `<dist_dir>/toa.tar.gz` from the kbuild sources and `objects`.
pub fn write_source_tarball(dist_dir: &Path, objects: &[PathBuf]) -> Result<PathBuf> {
    let files = entries(objects)?;
    let mut dirs: Vec<String> = files
        .iter()
        .flat_map(|(path, _)| {
            let mut parents = Vec::new();
            let mut p = Path::new(path).parent();
            while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
                parents.push(format!("{}/", dir.to_string_lossy()));
                p = dir.parent();
            }
            parents
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let out = dist_dir.join(index::SOURCE_TARBALL);
    crate::build::package::write_tar_gz(&out, &dirs, &files)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_objects(dir: &Path) -> Vec<PathBuf> {
        ["plain", "rethunk"]
            .iter()
            .map(|f| {
                let p = dir.join(format!("toa_core-x86_64-{f}.o_shipped"));
                std::fs::write(&p, format!("object {f}")).unwrap();
                p
            })
            .collect()
    }

    fn names(tarball: &Path) -> Vec<(String, u32, u64)> {
        let file = std::fs::File::open(tarball).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn source_tarball_is_reproducible_and_complete() {
        let dir = crate::testing::scratch("source-repro");
        let objects = fake_objects(&dir);
        let a = write_source_tarball(&dir.join("a"), &objects).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = write_source_tarball(&dir.join("b"), &objects).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let gz = std::fs::read(&a).unwrap();
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime must be 0");

        let listed = names(&a);
        let top = top_dir();
        let paths: Vec<&str> = listed.iter().map(|(p, _, _)| p.as_str()).collect();
        for want in [
            format!("{top}/"),
            format!("{top}/Kbuild"),
            format!("{top}/Makefile"),
            format!("{top}/compat.h"),
            format!("{top}/toa_main.c"),
            format!("{top}/rust/toa_core-x86_64-plain.o_shipped"),
            format!("{top}/rust/toa_core-x86_64-rethunk.o_shipped"),
            format!("{top}/rust-src/Cargo.toml"),
            format!("{top}/rust-src/src/lib.rs"),
            format!("{top}/dkms.conf"),
            format!("{top}/README.md"),
        ] {
            assert!(paths.contains(&want.as_str()), "{want} missing: {paths:?}");
        }
        let files: Vec<&str> = paths
            .iter()
            .copied()
            .filter(|p| !p.ends_with('/'))
            .collect();
        let mut sorted = files.clone();
        sorted.sort();
        assert_eq!(files, sorted, "entries are sorted");
        assert!(listed.iter().all(|(_, _, mtime)| *mtime == 0));
        assert!(listed
            .iter()
            .all(|(p, mode, _)| *mode == if p.ends_with('/') { 0o755 } else { 0o644 }));

        let conf = String::from_utf8(
            crate::build::package::read_from_tarball(&a, &format!("{top}/dkms.conf")).unwrap(),
        )
        .unwrap();
        assert!(conf.contains(&format!(
            "PACKAGE_VERSION=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(!conf.contains('@'), "placeholders left in dkms.conf");
        let kbuild = String::from_utf8(
            crate::build::package::read_from_tarball(&a, &format!("{top}/Kbuild")).unwrap(),
        )
        .unwrap();
        assert!(
            kbuild
                .lines()
                .any(|l| l == format!("TOA_VERSION ?= {}", env!("CARGO_PKG_VERSION"))),
            "{kbuild}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The promise of the source tarball: `make` in it builds toa.ko with gcc,
    /// make and kernel headers only. Built inside the Debian 12 builder rootfs
    /// that `cargo xtask build --distro debian-12` leaves in the cache.
    #[test]
    fn source_tarball_builds_with_make_in_the_debian_12_builder() {
        let root = cache::cache_dir().join("builders/debian-12/rootfs");
        if !crate::host::is_root() {
            eprintln!("skipped: building in the Debian 12 builder chroot needs root");
            return;
        }
        if !root.join(".toa-builder-ready").is_file() {
            eprintln!(
                "skipped: no Debian 12 builder rootfs at {}; `cargo xtask build --distro debian-12` makes it",
                root.display()
            );
            return;
        }
        let release = std::fs::read_dir(root.join("usr/src"))
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                let release = name.strip_prefix("linux-headers-")?.to_string();
                (!release.ends_with("-common")
                    && root.join("usr/src").join(&name).join("Makefile").is_file())
                .then_some(release)
            })
            .max()
            .expect("kernel headers in the builder rootfs");

        let scratch = crate::testing::scratch("source-chroot");
        let objects = kmod::build_all(&scratch.join("objects")).unwrap();
        let tarball = write_source_tarball(&scratch, &objects).unwrap();
        let inside = format!("/tmp/toa-source-test-{}", std::process::id());
        let host_dir = root.join(inside.trim_start_matches('/'));
        let _ = std::fs::remove_dir_all(&host_dir);
        std::fs::create_dir_all(&host_dir).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&tarball).unwrap(),
        ))
        .unpack(&host_dir)
        .unwrap();

        let script = format!(
            "mount -t proc proc /proc && cd {inside}/{} && make KDIR=/usr/src/linux-headers-{release}",
            top_dir()
        );
        let output = std::process::Command::new("unshare")
            .args(["--mount", "--fork", "chroot"])
            .arg(&root)
            .args(["/bin/sh", "-c", &script])
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LC_ALL", "C")
            .output()
            .expect("running unshare/chroot");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "make in toa.tar.gz failed:\n{log}");
        let built = host_dir.join(top_dir());
        let ko = std::fs::read(built.join("toa.ko")).expect("make produced toa.ko");
        let info = crate::objects::modcheck::modinfo(&ko).unwrap();
        assert_eq!(
            info["vermagic"].split_whitespace().next(),
            Some(release.as_str()),
            "vermagic of the module built from toa.tar.gz"
        );
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(info["name"], "toa");
        std::fs::remove_dir_all(&host_dir).unwrap();
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
