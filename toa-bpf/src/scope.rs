//! Which cgroup the cgroup programs are attached to: the cgroup v2 root (every
//! process pays the getpeername hook) or one cgroup (a systemd unit's or
//! slice's, a pod's), whose processes alone are covered and pay for it.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};

/// What a load is asked for (`--cgroup`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CgroupChoice {
    /// The cgroup the loaded programs are attached to already; the cgroup v2
    /// root when nothing is loaded.
    #[default]
    Keep,
    /// The cgroup v2 root: every process.
    Root,
    /// One cgroup: its path relative to the cgroup v2 root
    /// (`system.slice/nginx.service`, or as systemd and /proc/PID/cgroup
    /// write it, `/system.slice/nginx.service`), or absolute under the root's
    /// mount point (`/sys/fs/cgroup/system.slice/nginx.service`).
    Path(PathBuf),
}

impl CgroupChoice {
    /// `--cgroup`'s value: `/` (or empty) is the root.
    pub fn parse(text: &str) -> Result<CgroupChoice, String> {
        let t = text.trim();
        if t.trim_matches('/').is_empty() {
            return Ok(CgroupChoice::Root);
        }
        let p = Path::new(t);
        if p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::RootDir))
        {
            return Err(format!(
                "{text:?}: name the cgroup without '.' or '..', as a path under the cgroup v2 \
                 root such as system.slice/nginx.service"
            ));
        }
        Ok(CgroupChoice::Path(p.to_path_buf()))
    }
}

/// A cgroup to attach to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its directory in the cgroup2 mount.
    pub dir: PathBuf,
    /// Its path relative to the root ("" for the root).
    pub rel: String,
    /// Its id, the directory's inode number (what cgroup links report).
    pub id: u64,
}

impl Target {
    pub fn is_root(&self) -> bool {
        self.rel.is_empty()
    }
}

/// `wanted` (see [`CgroupChoice::Path`]) as a cgroup under the cgroup v2
/// root mounted at `root`; an error that says what to give when it is not one.
pub fn resolve(root: &Path, wanted: &Path) -> Result<Target> {
    use std::os::unix::fs::MetadataExt;
    let rel = match wanted.strip_prefix(root) {
        Ok(rel) => rel,
        Err(_) => wanted.strip_prefix("/").unwrap_or(wanted),
    };
    let rel_text = rel.to_string_lossy().trim_end_matches('/').to_string();
    let dir = if rel_text.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let meta = match std::fs::metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "there is no cgroup {}: {} does not exist. Give an existing cgroup v2 directory, \
             relative to the cgroup v2 root {} (a systemd unit's: `systemctl show -p \
             ControlGroup UNIT`; a process's: the 0:: line of /proc/PID/cgroup), or / for \
             every process",
            wanted.display(),
            dir.display(),
            root.display()
        ),
        Err(e) => bail!("cannot look at the cgroup {}: {e}", dir.display()),
    };
    if !meta.is_dir() || crate::system::fs_magic(&dir) != Some(crate::system::CGROUP2_SUPER_MAGIC) {
        bail!(
            "{} is not a cgroup v2 directory (the cgroup v2 root is {})",
            dir.display(),
            root.display()
        );
    }
    Ok(Target {
        dir,
        rel: rel_text,
        id: meta.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_is_the_root_and_dots_are_refused() {
        assert_eq!(CgroupChoice::parse("/"), Ok(CgroupChoice::Root));
        assert_eq!(CgroupChoice::parse(""), Ok(CgroupChoice::Root));
        assert_eq!(
            CgroupChoice::parse("/system.slice/nginx.service"),
            Ok(CgroupChoice::Path("/system.slice/nginx.service".into()))
        );
        assert!(CgroupChoice::parse("system.slice/../x")
            .unwrap_err()
            .contains("without '.' or '..'"));
    }

    #[test]
    fn a_missing_cgroup_is_a_clear_error() {
        let root = std::env::temp_dir();
        let e = resolve(&root, Path::new("/no-such.slice/none.service")).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("there is no cgroup /no-such.slice/none.service"),
            "{text}"
        );
        assert!(
            text.contains(
                &root
                    .join("no-such.slice/none.service")
                    .display()
                    .to_string()
            ),
            "{text}"
        );
    }

    #[test]
    fn a_directory_that_is_no_cgroup_is_refused() {
        let root = std::env::temp_dir();
        let e = resolve(&root, Path::new("/")).unwrap_err();
        assert!(
            format!("{e:#}").contains("is not a cgroup v2 directory"),
            "{e:#}"
        );
    }
}
