//! The programs that run inside the VM lab guest, built as static binaries.

use crate::distro::arch::Arch;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Cargo profile of the guest programs (workspace Cargo.toml).
pub const PROFILE: &str = "lab";

/// Build the `toa-lab` package and return its static binary.
pub fn build_lab_program(arch: Arch) -> Result<PathBuf> {
    build_static("toa-lab", "toa-lab", arch)
}

/// Build binary `bin` of `package` static for `arch` (its musl target) with
/// the lab profile and return it.
pub fn build_static(package: &str, bin: &str, arch: Arch) -> Result<PathBuf> {
    build_static_from(
        &crate::host::cache::project_root(),
        &crate::host::cache::target_dir(),
        package,
        bin,
        arch,
    )
}

/// [`build_static`] for the workspace at `root`, into `target_dir`.
pub fn build_static_from(
    root: &Path,
    target_dir: &Path,
    package: &str,
    bin: &str,
    arch: Arch,
) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = arch.musl_target();
    let mut cmd = duct::cmd!(
        &cargo,
        "build",
        "--package",
        package,
        "--bin",
        bin,
        "--profile",
        PROFILE,
        "--target",
        target,
        "--target-dir",
        target_dir
    )
    .dir(root);
    if arch == Arch::Aarch64 {
        // The host's `cc` cannot link aarch64; rustup's lld can, with the
        // target's self-contained musl CRT objects and libc.
        cmd = cmd.env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld");
    }
    cmd.run().with_context(|| {
        format!("cargo build --package {package} --profile {PROFILE} --target {target} failed")
    })?;
    let binary = target_dir.join(target).join(PROFILE).join(bin);
    check_static(&binary, arch)?;
    Ok(binary)
}

/// The guest has no dynamic loader: insist on a static executable.
pub fn check_static(binary: &Path, arch: Arch) -> Result<()> {
    use object::Object;
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let file = object::File::parse(&*bytes)
        .with_context(|| format!("{} is not an ELF file", binary.display()))?;
    if file.section_by_name(".interp").is_some() {
        bail!(
            "{} is dynamically linked (has .interp); the lab guest needs a static binary",
            binary.display()
        );
    }
    let want = match arch {
        Arch::X86_64 => object::Architecture::X86_64,
        Arch::Aarch64 => object::Architecture::Aarch64,
    };
    if file.architecture() != want {
        bail!("{} is not an {} binary", binary.display(), arch.name());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dynamic_binaries_are_rejected() {
        // The test binary itself is dynamically linked against the host libc.
        let me = std::env::current_exe().unwrap();
        if cfg!(all(
            target_os = "linux",
            target_env = "gnu",
            target_arch = "x86_64"
        )) {
            let err = super::check_static(&me, crate::distro::arch::Arch::X86_64)
                .unwrap_err()
                .to_string();
            assert!(err.contains("dynamically linked"), "{err}");
        }
    }
}
