//! toa.ko and the lab's test module, built on the host against the
//! sanitizer kernel's tree (`make -C <tree> M=<dir> modules`, the tree's
//! compiler): the C glue is instrumented like the kernel (KASAN, lockdep),
//! the Rust core is the same audited object as in every release build.

use super::Tree;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Builds toa.ko for the sanitizer kernel from `toa-kmod/kbuild` and the
/// Rust objects, checks it against the tree (vermagic, modinfo, every
/// undefined symbol exported by the kernel) and returns its path.
pub fn build_toa(tree: &Tree) -> Result<PathBuf> {
    let objects =
        crate::objects::kmod::build_all(&crate::host::cache::cache_dir().join("kmod-objects"))?;
    let src = tree.modules_dir().join("toa");
    crate::build::sync_sources(
        &crate::host::cache::project_root().join("toa-kmod/kbuild"),
        &objects,
        &src,
    )?;
    let ko = kbuild(tree, &src, "toa.ko", &[])?;
    crate::objects::modcheck::check(&ko, &tree.release, &tree.symvers())?;
    let bytes = std::fs::read(&ko).with_context(|| format!("reading {}", ko.display()))?;
    crate::objects::modcheck::check_arch(&bytes, crate::distro::arch::Arch::X86_64)
        .with_context(|| format!("{} failed its checks", ko.display()))?;
    Ok(ko)
}

/// Builds the lab's test modules (`lab/kmod`, with toa.ko's compat.h) for
/// the sanitizer kernel; returns their paths.
pub fn build_lab_modules(tree: &Tree) -> Result<Vec<PathBuf>> {
    let src = tree.modules_dir().join("lab-kmod");
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    for (from, name) in crate::vm::lab_kmod::sources() {
        copy_if_changed(&from, &src.join(name))?;
    }
    let first = kbuild(tree, &src, crate::vm::lab_kmod::MODULES[0], &[])?;
    crate::vm::lab_kmod::built_modules(first.parent().unwrap_or(&src))
}

/// Writes `to` only when its bytes differ, so kbuild's change tracking holds.
fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let data = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(&data[..]) {
        std::fs::write(to, &data).with_context(|| format!("writing {}", to.display()))?;
    }
    Ok(())
}

/// `make -C <tree> M=<src> modules` on the host; returns `<src>/<module>`.
fn kbuild(tree: &Tree, src: &Path, module: &str, vars: &[&str]) -> Result<PathBuf> {
    let log = crate::host::cache::target_dir()
        .join("build-logs")
        .join("sanitizer-kernel")
        .join(format!("{}-{module}.log", tree.release));
    let _ = std::fs::remove_file(&log);
    let bar = crate::progress::spinner(&format!("{module} for {}", tree.release));
    let m = format!("M={}", src.display());
    let version = format!("TOA_VERSION={}", env!("CARGO_PKG_VERSION"));
    let mut args = vec![m.as_str(), version.as_str()];
    args.extend(vars);
    args.push("modules");
    let what = format!("build {module} for {}", tree.release);
    let line = format!("make -C {} {}", tree.dir.display(), args.join(" "));
    let built =
        crate::build::builder::run_logged(super::make_cmd(tree, &args), &log, &what, &line, &bar);
    bar.finish_and_clear();
    built?;
    let ko = src.join(module);
    if !ko.is_file() {
        anyhow::bail!(
            "make finished but {} is missing (log: {})",
            ko.display(),
            log.display()
        );
    }
    Ok(ko)
}
