//! Host tools xtask needs, installed on demand.
//!
//! As root on a Debian-family host a missing tool is installed with apt-get;
//! otherwise xtask stops and prints the one command that installs it.

pub mod cache;
pub mod fs;
pub mod gpgv;
pub mod needs;

use anyhow::{bail, Context, Result};

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn have(tool: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(tool).is_file())
}

/// Makes sure each `(tool, debian package)` is available: as root with
/// apt-get, otherwise an error with the command that installs them.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    for (_, package) in tools.iter().filter(|(t, _)| !have(t)) {
        if !missing.contains(package) {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || !have("apt-get") {
        bail!(
            "missing host tools; install them with:\n    sudo {}",
            apt_command(&missing)
        );
    }
    apt_install(&missing, false)?;
    if let Some((tool, package)) = tools.iter().find(|(t, _)| !have(t)) {
        bail!("{tool} is still missing after installing {package}");
    }
    Ok(())
}

/// Bails unless running as root; `what` says what needs it.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (it creates a chroot); run it with sudo");
    }
    Ok(())
}

/// The command that installs `packages`, as a user types it.
pub fn apt_command(packages: &[&str]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// Installs Debian `packages` with apt-get (as root), refreshing the package
/// lists first when asked or when the install fails on stale lists.
pub fn apt_install(packages: &[&str], update_first: bool) -> Result<()> {
    eprintln!("==> installing host packages: {}", packages.join(" "));
    let apt = |args: &[&str]| {
        duct::cmd("apt-get", args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin_null()
            .stdout_to_stderr()
            .unchecked()
            .run()
            .map(|o| o.status.success())
    };
    // Another apt-get may hold the lock: wait for it rather than fail.
    let lock = "DPkg::Lock::Timeout=300";
    let update = || -> Result<()> {
        if !apt(&["update", "-q", "-o", lock]).context("running apt-get update")? {
            bail!("`apt-get update` failed");
        }
        Ok(())
    };
    if update_first {
        update()?;
    }
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends", "-o", lock];
    install.extend(packages);
    if !apt(&install).context("running apt-get install")? {
        if update_first {
            bail!("`{}` failed", apt_command(packages));
        }
        update()?;
        if !apt(&install).context("running apt-get install")? {
            bail!("`{}` failed", apt_command(packages));
        }
    }
    Ok(())
}
