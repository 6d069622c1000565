//! Test-only kernel modules for the VM lab (`lab/kmod/`), built against the
//! kernel the lab boots, in the same builder as toa.ko. Never packed.

use anyhow::{Context, Result};
use std::path::PathBuf;

use crate::build::builder::{self, Builder};
use crate::build::pipeline::Pipeline;
use crate::distro::Distro;

/// The modules, built together: the in-kernel listener the kernel-socket
/// scenario talks to, and the hooks the attack scenarios use (chained
/// destructors, widened race windows).
pub const MODULES: [&str; 2] = ["toa_kernel_listener.ko", "toa_lab_hooks.ko"];

/// The test modules' sources and the names kbuild wants them under.
pub fn sources() -> [(PathBuf, &'static str); 4] {
    let root = crate::host::cache::project_root();
    [
        (root.join("lab/kmod/Kbuild"), "Kbuild"),
        (
            root.join("lab/kmod/toa_kernel_listener.c"),
            "toa_kernel_listener.c",
        ),
        (root.join("lab/kmod/toa_lab_hooks.c"), "toa_lab_hooks.c"),
        // The module speaks every kernel's dialect through toa.ko's compat.h.
        (root.join("toa-kmod/kbuild/compat.h"), "compat.h"),
    ]
}

/// Builds `lab/kmod` for `release` of `distro`; returns the modules' paths.
pub fn build(distro: &Distro, release: &str) -> Result<Vec<PathBuf>> {
    let kernels = crate::repo::kernels::discover(distro)?;
    let kernel = kernels
        .iter()
        .find(|k| k.release == release)
        .with_context(|| format!("{} does not offer kernel {release}", distro.name))?;
    let kind = builder::select(None, distro)?;
    let builder = Builder::new(kind, distro);
    builder.ensure_host()?;
    let logs = crate::host::cache::target_dir()
        .join("build-logs")
        .join(&distro.name);
    let log = logs.join(format!("lab-kmod-{release}.log"));
    let bar = crate::progress::spinner("lab kmod");
    let mut pipeline = Pipeline::new(builder, vec![kernel.clone()]);
    pipeline.ready_one(&log, &bar)?;
    let builder = pipeline.builder;

    let src = crate::host::cache::cache_dir()
        .join("lab-kmod")
        .join(&distro.name)
        .join(release);
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    for (from, name) in sources() {
        std::fs::copy(&from, src.join(name))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    builder.execute(
        &[builder.build_step(kernel, &src, env!("CARGO_PKG_VERSION"))],
        &log,
        &bar,
    )?;
    bar.finish_and_clear();
    built_modules(&src)
}

/// The paths of [`MODULES`] in `dir`, each checked to exist.
pub fn built_modules(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    MODULES
        .iter()
        .map(|name| {
            let ko = dir.join(name);
            anyhow::ensure!(
                ko.is_file(),
                "make finished but {} is missing",
                ko.display()
            );
            Ok(ko)
        })
        .collect()
}
