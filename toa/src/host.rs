//! Where the machine's state is read from: `/` normally, another directory
//! for tests (`--root`), so every reader can run against fixture files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn new(root: PathBuf) -> Host {
        Host { root }
    }

    /// `absolute` (e.g. "/proc/net/toa_stats") under the root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// Whether the state read is this machine's own (not a copy under
    /// `--root`): only then may the self-test act on it.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// A small sysfs or procfs file, without the trailing newline; `None`
    /// when it does not exist.
    pub fn read_opt(&self, absolute: &str) -> Result<Option<String>> {
        let path = self.path(absolute);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim_end_matches('\n').to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The running kernel's release, as `uname -r` prints it.
    pub fn kernel_release(&self) -> Result<String> {
        self.read_opt("/proc/sys/kernel/osrelease")?
            .context("reading /proc/sys/kernel/osrelease: it does not exist (is /proc mounted?)")
    }
}
