//! The Rust core as a kernel object: one relocatable `.o` per architecture and
//! return-thunk flavour, audited, in the layout `toa-kmod/kbuild/Kbuild` expects
//! (`rust/toa_core-<arch>-<flavour>.o`).

use crate::audit;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// How returns are compiled. Kernels with return thunks (CONFIG_RETHUNK,
/// CONFIG_MITIGATION_RETHUNK) need `jmp __x86_return_thunk` in place of `ret`;
/// others do not export that symbol at all. Kbuild picks one by the kernel config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Plain,
    Rethunk,
}

impl Flavour {
    pub const ALL: [Flavour; 2] = [Flavour::Plain, Flavour::Rethunk];

    pub fn name(self) -> &'static str {
        match self {
            Flavour::Plain => "plain",
            Flavour::Rethunk => "rethunk",
        }
    }

    fn rustflags(self) -> Vec<&'static str> {
        let mut flags = vec![
            // Absolute addressing in the kernel's top 2 GiB: no GOT, no PLT.
            "-Crelocation-model=static",
            "-Ccode-model=kernel",
            "-Cforce-unwind-tables=no",
            // Indirect jumps would need retpolines: keep switch lowering direct.
            "-Cjump-tables=no",
            // Straight-line-speculation padding, as CONFIG_SLS kernels build C with.
            "-Ctarget-feature=+harden-sls-ret,+harden-sls-ijmp",
        ];
        if self == Flavour::Rethunk {
            flags.push("-Zfunction-return=thunk-extern");
        }
        flags
    }

    /// Kernel symbols this flavour may reference.
    pub fn allowed_undefined(self) -> &'static [&'static str] {
        match self {
            Flavour::Plain => &[],
            Flavour::Rethunk => &["__x86_return_thunk"],
        }
    }
}

/// File name kbuild looks for (not `*.o`: kbuild's clean would delete it).
pub fn object_name(arch: &str, flavour: Flavour) -> String {
    format!("toa_core-{arch}-{}.o_shipped", flavour.name())
}

/// Builds, rewrites and audits every flavour for x86_64 into `out_dir`.
pub fn build_all(out_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    Flavour::ALL.iter().map(|f| build(*f, out_dir)).collect()
}

fn build(flavour: Flavour, out_dir: &Path) -> Result<PathBuf> {
    let target_dir = crate::cache::target_dir().join("kmod").join(flavour.name());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = duct::cmd!(
        cargo,
        "rustc",
        "--quiet",
        "--package",
        "toa-kmod",
        "--lib",
        "--crate-type",
        "staticlib",
        "--target",
        "x86_64-unknown-none",
        "--profile",
        "kmod",
        "--target-dir",
        &target_dir
    )
    .dir(crate::cache::project_root())
    // -Zfunction-return is not stable yet; the kernel's own Rust build relies on it too.
    .env("RUSTC_BOOTSTRAP", "1")
    .env("CARGO_ENCODED_RUSTFLAGS", flavour.rustflags().join("\x1f"))
    .env_remove("RUSTFLAGS")
    .stderr_capture()
    .unchecked()
    .run()
    .with_context(|| {
        format!(
            "starting cargo for the Rust core ({} flavour)",
            flavour.name()
        )
    })?;
    let diagnostics = without_sls_notes(&String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!(
            "building the Rust core ({} flavour) failed:\n{diagnostics}",
            flavour.name()
        );
    }
    if !diagnostics.trim().is_empty() {
        eprintln!("{diagnostics}");
    }

    let archive_path = target_dir.join("x86_64-unknown-none/kmod/libtoa_kmod.a");
    let mut bytes = core_member(&archive_path)?;
    audit::rewrite_plt32(&mut bytes)?;
    audit::audit(&bytes, flavour.allowed_undefined())
        .with_context(|| format!("audit of the Rust core ({} flavour) failed", flavour.name()))?;
    let out = out_dir.join(object_name("x86_64", flavour));
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// rustc warns that the SLS features are unstable each time it is told to use
/// them; that is known and chosen, so those notes are dropped and the rest kept.
fn without_sls_notes(stderr: &str) -> String {
    let mut kept = Vec::new();
    for block in stderr.split("\n\n") {
        if !(block.contains("unknown and unstable feature") && block.contains("harden-sls")) {
            kept.push(block);
        }
    }
    kept.join("\n\n")
}

/// The one object of the staticlib that holds our code: with fat LTO every
/// used function of core and compiler_builtins has been merged into it.
fn core_member(archive_path: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(archive_path)
        .with_context(|| format!("reading {}", archive_path.display()))?;
    let archive = object::read::archive::ArchiveFile::parse(&*data)
        .with_context(|| format!("{} is not an archive", archive_path.display()))?;
    let mut found = Vec::new();
    for member in archive.members() {
        let member = member?;
        let name = String::from_utf8_lossy(member.name()).into_owned();
        if name.starts_with("toa_kmod-") && name.ends_with(".o") {
            found.push(member.data(&*data)?.to_vec());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => bail!(
            "{}: expected exactly one toa_kmod object (LTO, one codegen unit), found {n}",
            archive_path.display()
        ),
    }
}
