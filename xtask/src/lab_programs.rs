//! The programs that run inside the VM lab guest, built as static binaries.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Target of the guest programs: static, no libc needed in the initramfs.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// Cargo profile of the guest programs (workspace Cargo.toml).
pub const PROFILE: &str = "lab";

/// Build the `toa-lab` package and return its static binary.
pub fn build_lab_program() -> Result<PathBuf> {
    build_static("toa-lab", "toa-lab")
}

/// Build binary `bin` of `package` static for [`TARGET`] with the lab
/// profile and return it.
pub fn build_static(package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = crate::cache::target_dir();
    duct::cmd!(
        &cargo,
        "build",
        "--package",
        package,
        "--bin",
        bin,
        "--profile",
        PROFILE,
        "--target",
        TARGET,
        "--target-dir",
        &target_dir
    )
    .dir(crate::cache::project_root())
    .run()
    .with_context(|| {
        format!("cargo build --package {package} --profile {PROFILE} --target {TARGET} failed")
    })?;
    let binary = target_dir.join(TARGET).join(PROFILE).join(bin);
    check_static(&binary)?;
    Ok(binary)
}

/// The guest has no dynamic loader: insist on a static executable.
fn check_static(binary: &std::path::Path) -> Result<()> {
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
    if file.architecture() != object::Architecture::X86_64 {
        bail!("{} is not an x86-64 binary", binary.display());
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
            let err = super::check_static(&me).unwrap_err().to_string();
            assert!(err.contains("dynamically linked"), "{err}");
        }
    }
}
