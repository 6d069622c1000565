//! `cargo xtask kernels`: every kernel a distro release shipped, from its
//! repository metadata.

use crate::distro::{Distro, Repo};
use anyhow::{bail, Result};
use std::cmp::Ordering;

#[derive(clap::Args)]
pub struct Args {
    /// Distro release (a file stem under distros/).
    #[arg(long)]
    pub distro: String,
    /// Print JSON (one object per kernel) instead of a table.
    #[arg(long)]
    pub json: bool,
}

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

pub fn run(args: Args) -> Result<()> {
    let distro = crate::distro::find(&args.distro)?;
    let kernels = discover(&distro)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&kernels)?);
        return Ok(());
    }
    println!(
        "{:<34} {:<24} {:<20} {}",
        "RELEASE", "VERSION", "SUITE", "FLAVOUR"
    );
    for k in &kernels {
        println!(
            "{:<34} {:<24} {:<20} {}",
            k.release,
            k.version,
            or_dash(&k.suite),
            or_dash(&k.flavour)
        );
    }
    let mut flavours: Vec<&str> = kernels.iter().map(|k| k.flavour.as_str()).collect();
    flavours.sort_unstable();
    flavours.dedup();
    let counts: Vec<String> = flavours
        .iter()
        .map(|f| {
            let n = kernels.iter().filter(|k| k.flavour == *f).count();
            format!("{n} {}", or_dash(f))
        })
        .collect();
    eprintln!(
        "{}: {} kernel(s) ({})",
        distro.name,
        kernels.len(),
        counts.join(", ")
    );
    Ok(())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Every kernel of `distro`, oldest first.
pub fn discover(distro: &Distro) -> Result<Vec<Kernel>> {
    let kernels = match &distro.repo {
        Repo::Apt(_) => crate::debian_repo::kernels(distro)?,
        Repo::RpmMd(repo) => {
            crate::rpm_repo::kernels(&distro.name, distro.family, &distro.arch, repo)?
        }
    };
    if kernels.is_empty() {
        bail!("{}: its repository metadata lists no kernels", distro.name);
    }
    Ok(kernels)
}

/// The kernels `wanted` (by release) among `all`, or an error naming the
/// unknown ones and what is available. `RELEASE=VERSION` pins a kernel the
/// metadata does not list (or when it cannot be fetched). With nothing
/// wanted: the `latest` N, or every kernel.
pub fn select(
    distro: &Distro,
    all: &[Kernel],
    wanted: &[String],
    latest: Option<usize>,
) -> Result<Vec<Kernel>> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for w in wanted {
        if let Some((release, version)) = w.split_once('=') {
            out.push(Kernel::pinned(release, version));
        } else if let Some(k) = all.iter().find(|k| &k.release == w) {
            out.push(k.clone());
        } else {
            unknown.push(w.as_str());
        }
    }
    if !unknown.is_empty() {
        let mut known: Vec<&str> = all.iter().map(|k| k.release.as_str()).collect();
        if known.len() > 12 {
            known = known.split_off(known.len() - 12);
        }
        bail!(
            "{}: unknown kernel release(s) {}; known (newest): {}",
            distro.name,
            unknown.join(", "),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    if wanted.is_empty() {
        let n = latest.unwrap_or(all.len()).min(all.len());
        out.extend_from_slice(&all[all.len() - n..]);
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn k(release: &str) -> Kernel {
        Kernel::pinned(release, "1")
    }

    #[test]
    fn releases_sort_numerically() {
        let mut v = vec![
            "3.10.0-327.3.1.el7.x86_64",
            "3.10.0-1160.el7.x86_64",
            "3.10.0-327.el7.x86_64",
            "3.10.0-514.el7.x86_64",
        ];
        v.sort_by(|a, b| release_cmp(a, b));
        assert_eq!(
            v,
            [
                "3.10.0-327.el7.x86_64",
                "3.10.0-327.3.1.el7.x86_64",
                "3.10.0-514.el7.x86_64",
                "3.10.0-1160.el7.x86_64"
            ]
        );
    }

    #[test]
    fn select_by_release_latest_and_pin() {
        let d = crate::distro::find("centos-7.2").unwrap();
        let all = [
            k("3.10.0-327.el7.x86_64"),
            k("3.10.0-327.3.1.el7.x86_64"),
            k("3.10.0-327.4.4.el7.x86_64"),
        ];
        assert_eq!(select(&d, &all, &[], None).unwrap(), all);
        assert_eq!(
            select(&d, &all, &[], Some(1)).unwrap(),
            [k("3.10.0-327.4.4.el7.x86_64")]
        );
        assert_eq!(select(&d, &all, &[], Some(2)).unwrap().len(), 2);
        assert_eq!(select(&d, &all, &[], Some(9)).unwrap().len(), 3);
        let one = select(&d, &all, &["3.10.0-327.el7.x86_64".into()], None).unwrap();
        assert_eq!(one, [k("3.10.0-327.el7.x86_64")]);
        let pinned = select(
            &d,
            &[],
            &["3.10.0-229.el7.x86_64=3.10.0-229.el7".into()],
            None,
        )
        .unwrap();
        assert_eq!(pinned[0].version, "3.10.0-229.el7");
        let err = select(&d, &all, &["9.9.9".into()], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown kernel release(s) 9.9.9")
                && err.contains("3.10.0-327.4.4.el7.x86_64"),
            "{err}"
        );
    }
}
