//! Test-only kernel modules for the VM lab (`lab/kmod/`), built against the
//! kernel the lab boots, in the same builder as toa.ko. Never packed.

use anyhow::{Context, Result};
use std::path::PathBuf;

use crate::builder::{self, Builder};
use crate::distro::Distro;

/// The in-kernel listener the kernel-socket scenario talks to.
pub const KERNEL_LISTENER: &str = "toa_kernel_listener.ko";

/// The in-kernel listener's sources and the names kbuild wants them under.
pub fn sources() -> [(PathBuf, &'static str); 3] {
    let root = crate::cache::project_root();
    [
        (root.join("lab/kmod/Kbuild"), "Kbuild"),
        (
            root.join("lab/kmod/toa_kernel_listener.c"),
            "toa_kernel_listener.c",
        ),
        // The module speaks every kernel's dialect through toa.ko's compat.h.
        (root.join("toa-kmod/kbuild/compat.h"), "compat.h"),
    ]
}

/// Builds `lab/kmod` for `release` of `distro`; returns the module's path.
pub fn build_kernel_listener(distro: &Distro, release: &str) -> Result<PathBuf> {
    let kernels = crate::kernels::discover(distro)?;
    let kernel = kernels
        .iter()
        .find(|k| k.release == release)
        .with_context(|| format!("{} does not offer kernel {release}", distro.name))?;
    let kind = builder::select(None, distro)?;
    let builder = Builder::new(kind, distro);
    builder.ensure_host()?;
    let logs = crate::cache::target_dir()
        .join("build-logs")
        .join(&distro.name);
    let log = logs.join(format!("lab-kmod-{release}.log"));
    let bar = builder::spinner("lab kmod");
    builder.execute(&builder.prepare_steps()?, &logs.join("prepare.log"), &bar)?;
    builder.execute(&builder.headers_steps(kernel), &log, &bar)?;

    let src = crate::cache::cache_dir()
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
    Ok(src.join(KERNEL_LISTENER))
}
