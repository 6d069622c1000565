//! Distro releases as described by `distros/*.toml`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distro {
    /// The name used on the command line: `debian-12`, `centos-7.2`.
    pub name: String,
    /// Tarball stem: `Debian-12` gives `Debian-12-x86_64.tar.gz`.
    pub tarball: String,
    /// Package family: decides how kernels are found and builders are made.
    pub family: Family,
    /// Kernel architecture as `uname -m` prints it.
    pub arch: String,
    /// Debian-family specifics (required when `family = "debian"`).
    pub debian: Option<DebianRepo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Debian,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianRepo {
    /// Suite (codename) whose `Packages` index lists the kernels.
    pub suite: String,
    /// Archive root, e.g. `http://deb.debian.org/debian`.
    pub mirror: String,
    /// Kernel flavour: `amd64` gives `linux-image-<abi>-amd64`.
    pub flavour: String,
}

impl Distro {
    /// `Debian-12-x86_64`: the directory inside the tarball and the tarball's stem.
    pub fn dist_name(&self) -> String {
        format!("{}-{}", self.tarball, self.arch)
    }

    pub fn debian(&self) -> Result<&DebianRepo> {
        self.debian
            .as_ref()
            .with_context(|| format!("{}: family \"debian\" needs a [debian] table", self.name))
    }

    fn validate(&self, file: &Path) -> Result<()> {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if self.name != stem {
            bail!(
                "{}: name \"{}\" must match the file name \"{stem}\"",
                file.display(),
                self.name
            );
        }
        if self.tarball.is_empty() || self.tarball.contains(['/', ' ']) {
            bail!(
                "{}: tarball \"{}\" must be a plain file stem",
                file.display(),
                self.tarball
            );
        }
        match self.family {
            Family::Debian => {
                self.debian()?;
            }
        }
        Ok(())
    }
}

pub fn distros_dir() -> PathBuf {
    crate::cache::project_root().join("distros")
}

/// Every distro release, sorted by name.
pub fn all() -> Result<Vec<Distro>> {
    let dir = distros_dir();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            out.push(load_file(&path)?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn load_file(path: &Path) -> Result<Distro> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let distro: Distro =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    distro.validate(path)?;
    Ok(distro)
}

/// The distro called `name`, or an error that lists the known ones.
pub fn find(name: &str) -> Result<Distro> {
    let all = all()?;
    if let Some(d) = all.iter().find(|d| d.name == name) {
        return Ok(d.clone());
    }
    let known: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
    bail!(
        "unknown distro \"{name}\"; known distros: {}",
        known.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_distro_file_loads() {
        let all = all().unwrap();
        assert!(all.iter().any(|d| d.name == "debian-12"));
        assert_eq!(find("debian-12").unwrap().dist_name(), "Debian-12-x86_64");
    }

    #[test]
    fn unknown_distro_lists_known_ones() {
        let err = find("debian-99").unwrap_err().to_string();
        assert!(err.contains("unknown distro \"debian-99\""), "{err}");
        assert!(err.contains("debian-12"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("toa-distro-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("debian-x.toml");
        std::fs::write(
            &file,
            "name='debian-x'\ntarball='X'\nfamily='debian'\narch='x86_64'\ncolour='red'\n",
        )
        .unwrap();
        let err = format!("{:#}", load_file(&file).unwrap_err());
        assert!(err.contains("colour"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
