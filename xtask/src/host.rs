//! Host tools xtask needs, installed on demand.
//!
//! As root on a Debian-family host a missing tool is installed with apt-get;
//! otherwise xtask stops and prints the one command that installs it.

pub mod cache;

use anyhow::{bail, Result};

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
            crate::preflight::apt_command(&missing)
        );
    }
    crate::preflight::apt_install(&missing, false)?;
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
