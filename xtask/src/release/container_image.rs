//! The eBPF mode's container image: the static `toa` binary and nothing
//! else (no base image, no shell), imported into the docker engine with
//! `docker import` from a tarball made here, so no registry is needed.
//!
//! The tarball is reproducible (fixed order, owner and mtime), and an image
//! whose label names the binary's sha256 is reused instead of imported
//! again. `docker import` stamps the image with the time of the import, so
//! the image id differs between machines; its one layer does not.

use crate::distro::arch::Arch;
use crate::objects::operator_cli;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The repository the image is tagged in: `toa:<version>`, as
/// dist/kubernetes/toa-bpf-daemonset.yaml names it.
pub const REPOSITORY: &str = "toa";
/// The label holding the sha256 of the binary inside.
const BINARY_LABEL: &str = "org.toa.binary-sha256";
/// Where the binary is in the image (its entrypoint).
pub const BINARY: &str = "/toa";
/// Mount points a runtime expects to find (it creates what is missing, in
/// a layer of the container's own, but an image that has them is tidier).
const DIRECTORIES: &[&str] = &["dev", "etc", "proc", "run", "sys", "tmp"];

/// `toa:<version>`.
pub fn tag() -> String {
    format!("{REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// Builds the static binary for this machine's architecture and makes sure
/// the engine has its image; returns the image's tag.
pub fn ensure(arch: Arch) -> Result<String> {
    let binary = operator_cli::build_for_lab(arch)?;
    let sha = crate::host::fs::sha256_file(&binary)?;
    let tag = tag();
    if labelled_sha(&tag)?.as_deref() == Some(sha.as_str()) {
        eprintln!("==> image {tag} holds this toa (sha256 {sha}): kept");
        return Ok(tag);
    }
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    let tarball = rootfs_tar(&bytes)?;
    eprintln!("==> docker import {tag} (toa sha256 {sha})");
    duct::cmd!(
        "docker",
        "import",
        "--change",
        format!("LABEL {BINARY_LABEL}={sha}"),
        "--change",
        format!(r#"ENTRYPOINT ["{BINARY}"]"#),
        "--change",
        r#"CMD ["bpf", "run"]"#,
        "-",
        &tag
    )
    .stdin_bytes(tarball)
    .stdout_null()
    .run()
    .with_context(|| format!("docker import {tag} (is the docker engine running?)"))?;
    if labelled_sha(&tag)?.as_deref() != Some(sha.as_str()) {
        bail!("docker import {tag} did not leave an image labelled with the binary's sha256");
    }
    Ok(tag)
}

/// The sha256 the image `tag` is labelled with; `None` when there is no such
/// image or no label.
fn labelled_sha(tag: &str) -> Result<Option<String>> {
    let out = duct::cmd!(
        "docker",
        "image",
        "inspect",
        "--format",
        format!(r#"{{{{index .Config.Labels "{BINARY_LABEL}"}}}}"#),
        tag
    )
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .run()
    .context("running docker (is the docker engine installed?)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such image") {
            return Ok(None);
        }
        bail!("docker image inspect {tag}: {}", err.trim());
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((!text.is_empty() && text != "<no value>").then_some(text))
}

/// The image's root filesystem as an uncompressed tarball: the directories
/// and the binary, root-owned, dated 0.
fn rootfs_tar(binary: &[u8]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for dir in DIRECTORIES {
        let mut header = crate::build::package::header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut header, Path::new(dir), std::io::empty())?;
    }
    let mut header =
        crate::build::package::header(tar::EntryType::Regular, 0o755, binary.len() as u64);
    tar.append_data(&mut header, BINARY.trim_start_matches('/'), binary)?;
    Ok(tar.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rootfs_is_the_binary_and_mount_points_and_is_reproducible() {
        let a = rootfs_tar(b"\x7fELF binary").unwrap();
        assert_eq!(a, rootfs_tar(b"\x7fELF binary").unwrap());
        assert_ne!(a, rootfs_tar(b"\x7fELF other").unwrap());
        let mut archive = tar::Archive::new(&a[..]);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 0)
            );
            let name = entry.path().unwrap().display().to_string();
            if name == "toa" {
                assert_eq!(h.mode().unwrap(), 0o755);
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
                assert_eq!(body, b"\x7fELF binary");
            }
            let dir = h.entry_type() == tar::EntryType::Directory;
            assert_eq!(dir, name != "toa", "{name}");
            names.push(name);
        }
        assert_eq!(names, ["dev", "etc", "proc", "run", "sys", "tmp", "toa"]);
    }

    #[test]
    fn the_tag_is_the_version() {
        assert_eq!(tag(), format!("toa:{}", env!("CARGO_PKG_VERSION")));
    }
}
