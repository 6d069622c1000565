//! How an RPM release spells `uname -r` for a headers package version.
//!
//! The package says it where its spec declares `Provides: kernel-devel-uname-r
//! = <uname -r>` (RHEL since EL6, the TencentOS and OpenCloudOS spec
//! templates): discovery takes that. Packages without it (EL5-era specs,
//! TencentOS's older `kernel-tlinux.spec`) follow one of the spellings below,
//! which the recipe names; the same rule turns a bare `--kernel` value back
//! into a package version offline.

use anyhow::{bail, Result};
use serde::Deserialize;

/// A recipe's spelling of `uname -r` for a package `<ver>-<rel>` of `<arch>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "style", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Uname {
    /// `<ver>-<rel>.<arch>`: kernel-devel 3.10.0-327.el7 runs as
    /// 3.10.0-327.el7.x86_64 (RHEL and its rebuilds, OpenCloudOS 9).
    #[default]
    Arch,
    /// `<ver>-<rel>` without the dist tag and the architecture: TencentOS 3
    /// and OpenCloudOS 8 run kernel-devel 5.4.119-19.0009.14.tl3 as
    /// 5.4.119-19.0009.14.
    NoDist { dist: String },
    /// The git tag the kernel was built from, which the package release
    /// spells with a dot where the tag has `separator`: TencentOS's older
    /// spec packages tag 5.4.119-19-0009.1 as 5.4.119-19.0009.1.tl3 and
    /// 5.4.119-1-tlinux4-0009 as kernel-tlinux4 5.4.119-1.0009.tl3.
    GitTag { dist: String, separator: String },
}

impl Uname {
    /// `uname -r` of package `<ver>-<rel>` built for `arch`.
    pub fn release(&self, ver: &str, rel: &str, arch: &str) -> Result<String> {
        match self {
            Uname::Arch => Ok(format!("{ver}-{rel}.{arch}")),
            Uname::NoDist { dist } => Ok(format!("{ver}-{}", strip_dist(rel, dist)?)),
            Uname::GitTag { dist, separator } => {
                let rel = strip_dist(rel, dist)?;
                match rel.split_once('.') {
                    Some((build, rest)) => Ok(format!("{ver}-{build}{separator}{rest}")),
                    None => bail!(
                        "package release {rel}{dist} has no '.' where its git tag has \
                         {separator:?}; the recipe's uname style does not describe it"
                    ),
                }
            }
        }
    }

    /// The package version (`<ver>-<rel>`) of kernel `release` built for
    /// `arch`, where the spelling can be undone; `None` where it cannot.
    pub fn version(&self, release: &str, arch: &str) -> Option<String> {
        match self {
            Uname::Arch => release
                .strip_suffix(&format!(".{arch}"))
                .map(str::to_string),
            Uname::NoDist { dist } => {
                // 5.4.119-19.0009.14: one '-' between version and release.
                (release.matches('-').count() == 1).then(|| format!("{release}{dist}"))
            }
            Uname::GitTag { dist, separator } => {
                let (ver, tag) = release.split_once('-')?;
                let (build, rest) = tag.split_once(separator.as_str())?;
                (!build.is_empty() && !rest.is_empty() && !build.contains('.'))
                    .then(|| format!("{ver}-{build}.{rest}{dist}"))
            }
        }
    }

    /// Whether `uname -r` ends in the architecture, as the VM lab's RHEL
    /// kernel image lookup expects.
    pub fn has_arch(&self) -> bool {
        matches!(self, Uname::Arch)
    }
}

fn strip_dist<'a>(rel: &'a str, dist: &str) -> Result<&'a str> {
    match rel.strip_suffix(dist) {
        Some(r) if !r.is_empty() => Ok(r),
        _ => bail!(
            "package release {rel} does not end in the dist tag {dist} the recipe's \
             uname style names"
        ),
    }
}

/// `uname -r` as a headers package declares it: the `kernel-devel-uname-r`
/// provide, whose value createrepo splits at its last '-' into `ver` and
/// `rel` (5.14.0-533.el9.x86_64 is ver 5.14.0, rel 533.el9.x86_64).
pub fn from_provide(ver: &str, rel: Option<&str>) -> String {
    match rel {
        Some(rel) if !rel.is_empty() => format!("{ver}-{rel}"),
        _ => ver.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(dist: &str, separator: &str) -> Uname {
        Uname::GitTag {
            dist: dist.into(),
            separator: separator.into(),
        }
    }

    /// Each pair is a package and the `uname -r` it runs as, as published
    /// (sources in distros/tencentos-*.toml and opencloudos-*.toml).
    #[test]
    fn tencent_spellings_match_their_published_pairs() {
        let t = tag(".tl3", "-");
        // kernel-debuginfo-common 5.4.119-19.0009.1.tl3, uname 5.4.119-19-0009.1.
        assert_eq!(
            t.release("5.4.119", "19.0009.1.tl3", "x86_64").unwrap(),
            "5.4.119-19-0009.1"
        );
        assert_eq!(
            t.version("5.4.119-19-0009.1", "x86_64").as_deref(),
            Some("5.4.119-19.0009.1.tl3")
        );
        // kernel-tlinux4-devel 5.4.119-1.0009.tl3 for /lib/modules/5.4.119-1-tlinux4-0009.
        let t4 = tag(".tl3", "-tlinux4-");
        assert_eq!(
            t4.release("5.4.119", "1.0009.tl3", "x86_64").unwrap(),
            "5.4.119-1-tlinux4-0009"
        );
        assert_eq!(
            t4.version("5.4.241-1-tlinux4-0017.4", "x86_64").as_deref(),
            Some("5.4.241-1.0017.4.tl3")
        );
        // kernel-devel 4.14.105-19.0012.tl2 (TencentOS 2.4) runs as 4.14.105-19-0012.
        let t2 = tag(".tl2", "-");
        assert_eq!(
            t2.release("4.14.105", "19.0012.tl2", "x86_64").unwrap(),
            "4.14.105-19-0012"
        );
        // kernel 5.4.119-19.0006.tl2 from tlinux-tkernel4 (TencentOS 2.4 TK4)
        // runs as 5.4.119-19-0006 (github.com/lwmacct/260808-incus-bbiz-tx-centos7,
        // docs/build.md: the RPM release has the dot, `uname -r` the hyphen).
        assert_eq!(
            t2.release("5.4.119", "19.0006.tl2", "x86_64").unwrap(),
            "5.4.119-19-0006"
        );
        // kernel-devel-$(uname -r).tl3 for a kernel running as 5.4.119-19.0009.14.
        let nd = Uname::NoDist {
            dist: ".tl3".into(),
        };
        assert_eq!(
            nd.release("5.4.119", "19.0009.14.tl3", "x86_64").unwrap(),
            "5.4.119-19.0009.14"
        );
        assert_eq!(
            nd.version("5.4.119-19.0009.14", "x86_64").as_deref(),
            Some("5.4.119-19.0009.14.tl3")
        );
    }

    #[test]
    fn a_package_the_style_does_not_describe_is_an_error() {
        let err = tag(".tl3", "-")
            .release("5.4.119", "19.0009.1.oc8", "x86_64")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dist tag .tl3"), "{err}");
        let err = tag(".tl3", "-")
            .release("5.4.119", "19.tl3", "x86_64")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no '.'"), "{err}");
        // A release the style cannot have produced is not turned into a version.
        assert_eq!(tag(".tl3", "-").version("5.4.119", "x86_64"), None);
        assert_eq!(
            tag(".tl3", "-tlinux4-").version("5.4.119-19-0009.1", "x86_64"),
            None
        );
        assert_eq!(
            Uname::NoDist {
                dist: ".oc8".into()
            }
            .version("5.4.119-19-0009.1", "x86_64"),
            None
        );
        assert_eq!(Uname::Arch.version("5.4.119-19.0009.14", "x86_64"), None);
    }

    #[test]
    fn the_default_style_appends_the_architecture() {
        assert_eq!(
            Uname::Arch.release("3.10.0", "327.el7", "x86_64").unwrap(),
            "3.10.0-327.el7.x86_64"
        );
        assert_eq!(
            Uname::Arch
                .version("3.10.0-327.el7.x86_64", "x86_64")
                .as_deref(),
            Some("3.10.0-327.el7")
        );
    }

    #[test]
    fn a_provide_is_joined_at_the_split_createrepo_made() {
        assert_eq!(
            from_provide("5.14.0", Some("533.el9.x86_64")),
            "5.14.0-533.el9.x86_64"
        );
        assert_eq!(
            from_provide("5.4.119-19", Some("0009.1")),
            "5.4.119-19-0009.1"
        );
        assert_eq!(from_provide("6.6.0", None), "6.6.0");
    }
}
