//! The operator's `toa` command in a release: `target/dist/toa-<arch>`, a
//! static binary built like the lab programs, listed in index.json
//! (`programs`) and SHA256SUMS so the installers can fetch and check it.
//!
//! `cargo xtask source` builds it beside toa.tar.gz (the release pipeline
//! runs that before `cargo xtask installers`, which rewrites the index).

use crate::distro::arch::Arch;
use crate::objects::lab_programs;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Architectures the command ships for.
const ARCHES: &[Arch] = &Arch::ALL;

/// `toa-<arch>`: the file name in target/dist and on the download server.
pub fn file_name(arch: &str) -> String {
    format!("toa-{arch}")
}

/// Whether `name` in target/dist is a build of the command.
pub fn is_program(name: &str) -> bool {
    ARCHES.iter().any(|arch| name == file_name(arch.name()))
}

/// Builds `toa` for every architecture into `dist_dir`; returns the files.
pub fn build_into(dist_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for arch in ARCHES {
        let built = lab_programs::build_static("toa", "toa", *arch)?;
        let bytes =
            std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
        let dest = dist_dir.join(file_name(arch.name()));
        crate::host::fs::write_atomic(&dest, &bytes)?;
        set_executable(&dest)?;
        written.push(dest);
    }
    Ok(written)
}

/// The build for the lab guest.
pub fn build_for_lab(arch: Arch) -> Result<PathBuf> {
    lab_programs::build_static("toa", "toa", arch)
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", path.display()))
}

/// index.json lines for the builds present in `dist_dir`, one per arch:
/// `{"name":"toa","arch":"x86_64","file":"toa-x86_64","sha256":"…"}`.
pub fn index_lines(dist_dir: &Path) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for arch in ARCHES.iter().map(|a| a.name()) {
        let file = file_name(arch);
        let path = dist_dir.join(&file);
        if path.is_file() {
            let sha = crate::host::fs::sha256_file(&path)?;
            lines.push(format!(
                r#"{{"name":"toa","arch":"{arch}","file":"{file}","sha256":"{sha}"}}"#
            ));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_architectures_are_programs() {
        assert!(is_program("toa-x86_64"));
        assert!(is_program("toa-aarch64"));
        assert!(!is_program("toa-x86_64.tar.gz"));
        assert!(!is_program("toa.tar.gz"));
        assert!(!is_program("toa-riscv"));
    }

    #[test]
    fn index_lines_name_file_and_checksum() {
        let dist = crate::testing::scratch("operator-cli");
        assert!(index_lines(&dist).unwrap().is_empty());
        std::fs::write(dist.join("toa-x86_64"), b"binary").unwrap();
        let lines = index_lines(&dist).unwrap();
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["file"], "toa-x86_64");
        assert_eq!(
            v["sha256"],
            crate::host::fs::sha256_file(&dist.join("toa-x86_64")).unwrap()
        );
        std::fs::remove_dir_all(&dist).unwrap();
    }
}
