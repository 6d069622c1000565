//! Host tools xtask needs, installed on demand.
//!
//! As root on a Debian-family host a missing tool is installed with apt-get;
//! otherwise xtask stops and prints the one command that installs it.

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

/// Makes sure each `(tool, debian package)` is available.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(t, _)| !have(t))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() || !have("apt-get") {
        bail!("missing host tools; install them with:\n    sudo {command}");
    }
    eprintln!("installing host tools: {}", missing.join(" "));
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    let install = || {
        duct::cmd("apt-get", &args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout_null()
            .run()
    };
    // A fresh machine may have no package lists yet.
    if install().is_err() {
        duct::cmd!("apt-get", "update", "-q")
            .stdout_null()
            .run()
            .context("apt-get update")?;
        install().with_context(|| format!("`{command}` failed"))?;
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
