//! Reading RPM packages without rpm(8): the payload of a kernel package
//! walked with the same visitor as a `.deb`'s (see [`crate::repo::deb`]), so the
//! lab takes vmlinuz and modules from either kind alike.

use crate::repo::entry::EntryKind;
use anyhow::{Context, Result};
use std::io::Read;
use std::path::Path;

/// The lead's magic: what tells an `.rpm` from an `.deb` (an ar archive)
/// whatever the file is called in the cache.
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];

/// Whether `path` starts like an RPM package.
pub fn is_rpm(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == LEAD_MAGIC)
}

/// Walk the payload of `rpm`, calling `visit(path, kind, reader)` for each
/// file until it returns `Ok(false)`. Paths are relative (the payload's are
/// absolute); ghost files, which have no content, are left out.
pub fn for_each_entry(
    rpm: &Path,
    mut visit: impl FnMut(&str, EntryKind, &mut dyn Read) -> Result<bool>,
) -> Result<()> {
    let mut reader = rpm::PackageReader::open(rpm)
        .with_context(|| format!("{}: not a readable RPM package", rpm.display()))?;
    while let Some(mut file) = reader
        .next_file()
        .with_context(|| format!("reading the payload of {}", rpm.display()))?
    {
        if !file.has_payload() && file.metadata.file_type() == rpm::FileType::Regular {
            continue;
        }
        let path = file.metadata.path().to_string_lossy().into_owned();
        let path = path.trim_start_matches('/').to_string();
        let kind = match file.metadata.file_type() {
            rpm::FileType::Regular => EntryKind::File,
            rpm::FileType::Dir => EntryKind::Dir,
            rpm::FileType::SymbolicLink => {
                EntryKind::Symlink(file.metadata.linkto().unwrap_or_default().to_string())
            }
            _ => EntryKind::Other,
        };
        let more = visit(&path, kind, &mut file)
            .with_context(|| format!("{} in {}", path, rpm.display()))?;
        if !more {
            break;
        }
    }
    Ok(())
}

/// Small RPMs shaped like CentOS 7's and EL9's kernel packages, made with the
/// same crate that reads them (so the lead, headers and cpio payload are
/// what rpmbuild writes, not a hand-made imitation).
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    /// One file of a test package: its absolute path and bytes.
    pub type File<'a> = (&'a str, &'a [u8]);

    /// Write `name-version-release.x86_64.rpm` holding `files` (xz payload, as
    /// EL7 and EL8 ship) into `dir`.
    pub fn package(
        dir: &Path,
        name: &str,
        version: &str,
        release: &str,
        files: &[File],
    ) -> PathBuf {
        let mut builder = rpm::PackageBuilder::new(name, version, "GPLv2", "x86_64", "test kernel");
        builder
            .release(release)
            .using_config(rpm::BuildConfig::v4().compression(rpm::CompressionType::Xz));
        for (path, bytes) in files {
            builder
                .with_file_contents(bytes.to_vec(), rpm::FileOptions::new(*path))
                .unwrap();
        }
        let pkg = builder.build().unwrap();
        let out = dir.join(format!("{name}-{version}-{release}.x86_64.rpm"));
        pkg.write_file(&out).unwrap();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_an_rpm_payload_with_relative_paths() {
        let dir = crate::testing::scratch("rpm-walk");
        let rpm = testing::package(
            &dir,
            "kernel",
            "3.10.0",
            "1160.el7",
            &[
                ("/boot/vmlinuz-3.10.0-1160.el7.x86_64", b"bzImage"),
                ("/boot/config-3.10.0-1160.el7.x86_64", b"CONFIG_TUN=m\n"),
            ],
        );
        assert!(is_rpm(&rpm));
        let mut seen = Vec::new();
        for_each_entry(&rpm, |path, kind, reader| {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes)?;
            if matches!(kind, EntryKind::File) {
                seen.push((path.to_string(), bytes));
            }
            Ok(true)
        })
        .unwrap();
        seen.sort();
        assert_eq!(
            seen,
            [
                (
                    "boot/config-3.10.0-1160.el7.x86_64".to_string(),
                    b"CONFIG_TUN=m\n".to_vec()
                ),
                (
                    "boot/vmlinuz-3.10.0-1160.el7.x86_64".to_string(),
                    b"bzImage".to_vec()
                ),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_no_rpm_is_named() {
        let dir = crate::testing::scratch("rpm-bad");
        let bad = dir.join("kernel-core.rpm");
        std::fs::write(&bad, b"<html>404</html>").unwrap();
        assert!(!is_rpm(&bad));
        let err = format!(
            "{:#}",
            for_each_entry(&bad, |_, _, _| Ok(true)).unwrap_err()
        );
        assert!(err.contains("not a readable RPM package"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
