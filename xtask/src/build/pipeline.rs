//! One build pipeline: what building for some kernels of a release does, in
//! order, decided once by [`Pipeline::new`]: prepare the builder, make the
//! kernels' headers ready, build each kernel. `cargo xtask build --dry-run`
//! prints it ([`Pipeline::print`]); a real build, the test-only module and
//! the lab's modules run it ([`Pipeline::ready`], then their own builds).

use crate::build::builder::{BackendKind, Builder, Step};
use crate::distro::kernel::Kernel;
use anyhow::Result;
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};

/// How the kernels' headers are made ready.
#[derive(Debug, Clone)]
pub enum Headers {
    /// apt releases with a container engine: each kernel's header packages
    /// unpacked once into the cache and mounted read-only, in one toolchain
    /// image per compiler set (see [`crate::build::headers_cache`]).
    Cached,
    /// A container engine and several kernels: one image with every
    /// kernel's headers, tagged `tag`; should it fail, each build job makes
    /// its own kernel's image.
    SetImage { tag: String, steps: Vec<Step> },
    /// A chroot: one package database, so each kernel's headers go in one at
    /// a time, before any build.
    SharedRoot,
    /// Each build job installs its kernel's headers first (its own image).
    PerKernel,
}

/// The kernels to build, the builder that builds them and how their
/// headers are made ready.
pub struct Pipeline {
    pub builder: Builder,
    pub kernels: Vec<Kernel>,
    pub headers: Headers,
}

/// Where each stage of a run writes its log: `prepare`, `toolchain`,
/// `headers`, or a kernel's release.
pub type Logs<'a> = &'a dyn Fn(&str) -> PathBuf;

/// What [`Pipeline::ready`] leaves for the builds.
pub struct Ready {
    /// Kernels whose headers are ready, or will be made by their build job.
    pub to_build: Vec<Kernel>,
    /// Kernels whose headers could not be made ready, each with why.
    pub failed: Vec<(Kernel, anyhow::Error)>,
    /// Each build job installs its kernel's headers before building.
    pub headers_per_job: bool,
}

impl Pipeline {
    pub fn new(builder: Builder, kernels: Vec<Kernel>) -> Pipeline {
        let headers = if builder.uses_headers_cache() {
            Headers::Cached
        } else {
            installed(&builder, &kernels)
        };
        Pipeline {
            builder,
            kernels,
            headers,
        }
    }

    /// Prepares the builder and makes the headers ready, as decided; runs
    /// no build. A kernel whose headers fail is returned in
    /// [`Ready::failed`], not as an error: the others still build.
    pub fn ready(&mut self, jobs: usize, logs: Logs, bar: &ProgressBar) -> Result<Ready> {
        let builder = &mut self.builder;
        builder.execute(&builder.prepare_steps()?, &logs("prepare"), bar)?;
        let mut ready = Ready {
            to_build: Vec::new(),
            failed: Vec::new(),
            headers_per_job: false,
        };
        match &self.headers {
            Headers::Cached => {
                let failed = cached_headers(builder, &self.kernels, jobs, &logs("toolchain"), bar)?;
                ready.to_build = self
                    .kernels
                    .iter()
                    .filter(|k| !failed.iter().any(|(f, _)| f.release == k.release))
                    .cloned()
                    .collect();
                ready.failed = failed;
            }
            Headers::SetImage { tag, steps } => {
                match builder.execute(steps, &logs("headers"), bar) {
                    Ok(()) => builder.use_set_image(&self.kernels, tag),
                    Err(e) => {
                        eprintln!(
                            "warning: one image for all {} kernels failed ({e:#}); one image per kernel instead",
                            self.kernels.len()
                        );
                        ready.headers_per_job = true;
                    }
                }
                ready.to_build = self.kernels.clone();
            }
            Headers::SharedRoot => {
                for k in &self.kernels {
                    match builder.execute(&builder.headers_steps(k), &logs(&k.release), bar) {
                        Ok(()) => ready.to_build.push(k.clone()),
                        Err(e) => ready.failed.push((k.clone(), e)),
                    }
                }
            }
            Headers::PerKernel => {
                ready.to_build = self.kernels.clone();
                ready.headers_per_job = true;
            }
        }
        Ok(ready)
    }

    /// [`Pipeline::ready`] for a pipeline of one kernel: its headers'
    /// failure is the error.
    pub fn ready_one(&mut self, log: &Path, bar: &ProgressBar) -> Result<()> {
        let mut ready = self.ready(1, &|_| log.to_path_buf(), bar)?;
        if let Some((_, e)) = ready.failed.pop() {
            return Err(e);
        }
        if ready.headers_per_job {
            for k in &ready.to_build {
                self.builder
                    .execute(&self.builder.headers_steps(k), log, bar)?;
            }
        }
        Ok(())
    }

    /// Prints every command the pipeline would run, with `build_dir(k)` as
    /// each kernel's build directory, changing nothing. The cached headers
    /// are planned from the archive indices (nothing is downloaded); when
    /// those cannot be read, the headers are shown installed with apt.
    pub fn print(mut self, build_dir: impl Fn(&Builder, &Kernel) -> PathBuf) -> Result<()> {
        let builder = &mut self.builder;
        let mut headers = self.headers.clone();
        let mut toolchain: Option<Vec<Step>> = None;
        if matches!(headers, Headers::Cached) {
            match crate::build::headers_cache::plan(&builder.distro, &self.kernels) {
                Ok(planned) => {
                    for (k, e) in &planned.failed {
                        println!("# note: {}: {e:#}", k.release);
                    }
                    let ready: Vec<Kernel> = self
                        .kernels
                        .iter()
                        .filter(|k| planned.mounts.contains_key(&k.release))
                        .cloned()
                        .collect();
                    let (tag, steps) = builder.toolchain_steps(&ready, &planned.external);
                    for (release, mounts) in planned.mounts {
                        builder.use_cached_headers(&release, &tag, mounts);
                    }
                    toolchain = Some(steps);
                }
                Err(e) => {
                    println!(
                        "# note: the archive indices cannot be read ({e:#}); shown with apt installing the headers"
                    );
                    headers = installed(builder, &self.kernels);
                }
            }
        }
        if let Headers::SetImage { tag, .. } = &headers {
            builder.use_set_image(&self.kernels, tag);
        }

        println!(
            "# backend: {:?}; steps whose result is cached are skipped at run time",
            builder.kind
        );
        if let Some((path, text)) = builder.registered_repo_preview() {
            println!(
                "# zypper steps mount {}: the repositories the registration server gives the \
                 system, written there at run time (access tokens shown as <token>):",
                path.display()
            );
            for line in text.lines().filter(|l| !l.is_empty()) {
                println!("#   {line}");
            }
        }
        print_steps(&builder.prepare_steps().unwrap_or_default());
        if let Some(steps) = &toolchain {
            println!(
                "# headers: each kernel's packages are downloaded (sha256-checked) and unpacked \
                 once into {}/<sha256>/, then mounted read-only into its build",
                crate::build::headers_cache::cache_root().display()
            );
            print_steps(steps);
        }
        if let Headers::SetImage { steps, .. } = &headers {
            print_steps(steps);
        }
        for k in &self.kernels {
            let headers_here = match &headers {
                Headers::Cached => !builder.has_cached_headers(&k.release),
                Headers::SetImage { .. } => false,
                Headers::SharedRoot | Headers::PerKernel => true,
            };
            if headers_here {
                print_steps(&builder.headers_steps(k));
            }
            print_steps(&[builder.build_step(
                k,
                &build_dir(builder, k),
                env!("CARGO_PKG_VERSION"),
            )]);
        }
        Ok(())
    }
}

/// The headers installed by the package manager, where the cache is not
/// used (or, in a dry run, cannot be planned).
fn installed(builder: &Builder, kernels: &[Kernel]) -> Headers {
    if builder.kind == BackendKind::Chroot {
        Headers::SharedRoot
    } else if let Some((tag, steps)) = builder.headers_set_steps(kernels) {
        Headers::SetImage { tag, steps }
    } else {
        Headers::PerKernel
    }
}

fn print_steps(steps: &[Step]) {
    for step in steps {
        println!("# {}\n{}", step.what, step.shell_line());
    }
}

/// Downloads and unpacks the headers of `kernels` into the cache, makes
/// the toolchain image they are built in, and points `builder` at both
/// (see [`crate::build::headers_cache`]). Returns the kernels whose headers could
/// not be made ready, each with its error; a toolchain image that cannot be
/// made fails them all.
fn cached_headers(
    builder: &mut Builder,
    kernels: &[Kernel],
    jobs: usize,
    log: &Path,
    bar: &ProgressBar,
) -> Result<Vec<(Kernel, anyhow::Error)>> {
    let distro = builder.distro.clone();
    let prepared = crate::build::headers_cache::prepare(&distro, kernels, jobs, bar)?;
    let ready: Vec<Kernel> = kernels
        .iter()
        .filter(|k| prepared.mounts.contains_key(&k.release))
        .cloned()
        .collect();
    if !ready.is_empty() {
        let (tag, steps) = builder.toolchain_steps(&ready, &prepared.external);
        builder.execute(&steps, log, bar)?;
        builder.image_id = builder.image_id_of(&tag);
        for (release, mounts) in prepared.mounts {
            builder.use_cached_headers(&release, &tag, mounts);
        }
    }
    Ok(prepared.failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distro::arch::Arch;

    fn headers(distro: &str, arch: Option<Arch>, kind: BackendKind, releases: &[&str]) -> Headers {
        let d = crate::distro::find_for(distro, arch).unwrap();
        let kernels = releases
            .iter()
            .map(|r| Kernel::pinned(r, &format!("{r}-1")))
            .collect();
        Pipeline::new(Builder::new(kind, &d), kernels).headers
    }

    /// The one decision every run walks: cached headers for native apt
    /// builds in a container, one image for several kernels elsewhere, one
    /// at a time in a chroot, and each job's own for a single kernel.
    #[test]
    fn the_headers_are_made_ready_the_way_the_builder_can() {
        let two = ["6.1.0-50-amd64", "6.1.0-57-amd64"];
        assert!(matches!(
            headers("debian-12", None, BackendKind::Docker, &two),
            Headers::Cached
        ));
        assert!(matches!(
            headers("debian-12", None, BackendKind::Chroot, &two),
            Headers::SharedRoot
        ));
        // A cross build reads another architecture's index: no cache.
        let arm = ["5.15.0-25-generic", "5.15.0-91-generic"];
        assert!(matches!(
            headers(
                "ubuntu-22.04",
                Some(Arch::Aarch64),
                BackendKind::Docker,
                &arm
            ),
            Headers::SetImage { .. }
        ));
        let el = ["3.10.0-1160.92.1.el7.x86_64", "3.10.0-1160.95.1.el7.x86_64"];
        match headers("centos-7.9", None, BackendKind::Podman, &el) {
            Headers::SetImage { tag, steps } => {
                assert!(tag.starts_with("toa-builder/centos-7.9:set-"), "{tag}");
                assert!(!steps.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            headers("centos-7.9", None, BackendKind::Docker, &el[..1]),
            Headers::PerKernel
        ));
    }
}
