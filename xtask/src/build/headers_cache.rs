//! Kernel headers for apt releases built with a container engine, without an
//! image that holds them.
//!
//! Installing every kernel's headers with apt in one container and committing
//! it meant dpkg unpacking ~80 packages through the engine's storage driver
//! and a multi-GB image that a single new kernel invalidated. Instead:
//! * each kernel's own packages (`linux-headers-<release>` and the kernel
//!   packages it depends on, transitively) are resolved from the archive
//!   indices xtask already verifies, downloaded sha256-checked, and unpacked
//!   once into `<cache>/headers/<sha256>/`, keyed by the package's hash;
//! * everything else those packages depend on (the compiler, libraries of
//!   kbuild's host programs) goes into one small image per release and
//!   package set (see [`crate::build::builder::Builder::toolchain_steps`]);
//! * a build mounts its kernel's package directories read-only at their
//!   real paths, so absolute symlinks and the `include` of the `-common`
//!   Makefile resolve as they do on an installed system.

use crate::distro::kernel::Kernel;
use crate::distro::Distro;
use crate::repo::debian::{parse_depends, version_cmp, Index, PackageRef, Stanza};
use anyhow::{bail, Context, Result};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The packages a kernel's headers need, split by where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// The kernel's own packages, unpacked into the cache: the headers
    /// package first, then its dependencies in the order they were found.
    pub own: Vec<PackageRef>,
    /// Every other package they depend on, by name, for the builder image.
    pub external: BTreeSet<String>,
}

/// Whether package `name` belongs to one kernel (its headers, its kbuild
/// tools, the per-release files of split releases) rather than to the
/// userland every kernel shares. Ubuntu's common headers are
/// `linux-headers-<abi>` or `linux-<flavour>-headers-<abi>`
/// (`linux-hwe-6.8-headers-6.8.0-45`).
pub fn is_kernel_own(name: &str) -> bool {
    name.starts_with("linux-headers-")
        || name.starts_with("linux-kbuild-")
        || name
            .strip_prefix("linux-base-")
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        || (name.starts_with("linux-") && name.contains("-headers-"))
}

/// Packages a headers package may depend on that a module build never
/// needs: the kernel image itself (trixie's headers depend on it).
fn is_skipped(name: &str) -> bool {
    name.starts_with("linux-image-")
}

/// Whether `version` satisfies a Depends constraint `(op, wanted)`.
fn satisfies(version: &str, op: &str, wanted: &str) -> bool {
    let ord = version_cmp(version, wanted);
    match op {
        "=" => ord == Ordering::Equal,
        ">=" | ">" => ord != Ordering::Less,
        "<=" | "<" => ord != Ordering::Greater,
        ">>" => ord == Ordering::Greater,
        "<<" => ord == Ordering::Less,
        _ => false,
    }
}

/// The newest stanza of `name` in `indices` that satisfies `constraint`,
/// with the index that lists it.
fn find<'a>(
    indices: &'a [Arc<Index>],
    name: &str,
    constraint: Option<&(String, String)>,
) -> Option<(&'a Index, &'a Stanza)> {
    indices
        .iter()
        .flat_map(|i| i.versions(name).iter().map(move |s| (&**i, s)))
        .filter(|(_, s)| constraint.is_none_or(|(op, v)| satisfies(&s.version, op, v)))
        .max_by(|a, b| version_cmp(&a.1.version, &b.1.version))
}

fn suites_of(indices: &[Arc<Index>]) -> String {
    indices
        .iter()
        .map(|i| i.where_())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The [`Closure`] of `kernel` in `indices`: `linux-headers-<release>` at
/// the kernel's version (else the newest), then every kernel package it
/// depends on, transitively. Of a group of alternatives the first that is
/// a kernel package and can be found is taken; a group without one adds its
/// first alternative to the externals.
pub fn closure(indices: &[Arc<Index>], kernel: &Kernel) -> Result<Closure> {
    let root = format!("linux-headers-{}", kernel.release);
    let exact = ("=".to_string(), kernel.version.clone());
    let start = find(indices, &root, Some(&exact))
        .or_else(|| find(indices, &root, None))
        .with_context(|| {
            format!(
                "kernel {}: headers package \"{root}\" not found in {}",
                kernel.release,
                suites_of(indices)
            )
        })?;
    let mut own: Vec<PackageRef> = Vec::new();
    let mut external = BTreeSet::new();
    let mut queue = vec![start];
    while let Some((index, stanza)) = queue.pop() {
        if own.iter().any(|p| p.name == stanza.package) {
            continue;
        }
        own.push(index.package_ref(stanza)?);
        let fields = [stanza.pre_depends.as_str(), stanza.depends.as_str()];
        let mut next = Vec::new();
        for group in fields.iter().flat_map(|f| parse_depends(f)) {
            let kernel_alts: Vec<_> = group.iter().filter(|r| is_kernel_own(&r.name)).collect();
            if kernel_alts.is_empty() {
                if let Some(first) = group.iter().find(|r| !is_skipped(&r.name)) {
                    external.insert(first.name.clone());
                }
                continue;
            }
            let found = kernel_alts
                .iter()
                .find_map(|r| find(indices, &r.name, r.constraint.as_ref()));
            match found {
                Some(hit) => next.push(hit),
                None => {
                    let wanted: Vec<String> = kernel_alts
                        .iter()
                        .map(|r| match &r.constraint {
                            Some((op, v)) => format!("\"{} ({op} {v})\"", r.name),
                            None => format!("\"{}\"", r.name),
                        })
                        .collect();
                    bail!(
                        "kernel {}: package {} (needed by {} {}) not found in {}",
                        kernel.release,
                        wanted.join(" or "),
                        stanza.package,
                        stanza.version,
                        suites_of(indices)
                    );
                }
            }
        }
        // Depth first, in the order of the fields.
        queue.extend(next.into_iter().rev());
    }
    Ok(Closure { own, external })
}

/// Where the unpacked packages live: `<cache>/headers`.
pub fn cache_root() -> PathBuf {
    crate::host::cache::cache_dir().join("headers")
}

/// The directory package `sha256` is (or will be) unpacked into.
pub fn entry_dir(root: &Path, sha256: &str) -> PathBuf {
    root.join(sha256)
}

/// Unpacks `deb`, whose sha256 must be `sha256`, into `root/<sha256>` unless
/// it is there already; returns that directory. The file is hashed first
/// (a mismatch names it and both hashes). Everything is written into a
/// temporary directory beside the entry and renamed into place, so an
/// interrupted unpack never leaves an entry that looks complete.
pub fn unpack(deb: &Path, sha256: &str, root: &Path) -> Result<PathBuf> {
    let dest = entry_dir(root, sha256);
    if dest.is_dir() {
        return Ok(dest);
    }
    let got = crate::host::fs::sha256_file(deb)?;
    if !got.eq_ignore_ascii_case(sha256) {
        bail!(
            "{}: sha256 mismatch: expected {sha256}, got {got}",
            deb.display()
        );
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let tmp = root.join(format!(".partial-{sha256}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = unpack_into(deb, &tmp).and_then(|()| {
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => Ok(()),
            // Another process unpacked the same package first.
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(e).with_context(|| format!("renaming into {}", dest.display())),
        }
    });
    if tmp.exists() {
        let _ = make_writable(&tmp);
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.with_context(|| format!("unpacking {}", deb.display()))?;
    Ok(dest)
}

/// Read-only directories of a half-made entry must not stop its removal.
fn make_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let path = entry.path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            make_writable(&path)?;
        }
    }
    Ok(())
}

/// A relative path of the archive that stays inside the unpack directory.
fn safe_relative(path: &str) -> Result<&Path> {
    let p = Path::new(path);
    if p.components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        bail!("refusing entry path {path:?}: it leaves the unpack directory");
    }
    Ok(p)
}

/// Writes every entry of `deb` under `into` the way dpkg would: files with
/// their modes and modification times, symlinks with their targets as they
/// are (absolute ones resolve inside the build container), hard links,
/// and directory modes last (a read-only directory must still take its
/// files).
fn unpack_into(deb: &Path, into: &Path) -> Result<()> {
    use crate::repo::entry::EntryKind;
    use std::os::unix::fs::PermissionsExt;
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    crate::repo::deb::for_each_entry_meta(deb, |path, kind, meta, reader| {
        if path.is_empty() || path == "." {
            return Ok(true);
        }
        let rel = safe_relative(path.trim_end_matches('/'))?;
        let target = into.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mode = meta.mode & 0o7777;
        match kind {
            EntryKind::Dir => {
                std::fs::create_dir_all(&target)?;
                dir_modes.push((target, mode));
            }
            EntryKind::File => {
                let mut out = std::fs::File::create(&target)?;
                std::io::copy(reader, &mut out)?;
                out.set_permissions(std::fs::Permissions::from_mode(mode))?;
                let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.mtime);
                out.set_modified(mtime)?;
            }
            EntryKind::Symlink(link) => {
                if link.is_empty() {
                    bail!("symlink {path} has no target");
                }
                std::os::unix::fs::symlink(&link, &target)?;
            }
            EntryKind::Other => match &meta.hardlink {
                Some(first) => std::fs::hard_link(into.join(safe_relative(first)?), &target)?,
                None => bail!("{path}: not a file, directory or link; headers hold none"),
            },
        }
        Ok(true)
    })?;
    // Deepest first, so a parent made read-only never blocks a child.
    dir_modes.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (dir, mode) in dir_modes {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
    }
    Ok(())
}

/// Removes temporary directories that interrupted unpacks left behind
/// (their process is gone).
pub fn clear_partials(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".partial-")
            .and_then(|r| r.rsplit('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = make_writable(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The directories of one package to mount, as seen inside the builder:
/// the top-level directories under `/usr/src` and the `linux-*` ones under
/// `/usr/lib` (kbuild's programs). From the unpacked entry when there is
/// one, else from the package name by Debian's and Ubuntu's layout (for
/// `--dry-run` before anything is downloaded).
pub fn mount_points(unpacked: Option<&Path>, package: &str) -> Vec<String> {
    let Some(dir) = unpacked.filter(|d| d.is_dir()) else {
        return vec![if package.starts_with("linux-kbuild-") {
            format!("/usr/lib/{package}")
        } else {
            format!("/usr/src/{package}")
        }];
    };
    let mut out = Vec::new();
    for (parent, prefix) in [("usr/src", ""), ("usr/lib", "linux")] {
        let Ok(entries) = std::fs::read_dir(dir.join(parent)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|n| format!("/{parent}/{n}")));
    }
    out
}

/// One read-only bind mount of a build: a host directory of the cache and
/// where the builder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    pub inside: String,
}

/// The mounts of one kernel's packages unpacked (or to be unpacked) under `root`.
pub fn mounts(root: &Path, own: &[PackageRef]) -> Result<Vec<Mount>> {
    let mut out: Vec<Mount> = Vec::new();
    for p in own {
        let dir = entry_dir(root, &p.sha256);
        let points = mount_points(Some(&dir), &p.name);
        if points.is_empty() {
            continue;
        }
        for inside in points {
            let host = dir.join(inside.trim_start_matches('/'));
            match out.iter().find(|m| m.inside == inside) {
                Some(m) if m.host != host => bail!(
                    "{inside} is in two packages of one kernel ({} and {})",
                    m.host.display(),
                    host.display()
                ),
                Some(_) => {}
                None => out.push(Mount { host, inside }),
            }
        }
    }
    Ok(out)
}

/// Every suite's index of the release.
pub fn indices(distro: &Distro) -> Result<Vec<Arc<Index>>> {
    let repo = distro.debian()?;
    repo.suites()
        .iter()
        .map(|s| crate::repo::debian::index_of(distro, s))
        .collect()
}

/// What [`prepare`] made ready.
pub struct Prepared {
    /// Mounts of each kernel that is ready, by release.
    pub mounts: HashMap<String, Vec<Mount>>,
    /// What the builder image needs besides the base: the externals of
    /// every ready kernel.
    pub external: BTreeSet<String>,
    /// Kernels whose headers could not be resolved or unpacked.
    pub failed: Vec<(Kernel, anyhow::Error)>,
}

/// Resolves every kernel's closure (no download), for `--dry-run`.
pub fn plan(distro: &Distro, kernels: &[Kernel]) -> Result<Prepared> {
    let indices = indices(distro)?;
    let root = cache_root();
    let mut prepared = Prepared {
        mounts: HashMap::new(),
        external: BTreeSet::new(),
        failed: Vec::new(),
    };
    for k in kernels {
        match closure(&indices, k).and_then(|c| Ok((mounts(&root, &c.own)?, c))) {
            Ok((m, c)) => {
                prepared.mounts.insert(k.release.clone(), m);
                prepared.external.extend(c.external);
            }
            Err(e) => prepared.failed.push((k.clone(), e)),
        }
    }
    Ok(prepared)
}

/// Resolves, downloads and unpacks the headers of `kernels` with `jobs`
/// workers, each package once; packages already unpacked are not
/// downloaded again. `bar` counts packages.
pub fn prepare(
    distro: &Distro,
    kernels: &[Kernel],
    jobs: usize,
    bar: &indicatif::ProgressBar,
) -> Result<Prepared> {
    let indices = indices(distro)?;
    let root = cache_root();
    clear_partials(&root);
    let mut closures: Vec<(Kernel, Closure)> = Vec::new();
    let mut failed: Vec<(Kernel, anyhow::Error)> = Vec::new();
    for k in kernels {
        match closure(&indices, k) {
            Ok(c) => closures.push((k.clone(), c)),
            Err(e) => failed.push((k.clone(), e)),
        }
    }
    let mut packages: BTreeMap<String, PackageRef> = BTreeMap::new();
    for (_, c) in &closures {
        for p in &c.own {
            packages
                .entry(p.sha256.clone())
                .or_insert_with(|| p.clone());
        }
    }
    let todo: Vec<PackageRef> = packages
        .into_values()
        .filter(|p| !entry_dir(&root, &p.sha256).is_dir())
        .collect();
    let total = todo.len();
    let queue = Mutex::new(todo.into_iter().enumerate().collect::<Vec<_>>());
    let errors: Mutex<HashMap<String, String>> = Mutex::new(HashMap::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, 4) {
            scope.spawn(|| loop {
                let Some((n, p)) = queue.lock().unwrap().pop() else {
                    break;
                };
                crate::progress::step(
                    bar,
                    total - n,
                    total,
                    &format!("download and unpack {} {}", p.name, p.version),
                );
                if let Err(e) = p.fetch().and_then(|deb| unpack(&deb, &p.sha256, &root)) {
                    errors
                        .lock()
                        .unwrap()
                        .insert(p.sha256.clone(), format!("{} {}: {e:#}", p.name, p.version));
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    let mut prepared = Prepared {
        mounts: HashMap::new(),
        external: BTreeSet::new(),
        failed,
    };
    for (k, c) in closures {
        if let Some(e) = c.own.iter().find_map(|p| errors.get(&p.sha256)) {
            prepared.failed.push((k, anyhow::anyhow!("{e}")));
            continue;
        }
        match mounts(&root, &c.own) {
            Ok(m) => {
                prepared.mounts.insert(k.release.clone(), m);
                prepared.external.extend(c.external);
            }
            Err(e) => prepared.failed.push((k, e)),
        }
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::deb::tests::{ar, xz};
    use std::os::unix::fs::PermissionsExt;

    /// A `.deb` whose data.tar.xz holds `tar`.
    fn deb_of(tar: &[u8]) -> Vec<u8> {
        ar(&[
            ("debian-binary", b"2.0\n"),
            (
                "control.tar.xz",
                &xz(&tar::Builder::new(Vec::new()).into_inner().unwrap()),
            ),
            ("data.tar.xz", &xz(tar)),
        ])
    }

    fn entry(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }

    /// The layout of Debian's headers packages, in small: a flavour
    /// directory whose Makefile includes the common one by absolute path, a
    /// relative `scripts` symlink into kbuild's directory, an absolute one,
    /// an executable, a read-only directory and a hard link.
    fn headers_tar() -> Vec<u8> {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "./", Directory, 0o755, b"");
        entry(
            &mut b,
            "./usr/src/linux-headers-6.1.0-50-amd64/",
            Directory,
            0o755,
            b"",
        );
        entry(
            &mut b,
            "./usr/src/linux-headers-6.1.0-50-amd64/Makefile",
            Regular,
            0o644,
            b"include /usr/src/linux-headers-6.1.0-50-common/Makefile\n",
        );
        link(
            &mut b,
            "./usr/src/linux-headers-6.1.0-50-amd64/scripts",
            Symlink,
            "../../lib/linux-kbuild-6.1/scripts",
        );
        link(
            &mut b,
            "./usr/src/linux-headers-6.1.0-50-amd64/tools",
            Symlink,
            "/usr/lib/linux-kbuild-6.1/tools",
        );
        entry(
            &mut b,
            "./usr/lib/linux-kbuild-6.1/scripts/",
            Directory,
            0o555,
            b"",
        );
        entry(
            &mut b,
            "./usr/lib/linux-kbuild-6.1/scripts/modpost",
            Regular,
            0o755,
            b"\x7fELF",
        );
        link(
            &mut b,
            "./usr/lib/linux-kbuild-6.1/scripts/modpost.hard",
            Link,
            "./usr/lib/linux-kbuild-6.1/scripts/modpost",
        );
        entry(
            &mut b,
            "./usr/share/doc/linux-kbuild-6.1/",
            Directory,
            0o755,
            b"",
        );
        b.into_inner().unwrap()
    }

    fn sha(bytes: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn unpack_keeps_symlinks_modes_and_times() {
        let dir = crate::testing::scratch("headers-unpack");
        let bytes = deb_of(&headers_tar());
        let deb = dir.join("h.deb");
        std::fs::write(&deb, &bytes).unwrap();
        let root = dir.join("headers");
        let out = unpack(&deb, &sha(&bytes), &root).unwrap();
        assert_eq!(out, root.join(sha(&bytes)));
        let flavour = out.join("usr/src/linux-headers-6.1.0-50-amd64");
        assert_eq!(
            std::fs::read_link(flavour.join("scripts")).unwrap(),
            Path::new("../../lib/linux-kbuild-6.1/scripts")
        );
        assert_eq!(
            std::fs::read_link(flavour.join("tools")).unwrap(),
            Path::new("/usr/lib/linux-kbuild-6.1/tools")
        );
        let modpost = out.join("usr/lib/linux-kbuild-6.1/scripts/modpost");
        let meta = std::fs::metadata(&modpost).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(
            meta.modified().unwrap(),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)
        );
        let makefile = std::fs::metadata(flavour.join("Makefile")).unwrap();
        assert_eq!(makefile.permissions().mode() & 0o7777, 0o644);
        let scripts = std::fs::metadata(modpost.parent().unwrap()).unwrap();
        assert_eq!(scripts.permissions().mode() & 0o7777, 0o555);
        assert_eq!(
            std::fs::read(out.join("usr/lib/linux-kbuild-6.1/scripts/modpost.hard")).unwrap(),
            b"\x7fELF"
        );
        // The mounts: the package's directories, not its docs.
        assert_eq!(
            mount_points(Some(&out), "ignored"),
            [
                "/usr/src/linux-headers-6.1.0-50-amd64",
                "/usr/lib/linux-kbuild-6.1"
            ]
        );
        // Unpacked once: a second call finds the entry and reads nothing.
        std::fs::write(&deb, b"gone").unwrap();
        assert_eq!(unpack(&deb, &sha(&bytes), &root).unwrap(), out);
        let _ = make_writable(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wrong_checksum_names_the_file_and_both_hashes() {
        let dir = crate::testing::scratch("headers-sha");
        let deb = dir.join("linux-headers.deb");
        std::fs::write(&deb, deb_of(&headers_tar())).unwrap();
        let wanted = "ab".repeat(32);
        let err = format!(
            "{:#}",
            unpack(&deb, &wanted, &dir.join("headers")).unwrap_err()
        );
        assert!(err.contains(&deb.display().to_string()), "{err}");
        assert!(err.contains(&format!("expected {wanted}, got ")), "{err}");
        assert!(!dir.join("headers").join(&wanted).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A package that breaks off halfway (a truncated download that somehow
    /// matched, a full disk, an unsafe path) leaves no entry and no
    /// temporary directory; a temporary directory of a process that died
    /// is cleared by the next run.
    #[test]
    fn an_interrupted_unpack_leaves_no_entry() {
        let dir = crate::testing::scratch("headers-atomic");
        let root = dir.join("headers");
        let full = deb_of(&headers_tar());
        let data = xz(&headers_tar());
        let truncated = ar(&[
            ("debian-binary", b"2.0\n"),
            ("data.tar.xz", &data[..data.len() / 2]),
        ]);
        let mut evil = tar::Builder::new(Vec::new());
        entry(
            &mut evil,
            "./usr/src/ok",
            tar::EntryType::Regular,
            0o644,
            b"x",
        );
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        let name = b"./usr/../../escape";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        evil.append(&h, &b"x"[..]).unwrap();
        let evil = deb_of(&evil.into_inner().unwrap());
        for (case, bytes) in [("truncated", truncated), ("escape", evil)] {
            let deb = dir.join(format!("{case}.deb"));
            std::fs::write(&deb, &bytes).unwrap();
            let err = unpack(&deb, &sha(&bytes), &root).unwrap_err();
            assert!(!root.join(sha(&bytes)).exists(), "{case}: {err:#}");
            let left: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
            assert!(left.is_empty(), "{case}: {left:?}");
        }
        assert!(!dir.join("escape").exists());
        // A dead process's half-made entry.
        let stale = root.join(format!(".partial-{}-4194303999", sha(&full)));
        std::fs::create_dir_all(stale.join("usr/src/ro")).unwrap();
        std::fs::set_permissions(
            stale.join("usr/src"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        let mine = root.join(format!(".partial-x-{}", std::process::id()));
        std::fs::create_dir_all(&mine).unwrap();
        clear_partials(&root);
        assert!(!stale.exists());
        assert!(mine.exists(), "a live process's unpack is left alone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod closure_tests {
    use super::*;

    const BOOKWORM_SECURITY: &str =
        include_str!("../../tests/fixtures/headers/debian-12-bookworm-security.Packages");
    /// One real stanza of Ubuntu's jammy arm64 index (see its fixture README):
    /// the only published Ubuntu headers stanza at hand.
    const JAMMY_S32: &str = include_str!(
        "../../tests/fixtures/apt/stanzas/ubuntu-jammy-arm64-linux-headers-5.15.0-1034-s32"
    );

    fn indices(mirror: &str, suite: &str, text: &str) -> Vec<Arc<Index>> {
        vec![Arc::new(Index::from_packages(mirror, suite, text).unwrap())]
    }

    fn names(c: &Closure) -> Vec<String> {
        c.own
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect()
    }

    fn external(c: &Closure) -> Vec<&str> {
        c.external.iter().map(String::as_str).collect()
    }

    #[test]
    fn debian_12_closure_is_the_kernels_own_packages() {
        let idx = indices(
            "http://deb.debian.org/debian-security",
            "bookworm-security",
            BOOKWORM_SECURITY,
        );
        let c = closure(&idx, &Kernel::pinned("6.1.0-53-amd64", "6.1.187-1")).unwrap();
        assert_eq!(
            names(&c),
            [
                "linux-headers-6.1.0-53-amd64 6.1.187-1",
                "linux-headers-6.1.0-53-common 6.1.187-1",
                "linux-kbuild-6.1 6.1.192-3",
            ]
        );
        assert_eq!(
            external(&c),
            ["libc6", "libelf1", "libssl3", "linux-compiler-gcc-12-x86"]
        );
        let kbuild = &c.own[2];
        assert_eq!(kbuild.sha256.len(), 64);
        assert!(kbuild.url.starts_with(
            "http://deb.debian.org/debian-security/pool/updates/main/l/linux/linux-kbuild-6.1_"
        ));
        // The cloud flavour shares the common and kbuild packages.
        let cloud = closure(&idx, &Kernel::pinned("6.1.0-53-cloud-amd64", "6.1.187-1")).unwrap();
        assert_eq!(cloud.own[1..], c.own[1..]);

        // 6.12 backported: the image is an alternative group, never unpacked
        // nor installed; kbuild's libraries and pahole go into the image.
        let c = closure(
            &idx,
            &Kernel::pinned("6.12.118+deb12-amd64", "6.12.118-1~deb12u1"),
        )
        .unwrap();
        assert_eq!(
            names(&c),
            [
                "linux-headers-6.12.118+deb12-amd64 6.12.118-1~deb12u1",
                "linux-headers-6.12.118+deb12-common 6.12.118-1~deb12u1",
                "linux-kbuild-6.12.118+deb12 6.12.118-1~deb12u1",
            ]
        );
        assert_eq!(
            external(&c),
            [
                "gcc-12",
                "libc6",
                "libelf1",
                "libssl3",
                "linux-base",
                "pahole",
                "zlib1g"
            ]
        );
        let m = mounts(Path::new("/c"), &c.own).unwrap();
        let inside: Vec<&str> = m.iter().map(|m| m.inside.as_str()).collect();
        assert_eq!(
            inside,
            [
                "/usr/src/linux-headers-6.12.118+deb12-amd64",
                "/usr/src/linux-headers-6.12.118+deb12-common",
                "/usr/lib/linux-kbuild-6.12.118+deb12",
            ]
        );
    }

    /// Ubuntu's flavour headers depend on their source's common package
    /// (`linux-<source>-headers-<abi>`, unversioned): the closure must take
    /// it as the kernel's own, not as a tool for the image. The excerpt holds
    /// the flavour stanza alone, so the closure stops at the common package
    /// and names it; taken as external, it would have been left to apt.
    #[test]
    fn ubuntu_closure_follows_the_flavour_headers_to_their_common_package() {
        let idx = indices(
            "http://ports.ubuntu.com/ubuntu-ports",
            "jammy-updates",
            JAMMY_S32,
        );
        let err = closure(&idx, &Kernel::pinned("5.15.0-1034-s32", "5.15.0-1034.43"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux-s32-headers-5.15.0-1034"), "{err}");
        assert!(err.contains("jammy-updates"), "{err}");
    }

    #[test]
    fn missing_packages_are_named_with_their_suite() {
        let idx = indices(
            "http://deb.debian.org/debian-security",
            "bookworm-security",
            BOOKWORM_SECURITY,
        );
        let err = closure(&idx, &Kernel::pinned("6.1.0-99-amd64", "6.1.999-1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kernel 6.1.0-99-amd64: headers package \"linux-headers-6.1.0-99-amd64\" not found in suite \"bookworm-security\" of http://deb.debian.org/debian-security"),
            "{err}"
        );
        // A dependency the index cannot satisfy: kbuild older than required.
        let text = BOOKWORM_SECURITY.replace(
            "linux-kbuild-6.1 (>= 6.1.187-1)",
            "linux-kbuild-6.1 (>= 6.1.999-1)",
        );
        let idx = indices(
            "http://deb.debian.org/debian-security",
            "bookworm-security",
            &text,
        );
        let err = closure(&idx, &Kernel::pinned("6.1.0-53-amd64", "6.1.187-1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("package \"linux-kbuild-6.1 (>= 6.1.999-1)\" (needed by linux-headers-6.1.0-53-amd64 6.1.187-1) not found in suite \"bookworm-security\""),
            "{err}"
        );
    }
}
