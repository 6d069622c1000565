//! The `toa` operators run today, for the eBPF lab's upgrade scenario
//! (`bpf-upgrade`): built from the commit of this repository that was last
//! released, so the guest can load its programs and then upgrade to this
//! tree's with a connection open.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::distro::arch::Arch;

/// The last released commit: main as it landed before this tree's changes
/// to the eBPF object and loader. Move it forward when a release is cut.
pub const COMMIT: &str = "d74d79f4067e3a4b203c43709fb92f475d4475d2";

/// The previous release's static `toa` for `arch`, built once into
/// `target/cache/previous-release/` (its source exported from git, its own
/// lock file and target directory).
pub fn build(arch: Arch) -> Result<PathBuf> {
    let root = crate::host::cache::cache_dir()
        .join("previous-release")
        .join(&COMMIT[..12]);
    let binary = root.join(format!("toa-{}", arch.name()));
    if binary.exists() && crate::objects::lab_programs::check_static(&binary, arch).is_ok() {
        return Ok(binary);
    }
    let src = root.join("src");
    if !src.join("Cargo.lock").exists() {
        export(&src)?;
    }
    eprintln!(
        "building the previous release's toa ({}) for {}",
        &COMMIT[..12],
        arch.name()
    );
    let built = crate::objects::lab_programs::build_static_from(
        &src,
        &root.join("target"),
        "toa",
        "toa",
        arch,
    )
    .with_context(|| {
        format!(
            "building toa of the previous release ({}) for the upgrade scenario",
            &COMMIT[..12]
        )
    })?;
    let tmp = binary.with_extension("tmp");
    std::fs::copy(&built, &tmp).with_context(|| format!("copying {}", built.display()))?;
    std::fs::rename(&tmp, &binary).with_context(|| format!("writing {}", binary.display()))?;
    Ok(binary)
}

/// Writes the tree of [`COMMIT`] into `dest` from this checkout's history.
fn export(dest: &Path) -> Result<()> {
    let repo = crate::host::cache::project_root();
    let out = duct::cmd!("git", "-C", &repo, "archive", "--format=tar", COMMIT)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running git archive (the upgrade scenario needs git)")?;
    if !out.status.success() {
        bail!(
            "the eBPF upgrade scenario builds the previous release's toa from commit {COMMIT}, \
             which this checkout lacks ({}); a shallow clone has no history: run \
             `git fetch --unshallow`",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    tar::Archive::new(&out.stdout[..])
        .unpack(&tmp)
        .with_context(|| format!("unpacking commit {COMMIT} into {}", tmp.display()))?;
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&tmp, dest).with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commit is one this repository has, an ancestor of the tree under
    /// test: the scenario would otherwise upgrade from something no operator
    /// ever ran.
    #[test]
    fn the_previous_release_is_an_ancestor() {
        let repo = crate::host::cache::project_root();
        let Ok(out) = duct::cmd!(
            "git",
            "-C",
            &repo,
            "merge-base",
            "--is-ancestor",
            COMMIT,
            "HEAD"
        )
        .stderr_capture()
        .unchecked()
        .run() else {
            panic!("git is needed to check the previous release's commit");
        };
        assert!(
            out.status.success(),
            "{COMMIT} is not an ancestor of HEAD: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
