//! A release named on the command line (`--distro centos-7.2`). clap checks
//! the name against `distros/` and reads that one file, once: a typo is a
//! usage error before any work, and a command never parses the other
//! recipes to find its own.

use crate::distro::arch::Arch;
use crate::distro::{distros_dir, Distro};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One `distros/<name>.toml`, parsed, and its default architecture's
/// release already checked.
#[derive(Debug, Clone)]
pub struct Recipe {
    path: PathBuf,
    table: toml::Table,
    default: Distro,
}

impl Recipe {
    /// The recipe called `name`, or a usage error naming the known ones.
    pub fn named(name: &str) -> Result<Recipe> {
        let known = names()?;
        if !known.iter().any(|k| k == name) {
            crate::report::usage_bail!(
                "unknown distro \"{name}\"; known distros: {}",
                known.join(", ")
            );
        }
        Recipe::read(&distros_dir().join(format!("{name}.toml")))
    }

    /// The recipe in `path`, whatever its name.
    pub fn read(path: &Path) -> Result<Recipe> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let default = Distro::from_table(table.clone(), None, path)?;
        Ok(Recipe {
            path: path.to_path_buf(),
            table,
            default,
        })
    }

    pub fn name(&self) -> &str {
        &self.default.name
    }

    /// The release for `arch` (None: its default), or a usage error naming
    /// the architectures the file lists.
    pub fn distro(&self, arch: Option<Arch>) -> Result<Distro> {
        match arch {
            None => Ok(self.default.clone()),
            Some(a) if a.name() == self.default.arch => Ok(self.default.clone()),
            Some(_) => Distro::from_table(self.table.clone(), arch, &self.path),
        }
    }
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// clap's value parser for `--distro`.
pub fn parse(name: &str) -> Result<Recipe, String> {
    Recipe::named(name).map_err(|e| format!("{e:#}"))
}

/// The names of every recipe in `distros/`, sorted: their file names, read
/// without parsing them.
pub fn names() -> Result<Vec<String>> {
    let dir = distros_dir();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                out.push(stem.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_name_is_read_and_an_unknown_one_lists_the_known() {
        let recipe = Recipe::named("debian-12").unwrap();
        assert_eq!(recipe.name(), "debian-12");
        assert_eq!(recipe.to_string(), "debian-12");
        assert_eq!(recipe.distro(None).unwrap().arch, "x86_64");
        assert_eq!(recipe.distro(Some(Arch::Aarch64)).unwrap().arch, "aarch64");

        let err = parse("debian-99").unwrap_err();
        assert!(
            err.starts_with("unknown distro \"debian-99\"; known distros: ")
                && err.contains("centos-7.2")
                && err.contains("debian-12"),
            "{err}"
        );
    }

    #[test]
    fn an_architecture_the_file_does_not_list_is_a_usage_error() {
        let recipe = Recipe::named("centos-7.2").unwrap();
        let err = recipe.distro(Some(Arch::Aarch64)).unwrap_err();
        assert_eq!(crate::report::status(&err), 2, "{err:#}");
        assert!(
            format!("{err:#}")
                .contains("centos-7.2 is not built for aarch64; its architectures: x86_64"),
            "{err:#}"
        );
    }
}
