//! The Rust core as a kernel object: one relocatable `.o` per architecture and
//! return-thunk flavour, audited, in the layout `toa-kmod/kbuild/Kbuild` expects
//! (`rust/toa_core-<arch>-<flavour>.o`).
//!
//! aarch64 has no return thunks, so it has one flavour (`plain`). Its target,
//! `aarch64-unknown-none-softfloat` (no FP/SIMD registers, as the kernel's own
//! `-mgeneral-regs-only`), is a tier-2 target whose prebuilt `core` rustup
//! could not always download; `core` is built from the `rust-src` component
//! (-Zbuild-std) instead, so the static relocation model and these flags
//! apply to all of it, not only to LTO's re-optimised part.

use crate::distro::arch::Arch;
use crate::objects::audit;
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

    fn rustflags(self, arch: Arch) -> Vec<&'static str> {
        if arch == Arch::Aarch64 {
            return vec![
                // No GOT: the arm64 loader refuses ADR_GOT_PAGE ("unsupported
                // RELA relocation: 311"). The module is one image, so the small
                // code model's +-4 GiB ADRP reach covers every reference.
                "-Crelocation-model=static",
                "-Cforce-unwind-tables=no",
                // No indirect branches: kernels with BTI would demand landing pads.
                "-Cjump-tables=no",
            ];
        }
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

impl Arch {
    /// The Rust target of the kernel object.
    fn kmod_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none-softfloat",
        }
    }

    /// Return-thunk flavours the architecture's kernels need.
    fn kmod_flavours(self) -> &'static [Flavour] {
        match self {
            Arch::X86_64 => &Flavour::ALL,
            Arch::Aarch64 => &[Flavour::Plain],
        }
    }
}

/// Kernel functions the aarch64 object may call. compiler_builtins is never
/// part of LTO, so a copy the optimiser turned into a `memcpy` call stays one
/// (x86_64 inlines them); every arm64 kernel exports these (arch/arm64/lib),
/// and the module check finds each in the kernel's Module.symvers.
const AARCH64_KERNEL_SYMBOLS: &[&str] = &["memcpy", "memmove", "memset"];

/// File name kbuild looks for (not `*.o`: kbuild's clean would delete it).
pub fn object_name(arch: &str, flavour: Flavour) -> String {
    format!("toa_core-{arch}-{}.o_shipped", flavour.name())
}

/// Builds, rewrites and audits every flavour of every architecture into
/// `out_dir`: the source tarball ships them all, and a build picks by kernel config.
pub fn build_all(out_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut out = Vec::new();
    for arch in Arch::ALL {
        for flavour in arch.kmod_flavours() {
            out.push(build(arch, *flavour, out_dir)?);
        }
    }
    Ok(out)
}

fn build(arch: Arch, flavour: Flavour, out_dir: &Path) -> Result<PathBuf> {
    let what = format!("{} {} flavour", arch.name(), flavour.name());
    let target_dir = match arch {
        // The x86_64 cache keeps the path it always had.
        Arch::X86_64 => crate::host::cache::target_dir()
            .join("kmod")
            .join(flavour.name()),
        Arch::Aarch64 => crate::host::cache::target_dir().join("kmod").join(format!(
            "{}-{}",
            arch.name(),
            flavour.name()
        )),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut argv: Vec<String> = [
        "rustc",
        "--quiet",
        "--package",
        "toa-kmod",
        "--lib",
        "--crate-type",
        "staticlib",
        "--target",
        arch.kmod_target(),
        "--profile",
        "kmod",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.push("--target-dir".into());
    argv.push(target_dir.display().to_string());
    if arch == Arch::Aarch64 {
        // No prebuilt core for this target here: build it from rust-src
        // (compiler_builtins with its own mem* functions, as on any target
        // without a libc; the object itself takes the kernel's).
        argv.extend(
            [
                "-Zbuild-std=core,compiler_builtins",
                "-Zbuild-std-features=compiler-builtins-mem",
            ]
            .map(String::from),
        );
    }
    // A cold build (fat LTO, and core built from source for arm64) takes
    // minutes with its output captured: the spinner keeps a log alive.
    let bar = crate::progress::spinner(&format!("Rust core ({what})"));
    bar.set_message("cargo rustc --profile kmod");
    let output = duct::cmd(cargo, &argv)
        .dir(crate::host::cache::project_root())
        // -Zfunction-return and -Zbuild-std are not stable yet; the kernel's
        // own Rust build relies on the first too.
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            flavour.rustflags(arch).join("\x1f"),
        )
        .env_remove("RUSTFLAGS")
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("starting cargo for the Rust core ({what})"));
    bar.finish_and_clear();
    let output = output?;
    let diagnostics = without_sls_notes(&String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("building the Rust core ({what}) failed:\n{diagnostics}");
    }
    if !diagnostics.trim().is_empty() {
        eprintln!("{diagnostics}");
    }

    let archive_path = target_dir.join(format!("{}/kmod/libtoa_kmod.a", arch.kmod_target()));
    let mut bytes = core_member(&archive_path)?;
    if arch == Arch::X86_64 {
        audit::rewrite_plt32(&mut bytes)?;
    }
    let allowed = match arch {
        Arch::X86_64 => flavour.allowed_undefined(),
        Arch::Aarch64 => AARCH64_KERNEL_SYMBOLS,
    };
    audit::audit(&bytes, allowed)
        .with_context(|| format!("audit of the Rust core ({what}) failed"))?;
    let out = out_dir.join(object_name(arch.name(), flavour));
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
