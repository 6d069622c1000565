//! `cargo xtask installers --base-url URL`: renders `install_toa.sh` and
//! `compile_install_toa.sh` into target/dist.
//!
//! The sources are real shell files under `dist/`, compiled into xtask. Both
//! scripts share `dist/lib.sh`, which rendering puts where they say
//! `# @TOA_LIB@`; `@TOA_BASE_URL@` and `@TOA_VERSION@` are filled in
//! everywhere, and `@TOA_BPF_UNIT@` (a here-document in install_toa.sh)
//! becomes `dist/toa-bpf.service`, the unit the eBPF mode installs: no
//! download besides the script. index.json and SHA256SUMS are rewritten afterwards so they
//! cover the new scripts.

use crate::{build::index, host::cache};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const LIB: &str = include_str!("../../../dist/lib.sh");
const LIB_MARKER: &str = "# @TOA_LIB@";
/// The systemd unit that restores the eBPF mode at boot.
pub const BPF_UNIT: &str = include_str!("../../../dist/toa-bpf.service");
const BPF_UNIT_MARKER: &str = "@TOA_BPF_UNIT@";
/// The here-document's delimiter around the unit in install_toa.sh.
const BPF_UNIT_DELIMITER: &str = "TOA_UNIT";

/// The scripts that ship, by file name, with their sources.
pub const SCRIPTS: [(&str, &str); 2] = [
    (
        "install_toa.sh",
        include_str!("../../../dist/install_toa.sh"),
    ),
    (
        "compile_install_toa.sh",
        include_str!("../../../dist/compile_install_toa.sh"),
    ),
];

#[derive(clap::Args)]
pub struct Args {
    /// Where operators' machines download from: the URL that will serve the
    /// contents of target/dist (index.json, the tarballs, toa.tar.gz, SHA256SUMS),
    /// e.g. https://downloads.example.com/toa. The scripts' own --base-url overrides it.
    #[arg(long)]
    pub base_url: String,
}

pub fn run(args: Args) -> Result<()> {
    let dist = cache::dist_dir();
    let written = write_installers(&dist, &args.base_url)?;
    index::write_index(&dist)?;
    for path in &written {
        println!("{}", path.display());
    }
    println!("{}", dist.join(index::SUMS).display());
    Ok(())
}

/// Renders every script into `dist_dir` (mode 0755).
pub fn write_installers(dist_dir: &Path, base_url: &str) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, source) in SCRIPTS {
        let text = render(source, base_url).with_context(|| format!("rendering {name}"))?;
        let path = dist_dir.join(name);
        crate::host::fs::write_atomic(&path, text.as_bytes())?;
        set_executable(&path)?;
        written.push(path);
    }
    Ok(written)
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", path.display()))
}

/// A base URL the scripts can hold in single quotes: http(s), no trailing
/// slash, nothing a shell or a URL would treat specially.
pub fn check_base_url(url: &str) -> Result<String> {
    let url = url.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| format!("--base-url must start with https:// or http://, not {url:?}"))?;
    if rest.is_empty() {
        bail!("--base-url {url:?} names no host");
    }
    if let Some(c) = url
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "'\"`$\\".contains(*c))
    {
        bail!("--base-url {url:?} contains {c:?}, which the scripts cannot carry");
    }
    Ok(url.to_string())
}

/// One script with lib.sh inlined and the placeholders filled in.
pub fn render(source: &str, base_url: &str) -> Result<String> {
    let base_url = check_base_url(base_url)?;
    let markers = source.lines().filter(|l| *l == LIB_MARKER).count();
    if markers != 1 {
        bail!("expected exactly one `{LIB_MARKER}` line, found {markers}");
    }
    // lib.sh's first line tells shellcheck its dialect when it is checked alone.
    let lib = LIB.strip_prefix("# shellcheck shell=bash\n").unwrap_or(LIB);
    let mut out = String::with_capacity(source.len() + lib.len());
    for line in source.split_inclusive('\n') {
        if line.trim_end_matches('\n') == LIB_MARKER {
            out.push_str(lib);
        } else {
            out.push_str(line);
        }
    }
    if BPF_UNIT
        .lines()
        .any(|l| l == BPF_UNIT_DELIMITER || l.contains("@TOA_"))
    {
        bail!("dist/toa-bpf.service has a line the script's here-document cannot hold");
    }
    let out = out
        .replace(&format!("{BPF_UNIT_MARKER}\n"), BPF_UNIT)
        .replace("@TOA_BASE_URL@", &base_url)
        .replace("@TOA_VERSION@", env!("CARGO_PKG_VERSION"));
    if let Some(at) = out.find("@TOA_") {
        let end = out[at..].find('\n').map_or(out.len(), |n| at + n);
        bail!("unknown placeholder left: {}", &out[at..end]);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "installers_tests.rs"]
mod tests;
