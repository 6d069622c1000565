//! Running the few system tools the simulator and the lab need (`ip`, `rmmod`, `insmod`) and
//! writing sysctls.
//!
//! A guest's init often starts us with no PATH at all, and musl's fallback
//! search path has no sbin directories where busybox installs `ip`, `insmod`
//! and `rmmod`, so programs are looked up here explicitly.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{sim_err, Context, Result};

const FALLBACK_DIRS: &[&str] = &["/sbin", "/usr/sbin", "/bin", "/usr/bin"];

/// Finds `name` in PATH, then in the usual system directories.
pub fn find_program(name: &str) -> Result<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| sim_err!("`{name}` not found in PATH or {}", FALLBACK_DIRS.join(":")))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a program to completion; a non-zero exit is an error that quotes the
/// command line and whatever it printed.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let path = find_program(program)?;
    let shown = format!("`{} {}`", program, args.join(" "));
    let out = Command::new(&path)
        .args(args)
        .output()
        .context(format!("running {shown}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if said.is_empty() {
        said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(sim_err!("{shown} failed ({}): {said}", out.status))
}

pub fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).context(format!("writing {value} to {path}"))
}

/// Reads a sysfs file (a module parameter), without the trailing newline.
pub fn read_param(path: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).context(format!("reading {path}"))?;
    Ok(text.trim_end_matches('\n').to_string())
}

/// Writes a module parameter the way `echo value > path` does; the error is
/// the raw one so callers can tell EINVAL from anything else.
pub fn write_param(path: &str, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    // One write: sysfs hands each write to the parameter's setter.
    f.write_all(format!("{value}\n").as_bytes())
}

/// `insmod module params...`.
pub fn insmod(module: &Path, params: &[String]) -> Result<()> {
    let path = module.to_string_lossy();
    let args: Vec<&str> = std::iter::once(path.as_ref())
        .chain(params.iter().map(String::as_str))
        .collect();
    run("insmod", &args)
}

/// Whether a module is loaded (its /sys/module directory exists).
pub fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module")
        .join(name)
        .join("initstate")
        .exists()
}
