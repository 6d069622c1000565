//! Build environments: a root filesystem of the distro release itself, so the
//! kernel headers are used with the compiler and kbuild they were made for.
//!
//! The chroot backend: debootstrap makes the rootfs once (cached under
//! `<cache>/builders/<distro>/rootfs`), commands run in it through
//! `unshare --mount` so the /proc it needs vanishes with the command.

use crate::distro::Distro;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Packages every builder gets besides the kernel headers.
const BUILD_PACKAGES: &[&str] = &["gcc", "make", "libc6-dev", "kmod"];

pub struct Chroot {
    pub root: PathBuf,
}

impl Chroot {
    /// The builder rootfs for `distro` with `headers` (a package name) installed.
    pub fn ensure(distro: &Distro, headers: &str) -> Result<Chroot> {
        crate::host::require_root("the chroot builder")?;
        crate::host::ensure_tools(&[("debootstrap", "debootstrap"), ("unshare", "util-linux")])?;
        let base = crate::cache::cache_dir()
            .join("builders")
            .join(&distro.name);
        let root = base.join("rootfs");
        let log = base.join("bootstrap.log");
        if !root.join(READY_MARK).is_file() {
            bootstrap(distro, &base, &root, headers, &log)?;
        }
        let chroot = Chroot { root };
        let release = headers.strip_prefix("linux-headers-").unwrap_or(headers);
        if !chroot
            .root
            .join("usr/src")
            .join(format!("linux-headers-{release}"))
            .is_dir()
        {
            chroot
                .run(
                    &format!("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {headers}"),
                    &log,
                    &format!("installing {headers}"),
                )
                .with_context(|| format!("installing {headers} into the {} builder", distro.name))?;
        }
        Ok(chroot)
    }

    /// Runs `script` with /bin/sh inside the rootfs, output appended to `log`.
    pub fn run(&self, script: &str, log: &Path, what: &str) -> Result<()> {
        let wrapped = format!("mount -t proc proc /proc && {script}");
        run_logged(
            duct::cmd!(
                "unshare", "--mount", "--fork", "chroot", &self.root, "/bin/sh", "-c", wrapped
            )
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LC_ALL", "C"),
            log,
            what,
        )
    }

    /// A path inside the rootfs, as seen from the host.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }
}

/// Written last by a finished bootstrap: an interrupted one is redone.
const READY_MARK: &str = ".toa-builder-ready";

fn bootstrap(distro: &Distro, base: &Path, root: &Path, headers: &str, log: &Path) -> Result<()> {
    let repo = distro.debian()?;
    let partial = base.join("rootfs.partial");
    for stale in [&partial, &root.to_path_buf()] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    std::fs::create_dir_all(base)?;
    let include = BUILD_PACKAGES
        .iter()
        .copied()
        .chain([headers])
        .collect::<Vec<_>>()
        .join(",");
    run_logged(
        duct::cmd!(
            "debootstrap",
            "--variant=minbase",
            format!("--include={include}"),
            &repo.suite,
            &partial,
            &repo.mirror
        ),
        log,
        &format!("debootstrap {} builder", distro.name),
    )
    .with_context(|| {
        format!(
            "creating the {} builder rootfs (log: {})",
            distro.name,
            log.display()
        )
    })?;
    std::fs::write(
        partial.join(READY_MARK),
        format!("{} {}\n", repo.suite, headers),
    )?;
    std::fs::rename(&partial, root)?;
    Ok(())
}

/// Runs `cmd` with its output going to `log` and a spinner showing the last line.
pub fn run_logged(cmd: duct::Expression, log: &Path, what: &str) -> Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(log_file, "==> {what}")?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
            .expect("template"),
    );
    spinner.set_prefix(what.to_string());
    spinner.enable_steady_tick(Duration::from_millis(200));
    let reader = cmd
        .stderr_to_stdout()
        .unchecked()
        .reader()
        .with_context(|| format!("starting {what}"))?;
    let mut lines = BufReader::new(&reader);
    let mut line = String::new();
    let mut tail: Vec<String> = Vec::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            break;
        }
        log_file.write_all(line.as_bytes())?;
        let trimmed = line.trim_end();
        spinner.set_message(trimmed.chars().take(120).collect::<String>());
        tail.push(trimmed.to_string());
        if tail.len() > 15 {
            tail.remove(0);
        }
    }
    let status = reader.try_wait()?.map(|o| o.status);
    spinner.finish_and_clear();
    match status {
        Some(s) if s.success() => Ok(()),
        _ => bail!(
            "{what} failed; last output:\n{}\n(full log: {})",
            tail.join("\n"),
            log.display()
        ),
    }
}
