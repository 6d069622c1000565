//! Per-distro tarballs: `<Name>-<arch>.tar.gz` holding `<Name>-<arch>/toa.ko`
//! (the module of the kernel a default install of the release runs after
//! updates, or the newest kernel's where that is unknown, so
//! `tar -zxvf ...; cd ...; insmod toa.ko` works) and
//! `<Name>-<arch>/<kernel release>/toa.ko` for every kernel built.
//!
//! Same inputs, same bytes: entries sorted, fixed owner, mode and mtime, and a
//! gzip header without name or time.

use crate::repo::kernels::DefaultKernel;
use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One kernel's module as it goes into a tarball.
#[derive(Debug, Clone, Serialize)]
pub struct KernelModule {
    pub release: String,
    pub kernel_version: String,
    pub sha256: String,
    #[serde(skip)]
    pub ko: Vec<u8>,
}

impl KernelModule {
    pub fn new(release: &str, kernel_version: &str, ko: Vec<u8>) -> KernelModule {
        KernelModule {
            release: release.into(),
            kernel_version: kernel_version.into(),
            sha256: hex::encode(Sha256::digest(&ko)),
            ko,
        }
    }
}

#[derive(Serialize)]
struct Metadata<'a> {
    distro: &'a str,
    arch: &'a str,
    toa_version: &'a str,
    default_release: &'a str,
    /// The metapackage that chose `default_release` (`linux-image-amd64`);
    /// absent when the newest kernel stood in.
    #[serde(skip_serializing_if = "Option::is_none")]
    default_from: Option<&'a str>,
    modules: &'a [KernelModule],
}

/// Writes `<dist_dir>/<dist_name>.tar.gz`; `modules` newest last; the newest
/// is the top-level toa.ko.
pub fn write_tarball(
    dist_dir: &Path,
    dist_name: &str,
    distro: &str,
    arch: &str,
    modules: &[KernelModule],
) -> Result<PathBuf> {
    write_tarball_with_default(dist_dir, dist_name, distro, arch, modules, None)
}

/// [`write_tarball`] whose top-level toa.ko is `default`'s module when it is
/// among `modules` (the newest's otherwise).
pub fn write_tarball_with_default(
    dist_dir: &Path,
    dist_name: &str,
    distro: &str,
    arch: &str,
    modules: &[KernelModule],
    default: Option<&DefaultKernel>,
) -> Result<PathBuf> {
    let newest = modules.last().context("no modules to pack")?;
    let chosen = default.and_then(|d| Some((modules.iter().find(|m| m.release == d.release)?, d)));
    let top = chosen.map_or(newest, |(m, _)| m);
    let metadata = serde_json::to_vec_pretty(&Metadata {
        distro,
        arch,
        toa_version: env!("CARGO_PKG_VERSION"),
        default_release: &top.release,
        default_from: chosen.map(|(_, d)| d.from.as_str()),
        modules,
    })?;
    let mut entries: Vec<(String, &[u8])> = vec![
        (format!("{dist_name}/toa.ko"), &top.ko),
        (format!("{dist_name}/metadata.json"), &metadata),
    ];
    for m in modules {
        entries.push((format!("{dist_name}/{}/toa.ko", m.release), &m.ko));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    // The directories that hold a file, sorted by name before the slash.
    let mut dirs: Vec<String> = entries
        .iter()
        .filter_map(|(p, _)| {
            Path::new(p)
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let dirs: Vec<String> = dirs.into_iter().map(|d| format!("{d}/")).collect();

    let out = dist_dir.join(format!("{dist_name}.tar.gz"));
    write_tar_gz_unless_same(&out, &dirs, &entries)?;
    Ok(out)
}

/// [`write_tar_gz`], skipped when `out` is still the tarball the same
/// inputs made last time (its sha256 is checked, not trusted): gzip at its
/// best level takes about a minute for a release's ~40 modules on two shared
/// cores, which was nearly all of a build in which nothing changed. The
/// record lives in the cache, keyed by the tarball's path.
fn write_tar_gz_unless_same<D: AsRef<[u8]>>(
    out: &Path,
    dirs: &[String],
    files: &[(String, D)],
) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut inputs = Sha256::new();
    for dir in dirs {
        inputs.update(dir.as_bytes());
        inputs.update([0]);
    }
    for (path, data) in files {
        let data = data.as_ref();
        inputs.update(path.as_bytes());
        inputs.update([0]);
        inputs.update((data.len() as u64).to_le_bytes());
        inputs.update(data);
    }
    let inputs = hex::encode(inputs.finalize());
    let key = hex::encode(Sha256::digest(out.to_string_lossy().as_bytes()));
    let record = crate::host::cache::cache_dir()
        .join("tarballs")
        .join(format!("{}.inputs", &key[..16]));
    if let Some((was, tar_sha)) = std::fs::read_to_string(&record)
        .ok()
        .as_deref()
        .and_then(|t| t.trim().split_once(' '))
    {
        if was == inputs
            && out.is_file()
            && crate::host::fs::sha256_file(out).is_ok_and(|s| s == tar_sha)
        {
            return Ok(());
        }
    }
    write_tar_gz(out, dirs, files)?;
    let tar_sha = crate::host::fs::sha256_file(out)?;
    crate::host::fs::write_atomic(&record, format!("{inputs} {tar_sha}\n").as_bytes())
}

/// Writes `out` as a `.tar.gz` of the directories `dirs` (each ending in
/// `/`), then `files` (path in the archive, bytes), in the order given.
/// Same inputs, same bytes: owner root, mode 0755 for directories and 0644
/// for files, mtime 0, a gzip header without name or time. Written beside
/// `out` and renamed, so a reader never sees half a tarball.
pub fn write_tar_gz<D: AsRef<[u8]>>(
    out: &Path,
    dirs: &[String],
    files: &[(String, D)],
) -> Result<()> {
    let dir = out.parent().context("tarball path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = out.file_name().context("tarball path has no file name")?;
    let tmp = dir.join(format!(".{}.partial", name.to_string_lossy()));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for dir in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, dir, std::io::empty())?;
    }
    for (path, data) in files {
        let data = data.as_ref();
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        tar.append_data(&mut h, path, data)?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()?
        .sync_all()
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(())
}

/// A tar header with nothing of the machine that wrote it (owner 0, time 0):
/// archives made from the same inputs have the same bytes.
pub fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Reads one file out of a `.tar.gz`.
pub fn read_from_tarball(tarball: &Path, inner: &str) -> Result<Vec<u8>> {
    let file =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == inner {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data)?;
            return Ok(data);
        }
    }
    anyhow::bail!("{} has no {inner}", tarball.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarball_is_reproducible_and_readable() {
        let dir = crate::testing::scratch("pack-test");
        let modules = [
            KernelModule::new("6.1.0-1-amd64", "6.1.1-1", b"old module".to_vec()),
            KernelModule::new("6.1.0-2-amd64", "6.1.2-1", b"new module".to_vec()),
        ];
        let a = write_tarball(&dir, "Debian-12-x86_64", "debian-12", "x86_64", &modules).unwrap();
        let first = std::fs::read(&a).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = write_tarball(&dir, "Debian-12-x86_64", "debian-12", "x86_64", &modules).unwrap();
        assert_eq!(
            first,
            std::fs::read(&b).unwrap(),
            "same inputs must give the same bytes"
        );
        assert_eq!(
            read_from_tarball(&a, "Debian-12-x86_64/toa.ko").unwrap(),
            b"new module"
        );
        assert_eq!(
            read_from_tarball(&a, "Debian-12-x86_64/6.1.0-1-amd64/toa.ko").unwrap(),
            b"old module"
        );
        let meta = read_from_tarball(&a, "Debian-12-x86_64/metadata.json").unwrap();
        assert!(String::from_utf8(meta)
            .unwrap()
            .contains("\"default_release\": \"6.1.0-2-amd64\""));
        assert!(read_from_tarball(&a, "Debian-12-x86_64/nope").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The bytes of a tarball are part of a release (its sha256 is
    /// published): this digest is what the writer produced before the module
    /// and source tarballs shared it, for the same entries.
    #[test]
    fn the_tar_writer_keeps_its_bytes() {
        let dir = crate::testing::scratch("pack-bytes");
        let out = dir.join("w.tar.gz");
        let dirs = ["top/", "top/sub/", "top/sub/deep/"].map(String::from);
        let files = [
            ("top/a.txt".to_string(), &b"alpha"[..]),
            ("top/sub/deep/b.o".to_string(), b"beta"),
            ("top/z".to_string(), b""),
        ];
        write_tar_gz(&out, &dirs, &files).unwrap();
        assert_eq!(
            crate::host::fs::sha256_file(&out).unwrap(),
            "4b2b5cb61d00b037d74adf5066063103f9b2a38a224ba76abde37d9703ceabbb"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Unchanged inputs leave the tarball as it is (not rewritten); a
    /// tarball changed on disk or a changed module is written again.
    #[test]
    fn an_unchanged_tarball_is_not_written_again() {
        let dir = crate::testing::scratch("pack-unchanged");
        let out = dir.join("u.tar.gz");
        let dirs = ["top/".to_string()];
        let files = [("top/toa.ko".to_string(), &b"module"[..])];
        write_tar_gz_unless_same(&out, &dirs, &files).unwrap();
        let first = std::fs::read(&out).unwrap();
        let modified = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let when = modified(&out);
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_tar_gz_unless_same(&out, &dirs, &files).unwrap();
        assert_eq!(modified(&out), when, "rewritten although nothing changed");
        std::fs::write(&out, b"tampered").unwrap();
        write_tar_gz_unless_same(&out, &dirs, &files).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), first);
        let changed = [("top/toa.ko".to_string(), &b"module 2"[..])];
        write_tar_gz_unless_same(&out, &dirs, &changed).unwrap();
        assert_eq!(read_from_tarball(&out, "top/toa.ko").unwrap(), b"module 2");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_default_kernel_is_the_top_level_module() {
        let dir = crate::testing::scratch("pack-default");
        let modules = [
            KernelModule::new("6.1.0-57-amd64", "6.1.192-3", b"default".to_vec()),
            KernelModule::new("6.12.95+deb12-amd64", "6.12.95-1", b"backport".to_vec()),
        ];
        let default = DefaultKernel {
            release: "6.1.0-57-amd64".into(),
            from: "linux-image-amd64".into(),
        };
        let write = |d: Option<&DefaultKernel>| {
            write_tarball_with_default(&dir, "Debian-12-x86_64", "debian-12", "x86_64", &modules, d)
                .unwrap()
        };
        let a = write(Some(&default));
        assert_eq!(
            read_from_tarball(&a, "Debian-12-x86_64/toa.ko").unwrap(),
            b"default"
        );
        let meta =
            String::from_utf8(read_from_tarball(&a, "Debian-12-x86_64/metadata.json").unwrap())
                .unwrap();
        assert!(
            meta.contains("\"default_release\": \"6.1.0-57-amd64\""),
            "{meta}"
        );
        assert!(
            meta.contains("\"default_from\": \"linux-image-amd64\""),
            "{meta}"
        );
        // Not built (a narrowed build): the newest stands in, and says so.
        let other = DefaultKernel {
            release: "6.1.0-58-amd64".into(),
            ..default.clone()
        };
        let b = write(Some(&other));
        assert_eq!(
            read_from_tarball(&b, "Debian-12-x86_64/toa.ko").unwrap(),
            b"backport"
        );
        let meta =
            String::from_utf8(read_from_tarball(&b, "Debian-12-x86_64/metadata.json").unwrap())
                .unwrap();
        assert!(!meta.contains("default_from"), "{meta}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
