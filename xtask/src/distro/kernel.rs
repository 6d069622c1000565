//! Kernels as a release names them.

use anyhow::Result;
use std::cmp::Ordering;

/// One kernel of a release.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Kernel {
    /// As `uname -r` prints it: `6.1.0-50-amd64`, `3.10.0-327.el7.x86_64`.
    pub release: String,
    /// The headers package's version: `6.1.176-1`, `3.10.0-327.el7`.
    pub version: String,
    /// `uname -v`, where one release string covers several builds.
    pub uname_v: Option<String>,
    /// Where the metadata lists it: a suite (`bookworm-security`) or a
    /// repository URL; empty for a kernel pinned on the command line.
    #[serde(default)]
    pub suite: String,
    /// Its flavour (`amd64`, `cloud-amd64`, `generic`, `aws`); empty where the
    /// release has one kind of kernel.
    #[serde(default)]
    pub flavour: String,
}

impl Kernel {
    /// A kernel named on the command line as `RELEASE=VERSION`.
    pub fn pinned(release: &str, version: &str) -> Kernel {
        Kernel {
            release: release.into(),
            version: version.into(),
            ..Kernel::default()
        }
    }
}

/// `(release, version, suite)` of each kernel: what a discovery test
/// compares with the kernels its fixture lists.
#[cfg(test)]
pub fn found(kernels: &[Kernel]) -> Vec<(&str, &str, &str)> {
    kernels
        .iter()
        .map(|k| (k.release.as_str(), k.version.as_str(), k.suite.as_str()))
        .collect()
}

/// Orders kernel releases by their numeric parts (`3.10.0-327.3.1` after `3.10.0-327`).
pub fn release_cmp(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|p| {
                let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
                (digits.parse().unwrap_or(0), p[digits.len()..].to_string())
            })
            .collect()
    };
    parts(a).cmp(&parts(b))
}

/// A kernel as the command line and the build plan name it: `RELEASE` (as
/// `uname -r` prints it) or `RELEASE=VERSION` (pinned to its headers package
/// version, for kernels the metadata does not list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSpec {
    pub release: String,
    pub version: Option<String>,
}

impl KernelSpec {
    /// A kernel named by its release alone.
    pub fn release(release: &str) -> KernelSpec {
        KernelSpec {
            release: release.to_string(),
            version: None,
        }
    }
}

impl std::str::FromStr for KernelSpec {
    type Err = anyhow::Error;

    /// A malformed value is a usage error.
    fn from_str(pin: &str) -> Result<KernelSpec> {
        let Some((release, version)) = pin.split_once('=') else {
            if pin.is_empty() {
                crate::report::usage_bail!(
                    "an empty kernel release: name it as RELEASE or RELEASE=VERSION"
                );
            }
            return Ok(KernelSpec::release(pin));
        };
        if release.is_empty() || version.is_empty() || version.contains('=') {
            crate::report::usage_bail!("{pin:?}: name a kernel as RELEASE or RELEASE=VERSION");
        }
        Ok(KernelSpec {
            release: release.to_string(),
            version: Some(version.to_string()),
        })
    }
}

impl std::fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(version) => write!(f, "{}={version}", self.release),
            None => f.write_str(&self.release),
        }
    }
}

/// clap's value parser for `--kernel RELEASE[=VERSION]`.
pub fn parse_spec(value: &str) -> std::result::Result<KernelSpec, String> {
    value.parse().map_err(|e: anyhow::Error| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_a_release_with_or_without_its_version() {
        let bare: KernelSpec = "6.1.0-9-amd64".parse().unwrap();
        assert_eq!(bare, KernelSpec::release("6.1.0-9-amd64"));
        assert_eq!(bare.to_string(), "6.1.0-9-amd64");
        let pinned: KernelSpec = "6.1.0-9-amd64=6.1.27-1".parse().unwrap();
        assert_eq!(pinned.release, "6.1.0-9-amd64");
        assert_eq!(pinned.version.as_deref(), Some("6.1.27-1"));
        assert_eq!(pinned.to_string(), "6.1.0-9-amd64=6.1.27-1");
    }

    #[test]
    fn a_pin_without_a_release_or_a_version_is_a_usage_error() {
        for bad in [
            "",
            "=6.1.27-1",
            "6.1.0-9-amd64=",
            "6.1.0-9-amd64=6.1=1",
            "=",
        ] {
            let err = bad.parse::<KernelSpec>().unwrap_err();
            assert_eq!(crate::report::status(&err), 2, "{bad:?}: {err}");
            assert!(
                err.to_string().contains("RELEASE or RELEASE=VERSION"),
                "{bad:?}: {err}"
            );
        }
    }
}
