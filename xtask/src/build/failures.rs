//! Kernels a build produced no module for, as a build job records them
//! (`cargo xtask build --failures FILE`) beside its part, and as
//! `cargo xtask merge` reads them back to list them in the release notes.
//!
//! ```json
//! {"format":1,"distro":"debian-12","arch":"x86_64",
//!  "failed":[{"release":"6.1.0-57-amd64","version":"6.1.158-1","error":"..."}]}
//! ```

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A failure record's file name ends with this: `Debian-12-x86_64.failed.json`.
pub const SUFFIX: &str = ".failed.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub format: u32,
    pub distro: String,
    pub arch: String,
    pub failed: Vec<Failed>,
}

/// One kernel that did not build, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    pub release: String,
    pub version: String,
    /// The error, all its causes on one line.
    pub error: String,
}

impl Record {
    pub fn new(distro: &str, arch: &str, failed: Vec<Failed>) -> Record {
        Record {
            format: 1,
            distro: distro.into(),
            arch: arch.into(),
            failed,
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        crate::host::fs::write_atomic(path, text.as_bytes())
    }

    pub fn read(path: &Path) -> Result<Record> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let record: Record = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a build's failure record", path.display()))?;
        if record.format != 1 {
            bail!(
                "{}: failure record format {} (this xtask reads format 1)",
                path.display(),
                record.format
            );
        }
        Ok(record)
    }
}

/// An error's message with its causes, on one line.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}
